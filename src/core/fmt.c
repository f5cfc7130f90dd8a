#include "core/fmt.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GROW_FIRST 4096 /* first allocation of a growable buffer */

void tr_fmt_init_fixed(struct tr_fmt *f, char *buf, size_t size)
{
    *f = (struct tr_fmt){.p = buf, .size = size, .max = size - 1};
    buf[0] = '\0';
}

void tr_fmt_init_growable(struct tr_fmt *f, size_t max)
{
    *f = (struct tr_fmt){.max = max, .growable = true};
}

void tr_fmt_free(struct tr_fmt *f)
{
    if (f->growable) {
        free(f->p);
        f->p = NULL;
        f->size = 0;
    }
    f->len = 0;
}

char *tr_fmt_take(struct tr_fmt *f, size_t *len)
{
    if (!f->growable || f->truncated || (f->p == NULL && (f->p = calloc(1, 1)) == NULL)) {
        tr_fmt_free(f);
        return NULL;
    }
    char *text = f->p;
    *len = f->len;
    f->p = NULL;
    f->size = f->len = 0;
    return text;
}

void tr_fmt_rewind(struct tr_fmt *f, size_t len)
{
    if (len < f->len) {
        f->len = len;
        f->p[len] = '\0';
    }
}

/* Make room for n more bytes of text (and the NUL), or mark the truncation. */
static bool reserve(struct tr_fmt *f, size_t n)
{
    if (n > f->max - f->len) {
        f->truncated = true;
        return false;
    }
    size_t need = f->len + n + 1;
    if (need <= f->size)
        return true;
    size_t size = f->size != 0 ? f->size : GROW_FIRST;
    while (size < need)
        size = size > SIZE_MAX / 2 ? SIZE_MAX : size * 2;
    if (size > f->max + 1)
        size = f->max + 1; /* need <= max + 1 here */
    char *p = realloc(f->p, size);
    if (p == NULL) {
        f->oom = f->truncated = true;
        return false;
    }
    if (f->p == NULL)
        p[0] = '\0';
    f->p = p;
    f->size = size;
    return true;
}

bool tr_fmt_vprintf(struct tr_fmt *f, const char *fmt, va_list ap)
{
    va_list again;
    va_copy(again, ap);
    size_t room = f->p != NULL ? f->size - f->len : 0;
    int n = vsnprintf(f->p != NULL ? f->p + f->len : NULL, room, fmt, ap);
    bool ok = n >= 0;
    if (ok && (size_t)n >= room) {
        /* Did not fit the current buffer: undo the partial write, then grow
         * (growable) or give up (fixed: reserve fails, room was all there is). */
        if (f->p != NULL)
            f->p[f->len] = '\0';
        ok = reserve(f, (size_t)n);
        if (ok)
            vsnprintf(f->p + f->len, f->size - f->len, fmt, again);
    } else if (!ok) {
        if (f->p != NULL)
            f->p[f->len] = '\0';
        f->truncated = true; /* an encoding error: the piece is dropped */
    }
    va_end(again);
    if (ok)
        f->len += (size_t)n;
    return ok;
}

bool tr_fmt_printf(struct tr_fmt *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    bool ok = tr_fmt_vprintf(f, fmt, ap);
    va_end(ap);
    return ok;
}

bool tr_fmt_bytes(struct tr_fmt *f, const void *p, size_t n)
{
    if (!reserve(f, n))
        return false;
    if (n > 0)
        memcpy(f->p + f->len, p, n);
    f->len += n;
    f->p[f->len] = '\0';
    return true;
}

bool tr_fmt_cstr(struct tr_fmt *f, const char *s)
{
    return tr_fmt_bytes(f, s, strlen(s));
}

/* ---- escaping ---- */

/* Length of the valid UTF-8 sequence at s[0, n) (RFC 3629 table), or 0. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t len;
    unsigned char lo = 0x80, hi = 0xbf; /* range of the second byte */
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        if (c == 0xe0)
            lo = 0xa0; /* overlong */
        else if (c == 0xed)
            hi = 0x9f; /* surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        if (c == 0xf0)
            lo = 0x90; /* overlong */
        else if (c == 0xf4)
            hi = 0x8f; /* above U+10FFFF */
    } else {
        return 0;
    }
    if (n < len || s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < len; i++)
        if (s[i] < 0x80 || s[i] > 0xbf)
            return 0;
    return len;
}

