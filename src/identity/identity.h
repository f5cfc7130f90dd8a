/* identity/identity.h: workload identity (SPIFFE X.509-SVIDs) and mutual TLS,
 * and the TLS contexts that are not mesh contexts (tr_tls_cfg.kind).
 *
 * Kinds. A mesh context is described below. A server context (TLS
 * termination, a gateway) has only a server SSL_CTX: its certificate, and,
 * with a ca, client certificates required and chain-verified (MUTUAL); a
 * listener may hold several, one chosen per connection by SNI
 * (tr_tls_server_select) before anything else of the handshake. A client
 * context (TLS origination to a server outside the mesh) has only a client
 * SSL_CTX: the ca (none: the system's trust store, OpenSSL's default
 * paths) verifies the server's chain, the names given to
 * tr_tls_client_setup are DNS or URI SANs one of which the server's leaf must
 * carry (a DNS SAN "*.x" stands for one leftmost label), and it presents a
 * certificate if it has one. Each of cert, key and ca is a file or inline
 * PEM (a compiled model is self-contained); inline PEM is not watched.
 *
 * A tr_tls_ctx is one loaded TLS context for a workload identity: this
 * workload's certificate chain and key plus the trust bundle, as a server
 * SSL_CTX (requires and verifies client certificates) and a client SSL_CTX
 * (presents our certificate, verifies the server). It is immutable once
 * loaded and shared by all worker threads.
 *
 * Lifetime and rotation. tr_tls_ctx_load() returns a context holding one
 * reference, owned by the caller. References are counted atomically: a worker
 * or a connection that uses the context takes one with tr_tls_ctx_ref() and
 * drops it with tr_tls_ctx_unref(). Certificate rotation is "load a new
 * context from the changed files, publish it, unref the old one": connections
 * made with the old one keep working (an SSL also pins its SSL_CTX, and all
 * data the verify callback needs hangs off the SSL_CTX itself). Every context
 * loads the bundle from ca_file, so peers with certificates from the same CA
 * keep verifying across rotation. The main thread polls
 * tr_tls_ctx_files_changed() about once a second; a failed reload leaves the
 * current context in place, and since the files still differ from it, the
 * next poll retries (rate-limit the error log).
 *
 * Peer verification (both directions): the chain must verify against the
 * bundle (including validity dates), and the leaf must carry exactly one URI
 * SAN that is a valid SPIFFE ID, must not be a CA, and, if the config sets a
 * trust domain, must be in it. A client may further restrict the server to a
 * list of IDs (tr_tls_client_setup). All checks run inside the handshake, in
 * the verify callback, so a rejected peer never receives application data.
 * There is no hostname verification: the SPIFFE ID is the identity.
 *
 * Protocol: TLS 1.3 by default, TLS 1.2 (ECDHE + AEAD only) if
 * cfg->min_version says so; no renegotiation; no compression. SSLs are set up
 * for non-blocking proxies: partial writes and moving write buffers allowed,
 * read-ahead with a buffer that holds a full record or many small ones.
 * Buffers are kept for the connection's life (no SSL_MODE_RELEASE_BUFFERS:
 * it costs an allocation pair per request).
 *
 * Threads: everything here may be called from any thread except
 * tr_tls_ctx_set_alpn(), which must run before the context is shared.
 */
#ifndef TR_IDENTITY_IDENTITY_H
#define TR_IDENTITY_IDENTITY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/ssl.h>

#include "config/model.h"
#include "core/str.h"

/* Longest SPIFFE ID we accept (the SPIFFE spec's limit for URI SANs). */
#define TR_SPIFFE_ID_MAX 2048

struct tr_tls_ctx;

/* Loads cfg's cert chain, key and bundle. Fails (NULL, *err set to a
 * malloc'd "FILE:LINE:COL: PATH: message" the caller frees) if a file cannot
 * be read or parsed, the key does not match the certificate, our leaf has no
 * valid SPIFFE ID, our chain does not verify against the bundle (dates
 * ignored: an expired own cert only logs a warning, so a late rotation does
 * not take the proxy down), or min_version is not TLS 1.2/1.3 (0 = 1.3).
 * cfg is not referenced after the call. */
