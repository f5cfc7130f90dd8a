/* libFuzzer target for the resource layer: any bytes give a set (possibly
 * empty) and findings, never a crash, leak, hang or undefined behaviour.
 * Every accessor runs on every node reached, and the set's tables must
 * agree with its load order: each resource is found by its key and among
 * its kind.
 *
 * Seeds (fuzz/corpus/fuzz_resource/): the istio-*.yaml files are copies of
 * Istio samples and test data (Apache-2.0, from the shared corpus; its
 * README names the commit); istio-reqauth-empty-entries.yaml is lines
 * 70-100 of validation/crds/reqauth-invalid.yaml, the others are whole
 * files. The rest were written for this target. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "resource/resource.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Nodes visited per input: an alias-heavy input may hold millions within
 * the node budget; a few thousand cover every accessor. */
#define VISIT_MAX 20000u

static size_t g_visited;

static void check(bool ok)
{
    if (!ok)
        abort();
}

static void visit(const struct tr_rnode *n, unsigned depth)
{
    if (n == NULL || g_visited++ >= VISIT_MAX)
        return;
    /* The depth limit holds for the tree as walked, aliases expanded. */
    check(depth < TR_RES_MAX_DEPTH || (depth == TR_RES_MAX_DEPTH && n->kind == TR_RNODE_SCALAR));
    check(n->line >= 1 && n->col >= 1);
    char buf[64];
    const char *s = NULL;
    bool b;
    int64_t i;
    double f;
    const char *what = tr_rnode_describe(n, buf, sizeof(buf));
    check(what != NULL && strlen(what) < sizeof(buf));
    check(tr_rnode_describe(n, buf, 8) != NULL);
    bool null = tr_rnode_is_null(n);
    check(tr_rnode_str(n, &s) == (n->kind == TR_RNODE_SCALAR && !null));
    if (n->kind == TR_RNODE_SCALAR) {
        check(n->s != NULL && n->s[n->len] == '\0' && n->head == NULL && n->n == 0);
        if (tr_rnode_bool(n, &b))
            check(n->plain);
        if (tr_rnode_int(n, &i))
            check(tr_rnode_double(n, &f));
        (void)tr_rnode_double(n, &f);
        check(tr_rnode_get(n, "a") == NULL && tr_rnode_key(n, "a") == NULL);
        return;
    }
    check(!tr_rnode_bool(n, &b) && !tr_rnode_int(n, &i) && !tr_rnode_double(n, &f));
    size_t count = 0;
    for (const struct tr_rnode *c = n->head; c != NULL; c = c->next)
        count++;
    check(count == n->n);
    if (n->kind == TR_RNODE_MAP) {
        check(n->n % 2 == 0);
        unsigned looked = 0;
        for (const struct tr_rnode *k = n->head; k != NULL; k = k->next->next) {
            check(k->kind == TR_RNODE_SCALAR && k->next != NULL);
            /* Keys are unique: each finds its own entry (a few per map, to
             * stay linear). */
            if (looked++ < 8 && memchr(k->s, '\0', k->len) == NULL) {
                check(tr_rnode_key(n, k->s) == k);
                check(tr_rnode_get(n, k->s) == k->next);
            }
            visit(k->next, depth + 1);
        }
        check(tr_rnode_get(n, "\x01 no such key") == NULL);
    } else {
        for (const struct tr_rnode *c = n->head; c != NULL; c = c->next)
            visit(c, depth + 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = tr_rset_from_buffer((const char *)data, size, "fuzz.yaml", &d);
    check(rs != NULL); /* NULL only when out of memory */
    g_visited = 0;
    size_t n = tr_rset_count(rs);
    check(tr_rset_at(rs, n) == NULL);
    for (size_t k = 0; k < n; k++) {
        const struct tr_resource *r = tr_rset_at(rs, k);
        check(r != NULL && r->index == k);
        check(r->kind != NULL && r->name != NULL && r->group != NULL && r->version != NULL);
        check(r->obj != NULL && r->obj->kind == TR_RNODE_MAP);
        check(strcmp(r->file, "fuzz.yaml") == 0);
        check(tr_rset_find(rs, r->group, r->kind, r->ns, r->name) == r);
        size_t m = 0;
        const struct tr_resource *const *same = tr_rset_of_kind(rs, r->group, r->kind, &m);
        bool found = false;
        for (size_t j = 0; j < m; j++) {
            check(strcmp(same[j]->kind, r->kind) == 0 && strcmp(same[j]->group, r->group) == 0);
            check(j == 0 || same[j]->index > same[j - 1]->index);
            found |= same[j] == r;
        }
        check(found);
        if (r->labels != NULL) {
            for (const struct tr_rnode *l = r->labels->head; l != NULL; l = l->next->next)
                check(tr_resource_label(r, l->s) != NULL);
        }
        visit(r->obj, 0);
    }
    /* Every finding formats, whatever it holds. */
    tr_diags_sort(&d);
    char line[256];
    for (size_t k = 0; k < d.n; k++) {
        check(d.v[k].msg != NULL);
        check(tr_diag_format(&d.v[k], line, sizeof(line)) > 0);
    }
    check(d.n_errors + d.n_warnings == d.n + d.dropped);
    tr_rset_free(rs);
    tr_diags_free(&d);
    return 0;
}
