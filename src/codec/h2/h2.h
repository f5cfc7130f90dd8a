/* codec/h2/h2.h: HTTP/2 framing over nghttp2, kept pure like the HTTP/1
 * codec: bytes in (tr_h2_feed), events out (an ops table the owner
 * implements), bytes to send pulled with tr_h2_output. No sockets.
 *
 * The codec enforces the limits that protect the proxy (concurrent streams,
 * header list size, CONTINUATION count, rapid reset, SETTINGS/PING/
 * WINDOW_UPDATE floods, HPACK table size) and turns a violation into a
 * GOAWAY queued for the peer plus TR_H2_E_CLOSE from tr_h2_feed.
 *
 * Flow control is the owner's: received DATA is not acknowledged (no
 * WINDOW_UPDATE) until the owner calls tr_h2_consume() after forwarding it,
 * so a slow reader on the other side stops the sender instead of making the
 * proxy buffer.
 */
#ifndef TR_CODEC_H2_H
#define TR_CODEC_H2_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/str.h"

struct tr_h2;

enum tr_h2_role { TR_H2_SERVER = 0, TR_H2_CLIENT };

/* Negative results of tr_h2_* calls. */
enum tr_h2_error {
    TR_H2_E_CLOSE = -1,  /* connection-level error: GOAWAY queued; flush output, then close */
    TR_H2_E_STREAM = -2, /* the stream is gone (reset or closed) */
    TR_H2_E_NOMEM = -3,
    TR_H2_E_INVALID = -4, /* bad argument (unknown stream, wrong role, ...) */
    TR_H2_E_REFUSED = -5, /* addition: no new streams here (GOAWAY sent or received, ids used up) */
};

struct tr_h2_limits {
    uint32_t max_concurrent_streams; /* we advertise; default 100 */
    uint32_t max_header_list_size;   /* decoded bytes per header block; default 65536 */
    uint32_t initial_window_size;    /* per stream, we advertise; default 65535 */
    uint32_t connection_window_size; /* default 1 MiB */
    uint32_t max_continuations;      /* CONTINUATION frames per header block; default 8 */
    uint32_t max_resets_per_second;  /* streams reset by the peer (rapid reset); default 200 */
    uint32_t max_settings;           /* entries per SETTINGS frame; default 32 */
    uint32_t max_control_frames;     /* queued SETTINGS ACK/PING ACK/RST we owe; default 1000 */
    uint32_t hpack_table_size;       /* decoder dynamic table; default 4096 */
};

#define TR_H2_LIMITS_DEFAULT                                                                       \
    ((struct tr_h2_limits){100, 65536, 65535, 1u << 20, 8, 200, 32, 1000, 4096})

/* One header field. Pseudo-headers (":method", ":path", ":status", ...) are
 * delivered and accepted like any other field, first in the list. */
struct tr_h2_header {
    tr_str name;
    tr_str value;
};

/* What the owner learns. Returning nonzero from a callback resets that
 * stream (INTERNAL_ERROR). Header slices are valid only during the call. */
struct tr_h2_ops {
    /* A complete header block: request headers (server), response headers or
     * 1xx (client), or trailers (both; is_trailers set). */
    int (*on_headers)(void *owner, int32_t stream_id, const struct tr_h2_header *h, size_t n,
                      bool is_trailers, bool end_stream);
    /* DATA payload; call tr_h2_consume(stream_id, len) once it is forwarded. */
    int (*on_data)(void *owner, int32_t stream_id, const uint8_t *data, size_t len,
                   bool end_stream);
    /* The peer reset the stream, or the stream closed for another reason
     * (error_code 0 = NO_ERROR after both sides ended). After this the stream
     * id is dead. */
    void (*on_stream_close)(void *owner, int32_t stream_id, uint32_t error_code);
    /* The peer sent GOAWAY. */
    void (*on_goaway)(void *owner, int32_t last_stream_id, uint32_t error_code);
    /* A stream we were sending on has window again (tr_h2_send_data returned
     * less than offered before). */
    void (*on_writable)(void *owner, int32_t stream_id);
};