struct tr_tls_ctx *tr_tls_ctx_load(const struct tr_tls_cfg *cfg, char **err);
void tr_tls_ctx_ref(struct tr_tls_ctx *ctx);
void tr_tls_ctx_unref(struct tr_tls_ctx *ctx); /* NULL is fine */

/* The SSL_CTXs, owned by ctx: SSL_new() them per connection. A server
 * context has no client SSL_CTX, a client context no server one (NULL). */
SSL_CTX *tr_tls_ctx_server(const struct tr_tls_ctx *ctx);
SSL_CTX *tr_tls_ctx_client(const struct tr_tls_ctx *ctx);
/* Our SPIFFE ID, from our leaf certificate; lives as long as ctx; NULL if
 * not a mesh context. */
const char *tr_tls_ctx_own_id(const struct tr_tls_ctx *ctx);
/* Expiry of our leaf certificate. */
time_t tr_tls_ctx_not_after(const struct tr_tls_ctx *ctx);
/* Have cert_file, key_file or ca_file changed since ctx was loaded (device,
 * inode, size, mtime, ctime; a missing file counts as "not yet": no change)?
 * Cheap: three stat(2) calls. Symlinks are followed, so a Kubernetes-style
 * "..data" symlink swap is seen. Writers should replace files by rename(2):
 * two same-size in-place rewrites within one file system timestamp tick
 * (a few ms) look identical. */
bool tr_tls_ctx_files_changed(const struct tr_tls_ctx *ctx);

/* ALPN, in wire format (length-prefixed names, e.g. "\x02h2\x08http/1.1"):
 * the client offers protos; the server picks the first of protos (server
 * preference) that the client offers, or proceeds without ALPN. Call once,
 * before the context is shared. Returns 0, or -1 on bad input / no memory. */
int tr_tls_ctx_set_alpn(struct tr_tls_ctx *ctx, const unsigned char *protos, size_t len);

/* Prepares a client SSL (from tr_tls_ctx_client) for an upstream: the SNI to
 * send (NULL: none) and the SPIFFE IDs the server may present (copied;
 * n_ids == 0: any ID in the configured trust domain). Call before the
 * handshake. Returns 0, or -1 on no memory / invalid SNI. */
int tr_tls_client_setup(SSL *ssl, const char *sni, const char *const *server_ids, size_t n_ids);

/* A client SSL of a client context that verifies nothing of the server
 * (insecure_skip_verify). Call before the handshake. */
void tr_tls_client_insecure(SSL *ssl);

/* TLS termination by SNI. A table lists a listener's server contexts with
 * the names each serves ("*.x": any name below x); the first that lists the
 * client's SNI is used, else the first that lists no name, else the
 * handshake fails ("unknown_sni", alert unrecognized_name). The table must
 * outlive the SSL; set it on a server SSL of one of its contexts before the
 * handshake. */
struct tr_tls_sni_choice {
    struct tr_tls_ctx *ctx; /* a server context */
    const char *const *names;
    size_t n_names;
};
struct tr_tls_sni_table {
    const struct tr_tls_sni_choice *choices;
    size_t n;
};
void tr_tls_server_select(SSL *ssl, const struct tr_tls_sni_table *t);
/* The handshake of ssl (a server's) selects no application protocol,
 * whatever its context offers: TLS terminated in front of a byte stream
 * (a tcp listener), where h2 or http/1.1 would be a promise nobody keeps. */
void tr_tls_server_no_alpn(SSL *ssl);
/* The choice for an SNI (name NULL: none sent), or NULL. */
const struct tr_tls_sni_choice *tr_tls_sni_pick(const struct tr_tls_sni_table *t, const char *name,
                                                size_t len);
/* Parses a server_name extension's body (RFC 6066 3) from a ClientHello:
 * strict lengths, at most one host_name of 1..255 bytes without NUL. Returns
 * 0 and sets *name (into ext, not NUL-terminated; NULL if there is no
 * host_name) or -1 if malformed. */
