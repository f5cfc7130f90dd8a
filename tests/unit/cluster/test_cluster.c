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
#include <unistd.h>
#include <cmocka.h>

#include "cluster/cluster.h"
#include "dns/answers.h"
#include "router/router.h"
#include "runtime/snapshot.h"
#include "runtime/worker.h"
#include "net/sock.h"
#include "upstream/pool.h"

/* One configuration generation built by hand: clusters of loopback endpoints
 * on the given ports. */
struct gen {
    struct tr_config cfg;
    struct tr_snapshot snap;
    struct tr_wsnap ws;
    struct tr_cluster_cfg clusters[4];
    struct tr_endpoint_cfg eps[4][16];
    char text[4][16][32];
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
            assert_ptr_equal(
                tr_cluster_pick(c, r * 2654435761u, 0, &(struct tr_pick_avoid){.ep = a}, 0), b);
            assert_ptr_equal(
                tr_cluster_pick(c, r * 2654435761u, 0, &(struct tr_pick_avoid){.ep = b}, 0), a);
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

/* ---- outlier detection ---- */

static void outlier_on(struct tr_cluster_cfg *cc, uint32_t c5xx, uint32_t max_percent)
{
    cc->outlier = (struct tr_outlier_cfg){
        .enabled = true,
        .consecutive_5xx = c5xx,
        .consecutive_local = 5,
        .interval_ms = 10000,
        .base_ejection_ms = 30000,
        .max_ejection_percent = max_percent,
    };
}

static const int ten_ports[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

/* Does a pick at now_ms ever return ep (round robin visits all)? */
static bool picked(struct tr_cluster_rt *c, const struct tr_endpoint_rt *ep, uint64_t now_ms)
{
    for (uint32_t i = 0; i < 2 * c->n_eps; i++)
        if (tr_cluster_pick(c, i, 0, NULL, now_ms) == ep)
            return true;
    return false;
}

static void test_outlier_consecutive_5xx(void **state)
{
    (void)state;
    static struct gen g;
    gen_init(&g);
    add_cluster(&g, "web", TR_LB_ROUND_ROBIN, ten_ports, NULL, 10);
    outlier_on(&g.clusters[0], 3, 10);
    gen_adopt(&g, NULL);
    struct tr_cluster_rt *c = &g.views[0];
    struct tr_endpoint_rt *a = c->eps[0];

    /* A success breaks the run; so does any non-5xx status. */
    tr_endpoint_report(a, 500, 1000);
    tr_endpoint_report(a, 503, 1000);
    tr_endpoint_report(a, 200, 1000);
    tr_endpoint_report(a, 500, 1000);
    tr_endpoint_report(a, 404, 1000);
    tr_endpoint_report(a, 500, 1000);
    tr_endpoint_report(a, 500, 1000);
    assert_int_equal(a->ejected_until_ms, 0);
    /* The third 5xx in a row ejects it for base_ejection_time. */
    tr_endpoint_report(a, 502, 1000);
    assert_int_equal(a->ejected_until_ms, 31000);
    assert_int_equal(c->state->n_ejected, 1);
    assert_false(picked(c, a, 1000));
    assert_false(picked(c, a, 30999));
    /* Results of requests that were in flight change nothing. */
    tr_endpoint_report(a, 500, 2000);
    assert_int_equal(a->ejected_until_ms, 31000);
    /* Back when its time is up; the next report ends the ejection. */
    assert_true(picked(c, a, 31000));
    tr_endpoint_report(a, 500, 31000);
    assert_int_equal(a->ejected_until_ms, 0);
    assert_int_equal(a->unejected_at_ms, 31000);
    assert_int_equal(c->state->n_ejected, 0);
    assert_int_equal(a->consecutive_5xx, 1); /* counted afresh after the ejection */
    /* Ejected again soon: twice as long. */
    tr_endpoint_report(a, 500, 32000);
    tr_endpoint_report(a, 500, 32000);
    assert_int_equal(a->ejected_until_ms, 32000 + 60000);
    assert_int_equal(a->ejections, 2);
    tr_outlier_end(a, 92000);
    /* Healthy for three intervals (10 s each): the multiplier is down by
     * three, to 0, so the next ejection is one base again. */
    for (int i = 0; i < 3; i++)
        tr_endpoint_report(a, 500, 92000 + 30000);
    assert_int_equal(a->ejected_until_ms, 122000 + 30000);
    tr_outlier_end(a, 152000);
    /* One interval only: the multiplier goes from 1 to 0, then up to 1. */
    for (int i = 0; i < 3; i++)
        tr_endpoint_report(a, 500, 152000 + 10000);
    assert_int_equal(a->ejected_until_ms, 162000 + 30000);
    gen_free(&g);
}

static void test_outlier_ejection_time_capped(void **state)
{
    (void)state;
    static struct gen g;
    gen_init(&g);
    add_cluster(&g, "web", TR_LB_ROUND_ROBIN, ten_ports, NULL, 10);
    outlier_on(&g.clusters[0], 1, 10);
    g.clusters[0].outlier.base_ejection_ms = 100000;
    gen_adopt(&g, NULL);
    struct tr_endpoint_rt *a = g.views[0].eps[0];
    /* 100 s, 200 s, then Envoy's cap: max(300 s, base). */
    static const uint64_t want[] = {100000, 200000, 300000, 300000, 300000};
    uint64_t now = 0;
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        tr_endpoint_report(a, 500, now);
        assert_int_equal(a->ejected_until_ms - now, want[i]);
        now = a->ejected_until_ms;
        tr_outlier_end(a, now);
    }
    gen_free(&g);
}

static void test_outlier_max_ejection_percent(void **state)
{
    (void)state;
    static struct gen g;
    gen_init(&g);
    add_cluster(&g, "web", TR_LB_ROUND_ROBIN, (int[]){1, 2, 3}, NULL, 3);
    outlier_on(&g.clusters[0], 2, 34); /* one of three is 33 %, two 67 % */
    gen_adopt(&g, NULL);
    struct tr_cluster_rt *c = &g.views[0];
    struct tr_endpoint_rt *a = c->eps[0], *b = c->eps[1];
    tr_endpoint_report(a, 500, 0);
    tr_endpoint_report(a, 500, 0);
    assert_true(tr_endpoint_ejected(a, 0));
    tr_endpoint_report(b, 500, 0);
    tr_endpoint_report(b, 500, 0);
    assert_false(tr_endpoint_ejected(b, 0));
    assert_int_equal(b->consecutive_5xx, 0); /* the run starts over, as Envoy's */
    assert_int_equal(c->state->n_ejected, 1);
    /* Once a's ejection is over, b's next run ejects it. */
    tr_endpoint_report(b, 500, 30000);
    tr_endpoint_report(b, 500, 30000);
    assert_true(tr_endpoint_ejected(b, 30000));
    /* Istio's default of 10 % ejects nobody in a cluster of three. */
    g.clusters[0].outlier.max_ejection_percent = 10;
    struct tr_endpoint_rt *d = c->eps[2];
    tr_endpoint_report(d, 500, 70000);
    tr_endpoint_report(d, 500, 70000);
    assert_false(tr_endpoint_ejected(d, 70000));
    gen_free(&g);
}

static void test_outlier_gateway_and_local_origin(void **state)
{
    (void)state;
    static struct gen g;
    gen_init(&g);
    add_cluster(&g, "web", TR_LB_ROUND_ROBIN, ten_ports, NULL, 10);
    outlier_on(&g.clusters[0], 0, 100); /* consecutive 5xx off */
    g.clusters[0].outlier.consecutive_gateway = 3;
    gen_adopt(&g, NULL);
    struct tr_endpoint_rt *a = g.views[0].eps[0], *b = g.views[0].eps[1];
    /* A 500 is no gateway error: it breaks the run. */
    tr_endpoint_report(a, 502, 0);
    tr_endpoint_report(a, 503, 0);
    tr_endpoint_report(a, 500, 0);
    tr_endpoint_report(a, 504, 0);
    tr_endpoint_report(a, 503, 0);
    assert_false(tr_endpoint_ejected(a, 0));
    /* Without the split a connect failure is a 503 and a timeout a 504. */
    tr_endpoint_report(a, TR_OUTCOME_CONNECTED, 0);
    tr_endpoint_report(a, TR_OUTCOME_TIMEOUT, 0);
    assert_true(tr_endpoint_ejected(a, 0));
    tr_endpoint_connect_failed(b, 0); /* the pool's report */
    tr_endpoint_report(b, TR_OUTCOME_FAILED, 0);
    tr_endpoint_report(b, TR_OUTCOME_FAILED, 0);
    assert_true(tr_endpoint_ejected(b, 0));

    /* With the split, local failures make their own run, which a successful
     * connection breaks, and 5xx responses do not count in it. */
    g.clusters[0].outlier.split_local = true;
    g.clusters[0].outlier.consecutive_gateway = 0;
    g.clusters[0].outlier.consecutive_local = 2;
    struct tr_endpoint_rt *e = g.views[0].eps[2];
    tr_endpoint_report(e, TR_OUTCOME_FAILED, 0);
    tr_endpoint_report(e, TR_OUTCOME_CONNECTED, 0);
    tr_endpoint_report(e, TR_OUTCOME_FAILED, 0);
    tr_endpoint_report(e, 503, 0);
    assert_false(tr_endpoint_ejected(e, 0));
    tr_endpoint_report(e, TR_OUTCOME_TIMEOUT, 0);
    assert_true(tr_endpoint_ejected(e, 0));
    gen_free(&g);
}

static void test_outlier_panic_threshold(void **state)
{
    (void)state;
    static struct gen g;
    gen_init(&g);
    add_cluster(&g, "web", TR_LB_ROUND_ROBIN, (int[]){1, 2}, NULL, 2);
    outlier_on(&g.clusters[0], 1, 100);
    gen_adopt(&g, NULL);
    struct tr_cluster_rt *c = &g.views[0];
    struct tr_endpoint_rt *a = c->eps[0], *b = c->eps[1];
    tr_endpoint_report(a, 500, 0);
    assert_false(picked(c, a, 0));
    /* Half the endpoints healthy, fewer than min_health_percent: ejections
     * are ignored (Envoy's panic mode). */
    g.clusters[0].outlier.min_health_percent = 60;
    assert_true(picked(c, a, 0));
    /* Both ejected and no panic threshold: nobody (503 UH). */
    g.clusters[0].outlier.min_health_percent = 0;
    tr_endpoint_report(b, 500, 0);
    assert_null(tr_cluster_pick(c, 7, 0, NULL, 0));
    gen_free(&g);
}

static void test_outlier_survives_update(void **state)
{
    (void)state;
    static struct gen g1, g2, g3, g4, g5;
    gen_init(&g1);
    add_cluster(&g1, "web", TR_LB_ROUND_ROBIN, ten_ports, NULL, 10);
    outlier_on(&g1.clusters[0], 1, 10);
    gen_adopt(&g1, NULL);
    struct tr_endpoint_rt *a = g1.views[0].eps[0];
    tr_endpoint_report(a, 500, 0);
    assert_true(tr_endpoint_ejected(a, 0));
    struct tr_cluster_state *st = g1.views[0].state;

    /* Another weight, the same address: the ejection stays, and the count
     * with it. */
    gen_init(&g2);
    add_cluster(&g2, "web", TR_LB_ROUND_ROBIN, ten_ports,
                (uint32_t[]){2, 1, 1, 1, 1, 1, 1, 1, 1, 1}, 10);
    outlier_on(&g2.clusters[0], 1, 10);
    gen_adopt(&g2, &g1);
    assert_ptr_equal(g2.views[0].eps[0], a);
    assert_ptr_equal(g2.views[0].state, st);
    assert_true(tr_endpoint_ejected(a, 1000));
    assert_int_equal(st->n_ejected, 1);
    assert_false(picked(&g2.views[0], a, 1000));
    gen_free(&g1);

    /* Outlier detection turned off: the ejection ends. */
    gen_init(&g3);
    add_cluster(&g3, "web", TR_LB_ROUND_ROBIN, ten_ports, NULL, 10);
    gen_adopt(&g3, &g2);
    assert_false(tr_endpoint_ejected(a, 1000));
    assert_int_equal(st->n_ejected, 0);
    gen_free(&g2);

    /* On again: ejected again; then it leaves the configuration while
     * ejected, and no longer counts. */
    tr_endpoint_report(a, 500, 2000);
    assert_false(tr_endpoint_ejected(a, 2000)); /* g3 has it off */
    gen_init(&g4);
    add_cluster(&g4, "web", TR_LB_ROUND_ROBIN, ten_ports, NULL, 10);
    outlier_on(&g4.clusters[0], 1, 10);
    gen_adopt(&g4, &g3);
    gen_free(&g3);
    tr_endpoint_report(a, 500, 3000);
    assert_true(tr_endpoint_ejected(a, 3000));
    assert_int_equal(st->n_ejected, 1);
    gen_init(&g5);
    add_cluster(&g5, "web", TR_LB_ROUND_ROBIN, ten_ports + 1, NULL, 9);
    outlier_on(&g5.clusters[0], 1, 50);
    gen_adopt(&g5, &g4);
    assert_true(a->retired);
    assert_false(tr_endpoint_ejected(a, 3000));
    assert_int_equal(st->n_ejected, 0);
    struct tr_endpoint_rt *b = g5.views[0].eps[0];
    tr_endpoint_report(b, 500, 4000);
    assert_true(tr_endpoint_ejected(b, 4000));
    assert_int_equal(st->n_ejected, 1);
    gen_free(&g4);
    gen_free(&g5);
}

/* ---- consistent hashing ---- */

/* g's cluster c hashes with lb, and its snapshot has the table. */
static void hash_on(struct gen *g, size_t c, enum tr_lb_policy lb)
{
    struct tr_cluster_cfg *cc = &g->clusters[c];
    cc->lb = lb;
    cc->hash.ring_min_size = 1024;
    cc->hash.maglev_table_size = 65537;
    cc->hash.source = TR_HASH_HEADER;
    cc->hash.header = "x-user";
    struct tr_lb_table **t = calloc(4, sizeof(*t));
    assert_non_null(t);
    t[c] = tr_lb_table_build(cc);
    assert_non_null(t[c]);
    g->snap.lb_tables = t;
}

static void hash_off(struct gen *g)
{
    for (size_t i = 0; i < 4 && g->snap.lb_tables != NULL; i++)
        tr_lb_table_unref(g->snap.lb_tables[i]);
    free(g->snap.lb_tables);
    g->snap.lb_tables = NULL;
}

static uint64_t key(uint32_t i)
{
    char k[32];
    int n = snprintf(k, sizeof(k), "user-%u", i);
    return tr_lb_hash_bytes(k, (size_t)n, 0);
}

#define KEYS 20000u

/* Port of the endpoint each key goes to. */
static void map_keys(struct tr_cluster_rt *c, uint16_t *port)
{
    for (uint32_t i = 0; i < KEYS; i++) {
        struct tr_endpoint_rt *e = tr_cluster_pick(c, 0, key(i), NULL, 0);
        assert_non_null(e);
        port[i] = ntohs(((const struct sockaddr_in *)&e->addr)->sin_port);
    }
}

static void check_hash_policy(enum tr_lb_policy lb, double max_moved_others)
{
    static struct gen g1, g2, g3;
    static uint16_t p1[KEYS], p2[KEYS], p3[KEYS];
    static const int ports[] = {101, 102, 103, 104, 105};
    gen_init(&g1);
    add_cluster(&g1, "web", lb, ports, NULL, 5);
    hash_on(&g1, 0, lb);
    gen_adopt(&g1, NULL);
    map_keys(&g1.views[0], p1);
    /* Spread: each of five gets about a fifth. */
    uint32_t per[5] = {0};
    for (uint32_t i = 0; i < KEYS; i++)
        per[p1[i] - 101]++;
    for (int e = 0; e < 5; e++)
        assert_in_range(per[e], KEYS * 12 / 100, KEYS * 28 / 100);
    /* Same key, same endpoint: again, and from a proxy that lists the
     * endpoints in another order (a separate table). */
    for (uint32_t i = 0; i < 200; i++)
        assert_int_equal(p1[i], ntohs(((const struct sockaddr_in *)&tr_cluster_pick(&g1.views[0], i,
                                                                                    key(i), NULL, 0)
                                           ->addr)
                                          ->sin_port));
    gen_init(&g3);
    add_cluster(&g3, "web", lb, (int[]){105, 103, 101, 104, 102}, NULL, 5);
    hash_on(&g3, 0, lb);
    gen_adopt(&g3, NULL);
    map_keys(&g3.views[0], p3);
    assert_memory_equal(p1, p3, sizeof(p1));

    /* 103 leaves: its keys move, the others' stay (ring: exactly; Maglev:
     * nearly). */
    gen_init(&g2);
    add_cluster(&g2, "web", lb, (int[]){101, 102, 104, 105}, NULL, 4);
    hash_on(&g2, 0, lb);
    gen_adopt(&g2, NULL);
    map_keys(&g2.views[0], p2);
    uint32_t moved_others = 0, moved = 0;
    for (uint32_t i = 0; i < KEYS; i++) {
        assert_int_not_equal(p2[i], 103);
        moved += p1[i] != p2[i];
        moved_others += p1[i] != 103 && p1[i] != p2[i];
    }
    assert_true(moved_others <= (uint32_t)(max_moved_others * KEYS));
    assert_in_range(moved, per[2], per[2] + (uint32_t)(max_moved_others * KEYS));
    /* An ejected or avoided endpoint's keys go elsewhere; none left: NULL. */
    struct tr_cluster_rt *c = &g2.views[0];
    struct tr_endpoint_rt *e0 = tr_cluster_pick(c, 0, key(1), NULL, 0);
    struct tr_endpoint_rt *e1 = tr_cluster_pick(c, 0, key(1), &(struct tr_pick_avoid){.ep = e0}, 0);
    assert_non_null(e1);
    assert_ptr_not_equal(e0, e1);
    for (uint32_t i = 0; i < c->n_eps; i++)
        tr_endpoint_connect_failed(c->eps[i], 0);
    assert_null(tr_cluster_pick(c, 0, key(1), NULL, 10));
    for (uint32_t i = 0; i < c->n_eps; i++)
        tr_endpoint_connect_ok(c->eps[i], 0);
    hash_off(&g1);
    hash_off(&g2);
    hash_off(&g3);
    gen_free(&g1);
    gen_free(&g2);
    gen_free(&g3);
}

static void test_ring_hash(void **state)
{
    (void)state;
    check_hash_policy(TR_LB_RING_HASH, 0.0);
}

static void test_maglev(void **state)
{
    (void)state;
    check_hash_policy(TR_LB_MAGLEV, 0.02);
}

static void test_hash_weights_and_tables(void **state)
{
    (void)state;
    for (enum tr_lb_policy lb = TR_LB_RING_HASH; lb <= TR_LB_MAGLEV; lb++) {
        static struct gen g;
        gen_init(&g);
        add_cluster(&g, "web", lb, (int[]){201, 202}, (uint32_t[]){1, 3}, 2);
        hash_on(&g, 0, lb);
        gen_adopt(&g, NULL);
        uint32_t heavy = 0;
        for (uint32_t i = 0; i < KEYS; i++)
            heavy += tr_cluster_pick(&g.views[0], 0, key(i), NULL, 0) == g.views[0].eps[1];
        assert_in_range(heavy, KEYS * 70 / 100, KEYS * 80 / 100); /* 3 / 4 */
        /* The ring has the lighter one's share of the minimum, rounded up:
         * 256 + 768 points; Maglev has its whole table. */
        assert_int_equal(tr_lb_table_size(g.snap.lb_tables[0]),
                         lb == TR_LB_RING_HASH ? 1024 : 65537);
        /* A table fits the next configuration only if nothing it depends on changed. */
        struct tr_cluster_cfg other = g.clusters[0];
        assert_true(tr_lb_table_fits(&g.clusters[0], &other));
        struct tr_endpoint_cfg eps[2];
        memcpy(eps, g.eps[0], sizeof(eps));
        other.endpoints = eps;
        eps[1].weight = 4;
        assert_false(tr_lb_table_fits(&g.clusters[0], &other));
        eps[1].weight = 3;
        other.hash.ring_min_size = 2048;
        other.hash.maglev_table_size = 7;
        assert_false(tr_lb_table_fits(&g.clusters[0], &other));
        hash_off(&g);
        gen_free(&g);
    }
}

static void test_request_hash_keys(void **state)
{
    (void)state;
    struct tr_hash_policy_cfg hp = {.source = TR_HASH_HEADER, .header = "x-user"};
    struct tr_str_pair h[] = {
        {TR_STR_LIT("Host"), TR_STR_LIT("a")},
        {TR_STR_LIT("X-User"), TR_STR_LIT("alice")},
        {TR_STR_LIT("cookie"), TR_STR_LIT("a=1; sid=\"s-42\"; b=2")},
        {TR_STR_LIT("x-other"), TR_STR_LIT("bob")},
    };
    struct sockaddr_storage peer = {0}, peer2 = {0};
    ((struct sockaddr_in *)&peer)->sin_family = AF_INET;
    ((struct sockaddr_in *)&peer)->sin_addr.s_addr = htonl(0x7f000005);
    ((struct sockaddr_in *)&peer)->sin_port = htons(1000);
    peer2 = peer;
    ((struct sockaddr_in *)&peer2)->sin_port = htons(2000); /* same IP, other port */
    const char *target = "/p?x=1&user=carol&user=dave";
    struct tr_lb_request rq = {.headers = h,
                               .n_headers = 4,
                               .target = target,
                               .target_len = (uint32_t)strlen(target),
                               .peer = &peer,
                               .conn_seed = 77};
    uint64_t hash = 0, cookie = 1;
    /* Header (name in any case). */
    assert_true(tr_lb_request_hash(&hp, &rq, &hash, &cookie));
    assert_int_equal(hash, tr_lb_hash_bytes("alice", 5, 0));
    assert_int_equal(cookie, 0);
    hp.header = "x-missing";
    assert_false(tr_lb_request_hash(&hp, &rq, &hash, &cookie));
    /* Cookie, quotes removed. */
    hp = (struct tr_hash_policy_cfg){.source = TR_HASH_COOKIE, .cookie = "sid"};
    assert_true(tr_lb_request_hash(&hp, &rq, &hash, &cookie));
    assert_int_equal(hash, tr_lb_hash_bytes("s-42", 4, 0));
    /* Absent: none, or a generated one whose hash is what the client's next
     * request (carrying it) hashes to. */
    hp.cookie = "session";
    assert_false(tr_lb_request_hash(&hp, &rq, &hash, &cookie));
    hp.cookie_generate = true;
    hp.cookie_ttl_ms = 3600500;
    hp.cookie_path = "/app";
    assert_true(tr_lb_request_hash(&hp, &rq, &hash, &cookie));
    assert_int_not_equal(cookie, 0);
    char out[TR_LB_COOKIE_MAX], value[17];
    size_t n = tr_lb_cookie_format(&hp, cookie, out, sizeof(out));
    assert_int_equal(n, strlen(out));
    snprintf(value, sizeof(value), "%016llx", (unsigned long long)cookie);
    char want[128];
    snprintf(want, sizeof(want), "session=%s; Max-Age=3601; Path=/app; HttpOnly", value);
    assert_string_equal(out, want);
    char back[64];
    snprintf(back, sizeof(back), "session=%s", value);
    struct tr_str_pair h2[] = {{TR_STR_LIT("cookie"), tr_str_from(back, strlen(back))}};
    struct tr_lb_request rq2 = {.headers = h2, .n_headers = 1};
    uint64_t hash2 = 0;
    assert_true(tr_lb_request_hash(&hp, &rq2, &hash2, &cookie));
    assert_int_equal(hash2, hash);
    assert_int_equal(cookie, 0);
    hp.cookie_ttl_ms = 0; /* a session cookie */
    hp.cookie_path = NULL;
    n = tr_lb_cookie_format(&hp, 0xabcull, out, sizeof(out));
    assert_string_equal(out, "session=0000000000000abc; HttpOnly");
    assert_int_equal(tr_lb_cookie_format(&hp, 1, out, 8), 0); /* does not fit */
    /* Source IP: the address, not the port. */
    hp = (struct tr_hash_policy_cfg){.source = TR_HASH_SOURCE_IP, .source_ip = true};
    assert_true(tr_lb_request_hash(&hp, &rq, &hash, &cookie));
    rq.peer = &peer2;
    assert_true(tr_lb_request_hash(&hp, &rq, &hash2, &cookie));
    assert_int_equal(hash, hash2);
    /* Query parameter: the first, raw. */
    hp = (struct tr_hash_policy_cfg){.source = TR_HASH_QUERY_PARAM, .query_param = "user"};
    assert_true(tr_lb_request_hash(&hp, &rq, &hash, &cookie));
    assert_int_equal(hash, tr_lb_hash_bytes("carol", 5, 0));
    hp.query_param = "use";
    assert_false(tr_lb_request_hash(&hp, &rq, &hash, &cookie));
    hp.query_param = "x";
    assert_true(tr_lb_request_hash(&hp, &rq, &hash, &cookie));
    assert_int_equal(hash, tr_lb_hash_bytes("1", 1, 0));
}

/* ---- circuit breakers ---- */

static void test_limit_share(void **state)
{
    (void)state;
    /* 10 over 4 workers: 3, 3, 2, 2 (10 in all). */
    static const uint32_t want[] = {3, 3, 2, 2};
    uint32_t sum = 0;
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(tr_limit_share(10, i, 4), want[i]);
        sum += tr_limit_share(10, i, 4);
    }
    assert_int_equal(sum, 10);
    /* Fewer than workers: 1 each, never 0 (0 is "no limit"). */
    assert_int_equal(tr_limit_share(1, 3, 4), 1);
    assert_int_equal(tr_limit_share(0, 2, 4), 0);
    assert_int_equal(tr_limit_share(7, 0, 1), 7);
    assert_int_equal(tr_limit_share(UINT32_MAX, 0, 256), UINT32_MAX / 256 + 1);
}

