/* codec/h2/h2.c: HTTP/2 codec, a thin policy layer over an nghttp2 session.
 *
 * nghttp2 does framing, HPACK, stream states and most protocol checks; this
 * file adds what a proxy needs on top: owner-driven flow control, bounded
 * send queues, header list limits, a rapid-reset budget, and a guarantee that
 * every connection error leaves a GOAWAY in the output.
 *
 * Output is one logical byte stream: obuf (bytes already taken from nghttp2,
 * or our own GOAWAY after a fatal error), then rem (the unsent tail of the
 * last chunk nghttp2_session_mem_send returned, valid until its next call),
 * then whatever nghttp2 produces next.
 */
#include "codec/h2/h2.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nghttp2/nghttp2.h>

/* After each feed, non-DATA frames nghttp2 queued (ACKs, RST_STREAM, GOAWAY)
 * are pulled into obuf up to this many pending bytes, so a GOAWAY is seen
 * before tr_h2_feed returns. Past it they stay queued in nghttp2, where its
 * outbound-ACK limit catches a peer that never reads. */
#define PUMP_MAX         4096u
/* Header arrays on the stack for submits up to this size. */
#define NV_STACK         32
#define GOAWAY_FRAME_LEN 17u

struct trailers {
    nghttp2_nv *nv; /* points into the same allocation */
    size_t n;
};

struct tr_h2_stream {
    struct tr_h2_stream *prev, *next;
    int32_t id;
    /* Send queue: ring buffer, grown by doubling up to TR_H2_STREAM_QUEUE_MAX. */
    uint8_t *q;
    uint32_t qcap, qhead, qlen;
    uint64_t unconsumed; /* delivered DATA not yet acknowledged by the owner */
    struct trailers *tr; /* trailers waiting for the queue to drain */
    bool attached;       /* a data provider is (or will be) attached in nghttp2 */
    bool eof;            /* end the stream once the queue is empty */
    bool deferred;       /* our read callback deferred: resume on new data */
    bool blocked;        /* send_data took less than offered: on_writable owed */
    bool local_done;     /* our side is finished (END_STREAM or trailers queued) */
    bool final_sent;     /* server: final response headers submitted */
    bool final_recv;     /* client: final (non-1xx) response received */
    bool rx_dead;        /* owner refused the stream: drop incoming data */
    bool refused;        /* client: request HEADERS could not be sent */
    bool owner_reset;    /* the owner reset it with owner_code */
    uint32_t owner_code;
    void *user; /* the owner's (tr_h2_set_stream_user) */
};

struct tr_h2 {
    nghttp2_session *s;
    enum tr_h2_role role;
    struct tr_h2_limits lim;
    struct tr_h2_ops ops;
    void *owner;

    struct tr_h2_stream *streams; /* every stream the owner knows */
    uint32_t nblocked;
    uint64_t total_q;    /* bytes queued over all streams */
    uint64_t unconsumed; /* over all streams */

    /* Header block being received (blocks never interleave in HTTP/2). The
     * slices point into nghttp2 rcbufs we hold a reference on. */
    int32_t hdr_stream;
    bool hdr_reject;
    size_t hdr_bytes;
    struct tr_h2_header *hv;
    nghttp2_rcbuf **hrc; /* 2 per field */
    uint32_t hn, hcap;

    /* Last DATA chunk, held back to learn whether its frame ends the stream. */
    int32_t pend_id;
    const uint8_t *pend_p;
    size_t pend_len;

    uint8_t *obuf;
    size_t ooff, olen, ocap;
    size_t carry; /* pending bytes at the front of obuf that came from rem */
    const uint8_t *rem;
    size_t rem_len;

    bool pumping; /* data read callback answers PAUSE */
    bool busy;    /* inside feed or output */
    bool failed;  /* connection error: GOAWAY queued or sent */
    bool dead;    /* nghttp2 session unusable (fatal error): only obuf remains */
    bool refused_pending;
    uint32_t fail_code;  /* our GOAWAY code when a callback aborts the session */
    uint32_t empty_data; /* consecutive empty DATA frames without END_STREAM */
    int32_t closing_id;  /* the stream whose on_stream_close is running */
    void *closing_user;  /* ... and its owner pointer */
    uint32_t user_goaways;
    int32_t last_peer_stream;

    uint64_t rst_tokens; /* rapid-reset bucket, in thousandths of a token */
    uint64_t rst_last_ms;

    struct tr_h2_stats stats;
};

/* ---- small helpers ---- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int map_err(int rv)
{
    switch (rv) {
    case NGHTTP2_ERR_NOMEM:
        return TR_H2_E_NOMEM;
    case NGHTTP2_ERR_STREAM_CLOSED:
    case NGHTTP2_ERR_STREAM_CLOSING:
    case NGHTTP2_ERR_STREAM_SHUT_WR:
    case NGHTTP2_ERR_INVALID_STREAM_STATE:
        return TR_H2_E_STREAM;
    case NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE:
    case NGHTTP2_ERR_START_STREAM_NOT_ALLOWED:
    case NGHTTP2_ERR_SESSION_CLOSING:
        return TR_H2_E_REFUSED;
    default:
        return nghttp2_is_fatal(rv) ? TR_H2_E_CLOSE : TR_H2_E_INVALID;
    }
}

static struct tr_h2_stream *find_stream(struct tr_h2 *h2, int32_t id)
{
    if (id <= 0 || h2->dead)
        return NULL;
    struct tr_h2_stream *st = nghttp2_session_get_stream_user_data(h2->s, id);
    if (st)
        return st;
    /* Client requests are not in nghttp2's stream map until their HEADERS
     * go out; those few are found in our list. */
    if (h2->role == TR_H2_CLIENT)
        for (st = h2->streams; st; st = st->next)
            if (st->id == id)
                return st;
    return NULL;
}

/* Error for a stream id we hold no state for: gone if it could have existed. */
static int missing_stream(struct tr_h2 *h2, int32_t id)
{
    if (id <= 0 || h2->dead)
        return h2->dead ? TR_H2_E_CLOSE : TR_H2_E_INVALID;
    if (h2->role == TR_H2_CLIENT)
        return (id & 1) && (uint32_t)id < nghttp2_session_get_next_stream_id(h2->s)
                   ? TR_H2_E_STREAM
                   : TR_H2_E_INVALID;
    return (id & 1) && id <= h2->last_peer_stream ? TR_H2_E_STREAM : TR_H2_E_INVALID;
}

