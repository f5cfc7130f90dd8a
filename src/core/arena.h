/* core/arena.h: bump allocator for objects that share one lifetime (a config
 * snapshot, a request). Everything allocated from an arena is freed at once by
 * tr_arena_free(); there is no per-object free. */
#ifndef TR_CORE_ARENA_H
#define TR_CORE_ARENA_H

#include <stddef.h>

struct tr_arena;

/* chunk_size: bytes per backing block (grows for larger objects). */
struct tr_arena *tr_arena_new(size_t chunk_size);
void tr_arena_free(struct tr_arena *a);

/* Zeroed, 16-byte aligned memory; NULL only when malloc fails. */
void *tr_arena_alloc(struct tr_arena *a, size_t size);
void *tr_arena_calloc(struct tr_arena *a, size_t n, size_t size);
char *tr_arena_strdup(struct tr_arena *a, const char *s);
char *tr_arena_strndup(struct tr_arena *a, const char *s, size_t n);

/* Bytes handed out so far (for tests and config_dump stats). */
size_t tr_arena_used(const struct tr_arena *a);

#endif
