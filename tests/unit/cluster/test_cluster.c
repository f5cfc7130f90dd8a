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
        struct tr_endpoint_rt *e = tr_cluster_pick(c, 0, 0, NULL, 0);
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
            assert_ptr_equal(tr_cluster_pick(c, r * 2654435761u, 0, a, 0), b);
            assert_ptr_equal(tr_cluster_pick(c, r * 2654435761u, 0, b, 0), a);
        }
    }
    g.clusters[0].lb = TR_LB_ROUND_ROBIN;
    /* a refuses: left out for 1 s, then 2 s after the next failure. */
    tr_endpoint_connect_failed(a, 1000);
    assert_int_equal(c->n_unhealthy, 1);
    for (int i = 0; i < 10; i++)
        assert_ptr_equal(tr_cluster_pick(c, (uint32_t)i, 0, NULL, 1500), b);
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
        assert_null(tr_cluster_pick(c, 12345, 0, NULL, 2500));
    }
    /* The back-off is capped. */
    for (int i = 0; i < 40; i++)
        tr_endpoint_connect_failed(a, 100000u * (uint64_t)(i + 1));
    assert_int_equal(a->unhealthy_until_ms - 4000000u, TR_EP_BACKOFF_MAX_MS);
    /* A success ends it. */
    tr_endpoint_connect_ok(a, 0);
    tr_endpoint_connect_ok(b, 0);
    assert_int_equal(c->n_unhealthy, 0);
    assert_true(tr_endpoint_healthy(a, 0));
    gen_free(&g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints_taken_over_by_address),
        cmocka_unit_test(test_changed_connection_settings_start_afresh),
        cmocka_unit_test(test_connection_hold_moves_snapshot_use),
        cmocka_unit_test(test_round_robin_weights_smooth),
        cmocka_unit_test(test_backoff_and_avoid),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