int tr_tls_sni_parse(const unsigned char *ext, size_t len, const char **name, size_t *name_len);

/* After a successful handshake (either side, also on resumption): copies the
 * peer's verified SPIFFE ID, NUL-terminated, into out. Returns its length, or
 * -1 if there is no verified peer ID or it does not fit. */
int tr_identity_peer_id(SSL *ssl, char *out, size_t size);

/* Why did the handshake fail? Call right after the failing SSL_* call, before
 * the thread's error queue is cleared; it then empties that queue (a stale
 * error would make the thread's next SSL_get_error() report another
 * connection's "would block" as fatal), so call it once per failure.
 * Returns a constant string:
 *   "unknown_ca"         chain does not lead to the bundle
 *   "expired"            a certificate in the chain has expired
 *   "not_yet_valid"      ... or is not valid yet
 *   "no_peer_cert"       the client presented no certificate
 *   "no_spiffe_id"       the leaf has no URI SAN, or it is not spiffe://
 *   "bad_spiffe_id"      malformed SPIFFE ID, several URI SANs, or a CA leaf
 *   "wrong_spiffe_id"    valid, but not one of the allowed server IDs
 *   "wrong_trust_domain" valid, but outside the configured trust domain
 *   "wrong_san"          (client context) no SAN of the server is a name asked for
 *   "unknown_sni"        (server contexts) no context serves the client's SNI
 *   "protocol"           not TLS, version or cipher/group mismatch
 *   "other"
 * Reasons found by our verify callback are exact. Otherwise the error queue
 * is read, and an alert from the peer maps to the same names (the peer's
 * "unknown_ca" alert means it does not trust *our* certificate). */
const char *tr_tls_failure_reason(SSL *ssl);

/* Parses a SPIFFE ID of a workload: "spiffe://" trust-domain path, where the
 * trust domain is 1..255 of [a-z0-9.-_] and the path is one or more
 * "/segment" with segments of [A-Za-z0-9.-_], none empty, "." or "..". No
 * port, userinfo, query, fragment or percent-encoding; at most
 * TR_SPIFFE_ID_MAX bytes. id need not be NUL-terminated (a NUL byte makes it
 * invalid). Returns 0 if valid and then sets the optional outputs (slices of
 * id; path includes its leading '/'), else -1. */
int tr_spiffe_id_parse(const char *id, size_t len, tr_str *trust_domain, tr_str *path);

/* Client session resumption. The caller keeps one slot per upstream endpoint
 * per worker (no locking: a slot is only touched by its worker's thread).
 * Usage, per upstream connection:
 *     ssl = SSL_new(tr_tls_ctx_client(ctx));
 *     tr_tls_client_setup(ssl, sni, ids, n);
 *     tr_tls_session_resume(ssl, &endpoint->tls_slot);   // offers the
 *         // stored session and binds the slot: new tickets are stored into
 *         // it when they arrive (TLS 1.3 sends them after the handshake,
 *         // during SSL_read)
 *     ... handshake: SSL_session_reused(ssl) tells whether it resumed ...
 * The slot must outlive every SSL bound to it, or call
 * tr_tls_session_unbind(ssl) first. A stored session is only offered to SSLs
 * of the same tr_tls_ctx (a rotated context starts afresh) whose server ID
 * constraints its peer certificate still meets. */
struct tr_tls_session_slot {
    SSL_SESSION *sess; /* owned; NULL if none */
    uint64_t gen;      /* tr_tls_ctx load generation that made sess */
};

void tr_tls_session_slot_init(struct tr_tls_session_slot *slot);
void tr_tls_session_slot_clear(struct tr_tls_session_slot *slot); /* frees sess */
/* Returns 1 if a stored session was offered, 0 if not. */
int tr_tls_session_resume(SSL *ssl, struct tr_tls_session_slot *slot);
void tr_tls_session_unbind(SSL *ssl);

#endif