/* ---- output buffer ---- */

static bool obuf_append(struct tr_h2 *h2, const uint8_t *p, size_t n)
{
    if (h2->ooff == h2->olen)
        h2->ooff = h2->olen = 0;
    if (h2->ocap - h2->olen < n && h2->ooff > 0) {
        memmove(h2->obuf, h2->obuf + h2->ooff, h2->olen - h2->ooff);
        h2->olen -= h2->ooff;
        h2->ooff = 0;
    }
    if (h2->ocap - h2->olen < n) {
        size_t cap = h2->ocap ? h2->ocap : 512;
        while (cap - h2->olen < n)
            cap *= 2;
        uint8_t *b = realloc(h2->obuf, cap);
        if (!b)
            return false;
        h2->obuf = b;
        h2->ocap = cap;
    }
    memcpy(h2->obuf + h2->olen, p, n);
    h2->olen += n;
    return true;
}

static void note_goaway(struct tr_h2 *h2, uint32_t code)
{
    h2->stats.goaways_sent++;
    h2->stats.last_goaway_error = code;
}

/* nghttp2 reported a fatal error: the session may no longer be used. Finish
 * the frame already half handed out, then append a GOAWAY we encode
 * ourselves, so the peer learns why whatever state nghttp2 was left in. */
static void go_dead(struct tr_h2 *h2, uint32_t code)
{
    if (h2->dead)
        return;
    h2->dead = h2->failed = true;
    h2->pend_len = 0;
    if (h2->rem_len)
        obuf_append(h2, h2->rem, h2->rem_len);
    h2->rem = NULL;
    h2->rem_len = 0;
    uint32_t last = (uint32_t)h2->last_peer_stream & 0x7fffffffu;
    uint8_t f[GOAWAY_FRAME_LEN] = {0, 0, 8, NGHTTP2_GOAWAY, 0, 0, 0, 0, 0};
    f[9] = (uint8_t)(last >> 24);
    f[10] = (uint8_t)(last >> 16);
    f[11] = (uint8_t)(last >> 8);
    f[12] = (uint8_t)last;
    f[13] = (uint8_t)(code >> 24);
    f[14] = (uint8_t)(code >> 16);
    f[15] = (uint8_t)(code >> 8);
    f[16] = (uint8_t)code;
    if (obuf_append(h2, f, sizeof f))
        note_goaway(h2, code);
}

static uint32_t fatal_code(struct tr_h2 *h2, int rv)
{
    switch (rv) {
    case NGHTTP2_ERR_BAD_CLIENT_MAGIC:
        return NGHTTP2_PROTOCOL_ERROR;
    case NGHTTP2_ERR_FLOODED:
    case NGHTTP2_ERR_TOO_MANY_CONTINUATIONS:
        return NGHTTP2_ENHANCE_YOUR_CALM;
    case NGHTTP2_ERR_CALLBACK_FAILURE:
        return h2->fail_code ? h2->fail_code : NGHTTP2_INTERNAL_ERROR;
    default:
        return NGHTTP2_INTERNAL_ERROR;
    }
}

/* Any negative result of a session call: fatal ones kill the session. */
static void check_fatal(struct tr_h2 *h2, int rv)
{
    if (rv < 0 && nghttp2_is_fatal(rv))
        go_dead(h2, fatal_code(h2, rv));
}

/* Result of a failed submit for the owner. */
static int submit_failed(struct tr_h2 *h2, int rv)
{
    check_fatal(h2, rv);
    return h2->dead ? TR_H2_E_CLOSE : map_err(rv);
}

/* ---- send queue ---- */

static bool q_reserve(struct tr_h2_stream *st, uint32_t need)
{
    if (st->qcap - st->qlen >= need)
        return true;
    uint32_t cap = st->qcap ? st->qcap : 1024;
    while (cap - st->qlen < need)
        cap *= 2;
    if (cap > TR_H2_STREAM_QUEUE_MAX)
        cap = TR_H2_STREAM_QUEUE_MAX;
    uint8_t *q = malloc(cap);
    if (!q)
        return false;
    /* Linearize while moving. */
    uint32_t first = st->qcap - st->qhead < st->qlen ? st->qcap - st->qhead : st->qlen;
    if (st->qlen) {
        memcpy(q, st->q + st->qhead, first);
        memcpy(q + first, st->q, st->qlen - first);
    }
    free(st->q);
    st->q = q;
    st->qcap = cap;
    st->qhead = 0;
    return true;
}

static void q_push(struct tr_h2_stream *st, const uint8_t *p, uint32_t n)
{
    uint32_t tail = (st->qhead + st->qlen) % st->qcap;
    uint32_t first = st->qcap - tail < n ? st->qcap - tail : n;
    memcpy(st->q + tail, p, first);
    memcpy(st->q, p + first, n - first);
    st->qlen += n;
}

static uint32_t q_pop(struct tr_h2_stream *st, uint8_t *dst, size_t max)
{
    uint32_t n = st->qlen < max ? st->qlen : (uint32_t)max;
    if (n == 0)
        return 0;
    uint32_t first = st->qcap - st->qhead < n ? st->qcap - st->qhead : n;
    memcpy(dst, st->q + st->qhead, first);
    memcpy(dst + first, st->q, n - first);
    st->qlen -= n;
    st->qhead = st->qlen ? (st->qhead + n) % st->qcap : 0;
    return n;
}

/* Bytes tr_h2_send_data may take for st now: the peer's stream window and
 * connection window minus what is already queued, and the queue cap. */
