#include "core/strmap.h"

#include <stdint.h>
#include <string.h>

#include "core/arena.h"

static uint32_t strmap_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s != '\0'; s++)
        h = (h ^ (unsigned char)*s) * 16777619u;
    return h;
}

static struct tr_strmap_slot *slot_of(struct tr_strmap_slot *slots, size_t cap, const char *key)
{
    size_t i = strmap_hash(key) & (cap - 1);
    while (slots[i].key != NULL && strcmp(slots[i].key, key) != 0)
        i = (i + 1) & (cap - 1);
    return &slots[i];
}

void tr_strmap_init(struct tr_strmap *m, struct tr_arena *a)
{
    *m = (struct tr_strmap){.a = a};
}

void *tr_strmap_get(const struct tr_strmap *m, const char *key)
{
    if (m->cap == 0 || key == NULL)
        return NULL;
    return slot_of(m->slots, m->cap, key)->val;
}

void *tr_strmap_put(struct tr_strmap *m, const char *key, void *val, bool *oom)
{
    if ((m->n + 1) * 2 > m->cap) {
        size_t ncap = m->cap == 0 ? 16 : m->cap * 2;
        struct tr_strmap_slot *ns = tr_arena_calloc(m->a, ncap, sizeof(*ns));
        if (ns == NULL) {
            if (oom != NULL)
                *oom = true;
            return NULL;
        }
        for (size_t i = 0; i < m->cap; i++) {
            if (m->slots[i].key != NULL)
                *slot_of(ns, ncap, m->slots[i].key) = m->slots[i];
        }
        m->slots = ns;
        m->cap = ncap;
    }
    struct tr_strmap_slot *s = slot_of(m->slots, m->cap, key);
    if (s->key != NULL)
        return s->val;
    s->key = key;
    s->val = val;
    m->n++;
    return NULL;
}
