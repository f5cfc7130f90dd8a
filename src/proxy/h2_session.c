/* proxy/h2_session.c: an HTTP/2 downstream connection.
 *
 * The codec (codec/h2) turns bytes into events; each request becomes a
 * tr_stream (proxy/stream.h) that routes it and drives its upstream side.
 * This file only moves bytes and events between the socket, the codec and
 * the streams:
 *   socket -> rx -> tr_h2_feed -> on_headers/on_data -> tr_stream_*
 *   tr_stream -> tr_h2_submit_* / tr_h2_send_data -> tr_h2_output -> out -> socket
 * Output is written once per event batch (a deferred flush), so the frames of
 * many streams answered in one batch share a write and a TLS record.
 *
 * Memory per connection: the codec (bounded by its limits), one read buffer,
 * one 16 KiB output staging buffer, and per open stream at most one window of
 * pending bytes per direction (proxy/stream.h).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "proxy/session.h"
#include "proxy/stream.h"

#define OUT_SIZE (16u * 1024)

static void h2s_flush(struct tr_session *s);
static void h2s_flush_later(struct tr_deferred *d);

static struct tr_stream *stream_find(struct tr_session *s, int32_t id)
{
    struct tr_stream *st = tr_h2_stream_user(s->h2.codec, id);
    return st != NULL && st->id == id ? st : NULL;
}

static void stream_unlink(struct tr_session *s, struct tr_stream *st)
{
    if (s->h2.codec != NULL)
        tr_h2_set_stream_user(s->h2.codec, st->id, NULL);
    if (st->prev != NULL)
        st->prev->next = st->next;
    else
        s->h2.streams = st->next;
    if (st->next != NULL)
        st->next->prev = st->prev;
    st->prev = st->next = NULL;
    s->h2.n_streams--;
}

static void schedule_flush(struct tr_session *s)
{
    if (s->phase == TR_PH_H2)
        tr_loop_defer(s->w->loop, &s->h2.flush_later, h2s_flush_later);
}

/* The idle deadline runs while no stream is open (streams are bounded by
 * their route timeouts and by flow control, not by connection idleness:
 * a slow upstream or a quiet gRPC stream is not an idle connection). */
static void arm_idle(struct tr_session *s)
{
    if (s->h2.n_streams == 0)
        tr_timer_set(s->w->loop, &s->timer, s->lcfg->idle_timeout_ms);
    else
        tr_timer_cancel(s->w->loop, &s->timer);
}

/* ---- codec callbacks ---- */

static int on_headers(void *owner, int32_t id, const struct tr_h2_header *h, size_t n,
                      bool is_trailers, bool end_stream)
{
    struct tr_session *s = owner;
    if (is_trailers) {
        struct tr_stream *st = stream_find(s, id);
        if (st != NULL)
            tr_stream_req_trailers(st, h, n);
        return 0;
    }
    struct tr_stream *st = tr_stream_new(s, TR_SD_H2, id);
    if (st == NULL)
        return 1; /* reset: no memory for it */
    st->next = s->h2.streams;
    if (s->h2.streams != NULL)
        s->h2.streams->prev = st;
    s->h2.streams = st;
    s->h2.n_streams++;
    tr_h2_set_stream_user(s->h2.codec, id, st);
    arm_idle(s);
    tr_stream_request(st, h, n, end_stream);
    return 0;
}

static int on_data(void *owner, int32_t id, const uint8_t *data, size_t len, bool end_stream)
{
    struct tr_session *s = owner;
    struct tr_stream *st = stream_find(s, id);
    if (st == NULL)
        return 1;
    tr_stream_req_data(st, data, len, end_stream);
    return 0;
}

static void on_stream_close(void *owner, int32_t id, uint32_t error_code)
{
    struct tr_session *s = owner;
    struct tr_stream *st = stream_find(s, id);
    if (st == NULL)
        return;
    stream_unlink(s, st);
    tr_stream_down_close(st, error_code != 0 || !st->resp_out_end);
    arm_idle(s);
}

static void on_goaway(void *owner, int32_t last_stream_id, uint32_t error_code)
{
    struct tr_session *s = owner;
    (void)last_stream_id;
    (void)error_code;
    s->h2.goaway = true; /* the client is leaving: finish what is open, then close */
}

static void on_writable(void *owner, int32_t id)
{
    struct tr_session *s = owner;
    struct tr_stream *st = stream_find(s, id);
    if (st != NULL)
        tr_stream_resp_resume(st);
}