static size_t stream_room(struct tr_h2 *h2, const struct tr_h2_stream *st)
{
    if (h2->dead)
        return 0;
    int64_t w = nghttp2_session_get_stream_remote_window_size(h2->s, st->id);
    if (w < 0) /* client stream not opened yet: it will start at the peer's initial window */
        w = nghttp2_session_get_remote_settings(h2->s, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
    int64_t room = w - st->qlen;
    int64_t conn = (int64_t)nghttp2_session_get_remote_window_size(h2->s) - (int64_t)h2->total_q;
    if (conn < room)
        room = conn;
    if ((int64_t)(TR_H2_STREAM_QUEUE_MAX - st->qlen) < room)
        room = TR_H2_STREAM_QUEUE_MAX - st->qlen;
    return room > 0 ? (size_t)room : 0;
}

/* ---- stream lifecycle ---- */

static struct tr_h2_stream *stream_new(struct tr_h2 *h2, int32_t id)
{
    struct tr_h2_stream *st = calloc(1, sizeof *st);
    if (!st)
        return NULL;
    st->id = id;
    st->next = h2->streams;
    if (h2->streams)
        h2->streams->prev = st;
    h2->streams = st;
    h2->stats.streams_opened++;
    h2->stats.open_streams++;
    return st;
}

static void stream_free(struct tr_h2 *h2, struct tr_h2_stream *st)
{
    if (st->prev)
        st->prev->next = st->next;
    else
        h2->streams = st->next;
    if (st->next)
        st->next->prev = st->prev;
    if (st->blocked)
        h2->nblocked--;
    h2->total_q -= st->qlen;
    h2->stats.open_streams--;
    free(st->q);
    free(st->tr);
    free(st);
}

/* The stream is over: release its share of the connection window, tell the
 * owner, forget it. */
static void stream_close(struct tr_h2 *h2, struct tr_h2_stream *st, uint32_t code)
{
    int32_t id = st->id;
    if (st->unconsumed) {
        h2->unconsumed -= st->unconsumed;
        if (!h2->dead)
            check_fatal(h2, nghttp2_session_consume_connection(h2->s, st->unconsumed));
        st->unconsumed = 0;
    }
    /* nghttp2 may still map the id to st during this callback: unmap it
     * first, so nothing sees freed memory; the owner's pointer stays
     * reachable (tr_h2_stream_user) for the duration of on_stream_close. */
    if (id > 0 && !h2->dead)
        nghttp2_session_set_stream_user_data(h2->s, id, NULL);
    void *user = st->user;
    stream_free(h2, st);
    if (h2->ops.on_stream_close && !h2->failed) {
        int32_t saved_id = h2->closing_id;
        void *saved_user = h2->closing_user;
        h2->closing_id = id;
        h2->closing_user = user;
        h2->ops.on_stream_close(h2->owner, id, code);
        h2->closing_id = saved_id;
        h2->closing_user = saved_user;
    }
}

static void reap_refused(struct tr_h2 *h2)
{
    if (!h2->refused_pending)
        return;
    h2->refused_pending = false;
    struct tr_h2_stream *st = h2->streams, *next;
    for (; st; st = next) {
        next = st->next;
        if (st->refused) {
            stream_close(h2, st, st->owner_reset ? st->owner_code : NGHTTP2_REFUSED_STREAM);
            next = h2->streams; /* the owner may have changed the list */
        }
    }
}

static void check_writable(struct tr_h2 *h2)
{
    if (!h2->nblocked || h2->failed)
        return;
    bool again = true;
    /* on_writable may submit or reset, never free: restart after each call
     * because the owner may have opened streams in front of us. */
    while (again && h2->nblocked) {
        again = false;
        for (struct tr_h2_stream *st = h2->streams; st; st = st->next) {
            if (st->blocked && stream_room(h2, st) > 0) {
                st->blocked = false;
                h2->nblocked--;
                if (h2->ops.on_writable)
                    h2->ops.on_writable(h2->owner, st->id);
                again = true;
                break;
            }
        }
    }
}

/* ---- rapid reset budget ---- */

/* Takes one token; false when the peer has spent its budget. */
static bool reset_budget_take(struct tr_h2 *h2)
{
    if (h2->role != TR_H2_SERVER)
        return true;
    uint64_t rate = h2->lim.max_resets_per_second;
    uint64_t cap = rate * 1000u;
    uint64_t now = now_ms();
    uint64_t add = (now - h2->rst_last_ms) * rate;
    h2->rst_last_ms = now;
    h2->rst_tokens = h2->rst_tokens + add > cap ? cap : h2->rst_tokens + add;
    if (h2->rst_tokens < 1000u)
        return false;
    h2->rst_tokens -= 1000u;
    return true;
}

/* ---- receiving ---- */

static void hdr_reset(struct tr_h2 *h2)
{
    for (uint32_t i = 0; i < 2 * h2->hn; i++)
        nghttp2_rcbuf_decref(h2->hrc[i]);
    if (h2->hcap > 64) { /* an unusually long list: do not keep its arrays */
        free(h2->hv);
        free(h2->hrc);
        h2->hv = NULL;
        h2->hrc = NULL;
        h2->hcap = 0;
    }
    h2->hn = 0;
    h2->hdr_bytes = 0;
    h2->hdr_reject = false;
}

static void deliver_data(struct tr_h2 *h2, int32_t id, const uint8_t *p, size_t len, bool end)
{
    if (h2->dead)
        return;
    struct tr_h2_stream *st = h2->failed ? NULL : nghttp2_session_get_stream_user_data(h2->s, id);
    if (!st || st->rx_dead) {
        if (len)
            check_fatal(h2, nghttp2_session_consume(h2->s, id, len));
        return;
    }
    st->unconsumed += len;
    h2->unconsumed += len;
    if (h2->ops.on_data && h2->ops.on_data(h2->owner, id, p, len, end) != 0) {
        st = nghttp2_session_get_stream_user_data(h2->s, id);
        if (!st)
            return;
        st->rx_dead = true;
        if (st->unconsumed) {
            h2->unconsumed -= st->unconsumed;
            check_fatal(h2, nghttp2_session_consume(h2->s, id, st->unconsumed));
            st->unconsumed = 0;
        }
        nghttp2_submit_rst_stream(h2->s, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    }
}

static void flush_pending(struct tr_h2 *h2)
{
    if (!h2->pend_len)
        return;
    size_t len = h2->pend_len;
    h2->pend_len = 0;
    deliver_data(h2, h2->pend_id, h2->pend_p, len, false);
}

static bool is_informational(const struct tr_h2_header *h, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (TR_STR_EQ_LIT(h[i].name, ":status"))
            return h[i].value.len == 3 && h[i].value.p[0] == '1';
    return false;
}

static int deliver_headers(struct tr_h2 *h2, const nghttp2_frame *frame)
{
    int32_t id = frame->hd.stream_id;
    bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    bool trailers = false;
    struct tr_h2_stream *st = nghttp2_session_get_stream_user_data(h2->s, id);

    if (h2->role == TR_H2_SERVER) {
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
            st = stream_new(h2, id);
            if (!st || nghttp2_session_set_stream_user_data(h2->s, id, st) != 0) {
                if (st)
                    stream_free(h2, st);
                nghttp2_submit_rst_stream(h2->s, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
                return 0;
            }
        } else {
            trailers = true;
        }
    } else if (st) {
        if (frame->headers.cat == NGHTTP2_HCAT_HEADERS && st->final_recv)
            trailers = true;
        else if (!is_informational(h2->hv, h2->hn))
            st->final_recv = true;
    }
    if (!st || st->rx_dead || h2->failed)
        return 0;
    int rc =
        h2->ops.on_headers ? h2->ops.on_headers(h2->owner, id, h2->hv, h2->hn, trailers, end) : 0;
    hdr_reset(h2);
    if (rc != 0) {
        st = nghttp2_session_get_stream_user_data(h2->s, id);
        if (st)
            st->rx_dead = true;
        nghttp2_submit_rst_stream(h2->s, NGHTTP2_FLAG_NONE, id, NGHTTP2_INTERNAL_ERROR);
    }
    return 0;
}

static int on_begin_headers_cb(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct tr_h2 *h2 = ud;
    (void)s;
    if (h2->dead)
        return NGHTTP2_ERR_CALLBACK_FAILURE; /* a call in this callback chain failed fatally */
    flush_pending(h2);
    hdr_reset(h2);
    h2->hdr_stream = frame->hd.stream_id;
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST &&
        frame->hd.stream_id > h2->last_peer_stream)
        h2->last_peer_stream = frame->hd.stream_id;
    return 0;
}

static int on_header_cb(nghttp2_session *s, const nghttp2_frame *frame, nghttp2_rcbuf *name,
                        nghttp2_rcbuf *value, uint8_t flags, void *ud)
{
    struct tr_h2 *h2 = ud;
    (void)flags;
    if (h2->dead)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (h2->hdr_reject || frame->hd.stream_id != h2->hdr_stream)
        return 0;
    nghttp2_vec n = nghttp2_rcbuf_get_buf(name), v = nghttp2_rcbuf_get_buf(value);
    /* RFC 9113 6.5.2 size: what a peer may make us hold, whatever HPACK
     * compression it used to send it. */
    h2->hdr_bytes += n.len + v.len + 32;
    if (h2->hdr_bytes > h2->lim.max_header_list_size) {
        hdr_reset(h2);
        h2->hdr_reject = true;
        if (!reset_budget_take(h2)) {
            h2->fail_code = NGHTTP2_ENHANCE_YOUR_CALM;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        /* nghttp2 decodes the rest of the block (keeping HPACK in sync)
         * without more callbacks, and resets the stream with our code. */
        int rv = nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, frame->hd.stream_id,
                                           NGHTTP2_PROTOCOL_ERROR);
        if (nghttp2_is_fatal(rv))
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    if (h2->hn == h2->hcap) {
        uint32_t cap = h2->hcap ? h2->hcap * 2 : 16;
        struct tr_h2_header *hv = realloc(h2->hv, cap * sizeof *hv);
        if (!hv)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        h2->hv = hv;
        nghttp2_rcbuf **hrc = realloc(h2->hrc, 2 * cap * sizeof *hrc);
        if (!hrc)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        h2->hrc = hrc;
        h2->hcap = cap;
    }
    nghttp2_rcbuf_incref(name);
    nghttp2_rcbuf_incref(value);
    h2->hrc[2 * h2->hn] = name;
    h2->hrc[2 * h2->hn + 1] = value;
    h2->hv[h2->hn].name = tr_str_from((const char *)n.base, n.len);
    h2->hv[h2->hn].value = tr_str_from((const char *)v.base, v.len);
    h2->hn++;
    return 0;
}

static int on_data_chunk_cb(nghttp2_session *s, uint8_t flags, int32_t id, const uint8_t *data,
                            size_t len, void *ud)
{
    struct tr_h2 *h2 = ud;
    (void)s;
    (void)flags;
    if (h2->dead)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    flush_pending(h2);
    h2->pend_id = id;
    h2->pend_p = data;
    h2->pend_len = len;
    return 0;
}

static int on_frame_recv_cb(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct tr_h2 *h2 = ud;
    int32_t id = frame->hd.stream_id;
    (void)s;
    if (h2->dead)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (frame->hd.type == NGHTTP2_DATA) {
        bool end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
        /* Empty DATA frames cost work and carry nothing: a run of them is
         * a flood (the Envoy/nginx defence). */
        if (frame->hd.length == 0 && !end) {
            if (++h2->empty_data > TR_H2_MAX_EMPTY_DATA) {
                h2->fail_code = NGHTTP2_ENHANCE_YOUR_CALM;
                return NGHTTP2_ERR_CALLBACK_FAILURE;
            }
        } else {
            h2->empty_data = 0;
        }
        if (h2->pend_len && h2->pend_id == id) {
            size_t len = h2->pend_len;
            h2->pend_len = 0;
            deliver_data(h2, id, h2->pend_p, len, end);
        } else {
            flush_pending(h2);
            if (end)
                deliver_data(h2, id, NULL, 0, true);
        }
        return 0;
    }
    flush_pending(h2);
    if (h2->dead)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (!h2->hdr_reject && id == h2->hdr_stream)
            deliver_headers(h2, frame);
        hdr_reset(h2);
        break;
    case NGHTTP2_RST_STREAM:
        h2->stats.resets_received++;
        if (!reset_budget_take(h2)) {
            h2->fail_code = NGHTTP2_ENHANCE_YOUR_CALM;
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        break;
    case NGHTTP2_GOAWAY:
        if (h2->ops.on_goaway && !h2->failed)
            h2->ops.on_goaway(h2->owner, frame->goaway.last_stream_id, frame->goaway.error_code);
        break;
    default:
        break;
    }
    return 0;
}

/* Stream errors the peer provokes cost it like resets do (a peer can make us
 * reset streams as cheaply as it can reset them itself). */
static int on_invalid_frame_cb(nghttp2_session *s, const nghttp2_frame *frame, int err, void *ud)
{
    struct tr_h2 *h2 = ud;
    (void)s;
    (void)frame;
    (void)err;
    if (!reset_budget_take(h2)) {
        h2->fail_code = NGHTTP2_ENHANCE_YOUR_CALM;
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return 0;
}

static int on_stream_close_cb(nghttp2_session *s, int32_t id, uint32_t code, void *ud)
{
    struct tr_h2 *h2 = ud;
    if (h2->dead)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    flush_pending(h2);
    struct tr_h2_stream *st = nghttp2_session_get_stream_user_data(s, id);
    if (st)
        stream_close(h2, st, code);
    return 0;
}

/* ---- sending callbacks ---- */

static int before_frame_send_cb(nghttp2_session *s, const nghttp2_frame *frame, void *ud)
{
    struct tr_h2 *h2 = ud;
    (void)s;
    if (h2->dead)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        note_goaway(h2, frame->goaway.error_code);
        if (h2->user_goaways)
            h2->user_goaways--;
        else
            h2->failed = true; /* nghttp2 tearing the connection down */
    }
    return 0;
}

static int on_frame_not_send_cb(nghttp2_session *s, const nghttp2_frame *frame, int err, void *ud)
{
    struct tr_h2 *h2 = ud;
    (void)s;
    (void)err;
    if (frame->hd.type == NGHTTP2_GOAWAY && h2->user_goaways)
        h2->user_goaways--; /* ours was dropped: keep the count of ours in flight right */
    if (frame->hd.type == NGHTTP2_HEADERS && frame->headers.cat == NGHTTP2_HCAT_REQUEST) {
        /* nghttp2 closes the stream if it had opened it; otherwise nobody
         * would: reap_refused closes what is still there afterwards. */
        for (struct tr_h2_stream *st = h2->streams; st; st = st->next)
            if (st->id == frame->hd.stream_id) {
                st->refused = true;
                h2->refused_pending = true;
            }
    }
    return 0;
}

static ssize_t data_read_cb(nghttp2_session *s, int32_t id, uint8_t *buf, size_t length,
                            uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    struct tr_h2 *h2 = ud;
    struct tr_h2_stream *st = src->ptr;
    if (h2->dead)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    if (h2->pumping)
        return NGHTTP2_ERR_PAUSE; /* leave DATA in nghttp2 until tr_h2_output */
    uint32_t n = q_pop(st, buf, length);
    h2->total_q -= n;
    if (st->qlen == 0 && st->eof) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (st->tr) {
            *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
            int rv = nghttp2_submit_trailer(s, id, st->tr->nv, st->tr->n);
            free(st->tr);
            st->tr = NULL;
            if (nghttp2_is_fatal(rv))
                return NGHTTP2_ERR_CALLBACK_FAILURE;
        }
        return n;
    }
    if (n == 0) {
        st->deferred = true;
        return NGHTTP2_ERR_DEFERRED;
    }
    return n;
}

/* ---- session setup ---- */

static void apply_defaults(struct tr_h2_limits *l)
{
    const struct tr_h2_limits d = TR_H2_LIMITS_DEFAULT;
    if (!l->max_concurrent_streams)
        l->max_concurrent_streams = d.max_concurrent_streams;
    if (!l->max_header_list_size)
        l->max_header_list_size = d.max_header_list_size;
    if (!l->initial_window_size)
        l->initial_window_size = d.initial_window_size;
    if (!l->connection_window_size)
        l->connection_window_size = d.connection_window_size;
    if (!l->max_continuations)
        l->max_continuations = d.max_continuations;
    if (!l->max_resets_per_second)
        l->max_resets_per_second = d.max_resets_per_second;
    if (!l->max_settings)
        l->max_settings = d.max_settings;
    if (!l->max_control_frames)
        l->max_control_frames = d.max_control_frames;
    if (!l->hpack_table_size)
        l->hpack_table_size = d.hpack_table_size;
    if (l->initial_window_size > NGHTTP2_MAX_WINDOW_SIZE)
        l->initial_window_size = NGHTTP2_MAX_WINDOW_SIZE;
    if (l->connection_window_size > NGHTTP2_MAX_WINDOW_SIZE)
        l->connection_window_size = NGHTTP2_MAX_WINDOW_SIZE;
}

static nghttp2_session *session_create(struct tr_h2 *h2)
{
    nghttp2_session_callbacks *cb;
    nghttp2_option *opt;
    nghttp2_session *s = NULL;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return NULL;
    if (nghttp2_option_new(&opt) != 0) {
        nghttp2_session_callbacks_del(cb);
        return NULL;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers_cb);
    nghttp2_session_callbacks_set_on_header_callback2(cb, on_header_cb);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_cb);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv_cb);
    nghttp2_session_callbacks_set_on_invalid_frame_recv_callback(cb, on_invalid_frame_cb);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close_cb);
    nghttp2_session_callbacks_set_before_frame_send_callback(cb, before_frame_send_cb);
    nghttp2_session_callbacks_set_on_frame_not_send_callback(cb, on_frame_not_send_cb);

    const struct tr_h2_limits *l = &h2->lim;
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_max_settings(opt, l->max_settings);
    nghttp2_option_set_max_outbound_ack(opt, l->max_control_frames);
    nghttp2_option_set_max_continuations(opt, l->max_continuations);
    /* nghttp2's own limiter (GOAWAY INTERNAL_ERROR) only backs ours up: with
     * twice the burst and a refill once per second it never trips before
     * ours, which refills continuously and answers ENHANCE_YOUR_CALM. */
    nghttp2_option_set_stream_reset_rate_limit(opt, 2 * (uint64_t)l->max_resets_per_second,
                                               l->max_resets_per_second);
    /* Our encoder's table: a peer advertising a huge table cannot make us
     * keep more than we let our own decoder keep. */
    nghttp2_option_set_max_deflate_dynamic_table_size(opt, l->hpack_table_size);
    nghttp2_option_set_no_closed_streams(opt, 1);
    nghttp2_option_set_max_reserved_remote_streams(opt, 0);

    int rv = h2->role == TR_H2_SERVER ? nghttp2_session_server_new2(&s, cb, h2, opt)
                                      : nghttp2_session_client_new2(&s, cb, h2, opt);
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cb);
    if (rv != 0)
        return NULL;

    nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, l->max_concurrent_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, l->initial_window_size},
        {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, l->max_header_list_size},
        {NGHTTP2_SETTINGS_HEADER_TABLE_SIZE, l->hpack_table_size},
        {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
        /* No RFC 7540 priority tree: PRIORITY frames cost us nothing. */
        {NGHTTP2_SETTINGS_NO_RFC7540_PRIORITIES, 1},
    };
    rv = nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, iv, sizeof iv / sizeof iv[0]);
    if (rv == 0 && l->connection_window_size != NGHTTP2_INITIAL_CONNECTION_WINDOW_SIZE)
        rv = nghttp2_session_set_local_window_size(s, NGHTTP2_FLAG_NONE, 0,
                                                   (int32_t)l->connection_window_size);
    if (rv != 0) {
        nghttp2_session_del(s);
        return NULL;
    }
    return s;
}

