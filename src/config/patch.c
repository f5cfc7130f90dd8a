/* config/patch.c: partial updates spliced into the tree of the base text.
 *
 * A patch is parsed with the same strict tree builder as a file, then its
 * tree replaces (or joins, or leaves) the named object in the base tree; the
 * combined tree then goes through the one schema walk and validate pass, so
 * a patched model is checked exactly as a file is. Working on the tree, not
 * on a model, keeps one source of truth for every field: nothing here knows
 * what a cluster contains.
 */
#include <stdio.h>
#include <string.h>

#include "config/internal.h"
#include "core/arena.h"

static const char *const patch_sections[] = {"tls", "listeners", "route_tables", "clusters"};

static bool scalar_is(const struct cnode *n, const char *s)
{
    return n != NULL && n->kind == CN_SCALAR && n->len == strlen(s) && memcmp(n->s, s, n->len) == 0;
}

/* Fragment lines are the patch's, not the file's: errors in them name the
 * field path only (tr_cfg_loc_format prints no position for line 0). */
static void forget_lines(struct cnode *n)
{
    n->line = n->col = 0;
    for (struct cnode *c = n->head; c != NULL; c = c->next)
        forget_lines(c);
}

static struct cnode *scalar_new(struct ld *ld, const char *s)
{
    struct cnode *n = tr_arena_calloc(ld->tmp, 1, sizeof(*n));
    char *copy = tr_arena_strdup(ld->tmp, s);
    if (n == NULL || copy == NULL)
        return NULL;
    n->kind = CN_SCALAR;
    n->plain = true;
    n->s = copy;
    n->len = strlen(s);
    return n;
}

static void append_child(struct cnode *parent, struct cnode *c)
{
    c->next = NULL;
    if (parent->tail != NULL)
        parent->tail->next = c;
    else
        parent->head = c;
    parent->tail = c;
    parent->n++;
}

/* The value of key in mapping map, and the node before the key (NULL if the
 * key is first) for unlinking. */
static struct cnode *map_lookup(struct cnode *map, const char *key, struct cnode **before_key)
{
    struct cnode *prev = NULL;
    for (struct cnode *k = map->head; k != NULL && k->next != NULL; k = k->next->next) {
        if (scalar_is(k, key)) {
            if (before_key != NULL)
                *before_key = prev;
            return k->next;
        }
        prev = k->next;
    }
    return NULL;
}

/* Replace child old (preceded by prev, NULL if first) of parent with repl,
 * or unlink it when repl is NULL. */
static void replace_child(struct cnode *parent, struct cnode *prev, struct cnode *old,
                          struct cnode *repl)
{
    struct cnode *after = old->next;
    if (repl != NULL) {
        repl->next = after;
        if (prev != NULL)
            prev->next = repl;
        else
            parent->head = repl;
        if (parent->tail == old)
            parent->tail = repl;
        return;
    }
    if (prev != NULL)
        prev->next = after;
    else
        parent->head = after;
    if (parent->tail == old)
        parent->tail = prev;
    parent->n--;
}

static bool parse_fragment(struct ld *ld, const struct tr_config_patch *p, const char *label,
                           struct cnode **out)
{
    /* Syntax errors in the fragment are reported against the patch. */
    const char *file = ld->file;
    ld->file = label;
    bool ok = cfg_input_check(ld, (const unsigned char *)p->yaml, p->len) &&
              cfg_tree_build(ld, p->len != 0 ? p->yaml : "", p->len, out);
    ld->file = file;
    if (ok && (*out == NULL || cfg_is_null(*out)))
        ok = cfg_fail_file(ld, "%s: the update is empty", label);
    if (ok)
        forget_lines(*out);
    return ok;
}

