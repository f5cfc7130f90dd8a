/* libFuzzer target: the bounded formatters of core/fmt.h and the access-log
 * line built on them.
 *
 * Input: byte 0 picks a fixed-buffer size, the rest is untrusted text (and,
 * split at NUL bytes, the values of an access-log entry). Checked invariants:
 *   - a JSON string re-parses (a small strict checker below) and decodes to
 *     the input with each byte that does not start valid UTF-8 replaced by
 *     U+FFFD; in a fixed buffer it is whole, or a prefix of that when cut,
 *     and never longer than the buffer (the buffers are malloc'd to their
 *     exact size, so ASan sees any write past them);
 *   - a YAML double-quoted scalar decodes the same way, with only the escapes
 *     \\ \" \t \n \r \xXX \uXXXX and no raw character a YAML reader must
 *     not see (controls, C1, U+2028/9, BOM, U+FFFE/F); JSON strings hold none
 *     of those raw either (our loader reads JSON as YAML);
 *   - a Prometheus label value uses only the escapes \\ \" \n, holds no raw
 *     quote or newline, and decodes the same way;
 *   - an access-log line is at most TR_ACCESS_LOG_LINE_MAX bytes, one line,
 *     one JSON object of string, number and null values; "truncated":true
 *     exactly when a value was cut. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/fmt.h"
#include "obs/access_log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

/* ---- the reference: what the text should decode to ---- */

/* Length of a valid UTF-8 sequence at s (written from RFC 3629's ABNF,
 * independently of core/fmt.c), or 0. */
static size_t ref_utf8(const uint8_t *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    uint32_t cp;
    size_t len;
    if ((s[0] & 0xe0) == 0xc0) {
        len = 2;
        cp = s[0] & 0x1f;
    } else if ((s[0] & 0xf0) == 0xe0) {
        len = 3;
        cp = s[0] & 0x0f;
    } else if ((s[0] & 0xf8) == 0xf0) {
        len = 4;
        cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (n < len)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3f);
    }
    static const uint32_t min[] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < min[len] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

/* The code point of the valid sequence s[0, len). */
static uint32_t ref_cp(const uint8_t *s, size_t len)
{
    static const uint8_t mask[] = {0, 0x7f, 0x1f, 0x0f, 0x07};
    uint32_t cp = s[0] & mask[len];
    for (size_t i = 1; i < len; i++)
        cp = cp << 6 | (s[i] & 0x3f);
    return cp;
}

/* Valid, but not for a YAML reader to see raw (escaped by both escapers). */
static bool ref_yaml_unsafe(uint32_t cp)
{
    return cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 ||
           cp == 0xfeff || cp == 0xfffe || cp == 0xffff;
}

/* s with invalid bytes replaced by U+FFFD, into out (room for 3 * n). */
static size_t reference(const uint8_t *s, size_t n, uint8_t *out)
{
    size_t o = 0;
    for (size_t i = 0; i < n;) {
        size_t len = ref_utf8(s + i, n - i);
        if (len == 0) {
            memcpy(out + o, "\xef\xbf\xbd", 3);
            o += 3;
            i++;
        } else {
            memcpy(out + o, s + i, len);
            o += len;
            i += len;
        }
    }
    return o;
}

/* ---- checkers ---- */

static int hexval(uint8_t c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static size_t put_utf8(uint32_t cp, uint8_t *out)
{
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (uint8_t)(0xc0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3f));
        return 2;
    }
    out[0] = (uint8_t)(0xe0 | cp >> 12);
    out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3f));
    out[2] = (uint8_t)(0x80 | (cp & 0x3f));
    return 3;
}

/* A JSON string (RFC 8259) at s[*pos]; decoded into out (if not NULL; room
 * for n bytes). Returns false if it is not one. */