struct tr_h2 *tr_h2_new(enum tr_h2_role role, const struct tr_h2_limits *lim,
                        const struct tr_h2_ops *ops, void *owner)
{
    struct tr_h2 *h2 = calloc(1, sizeof *h2);
    if (!h2)
        return NULL;
    h2->role = role;
    h2->lim = lim ? *lim : TR_H2_LIMITS_DEFAULT;
    apply_defaults(&h2->lim);
    if (ops)
        h2->ops = *ops;
    h2->owner = owner;
    h2->rst_tokens = (uint64_t)h2->lim.max_resets_per_second * 1000u;
    h2->rst_last_ms = now_ms();
    h2->s = session_create(h2);
    if (!h2->s) {
        free(h2);
        return NULL;
    }
    return h2;
}

void tr_h2_free(struct tr_h2 *h2)
{
    if (!h2)
        return;
    hdr_reset(h2);
    nghttp2_session_del(h2->s);
    while (h2->streams)
        stream_free(h2, h2->streams);
    free(h2->hv);
    free(h2->hrc);
    free(h2->obuf);
    free(h2);
}

/* ---- bytes in and out ---- */

/* Pull the non-DATA frames nghttp2 has queued into obuf (see PUMP_MAX). */
static void pump(struct tr_h2 *h2)
{
    if (h2->dead || !nghttp2_session_want_write(h2->s))
        return;
    /* The unsent tail of a frame must not block the lookahead: keep it. */
    if (h2->rem_len) {
        if (!obuf_append(h2, h2->rem, h2->rem_len))
            return;
        h2->carry += h2->rem_len; /* obuf was empty when rem was set */
        h2->rem = NULL;
        h2->rem_len = 0;
    }
    h2->pumping = true;
    while (h2->olen - h2->ooff - h2->carry < PUMP_MAX && nghttp2_session_want_write(h2->s)) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(h2->s, &p);
        if (n <= 0 || h2->dead) {
            /* A chunk produced while a callback hit a fatal error is dropped:
             * nothing may follow our GOAWAY. */
            h2->pumping = false;
            if (n < 0)
                go_dead(h2, fatal_code(h2, (int)n));
            return;
        }
        if (!obuf_append(h2, p, (size_t)n)) {
            /* Keep the chunk in nghttp2's buffer instead. */
            h2->rem = p;
            h2->rem_len = (size_t)n;
            break;
        }
    }
    h2->pumping = false;
}

