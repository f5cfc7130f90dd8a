/* obs/access_log.h: one JSON line per request (off by default). Lines are
 * written with one write(2) on an O_APPEND descriptor, so lines from several
 * workers never interleave.
 *
 * A line is at most TR_ACCESS_LOG_LINE_MAX bytes, newline included: a write
 * of at most PIPE_BUF bytes is atomic even when the log is a pipe. Values are
 * escaped (core/fmt.h); a value that does not fit is cut to a prefix (or, if
 * not even its key fits, left out) and the line then ends with
 * "truncated":true, so a line is always one complete JSON object. The values
 * a client controls (authority, path) come last, so a hostile request can
 * only cut its own values. */
#ifndef TR_OBS_ACCESS_LOG_H
#define TR_OBS_ACCESS_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TR_ACCESS_LOG_LINE_MAX 4096

struct tr_access_entry {
    const char *method;
    const char *path;
    const char *authority;
    const char *request_id;
    const char *protocol;    /* "HTTP/1.1", "HTTP/2", "grpc"; NULL: HTTP/1.1 */
    const char *grpc_status; /* NULL: not gRPC (or none received) */
    uint16_t status;
    uint16_t flags; /* TR_RF_* */
    uint64_t duration_us;
    uint64_t req_bytes;
    uint64_t resp_bytes;
    const char *peer;
    const char *principal; /* NULL: plaintext */
    const char *listener;
    const char *cluster;  /* NULL: local reply */
    const char *upstream; /* endpoint address, NULL: none */
    /* Denied by authorization (flag RBAC): the policy that denied and its
     * rule; NULL when a default denied (or nothing was denied). */
    const char *authz_policy;
    int authz_rule;
    bool truncated; /* a value was cut before it got here (the session keeps a
                             prefix of a long method, path or authority) */
};

/* Open path for appending ("/dev/stdout" allowed). Returns fd or -1. */
int tr_access_log_open(const char *path);
void tr_access_log_write(int fd, const struct tr_access_entry *e);
/* The line for e, newline included, into line[0, TR_ACCESS_LOG_LINE_MAX);
 * returns its length. now_ns: the current wall-clock time. */
size_t tr_access_log_format(char *line, const struct tr_access_entry *e, int64_t now_ns);

#endif
