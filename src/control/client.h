/* control/client.h: the proxy's side of the control-plane protocol
 * (docs/control.md), on the proxy's main loop.
 *
 * It holds one HTTP/2 connection over TLS to `trellis control`:
 *   1. bootstrap: a connection without a client certificate, verifying the
 *      control plane's certificate against the trust bundle file and its
 *      SPIFFE ID (.../ns/trellis-system/sa/trellis-control); the proxy makes a
 *      fresh EC P-256 key in memory and sends a CSR with its bootstrap token;
 *      the answer is its certificate chain and the trust bundle;
 *   2. the stream: a new connection presenting that certificate, one
 *      long-lived request (GET /v1/stream?workload=NS/NAME) on which the
 *      control plane pushes `model` and `bundle` messages; each model is
 *      handed to the owner, and acknowledged or refused (with the loader's
 *      message) by a POST /v1/ack on the same connection;
 *   3. renewal: at the time the control plane names (half the certificate's
 *      life by default) a new key and CSR go over the same authenticated
 *      connection; the new certificate is used by new data-plane connections
 *      while existing ones continue.
 * A lost connection is retried with jittered exponential backoff (200 ms
 * doubling to 10 s); meanwhile the proxy serves with what it has. The key
 * never leaves this process: it is handed to the owner as PEM in memory.
 */
#ifndef TR_CONTROL_CLIENT_H
#define TR_CONTROL_CLIENT_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "event/loop.h"

struct tr_control_client_options {
    const char *address;      /* "IP:PORT" of trellis control */
    const char *workload;     /* "NAMESPACE/NAME" */
    const char *token_file;   /* the bootstrap token (64 hex digits) */
    const char *ca_file;      /* trust bundle that verifies the control plane at bootstrap */
    const char *admin;        /* node setting sent with the stream: the admin address, or NULL */
    const char *capture;      /* node setting: "redirect" when traffic is captured, or NULL */
    const char *outbound_ip;  /* node setting: where outbound listeners bind; NULL: 127.0.0.1 */
    const char *app_ip;       /* node setting: where the application listens; NULL: 127.0.0.1 */
    const char *admin_socket; /* node setting: absolute path of the admin Unix socket, or NULL */
};

struct tr_control_client_ops {
    /* A new identity (chain leaf first, key, bundle; PEM, valid during the
     * call). The owner rebuilds the contexts that use it. */
    void (*on_identity)(void *arg, const char *chain, const char *key, const char *bundle,
                        time_t not_after);
    /* A model pushed by the control plane. Returns 0 to acknowledge it, or -1
     * with *err (malloc'd) to refuse it; the owner keeps its last good model. */
    int (*on_model)(void *arg, uint64_t version, const char *text, size_t len, char **err);
};

struct tr_control_client;

/* Reads the token and bundle files and starts connecting. NULL with *err
 * (malloc'd) when an option or a file is unusable. */
struct tr_control_client *tr_control_client_start(struct tr_loop *loop,
                                                  const struct tr_control_client_options *o,
                                                  const struct tr_control_client_ops *ops,
                                                  void *arg, char **err);
void tr_control_client_free(struct tr_control_client *c);

/* Counters for /stats/prometheus. */
struct tr_control_client_stats {
    uint64_t connects, disconnects, models, acks, nacks, certificates;
    uint64_t version; /* last model applied */
    time_t cert_not_after;
    int connected; /* 1 while a stream is open */
};
void tr_control_client_stats(const struct tr_control_client *c,
                             struct tr_control_client_stats *out);

#endif
