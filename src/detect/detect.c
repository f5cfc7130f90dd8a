#include "detect/detect.h"

#include <stdbool.h>
#include <string.h>

enum tr_detected tr_detect_protocol(const unsigned char *p, size_t len)
{
    static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    if (len == 0)
        return TR_DETECT_NEED_MORE;
    /* TLS record: handshake(22), version 3.x */
    if (p[0] == 0x16) {
        if (len < 3)
            return TR_DETECT_NEED_MORE;
        return p[1] == 0x03 && p[2] <= 0x04 ? TR_DETECT_TLS : TR_DETECT_OPAQUE;
    }
    size_t n = len < sizeof(h2_preface) - 1 ? len : sizeof(h2_preface) - 1;
    if (memcmp(p, h2_preface, n) == 0)
        return n == sizeof(h2_preface) - 1 ? TR_DETECT_HTTP2 : TR_DETECT_NEED_MORE;
    /* HTTP/1: an upper-case method token (at most 20 bytes) then a space. */
    for (size_t i = 0; i < len && i < 21; i++) {
        unsigned char c = p[i];
        if (c == ' ')
            return i > 0 ? TR_DETECT_HTTP1 : TR_DETECT_OPAQUE;
        if (!((c >= 'A' && c <= 'Z') || c == '-' || c == '_'))
            return TR_DETECT_OPAQUE;
    }
    return len >= 21 ? TR_DETECT_OPAQUE : TR_DETECT_NEED_MORE;
}

const char *tr_sni_result_name(enum tr_sni_result r)
{
    static const char *const names[] = {"need_more", "not_tls", "malformed", "found", "none"};
    return (unsigned)r < sizeof(names) / sizeof(names[0]) ? names[r] : "?";
}

static unsigned get16(const unsigned char *p)
{
    return (unsigned)p[0] << 8 | p[1];
}

/* The server_name extension's body: ServerNameList <1..2^16-1> of
 * {NameType, opaque <1..2^16-1>}; one host_name (type 0) at most, other
 * types skipped. Returns FOUND, NONE or MALFORMED. */
static enum tr_sni_result server_name_ext(const unsigned char *e, size_t len, const char **name,
                                          size_t *name_len)
{
    if (len < 2 || get16(e) != len - 2 || len == 2)
        return TR_SNI_MALFORMED;
    enum tr_sni_result r = TR_SNI_NONE;
    for (size_t i = 2; i < len;) {
        if (len - i < 3)
            return TR_SNI_MALFORMED;
        unsigned type = e[i];
        size_t n = get16(e + i + 1);
        i += 3;
        if (n == 0 || n > len - i)
            return TR_SNI_MALFORMED;
        if (type == 0) {
            if (r == TR_SNI_FOUND || n > 255)
                return TR_SNI_MALFORMED;
            for (size_t k = 0; k < n; k++)
                if (e[i + k] < 0x21 || e[i + k] > 0x7e)
                    return TR_SNI_MALFORMED;
            *name = (const char *)e + i;
            *name_len = n;
            r = TR_SNI_FOUND;
        }
        i += n;
    }
    return r;
}

static enum tr_sni_result client_hello(const unsigned char *p, size_t len, const char **name,
                                       size_t *name_len)
{
    /* Record header: ContentType handshake(22), legacy_record_version 3.x,
     * length 1..2^14 (RFC 8446 5.1). */
    if (len >= 1 && p[0] != 0x16)
        return TR_SNI_NOT_TLS;
    if (len >= 2 && p[1] != 0x03)
        return TR_SNI_NOT_TLS;
    if (len >= 3 && p[2] > 0x04)
        return TR_SNI_NOT_TLS;
    if (len < 5)
        return TR_SNI_NEED_MORE;
    size_t rec = get16(p + 3);
    if (rec == 0 || rec > 16384)
        return TR_SNI_MALFORMED;
    /* Handshake header: msg_type client_hello(1), uint24 length. An
     * answer is final (more bytes never change it): read the type first. */
    if (len < 6)
        return TR_SNI_NEED_MORE;
    if (p[5] != 1)
        return TR_SNI_MALFORMED;
    if (rec < 4)
        return TR_SNI_NONE; /* the handshake header itself is fragmented */
    if (len < 5 + rec)
        return TR_SNI_NEED_MORE;
    size_t hs = (size_t)p[6] << 16 | (size_t)p[7] << 8 | p[8];
    if (hs > rec - 4)
        return TR_SNI_NONE; /* continues in the next record: not read (see detect.h) */
    if (hs < rec - 4)
        return TR_SNI_MALFORMED; /* nothing may follow a ClientHello in its flight */
    const unsigned char *b = p + 9;
    size_t i = 0;
    /* legacy_version 3.x, random[32] */
    if (hs < 2 + 32 || b[0] != 0x03)
        return TR_SNI_MALFORMED;
    i = 2 + 32;
    /* legacy_session_id <0..32> */
    if (hs - i < 1 || b[i] > 32 || (size_t)b[i] > hs - i - 1)
        return TR_SNI_MALFORMED;
    i += 1 + (size_t)b[i];
    /* cipher_suites <2..2^16-2>, an even length */
    if (hs - i < 2)
        return TR_SNI_MALFORMED;
    size_t n = get16(b + i);
    if (n < 2 || n % 2 != 0 || n > hs - i - 2)
        return TR_SNI_MALFORMED;
    i += 2 + n;
    /* legacy_compression_methods <1..2^8-1> */
    if (hs - i < 1 || b[i] < 1 || (size_t)b[i] > hs - i - 1)
        return TR_SNI_MALFORMED;
    i += 1 + (size_t)b[i];
    if (i == hs)
        return TR_SNI_NONE; /* no extensions (an SSL 3.0 style hello) */
    /* extensions <8..2^16-1>: exactly the rest of the message */
    if (hs - i < 2 || get16(b + i) != hs - i - 2)
        return TR_SNI_MALFORMED;
    i += 2;
    enum tr_sni_result r = TR_SNI_NONE;
    bool seen = false;
    while (i < hs) {
        if (hs - i < 4)
            return TR_SNI_MALFORMED;
        unsigned type = get16(b + i);
        size_t elen = get16(b + i + 2);
        i += 4;
        if (elen > hs - i)
            return TR_SNI_MALFORMED;
        if (type == 0) { /* server_name */
            if (seen)
                return TR_SNI_MALFORMED; /* an extension may appear once (RFC 8446 4.2) */
            seen = true;
            r = server_name_ext(b + i, elen, name, name_len);
            if (r == TR_SNI_MALFORMED)
                return r;
        }
        i += elen;
    }
    return r;
}

enum tr_sni_result tr_detect_sni(const unsigned char *p, size_t len, const char **name,
                                 size_t *name_len)
{
    *name = NULL;
    *name_len = 0;
    enum tr_sni_result r = client_hello(p, len, name, name_len);
    if (r != TR_SNI_FOUND) {
        *name = NULL; /* a name read before the ClientHello turned out malformed */
        *name_len = 0;
    }
    return r;
}