static bool json_string(const uint8_t *s, size_t n, size_t *pos, uint8_t *out, size_t *out_len)
{
    size_t i = *pos, o = 0;
    if (i >= n || s[i] != '"')
        return false;
    for (i++; i < n && s[i] != '"';) {
        if (s[i] < 0x20)
            return false;
        if (s[i] == '\\') {
            if (i + 1 >= n)
                return false;
            uint8_t e = s[i + 1];
            const char *simple = strchr("\"\\/bfnrt", e);
            if (e != 0 && simple != NULL) {
                static const char dec[] = "\"\\/\b\f\n\r\t";
                if (out)
                    out[o] = (uint8_t)dec[simple - "\"\\/bfnrt"];
                o++;
                i += 2;
                continue;
            }
            if (e != 'u' || i + 6 > n)
                return false;
            uint32_t cp = 0;
            for (size_t k = 2; k < 6; k++) {
                int h = hexval(s[i + k]);
                if (h < 0)
                    return false;
                cp = cp << 4 | (uint32_t)h;
            }
            if (cp >= 0xd800 && cp <= 0xdfff)
                return false; /* our escaper never splits a character into surrogates */
            uint8_t tmp[4];
            size_t k = put_utf8(cp, tmp);
            if (out)
                memcpy(out + o, tmp, k);
            o += k;
            i += 6;
            continue;
        }
        size_t len = ref_utf8(s + i, n - i);
        if (len == 0 || ref_yaml_unsafe(ref_cp(s + i, len)))
            return false;
        if (out)
            memcpy(out + o, s + i, len);
        o += len;
        i += len;
    }
    if (i >= n)
        return false;
    *pos = i + 1;
    if (out_len)
        *out_len = o;
    return true;
}

/* The whole of s[0, n) is one JSON string decoding to want[0, want_len), or
 * (prefix) to a prefix of it. */
static void check_json(const uint8_t *s, size_t n, const uint8_t *want, size_t want_len,
                       bool prefix)
{
    uint8_t *dec = malloc(n + 1);
    size_t pos = 0, dec_len = 0;
    CHECK(dec != NULL);
    CHECK(json_string(s, n, &pos, dec, &dec_len));
    CHECK(pos == n);
    CHECK(prefix ? dec_len <= want_len : dec_len == want_len);
    CHECK(memcmp(dec, want, dec_len) == 0);
    free(dec);
}

/* The whole of s[0, n) is one YAML double-quoted scalar, with the
 * escaper's escapes only, decoding to want[0, want_len). */
static void check_yaml(const uint8_t *s, size_t n, const uint8_t *want, size_t want_len)
{
    uint8_t *dec = malloc(n + 1);
    size_t o = 0;
    CHECK(dec != NULL);
    CHECK(n >= 2 && s[0] == '"' && s[n - 1] == '"');
    for (size_t i = 1; i < n - 1;) {
        CHECK(s[i] != '"');
        if (s[i] == '\\') {
            CHECK(i + 1 < n - 1);
            uint8_t e = s[i + 1];
            static const char esc[] = "\\\"tnr", dec_of[] = "\\\"\t\n\r";
            const char *simple = e != 0 ? strchr(esc, e) : NULL;
            if (simple != NULL) {
                dec[o++] = (uint8_t)dec_of[simple - esc];
                i += 2;
                continue;
            }
            CHECK(e == 'x' || e == 'u');
            size_t digits = e == 'x' ? 2 : 4;
            CHECK(i + 2 + digits <= n - 1);
            uint32_t cp = 0;
            for (size_t k = 0; k < digits; k++) {
                int h = hexval(s[i + 2 + k]);
                CHECK(h >= 0);
                cp = cp << 4 | (uint32_t)h;
            }
            CHECK(cp < 0xd800 || cp > 0xdfff);
            o += put_utf8(cp, dec + o);
            i += 2 + digits;
            continue;
        }
        size_t len = ref_utf8(s + i, n - 1 - i);
        CHECK(len != 0 && !ref_yaml_unsafe(ref_cp(s + i, len)));
        memcpy(dec + o, s + i, len);
        o += len;
        i += len;
    }
    CHECK(o == want_len && memcmp(dec, want, o) == 0);
    free(dec);
}

