/* control/server.h: `trellis control`, the control plane (docs/control.md).
 *
 * One thread, one event loop:
 *   - resources: a watched store (resource/resource.h) over the given paths;
 *     a change is read after a short quiet time (debounce) and every
 *     connected proxy's model is compiled again (dialect/istio);
 *   - the mesh CA (ca/ca.h) in the state directory, created on first start;
 *     it signs the control plane's own certificate
 *     (spiffe://TD/ns/trellis-system/sa/trellis-control) and the proxies' CSRs,
 *     after a bootstrap token or the proxy's current certificate
 *     authenticated them;
 *   - proxies: HTTP/2 over TLS 1.3 (control/link.h); each holds one stream
 *     on which its model is pushed, with a version, only when its compiled
 *     model changed; its ACK or NACK (with the loader's message) is recorded;
 *   - status: a Unix socket (STATE/control.sock, mode 0600) that answers
 *     every connection with one JSON document of the proxies' state and
 *     closes; `trellis ctl status` prints it.
 */
#ifndef TR_CONTROL_SERVER_H
#define TR_CONTROL_SERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tr_control_options {
    const char *const *resources; /* paths: files or directories of YAML */
    size_t n_resources;
    const char *state_dir;    /* the CA's state and control.sock */
    const char *listen;       /* "IP:PORT"; default 127.0.0.1:15012 */
    const char *trust_domain; /* for a CA created here; default cluster.local */
    const char *root_ns;      /* Istio's root namespace; default istio-system */
    long cert_lifetime_s;     /* issued certificates; default 24 h */
    double renew_fraction;    /* proxies renew at this fraction of the life; default 0.5 */
    /* Quiet time after a change before it is read (files written together
     * are read together; none starts while a file is still being
     * written); a change is read at the latest TR_CONTROL_DEBOUNCE_MAX_MS
     * after the first of them. */
    uint32_t debounce_ms;
};

#define TR_CONTROL_DEBOUNCE_DEFAULT_MS 10u
#define TR_CONTROL_DEBOUNCE_MAX_MS     1000u

/* Runs until SIGTERM/SIGINT. Returns the process exit code. */
int tr_control_run(const struct tr_control_options *o);

/* The allocator as the control plane sets it for its compiles (called by
 * tr_control_run; the compile benchmark calls it too, to measure what the
 * control plane runs): memory a compile frees is kept for the next one, up
 * to TR_CONTROL_TRIM_KEEP bytes above what is in use, instead of going back
 * to the kernel and being faulted in again (glibc returns the heap's top
 * past 128 KiB by default: a quarter of a 1,000-service compile's time went
 * to those page faults). */
#define TR_CONTROL_TRIM_KEEP (128u << 20)
/* Fixing the trim threshold also fixes glibc's mmap threshold at 128 KiB:
 * every bigger block (a file's text read for a snapshot, a snapshot's
 * tables, a seal's scratch arrays) would be a fresh mapping faulted in
 * page by page at every snapshot (3-4 ms of a one-file change's 7). Blocks
 * up to TR_CONTROL_MMAP_MIN come from the kept heap instead (glibc's
 * largest threshold; a file is at most 16 MiB). */
#define TR_CONTROL_MMAP_MIN  (32u << 20)
void tr_control_malloc_setup(void);

#endif
