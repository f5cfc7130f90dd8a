/* cluster/cluster.c: endpoint objects shared across configuration updates,
 * retirement, connection holds, connect back-off and the pick policies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "cluster/cluster.h"
#include "dns/answers.h"
#include "runtime/snapshot.h"
#include "runtime/worker.h"

/* One configuration generation built by hand: clusters of loopback endpoints
 * on the given ports. */
struct gen {
    struct tr_config cfg;
    struct tr_snapshot snap;
    struct tr_wsnap ws;
    struct tr_cluster_cfg clusters[4];
    struct tr_endpoint_cfg eps[4][8];
    char text[4][8][32];
    struct tr_cluster_rt *views;
};

static void add_cluster(struct gen *g, const char *name, enum tr_lb_policy lb, const int *ports,
                        const uint32_t *weights, size_t n)
{
    size_t c = g->cfg.n_clusters++;
    g->clusters[c] = (struct tr_cluster_cfg){.name = name, .lb = lb, .tls = -1};
    for (size_t i = 0; i < n; i++) {
        struct tr_endpoint_cfg *e = &g->eps[c][i];
        struct sockaddr_in *in = (struct sockaddr_in *)&e->addr.ss;
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)ports[i]);
        in->sin_addr.s_addr = htonl(0x7f000001);
        e->addr.len = sizeof(*in);
        snprintf(g->text[c][i], sizeof(g->text[c][i]), "127.0.0.1:%d", ports[i]);
        e->addr.text = g->text[c][i];
        e->weight = weights != NULL ? weights[i] : 1;
    }
    g->clusters[c].endpoints = g->eps[c];
    g->clusters[c].n_endpoints = n;
}

static void gen_init(struct gen *g)
{
    memset(g, 0, sizeof(*g));
    g->cfg.clusters = g->clusters;
    g->snap.cfg = &g->cfg;
    g->ws.snap = &g->snap;
    g->ws.users = 1; /* the worker's own use while current */
}

/* Build g's views on top of prev (NULL for the first generation) and make
 * them current, as a worker adopting a snapshot does. */
static void gen_adopt(struct gen *g, struct gen *prev)
{
    g->views =
        tr_clusters_build(&g->ws, prev ? prev->views : NULL, prev ? prev->cfg.n_clusters : 0);
    assert_non_null(g->views);
    tr_clusters_commit(g->views, g->cfg.n_clusters, prev ? prev->views : NULL,
                       prev ? prev->cfg.n_clusters : 0);
}

static void gen_free(struct gen *g)
{
    tr_clusters_free(g->views, g->cfg.n_clusters);
    g->views = NULL;
}

static void test_endpoints_taken_over_by_address(void **state)
{
    (void)state;
    static struct gen g1, g2;
    gen_init(&g1);
    add_cluster(&g1, "web", TR_LB_ROUND_ROBIN, (int[]){1001, 1002}, NULL, 2);
    add_cluster(&g1, "db", TR_LB_ROUND_ROBIN, (int[]){2001}, NULL, 1);
    gen_adopt(&g1, NULL);
    struct tr_endpoint_rt *a = g1.views[0].eps[0], *b = g1.views[0].eps[1];
    struct tr_endpoint_rt *db = g1.views[1].eps[0];
    a->rr_current = 7; /* balancer state that must survive */
    a->connect_failures = 2;
    a->unhealthy_until_ms = 12345;
    g1.views[0].n_unhealthy = 1;

    /* Next generation: web keeps 1002 and gains 1003, db moves to the front
     * and keeps its endpoint, 1001 is gone. */
    gen_init(&g2);
    add_cluster(&g2, "db", TR_LB_ROUND_ROBIN, (int[]){2001}, NULL, 1);
    add_cluster(&g2, "web", TR_LB_ROUND_ROBIN, (int[]){1003, 1002}, NULL, 2);
    gen_adopt(&g2, &g1);
    assert_ptr_equal(g2.views[0].eps[0], db);
    assert_ptr_equal(g2.views[1].eps[1], b);
    assert_ptr_not_equal(g2.views[1].eps[0], a);
    assert_string_equal(g2.views[1].eps[0]->addr_text, "127.0.0.1:1003");
    assert_int_equal(g2.views[1].n_kept, 1);
    assert_int_equal(g2.views[0].n_kept, 1);
    /* Kept endpoints now belong to the new views; the dropped one is retired. */
    assert_ptr_equal(b->cluster, &g2.views[1]);
    assert_ptr_equal(db->cluster, &g2.views[0]);
    assert_false(b->retired);
    assert_true(a->retired);
    assert_int_equal(a->rr_current, 7);
    assert_int_equal(b->refs, 2); /* listed by both generations */

    /* The old generation goes: the retired endpoint is freed with it, the
     * kept ones stay. */
    gen_free(&g1);
    assert_int_equal(b->refs, 1);
    assert_int_equal(db->refs, 1);
    gen_free(&g2);
}

