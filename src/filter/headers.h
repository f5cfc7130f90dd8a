/* filter/headers.h: the header stage of the filter chain. Rewrites a parsed
 * message head for the next hop in one pass into an output buffer: drops
 * hop-by-hop headers (and those named by Connection), applies
 * X-Forwarded-For/-Proto and X-Request-Id policy, the route's rewrites and
 * its header edits (struct tr_header_edit, config/model.h: built at load,
 * applied here after the listener's policy, for text and header lists). */
#ifndef TR_FILTER_HEADERS_H
#define TR_FILTER_HEADERS_H

#include <stdbool.h>

#include "codec/h1/h1.h"
#include "codec/h2/h2.h"
#include "config/model.h"
#include "core/buf.h"
#include "core/str.h"

struct tr_request_rewrite {
    tr_str target;       /* request-target to send (origin-form)... */
    tr_str target_tail;  /* ... followed by this (a rewritten path's rest) */
    tr_str host;         /* Host to send; .p == NULL: keep the original */
    const char *peer_ip; /* for X-Forwarded-For */
    enum tr_xff_mode xff;
    const char *xfp; /* X-Forwarded-Proto value, NULL: leave as is */
    enum tr_request_id_mode request_id;
    char *request_id_out; /* 37 bytes: receives the id used ("" if none) */
    uint64_t rnd[2];      /* entropy for a new id */
    bool upgrade;         /* forward Upgrade + Connection: upgrade */
    /* The route's header edits (NULL: none), and with them the limits the
     * head sent must keep: fields (Host and all) and bytes of the head. */
    const struct tr_header_edit *edit;
    uint32_t max_fields, max_bytes;
};

/* A head that header edits would take past max_fields or max_bytes. */
#define TR_FILTER_OVER_LIMIT (-2)

/* Does the edit drop every value of name (any case)? False for NULL. */
bool tr_header_edit_drops(const struct tr_header_edit *e, tr_str name);

/* A header list (HTTP/2 form: pseudo-headers first, lowercase names) with
 * an edit applied, as slices of in and of the edit (nothing is copied):
 * dropped names left out, the edit's fields appended. Returns the number of
 * entries written to out, or -1 if more than cap would be. */
int tr_header_edit_fields(const struct tr_header_edit *e, const struct tr_h2_header *in, size_t n,
                          struct tr_h2_header *out, size_t cap);

/* The listener's request-header policy, one decision per received header
 * (after hop-by-hop removal), for both forms: HTTP/1.1 text
 * (tr_filter_request_head) and header lists (proxy/stream.c). name in any
 * case. *rid_kept: an x-request-id was already kept for this request. */
enum tr_rh_verdict {
    TR_RH_PASS = 0,   /* forward as received */
    TR_RH_DROP,       /* mesh-internal, replaced by ours, or an unusable x-request-id */
    TR_RH_HOST,       /* Host: the host rule decides (HTTP/2 form: :authority) */
    TR_RH_XFF,        /* joined into the one X-Forwarded-For sent (values in order, ", ") */
    TR_RH_REQUEST_ID, /* kept as the request's id (at most one, <= 36 bytes) */
};
enum tr_rh_verdict tr_request_header_verdict(enum tr_xff_mode xff, bool set_xfp,
                                             enum tr_request_id_mode request_id, tr_str name,
                                             tr_str value, bool *rid_kept);

/* Append the upstream request head to out. Returns 0, -1 if out is too
 * small (the caller retries with a bigger buffer), or TR_FILTER_OVER_LIMIT. */
int tr_filter_request_head(struct tr_buf *out, const char *buf, const struct tr_h1_message *m,
                           struct tr_request_rewrite *rw);

struct tr_response_rewrite {
    bool keep_alive; /* downstream connection stays open */
    bool version10;  /* downstream is HTTP/1.0 */
    bool dechunk;    /* body will be de-chunked: drop Transfer-Encoding */
    bool tunnel;     /* 101: keep Upgrade and Connection: upgrade */
    /* The route's response header edits (final responses only; NULL: none)
     * and the limits the edited head must keep, as for requests. */
    const struct tr_header_edit *edit;
    uint32_t max_fields, max_bytes;
    /* Fields the proxy sets (a route's CORS fields): written last, and the
     * upstream's fields of the same names are dropped. */
    const struct tr_h2_header *set;
    size_t n_set;
    tr_str set_cookie; /* a Set-Cookie value the proxy adds (consistent hashing); len 0: none */
};

/* Returns 0, -1 if out is too small, or TR_FILTER_OVER_LIMIT. */
int tr_filter_response_head(struct tr_buf *out, const char *buf, const struct tr_h1_message *m,
                            const struct tr_response_rewrite *rw);

/* A complete local response (status line, content-type text/plain,
 * content-length, connection) with body, and the route's response edits
 * (NULL: none; they may replace content-type). Returns 0 or -1 if it does
 * not fit. Validation keeps edits small enough for a reply's own fields to
 * stay within the limits. */
int tr_filter_local_response(struct tr_buf *out, int status, const char *body, bool keep_alive,
                             bool head_only, const struct tr_header_edit *edit);
/* The same with the proxy's own fields (a redirect's Location, CORS
 * fields), written last. */
int tr_filter_local_response_with(struct tr_buf *out, int status, const char *body, bool keep_alive,
                                  bool head_only, const struct tr_header_edit *edit,
                                  const struct tr_h2_header *extra, size_t n_extra);

/* Format a random UUIDv4 from 128 random bits into out (37 bytes). */
void tr_request_id_format(char *out, uint64_t a, uint64_t b);

#endif