ssize_t tr_h2_feed(struct tr_h2 *h2, const uint8_t *in, size_t len)
{
    if (h2->failed)
        return TR_H2_E_CLOSE;
    if (h2->busy)
        return TR_H2_E_INVALID;
    h2->busy = true;
    ssize_t rv = nghttp2_session_mem_recv(h2->s, in, len);
    if (rv < 0)
        go_dead(h2, fatal_code(h2, (int)rv)); /* drops the held chunk: no session calls now */
    else
        flush_pending(h2); /* the held chunk points into `in` */
    pump(h2);
    h2->busy = false;
    if (h2->failed)
        return TR_H2_E_CLOSE;
    reap_refused(h2);
    check_writable(h2);
    return rv;
}

size_t tr_h2_output(struct tr_h2 *h2, uint8_t *out, size_t size)
{
    if (h2->busy || size == 0)
        return 0;
    h2->busy = true;
    size_t n = 0;
    for (;;) {
        if (h2->ooff < h2->olen) {
            size_t c = h2->olen - h2->ooff < size - n ? h2->olen - h2->ooff : size - n;
            memcpy(out + n, h2->obuf + h2->ooff, c);
            h2->ooff += c;
            h2->carry -= c < h2->carry ? c : h2->carry;
            n += c;
        }
        if (h2->ooff == h2->olen) {
            h2->ooff = h2->olen = h2->carry = 0;
            if (h2->ocap > 2048) { /* drained after a burst: idle connections stay small */
                free(h2->obuf);
                h2->obuf = NULL;
                h2->ocap = 0;
            }
        }
        if (n == size || h2->dead)
            break;
        if (h2->rem_len) {
            size_t c = h2->rem_len < size - n ? h2->rem_len : size - n;
            memcpy(out + n, h2->rem, c);
            h2->rem += c;
            h2->rem_len -= c;
            n += c;
            if (n == size)
                break;
        }
        const uint8_t *p;
        ssize_t r = nghttp2_session_mem_send(h2->s, &p);
        if (r < 0 || h2->dead) {
            go_dead(h2, fatal_code(h2, (int)r));
            continue; /* hand out our GOAWAY, drop the chunk */
        }
        if (r == 0)
            break;
        h2->rem = p;
        h2->rem_len = (size_t)r;
    }
    h2->busy = false;
    reap_refused(h2);
    check_writable(h2);
    return n;
}