static void test_changed_connection_settings_start_afresh(void **state)
{
    (void)state;
    static struct gen g1, g2;
    gen_init(&g1);
    add_cluster(&g1, "web", TR_LB_ROUND_ROBIN, (int[]){1001}, NULL, 1);
    gen_adopt(&g1, NULL);
    struct tr_endpoint_rt *a = g1.views[0].eps[0];
    gen_init(&g2);
    add_cluster(&g2, "web", TR_LB_ROUND_ROBIN, (int[]){1001}, NULL, 1);
    g2.clusters[0].sni = "other.example"; /* connections made for g1 do not fit */
    gen_adopt(&g2, &g1);
    assert_ptr_not_equal(g2.views[0].eps[0], a);
    assert_true(a->retired);
    assert_int_equal(g2.views[0].n_kept, 0);
    gen_free(&g1);
    gen_free(&g2);
}

static void test_connection_hold_moves_snapshot_use(void **state)
{
    (void)state;
    static struct gen g1, g2, g3;
    gen_init(&g1);
    add_cluster(&g1, "web", TR_LB_ROUND_ROBIN, (int[]){1001, 1002}, NULL, 2);
    gen_adopt(&g1, NULL);
    struct tr_endpoint_rt *a = g1.views[0].eps[0], *b = g1.views[0].eps[1];
    tr_endpoint_conn_hold(a);         /* a connection to 1001 */
    tr_endpoint_conn_hold(b);         /* and one to 1002 */
    assert_int_equal(g1.ws.users, 3); /* worker + one per endpoint with connections */

    gen_init(&g2);
    add_cluster(&g2, "web", TR_LB_ROUND_ROBIN, (int[]){1001}, NULL, 1);
    gen_adopt(&g2, &g1);
    /* a moved to g2 and its connection's use with it; b (retired) keeps g1. */
    assert_int_equal(g2.ws.users, 2);
    assert_int_equal(g1.ws.users, 2);
    assert_true(b->retired);
    tr_endpoint_conn_drop(b); /* its last connection closes */
    assert_int_equal(g1.ws.users, 1);

    gen_init(&g3);
    add_cluster(&g3, "web", TR_LB_ROUND_ROBIN, (int[]){1001}, NULL, 1);
    gen_adopt(&g3, &g2);
    assert_ptr_equal(g3.views[0].eps[0], a);
    assert_int_equal(g3.ws.users, 2);
    assert_int_equal(g2.ws.users, 1);
    gen_free(&g1);
    gen_free(&g2);
    assert_int_equal(a->refs, 2); /* g3's view + the connection */
    tr_endpoint_conn_drop(a);
    assert_int_equal(g3.ws.users, 1);
    gen_free(&g3);
}

static void test_round_robin_weights_smooth(void **state)
{
    (void)state;
    static struct gen g;
    gen_init(&g);
    add_cluster(&g, "web", TR_LB_ROUND_ROBIN, (int[]){1, 2, 3}, (uint32_t[]){5, 1, 1}, 3);
    gen_adopt(&g, NULL);
    struct tr_cluster_rt *c = &g.views[0];
    char order[15] = {0};
    for (int i = 0; i < 14; i++) {
        struct tr_endpoint_rt *e = tr_cluster_pick(c, 0, NULL, 0);
        order[i] = (char)('a' + (e == c->eps[0] ? 0 : e == c->eps[1] ? 1 : 2));
    }
    assert_string_equal(order, "aabacaaaabacaa");
    gen_free(&g);
}