bool tr_fmt_utf8_valid(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        if (u[i] < 0x80) { /* ASCII, nearly all of what is checked */
            i++;
            continue;
        }
        size_t len = utf8_len(u + i, n - i);
        if (len == 0)
            return false;
        i += len;
    }
    return true;
}

/* One escaper step: the output for the character at s[0, n) (at most 6
 * bytes) into out; its input length into *used. */
typedef size_t (*escape_step)(const unsigned char *s, size_t n, char *out, size_t *used);

/* The code point of the valid sequence s[0, len). */
static uint32_t utf8_cp(const unsigned char *s, size_t len)
{
    static const unsigned char lead_mask[] = {0, 0x7f, 0x1f, 0x0f, 0x07};
    uint32_t cp = s[0] & lead_mask[len];
    for (size_t i = 1; i < len; i++)
        cp = cp << 6 | (s[i] & 0x3fu);
    return cp;
}

/* Characters that are valid UTF-8 but that a YAML 1.2 reader must not see
 * raw: C1 controls (NEL, U+0085, would even be a line break to a YAML 1.1
 * reader), the line and paragraph separators, the byte order mark and the
 * two non-characters outside the printable set. Escaped by both escapers
 * below, so their output is also printable YAML (our loader reads JSON as
 * YAML). */
static bool yaml_escaped_cp(uint32_t cp)
{
    return (cp >= 0x80 && cp <= 0x9f) || cp == 0x2028 || cp == 0x2029 || cp == 0xfeff ||
           cp == 0xfffe || cp == 0xffff;
}

/* esc ("\\u", "\\x") and the low `digits` hex digits of cp; returns the length. */
static size_t hex_escape(char *out, const char *esc, uint32_t cp, int digits)
{
    static const char hex[] = "0123456789abcdef";
    size_t o = strlen(esc);
    memcpy(out, esc, o);
    for (int d = digits - 1; d >= 0; d--)
        out[o++] = hex[(cp >> (4 * d)) & 15];
    return o;
}

static size_t json_step(const unsigned char *s, size_t n, char *out, size_t *used)
{
    unsigned char c = s[0];
    *used = 1;
    if (c == '"' || c == '\\') {
        out[0] = '\\';
        out[1] = (char)c;
        return 2;
    }
    if (c < 0x20 || c == 0x7f)
        return hex_escape(out, "\\u", c, 4);
    size_t len = utf8_len(s, n);
    if (len == 0) {
        memcpy(out, "\\ufffd", 6);
        return 6;
    }
    *used = len;
    uint32_t cp = len > 1 ? utf8_cp(s, len) : c;
    if (yaml_escaped_cp(cp))
        return hex_escape(out, "\\u", cp, 4);
    memcpy(out, s, len);
    return len;
}

static size_t yaml_step(const unsigned char *s, size_t n, char *out, size_t *used)
{
    unsigned char c = s[0];
    *used = 1;
    if (c == '"' || c == '\\') {
        out[0] = '\\';
        out[1] = (char)c;
        return 2;
    }
    if (c == '\t' || c == '\n' || c == '\r') {
        out[0] = '\\';
        out[1] = c == '\t' ? 't' : c == '\n' ? 'n' : 'r';
        return 2;
    }
    if (c < 0x20 || c == 0x7f)
        return hex_escape(out, "\\x", c, 2);
    size_t len = utf8_len(s, n);
    if (len == 0) {
        memcpy(out, "\\ufffd", 6);
        return 6;
    }
    *used = len;
    uint32_t cp = len > 1 ? utf8_cp(s, len) : c;
    if (yaml_escaped_cp(cp))
        return cp <= 0xff ? hex_escape(out, "\\x", cp, 2) : hex_escape(out, "\\u", cp, 4);
    memcpy(out, s, len);
    return len;
}

static size_t prom_step(const unsigned char *s, size_t n, char *out, size_t *used)
{
    unsigned char c = s[0];
    *used = 1;
    if (c == '"' || c == '\\') {
        out[0] = '\\';
        out[1] = (char)c;
        return 2;
    }
    if (c == '\n') {
        memcpy(out, "\\n", 2);
        return 2;
    }
    size_t len = utf8_len(s, n);
    if (len == 0) {
        memcpy(out, "\xef\xbf\xbd", 3); /* U+FFFD: the format has no byte escapes */
        return 3;
    }
    memcpy(out, s, len);
    *used = len;
    return len;
}