/* A label value: only \\ \" \n escapes, no raw quote or newline. */
static void check_prom(const uint8_t *s, size_t n, const uint8_t *want, size_t want_len)
{
    uint8_t *dec = malloc(n + 1);
    size_t o = 0;
    CHECK(dec != NULL);
    for (size_t i = 0; i < n;) {
        CHECK(s[i] != '"' && s[i] != '\n');
        if (s[i] == '\\') {
            CHECK(i + 1 < n && (s[i + 1] == '\\' || s[i + 1] == '"' || s[i + 1] == 'n'));
            dec[o++] = s[i + 1] == 'n' ? '\n' : s[i + 1];
            i += 2;
            continue;
        }
        size_t len = ref_utf8(s + i, n - i);
        CHECK(len != 0);
        memcpy(dec + o, s + i, len);
        o += len;
        i += len;
    }
    CHECK(o == want_len && memcmp(dec, want, o) == 0);
    free(dec);
}

/* One access-log line: {"key":value,...}\n with string, number or null
 * values (and "truncated":true last). Returns whether it says truncated. */
static bool check_line(const uint8_t *s, size_t n)
{
    CHECK(n >= 3 && n <= TR_ACCESS_LOG_LINE_MAX);
    CHECK(s[n - 1] == '\n' && s[n - 2] == '}' && s[0] == '{');
    CHECK(memchr(s, '\n', n - 1) == NULL);
    size_t end = n - 2, i = 1;
    bool truncated = false;
    while (i < end) {
        if (i > 1) {
            CHECK(s[i] == ',');
            i++;
        }
        size_t key = i;
        CHECK(json_string(s, end, &i, NULL, NULL));
        CHECK(i < end && s[i] == ':');
        i++;
        CHECK(i < end);
        if (s[i] == '"') {
            CHECK(json_string(s, end, &i, NULL, NULL));
        } else if (s[i] >= '0' && s[i] <= '9') {
            while (i < end && s[i] >= '0' && s[i] <= '9')
                i++;
        } else if (end - i >= 4 && memcmp(s + i, "null", 4) == 0) {
            i += 4;
        } else {
            CHECK(end - i == 4 && memcmp(s + i, "true", 4) == 0);
            CHECK(memcmp(s + key, "\"truncated\"", 11) == 0);
            truncated = true;
            i += 4;
        }
    }
    CHECK(i == end);
    return truncated;
}

/* ---- the target ---- */

static void fuzz_json(const uint8_t *text, size_t n, size_t fixed_size, const uint8_t *want,
                      size_t want_len)
{
    /* Growable: always whole. */
    struct tr_fmt f;
    tr_fmt_init_growable(&f, 1 << 20);
    CHECK(tr_fmt_json_str(&f, (const char *)text, n));
    size_t len;
    char *out = tr_fmt_take(&f, &len);
    CHECK(out != NULL && strlen(out) <= len);
    check_json((const uint8_t *)out, len, want, want_len, false);
    size_t whole = len;
    free(out);

    /* Fixed: whole or nothing, and as a prefix. */
    char *buf = malloc(fixed_size);
    CHECK(buf != NULL);
    tr_fmt_init_fixed(&f, buf, fixed_size);
    bool ok = tr_fmt_json_str(&f, (const char *)text, n);
    CHECK(ok == (whole <= fixed_size - 1) && ok == !f.truncated);
    CHECK(f.len == (ok ? whole : 0) && buf[f.len] == '\0');
    if (ok)
        check_json((const uint8_t *)buf, f.len, want, want_len, false);
    tr_fmt_init_fixed(&f, buf, fixed_size);
    ok = tr_fmt_json_str_prefix(&f, (const char *)text, n);
    CHECK(ok == (fixed_size - 1 >= 2));
    CHECK(f.len <= fixed_size - 1 && buf[f.len] == '\0');
    CHECK(f.truncated == (whole > fixed_size - 1));
    if (ok) {
        check_json((const uint8_t *)buf, f.len, want, want_len, f.truncated);
        /* A cut prefix leaves less room than one character's escape. */
        CHECK(!f.truncated || fixed_size - 1 - f.len < 6);
    } else {
        CHECK(f.len == 0);
    }
    free(buf);
}