static void test_backoff_and_avoid(void **state)
{
    (void)state;
    static struct gen g;
    gen_init(&g);
    add_cluster(&g, "web", TR_LB_ROUND_ROBIN, (int[]){1, 2}, NULL, 2);
    gen_adopt(&g, NULL);
    struct tr_cluster_rt *c = &g.views[0];
    struct tr_endpoint_rt *a = c->eps[0], *b = c->eps[1];
    for (enum tr_lb_policy lb = TR_LB_ROUND_ROBIN; lb <= TR_LB_RANDOM; lb++) {
        g.clusters[0].lb = lb;
        /* Avoiding one leaves the other, whatever the random number. */
        for (uint32_t r = 0; r < 64; r++) {
            assert_ptr_equal(tr_cluster_pick(c, r * 2654435761u, a, 0), b);
            assert_ptr_equal(tr_cluster_pick(c, r * 2654435761u, b, 0), a);
        }
    }
    g.clusters[0].lb = TR_LB_ROUND_ROBIN;
    /* a refuses: left out for 1 s, then 2 s after the next failure. */
    tr_endpoint_connect_failed(a, 1000);
    assert_int_equal(c->n_unhealthy, 1);
    for (int i = 0; i < 10; i++)
        assert_ptr_equal(tr_cluster_pick(c, (uint32_t)i, NULL, 1500), b);
    /* Attempts in flight when it began do not lengthen it. */
    tr_endpoint_connect_failed(a, 1200);
    assert_int_equal(a->unhealthy_until_ms, 2000);
    assert_true(tr_endpoint_healthy(a, 2000));
    tr_endpoint_connect_failed(a, 2100);
    assert_int_equal(a->unhealthy_until_ms, 4100);
    /* Both out: nobody to pick (503 UH). */
    tr_endpoint_connect_failed(b, 2100);
    for (enum tr_lb_policy lb = TR_LB_ROUND_ROBIN; lb <= TR_LB_RANDOM; lb++) {
        g.clusters[0].lb = lb;
        assert_null(tr_cluster_pick(c, 12345, NULL, 2500));
    }
    /* The back-off is capped. */
    for (int i = 0; i < 40; i++)
        tr_endpoint_connect_failed(a, 100000u * (uint64_t)(i + 1));
    assert_int_equal(a->unhealthy_until_ms - 4000000u, TR_EP_BACKOFF_MAX_MS);
    /* A success ends it. */
    tr_endpoint_connect_ok(a);
    tr_endpoint_connect_ok(b);
    assert_int_equal(c->n_unhealthy, 0);
    assert_true(tr_endpoint_healthy(a, 0));
    gen_free(&g);
}

/* ---- endpoints given by name (dns/answers.h) ---- */

/* Cluster `name` of DNS names (each with weight w[i], port 80, family v4),
 * plus one configured IP endpoint 127.0.0.1:9 when with_ip. */
static void add_dns_cluster(struct gen *g, const char *name, enum tr_dns_mode mode,
                            const char *const *hosts, const uint32_t *w, size_t n, bool with_ip)
{
    add_cluster(g, name, TR_LB_ROUND_ROBIN, (int[]){9}, NULL, with_ip ? 1 : 0);
    size_t c = g->cfg.n_clusters - 1;
    struct tr_cluster_cfg *cc = &g->clusters[c];
    for (size_t i = 0; i < n; i++) {
        struct tr_endpoint_cfg *e = &g->eps[c][cc->n_endpoints++];
        *e = (struct tr_endpoint_cfg){.host = hosts[i], .port = 80, .weight = w ? w[i] : 1};
        snprintf(g->text[c][cc->n_endpoints - 1], sizeof(g->text[c][0]), "%s:80", hosts[i]);
        e->addr.text = g->text[c][cc->n_endpoints - 1];
    }
    cc->n_dns_endpoints = n;
    cc->dns = (struct tr_dns_cfg){.mode = mode, .refresh_ms = 5000, .family = TR_DNS_V4};
}

