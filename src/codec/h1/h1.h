/* codec/h1/h1.h: strict HTTP/1.1 message codec (RFC 9110, RFC 9112).
 *
 * Pure: bytes in, parsed messages out. No sockets, no allocation, no global
 * state, so it is unit-tested and fuzzed on its own. Anything ambiguous is an
 * error: a proxy that forwards what two parsers could read differently is a
 * request-smuggling vector.
 *
 * Usage for one message head:
 *   1. tr_h1_head_end() tells whether the buffer holds a complete head, scanning
 *      only bytes it has not seen (slow-drip clients cost O(n), not O(n^2)), and
 *      enforces the size limits while the head is incomplete.
 *   2. Once complete, tr_h1_parse_request()/tr_h1_parse_response() validate it
 *      in one pass and fill a tr_h1_message whose slices point into the buffer.
 *   3. The body is framed by msg.body: a length, chunked (tr_h1_chunked_*), or
 *      (responses only) until the connection closes.
 */
#ifndef TR_CODEC_H1_H
#define TR_CODEC_H1_H

#include <stddef.h>
#include <stdint.h>

#include "core/str.h"

/* Hard upper bound on headers per message; the configured limit is <= this. */
#define TR_H1_MAX_HEADERS_CAP 256

/* Errors are negative; each maps to the status a server answers with. */
enum tr_h1_error {
    TR_H1_E_BAD_REQUEST = -1,       /* 400: malformed or ambiguous */
    TR_H1_E_URI_TOO_LONG = -2,      /* 414: request line over the limit */
    TR_H1_E_HEADERS_TOO_LARGE = -3, /* 431: head bytes or header count over the limit */
    TR_H1_E_VERSION = -4,           /* 505: well-formed version other than HTTP/1.x */
    TR_H1_E_BAD_RESPONSE = -5,      /* 502: malformed upstream response */
};

/* HTTP status code a server sends for a parse error (400, 414, 431, 505, 502). */
int tr_h1_error_status(int err);
/* Short constant description of an error, for logs ("bad request", ...). */
const char *tr_h1_error_str(int err);

enum tr_h1_method {
    TR_H1_M_OTHER = 0,
    TR_H1_M_GET,
    TR_H1_M_HEAD,
    TR_H1_M_POST,
    TR_H1_M_PUT,
    TR_H1_M_DELETE,
    TR_H1_M_CONNECT,
    TR_H1_M_OPTIONS,
    TR_H1_M_TRACE,
    TR_H1_M_PATCH,
};

enum tr_h1_body {
    TR_H1_BODY_NONE = 0,    /* no body follows the head */
    TR_H1_BODY_LENGTH,      /* content_length bytes follow */
    TR_H1_BODY_CHUNKED,     /* chunked transfer coding; use tr_h1_chunked_* */
    TR_H1_BODY_UNTIL_CLOSE, /* response only: body runs until the server closes */
    TR_H1_BODY_TUNNEL,      /* 101 to an Upgrade, or 2xx to CONNECT: raw bytes both ways */
};

/* Message flags (tr_h1_message.flags). */
enum {
    TR_H1_F_CONN_CLOSE = 1u << 0,      /* "Connection: close", or HTTP/1.0 without keep-alive */
    TR_H1_F_CONN_KEEP_ALIVE = 1u << 1, /* "Connection: keep-alive" present */
    TR_H1_F_CONN_UPGRADE = 1u << 2,    /* "Connection: upgrade" present */
    TR_H1_F_UPGRADE = 1u << 3,         /* an Upgrade header is present */
    TR_H1_F_EXPECT_CONTINUE = 1u << 4, /* "Expect: 100-continue" (request) */
    TR_H1_F_TE_TRAILERS = 1u << 5,     /* "TE: trailers" (request) */
    TR_H1_F_HAS_CONNECTION_TOKENS = 1u << 6, /* Connection names other headers (hop-by-hop) */
};

struct tr_h1_header {
    tr_str name;
    tr_str value; /* leading and trailing whitespace removed */
};

