/* proxy/session.h: one downstream connection, from accept to close.
 *
 * Phases: DETECT (sniff TLS / HTTP / opaque), HANDSHAKE (server-side mTLS),
 * then HTTP (proxy/http_session.c) or TCP (proxy/tcp_session.c). One
 * allocation per connection holds every phase's state, so its memory is
 * fixed and known: sizeof(struct tr_session) plus at most one pool buffer per
 * direction while bytes are in flight (and TLS state for mTLS peers).
 */
#ifndef TR_PROXY_SESSION_H
#define TR_PROXY_SESSION_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#include "codec/h1/h1.h"
#include "config/model.h"
#include "core/buf.h"
#include "event/loop.h"
#include "filter/route_action.h"
#include "obs/metrics.h"
#include "runtime/worker.h"
#include "transport/transport.h"
#include "upstream/h1_body.h"
#include "upstream/h1_client.h"
#include "upstream/retry.h"

struct tr_upstream;
struct tr_endpoint_rt;
struct tr_cluster_rt;

enum tr_session_phase {
    TR_PH_DETECT = 0,
    TR_PH_HANDSHAKE,
    TR_PH_HTTP,
    TR_PH_TCP,
    TR_PH_H2,
    TR_PH_CLOSED,
};
const char *tr_session_phase_name(enum tr_session_phase p);

enum tr_http_rq_state {
    TR_RQ_HEAD = 0, /* waiting for a request head */
    TR_RQ_BODY,     /* forwarding the request body */
    TR_RQ_DONE,     /* request fully forwarded (or answered locally) */
    TR_RQ_TUNNEL,   /* after 101: raw bytes */
};

enum tr_http_rs_state {
    TR_RS_NONE = 0, /* no response expected yet */
    TR_RS_WAIT,     /* waiting for the upstream connection */
    TR_RS_HEAD,     /* reading the response head */
    TR_RS_BODY,     /* forwarding the response body */
    TR_RS_DONE,     /* response complete (upstream or local) */
    TR_RS_TUNNEL,
};

struct tr_http_state {
    uint8_t rq;      /* enum tr_http_rq_state */
    uint8_t rs;      /* enum tr_http_rs_state */
    bool keep_alive; /* downstream connection may carry another request */
    bool version10;  /* downstream spoke HTTP/1.0 */
    bool is_head;
    bool upgrade;     /* request asked to upgrade */
    bool retryable;   /* the whole request so far is in reqout (held for a re-send) */
    bool dechunk;     /* HTTP/1.0 client: strip chunked framing */
    bool local_reply; /* the response is ours, not the upstream's */
    bool got_response_byte;
    bool lingering; /* response sent, discarding input before close */
    bool logged;    /* this request is counted in metrics and the access log */
    uint8_t method_id;
    size_t head_scanned;
    struct tr_h1_body_state req_body; /* relayed upstream, or decoded for a stream */
    struct tr_buf *reqout;            /* rewritten head (+ body start) for the upstream */
    uint32_t reqout_sent;
    struct tr_buf *resp;    /* bytes from the upstream */
    struct tr_h1_client uc; /* the upstream connection (upstream/h1_client.h) */
    struct tr_cluster_rt *cluster;
    /* Retries and mirroring (upstream/retry.h, upstream/mirror.h). */
    struct tr_retry_state rt;  /* the route's retry policy for this request */
    bool hold_body;            /* the policy wants the body held in reqout for a retry */
    uint32_t body_held;        /* body bytes in reqout */
    struct tr_mirror *mirrors; /* shadows of this request until it is complete */
    uint64_t lb_hash;          /* consistent hashing: proxy/decide.h */
    uint64_t lb_cookie;        /* nonzero: a generated cookie goes on the response */
    const void *route;         /* const struct tr_route_cfg * */
    const struct tr_header_edit *resp_edit; /* the route's response edits, NULL: none */
    struct tr_stream *stream; /* the request goes to an HTTP/2 upstream (proxy/stream.h) */
    bool resp_rechunk;        /* stream: the response is sent chunked */
    bool resp_until_close;    /* stream: ... or ends with the connection */
    bool stream_blocked;      /* stream: tx was full, resume once it drains */
    uint64_t start_us;
    uint64_t req_bytes;
    uint64_t resp_bytes;
    uint16_t status;
    uint16_t flags;           /* TR_RF_* */
    const char *authz_policy; /* the policy that denied (access log), else NULL */
    int authz_rule;
    uint32_t requests;   /* served on this connection */
    const char *peer_id; /* upstream's verified SPIFFE ID */
    char request_id[40];
    char method[16];
    char path[256]; /* for the access log; truncated */
    char authority[128];
    bool log_cut; /* method, path or authority was longer than kept above */
    /* Local route actions (filter/route_action.h): a fault delay holds the
     * request (nothing moves until the timer; then the answer already in
     * tx goes out, or the upstream request starts); an allowed CORS origin
     * gives the response its CORS fields. */
    bool fault_wait;
    struct tr_cors_echo cors;
    /* External authorization (upstream/ext_authz.h): while the check is in
     * flight (ext_authz_wait) nothing moves and the request head stays in
     * rx, to be handled again (head_len bytes) with the check's outcome;
     * the check lives until the request ends (its edits with it). */
    struct tr_ext_authz_check *ext_authz;
    bool ext_authz_wait;
    uint32_t ext_authz_head_len;
};