/* A table with host -> the given IPv4 addresses (NULL-terminated lists). */
static struct tr_dns_table *table(const char *host1, const char *const *ips1, const char *host2,
                                  const char *const *ips2)
{
    struct tr_dns_answer *a[2];
    size_t n = 0;
    const char *hosts[2] = {host1, host2};
    const char *const *lists[2] = {ips1, ips2};
    for (size_t h = 0; h < 2 && hosts[h] != NULL; h++) {
        struct tr_dns_ip ips[8];
        size_t k = 0;
        for (; lists[h][k] != NULL; k++) {
            ips[k] = (struct tr_dns_ip){.family = AF_INET};
            assert_int_equal(inet_pton(AF_INET, lists[h][k], &ips[k].u.v4), 1);
        }
        a[n++] = tr_dns_answer_new(hosts[h], TR_DNS_V4, ips, k);
    }
    struct tr_dns_table *t = tr_dns_table_new(a, n, 1);
    for (size_t i = 0; i < n; i++)
        tr_dns_answer_unref(a[i]);
    return t;
}

static void test_dns_names_expand_and_keep_endpoints(void **state)
{
    (void)state;
    static struct gen g0, g1, g2, g3;
    const char *hosts[] = {"api.example", "db.example"};
    /* No answer yet: only the configured IP endpoint; a name-only cluster
     * has none (the request path answers 503 UH at once). */
    gen_init(&g0);
    add_dns_cluster(&g0, "api", TR_DNS_ALL, hosts, (uint32_t[]){3, 1}, 2, true);
    add_dns_cluster(&g0, "only", TR_DNS_ALL, hosts + 1, NULL, 1, false);
    gen_adopt(&g0, NULL);
    assert_int_equal(g0.views[0].n_eps, 1);
    assert_string_equal(g0.views[0].eps[0]->addr_text, "127.0.0.1:9");
    assert_int_equal(g0.views[1].n_eps, 0);
    assert_null(tr_cluster_pick(&g0.views[1], 0, NULL, 0));
    struct tr_endpoint_rt *fixed = g0.views[0].eps[0];

    /* First answers: every address is an endpoint with its name's weight. */
    gen_init(&g1);
    add_dns_cluster(&g1, "api", TR_DNS_ALL, hosts, (uint32_t[]){3, 1}, 2, true);
    add_dns_cluster(&g1, "only", TR_DNS_ALL, hosts + 1, NULL, 1, false);
    g1.ws.dns = table("api.example", (const char *[]){"127.0.0.2", "127.0.0.3", NULL}, "db.example",
                      (const char *[]){"127.0.0.4", NULL});
    gen_adopt(&g1, &g0);
    struct tr_cluster_rt *api = &g1.views[0];
    assert_int_equal(api->n_eps, 4);
    assert_ptr_equal(api->eps[0], fixed); /* the IP endpoint was kept */
    assert_string_equal(api->eps[1]->addr_text, "127.0.0.2:80");
    assert_string_equal(api->eps[2]->addr_text, "127.0.0.3:80");
    assert_string_equal(api->eps[3]->addr_text, "127.0.0.4:80");
    assert_int_equal(api->weights[1], 3);
    assert_int_equal(api->weights[3], 1);
    assert_int_equal(api->total_weight, 1 + 3 + 3 + 1);
    assert_ptr_equal(api->ep_cfg[1], &g1.clusters[0].endpoints[1]);
    assert_int_equal(g1.views[1].n_eps, 1);
    struct tr_endpoint_rt *two = api->eps[1], *three = api->eps[2];
    two->rr_current = 5; /* state that must survive */
    gen_free(&g0);

    /* New answer for api.example: .3 remains, .2 goes, .5 comes. */
    gen_init(&g2);
    add_dns_cluster(&g2, "api", TR_DNS_ALL, hosts, (uint32_t[]){3, 1}, 2, true);
    add_dns_cluster(&g2, "only", TR_DNS_ALL, hosts + 1, NULL, 1, false);
    g2.ws.dns = table("api.example", (const char *[]){"127.0.0.5", "127.0.0.3", NULL}, "db.example",
                      (const char *[]){"127.0.0.4", NULL});
    gen_adopt(&g2, &g1);
    api = &g2.views[0];
    assert_int_equal(api->n_eps, 4);
    assert_ptr_equal(api->eps[2], three);
    assert_string_equal(api->eps[1]->addr_text, "127.0.0.5:80");
    assert_true(two->retired);
    assert_false(three->retired);
    assert_int_equal(api->n_kept, 3); /* the IP, .3 and db's .4 */
    assert_ptr_equal(three->cluster, api);

    /* NXDOMAIN (an empty answer): the name's endpoints go. */
    gen_init(&g3);
    add_dns_cluster(&g3, "api", TR_DNS_ALL, hosts, (uint32_t[]){3, 1}, 2, true);
    add_dns_cluster(&g3, "only", TR_DNS_ALL, hosts + 1, NULL, 1, false);
    g3.ws.dns = table("api.example", (const char *[]){NULL}, "db.example",
                      (const char *[]){"127.0.0.4", NULL});
    gen_adopt(&g3, &g2);
    assert_int_equal(g3.views[0].n_eps, 2);
    assert_true(three->retired);
    gen_free(&g1);
    gen_free(&g2);
    gen_free(&g3);
    tr_dns_table_unref(g1.ws.dns);
    tr_dns_table_unref(g2.ws.dns);
    tr_dns_table_unref(g3.ws.dns);
}