static void fuzz_prom(const uint8_t *text, size_t n, size_t fixed_size, const uint8_t *want,
                      size_t want_len)
{
    struct tr_fmt f;
    tr_fmt_init_growable(&f, 1 << 20);
    CHECK(tr_fmt_prom_label_value(&f, (const char *)text, n));
    size_t len;
    char *out = tr_fmt_take(&f, &len);
    CHECK(out != NULL);
    check_prom((const uint8_t *)out, len, want, want_len);
    free(out);

    char *buf = malloc(fixed_size);
    CHECK(buf != NULL);
    tr_fmt_init_fixed(&f, buf, fixed_size);
    bool ok = tr_fmt_prom_label_value(&f, (const char *)text, n);
    CHECK(ok == (len <= fixed_size - 1));
    CHECK(f.len == (ok ? len : 0));
    if (ok)
        check_prom((const uint8_t *)buf, f.len, want, want_len);
    free(buf);
}

static void fuzz_yaml(const uint8_t *text, size_t n, size_t fixed_size, const uint8_t *want,
                      size_t want_len)
{
    struct tr_fmt f;
    tr_fmt_init_growable(&f, 1 << 20);
    CHECK(tr_fmt_yaml_str(&f, (const char *)text, n));
    size_t len;
    char *out = tr_fmt_take(&f, &len);
    CHECK(out != NULL && strlen(out) == len);
    check_yaml((const uint8_t *)out, len, want, want_len);
    free(out);
    /* Valid UTF-8 is exactly what needs no U+FFFD. */
    CHECK(tr_fmt_utf8_valid((const char *)text, n) ==
          (want_len == n && memcmp(want, text, n) == 0));

    char *buf = malloc(fixed_size);
    CHECK(buf != NULL);
    tr_fmt_init_fixed(&f, buf, fixed_size);
    bool ok = tr_fmt_yaml_str(&f, (const char *)text, n);
    CHECK(ok == (len <= fixed_size - 1) && ok == !f.truncated);
    CHECK(f.len == (ok ? len : 0) && buf[f.len] == '\0');
    if (ok)
        check_yaml((const uint8_t *)buf, f.len, want, want_len);
    free(buf);
}

static void fuzz_access_log(const uint8_t *data, size_t size)
{
    /* Values are the NUL-separated pieces of the input (copied: C strings). */
    char *copy = malloc(size + 1);
    CHECK(copy != NULL);
    memcpy(copy, data, size);
    copy[size] = '\0';
    const char *v[11];
    size_t nv = 0;
    for (char *p = copy; nv < 11 && p <= copy + size; p += strlen(p) + 1)
        v[nv++] = p;
    for (size_t i = nv; i < 11; i++)
        v[i] = NULL; /* absent values render null */
    uint8_t sel = size > 0 ? data[0] : 0;
    struct tr_access_entry e = {
        .method = v[0],
        .path = v[1],
        .authority = v[2],
        .request_id = v[3] != NULL ? v[3] : "",
        .protocol = v[4],
        .grpc_status = (sel & 1) ? v[5] : NULL,
        .status = (uint16_t)(sel * 7),
        .flags = (uint16_t)(sel << 4 | sel >> 4),
        .duration_us = (uint64_t)sel * 1000003u,
        .req_bytes = UINT64_MAX - sel,
        .resp_bytes = sel,
        .peer = v[6],
        .principal = v[7],
        .listener = v[8],
        .cluster = v[9],
        .upstream = v[10],
        .truncated = (sel & 2) != 0,
    };
    char *line = malloc(TR_ACCESS_LOG_LINE_MAX);
    CHECK(line != NULL);
    size_t n = tr_access_log_format(line, &e, 1700000000123456789);
    bool truncated = check_line((const uint8_t *)line, n);
    if (e.truncated)
        CHECK(truncated);
    /* Short values always fit whole, so a cut needs a long input. */
    if (size < 512 && !e.truncated)
        CHECK(!truncated);
    free(line);
    free(copy);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0 || size > 65536)
        return 0;
    size_t fixed_size = (size_t)data[0] * 4 + 1; /* 1 ..1021 */
    const uint8_t *text = data + 1;
    size_t n = size - 1;
    uint8_t *want = malloc(3 * n + 1);
    CHECK(want != NULL);
    size_t want_len = reference(text, n, want);
    fuzz_json(text, n, fixed_size, want, want_len);
    fuzz_prom(text, n, fixed_size, want, want_len);
    fuzz_yaml(text, n, fixed_size, want, want_len);
    free(want);
    fuzz_access_log(data, size);
    return 0;
}
