/* libFuzzer target: request path normalisation (filter/path_normalize.h).
 *
 * Input: byte 0 picks the mode, the rest is a request target. The output
 * buffer is malloc'd to exactly the input's length (the documented bound),
 * so ASan sees any write past it. Checked invariants on a normalised path:
 *   - NONE (and "*"): the input, unchanged;
 *   - never longer than the input; the query (from the first '?') is the
 *     input's byte for byte;
 *   - the path starts with '/', has no "." or ".." segment (so no "/../"),
 *     no backslash, no byte up to 0x20 or 0x7f; every '%' starts an escape
 *     of two upper-case hex digits that is not an unreserved character;
 *   - all modes but BASE: no "//"; STRICT and DECODE_AND_MERGE_SLASHES: no
 *     %2F or %5C; STRICT: no %00 and no dot segment with ';' parameters;
 *   - normalising it again gives it back (idempotence). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "filter/path_normalize.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool is_upper_hex(char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'F');
}

static int hex(char c)
{
    return c <= '9' ? c - '0' : c - 'A' + 10;
}

static bool unreserved(int c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* The segment p[0..n) (between slashes) as a dot segment, parameters
 * after ';' left out. */
static bool dot_segment(const char *p, size_t n, bool *with_params)
{
    const char *semi = memchr(p, ';', n);
    size_t name = semi != NULL ? (size_t)(semi - p) : n;
    *with_params = semi != NULL;
    return (name == 1 && p[0] == '.') || (name == 2 && p[0] == '.' && p[1] == '.');
}

static void check_path(enum tr_path_normalization mode, const char *p, size_t n)
{
    CHECK(n >= 1 && p[0] == '/');
    bool merge = mode != TR_PATHNORM_BASE;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        CHECK(c > 0x20 && c != 0x7f && c != '\\' && c != '?');
        if (c == '%') {
            CHECK(i + 2 < n && is_upper_hex(p[i + 1]) && is_upper_hex(p[i + 2]));
            int d = hex(p[i + 1]) << 4 | hex(p[i + 2]);
            CHECK(!unreserved(d));
            if (mode == TR_PATHNORM_STRICT || mode == TR_PATHNORM_DECODE_AND_MERGE_SLASHES)
                CHECK(d != '/' && d != '\\');
            if (mode == TR_PATHNORM_STRICT)
                CHECK(d != 0);
        }
        if (merge && c == '/')
            CHECK(i + 1 == n || p[i + 1] != '/');
    }
    for (size_t i = 0; i < n;) {
        size_t j = i + 1;
        while (j < n && p[j] != '/')
            j++;
        bool params;
        bool dot = dot_segment(p + i + 1, j - i - 1, &params);
        CHECK(!dot || (params && mode != TR_PATHNORM_STRICT));
        i = j;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    enum tr_path_normalization mode = (enum tr_path_normalization)(data[0] % 5);
    const char *in = (const char *)data + 1;
    size_t len = size - 1;
    char *out = malloc(len > 0 ? len : 1); /* exactly the bound: ASan sees an overrun */
    size_t n = 0;
    enum tr_path_status st = tr_path_normalize(mode, in, len, out, len, &n);
    CHECK(tr_path_status_str(st) != NULL);
    if (st != TR_PATH_OK) {
        CHECK(st < 0 && mode != TR_PATHNORM_NONE);
        free(out);
        return 0;
    }
    CHECK(n <= len);
    if (mode == TR_PATHNORM_NONE || (len == 1 && in[0] == '*')) {
        CHECK(n == len && memcmp(out, in, len) == 0);
        free(out);
        return 0;
    }
    const char *q_in = memchr(in, '?', len);
    const char *q_out = memchr(out, '?', n);
    size_t query = q_in != NULL ? (size_t)(in + len - q_in) : 0;
    CHECK((q_out != NULL) == (q_in != NULL));
    CHECK(q_out == NULL || ((size_t)(out + n - q_out) == query && memcmp(q_out, q_in, query) == 0));
    check_path(mode, out, n - query);
    /* Idempotent: a second proxy (a mesh hop) normalises to the same path. */
    char *again = malloc(n);
    size_t n2 = 0;
    CHECK(tr_path_normalize(mode, out, n, again, n, &n2) == TR_PATH_OK);
    CHECK(n2 == n && memcmp(again, out, n) == 0);
    free(again);
    free(out);
    return 0;
}