bool tr_h2_want_write(const struct tr_h2 *h2)
{
    return h2->ooff < h2->olen || h2->rem_len > 0 ||
           (!h2->dead && nghttp2_session_want_write(h2->s));
}

bool tr_h2_alive(const struct tr_h2 *h2)
{
    return !h2->failed && (tr_h2_want_write(h2) || nghttp2_session_want_read(h2->s));
}

/* ---- submitting ---- */

/* Checks outgoing fields and builds the nghttp2 array (nv_stack or heap). */
/* Outgoing field checks (RFC 9113 8.2.1), one table lookup per byte: the
 * same rules as nghttp2_check_header_name / _value_rfc9113, at a fraction
 * of the cost on the request path. */
enum { FC_NAME = 1, FC_VALUE = 2 };
static const uint8_t field_class[256] = {
    ['\t'] = FC_VALUE,          [' '] = FC_VALUE,           ['!'] = FC_NAME | FC_VALUE,
    ['"'] = FC_VALUE,           ['#'] = FC_NAME | FC_VALUE, ['$'] = FC_NAME | FC_VALUE,
    ['%'] = FC_NAME | FC_VALUE, ['&'] = FC_NAME | FC_VALUE, ['\''] = FC_NAME | FC_VALUE,
    ['('] = FC_VALUE,           [')'] = FC_VALUE,           ['*'] = FC_NAME | FC_VALUE,
    ['+'] = FC_NAME | FC_VALUE, [','] = FC_VALUE,           ['-'] = FC_NAME | FC_VALUE,
    ['.'] = FC_NAME | FC_VALUE, ['/'] = FC_VALUE,           ['0' ... '9'] = FC_NAME | FC_VALUE,
    [':' ... '@'] = FC_VALUE,   ['A' ... 'Z'] = FC_VALUE,   ['['] = FC_VALUE,
    ['\\'] = FC_VALUE,          [']'] = FC_VALUE,           ['^'] = FC_NAME | FC_VALUE,
    ['_'] = FC_NAME | FC_VALUE, ['`'] = FC_NAME | FC_VALUE, ['a' ... 'z'] = FC_NAME | FC_VALUE,
    ['{'] = FC_VALUE,           ['|'] = FC_NAME | FC_VALUE, ['}'] = FC_VALUE,
    ['~'] = FC_NAME | FC_VALUE, [0x80 ... 0xff] = FC_VALUE,
};