struct tr_tcp_state {
    struct tr_upstream *up;
    struct tr_buf *up_rx; /* upstream -> downstream when not splicing */
    int pipe_du[2];       /* splice: downstream -> upstream */
    int pipe_ud[2];       /* splice: upstream -> downstream */
    uint32_t pipe_du_bytes;
    uint32_t pipe_ud_bytes;
    bool splice;
    bool connected;
    uint8_t attempts;         /* endpoints tried (upstream/attempt.h) */
    bool overflow;            /* a connection limit refused the connection: UO */
    const char *authz_policy; /* the policy that denied (access log), else NULL */
    int authz_rule;
    uint64_t lb_hash;        /* consistent hashing: the client's address (source_ip) */
    bool down_eof, up_eof;   /* read side saw EOF */
    bool up_shut, down_shut; /* we half-closed that side's write */
    uint64_t sent, received;
    struct tr_cluster_rt *cluster; /* picked for this connection (tcp_clusters: by weight) */
    const char *peer_id;           /* upstream's verified SPIFFE ID (interned) */
    const char *upstream;          /* address of the endpoint last tried, for the access log */
    uint64_t start_us;             /* when proxying began, for the access log */
    /* Capture passthrough (listener/capture.h): no cluster, a connection of
     * our own to the original destination instead of a pooled upstream. */
    bool passthrough;
    struct tr_conn pt;
    char pt_addr[56]; /* the original destination, "ip:port" */
};

/* An HTTP/2 downstream connection (proxy/h2_session.c). */
struct tr_h2_down_state {
    struct tr_h2 *codec;
    struct tr_stream *streams; /* open streams, newest first */
    uint32_t n_streams;
    char *out; /* codec output staged for one write */
    uint32_t out_off, out_len;
    bool goaway;        /* GOAWAY sent: close once the last stream ends */
    bool listener_gone; /* a reload removed our listener: GOAWAY after this read batch */
    struct tr_deferred flush_later;
};

