#include "filter/path_normalize.h"

#include <stdbool.h>
#include <string.h>

#include "core/str.h"

/* RFC 3986 2.3: what an escape of it means the same as the character. */
static bool is_unreserved(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_' || c == '~';
}

/* Pass one: escapes and backslashes of in[0..len) (the path, no query)
 * into out; *n is what was written (never more than len). */
static enum tr_path_status decode(enum tr_path_normalization mode, const char *in, size_t len,
                                  char *out, size_t *n)
{
    static const char upper[] = "0123456789ABCDEF";
    bool strict = mode == TR_PATHNORM_STRICT;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c <= 0x20 || c == 0x7f)
            return TR_PATH_BAD_CHAR;
        if (c == '\\') {
            if (strict)
                return TR_PATH_BACKSLASH;
            out[o++] = '/';
            continue;
        }
        if (c != '%') {
            out[o++] = (char)c;
            continue;
        }
        bool whole = i + 2 < len; /* "%XY" fits */
        int h = whole ? tr_hex_digit((unsigned char)in[i + 1]) : -1,
            l = whole ? tr_hex_digit((unsigned char)in[i + 2]) : -1;
        if (h < 0 || l < 0)
            return TR_PATH_BAD_ESCAPE; /* see the header */
        unsigned char d = (unsigned char)(h << 4 | l);
        i += 2;
        if (is_unreserved(d)) {
            out[o++] = (char)d;
            continue;
        }
        if (d == '/' || d == '\\') {
            if (strict)
                return TR_PATH_ENCODED_SLASH;
            if (mode == TR_PATHNORM_DECODE_AND_MERGE_SLASHES) {
                out[o++] = '/'; /* a decoded '\' is a '/' too, as a raw one is */
                continue;
            }
        }
        if (d == 0 && strict)
            return TR_PATH_ENCODED_NUL;
        out[o++] = '%';
        out[o++] = upper[d >> 4];
        out[o++] = upper[d & 15];
    }
    *n = o;
    return TR_PATH_OK;
}

/* Pass two, in place on p[0..len) (starts with '/'): "." and ".." segments
 * (RFC 3986 5.2.4) and, with merge, empty ones. The output is written at or
 * before what is read, so one buffer serves. Returns the new length, or a
 * negative status. */
static long segments(char *p, size_t len, bool merge, bool strict)
{
    size_t o = 0, i = 0;
    while (i < len) {
        /* p[i] == '/': the segment is p[i+1..j). */
        size_t j = i + 1;
        while (j < len && p[j] != '/')
            j++;
        size_t seg = j - i - 1;
        bool last = j == len;
        const char *s = p + i + 1;
        size_t name = seg;
        const char *semi = memchr(s, ';', seg);
        if (semi != NULL)
            name = (size_t)(semi - s);
        bool dot = name == 1 && s[0] == '.';
        bool dotdot = name == 2 && s[0] == '.' && s[1] == '.';
        if ((dot || dotdot) && semi != NULL) {
            if (strict)
                return TR_PATH_DOT_PARAMS;
            dot = dotdot = false; /* an ordinary name to RFC 3986 */
        }
        if (dot || dotdot) {
            if (dotdot) {
                while (o > 0 && p[o - 1] != '/')
                    o--;
                if (o > 0)
                    o--; /* the popped segment's '/' */
            }
            if (last)
                p[o++] = '/';
        } else if (seg == 0 && merge && !last) {
            /* "//": merged into the next '/' */
        } else if (seg == 0 && merge && o > 0 && p[o - 1] == '/') {
            /* a trailing slash after one already written */
        } else {
            p[o] = '/';
            memmove(p + o + 1, s, seg);
            o += seg + 1;
        }
        i = j;
    }
    if (o == 0)
        p[o++] = '/';
    return (long)o;
}

enum tr_path_status tr_path_normalize(enum tr_path_normalization mode, const char *in, size_t len,
                                      char *out, size_t cap, size_t *out_len)
{
    const char *q = memchr(in, '?', len);
    size_t plen = q != NULL ? (size_t)(q - in) : len;
    if (mode == TR_PATHNORM_NONE || (len == 1 && in[0] == '*')) {
        if (cap < len)
            return TR_PATH_NO_ROOM;
        memcpy(out, in, len);
        *out_len = len;
        return TR_PATH_OK;
    }
    if (plen == 0 || in[0] != '/')
        return TR_PATH_NOT_ABSOLUTE;
    if (cap < len)
        return TR_PATH_NO_ROOM;
    size_t n;
    enum tr_path_status st = decode(mode, in, plen, out, &n);
    if (st != TR_PATH_OK)
        return st;
    bool merge = mode != TR_PATHNORM_BASE;
    long o = segments(out, n, merge, mode == TR_PATHNORM_STRICT);
    if (o < 0)
        return (enum tr_path_status)o;
    memcpy(out + o, in + plen, len - plen); /* the query, untouched */
    *out_len = (size_t)o + (len - plen);
    return TR_PATH_OK;
}

const char *tr_path_normalization_name(enum tr_path_normalization mode)
{
    switch (mode) {
    case TR_PATHNORM_STRICT:
        return "STRICT";
    case TR_PATHNORM_NONE:
        return "NONE";
    case TR_PATHNORM_BASE:
        return "BASE";
    case TR_PATHNORM_MERGE_SLASHES:
        return "MERGE_SLASHES";
    case TR_PATHNORM_DECODE_AND_MERGE_SLASHES:
        return "DECODE_AND_MERGE_SLASHES";
    }
    return "?";
}

const char *tr_path_status_str(enum tr_path_status st)
{
    switch (st) {
    case TR_PATH_OK:
        return "ok";
    case TR_PATH_BAD_ESCAPE:
        return "invalid percent escape";
    case TR_PATH_ENCODED_SLASH:
        return "encoded slash or backslash";
    case TR_PATH_BACKSLASH:
        return "backslash";
    case TR_PATH_ENCODED_NUL:
        return "encoded NUL";
    case TR_PATH_DOT_PARAMS:
        return "dot segment with parameters";
    case TR_PATH_BAD_CHAR:
        return "control character or space";
    case TR_PATH_NOT_ABSOLUTE:
        return "not an absolute path";
    case TR_PATH_NO_ROOM:
        return "no room";
    }
    return "?";
}
