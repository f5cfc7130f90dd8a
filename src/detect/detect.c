#include "detect/detect.h"

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