static const struct tr_h2_ops h2s_ops = {
    .on_headers = on_headers,
    .on_data = on_data,
    .on_stream_close = on_stream_close,
    .on_goaway = on_goaway,
    .on_writable = on_writable,
};

/* ---- the stream's downstream operations ---- */

static bool connection_field(tr_str name)
{
    return name.len > 0 && name.p[0] != ':' && tr_fields_is_hop_by_hop(name);
}

int tr_h2_session_resp_headers(struct tr_stream *st, const struct tr_h2_header *h, size_t n,
                               bool end)
{
    struct tr_session *s = st->s;
    /* Connection-specific fields cannot cross into HTTP/2 (an HTTP/1.1
     * upstream's were dropped when its head was converted). Usually there is
     * none and the list goes as it is; otherwise a copy without them, as
     * long as the list (no fixed array: nothing is ever cut off). */
    size_t drop = 0;
    for (size_t i = 0; i < n; i++)
        drop += connection_field(h[i].name);
    struct tr_h2_header *clean = NULL;
    if (drop > 0) {
        clean = malloc((n - drop) * sizeof(*clean) + 1);
        if (clean == NULL) {
            tr_h2_reset_stream(s->h2.codec, st->id, 2);
            schedule_flush(s);
            return -1;
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++)
            if (!connection_field(h[i].name))
                clean[m++] = h[i];
    }
    int rc = tr_h2_submit_headers(s->h2.codec, st->id, clean != NULL ? clean : h, n - drop, end);
    free(clean);
    schedule_flush(s);
    if (rc < 0) {
        tr_h2_reset_stream(s->h2.codec, st->id, 2);
        return -1;
    }
    return 0;
}

ssize_t tr_h2_session_resp_data(struct tr_stream *st, const uint8_t *p, size_t len, bool end)
{
    struct tr_session *s = st->s;
    ssize_t n = tr_h2_send_data(s->h2.codec, st->id, p, len, end);
    if (n > 0 || (end && n == 0 && len == 0))
        schedule_flush(s);
    return n < 0 ? -1 : n;
}

int tr_h2_session_resp_trailers(struct tr_stream *st, const struct tr_h2_header *h, size_t n)
{
    struct tr_session *s = st->s;
    int rc = tr_h2_submit_trailers(s->h2.codec, st->id, h, n);
    schedule_flush(s);
    return rc < 0 ? -1 : 0;
}

void tr_h2_session_reset(struct tr_stream *st, uint32_t code)
{
    struct tr_session *s = st->s;
    tr_h2_reset_stream(s->h2.codec, st->id, code);
    schedule_flush(s);
}

void tr_h2_session_consume(struct tr_stream *st, size_t n)
{
    struct tr_session *s = st->s;
    tr_h2_consume(s->h2.codec, st->id, n);
    schedule_flush(s);
}

/* ---- I/O ---- */

static void h2s_close(struct tr_session *s)
{
    tr_session_close(s);
}

static void h2s_flush(struct tr_session *s)
{
    struct tr_h2_down_state *h = &s->h2;
    for (;;) {
        if (h->out_off == h->out_len) {
            h->out_off = h->out_len = 0;
            h->out_len = (uint32_t)tr_h2_output(h->codec, (uint8_t *)h->out, OUT_SIZE);
            if (h->out_len == 0)
                break;
        }
        ssize_t n = tr_conn_write(&s->down, h->out + h->out_off, h->out_len - h->out_off);
        if (n == TR_AGAIN)
            return;
        if (n < 0) {
            h2s_close(s);
            return;
        }
        h->out_off += (uint32_t)n;
    }
    /* Everything is out: a finished connection ends here. */
    if (!tr_h2_alive(h->codec) || (h->goaway && h->n_streams == 0))
        h2s_close(s);
}

static void h2s_flush_later(struct tr_deferred *d)
{
    struct tr_session *s = tr_container_of(d, struct tr_session, h2.flush_later);
    if (s->phase == TR_PH_H2)
        h2s_flush(s);
}

