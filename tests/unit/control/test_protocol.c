/* Unit tests: control/protocol (message framing of the control-plane
 * protocol). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "control/protocol.h"

struct got {
    int n;
    enum tr_cp_type type[8];
    uint64_t version[8];
    char payload[8][64];
    size_t len[8];
    int stop_after; /* return nonzero from this message on (0: never) */
};

static int collect(void *arg, enum tr_cp_type t, uint64_t version, const char *p, size_t len)
{
    struct got *g = arg;
    assert_true(g->n < 8);
    assert_int_equal(p[len], '\0'); /* NUL-terminated for the reader's callers */
    g->type[g->n] = t;
    g->version[g->n] = version;
    g->len[g->n] = len;
    snprintf(g->payload[g->n], sizeof(g->payload[0]), "%.*s", (int)len, p);
    g->n++;
    return g->stop_after && g->n >= g->stop_after ? 7 : 0;
}

static int read_all(const char *in, size_t len, size_t piece, struct got *g, const char **why,
                    size_t max)
{
    struct tr_cp_reader r;
    tr_cp_reader_init(&r, max);
    int rc = 0;
    for (size_t off = 0; off < len && rc == 0; off += piece) {
        size_t n = len - off < piece ? len - off : piece;
        rc = tr_cp_read(&r, (const uint8_t *)in + off, n, collect, g, why);
    }
    if (rc == 0)
        assert_true(tr_cp_reader_idle(&r));
    tr_cp_reader_free(&r);
    return rc;
}

static void test_header_round_trip(void **state)
{
    (void)state;
    char h[TR_CP_MAX_HEADER];
    size_t n = tr_cp_header(h, TR_CP_MODEL, 1796588564287ull, 42);
    assert_string_equal(h, "model 1796588564287 42\n");
    assert_int_equal(n, strlen(h));
    n = tr_cp_header(h, TR_CP_NACK, 18446744073709551615ull, TR_CP_MAX_PAYLOAD);
    assert_true(n > 0 && n < TR_CP_MAX_HEADER);
    assert_string_equal(tr_cp_type_name(TR_CP_BUNDLE), "bundle");
}

static void test_messages_in_any_pieces(void **state)
{
    (void)state;
    const char in[] = "bundle 0 3\nabcmodel 7 11\nlisteners:\nack 7 0\nnack 8 5\noops!";
    for (size_t piece = 1; piece <= sizeof(in); piece++) {
        struct got g = {0};
        const char *why = NULL;
        assert_int_equal(read_all(in, sizeof(in) - 1, piece, &g, &why, 1024), 0);
        assert_int_equal(g.n, 4);
        assert_int_equal(g.type[0], TR_CP_BUNDLE);
        assert_string_equal(g.payload[0], "abc");
        assert_int_equal(g.type[1], TR_CP_MODEL);
        assert_int_equal(g.version[1], 7);
        assert_string_equal(g.payload[1], "listeners:\n");
        assert_int_equal(g.type[2], TR_CP_ACK);
        assert_int_equal(g.len[2], 0);
        assert_int_equal(g.type[3], TR_CP_NACK);
        assert_int_equal(g.version[3], 8);
        assert_string_equal(g.payload[3], "oops!");
    }
}

static void test_refusals(void **state)
{
    (void)state;
    static const struct {
        const char *in;
        const char *why;
    } bad[] = {
        {"model 1\n", "message header is not 'TYPE VERSION LENGTH'"},
        {"model 1 2 3\n", "message version or length is not a decimal number"},
        {"patch 1 2\nab", "unknown message type"},
        {"Model 1 2\nab", "unknown message type"},
        {"model 01 2\nab", "message version or length is not a decimal number"},
        {"model 1 +2\nab", "message version or length is not a decimal number"},
        {"model -1 2\nab", "message version or length is not a decimal number"},
        {"model 1 2 \nab", "message version or length is not a decimal number"},
        {"model  1 2\nab", "message version or length is not a decimal number"},
        {"model 1 99999999999999999999\n", "message version or length is not a decimal number"},
        {"model 1 1025\n", "message payload over the limit"},
        {"model 1 2\r\nab", "message version or length is not a decimal number"},
        {"model 123456789012345678901234567890123456789012345678901234567890 1\n",
         "message header line too long"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct got g = {0};
        const char *why = NULL;
        int rc = read_all(bad[i].in, strlen(bad[i].in), 3, &g, &why, 1024);
        if (rc != -1 || why == NULL || strcmp(why, bad[i].why) != 0)
            fail_msg("%s: rc %d why %s", bad[i].in, rc, why ? why : "(null)");
        assert_int_equal(g.n, 0);
    }
}

static void test_callback_stops_reading(void **state)
{
    (void)state;
    struct got g = {.stop_after = 1};
    const char *why = NULL;
    const char in[] = "ack 1 0\nack 2 0\n";
    assert_int_equal(read_all(in, sizeof(in) - 1, sizeof(in), &g, &why, 64), 7);
    assert_int_equal(g.n, 1);
}

static void test_limit_is_clamped(void **state)
{
    (void)state;
    struct tr_cp_reader r;
    tr_cp_reader_init(&r, (size_t)1 << 40);
    assert_int_equal(r.max_payload, TR_CP_MAX_PAYLOAD);
    tr_cp_reader_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_round_trip), cmocka_unit_test(test_messages_in_any_pieces),
        cmocka_unit_test(test_refusals),          cmocka_unit_test(test_callback_stops_reading),
        cmocka_unit_test(test_limit_is_clamped),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
