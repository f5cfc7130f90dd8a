/* filter/fields.h: header lists in HTTP/2 form, for exchanges where either
 * side speaks HTTP/2: lowercase names, pseudo-headers (":method", ":path",
 * ":status", ...) first, one entry per field line.
 *
 * A tr_fields owns one fixed allocation holding both the entries and the bytes
 * they point to, sized at init: appending never reallocates, so entries stay
 * valid, and a list can never grow past what its owner budgeted.
 *
 * Conversions between this form and HTTP/1.1 text live here too, so the
 * proxy's exchange logic (proxy/stream.c) only decides, never formats.
 */
#ifndef TR_FILTER_FIELDS_H
#define TR_FILTER_FIELDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/h1/h1.h"
#include "codec/h2/h2.h"
#include "core/buf.h"
#include "core/str.h"

struct tr_fields {
    struct tr_h2_header *v;
    uint32_t n, cap;
    char *bytes; /* text storage after the entries, same allocation */
    uint32_t used, size;
};

/* One allocation for up to max_fields entries and max_bytes of names and
 * values. Returns 0 or -1 (no memory). tr_fields_free on a zeroed or freed
 * list is a no-op. */
int tr_fields_init(struct tr_fields *f, uint32_t max_fields, uint32_t max_bytes);
void tr_fields_free(struct tr_fields *f);
/* Append a copy of name (lowercased) and value. Returns 0, or -1 when the
 * list is full. */
int tr_fields_add(struct tr_fields *f, tr_str name, tr_str value);
int tr_fields_add_cstr(struct tr_fields *f, const char *name, const char *value);
/* Append name with a value of len bytes that the caller writes into the
 * returned storage (before the next append). NULL when the list is full. */
char *tr_fields_add_space(struct tr_fields *f, tr_str name, size_t len);
/* Append name with the value head followed by tail (one field). */
int tr_fields_add_joined(struct tr_fields *f, tr_str name, tr_str head, tr_str tail);
/* Index of the first field named name (lowercase), or -1. */
int tr_fields_find(const struct tr_h2_header *v, size_t n, const char *name);

/* Connection-specific fields that never cross a hop (RFC 9113 8.2.2, RFC 9110
 * 7.6.1): connection, keep-alive, proxy-connection, transfer-encoding,
 * upgrade, te, trailer, and (HTTP/2 form) host, which becomes :authority.
 * name must be lowercase. */
bool tr_fields_is_hop_by_hop(tr_str name);

/* Check an HTTP/2 request head (as the codec delivered it) against the rules
 * the HTTP/1.1 parser (codec/h1) applies to the same parts, so that what one
 * protocol refuses the other refuses too, and nothing ambiguous reaches an
 * HTTP/1.1 upstream (RFC 9113 8.3.1 and 8.1.1 require refusing these):
 *   - :method is a token; pseudo-headers are the four request ones, each once;
 *   - except for CONNECT: :scheme is "http" or "https", and :path is a
 *     request-target the HTTP/1.1 parser takes (VCHAR except '#': no
 *     controls, space, DEL, bytes >= 0x80) starting with '/' ("*" only for
 *     OPTIONS);
 *   - :authority and host are "host[:port]" as tr_h1_is_authority accepts
 *     (no userinfo, no percent-encoding; CONNECT needs a port); at most one
 *     host field, and equal to :authority (ASCII case-insensitive) when both
 *     are present; one of them is present;
 *   - regular names are lowercase tokens and values are field values
 *     (tr_h1_is_field_value: no controls but HTAB, no DEL, no leading or
 *     trailing whitespace);
 *   - the request line it becomes ("METHOD target HTTP/1.1" CRLF) is at most
 *     lim->max_request_line bytes;
 *   - at most lim->max_headers regular fields, counting every cookie field
 *     as one (HTTP/1.1 carries them as one line).
 * Returns 0, or the status to answer with (400; 414 for max_request_line;
 * 431 for max_headers) and *why, a constant description for the log. */
int tr_fields_check_request(const struct tr_h2_header *v, size_t n, const struct tr_h1_limits *lim,
                            const char **why);

/* The request line and headers of an HTTP/1.1 request as fields:
 * :method, :scheme, :authority (Host, or the absolute-form target's),
 * :path, then every header that is not hop-by-hop (nor named by Connection).
 * TE is kept only as "te: trailers" when the client asked for trailers.
 * Returns 0, or -1 if out is full. */
int tr_fields_from_h1_request(struct tr_fields *out, const struct tr_h1_message *m, tr_str scheme,
                              tr_str authority, tr_str path);
/* An HTTP/1.1 response head as fields: ":status" then its end-to-end headers. */
int tr_fields_from_h1_response(struct tr_fields *out, const struct tr_h1_message *m);

/* HTTP/1.1 request head from fields (pseudo-headers become the request line
 * and Host). chunked adds "transfer-encoding: chunked" (a body of unknown
 * length follows). Appends to out; returns 0, or -1 if out is too small. */
int tr_fields_h1_request_head(struct tr_buf *out, const struct tr_h2_header *v, size_t n,
                              bool chunked);
/* HTTP/1.1 response head from fields. framing: "content-length" is kept if
 * present, else chunked (when the body is not known to be empty) adds
 * "transfer-encoding: chunked". keep_alive picks the Connection header. */
int tr_fields_h1_response_head(struct tr_buf *out, const struct tr_h2_header *v, size_t n,
                               bool chunked, bool keep_alive);
/* The end of a chunked body with trailers: "0\r\n" fields "\r\n". */
int tr_fields_h1_trailers(struct tr_buf *out, const struct tr_h2_header *v, size_t n);

/* Parse a trailer section as the chunked decoder validated it ("name: value"
 * lines, then the empty line) into fields. Fields that must not be trailers
 * (framing, routing, hop-by-hop) are dropped. Returns 0, -1 if a line is
 * malformed, or TR_FIELDS_FULL if the section has more fields (or bytes) than
 * out has room for: callers size out from limits.max_headers and the
 * section's length, so that is the limit speaking, never a cut-off list. */
#define TR_FIELDS_FULL (-2)
int tr_fields_parse_trailers(struct tr_fields *out, const char *p, size_t len);

#endif
