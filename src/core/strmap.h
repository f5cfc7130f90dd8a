/* core/strmap.h: a string -> pointer map in an arena, for build-time
 * lookups (compilers, validation): insert and find, never delete. Keys are
 * not copied (they must live as long as the map, e.g. in the same arena).
 * Open addressing, FNV-1a; load factor at most 1/2. One thread. */
#ifndef TR_CORE_STRMAP_H
#define TR_CORE_STRMAP_H

#include <stdbool.h>
#include <stddef.h>

struct tr_arena;

struct tr_strmap_slot {
    const char *key;
    void *val;
};

struct tr_strmap {
    struct tr_arena *a; /* slots live here; old slot arrays are left to the arena */
    struct tr_strmap_slot *slots;
    size_t cap, n;
};

void tr_strmap_init(struct tr_strmap *m, struct tr_arena *a);
/* The value under key, or NULL. */
void *tr_strmap_get(const struct tr_strmap *m, const char *key);
/* Insert key -> val unless key is there. Returns the existing value (not
 * replaced), or NULL when inserted; *oom set (if given) when out of memory. */
void *tr_strmap_put(struct tr_strmap *m, const char *key, void *val, bool *oom);

#endif
