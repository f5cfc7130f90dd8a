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

/* ---- the SNI of a TLS ClientHello, read without consuming it ----
 * tr_detect_sni reads the first TLS record of a connection (peeked bytes):
 * record header (handshake, version 3.x, 1..2^14 bytes), handshake header
 * (client_hello), legacy version, random, session id (0..32), cipher suites
 * (even, >= 2), compression methods (>= 1), then the extensions, whose
 * lengths must add up exactly; at most one server_name extension (RFC 6066
 * 3), holding at most one host_name of 1..255 printable ASCII bytes
 * (0x21..0x7e).
 *
 * Choice: the ClientHello must fit in the first record. Every common client
 * (OpenSSL, BoringSSL, NSS, Go, rustls) sends it in one; one fragmented
 * across records (the handshake message longer than its record) is answered
 * TR_SNI_NONE, so it goes where a ClientHello without SNI goes. Hence the
 * parser never needs more than TR_SNI_PEEK_MAX bytes and keeps no state: the
 * caller peeks again when more bytes arrive. */
enum tr_sni_result {
    TR_SNI_NEED_MORE = 0, /* a prefix of a ClientHello record: peek again later */
    TR_SNI_NOT_TLS,       /* the first bytes are not a TLS handshake record */
    TR_SNI_MALFORMED,     /* a TLS handshake record, but not a well-formed ClientHello */
    TR_SNI_FOUND,         /* *name (into p, not NUL-terminated), *name_len 1..255 */
    TR_SNI_NONE,          /* a ClientHello without host_name (or fragmented, see above) */
};
#define TR_SNI_PEEK_MAX (5 + 16384) /* record header + the largest plaintext record */

enum tr_sni_result tr_detect_sni(const unsigned char *p, size_t len, const char **name,
                                 size_t *name_len);
const char *tr_sni_result_name(enum tr_sni_result r);

#endif
