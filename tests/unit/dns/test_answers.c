/* dns/answers.c: which addresses a lookup uses, when an answer changes
 * anything, when a name is looked up again, and the published tables. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <cmocka.h>

#include "dns/answers.h"

static struct tr_dns_ip ip(const char *text)
{
    struct tr_dns_ip x = {0};
    if (inet_pton(AF_INET, text, &x.u.v4) == 1) {
        x.family = AF_INET;
    } else {
        assert_int_equal(inet_pton(AF_INET6, text, &x.u.v6), 1);
        x.family = AF_INET6;
    }
    return x;
}

static void assert_ip(const struct tr_dns_ip *x, const char *text)
{
    struct tr_dns_ip want = ip(text);
    assert_int_equal(x->family, want.family);
    assert_memory_equal(&x->u, &want.u, want.family == AF_INET ? 4 : 16);
}

static void test_select_by_family(void **state)
{
    (void)state;
    bool cut;
    /* auto: IPv4 when there is any (V4_PREFERRED), server order, no duplicates */
    struct tr_dns_ip a[] = {ip("fd00::1"), ip("10.0.0.2"), ip("10.0.0.1"), ip("10.0.0.2")};
    assert_int_equal(tr_dns_ips_select(a, 4, TR_DNS_AUTO, TR_DNS_MAX_ADDRS, &cut), 2);
    assert_ip(&a[0], "10.0.0.2");
    assert_ip(&a[1], "10.0.0.1");
    assert_false(cut);
    /* auto without IPv4: the IPv6 ones */
    struct tr_dns_ip b[] = {ip("fd00::2"), ip("fd00::1")};
    assert_int_equal(tr_dns_ips_select(b, 2, TR_DNS_AUTO, TR_DNS_MAX_ADDRS, &cut), 2);
    assert_ip(&b[0], "fd00::2");
    /* v6 asked: only AAAA answers count */
    struct tr_dns_ip c[] = {ip("10.0.0.1"), ip("fd00::3")};
    assert_int_equal(tr_dns_ips_select(c, 2, TR_DNS_V6, TR_DNS_MAX_ADDRS, &cut), 1);
    assert_ip(&c[0], "fd00::3");
    /* the cap, reported */
    struct tr_dns_ip d[] = {ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")};
    assert_int_equal(tr_dns_ips_select(d, 3, TR_DNS_V4, 2, &cut), 2);
    assert_true(cut);
    assert_int_equal(tr_dns_ips_select(d, 0, TR_DNS_V4, 2, &cut), 0);
    assert_false(cut);
}