/* server: expects the client preface first. client: queues its preface and
 * SETTINGS at once. Returns NULL on allocation failure. */
struct tr_h2 *tr_h2_new(enum tr_h2_role role, const struct tr_h2_limits *lim,
                        const struct tr_h2_ops *ops, void *owner);
void tr_h2_free(struct tr_h2 *h2);

/* Process received bytes. Returns the number consumed (== len unless the
 * connection failed) or TR_H2_E_CLOSE. */
ssize_t tr_h2_feed(struct tr_h2 *h2, const uint8_t *in, size_t len);

/* Bytes to send: fills out (at most size) and returns the count; 0 when
 * nothing is pending. Call until 0 after every feed/submit. */
size_t tr_h2_output(struct tr_h2 *h2, uint8_t *out, size_t size);
bool tr_h2_want_write(const struct tr_h2 *h2);
/* False once the connection is finished (GOAWAY exchanged and no open
 * streams, or a connection error): flush output, then close. */
bool tr_h2_alive(const struct tr_h2 *h2);

/* Client: start a request. Returns the new stream id (> 0) or an error. */
int32_t tr_h2_submit_request(struct tr_h2 *h2, const struct tr_h2_header *h, size_t n,
                             bool end_stream);
/* Server: response headers (":status" first), or a 1xx (end_stream false). */
int tr_h2_submit_headers(struct tr_h2 *h2, int32_t stream_id, const struct tr_h2_header *h,
                         size_t n, bool end_stream);
/* Body bytes on a stream, copied into the codec's per-stream queue only up
 * to what the peer's flow-control window allows right now. Returns bytes
 * taken (may be 0: then on_writable fires when window opens), or an error.
 * end_stream is applied only if all len bytes were taken. */
ssize_t tr_h2_send_data(struct tr_h2 *h2, int32_t stream_id, const uint8_t *data, size_t len,
                        bool end_stream);
/* Trailers end the stream. */
int tr_h2_submit_trailers(struct tr_h2 *h2, int32_t stream_id, const struct tr_h2_header *h,
                          size_t n);
int tr_h2_reset_stream(struct tr_h2 *h2, int32_t stream_id, uint32_t error_code);
/* Acknowledge forwarded DATA (sends WINDOW_UPDATE as needed). */
void tr_h2_consume(struct tr_h2 *h2, int32_t stream_id, size_t len);
/* Graceful shutdown: GOAWAY with the last processed stream; open streams finish. */
int tr_h2_goaway(struct tr_h2 *h2, uint32_t error_code);

