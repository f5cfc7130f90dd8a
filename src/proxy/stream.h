/* proxy/stream.h: one HTTP exchange (a request and its response) where at
 * least one side speaks HTTP/2.
 *
 * The HTTP/1.1-to-HTTP/1.1 path stays in proxy/http_session.c, which forwards
 * bytes without ever turning a message into a header list. Everything else
 * goes through a tr_stream:
 *
 *   downstream side                      upstream side
 *   TR_SD_H2: a stream of an HTTP/2      TR_SU_H2: a stream of a multiplexed
 *     connection (proxy/h2_session.c)      connection (upstream/h2_upconn.h)
 *   TR_SD_H1: an HTTP/1.1 connection     TR_SU_H1: a pooled HTTP/1.1
 *     whose route leads to HTTP/2          connection, one request at a time
 *
 * Both sides speak header lists (filter/fields.h) and body chunks. Bodies are
 * pushed: each side offers bytes, the other takes what it can now, and the
 * stream keeps the rest in a pending buffer and stops the producer. For an
 * HTTP/2 producer the pending bytes are not acknowledged (no WINDOW_UPDATE)
 * until they move on, so a slow reader stops the writer at its flow-control
 * window: per stream and direction, memory is bounded by that window (or by
 * one read for HTTP/1.1 producers), never by the body size.
 *
 * A stream is one allocation. It is freed (after the event batch) once both
 * sides are done with it.
 */
#ifndef TR_PROXY_STREAM_H
#define TR_PROXY_STREAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/h1/h1.h"
#include "codec/h2/h2.h"
#include "config/model.h"
#include "core/buf.h"
#include "event/loop.h"
#include "filter/fields.h"
#include "filter/route_action.h"
#include "upstream/h1_client.h"
#include "upstream/h2_upconn.h"
#include "upstream/retry.h"

struct tr_session;
struct tr_upstream;
struct tr_cluster_rt;
struct tr_endpoint_rt;

enum tr_stream_down { TR_SD_H2 = 0, TR_SD_H1 };
enum tr_stream_up { TR_SU_NONE = 0, TR_SU_H1, TR_SU_H2, TR_SU_LOCAL, TR_SU_TUNNEL };

/* The HTTP/1.1 upstream side of a stream; also the TCP side of a CONNECT
 * tunnel (TR_SU_TUNNEL: raw bytes both ways). */
struct tr_stream_h1 {
    struct tr_h1_client uc; /* the connection, response head and body (upstream/h1_client.h) */
    struct tr_buf *out;     /* request head and framed body not yet written */
    struct tr_buf *in;      /* response bytes not yet processed */
    bool ready;             /* connected */
    bool chunked_req;       /* the request body goes chunked (its length is unknown) */
    bool pumping;           /* inside h1_pump: nested calls only ask for another round */
    bool again;
    bool shut_pending; /* tunnel: half-close the upstream once out drains */
    bool shut_done;
};

