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
    TR_H2_E_CLOSE = -1,   /* connection-level error: GOAWAY queued; flush output, then close */
    TR_H2_E_STREAM = -2,  /* the stream is gone (reset or closed) */
    TR_H2_E_NOMEM = -3,
    TR_H2_E_INVALID = -4, /* bad argument (unknown stream, wrong role, ...) */
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

#define TR_H2_LIMITS_DEFAULT \
    ((struct tr_h2_limits){ 100, 65536, 65535, 1u << 20, 8, 200, 32, 1000, 4096 })

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
