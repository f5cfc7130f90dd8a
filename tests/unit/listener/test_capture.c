/* Unit tests for listener/capture.c: the table a capture listener hands
 * connections over with, built from a loaded model; exact ip:port before
 * 0.0.0.0:port / [::]:port, per direction, and nothing for the rest. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "listener/capture.h"

static const char yaml[] =
    "listeners:\n"
    "- {name: cap-out, address: 127.0.0.1:15001, direction: outbound, protocol: tcp,\n"
    "   original_destination: {}}\n"
    "- {name: cap-in, address: 0.0.0.0:15006, direction: inbound, protocol: tcp,\n"
    "   original_destination: {unmatched: reject}}\n"
    "- {name: out-any-9080, address: 0.0.0.0:9080, direction: outbound, bind: false,\n"
    "   route_table: rt}\n"
    "- {name: out-reviews-9080, address: 198.18.0.5:9080, direction: outbound, bind: false,\n"
    "   route_table: rt}\n"
    "- {name: out-v6-9080, address: '[::]:9080', direction: outbound, bind: false,\n"
    "   route_table: rt}\n"
    "- {name: out-db-5432, address: '[fd00::7]:5432', direction: outbound, bind: false,\n"
    "   protocol: tcp, tcp_cluster: c}\n"
    "- {name: in-9080, address: 198.18.0.2:9080, direction: inbound, bind: false,\n"
    "   protocol: tcp, tcp_cluster: c}\n"
    "- {name: bound-9080, address: 127.0.0.1:9080, direction: outbound, route_table: rt}\n"
    "route_tables:\n"
    "- {name: rt, virtual_hosts: [{domains: ['*'], routes: [{cluster: c}]}]}\n"
    "clusters:\n"
    "- {name: c, endpoints: [{address: 127.0.0.1:1}]}\n";

static struct tr_config *load(void)
{
    char *err = NULL;
    struct tr_config *c = tr_config_load_buffer(yaml, strlen(yaml), "t.yaml", &err);
    if (c == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(c);
    return c;
}

static struct sockaddr_storage addr(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, ip, &a->sin6_addr), 1);
    } else {
        struct sockaddr_in *a = (struct sockaddr_in *)&ss;
        a->sin_family = AF_INET;
        a->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, ip, &a->sin_addr), 1);
    }
    return ss;
}

static const char *lookup(const struct tr_config *c, const struct tr_capture_table *t,
                          const char *ip, uint16_t port)
{
    struct sockaddr_storage ss = addr(ip, port);
    int i = tr_capture_lookup(t, &ss);
    return i < 0 ? "none" : c->listeners[i].name;
}

static void test_outbound(void **state)
{
    (void)state;
    struct tr_config *c = load();
    struct tr_capture_table *t = tr_capture_table_build(c, 0);
    assert_non_null(t);
    assert_int_equal(t->n_exact, 2);
    assert_int_equal(t->n_wild, 2);
    /* Exact ip:port wins over the wildcard of its port. */
    assert_string_equal(lookup(c, t, "198.18.0.5", 9080), "out-reviews-9080");
    /* Any other IPv4 address on the port: the wildcard. */
    assert_string_equal(lookup(c, t, "198.18.0.6", 9080), "out-any-9080");
    assert_string_equal(lookup(c, t, "10.1.2.3", 9080), "out-any-9080");
    /* IPv6 has its own wildcard; 0.0.0.0 does not cover it. */
    assert_string_equal(lookup(c, t, "fd00::1", 9080), "out-v6-9080");
    assert_string_equal(lookup(c, t, "fd00::7", 5432), "out-db-5432");
    /* Nothing on the port, or only an exact entry elsewhere. */
    assert_string_equal(lookup(c, t, "198.18.0.5", 9081), "none");
    assert_string_equal(lookup(c, t, "fd00::8", 5432), "none");
    assert_string_equal(lookup(c, t, "10.0.0.1", 5432), "none");
    /* The inbound virtual listener is not in the outbound table; a bound
     * listener is never a handover target. */
    assert_string_equal(lookup(c, t, "198.18.0.2", 9080), "out-any-9080");
    /* Not an IP address at all. */
    struct sockaddr_storage un = {.ss_family = AF_UNIX};
    assert_int_equal(tr_capture_lookup(t, &un), -1);
    tr_capture_table_free(t);
    tr_config_free(c);
}

static void test_inbound(void **state)
{
    (void)state;
    struct tr_config *c = load();
    assert_int_equal(c->listeners[1].original_destination->unmatched, TR_CAPTURE_REJECT);
    assert_int_equal(c->listeners[0].original_destination->unmatched, TR_CAPTURE_PASSTHROUGH);
    assert_int_equal(c->listeners[0].original_destination->connect_timeout_ms, 1000);
    struct tr_capture_table *t = tr_capture_table_build(c, 1);
    assert_non_null(t);
    assert_int_equal(t->n_exact, 1);
    assert_int_equal(t->n_wild, 0);
    assert_string_equal(lookup(c, t, "198.18.0.2", 9080), "in-9080");
    assert_string_equal(lookup(c, t, "198.18.0.3", 9080), "none");
    assert_string_equal(lookup(c, t, "198.18.0.5", 9080), "none");
    tr_capture_table_free(t);
    tr_config_free(c);
}