struct tr_stream {
    struct tr_session *s;          /* the downstream connection */
    struct tr_wsnap *ws;           /* the snapshot this exchange was decided with (a use) */
    struct tr_stream *prev, *next; /* the session's streams (HTTP/2 downstream) */
    int32_t id;                    /* downstream HTTP/2 stream id */
    uint8_t down;                  /* enum tr_stream_down */
    uint8_t up;                    /* enum tr_stream_up */
    uint8_t proto;                 /* enum tr_req_proto, for metrics */
    uint8_t method_id;             /* enum tr_h1_method */
    uint8_t attempts;              /* endpoints tried (upstream/attempt.h) */
    bool grpc;
    bool orig_h2;       /* the client originally spoke HTTP/2 (see tr_stream_orig_h2) */
    bool req_in_end;    /* the downstream request is complete */
    bool req_out_end;   /* ... and the upstream has all of it */
    bool req_has_body;  /* a body follows the request headers */
    bool resp_head_out; /* the final response head went downstream */
    bool resp_in_end;   /* the upstream response is complete */
    bool resp_out_end;  /* ... and went downstream (to the codec or tx) */
    bool down_done;     /* downstream side released the stream */
    bool up_done;       /* upstream side released the stream */
    bool logged;
    bool resent;
    bool local;          /* the response is ours */
    bool idle_timer;     /* timer is the listener idle timeout, moved by progress */
    bool req_pend_end;   /* the request's end waits behind req_pend (or the connection) */
    bool resp_pend_end;  /* the response's end waits behind resp_pend */
    int16_t grpc_status; /* -1: none seen */
    uint16_t status;
    uint16_t flags;           /* TR_RF_* */
    const char *authz_policy; /* the policy that denied (access log), else NULL */
    int authz_rule;
    uint64_t start_us;
    uint64_t req_bytes, resp_bytes;
    const struct tr_route_cfg *route;
    const struct tr_header_edit *req_edit, *resp_edit; /* the route's, NULL: none */
    /* External authorization (upstream/ext_authz.h): the check of this
     * request, its header list kept (ext_authz_req) to be decided again
     * once the check is over; body bytes meanwhile wait as for a fault
     * delay (TR_SU_NONE). The check lives as long as the stream. */
    struct tr_ext_authz_check *ext_authz;
    struct tr_fields ext_authz_req;
    bool ext_authz_end_stream;
    struct tr_cluster_rt *cluster;
    struct tr_endpoint_rt *ep;
    uint64_t lb_hash;   /* consistent hashing: proxy/decide.h */
    uint64_t lb_cookie; /* nonzero: a generated cookie goes on the response */
    const char *peer_id;
    const char *upstream_addr;
    struct tr_timer timer; /* route timeout / grpc-timeout */
    struct tr_loop *loop;  /* the worker's: stream_free_now runs when the session may be gone */
    struct tr_deferred free_later;
    struct tr_deferred pump_later;
    struct tr_deferred start_later; /* HTTP/2 downstream: upstream starts after the read batch */
    uint8_t up_next;                /* ... with this enum tr_stream_up */
    struct tr_buf *req_pend;        /* request body taken from downstream, not yet upstream */
    struct tr_buf *resp_pend;       /* response body taken from upstream, not yet downstream */
    struct tr_fields req_trailers;  /* waiting behind req_pend */
    struct tr_fields resp_trailers; /* waiting behind resp_pend */
    struct tr_fields upreq;         /* the upstream request, kept for re-sends and retries */
    /* Retries and mirroring (upstream/retry.h, upstream/mirror.h). The
     * request body given to the upstream side is copied into held while
     * the route's policy wants it and it fits max_body_for_retry; a retry
     * sends that copy again (replay) before anything still pending. */
    struct tr_retry_state rt;
    struct tr_buf *held;            /* request body given upstream, for a retry */
    struct tr_fields held_trailers; /* ... and its trailers */
    uint32_t replay_off;            /* a retry's replay of held has sent this much */
    bool hold_body;                 /* the policy wants the copy */
    bool spent;                     /* request bytes left that are not held: no retry after */
    bool replaying;                 /* a retry sends held again before anything else */
    bool keep_out;                  /* the retry after a connect failure reuses h1.out as is */
    bool try_connected;             /* this try's connection (or HTTP/2 stream) is up */
    struct tr_mirror *mirrors;      /* shadows of this request until it is complete */
    struct tr_h2_up_stream h2;
    struct tr_stream_h1 h1;
    char method[16];
    char path[256];
    char authority[128];
    char request_id[40];
    bool log_cut; /* method, path or authority was longer than kept above */
    /* Local route actions (filter/route_action.h, proxy/decide.h). A fault
     * delay (fault_delay_ms, set before the upstream side starts) holds the
     * exchange on the timer: then the answer kept below goes out, or the
     * upstream side starts (request bytes wait meanwhile as for a deferred
     * start). An allowed CORS origin gives the response its CORS fields. */
    uint32_t fault_delay_ms;
    bool fault_wait;
    bool answer_held; /* the delay ends in the answer below */
    bool answer_grpc;
    uint8_t answer_grpc_status;
    uint16_t answer_status;
    const char *answer_body;        /* static: configuration or constant */
    struct tr_fields answer_fields; /* a redirect's Location */
    uint64_t fault_timeout_ms;      /* the exchange's deadline, armed after the delay */
    struct tr_cors_echo cors;
};

/* A new stream on session s (down: enum tr_stream_down). NULL: no memory. */
struct tr_stream *tr_stream_new(struct tr_session *s, int down, int32_t id);

/* An HTTP/2 request head arrived (pseudo-headers first): route it, authorize
 * it and start the upstream side, or answer locally. */
void tr_stream_request(struct tr_stream *st, const struct tr_h2_header *h, size_t n,
                       bool end_stream);
/* An HTTP/1.1 request already routed by http_session (route and cluster
 * chosen, authorization passed), given as fields. */
void tr_stream_forward(struct tr_stream *st, const struct tr_route_cfg *route,
                       struct tr_cluster_rt *cluster, struct tr_fields *req, bool end_stream);

/* Request body and trailers from downstream. */
void tr_stream_req_data(struct tr_stream *st, const uint8_t *p, size_t len, bool end);
void tr_stream_req_trailers(struct tr_stream *st, const struct tr_h2_header *h, size_t n);
/* True while request bytes wait in the stream: an HTTP/1.1 downstream stops
 * reading until tr_stream_req_blocked turns false. */
bool tr_stream_req_blocked(const struct tr_stream *st);

/* The downstream can take response bytes again. */
void tr_stream_resp_resume(struct tr_stream *st);

/* The downstream side is gone or done. aborted: before the exchange completed
 * (client reset, connection closed): the upstream side is cancelled. */
void tr_stream_down_close(struct tr_stream *st, bool aborted);

/* The protocol the client originally spoke: the trellis-orig-proto field of a
 * request from a verified mesh peer (an mTLS SPIFFE principal) when present
 * and valid, else the protocol it arrived in (down_h2). */
bool tr_stream_orig_h2(const struct tr_session *s, const struct tr_h2_header *h, size_t n,
                       bool down_h2);

/* gRPC status of a Status-code text, or -1. */
int tr_grpc_status_parse(tr_str v);
/* grpc-timeout value ("100m", "5S", ...) in ms, or 0 if absent/invalid. */
uint64_t tr_grpc_timeout_ms(tr_str v);

#endif