/* A lowercase token. */
static bool name_valid(const uint8_t *p, size_t n)
{
    uint8_t acc = FC_NAME;
    for (size_t i = 0; i < n; i++)
        acc &= field_class[p[i]];
    return n > 0 && acc != 0;
}

/* field-vchar, SP and HTAB, not starting or ending with whitespace. */
static bool value_valid(const uint8_t *p, size_t n)
{
    if (n == 0)
        return true;
    if (p[0] == ' ' || p[0] == '\t' || p[n - 1] == ' ' || p[n - 1] == '\t')
        return false;
    uint8_t acc = FC_VALUE;
    for (size_t i = 0; i < n; i++)
        acc &= field_class[p[i]];
    return acc != 0;
}

static int make_nv(const struct tr_h2_header *h, size_t n, nghttp2_nv *nv_stack, nghttp2_nv **out)
{
    if (n > 0 && !h)
        return TR_H2_E_INVALID;
    nghttp2_nv *nv = n <= NV_STACK ? nv_stack : malloc(n * sizeof *nv);
    if (!nv)
        return TR_H2_E_NOMEM;
    bool regular_seen = false;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *name = (const uint8_t *)h[i].name.p;
        const uint8_t *value = (const uint8_t *)h[i].value.p;
        size_t nl = h[i].name.len, vl = h[i].value.len;
        bool pseudo = nl > 0 && name[0] == ':';
        bool ok = nl > 0 && (vl == 0 || value) && (!pseudo || !regular_seen) &&
                  name_valid(pseudo ? name + 1 : name, pseudo ? nl - 1 : nl) &&
                  value_valid(value, vl);
        if (!ok) {
            if (nv != nv_stack)
                free(nv);
            return TR_H2_E_INVALID;
        }
        regular_seen |= !pseudo;
        nv[i] = (nghttp2_nv){(uint8_t *)(uintptr_t)name, (uint8_t *)(uintptr_t)value, nl, vl,
                             NGHTTP2_NV_FLAG_NONE};
    }
    *out = nv;
    return 0;
}

static void free_nv(nghttp2_nv *nv, nghttp2_nv *nv_stack)
{
    if (nv != nv_stack)
        free(nv);
}

static nghttp2_data_provider provider(struct tr_h2_stream *st)
{
    nghttp2_data_provider prd;
    prd.source.ptr = st;
    prd.read_callback = data_read_cb;
    return prd;
}

int32_t tr_h2_submit_request(struct tr_h2 *h2, const struct tr_h2_header *h, size_t n,
                             bool end_stream)
{
    if (h2->role != TR_H2_CLIENT)
        return TR_H2_E_INVALID;
    if (h2->failed)
        return TR_H2_E_CLOSE;
    if (!nghttp2_session_check_request_allowed(h2->s))
        return TR_H2_E_REFUSED;
    nghttp2_nv stack[NV_STACK], *nv;
    int rv = make_nv(h, n, stack, &nv);
    if (rv != 0)
        return rv;
    struct tr_h2_stream *st = stream_new(h2, 0);
    if (!st) {
        free_nv(nv, stack);
        return TR_H2_E_NOMEM;
    }
    nghttp2_data_provider prd = provider(st);
    int32_t id = nghttp2_submit_request(h2->s, NULL, nv, n, end_stream ? NULL : &prd, st);
    free_nv(nv, stack);
    if (id < 0) {
        h2->stats.streams_opened--;
        stream_free(h2, st);
        return submit_failed(h2, id);
    }
    st->id = id;
    st->attached = !end_stream;
    st->local_done = end_stream;
    return id;
}

int tr_h2_submit_headers(struct tr_h2 *h2, int32_t stream_id, const struct tr_h2_header *h,
                         size_t n, bool end_stream)
{
    if (h2->role != TR_H2_SERVER)
        return TR_H2_E_INVALID;
    if (h2->failed)
        return TR_H2_E_CLOSE;
    struct tr_h2_stream *st = find_stream(h2, stream_id);
    if (!st)
        return missing_stream(h2, stream_id);
    bool info = is_informational(h, n);
    if (st->final_sent || st->local_done || (info && end_stream))
        return TR_H2_E_INVALID;
    nghttp2_nv stack[NV_STACK], *nv;
    int rv = make_nv(h, n, stack, &nv);
    if (rv != 0)
        return rv;
    if (info) {
        rv = nghttp2_submit_headers(h2->s, NGHTTP2_FLAG_NONE, stream_id, NULL, nv, n, NULL);
    } else {
        nghttp2_data_provider prd = provider(st);
        rv = nghttp2_submit_response(h2->s, stream_id, nv, n, end_stream ? NULL : &prd);
    }
    free_nv(nv, stack);
    if (rv != 0)
        return submit_failed(h2, rv);
    if (!info) {
        st->final_sent = true;
        st->attached = !end_stream;
        st->local_done = end_stream;
    }
    return 0;
}

