/* core/buf.h: I/O buffers and the per-worker buffer pool.
 *
 * A connection borrows a buffer only while it holds bytes and gives it back
 * when it empties, so an idle keep-alive connection costs no buffer memory.
 * Buffers are all the same size (limits.buffer_size), which bounds memory per
 * connection: at most one buffer per direction. The pool keeps a bounded free
 * list; it belongs to one worker thread and takes no lock.
 */
#ifndef TR_CORE_BUF_H
#define TR_CORE_BUF_H

#include <stddef.h>
#include <stdint.h>

/* Bytes live in data[start, end). */
struct tr_buf {
    uint32_t start;
    uint32_t end;
    uint32_t cap;
    struct tr_buf *next_free;
    char data[];
};

struct tr_buf_pool {
    struct tr_buf *free;
    uint32_t n_free;
    uint32_t max_free;
    uint32_t buf_size;
    uint64_t outstanding; /* buffers handed out and not returned */
};

void tr_buf_pool_init(struct tr_buf_pool *p, uint32_t buf_size, uint32_t max_free);
void tr_buf_pool_destroy(struct tr_buf_pool *p);
/* An empty buffer, or NULL if memory is exhausted. */
struct tr_buf *tr_buf_get(struct tr_buf_pool *p);
void tr_buf_put(struct tr_buf_pool *p, struct tr_buf *b);
/* A buffer of at least size bytes: a pool buffer when that fits, else one
 * of its own (a head or a window larger than buffer_size); tr_buf_put frees
 * buffers of a foreign size. NULL if memory is exhausted. */
struct tr_buf *tr_buf_get_sized(struct tr_buf_pool *p, size_t size);

static inline uint32_t tr_buf_len(const struct tr_buf *b)
{
    return b->end - b->start;
}
static inline char *tr_buf_head(struct tr_buf *b)
{
    return b->data + b->start;
}
static inline char *tr_buf_tail(struct tr_buf *b)
{
    return b->data + b->end;
}
static inline uint32_t tr_buf_room(const struct tr_buf *b)
{
    return b->cap - b->end;
}
/* Consume n bytes from the front; an emptied buffer rewinds to offset 0. */
static inline void tr_buf_consume(struct tr_buf *b, uint32_t n)
{
    b->start += n;
    if (b->start == b->end)
        b->start = b->end = 0;
}
/* Move the bytes to the front so the tail has room. */
void tr_buf_compact(struct tr_buf *b);
/* Append; returns bytes appended (less than len if full). */
uint32_t tr_buf_append(struct tr_buf *b, const void *p, size_t len);

#endif