static bool apply_one(struct ld *ld, struct cnode *root, const struct tr_config_patch *p)
{
    char label[CFG_PATH_MAX];
    bool known = false;
    for (size_t i = 0; i < sizeof(patch_sections) / sizeof(patch_sections[0]); i++)
        known |= p->section != NULL && strcmp(p->section, patch_sections[i]) == 0;
    if (!known)
        return cfg_fail_file(ld,
                             "update: section \"%s\" cannot be updated alone; use tls, "
                             "listeners, route_tables or clusters",
                             p->section != NULL ? p->section : "");
    if (p->name == NULL || p->name[0] == '\0')
        return cfg_fail_file(ld, "update of %s: no object name", p->section);
    snprintf(label, sizeof(label), "update of %s \"%s\"%s%s", p->section, p->name,
             p->field != NULL ? " field " : "", p->field != NULL ? p->field : "");
    if (p->len > CFG_MAX_FILE_SIZE)
        return cfg_fail_file(ld, "%s: %zu bytes; the limit is %u bytes", label, p->len,
                             CFG_MAX_FILE_SIZE);
    struct cnode *value = NULL;
    if (p->yaml != NULL && !parse_fragment(ld, p, label, &value))
        return false;
    if (p->yaml == NULL && p->field != NULL)
        return cfg_fail_file(ld, "%s: a field cannot be removed, only replaced", label);
    if (value != NULL && p->field == NULL) {
        /* A whole object names itself: it must be the object the update is for. */
        struct cnode *name = value->kind == CN_MAP ? map_lookup(value, "name", NULL) : NULL;
        if (value->kind != CN_MAP)
            return cfg_fail_file(ld, "%s: expected a mapping", label);
        if (name == NULL)
            return cfg_fail_file(ld, "%s: the object has no name", label);
        if (!scalar_is(name, p->name))
            return cfg_fail_file(ld, "%s: the object is named \"%.*s\"", label, (int)name->len,
                                 name->s);
    }

    struct cnode *list = map_lookup(root, p->section, NULL);
    if (list == NULL || cfg_is_null(list)) {
        if (value == NULL || p->field != NULL)
            return cfg_fail_file(ld, "%s: the configuration has no %s", label, p->section);
        struct cnode *key = scalar_new(ld, p->section);
        struct cnode *seq = tr_arena_calloc(ld->tmp, 1, sizeof(*seq));
        if (key == NULL || seq == NULL)
            return cfg_oom(ld);
        seq->kind = CN_SEQ;
        if (list == NULL) {
            append_child(root, key);
            append_child(root, seq);
        } else {
            struct cnode *before = NULL;
            map_lookup(root, p->section, &before);
            struct cnode *k = before != NULL ? before->next : root->head;
            replace_child(root, k, list, seq);
        }
        list = seq;
    }
    if (list->kind != CN_SEQ)
        return cfg_fail(ld, list, "%s: expected a list", p->section);

    struct cnode *prev = NULL, *obj = NULL;
    for (struct cnode *it = list->head; it != NULL; prev = it, it = it->next) {
        if (it->kind == CN_MAP && scalar_is(map_lookup(it, "name", NULL), p->name)) {
            obj = it;
            break;
        }
    }
    if (p->field == NULL) {
        if (obj != NULL)
            replace_child(list, prev, obj, value);
        else if (value != NULL)
            append_child(list, value);
        else
            return cfg_fail_file(ld, "%s: no such object to remove", label);
        return true;
    }
    if (obj == NULL)
        return cfg_fail_file(ld, "%s: no such object", label);
    if (strcmp(p->field, "name") == 0)
        return cfg_fail_file(ld, "%s: the name cannot be changed by an update", label);
    struct cnode *before = NULL;
    struct cnode *old = map_lookup(obj, p->field, &before);
    if (old != NULL) {
        replace_child(obj, before != NULL ? before->next : obj->head, old, value);
        return true;
    }
    /* A field the object did not set: added (the schema walk judges the key). */
    struct cnode *key = scalar_new(ld, p->field);
    if (key == NULL)
        return cfg_oom(ld);
    append_child(obj, key);
    append_child(obj, value);
    return true;
}

bool cfg_apply_patches(struct ld *ld, struct cnode *root, const struct tr_config_patch *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!apply_one(ld, root, &p[i]))
            return false;
    return true;
}