static void test_max_requests(void **state)
{
    (void)state;
    static struct gen g1, g2;
    gen_init(&g1);
    add_cluster(&g1, "web", TR_LB_ROUND_ROBIN, (int[]){1, 2}, NULL, 2);
    g1.clusters[0].breakers.max_requests = 3;
    gen_adopt(&g1, NULL);
    struct tr_cluster_rt *c = &g1.views[0];
    assert_int_equal(c->max_requests, 3); /* one worker: all of it */
    struct tr_endpoint_rt *e[3];
    for (int i = 0; i < 3; i++) {
        assert_true(tr_cluster_admit_request(c, NULL));
        e[i] = tr_cluster_pick(c, 0, 0, NULL, 0);
        tr_endpoint_request_begin(e[i]);
    }
    assert_false(tr_cluster_admit_request(c, NULL));
    /* Requests in flight keep counting in the next configuration's view. */
    gen_init(&g2);
    add_cluster(&g2, "web", TR_LB_ROUND_ROBIN, (int[]){1, 2}, NULL, 2);
    g2.clusters[0].breakers.max_requests = 4;
    gen_adopt(&g2, &g1);
    assert_true(tr_cluster_admit_request(&g2.views[0], NULL));
    tr_endpoint_request_begin(g2.views[0].eps[0]);
    assert_false(tr_cluster_admit_request(&g2.views[0], NULL));
    tr_endpoint_request_end(e[0]);
    assert_true(tr_cluster_admit_request(&g2.views[0], NULL));
    tr_endpoint_request_end(g2.views[0].eps[0]);
    tr_endpoint_request_end(e[1]);
    tr_endpoint_request_end(e[2]);
    assert_int_equal(g2.views[0].state->active_requests, 0);
    gen_free(&g1);
    gen_free(&g2);
}