/* mode first: one endpoint per name that follows the first address; its
 * object (connections, pool) is kept when the address changes. */
static void test_dns_first_follows_first_address(void **state)
{
    (void)state;
    static struct gen g1, g2, g3;
    const char *hosts[] = {"api.example"};
    gen_init(&g1);
    add_dns_cluster(&g1, "api", TR_DNS_FIRST, hosts, NULL, 1, false);
    g1.ws.dns = table("api.example", (const char *[]){"127.0.0.2", "127.0.0.3", NULL}, NULL, NULL);
    gen_adopt(&g1, NULL);
    assert_int_equal(g1.views[0].n_eps, 1);
    struct tr_endpoint_rt *ep = g1.views[0].eps[0];
    assert_true(ep->logical);
    assert_string_equal(ep->addr_text, "127.0.0.2:80");
    tr_endpoint_connect_failed(ep, 100); /* a back-off on the old address */
    assert_false(tr_endpoint_healthy(ep, 200));

    gen_init(&g2);
    add_dns_cluster(&g2, "api", TR_DNS_FIRST, hosts, NULL, 1, false);
    g2.ws.dns = table("api.example", (const char *[]){"127.0.0.3", "127.0.0.2", NULL}, NULL, NULL);
    gen_adopt(&g2, &g1);
    assert_ptr_equal(g2.views[0].eps[0], ep); /* same object, new address */
    assert_string_equal(ep->addr_text, "127.0.0.3:80");
    struct sockaddr_in *in = (struct sockaddr_in *)&ep->addr;
    assert_int_equal(ntohl(in->sin_addr.s_addr), 0x7f000003);
    assert_true(tr_endpoint_healthy(ep, 200)); /* a new address starts clean */
    assert_int_equal(g2.views[0].n_unhealthy, 0);
    assert_false(ep->retired);

    /* An address-only change in mode all would have made a new object; a
     * switch to mode all starts afresh (matched by address, not name). */
    gen_init(&g3);
    add_dns_cluster(&g3, "api", TR_DNS_ALL, hosts, NULL, 1, false);
    g3.ws.dns = table("api.example", (const char *[]){"127.0.0.3", NULL}, NULL, NULL);
    gen_adopt(&g3, &g2);
    assert_ptr_not_equal(g3.views[0].eps[0], ep);
    assert_false(g3.views[0].eps[0]->logical);
    assert_true(ep->retired);
    gen_free(&g1);
    gen_free(&g2);
    gen_free(&g3);
    tr_dns_table_unref(g1.ws.dns);
    tr_dns_table_unref(g2.ws.dns);
    tr_dns_table_unref(g3.ws.dns);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints_taken_over_by_address),
        cmocka_unit_test(test_changed_connection_settings_start_afresh),
        cmocka_unit_test(test_connection_hold_moves_snapshot_use),
        cmocka_unit_test(test_round_robin_weights_smooth),
        cmocka_unit_test(test_backoff_and_avoid),
        cmocka_unit_test(test_dns_names_expand_and_keep_endpoints),
        cmocka_unit_test(test_dns_first_follows_first_address),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
