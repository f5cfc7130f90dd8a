#include "core/utf8.h"

enum tr_utf8_status tr_utf8_decode(const unsigned char *p, size_t len, uint32_t *cp, size_t *n,
                                   size_t *bad)
{
    unsigned char c = p[0];
    *bad = 0;
    if (c < 0x80) {
        *cp = c;
        *n = 1;
        return TR_UTF8_OK;
    }
    uint32_t v;
    size_t k;
    if (c >= 0xc2 && c <= 0xdf) {
        v = c & 0x1fu;
        k = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        v = c & 0x0fu;
        k = 3;
    } else if (c >= 0xf0 && c <= 0xf4) {
        v = c & 0x07u;
        k = 4;
    } else {
        return TR_UTF8_BAD_BYTE;
    }
    if (k > len)
        return TR_UTF8_TRUNCATED;
    for (size_t i = 1; i < k; i++) {
        if ((p[i] & 0xc0) != 0x80) {
            *bad = i;
            return TR_UTF8_BAD_BYTE;
        }
        v = (v << 6) | (p[i] & 0x3fu);
    }
    if ((k == 3 && v < 0x800) || (k == 4 && (v < 0x10000 || v > 0x10ffff)) ||
        (v >= 0xd800 && v <= 0xdfff))
        return TR_UTF8_BAD_SEQUENCE;
    *cp = v;
    *n = k;
    return TR_UTF8_OK;
}

bool tr_yaml_printable(uint32_t cp)
{
    return cp == 0x09 || cp == 0x0a || cp == 0x0d || (cp >= 0x20 && cp <= 0x7e) || cp == 0x85 ||
           (cp >= 0xa0 && cp <= 0xd7ff) || (cp >= 0xe000 && cp <= 0xfffd) ||
           (cp >= 0x10000 && cp <= 0x10ffff);
}