/* The pool's part: connections and requests waiting for one, counted per
 * cluster against the worker's share, and connections closed after
 * max_requests_per_connection. Real loopback sockets and a real loop. */
struct pool_owner {
    int ready, failed;
};

static void owner_on_ready(void *owner, struct tr_upstream *up, int err, const char *reason)
{
    (void)up;
    (void)reason;
    struct pool_owner *o = owner;
    if (err < 0)
        o->failed++;
    else
        o->ready++;
}

static void owner_on_io(void *owner, struct tr_upstream *up)
{
    (void)owner;
    (void)up;
}

static const struct tr_upstream_owner_ops owner_ops = {.on_ready = owner_on_ready,
                                                       .on_io = owner_on_io};

static void test_pool_limits(void **state)
{
    (void)state;
    static struct gen g;
    static struct tr_worker w;
    memset(&w, 0, sizeof(w));
    w.loop = tr_loop_new();
    w.metrics = tr_metrics_new(0);
    assert_non_null(w.loop);
    assert_non_null(w.metrics);
    w.n_workers = 1;
    struct sockaddr_in sin = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    int lfd = tr_sock_listen((struct sockaddr *)&sin, sizeof(sin), false, 16);
    assert_true(lfd >= 0);
    socklen_t sl = sizeof(sin);
    assert_int_equal(getsockname(lfd, (struct sockaddr *)&sin, &sl), 0);

    gen_init(&g);
    g.ws.w = &w;
    add_cluster(&g, "web", TR_LB_ROUND_ROBIN, (int[]){ntohs(sin.sin_port)}, NULL, 1);
    g.clusters[0].connect_timeout_ms = 1000;
    g.clusters[0].pool_max_idle = 8;
    g.clusters[0].breakers.max_connections = 2;
    g.clusters[0].breakers.max_pending_requests = 1;
    g.clusters[0].max_requests_per_connection = 2;
    gen_adopt(&g, NULL);
    struct tr_cluster_rt *c = &g.views[0];
    struct tr_endpoint_rt *ep = c->eps[0];
    struct tr_cluster_state *st = c->state;
    struct pool_owner o = {0};
    bool ready;
    const char *reason = NULL;

    /* One HTTP/1.1 connection being established holds the one pending
     * request allowed: a second must wait, so it overflows. */
    struct tr_upstream *a = tr_pool_acquire(&w, ep, &owner_ops, &o, false, false, &ready, &reason);
    assert_non_null(a);
    assert_false(ready);
    assert_int_equal(st->pending_requests, 1);
    assert_int_equal(st->connections, 1);
    assert_null(tr_pool_acquire(&w, ep, &owner_ops, &o, false, false, &ready, &reason));
    assert_string_equal(reason, "overflow");
    for (int i = 0; i < 100 && o.ready == 0; i++)
        tr_loop_run_once(w.loop, 10);
    assert_int_equal(o.ready, 1);
    assert_int_equal(st->pending_requests, 0);
    /* Established: another may start, up to max_connections (2). */
    struct tr_upstream *b = tr_pool_acquire(&w, ep, &owner_ops, &o, false, false, &ready, &reason);
    assert_non_null(b);
    for (int i = 0; i < 100 && o.ready < 2; i++)
        tr_loop_run_once(w.loop, 10);
    assert_int_equal(st->connections, 2);
    reason = NULL;
    assert_null(tr_pool_acquire(&w, ep, &owner_ops, &o, true, false, &ready, &reason));
    assert_string_equal(reason, "overflow");

    /* a goes idle after its first request and is reused for a second, after
     * which max_requests_per_connection (2) closes it. */
    tr_pool_release(a, true);
    assert_int_equal(ep->n_idle, 1);
    struct tr_upstream *again =
        tr_pool_acquire(&w, ep, &owner_ops, &o, false, false, &ready, &reason);
    assert_ptr_equal(again, a);
    assert_true(ready);
    tr_pool_release(a, true);
    assert_int_equal(ep->n_idle, 0);
    assert_int_equal(st->connections, 1);
    tr_pool_release(b, false);
    assert_int_equal(st->connections, 0);
    tr_loop_run_once(w.loop, 0); /* the deferred frees */
    assert_int_equal(ep->refs, 1);

    gen_free(&g);
    close(lfd);
    tr_loop_free(w.loop);
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
    assert_null(tr_cluster_pick(&g0.views[1], 0, 0, NULL, 0));
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

/* ---- priorities, locality weights, warm-up ---- */

/* Picks per endpoint over n picks with pseudo-random numbers (a fixed
 * sequence: the counts are the same on every run). */
#define PICKS 20000u
static void count_picks(struct tr_cluster_rt *c, uint32_t n, uint64_t now_ms, uint32_t *count)
{
    uint32_t r = 12345;
    memset(count, 0, c->n_eps * sizeof(*count));
    for (uint32_t k = 0; k < n; k++) {
        r = r * 1664525u + 1013904223u;
        struct tr_endpoint_rt *e = tr_cluster_pick(c, r, key(k), NULL, now_ms);
        assert_non_null(e);
        for (uint32_t i = 0; i < c->n_eps; i++)
            count[i] += c->eps[i] == e;
    }
}

/* share (per mille of n) within tol per mille of want. */
static void assert_share(uint32_t count, uint32_t n, uint32_t want, uint32_t tol)
{
    uint32_t got = (uint32_t)((uint64_t)count * 1000u / n);
    if (got + tol < want || got > want + tol)
        fail_msg("share %u per mille, want %u +- %u", got, want, tol);
}

static void test_priority_failover(void **state)
{
    (void)state;
    for (enum tr_lb_policy lb = TR_LB_ROUND_ROBIN; lb <= TR_LB_MAGLEV; lb++) {
        static struct gen g;
        gen_init(&g);
        /* Two endpoints of level 0 (the client's zone), two of level 3
         * (compacted to 1): the model need not number levels densely. */
        add_cluster(&g, "web", lb, (int[]){1, 2, 3, 4}, NULL, 4);
        g.eps[0][2].priority = 3;
        g.eps[0][3].priority = 3;
        if (lb >= TR_LB_RING_HASH)
            hash_on(&g, 0, lb);
        gen_adopt(&g, NULL);
        struct tr_cluster_rt *c = &g.views[0];
        assert_int_equal(c->n_prios, 2);
        uint32_t n[4];
        /* All healthy: level 0 takes everything. */
        count_picks(c, PICKS, 0, n);
        assert_int_equal(n[2] + n[3], 0);
        assert_share(n[0], PICKS, 500, 60);
        /* One of two down: level 0's health is 50 % x 1.4 = 70 %, the other
         * 30 % spill to level 1 (Envoy's priority load). +-2 %: the draw is
         * per pick; ring and table shares add their own spread. */
        tr_endpoint_connect_failed(c->eps[0], 0);
        count_picks(c, PICKS, 10, n);
        assert_int_equal(n[0], 0);
        assert_share(n[1], PICKS, 700, 20);
        assert_share(n[2] + n[3], PICKS, 300, 20);
        /* Both down: level 1 takes all. */
        tr_endpoint_connect_failed(c->eps[1], 0);
        count_picks(c, PICKS, 10, n);
        assert_int_equal(n[2] + n[3], PICKS);
        /* A retry avoiding the last one of a level finds another level. */
        tr_endpoint_connect_ok(c->eps[0], 0);
        tr_endpoint_connect_ok(c->eps[1], 0);
        for (uint32_t r = 0; r < 64; r++) {
            struct tr_endpoint_rt *e = tr_cluster_pick(c, r * 2654435761u, key(r),
                                                       &(struct tr_pick_avoid){.ep = c->eps[0]}, 0);
            assert_non_null(e);
            assert_ptr_not_equal(e, c->eps[0]);
        }
        /* Everything down: nobody (503 UH). */
        for (uint32_t i = 0; i < 4; i++)
            tr_endpoint_connect_failed(c->eps[i], 0);
        assert_null(tr_cluster_pick(c, 7, key(7), NULL, 10));
        for (uint32_t i = 0; i < 4; i++)
            tr_endpoint_connect_ok(c->eps[i], 0);
        if (lb >= TR_LB_RING_HASH)
            hash_off(&g);
        gen_free(&g);
    }
}

/* A retry's tried levels (retries.exclude_tried_priorities): left out of
 * the level draw while another level has health, else none is. */
static void test_priority_tried_left_out(void **state)
{
    (void)state;
    for (enum tr_lb_policy lb = TR_LB_ROUND_ROBIN; lb <= TR_LB_MAGLEV; lb++) {
        static struct gen g;
        gen_init(&g);
        add_cluster(&g, "web", lb, (int[]){1, 2, 3, 4}, NULL, 4);
        g.eps[0][2].priority = 3;
        g.eps[0][3].priority = 3;
        if (lb >= TR_LB_RING_HASH)
            hash_on(&g, 0, lb);
        gen_adopt(&g, NULL);
        struct tr_cluster_rt *c = &g.views[0];
        /* Each endpoint knows its compacted level (what a retry records). */
        assert_int_equal(c->eps[0]->prio, 0);
        assert_int_equal(c->eps[1]->prio, 0);
        assert_int_equal(c->eps[2]->prio, 1);
        assert_int_equal(c->eps[3]->prio, 1);
        for (uint32_t r = 0; r < 256; r++) {
            uint32_t rnd = r * 2654435761u;
            /* Level 0 tried: level 1 takes the retry, though level 0 has
             * a healthy endpoint the failed one is not. */
            struct tr_endpoint_rt *e =
                tr_cluster_pick(c, rnd, key(r), &(struct tr_pick_avoid){c->eps[0], 1u}, 0);
            assert_true(e == c->eps[2] || e == c->eps[3]);
            /* Level 1 tried (and level 0 healthy): level 0 as ever. */
            e = tr_cluster_pick(c, rnd, key(r), &(struct tr_pick_avoid){c->eps[2], 2u}, 0);
            assert_true(e == c->eps[0] || e == c->eps[1]);
            /* Every level tried: none is left out; the failed endpoint still is. */
            e = tr_cluster_pick(c, rnd, key(r), &(struct tr_pick_avoid){c->eps[0], 3u}, 0);
            assert_ptr_equal(e, c->eps[1]);
        }
        /* Level 1 down: leaving level 0 out would leave nothing, so it is not. */
        tr_endpoint_connect_failed(c->eps[2], 0);
        tr_endpoint_connect_failed(c->eps[3], 0);
        for (uint32_t r = 0; r < 64; r++) {
            struct tr_endpoint_rt *e = tr_cluster_pick(c, r * 2654435761u, key(r),
                                                       &(struct tr_pick_avoid){c->eps[0], 1u}, 10);
            assert_ptr_equal(e, c->eps[1]);
        }
        for (uint32_t i = 2; i < 4; i++)
            tr_endpoint_connect_ok(c->eps[i], 0);
        if (lb >= TR_LB_RING_HASH)
            hash_off(&g);
        gen_free(&g);
    }
}

static struct sockaddr_storage v4(uint32_t ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    in->sin_family = AF_INET;
    in->sin_port = htons(port);
    in->sin_addr.s_addr = htonl(ip);
    return ss;
}

/* original_destination: one endpoint per original destination, made on
 * first use and found again; a full table gives up an idle one; none for
 * no destination or one in connect back-off; retired with the view. */
static void test_original_destination(void **state)
{
    (void)state;
    static struct gen g, g2;
    gen_init(&g);
    add_cluster(&g, "pass", TR_LB_LEAST_REQUEST, NULL, NULL, 0);
    g.clusters[0].original_destination = true;
    gen_adopt(&g, NULL);
    struct tr_cluster_rt *c = &g.views[0];
    assert_null(tr_cluster_pick_original(c, NULL, 0)); /* not captured */
    struct sockaddr_storage a = v4(0x0a000001, 80), b = v4(0x0a000001, 81);
    struct tr_endpoint_rt *ea = tr_cluster_pick_original(c, &a, 0);
    assert_non_null(ea);
    assert_string_equal(ea->addr_text, "10.0.0.1:80");
    assert_ptr_equal(ea->cluster, c);
    assert_ptr_equal(tr_cluster_pick_original(c, &a, 5), ea);
    struct tr_endpoint_rt *eb = tr_cluster_pick_original(c, &b, 5);
    assert_non_null(eb);
    assert_ptr_not_equal(eb, ea);
    assert_int_equal(c->n_orig, 2);
    /* In connect back-off: none (503 UH), no other to try. */
    tr_endpoint_connect_failed(ea, 10);
    assert_null(tr_cluster_pick_original(c, &a, 20));
    assert_ptr_equal(tr_cluster_pick_original(c, &a, 20 + TR_EP_BACKOFF_BASE_MS), ea);
    tr_endpoint_connect_ok(ea, 30 + TR_EP_BACKOFF_BASE_MS);
    /* Fill the table: busy ones stay, an idle one makes room. */
    eb->active_requests = 1;
    for (uint32_t i = 2; i < TR_ORIG_DST_MAX; i++) {
        struct sockaddr_storage d = v4(0x0b000000 + i, 443);
        struct tr_endpoint_rt *e = tr_cluster_pick_original(c, &d, 40);
        assert_non_null(e);
        e->active_requests = 1; /* busy */
    }
    assert_int_equal(c->n_orig, TR_ORIG_DST_MAX);
    struct sockaddr_storage extra = v4(0x0c000001, 9);
    struct tr_endpoint_rt *ex = tr_cluster_pick_original(c, &extra, 50);
    assert_non_null(ex); /* ea (idle) gave up its place */
    assert_int_equal(c->n_orig, TR_ORIG_DST_MAX);
    ex->active_requests = 1;
    struct sockaddr_storage more = v4(0x0c000002, 9);
    assert_null(tr_cluster_pick_original(c, &more, 60)); /* all busy */
    /* Every endpoint still found after the removal's shifts. */
    assert_ptr_equal(tr_cluster_pick_original(c, &b, 70), eb);
    for (uint32_t i = 2; i < TR_ORIG_DST_MAX; i++) {
        struct sockaddr_storage d = v4(0x0b000000 + i, 443);
        struct tr_endpoint_rt *e = tr_cluster_pick_original(c, &d, 70);
        assert_non_null(e);
        e->active_requests = 0;
    }
    eb->active_requests = 0;
    ex->active_requests = 0;
    /* A new view starts empty; the old one's endpoints are retired. */
    gen_init(&g2);
    add_cluster(&g2, "pass", TR_LB_LEAST_REQUEST, NULL, NULL, 0);
    g2.clusters[0].original_destination = true;
    gen_adopt(&g2, &g);
    assert_true(eb->retired);
    assert_int_equal(g2.views[0].n_orig, 0);
    gen_free(&g);
    gen_free(&g2);
}

static void test_priority_ejection(void **state)
{
    (void)state;
    static struct gen g;
    gen_init(&g);
    /* Outlier detection is what moves traffic in Istio's failover: an
     * ejected level-0 endpoint sends its share to level 1. */
    add_cluster(&g, "web", TR_LB_LEAST_REQUEST, (int[]){1, 2}, NULL, 2);
    g.eps[0][1].priority = 1;
    outlier_on(&g.clusters[0], 1, 100);
    gen_adopt(&g, NULL);
    struct tr_cluster_rt *c = &g.views[0];
    uint32_t n[2];
    count_picks(c, 2000, 0, n);
    assert_int_equal(n[0], 2000);
    tr_endpoint_report(c->eps[0], 503, 0);
    assert_true(tr_endpoint_ejected(c->eps[0], 1));
    count_picks(c, 2000, 1, n);
    assert_int_equal(n[1], 2000);
    tr_outlier_end(c->eps[0], 0);
    gen_free(&g);
}

static void test_locality_weights(void **state)
{
    (void)state;
    for (enum tr_lb_policy lb = TR_LB_ROUND_ROBIN; lb <= TR_LB_RANDOM; lb++) {
        static struct gen g;
        gen_init(&g);
        /* Localities a (two endpoints) and b (one): 80 / 20. */
        add_cluster(&g, "web", lb, (int[]){1, 2, 3}, NULL, 3);
        g.eps[0][0].locality = "r/a";
        g.eps[0][1].locality = "r/a";
        g.eps[0][2].locality = "r/b";
        static struct tr_locality_weight_cfg lw[] = {{"r/a", 80}, {"r/b", 20}};
        g.clusters[0].locality_weights = lw;
        g.clusters[0].n_locality_weights = 2;
        gen_adopt(&g, NULL);
        struct tr_cluster_rt *c = &g.views[0];
        assert_int_equal(c->n_groups, 2);
        uint32_t n[3];
        /* +-2 % over 20,000 picks (the draw's standard deviation is 0.3 %). */
        count_picks(c, PICKS, 0, n);
        assert_share(n[0] + n[1], PICKS, 800, 20);
        assert_share(n[2], PICKS, 200, 20);
        assert_share(n[0], PICKS, 400, 25);
        /* Half of a down: its weight x 0.5 x 1.4 = 56 against 20. */
        tr_endpoint_connect_failed(c->eps[0], 0);
        count_picks(c, PICKS, 10, n);
        assert_share(n[1], PICKS, 737, 20);
        assert_share(n[2], PICKS, 263, 20);
        tr_endpoint_connect_ok(c->eps[0], 0);
        gen_free(&g);
    }
}

static void test_warmup_ramp(void **state)
{
    (void)state;
    for (enum tr_lb_policy lb = TR_LB_ROUND_ROBIN; lb <= TR_LB_LEAST_REQUEST; lb++) {
        static struct gen g1, g2;
        gen_init(&g1);
        add_cluster(&g1, "web", lb, (int[]){1}, NULL, 1);
        g1.clusters[0].warmup = (struct tr_warmup_cfg){
            .duration_ms = 10000, .min_per_million = 100000, .aggression = 10000};
        gen_adopt(&g1, NULL);
        struct tr_endpoint_rt *old = g1.views[0].eps[0];
        old->added_ms = 1000; /* long warm by 100 s */
        /* Endpoint 2 appears at 100 s; the old one is taken over with its time. */
        gen_init(&g2);
        add_cluster(&g2, "web", lb, (int[]){1, 2}, NULL, 2);
        g2.clusters[0].warmup = g1.clusters[0].warmup;
        g2.views = tr_clusters_build(&g2.ws, g1.views, 1);
        assert_non_null(g2.views);
        g2.views[0].eps[1]->added_ms = 100000;
        tr_clusters_commit(g2.views, 1, g1.views, 1);
        struct tr_cluster_rt *c = &g2.views[0];
        assert_ptr_equal(c->eps[0], old);
        assert_int_equal(old->added_ms, 1000);
        assert_int_equal(c->warm_until_ms, 110000);
        uint32_t n[2];
        /* 0.5 s in: the minimum, 10 % of its weight: 0.1 / 1.1 = 9.1 %. */
        count_picks(c, PICKS, 100500, n);
        assert_share(n[1], PICKS, 91, 15);
        /* Halfway: 0.5 / 1.5 = 33.3 %. */
        count_picks(c, PICKS, 105000, n);
        assert_share(n[1], PICKS, 333, 20);
        /* Aggression 2: 0.5 ^ (1 / 2) = 0.707: 41.4 %. */
        g2.clusters[0].warmup.aggression = 20000;
        count_picks(c, PICKS, 105000, n);
        assert_share(n[1], PICKS, 414, 20);
        /* Done: an even split. */
        count_picks(c, PICKS, 110000, n);
        assert_share(n[1], PICKS, 500, 20);
        gen_free(&g1);
        gen_free(&g2);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_endpoints_taken_over_by_address),
        cmocka_unit_test(test_changed_connection_settings_start_afresh),
        cmocka_unit_test(test_connection_hold_moves_snapshot_use),
        cmocka_unit_test(test_round_robin_weights_smooth),
        cmocka_unit_test(test_backoff_and_avoid),
        cmocka_unit_test(test_outlier_consecutive_5xx),
        cmocka_unit_test(test_outlier_ejection_time_capped),
        cmocka_unit_test(test_outlier_max_ejection_percent),
        cmocka_unit_test(test_outlier_gateway_and_local_origin),
        cmocka_unit_test(test_outlier_panic_threshold),
        cmocka_unit_test(test_outlier_survives_update),
        cmocka_unit_test(test_ring_hash),
        cmocka_unit_test(test_maglev),
        cmocka_unit_test(test_hash_weights_and_tables),
        cmocka_unit_test(test_request_hash_keys),
        cmocka_unit_test(test_limit_share),
        cmocka_unit_test(test_max_requests),
        cmocka_unit_test(test_pool_limits),
        cmocka_unit_test(test_dns_names_expand_and_keep_endpoints),
        cmocka_unit_test(test_dns_first_follows_first_address),
        cmocka_unit_test(test_priority_failover),
        cmocka_unit_test(test_priority_tried_left_out),
        cmocka_unit_test(test_priority_ejection),
        cmocka_unit_test(test_original_destination),
        cmocka_unit_test(test_locality_weights),
        cmocka_unit_test(test_warmup_ramp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