struct tr_h1_limits {
    uint32_t max_request_line; /* bytes, incl. CRLF; default 8192 */
    uint32_t max_header_bytes; /* whole head incl. request line; default 65536 */
    uint32_t max_headers;      /* count; default 100; <= TR_H1_MAX_HEADERS_CAP */
};

#define TR_H1_LIMITS_DEFAULT ((struct tr_h1_limits){8192, 65536, 100})

struct tr_h1_message {
    /* Request line (requests only). */
    tr_str method;
    enum tr_h1_method method_id;
    tr_str target;
    /* Status line (responses only). */
    uint16_t status;
    tr_str reason;

    uint8_t version_minor; /* 0 or 1 (HTTP/1.2+ is read as 1.1) */
    uint32_t flags;        /* TR_H1_F_* */
    enum tr_h1_body body;
    uint64_t content_length; /* valid when body == TR_H1_BODY_LENGTH */
    int32_t host_idx;        /* index of the Host header, -1 if none */
    uint32_t head_len;       /* bytes of the head including the final CRLF CRLF */

    /* Caller-provided array of capacity >= limits->max_headers. */
    struct tr_h1_header *headers;
    uint32_t n_headers;
};

/* Scan for the end of a message head. *scanned carries state between calls on
 * the same growing buffer (start it at 0; reset it for the next message).
 * Returns the head length (> 0) when buf holds a complete head, 0 if more bytes
 * are needed, or a negative tr_h1_error once a limit is already exceeded
 * (414 for a request line over max_request_line, 431 for a head over
 * max_header_bytes). is_request selects request-line or status-line limits. */
int tr_h1_head_end(const char *buf, size_t len, const struct tr_h1_limits *lim, int is_request,
                   size_t *scanned);

/* Parse and validate a complete request head of head_len bytes (as returned by
 * tr_h1_head_end). Returns 0 or a negative tr_h1_error. Rejects, among others:
 * both Content-Length and Transfer-Encoding; duplicate or invalid Content-Length
 * (differing values, lists, signs, non-digits, overflow); any transfer coding
 * but a single final "chunked"; obs-fold; bare CR or LF; NUL and other control
 * bytes; invalid token bytes in names or method; whitespace before the colon or
 * before the first header; HTTP/0.9; absent or duplicate Host in HTTP/1.1;
 * a request-target with whitespace or control bytes. */
int tr_h1_parse_request(const char *buf, size_t head_len, const struct tr_h1_limits *lim,
                        struct tr_h1_message *msg);

/* Parse a complete response head. req_method is the method of the request it
 * answers (HEAD and CONNECT change the framing). Framing: 1xx (except 101),
 * 204, 304 and responses to HEAD have no body; 101, and 2xx to CONNECT, are
 * TR_H1_BODY_TUNNEL; otherwise chunked, length, or until close. Errors are
 * TR_H1_E_BAD_RESPONSE (or TR_H1_E_HEADERS_TOO_LARGE for too many headers). */
int tr_h1_parse_response(const char *buf, size_t head_len, const struct tr_h1_limits *lim,
                         enum tr_h1_method req_method, struct tr_h1_message *msg);

/* Find a header by name (case-insensitive). Returns its index or -1. */
int tr_h1_find_header(const struct tr_h1_message *msg, const char *name, size_t name_len);

/* Chunked transfer coding decoder. Validates framing strictly (hex size without
 * sign or overflow, chunk extensions per RFC 9112 grammar, CRLF only, trailer
 * fields as strict as headers and bounded by max_trailer_bytes) so that the
 * bytes it accepts can be forwarded verbatim. */
struct tr_h1_chunked {
    uint8_t state;
    uint64_t remaining;     /* payload bytes left in the current chunk */
    uint32_t line_len;      /* bytes of the current size/trailer line so far */
    uint32_t trailer_bytes; /* bytes of trailer section so far */
    uint32_t max_trailer_bytes;
    uint64_t payload_total; /* payload bytes seen so far */
};