/* Escaped length of s[0, n), stopping before the character that would make
 * it exceed limit; *in_len is how much of s that covers (a whole number of
 * characters). */
static size_t escaped_len(escape_step step, const char *s, size_t n, size_t limit, size_t *in_len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t out_len = 0, i = 0;
    char tmp[8];
    while (i < n) {
        size_t used;
        size_t k = step(u + i, n - i, tmp, &used);
        if (k > limit - out_len)
            break;
        out_len += k;
        i += used;
    }
    *in_len = i;
    return out_len;
}

/* Write the escape of s[0, n) at the end of the text (room already made). */
static void escape_into(struct tr_fmt *f, escape_step step, const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        size_t used;
        f->len += step(u + i, n - i, f->p + f->len, &used);
        i += used;
    }
    f->p[f->len] = '\0';
}

/* quote: 1 to wrap the output in double quotes. prefix_ok: take the longest
 * prefix that fits instead of nothing. */
static bool append_escaped(struct tr_fmt *f, escape_step step, const char *s, size_t n, int quote,
                           bool prefix_ok)
{
    size_t in_len;
    size_t q = quote ? 2 : 0;
    /* Every escaper leaves printable ASCII other than '"' and '\\' as it is:
     * most text (names, addresses) is only that, copied in one piece. */
    const unsigned char *u = (const unsigned char *)s;
    size_t plain = 0;
    while (plain < n && u[plain] >= 0x20 && u[plain] < 0x7f && u[plain] != '"' && u[plain] != '\\')
        plain++;
    if (plain == n && q + n <= f->max - f->len) {
        if (!reserve(f, q + n))
            return false;
        if (quote)
            f->p[f->len++] = '"';
        memcpy(f->p + f->len, s, n);
        f->len += n;
        if (quote)
            f->p[f->len++] = '"';
        f->p[f->len] = '\0';
        return true;
    }
    size_t out_len = escaped_len(step, s, n, SIZE_MAX, &in_len);
    if (q + out_len > f->max - f->len) {
        f->truncated = true;
        if (!prefix_ok || q > f->max - f->len)
            return false;
        out_len = escaped_len(step, s, n, f->max - f->len - q, &in_len);
    }
    if (!reserve(f, q + out_len))
        return false;
    if (quote)
        f->p[f->len++] = '"';
    escape_into(f, step, s, in_len);
    if (quote) {
        f->p[f->len++] = '"';
        f->p[f->len] = '\0';
    }
    return true;
}

bool tr_fmt_json_str(struct tr_fmt *f, const char *s, size_t n)
{
    return append_escaped(f, json_step, s, n, 1, false);
}

bool tr_fmt_json_str_prefix(struct tr_fmt *f, const char *s, size_t n)
{
    return append_escaped(f, json_step, s, n, 1, true);
}

bool tr_fmt_json_cstr(struct tr_fmt *f, const char *s)
{
    if (s == NULL)
        return tr_fmt_bytes(f, "null", 4);
    return tr_fmt_json_str(f, s, strlen(s));
}

bool tr_fmt_yaml_str(struct tr_fmt *f, const char *s, size_t n)
{
    return append_escaped(f, yaml_step, s, n, 1, false);
}

bool tr_fmt_prom_label_value(struct tr_fmt *f, const char *s, size_t n)
{
    return append_escaped(f, prom_step, s, n, 0, false);
}

/* ---------------------------------------------------------- field paths */

static void path_append(char *path, size_t size, size_t *len, const char *s, size_t n)
{
    size_t room = size - 1 - *len;
    if (n > room)
        n = room;
    memcpy(path + *len, s, n);
    *len += n;
    path[*len] = '\0';
}

size_t tr_path_push_key(char *path, size_t size, size_t *len, const char *key)
{
    size_t saved = *len;
    if (*len != 0)
        path_append(path, size, len, ".", 1);
    path_append(path, size, len, key, strlen(key));
    return saved;
}

size_t tr_path_push_index(char *path, size_t size, size_t *len, size_t i)
{
    size_t saved = *len;
    char digits[24], *p = digits + sizeof(digits);
    *--p = ']';
    do
        *--p = (char)('0' + i % 10);
    while ((i /= 10) != 0);
    *--p = '[';
    path_append(path, size, len, p, (size_t)(digits + sizeof(digits) - p));
    return saved;
}

void tr_path_pop(char *path, size_t *len, size_t saved)
{
    *len = saved;
    path[saved] = '\0';
}
