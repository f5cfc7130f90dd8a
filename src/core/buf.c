#include "core/buf.h"

#include <stdlib.h>
#include <string.h>

void tr_buf_pool_init(struct tr_buf_pool *p, uint32_t buf_size, uint32_t max_free)
{
    memset(p, 0, sizeof(*p));
    p->buf_size = buf_size;
    p->max_free = max_free;
}

void tr_buf_pool_destroy(struct tr_buf_pool *p)
{
    while (p->free != NULL) {
        struct tr_buf *b = p->free;
        p->free = b->next_free;
        free(b);
    }
    p->n_free = 0;
}

struct tr_buf *tr_buf_get(struct tr_buf_pool *p)
{
    struct tr_buf *b = p->free;
    if (b != NULL) {
        p->free = b->next_free;
        p->n_free--;
    } else {
        b = malloc(sizeof(*b) + p->buf_size);
        if (b == NULL)
            return NULL;
        b->cap = p->buf_size;
    }
    b->start = b->end = 0;
    b->next_free = NULL;
    p->outstanding++;
    return b;
}

struct tr_buf *tr_buf_get_sized(struct tr_buf_pool *p, size_t size)
{
    if (size <= p->buf_size)
        return tr_buf_get(p);
    if (size > UINT32_MAX)
        return NULL;
    struct tr_buf *b = malloc(sizeof(*b) + size);
    if (b == NULL)
        return NULL;
    b->start = b->end = 0;
    b->cap = (uint32_t)size;
    b->next_free = NULL;
    p->outstanding++;
    return b;
}

void tr_buf_put(struct tr_buf_pool *p, struct tr_buf *b)
{
    if (b == NULL)
        return;
    p->outstanding--;
    if (p->n_free >= p->max_free || b->cap != p->buf_size) {
        free(b);
        return;
    }
    b->next_free = p->free;
    p->free = b;
    p->n_free++;
}

void tr_buf_compact(struct tr_buf *b)
{
    if (b->start == 0)
        return;
    uint32_t len = b->end - b->start;
    memmove(b->data, b->data + b->start, len);
    b->start = 0;
    b->end = len;
}

uint32_t tr_buf_append(struct tr_buf *b, const void *p, size_t len)
{
    if (len == 0)
        return 0; /* p may be NULL */
    if (tr_buf_room(b) < len)
        tr_buf_compact(b);
    uint32_t n = tr_buf_room(b) < len ? tr_buf_room(b) : (uint32_t)len;
    memcpy(b->data + b->end, p, n);
    b->end += n;
    return n;
}