enum tr_h1_chunked_result {
    TR_H1_CHUNKED_MORE = 0, /* all of buf consumed (or a data run returned); call again */
    TR_H1_CHUNKED_DONE = 1, /* message complete: it ends at buf + *consumed */
};

void tr_h1_chunked_init(struct tr_h1_chunked *c, uint32_t max_trailer_bytes);

/* Advance over buf[0..len). On return *consumed bytes have been accounted for
 * (framing, payload and trailers alike). When the call ends at a data run, that
 * run is buf[*data_off .. *data_off + *data_len) inside the consumed bytes;
 * otherwise *data_len is 0. The call stops after one data run, so callers that
 * want payload loop while *consumed < len. Returns TR_H1_CHUNKED_MORE,
 * TR_H1_CHUNKED_DONE, or TR_H1_E_BAD_REQUEST on malformed framing. */
int tr_h1_chunked_feed(struct tr_h1_chunked *c, const char *buf, size_t len, size_t *consumed,
                       size_t *data_off, size_t *data_len);

/* True once the last chunk's size line has been consumed and until the end
 * of the message: the bytes fed from then on are the trailer section (feed
 * returns right after that size line, so the boundary is exact). */
int tr_h1_chunked_in_trailers(const struct tr_h1_chunked *c);

/* Hop-by-hop header names (RFC 9110 7.6.1 plus the de-facto ones): Connection,
 * Keep-Alive, Proxy-Connection, TE, Transfer-Encoding, Upgrade, Trailer,
 * HTTP2-Settings. The proxy's one table of them: the HTTP/1.1 rewrite
 * (filter/headers.c) and header lists (filter/fields.c) both ask here. */
int tr_h1_is_hop_by_hop(tr_str name);

/* True if name appears as a token in the Connection header values of msg. */
int tr_h1_connection_lists(const struct tr_h1_message *msg, tr_str name);

/* Standard reason phrase for a status code ("OK", "Bad Request", ...). */
const char *tr_h1_reason(int status);

/* --- Additions: helpers shared by the codec files, also usable by modules
 * that generate or check names and values (router, filters, config). --- */

/* Byte classes (RFC 9110 5.6.2, 5.5; RFC 3986), one table lookup per byte. */
extern const uint8_t tr_h1_ctype[256];
enum {
    TR_H1_C_TCHAR = 1u << 0,  /* token character */
    TR_H1_C_FVCHAR = 1u << 1, /* field-vchar: VCHAR or obs-text (0x80-0xff) */
    TR_H1_C_WS = 1u << 2,     /* SP or HTAB */
    TR_H1_C_HEX = 1u << 3,    /* HEXDIG */
    TR_H1_C_TARGET = 1u << 4, /* request-target byte: VCHAR except '#' */
    TR_H1_C_HOST = 1u << 5,   /* reg-name byte we accept: ALPHA DIGIT - . _ ~ */
};

/* ASCII case-insensitive equality with a lowercase literal (no locale). */
int tr_h1_ieq(tr_str a, const char *lower_lit, size_t lit_len);
/* True if s is a non-empty token. */
int tr_h1_is_token(tr_str s);
/* True if s is a valid field value: field-vchars, SP, HTAB, and no leading
 * or trailing whitespace. */
int tr_h1_is_field_value(tr_str s);
/* True if s is "uri-host [ ':' port ]" as we accept it: a reg-name of
 * ALPHA DIGIT - . _ ~ (no userinfo, no percent-encoding) or an IPv6
 * literal in brackets, and a port of 1-5 digits <= 65535. With
 * port_required (CONNECT authority-form) the port must be present. */
int tr_h1_is_authority(tr_str s, int port_required);

/* Notes on tr_h1_head_end: *scanned is opaque (the scan offset plus a flag
 * bit). For responses (is_request == 0) a status line over max_request_line
 * is TR_H1_E_BAD_RESPONSE and a head over max_header_bytes is
 * TR_H1_E_HEADERS_TOO_LARGE. A bare LF seen while scanning fails early with
 * TR_H1_E_BAD_REQUEST (TR_H1_E_BAD_RESPONSE for responses). */

#endif
