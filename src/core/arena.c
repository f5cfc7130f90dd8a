#include "core/arena.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

struct arena_block {
    struct arena_block *next;
    size_t size;
    size_t used;
    _Alignas(16) unsigned char data[];
};

struct tr_arena {
    struct arena_block *head;
    size_t chunk_size;
    size_t total_used;
};

struct tr_arena *tr_arena_new(size_t chunk_size)
{
    struct tr_arena *a = calloc(1, sizeof(*a));
    if (a == NULL)
        return NULL;
    a->chunk_size = chunk_size < 256 ? 256 : chunk_size;
    return a;
}

void tr_arena_free(struct tr_arena *a)
{
    if (a == NULL)
        return;
    struct arena_block *b = a->head;
    while (b != NULL) {
        struct arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

void *tr_arena_alloc(struct tr_arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (size == 0)
        size = 16;
    struct arena_block *b = a->head;
    if (b == NULL || b->size - b->used < size) {
        size_t bsize = size > a->chunk_size ? size : a->chunk_size;
        b = malloc(sizeof(*b) + bsize);
        if (b == NULL)
            return NULL;
        b->size = bsize;
        b->used = 0;
        /* A block made for one oversized object goes behind the head so the
         * head's free space is not wasted. */
        if (a->head != NULL && bsize > a->chunk_size) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
        }
    }
    void *p = b->data + b->used;
    b->used += size;
    a->total_used += size;
    memset(p, 0, size);
    return p;
}

void *tr_arena_calloc(struct tr_arena *a, size_t n, size_t size)
{
    if (size != 0 && n > SIZE_MAX / size)
        return NULL;
    return tr_arena_alloc(a, n * size);
}

char *tr_arena_strndup(struct tr_arena *a, const char *s, size_t n)
{
    char *p = tr_arena_alloc(a, n + 1);
    if (p != NULL) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

char *tr_arena_strdup(struct tr_arena *a, const char *s)
{
    return tr_arena_strndup(a, s, strlen(s));
}

size_t tr_arena_used(const struct tr_arena *a)
{
    return a->total_used;
}