/* --- Additions: behaviour the API above leaves open, fixed here. ---
 *
 * Limits: a zero field in tr_h2_limits means its default.
 *
 * Callbacks may call tr_h2_submit_*, tr_h2_send_data, tr_h2_consume,
 * tr_h2_reset_stream and tr_h2_goaway, never tr_h2_feed, tr_h2_output or
 * tr_h2_free. on_headers, on_data, on_goaway and on_stream_close run inside
 * tr_h2_feed (on_stream_close also inside tr_h2_output, when our END_STREAM
 * or RST_STREAM goes out); on_writable runs at the end of either.
 *
 * Streams: on_stream_close fires exactly once for every stream the owner
 * knows (a request delivered by on_headers, a tr_h2_submit_request, including
 * ones it reset itself), never for streams it never saw. A client request
 * that could not be sent closes with REFUSED_STREAM. Once the connection has
 * failed (TR_H2_E_CLOSE) no callback runs any more: the owner drops every
 * stream of the connection itself; tr_h2_free does not call back either.
 *
 * Body end: END_STREAM on DATA is reported on the last chunk when that chunk
 * arrived in the same tr_h2_feed as the end of the frame, otherwise by a
 * final on_data call with len 0 and end_stream set.
 *
 * Flow control: tr_h2_consume is clamped to what was delivered and not yet
 * consumed. When a stream closes the codec gives its unconsumed bytes back to
 * the connection window itself, so tr_h2_consume on a closed stream is a
 * no-op. Data the owner refuses (nonzero from on_data) is consumed by the
 * codec.
 *
 * Sending: a stream's queue holds at most TR_H2_STREAM_QUEUE_MAX bytes, and
 * never more than the peer's stream window or the connection window left
 * after every stream's queued bytes, so what a connection buffers is bounded
 * by the peer's windows, not by the owner. on_writable fires once room comes
 * back (window update, or the queue drained into the output). Outgoing
 * fields are checked (lowercase token names, RFC 9113 values, pseudo-headers
 * first, none in trailers): TR_H2_E_INVALID otherwise. Trailers may be
 * submitted while body bytes are still queued; they follow them.
 *
 * What a misbehaving peer gets (server role unless noted):
 * - header list over max_header_list_size (both roles; name + value + 32 per
 *   field, counted while decoding so an HPACK bomb stops at the limit): that
 *   stream is reset with PROTOCOL_ERROR (HTTP/2 has no 431, and
 *   REFUSED_STREAM would invite a retry of the same request); the block is
 *   still decoded so HPACK state stays in sync and the connection carries on.
 * - resets: each RST_STREAM received, each stream error the peer provokes
 *   (invalid frame, oversized header list, refused stream) takes a token from
 *   a bucket of max_resets_per_second tokens refilled at that rate; when it
 *   is empty: GOAWAY ENHANCE_YOUR_CALM. nghttp2's own limiter stays set as a
 *   more lenient backstop (GOAWAY INTERNAL_ERROR).
 * - more than max_concurrent_streams: the extra stream is reset with
 *   REFUSED_STREAM while our SETTINGS are unacknowledged; after the peer
 *   acknowledged them nghttp2 treats it as a connection error (GOAWAY
 *   PROTOCOL_ERROR).
 * - SETTINGS/PING floods (more than max_control_frames ACKs owed beyond a
 *   4 KiB lookahead), more than max_continuations CONTINUATION frames or
 *   max_settings entries: GOAWAY ENHANCE_YOUR_CALM.
 * - bad client preface: GOAWAY PROTOCOL_ERROR; other protocol errors: the
 *   GOAWAY nghttp2 picks (PROTOCOL_ERROR, FLOW_CONTROL_ERROR, ...).
 * A connection error returns TR_H2_E_CLOSE from the tr_h2_feed that caused
 * it, with the GOAWAY already in the output. (Only if more than 4 KiB of other
 * control frames were queued ahead of an nghttp2-chosen GOAWAY is it noticed
 * when that GOAWAY reaches tr_h2_output: tr_h2_alive turns false then and
 * tr_h2_feed fails from then on.) */
#define TR_H2_STREAM_QUEUE_MAX (64u * 1024)
/* More consecutive empty DATA frames (no END_STREAM) than this: GOAWAY
 * ENHANCE_YOUR_CALM. */
#define TR_H2_MAX_EMPTY_DATA   100

/* One pointer of the owner's per stream (NULL until set), so the owner finds
 * its state for a stream id without a search. Valid for streams the owner
 * knows until their on_stream_close. */
int tr_h2_set_stream_user(struct tr_h2 *h2, int32_t stream_id, void *p);
void *tr_h2_stream_user(const struct tr_h2 *h2, int32_t stream_id);

/* Counters for metrics and tests. */
struct tr_h2_stats {
    uint64_t streams_opened;
    uint64_t resets_received;
    uint64_t goaways_sent;
    uint32_t open_streams;
    uint32_t last_goaway_error; /* our GOAWAY's error code */
};
void tr_h2_get_stats(const struct tr_h2 *h2, struct tr_h2_stats *out);

#endif
