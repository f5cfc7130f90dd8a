/* proxy/relay.h: moving opaque bytes from one connection to another through
 * one pool buffer: the TCP session (when a side is TLS) and the HTTP upgrade
 * tunnel both use it. */
#ifndef TR_PROXY_RELAY_H
#define TR_PROXY_RELAY_H

#include <stdbool.h>
#include <stdint.h>

#include "core/buf.h"
#include "transport/transport.h"

enum tr_relay_result {
    TR_RELAY_IDLE = 0,     /* nothing moved: wait for readiness */
    TR_RELAY_PROGRESS = 1, /* bytes moved */
    TR_RELAY_EOF = -1,     /* src ended and everything read was written */
    TR_RELAY_ERROR = -2,   /* a read or write failed */
};

/* Read from src into *buf (taken from pool when needed) and write to dst,
 * for a bounded number of rounds. *count accumulates bytes written to dst;
 * *eof latches src's end of stream. */
enum tr_relay_result tr_relay_copy(struct tr_buf_pool *pool, struct tr_conn *src,
                                   struct tr_conn *dst, struct tr_buf **buf, uint64_t *count,
                                   bool *eof);

#endif