/* destination_prefixes: the most specific block on the port wins, after an
 * exact address and before the port's wildcard; blocks of other ports and
 * families do not count. */
static void test_prefixes(void **state)
{
    (void)state;
    static const char text[] =
        "listeners:\n"
        "- {name: cap, address: 127.0.0.1:15001, direction: outbound, protocol: tcp,\n"
        "   original_destination: {}}\n"
        "- {name: any-3306, address: 0.0.0.0:3306, direction: outbound, bind: false,\n"
        "   protocol: tcp, tcp_cluster: c}\n"
        "- {name: net-10, address: 0.0.0.0:3306, direction: outbound, bind: false,\n"
        "   protocol: tcp, tcp_cluster: c, destination_prefixes: [10.0.0.0/8, 'fd00::/16']}\n"
        "- {name: net-10-1, address: 0.0.0.0:3306, direction: outbound, bind: false,\n"
        "   protocol: tcp, tcp_cluster: c, destination_prefixes: [10.1.0.0/16]}\n"
        "- {name: host-10-1-2-3, address: 10.1.2.3:3306, direction: outbound, bind: false,\n"
        "   protocol: tcp, tcp_cluster: c}\n"
        "- {name: net-10-1-4445, address: '[::]:4445', direction: outbound, bind: false,\n"
        "   protocol: tcp, tcp_cluster: c, destination_prefixes: [10.1.0.0/16]}\n"
        "clusters:\n"
        "- {name: c, endpoints: [{address: 127.0.0.1:1}]}\n";
    char *err = NULL;
    struct tr_config *c = tr_config_load_buffer(text, strlen(text), "t.yaml", &err);
    if (c == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(c);
    struct tr_capture_table *t = tr_capture_table_build(c, 0);
    assert_non_null(t);
    assert_int_equal(t->n_prefix, 4);
    assert_int_equal(t->n_wild, 1);
    assert_string_equal(lookup(c, t, "10.1.2.3", 3306), "host-10-1-2-3");
    assert_string_equal(lookup(c, t, "10.1.2.4", 3306), "net-10-1");
    assert_string_equal(lookup(c, t, "10.2.0.1", 3306), "net-10");
    assert_string_equal(lookup(c, t, "11.0.0.1", 3306), "any-3306");
    assert_string_equal(lookup(c, t, "fd00::1", 3306), "net-10");
    assert_string_equal(lookup(c, t, "fd01::1", 3306), "none");
    assert_string_equal(lookup(c, t, "::ffff:10.9.9.9", 3306), "net-10"); /* v4-mapped */
    assert_string_equal(lookup(c, t, "10.1.0.9", 4445), "net-10-1-4445");
    assert_string_equal(lookup(c, t, "10.2.0.9", 4445), "none");
    assert_string_equal(lookup(c, t, "10.1.0.9", 4446), "none");
    tr_capture_table_free(t);
    tr_config_free(c);
}

/* Many entries: every one found by binary search, neighbours not. */
static void test_many(void **state)
{
    (void)state;
    size_t n = 300, cap = 512 + n * 160;
    char *text = malloc(cap);
    assert_non_null(text);
    size_t o = (size_t)snprintf(text, cap,
                                "listeners:\n- {name: cap, address: 127.0.0.1:15001, direction: "
                                "outbound, protocol: tcp, original_destination: {}}\n");
    for (size_t i = 0; i < n; i++)
        o += (size_t)snprintf(text + o, cap - o,
                              "- {name: v%zu, address: 198.18.%zu.%zu:%zu, direction: outbound, "
                              "bind: false, route_table: rt}\n",
                              i, i % 7, i % 251 + 1, 1000 + i % 13);
    snprintf(text + o, cap - o,
             "route_tables:\n- {name: rt, virtual_hosts: [{domains: ['*'], routes: [{cluster: "
             "c}]}]}\nclusters:\n- {name: c, endpoints: [{address: 127.0.0.1:1}]}\n");
    char *err = NULL;
    struct tr_config *c = tr_config_load_buffer(text, strlen(text), "t.yaml", &err);
    if (c == NULL)
        fprintf(stderr, "%s\n", err);
    assert_non_null(c);
    struct tr_capture_table *t = tr_capture_table_build(c, 0);
    assert_int_equal(t->n_exact, n);
    for (size_t i = 0; i < n; i++) {
        char ip[32], want[16];
        snprintf(ip, sizeof(ip), "198.18.%zu.%zu", i % 7, i % 251 + 1);
        snprintf(want, sizeof(want), "v%zu", i);
        assert_string_equal(lookup(c, t, ip, (uint16_t)(1000 + i % 13)), want);
        assert_string_equal(lookup(c, t, ip, (uint16_t)(1013 + i % 13)), "none");
    }
    tr_capture_table_free(t);
    tr_config_free(c);
    free(text);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_outbound),
        cmocka_unit_test(test_inbound),
        cmocka_unit_test(test_prefixes),
        cmocka_unit_test(test_many),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