static void test_answer_same(void **state)
{
    (void)state;
    struct tr_dns_ip x[] = {ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.3")};
    struct tr_dns_answer *a = tr_dns_answer_new("api.example.com", TR_DNS_V4, x, 3);
    assert_non_null(a);
    assert_string_equal(a->host, "api.example.com");
    assert_int_equal(a->n_ips, 3);
    /* the rest in another order: same endpoints */
    struct tr_dns_ip y[] = {ip("10.0.0.1"), ip("10.0.0.3"), ip("10.0.0.2")};
    assert_true(tr_dns_answer_same(a, y, 3));
    /* another first address matters (mode first) */
    struct tr_dns_ip z[] = {ip("10.0.0.2"), ip("10.0.0.1"), ip("10.0.0.3")};
    assert_false(tr_dns_answer_same(a, z, 3));
    /* another set */
    struct tr_dns_ip w[] = {ip("10.0.0.1"), ip("10.0.0.2"), ip("10.0.0.4")};
    assert_false(tr_dns_answer_same(a, w, 3));
    assert_false(tr_dns_answer_same(a, x, 2));
    /* no answer yet differs from any, even an empty one */
    assert_false(tr_dns_answer_same(NULL, x, 0));
    struct tr_dns_answer *empty = tr_dns_answer_new("gone.example.com", TR_DNS_V4, NULL, 0);
    assert_true(tr_dns_answer_same(empty, NULL, 0));
    assert_false(tr_dns_answer_same(empty, x, 1));
    tr_dns_answer_unref(empty);
    tr_dns_answer_unref(a);
}

static void test_delays(void **state)
{
    (void)state;
    /* min(TTL, refresh) with a floor of 1 s; TTL 0 means refresh */
    assert_int_equal(tr_dns_refresh_ms(30, 5000), 5000);
    assert_int_equal(tr_dns_refresh_ms(2, 5000), 2000);
    assert_int_equal(tr_dns_refresh_ms(1, 5000), 1000);
    assert_int_equal(tr_dns_refresh_ms(0, 5000), 5000);
    assert_int_equal(tr_dns_refresh_ms(600, 86400000), 600000);
    assert_int_equal(tr_dns_refresh_ms(0, 1000), 1000);
    /* failures: 1 s doubling up to refresh */
    assert_int_equal(tr_dns_retry_ms(1, 5000), 1000);
    assert_int_equal(tr_dns_retry_ms(2, 5000), 2000);
    assert_int_equal(tr_dns_retry_ms(3, 5000), 4000);
    assert_int_equal(tr_dns_retry_ms(4, 5000), 5000);
    assert_int_equal(tr_dns_retry_ms(40, 5000), 5000);
    assert_int_equal(tr_dns_retry_ms(1, 1000), 1000);
    assert_int_equal(tr_dns_retry_ms(1000, 86400000), 86400000);
}

static void test_sockaddr(void **state)
{
    (void)state;
    struct sockaddr_storage ss;
    socklen_t len;
    struct tr_dns_ip v4 = ip("127.0.0.2"), v6 = ip("::1");
    tr_dns_ip_sockaddr(&v4, 8080, &ss, &len);
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 8080);
    tr_dns_ip_sockaddr(&v6, 443, &ss, &len);
    assert_int_equal(len, sizeof(struct sockaddr_in6));
    assert_int_equal(ntohs(((struct sockaddr_in6 *)&ss)->sin6_port), 443);
}

static void test_table(void **state)
{
    (void)state;
    struct tr_dns_ip x[] = {ip("10.0.0.1")}, y[] = {ip("fd00::1")};
    struct tr_dns_answer *a[] = {
        tr_dns_answer_new("b.example", TR_DNS_V4, x, 1),
        tr_dns_answer_new("a.example", TR_DNS_V4, x, 1),
        tr_dns_answer_new("b.example", TR_DNS_AUTO, y, 1),
    };
    struct tr_dns_table *t = tr_dns_table_new(a, 3, 7);
    assert_non_null(t);
    assert_int_equal(t->version, 7);
    /* the table holds its own references */
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(atomic_load(&a[i]->refs), 2);
        tr_dns_answer_unref(a[i]);
    }
    assert_ptr_equal(tr_dns_table_find(t, "a.example", TR_DNS_V4), a[1]);
    assert_ptr_equal(tr_dns_table_find(t, "b.example", TR_DNS_V4), a[0]);
    assert_ptr_equal(tr_dns_table_find(t, "b.example", TR_DNS_AUTO), a[2]);
    assert_null(tr_dns_table_find(t, "b.example", TR_DNS_V6));
    assert_null(tr_dns_table_find(t, "c.example", TR_DNS_V4));
    assert_null(tr_dns_table_find(NULL, "a.example", TR_DNS_V4));

    /* publish and acquire: the slot holds one reference */
    assert_null(tr_dns_table_current_acquire());
    tr_dns_table_publish(t);
    struct tr_dns_table *cur = tr_dns_table_current_acquire();
    assert_ptr_equal(cur, t);
    assert_int_equal(atomic_load(&t->refs), 2);
    tr_dns_table_publish(tr_dns_table_new(NULL, 0, 8)); /* drops the slot's reference */
    assert_int_equal(atomic_load(&t->refs), 1);
    tr_dns_table_unref(cur); /* frees t and its answers */
    cur = tr_dns_table_current_acquire();
    assert_int_equal(cur->n, 0);
    tr_dns_table_unref(cur);
    tr_dns_table_publish(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_select_by_family),
        cmocka_unit_test(test_answer_same),
        cmocka_unit_test(test_delays),
        cmocka_unit_test(test_sockaddr),
        cmocka_unit_test(test_table),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