static void resume(struct tr_h2 *h2, struct tr_h2_stream *st)
{
    if (!st->deferred)
        return;
    st->deferred = false;
    check_fatal(h2, nghttp2_session_resume_data(h2->s, st->id));
}

ssize_t tr_h2_send_data(struct tr_h2 *h2, int32_t stream_id, const uint8_t *data, size_t len,
                        bool end_stream)
{
    if (h2->failed)
        return TR_H2_E_CLOSE;
    struct tr_h2_stream *st = find_stream(h2, stream_id);
    if (!st)
        return missing_stream(h2, stream_id);
    if (!st->attached || st->eof || (len && !data))
        return TR_H2_E_INVALID;
    size_t take = stream_room(h2, st);
    if (take > len)
        take = len;
    if (take && !q_reserve(st, (uint32_t)take))
        return TR_H2_E_NOMEM;
    if (take) {
        q_push(st, data, (uint32_t)take);
        h2->total_q += take;
    }
    if (take == len && end_stream) {
        st->eof = true;
        st->local_done = true;
    }
    if (take < len && !st->blocked) {
        st->blocked = true;
        h2->nblocked++;
    }
    if (take || st->eof)
        resume(h2, st);
    return h2->dead ? TR_H2_E_CLOSE : (ssize_t)take;
}

int tr_h2_submit_trailers(struct tr_h2 *h2, int32_t stream_id, const struct tr_h2_header *h,
                          size_t n)
{
    if (h2->failed)
        return TR_H2_E_CLOSE;
    struct tr_h2_stream *st = find_stream(h2, stream_id);
    if (!st)
        return missing_stream(h2, stream_id);
    if (!st->attached || st->eof)
        return TR_H2_E_INVALID;
    for (size_t i = 0; i < n; i++)
        if (h[i].name.len && h[i].name.p[0] == ':')
            return TR_H2_E_INVALID; /* no pseudo-headers in trailers */
    nghttp2_nv stack[NV_STACK], *nv;
    int rv = make_nv(h, n, stack, &nv);
    if (rv != 0)
        return rv;
    /* Copy: the trailers go out from the read callback, after the queue. */
    size_t bytes = n * sizeof(nghttp2_nv);
    for (size_t i = 0; i < n; i++)
        bytes += nv[i].namelen + nv[i].valuelen;
    struct trailers *tr = malloc(sizeof *tr + bytes);
    if (!tr) {
        free_nv(nv, stack);
        return TR_H2_E_NOMEM;
    }
    tr->nv = (nghttp2_nv *)(tr + 1);
    tr->n = n;
    uint8_t *p = (uint8_t *)(tr->nv + n);
    for (size_t i = 0; i < n; i++) {
        tr->nv[i] = nv[i];
        tr->nv[i].name = p;
        memcpy(p, nv[i].name, nv[i].namelen);
        p += nv[i].namelen;
        tr->nv[i].value = p;
        if (nv[i].valuelen)
            memcpy(p, nv[i].value, nv[i].valuelen);
        p += nv[i].valuelen;
    }
    free_nv(nv, stack);
    st->tr = tr;
    st->eof = true;
    st->local_done = true;
    resume(h2, st);
    return h2->dead ? TR_H2_E_CLOSE : 0;
}

int tr_h2_reset_stream(struct tr_h2 *h2, int32_t stream_id, uint32_t error_code)
{
    if (h2->failed)
        return TR_H2_E_CLOSE;
    struct tr_h2_stream *st = find_stream(h2, stream_id);
    if (!st)
        return missing_stream(h2, stream_id);
    st->rx_dead = true;
    st->owner_reset = true;
    st->owner_code = error_code;
    int rv = nghttp2_submit_rst_stream(h2->s, NGHTTP2_FLAG_NONE, stream_id, error_code);
    if (rv != 0)
        return submit_failed(h2, rv);
    return 0;
}

void tr_h2_consume(struct tr_h2 *h2, int32_t stream_id, size_t len)
{
    if (h2->dead)
        return;
    struct tr_h2_stream *st = find_stream(h2, stream_id);
    if (!st)
        return;
    size_t n = len < st->unconsumed ? len : (size_t)st->unconsumed;
    if (!n)
        return;
    st->unconsumed -= n;
    h2->unconsumed -= n;
    check_fatal(h2, nghttp2_session_consume(h2->s, stream_id, n));
}

int tr_h2_goaway(struct tr_h2 *h2, uint32_t error_code)
{
    if (h2->failed)
        return TR_H2_E_CLOSE;
    int rv =
        nghttp2_submit_goaway(h2->s, NGHTTP2_FLAG_NONE,
                              nghttp2_session_get_last_proc_stream_id(h2->s), error_code, NULL, 0);
    if (rv != 0)
        return submit_failed(h2, rv);
    h2->user_goaways++;
    return 0;
}

void tr_h2_get_stats(const struct tr_h2 *h2, struct tr_h2_stats *out)
{
    *out = h2->stats;
}

int tr_h2_set_stream_user(struct tr_h2 *h2, int32_t stream_id, void *p)
{
    if (stream_id != 0 && stream_id == h2->closing_id) {
        h2->closing_user = p;
        return 0;
    }
    struct tr_h2_stream *st = find_stream(h2, stream_id);
    if (st == NULL)
        return TR_H2_E_INVALID;
    st->user = p;
    return 0;
}

void *tr_h2_stream_user(const struct tr_h2 *h2, int32_t stream_id)
{
    if (stream_id != 0 && stream_id == h2->closing_id)
        return h2->closing_user;
    struct tr_h2_stream *st = find_stream((struct tr_h2 *)h2, stream_id);
    return st != NULL ? st->user : NULL;
}
