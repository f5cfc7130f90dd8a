/* detect/detect.h: protocol detection on inbound connections. Classifies the
 * first bytes of a connection (TLS ClientHello, HTTP/2 connection preface,
 * HTTP/1 request line, or anything else as opaque TCP) without consuming
 * them. Pure; unit-tested. */
#ifndef TR_DETECT_H
#define TR_DETECT_H

#include <stddef.h>

enum tr_detected {
    TR_DETECT_NEED_MORE = 0,
    TR_DETECT_TLS,
    TR_DETECT_HTTP1,
    TR_DETECT_HTTP2,
    TR_DETECT_OPAQUE,
};

enum tr_detected tr_detect_protocol(const unsigned char *p, size_t len);

#endif