/* Feed what is in rx, then read and feed until the socket is drained. */
static void h2s_read(struct tr_session *s)
{
    for (int guard = 0; guard < 64 && s->phase == TR_PH_H2; guard++) {
        if (s->rx != NULL && tr_buf_len(s->rx) > 0) {
            ssize_t fed =
                tr_h2_feed(s->h2.codec, (const uint8_t *)tr_buf_head(s->rx), tr_buf_len(s->rx));
            if (s->phase != TR_PH_H2)
                return;
            if (fed < 0) {
                struct tr_h2_stats st;
                tr_h2_get_stats(s->h2.codec, &st);
                tr_warn("listener %s: HTTP/2 connection from %s ended: protocol error %u",
                        s->lcfg->name, s->peer_ip, st.last_goaway_error);
                tr_metrics_count(s->w->metrics, TR_C_HTTP_PARSE_ERRORS, 1);
                s->h2.goaway = true;
                tr_buf_consume(s->rx, tr_buf_len(s->rx));
                h2s_flush(s); /* the GOAWAY, then close */
                if (s->phase == TR_PH_H2)
                    h2s_close(s);
                return;
            }
            tr_buf_consume(s->rx, (uint32_t)fed);
        }
        if (!tr_conn_readable(&s->down))
            return;
        if (s->rx == NULL && (s->rx = tr_buf_get(&s->w->bufs)) == NULL)
            return;
        tr_buf_compact(s->rx);
        ssize_t n = tr_conn_read(&s->down, tr_buf_tail(s->rx), tr_buf_room(s->rx));
        if (n == TR_AGAIN)
            break;
        if (n <= 0) {
            h2s_close(s);
            return;
        }
        s->rx->end += (uint32_t)n;
    }
    if (s->phase == TR_PH_H2 && s->rx != NULL && tr_buf_len(s->rx) == 0) {
        tr_buf_put(&s->w->bufs, s->rx);
        s->rx = NULL;
    }
}

static void h2s_drain(struct tr_session_link *l);

static void h2s_on_io(struct tr_io *io, uint32_t events)
{
    struct tr_session *s = tr_container_of(io, struct tr_session, down.io);
    tr_conn_on_events(&s->down, events);
    h2s_read(s);
    /* Its listener left the configuration (proxy/stream.c found out when a
     * stream started): the streams it has finish on the old configuration,
     * and the client takes new ones elsewhere, as on drain. */
    if (s->phase == TR_PH_H2 && s->h2.listener_gone && !s->h2.goaway)
        h2s_drain(&s->link);
    if (s->phase == TR_PH_H2)
        h2s_flush(s);
}

static void h2s_on_timer(struct tr_timer *t)
{
    struct tr_session *s = tr_container_of(t, struct tr_session, timer);
    /* Idle: say goodbye properly, then go. */
    tr_h2_goaway(s->h2.codec, 0);
    s->h2.goaway = true;
    h2s_flush(s);
    if (s->phase == TR_PH_H2)
        h2s_close(s);
}

static void h2s_drain(struct tr_session_link *l)
{
    struct tr_session *s = tr_container_of(l, struct tr_session, link);
    s->draining = true;
    if (s->phase != TR_PH_H2)
        return;
    /* GOAWAY with the last stream we took: open streams finish, new ones
     * go elsewhere. */
    tr_h2_goaway(s->h2.codec, 0);
    s->h2.goaway = true;
    h2s_flush(s);
}

void tr_h2_session_release(struct tr_session *s)
{
    struct tr_h2_down_state *h = &s->h2;
    /* Streams still open lose their client. */
    while (h->streams != NULL) {
        struct tr_stream *st = h->streams;
        stream_unlink(s, st);
        tr_stream_down_close(st, true);
    }
    tr_h2_free(h->codec);
    h->codec = NULL;
    free(h->out);
    h->out = NULL;
}

void tr_h2_session_start(struct tr_session *s)
{
    memset(&s->h2, 0, sizeof(s->h2));
    struct tr_h2_limits lim = s->ws->snap->h2_limits;
    s->h2.codec = tr_h2_new(TR_H2_SERVER, &lim, &h2s_ops, s);
    s->h2.out = malloc(OUT_SIZE);
    if (s->h2.codec == NULL || s->h2.out == NULL) {
        tr_h2_free(s->h2.codec);
        free(s->h2.out);
        s->h2.codec = NULL;
        s->h2.out = NULL;
        tr_session_close(s);
        return;
    }
    s->phase = TR_PH_H2;
    s->down.io.cb = h2s_on_io;
    s->timer.cb = h2s_on_timer;
    s->link.drain = h2s_drain;
    s->labels.protocol = TR_REQ_PROTO_HTTP2;
    arm_idle(s);
    if (s->draining) {
        tr_h2_goaway(s->h2.codec, 0);
        s->h2.goaway = true;
    }
    h2s_read(s);
    if (s->phase == TR_PH_H2)
        h2s_flush(s);
}