struct tr_session {
    struct tr_conn down;
    struct tr_session_link link;
    struct tr_worker *w;
    struct tr_wsnap *ws;
    const struct tr_listener_cfg *lcfg;
    int lidx;
    enum tr_session_phase phase;
    bool draining;
    bool closing; /* flush tx, then close */
    struct sockaddr_storage peer;
    char peer_ip[48];
    const char *principal;          /* verified peer SPIFFE ID (interned), NULL if plaintext */
    struct tr_metric_labels labels; /* per connection: listener's plus the peer */
    struct tr_timer timer;
    struct tr_deferred free_later;
    struct tr_deferred pump_later; /* continue work on the next loop turn */
    struct tr_buf *rx;             /* bytes from downstream */
    struct tr_buf *tx;             /* bytes to downstream (heads, local replies) */
    /* TLS passthrough by SNI (listeners[].sni_routes): the rule the
     * ClientHello chose, -1: the listener's tcp_cluster(s), if any; a
     * malformed ClientHello is closed (DPE). */
    int16_t sni_route;
    bool sni_malformed;
    /* The ClientHello's server name while the connection's TCP session
     * starts (authorization's connection.sni); it points into the peek
     * buffer, so it is cleared when that start returns. */
    tr_str peeked_sni;
    /* A captured connection's original destination (has_orig_dst): where
     * an original_destination cluster sends its requests. */
    bool has_orig_dst;
    struct sockaddr_storage orig_dst;
    union {
        struct tr_http_state http;
        struct tr_tcp_state tcp;
        struct tr_h2_down_state h2;
    };
};

static inline const struct sockaddr_storage *tr_session_orig_dst(const struct tr_session *s)
{
    return s->has_orig_dst ? &s->orig_dst : NULL;
}

/* Entry points for each phase, called by the listener. */
void tr_http_session_start(struct tr_session *s);
void tr_tcp_session_start(struct tr_session *s);
/* A captured connection no virtual listener claims, with the capture
 * listener's unmatched: passthrough: relay it to dst as it is (Istio's
 * PassthroughCluster). */
void tr_tcp_session_start_passthrough(struct tr_session *s, const struct sockaddr_storage *dst);
/* Whether a listener has somewhere to send opaque TCP connections: its
 * tcp_cluster or tcp_clusters (an auto listener without either closes
 * them). */
static inline bool tr_tcp_session_has_destination(const struct tr_listener_cfg *l)
{
    return l->tcp_cluster >= 0 || l->n_tcp_clusters > 0;
}
/* HTTP/2: after ALPN "h2", or when an HTTP/1 listener sees the client
 * preface (the bytes already read are in s->rx). */
void tr_h2_session_start(struct tr_session *s);
void tr_h2_session_release(struct tr_session *s);

/* The downstream side of a tr_stream (proxy/stream.h), per protocol: the
 * response head, body and trailers; a reset; request bytes acknowledged
 * (HTTP/2: WINDOW_UPDATE) or room to read more (HTTP/1: wake). */
struct tr_stream;
struct tr_h2_header;
int tr_h2_session_resp_headers(struct tr_stream *st, const struct tr_h2_header *h, size_t n,
                               bool end);
ssize_t tr_h2_session_resp_data(struct tr_stream *st, const uint8_t *p, size_t len, bool end);
int tr_h2_session_resp_trailers(struct tr_stream *st, const struct tr_h2_header *h, size_t n);
void tr_h2_session_reset(struct tr_stream *st, uint32_t code);
void tr_h2_session_consume(struct tr_stream *st, size_t n);
int tr_http_session_resp_headers(struct tr_stream *st, const struct tr_h2_header *h, size_t n,
                                 bool end);
ssize_t tr_http_session_resp_data(struct tr_stream *st, const uint8_t *p, size_t len, bool end);
int tr_http_session_resp_trailers(struct tr_stream *st, const struct tr_h2_header *h, size_t n);
void tr_http_session_reset(struct tr_stream *st);
void tr_http_session_wake(struct tr_stream *st);

/* Release what a phase holds (upstream connection, buffers); idempotent.
 * Called by tr_session_close. */
void tr_http_session_release(struct tr_session *s);
void tr_tcp_session_release(struct tr_session *s);

/* Close now and free after this event batch. */
void tr_session_close(struct tr_session *s);

#endif
