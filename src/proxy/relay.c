#include "proxy/relay.h"

enum tr_relay_result tr_relay_copy(struct tr_buf_pool *pool, struct tr_conn *src,
                                   struct tr_conn *dst, struct tr_buf **buf, uint64_t *count,
                                   bool *eof)
{
    enum tr_relay_result progress = TR_RELAY_IDLE;
    for (int i = 0; i < 16; i++) {
        struct tr_buf *b = *buf;
        if (b != NULL && tr_buf_len(b) > 0) {
            ssize_t n = tr_conn_write(dst, tr_buf_head(b), tr_buf_len(b));
            if (n == TR_AGAIN)
                return progress;
            if (n < 0)
                return TR_RELAY_ERROR;
            tr_buf_consume(b, (uint32_t)n);
            *count += (uint64_t)n;
            progress = TR_RELAY_PROGRESS;
            continue;
        }
        if (*eof)
            return TR_RELAY_EOF;
        if (b == NULL && (b = *buf = tr_buf_get(pool)) == NULL)
            return progress;
        ssize_t n = tr_conn_read(src, tr_buf_tail(b), tr_buf_room(b));
        if (n == TR_AGAIN)
            return progress;
        if (n == TR_EOF) {
            *eof = true;
            return TR_RELAY_EOF;
        }
        if (n < 0)
            return TR_RELAY_ERROR;
        b->end += (uint32_t)n;
        progress = TR_RELAY_PROGRESS;
    }
    return progress;
}
