/* obs/access_log.h: one JSON line per request (off by default). Lines are
 * written with one write(2) on an O_APPEND descriptor, so lines from several
 * workers never interleave. */
#ifndef TR_OBS_ACCESS_LOG_H
#define TR_OBS_ACCESS_LOG_H

#include <stdint.h>

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
};

/* Open path for appending ("/dev/stdout" allowed). Returns fd or -1. */
int tr_access_log_open(const char *path);
void tr_access_log_write(int fd, const struct tr_access_entry *e);

#endif
