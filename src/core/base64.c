/* core/base64.c: see base64.h. */
#include "core/base64.h"

#include <stdint.h>

/* The value of c in the alphabet whose last two characters are c62, c63. */
static int b64_value(unsigned char c, char c62, char c63)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (unsigned char)c62)
        return 62;
    if (c == (unsigned char)c63)
        return 63;
    return -1;
}

/* len unpadded characters (len % 4 != 1, checked by the callers). */
static long decode(const char *in, size_t len, unsigned char *out, size_t cap, char c62, char c63)
{
    size_t need = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
    if (need > cap)
        return -1;
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        int v = b64_value((unsigned char)in[i], c62, c63);
        if (v < 0)
            return -1;
        acc = acc << 6 | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (acc != 0)
        return -1; /* nonzero unused bits: not the canonical encoding */
    return (long)o;
}

long tr_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if (len % 4 != 0)
        return -1;
    size_t pad = 0;
    while (pad < 2 && len - pad > 0 && in[len - pad - 1] == '=')
        pad++;
    /* '=' anywhere else, or three of them, is outside the alphabet below. */
    return decode(in, len - pad, out, cap, '+', '/');
}

long tr_base64url_decode(const char *in, size_t len, unsigned char *out, size_t cap)
{
    if (len % 4 == 1)
        return -1;
    return decode(in, len, out, cap, '-', '_');
}
