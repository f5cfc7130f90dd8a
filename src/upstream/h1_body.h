/* upstream/h1_body.h: one HTTP/1.1 message body in transit, the same logic
 * for every place that moves one:
 *   - the byte path (proxy/http_session.c) relays the client's request body
 *     and the upstream's response body verbatim from its read buffers;
 *   - streams (proxy/stream.c) decode an HTTP/1.1 upstream's response body
 *     into DATA and trailers, and frame DATA into the request body;
 *   - the HTTP/1.1 downstream of a stream (http_session.c) decodes the
 *     client's request body and frames the response.
 *
 * Pure: bytes in, counts and spans out, no sockets. The caller's bytes stay
 * where they are: relaying says how many bytes at the front of a span may
 * go as they are (the caller writes them from its own buffer, no copy), and
 * decoding says where the payload lies inside the span. What a body keeps of
 * its own is a chunked message's trailer section while it arrives (decoding
 * only), in a pool buffer bounded by the decoder's trailer limit, until
 * tr_h1_body_trailers parses it or tr_h1_body_release drops it.
 *
 * The framing is validated strictly (codec/h1's chunked decoder), so what is
 * relayed verbatim is unambiguous; the end of the message is exact, so bytes
 * after it (a pipelined request, stray response bytes) are never taken.
 */
#ifndef TR_UPSTREAM_H1_BODY_H
#define TR_UPSTREAM_H1_BODY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "codec/h1/h1.h"
#include "core/buf.h"

struct tr_fields;
struct tr_h2_header;

struct tr_h1_body_state {
    uint8_t framing;    /* enum tr_h1_body */
    bool done;          /* the message's last byte went through, or it has no body */
    bool checked_end;   /* relay, chunked: the checked bytes end the message */
    uint32_t checked;   /* relay, chunked: validated bytes at the front, not yet sent */
    uint64_t remaining; /* TR_H1_BODY_LENGTH: bytes still to come */
    struct tr_h1_chunked chunked;
    struct tr_buf *trailers; /* decode, chunked: the trailer section so far */
};

/* Memory for the trailer section ran out (decode). */
#define TR_H1_BODY_E_NOMEM (-100)

/* The body of a message whose head said framing (length: its Content-Length;
 * max_trailer_bytes bounds a chunked trailer section, as limits.max_header_bytes
 * bounds a head). A message without a body (TR_H1_BODY_NONE: HEAD, 1xx, 204,
 * 304; or a length of 0) is done at once. TR_H1_BODY_UNTIL_CLOSE and
 * TR_H1_BODY_TUNNEL run until the connection ends (tr_h1_body_eof). */
void tr_h1_body_init(struct tr_h1_body_state *b, enum tr_h1_body framing, uint64_t length,
                     uint32_t max_trailer_bytes);

/* Relay: how many bytes at the front of p[0, len) belong to the body and may
 * be forwarded as they are now, into *n. A chunked body is validated first
 * (only validated bytes go; the validation state carries over calls, so p
 * must start where the previous call's span did, minus what was sent).
 * Returns 0, or TR_H1_E_BAD_REQUEST for malformed chunked framing (the
 * caller says whose fault: 400 for a client, UPE for an upstream). */
int tr_h1_body_sendable(struct tr_h1_body_state *b, const char *p, uint32_t len, uint32_t *n);
/* Relay: n of the sendable bytes went out; done turns true with the last. */
void tr_h1_body_sent(struct tr_h1_body_state *b, uint32_t n);

/* What one decode step found in its span. */
struct tr_h1_body_run {
    uint32_t consumed; /* bytes accounted for: framing, payload and trailers */
    uint32_t data_off; /* the payload among them: p[data_off, data_off + data_len) */
    uint32_t data_len;
};

/* Decode: advance over p[0, len) up to the end of one payload run (a chunk
 * may take several calls; each call makes progress while len > 0 and the
 * body is not done). Trailer section bytes are kept in b->trailers (a buffer
 * from pool; with pool NULL they are validated and dropped). done turns true
 * when the message ends at p + consumed.
 * Returns 0, TR_H1_E_BAD_REQUEST (malformed chunked framing) or
 * TR_H1_BODY_E_NOMEM. */
int tr_h1_body_decode(struct tr_h1_body_state *b, struct tr_buf_pool *pool, const char *p,
                      uint32_t len, struct tr_h1_body_run *r);

/* Decode, once done: the trailer section parsed into *out (fields that must
 * not be trailers dropped, filter/fields.h), initialized here with room for
 * max_fields; out->n is 0 when the message had none. Releases the section's
 * buffer. Returns 0, -1 (malformed, or no memory) or TR_FIELDS_FULL (more
 * fields than max_fields: the limit speaking, never a cut list). *out is
 * freed by the caller (tr_fields_free) in every case. */
int tr_h1_body_trailers(struct tr_h1_body_state *b, struct tr_buf_pool *pool, uint32_t max_fields,
                        struct tr_fields *out);

/* The connection ended (EOF read) before done: true if that ends the body
 * (until close, tunnel), which is then done; false if the body is cut short. */
bool tr_h1_body_eof(struct tr_h1_body_state *b);

/* Drop what the body holds (a partial trailer section). Idempotent. */
void tr_h1_body_release(struct tr_h1_body_state *b, struct tr_buf_pool *pool);

/* Frame payload p[0, len) onto *out (a buffer from pool when NULL; compacted
 * first) as far as it fits: chunked (one chunk per call) or as it is. When
 * end and all of p is taken, the end of a chunked message ("0" CRLF CRLF)
 * follows, and *out grows for it if it must: an end is never lost. Returns
 * the payload bytes taken (0 when there is no room for a chunk's framing),
 * or -1 when memory ran out. */
ssize_t tr_h1_body_put(struct tr_buf **out, struct tr_buf_pool *pool, bool chunked, const void *p,
                       size_t len, bool end);

/* The end of a chunked message with its trailer section, onto *out (grown
 * to hold all of it: a section cut short would lose the message's end).
 * Returns 0, or -1 (no memory, or fields that do not make a section). */
int tr_h1_body_put_trailers(struct tr_buf **out, struct tr_buf_pool *pool,
                            const struct tr_h2_header *h, size_t n);

#endif
