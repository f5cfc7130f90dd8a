/* Unit tests for resource/store_files.c: what a directory walk reads and in
 * which order, what it skips (and says so), symbolic links, the limits, and
 * what gives no snapshot at all. Each test builds its tree in a fresh
 * temporary directory and removes it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "resource/resource.h"

static char g_root[64];

static int rm_one(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

static int setup(void **state)
{
    (void)state;
    snprintf(g_root, sizeof(g_root), "/tmp/trellis-store-XXXXXX");
    return mkdtemp(g_root) != NULL ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    return nftw(g_root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

/* g_root/rel */
static const char *at(const char *rel)
{
    static char paths[8][512];
    static int next;
    char *p = paths[next++ % 8];
    snprintf(p, 512, "%s/%s", g_root, rel);
    return p;
}

static void write_at(const char *rel, const char *text)
{
    FILE *f = fopen(at(rel), "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void mkdir_at(const char *rel)
{
    assert_int_equal(mkdir(at(rel), 0755), 0);
}

static void service(const char *rel, const char *name)
{
    char text[256];
    snprintf(text, sizeof(text), "apiVersion: v1\nkind: Service\nmetadata:\n  name: %s\n", name);
    write_at(rel, text);
}

static struct tr_rset *snapshot(const char *const *paths, size_t n, struct tr_diags *d)
{
    struct tr_store *s = tr_store_files(paths, n);
    assert_non_null(s);
    struct tr_rset *rs = tr_store_snapshot(s, d);
    tr_store_free(s);
    return rs;
}

static bool has_finding(const struct tr_diags *d, enum tr_diag_severity sev, const char *file,
                        const char *text)
{
    for (size_t i = 0; i < d->n; i++) {
        if (d->v[i].severity == sev && d->v[i].where.file != NULL &&
            strcmp(d->v[i].where.file, file) == 0 && strstr(d->v[i].msg, text) != NULL)
            return true;
    }
    return false;
}

static void dump(const struct tr_diags *d)
{
    char buf[1024];
    for (size_t i = 0; i < d->n; i++) {
        tr_diag_format(&d->v[i], buf, sizeof(buf));
        fprintf(stderr, "  finding: %s\n", buf);
    }
}

static void test_walk_order_and_skips(void **state)
{
    (void)state;
    mkdir_at("tree");
    service("tree/b.yaml", "b");
    service("tree/a.yaml", "a1");
    mkdir_at("tree/a");
    service("tree/a/x.yaml", "ax");
    service("tree/a-b.yaml", "ab");
    service("tree/A.yml", "upper");
    write_at("tree/c.json",
             "{\"apiVersion\": \"v1\", \"kind\": \"Service\", \"metadata\": {\"name\": \"c\"}}\n");
    service("tree/notes.txt", "not-read");
    service("tree/x.YAML", "not-read-either"); /* extensions are case-sensitive, as kubectl's */
    service("tree/.hidden.yaml", "hidden");
    mkdir_at("tree/.git");
    service("tree/.git/config.yaml", "hidden-dir");
    mkdir_at("tree/sub");
    mkdir_at("tree/sub/deeper");
    service("tree/sub/deeper/z.yaml", "z");
    mkdir_at("outside");
    service("outside/target.yaml", "target");
    assert_int_equal(symlink("../outside/target.yaml", at("tree/link.yaml")), 0);
    assert_int_equal(symlink("a", at("tree/dirlink")), 0);
    assert_int_equal(symlink(".", at("tree/loop.yaml")), 0);
    assert_int_equal(symlink("nowhere.yaml", at("tree/dangling.yaml")), 0);
    assert_int_equal(mkfifo(at("tree/fifo.yaml"), 0600), 0);

    const char *paths[] = {at("tree")};
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = snapshot(paths, 1, &d);
    assert_non_null(rs);
    /* Byte order of whole paths: "A.yml" < "a-b.yaml" < "a.yaml" <
     * "a/x.yaml" < "b.yaml" < "c.json" < "link.yaml" < "sub/deeper/z.yaml". */
    const char *want[] = {"upper", "ab", "a1", "ax", "b", "c", "target", "z"};
    if (tr_rset_count(rs) != sizeof(want) / sizeof(want[0]))
        dump(&d);
    assert_int_equal(tr_rset_count(rs), sizeof(want) / sizeof(want[0]));
    for (size_t i = 0; i < tr_rset_count(rs); i++)
        assert_string_equal(tr_rset_at(rs, i)->name, want[i]);
    assert_string_equal(tr_rset_at(rs, 3)->file, at("tree/a/x.yaml"));
    assert_string_equal(tr_rset_at(rs, 6)->file, at("tree/link.yaml"));

    /* What was skipped and is worth a word; nothing else. */
    assert_true(has_finding(&d, TR_DIAG_WARNING, at("tree/dirlink"),
                            "a symbolic link to a directory is not followed"));
    assert_true(has_finding(&d, TR_DIAG_WARNING, at("tree/loop.yaml"),
                            "a symbolic link to a directory is not followed"));
    assert_true(has_finding(&d, TR_DIAG_WARNING, at("tree/fifo.yaml"), "not a regular file"));
    assert_true(has_finding(&d, TR_DIAG_ERROR, at("tree/dangling.yaml"),
                            "cannot open: No such file or directory"));
    if (d.n != 4)
        dump(&d);
    assert_int_equal(d.n, 4);
    assert_int_equal(d.n_errors, 1);
    tr_rset_free(rs);
    tr_diags_free(&d);

    /* A trailing slash makes no double slash. */
    char slash[512];
    snprintf(slash, sizeof(slash), "%s/", at("tree/sub"));
    const char *p2[] = {slash};
    rs = snapshot(p2, 1, NULL);
    assert_int_equal(tr_rset_count(rs), 1);
    assert_string_equal(tr_rset_at(rs, 0)->file, at("tree/sub/deeper/z.yaml"));
    tr_rset_free(rs);
}

static void test_named_paths(void **state)
{
    (void)state;
    service("one.txt", "one"); /* named: read whatever its extension */
    service("two.yaml", "two");
    mkdir_at("empty");
    const char *paths[] = {at("two.yaml"), at("empty"), at("one.txt")};
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = snapshot(paths, 3, &d);
    assert_int_equal(d.n, 0);
    assert_int_equal(tr_rset_count(rs), 2);
    assert_string_equal(tr_rset_at(rs, 0)->name, "two"); /* in the order given */
    assert_string_equal(tr_rset_at(rs, 1)->name, "one");
    tr_rset_free(rs);

    /* A named path that cannot be opened: no snapshot. */
    const char *missing[] = {at("two.yaml"), at("nope")};
    rs = snapshot(missing, 2, &d);
    assert_null(rs);
    assert_int_equal(d.n, 1);
    assert_true(has_finding(&d, TR_DIAG_ERROR, at("nope"), "cannot open: No such file"));
    tr_diags_free(&d);

    /* No path at all: an empty snapshot. */
    rs = snapshot(NULL, 0, &d);
    assert_non_null(rs);
    assert_int_equal(tr_rset_count(rs), 0);
    tr_rset_free(rs);
}

static void test_snapshots_read_afresh(void **state)
{
    (void)state;
    mkdir_at("live");
    service("live/a.yaml", "first");
    const char *paths[] = {at("live")};
    struct tr_store *s = tr_store_files(paths, 1);
    assert_non_null(s);
    struct tr_rset *one = tr_store_snapshot(s, NULL);
    service("live/a.yaml", "second");
    service("live/b.yaml", "added");
    struct tr_rset *two = tr_store_snapshot(s, NULL);
    tr_store_free(s);
    /* The first snapshot is the caller's: it outlives the store and the
     * change. */
    assert_int_equal(tr_rset_count(one), 1);
    assert_string_equal(tr_rset_at(one, 0)->name, "first");
    assert_int_equal(tr_rset_count(two), 2);
    assert_string_equal(tr_rset_at(two, 0)->name, "second");
    assert_string_equal(tr_rset_at(two, 1)->name, "added");
    tr_rset_free(one);
    tr_rset_free(two);
}

/* A watched file that turns unreadable or too big keeps its last good text
 * in force (fail static), and a deleted file's old text never returns. */
static void test_watched_unreadable_and_deleted(void **state)
{
    (void)state;
    mkdir_at("u");
    service("u/a.yaml", "a-good");
    const char *paths[] = {at("u")};
    struct tr_store *s = tr_store_files_watched(paths, 1);
    assert_non_null(s);
    struct tr_rset *rs = tr_store_snapshot(s, NULL);
    assert_non_null(tr_rset_find(rs, "", "Service", NULL, "a-good"));
    tr_rset_free(rs);
    /* too big now (sparse): the good text stays */
    assert_int_equal(truncate(at("u/a.yaml"), (off_t)TR_RES_MAX_FILE_SIZE + 10), 0);
    struct tr_diags d;
    tr_diags_init(&d);
    rs = tr_store_snapshot(s, &d);
    assert_non_null(rs);
    assert_non_null(tr_rset_find(rs, "", "Service", NULL, "a-good"));
    assert_true(has_finding(&d, TR_DIAG_WARNING, at("u/a.yaml"), "cannot be read"));
    tr_diags_free(&d);
    tr_rset_free(rs);
    /* deleted, then written back with errors: nothing of the old text */
    assert_int_equal(unlink(at("u/a.yaml")), 0);
    rs = tr_store_snapshot(s, NULL);
    assert_int_equal(tr_rset_count(rs), 0);
    tr_rset_free(rs);
    write_at("u/a.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [\n");
    rs = tr_store_snapshot(s, NULL);
    assert_null(tr_rset_find(rs, "", "Service", NULL, "a-good"));
    tr_rset_free(rs);
    tr_store_free(s);
}

/* A watched store tells about changes and keeps each file's last text
 * without errors in place of a broken one; other files are read afresh. */
static void test_watched_keeps_last_good(void **state)
{
    (void)state;
    mkdir_at("w");
    service("w/a.yaml", "a-first");
    service("w/b.yaml", "b-first");
    const char *paths[] = {at("w")};
    struct tr_store *s = tr_store_files_watched(paths, 1);
    assert_non_null(s);
    int fd = tr_store_change_fd(s);
    assert_true(fd >= 0);
    struct tr_rset *rs = tr_store_snapshot(s, NULL);
    assert_int_equal(tr_rset_count(rs), 2);
    tr_rset_free(rs);
    assert_false(tr_store_drain(s)); /* nothing changed since */

    write_at("w/a.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: [\n");
    service("w/b.yaml", "b-second");
    struct pollfd p = {.fd = fd, .events = POLLIN};
    assert_int_equal(poll(&p, 1, 2000), 1);
    assert_true(tr_store_drain(s));
    struct tr_diags d;
    tr_diags_init(&d);
    rs = tr_store_snapshot(s, &d);
    assert_non_null(rs);
    assert_int_equal(tr_rset_count(rs), 2);
    assert_non_null(tr_rset_find(rs, "", "Service", NULL, "a-first")); /* the last good a.yaml */
    assert_non_null(tr_rset_find(rs, "", "Service", NULL, "b-second"));
    assert_true(d.n_errors > 0);
    if (!has_finding(&d, TR_DIAG_WARNING, at("w/a.yaml"), "last version without errors"))
        dump(&d);
    assert_true(has_finding(&d, TR_DIAG_WARNING, at("w/a.yaml"), "last version without errors"));
    tr_diags_free(&d);
    tr_rset_free(rs);

    /* fixed: the new text is read, and becomes the last good one */
    service("w/a.yaml", "a-fixed");
    rs = tr_store_snapshot(s, NULL);
    assert_non_null(tr_rset_find(rs, "", "Service", NULL, "a-fixed"));
    tr_rset_free(rs);

    /* a file that never parsed is read as it is (its good documents kept) */
    write_at("w/c.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: c-ok}\n---\n: [\n");
    rs = tr_store_snapshot(s, NULL);
    assert_non_null(tr_rset_find(rs, "", "Service", NULL, "c-ok"));
    tr_rset_free(rs);

    /* a new sub-directory is watched from the next snapshot on */
    mkdir_at("w/sub");
    rs = tr_store_snapshot(s, NULL);
    tr_rset_free(rs);
    tr_store_drain(s);
    service("w/sub/d.yaml", "d");
    assert_int_equal(poll(&p, 1, 2000), 1);
    assert_true(tr_store_drain(s));
    tr_store_free(s);

    /* an unwatched store has no descriptor */
    s = tr_store_files(paths, 1);
    assert_int_equal(tr_store_change_fd(s), -1);
    assert_false(tr_store_drain(s));
    tr_store_free(s);
}

static void test_duplicates_across_files(void **state)
{
    (void)state;
    mkdir_at("dup");
    write_at("dup/1.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: a}\n");
    write_at("dup/2.yaml", "# another\napiVersion: v1\nkind: Service\nmetadata: {name: web, "
                           "namespace: a}\n");
    const char *paths[] = {at("dup")};
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = snapshot(paths, 1, &d);
    assert_int_equal(tr_rset_count(rs), 1);
    assert_string_equal(tr_rset_at(rs, 0)->file, at("dup/1.yaml"));
    assert_int_equal(d.n, 1);
    char buf[1024], want[1024];
    tr_diag_format(&d.v[0], buf, sizeof(buf));
    snprintf(want, sizeof(want),
             "%s:2:1: error: Service a/web: duplicate object: Service a/web is already defined at "
             "%s:1:1; the first one is kept",
             at("dup/2.yaml"), at("dup/1.yaml"));
    assert_string_equal(buf, want);
    tr_rset_free(rs);
    tr_diags_free(&d);
}

static void test_file_size_limit(void **state)
{
    (void)state;
    mkdir_at("size");
    service("size/ok.yaml", "ok");
    /* A sparse file one byte over the limit: refused from its size, not read. */
    int fd = open(at("size/big.yaml"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)TR_RES_MAX_FILE_SIZE + 1), 0);
    close(fd);
    const char *paths[] = {at("size")};
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = snapshot(paths, 1, &d);
    assert_non_null(rs);
    assert_int_equal(tr_rset_count(rs), 1);
    assert_int_equal(d.n, 1);
    assert_true(has_finding(&d, TR_DIAG_ERROR, at("size/big.yaml"),
                            "16777217 bytes; the limit is 16777216 bytes; the file is not read"));
    tr_rset_free(rs);
    tr_diags_free(&d);
}

static void test_depth_limit(void **state)
{
    (void)state;
    /* 32 directories below the named one are walked; the 33rd is refused. */
    char rel[1024] = "deep";
    mkdir_at(rel);
    for (unsigned i = 1; i <= TR_RES_MAX_DIR_DEPTH; i++) {
        strcat(rel, "/d");
        mkdir_at(rel);
    }
    char file[1100];
    snprintf(file, sizeof(file), "%s/s.yaml", rel);
    service(file, "deepest");
    const char *paths[] = {at("deep")};
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = snapshot(paths, 1, &d);
    assert_non_null(rs);
    assert_int_equal(d.n, 0);
    assert_int_equal(tr_rset_count(rs), 1);
    tr_rset_free(rs);

    strcat(rel, "/d");
    mkdir_at(rel);
    rs = snapshot(paths, 1, &d);
    assert_null(rs);
    assert_int_equal(d.n, 1);
    assert_true(has_finding(&d, TR_DIAG_ERROR, at(rel), "directories nested more than 32 deep"));
    tr_diags_free(&d);
}

static void test_file_count_limit(void **state)
{
    (void)state;
    mkdir_at("many");
    char rel[64];
    for (unsigned i = 0; i < TR_RES_MAX_FILES; i++) {
        snprintf(rel, sizeof(rel), "many/%05u.yaml", i);
        write_at(rel, "");
    }
    const char *paths[] = {at("many")};
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = snapshot(paths, 1, &d);
    assert_non_null(rs); /* exactly at the limit */
    assert_int_equal(d.n, 0);
    tr_rset_free(rs);

    service("extra.yaml", "extra");
    const char *more[] = {at("many"), at("extra.yaml")};
    rs = snapshot(more, 2, &d);
    assert_null(rs);
    assert_int_equal(d.n, 1);
    assert_true(has_finding(&d, TR_DIAG_ERROR, at("extra.yaml"), "more than 10000 files"));
    tr_diags_free(&d);
}

/* ------------------------------------------- watched = read afresh */

static bool str_eq(const char *a, const char *b)
{
    return a == b || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* Two node trees alike: kind, quoting, position, text and every child. */
static bool rnode_eq(const struct tr_rnode *a, const struct tr_rnode *b)
{
    if (a == NULL || b == NULL)
        return a == b;
    if (a->kind != b->kind || a->plain != b->plain || a->line != b->line || a->col != b->col ||
        a->len != b->len || a->n != b->n)
        return false;
    if ((a->s == NULL) != (b->s == NULL) || (a->s != NULL && memcmp(a->s, b->s, a->len) != 0))
        return false;
    const struct tr_rnode *x = a->head, *y = b->head;
    for (; x != NULL && y != NULL; x = x->next, y = y->next) {
        if (!rnode_eq(x, y))
            return false;
    }
    return x == NULL && y == NULL;
}

/* Same resources in the same order, same trees, same lookups. */
static void assert_rset_eq(const struct tr_rset *a, const struct tr_rset *b)
{
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(tr_rset_count(a), tr_rset_count(b));
    for (size_t i = 0; i < tr_rset_count(a); i++) {
        const struct tr_resource *x = tr_rset_at(a, i), *y = tr_rset_at(b, i);
        assert_true(str_eq(x->api_version, y->api_version));
        assert_true(str_eq(x->group, y->group));
        assert_true(str_eq(x->version, y->version));
        assert_true(str_eq(x->kind, y->kind));
        assert_true(str_eq(x->ns, y->ns));
        assert_true(str_eq(x->name, y->name));
        assert_true(str_eq(x->file, y->file));
        assert_int_equal(x->doc, y->doc);
        assert_int_equal(x->line, y->line);
        assert_int_equal(x->col, y->col);
        assert_int_equal(x->index, y->index);
        assert_true(rnode_eq(x->obj, y->obj));
        assert_true(rnode_eq(x->labels, y->labels));
        assert_true(rnode_eq(x->annotations, y->annotations));
        assert_true(rnode_eq(x->spec, y->spec));
        assert_ptr_equal(tr_rset_find(b, x->group, x->kind, x->ns, x->name), y);
        size_t na = 0, nb = 0;
        const struct tr_resource *const *ka = tr_rset_of_kind(a, x->group, x->kind, &na);
        const struct tr_resource *const *kb = tr_rset_of_kind(b, y->group, y->kind, &nb);
        assert_int_equal(na, nb);
        for (size_t k = 0; k < na; k++)
            assert_int_equal(ka[k]->index, kb[k]->index);
    }
}

static int str_order(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Same findings: formatted, sorted (and the same counts). */
static void assert_diags_eq(const struct tr_diags *a, const struct tr_diags *b)
{
    if (a->n != b->n) {
        fprintf(stderr, "watched:\n");
        dump(a);
        fprintf(stderr, "afresh:\n");
        dump(b);
    }
    assert_int_equal(a->n, b->n);
    assert_int_equal(a->n_errors, b->n_errors);
    assert_int_equal(a->n_warnings, b->n_warnings);
    char **fa = calloc(a->n + 1, sizeof(*fa)), **fb = calloc(b->n + 1, sizeof(*fb));
    assert_non_null(fa);
    assert_non_null(fb);
    for (size_t i = 0; i < a->n; i++) {
        fa[i] = malloc(1024);
        fb[i] = malloc(1024);
        tr_diag_format(&a->v[i], fa[i], 1024);
        tr_diag_format(&b->v[i], fb[i], 1024);
    }
    qsort(fa, a->n, sizeof(*fa), str_order);
    qsort(fb, b->n, sizeof(*fb), str_order);
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(fa[i], fb[i]) != 0)
            fprintf(stderr, "watched: %s\nafresh:  %s\n", fa[i], fb[i]);
        assert_string_equal(fa[i], fb[i]);
        free(fa[i]);
        free(fb[i]);
    }
    free(fa);
    free(fb);
}

/* A snapshot of the watched store and one of a fresh unwatched store of
 * the same paths: both NULL, or alike; the findings alike either way. The
 * watched one is returned (NULL when none), *fresh the other. */
static struct tr_rset *compare_once(struct tr_store *watched, const char *const *paths, size_t n,
                                    struct tr_rset **fresh)
{
    struct tr_diags dw, df;
    tr_diags_init(&dw);
    tr_diags_init(&df);
    struct tr_rset *w = tr_store_snapshot(watched, &dw);
    struct tr_rset *f = snapshot(paths, n, &df);
    assert_diags_eq(&dw, &df);
    assert_true((w == NULL) == (f == NULL));
    if (w != NULL)
        assert_rset_eq(w, f);
    tr_diags_free(&dw);
    tr_diags_free(&df);
    *fresh = f;
    return w;
}

/* A ConfigMap whose data holds nested aliases worth about 2.5 million
 * nodes: one such file fits the node budget, two do not. */
static void heavy(const char *rel, const char *name)
{
    char text[2048];
    int o = snprintf(text, sizeof(text),
                     "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: %s}\ndata:\n"
                     "  l0: &a0 [x, x, x, x, x, x, x, x, x, x]\n",
                     name);
    for (int l = 1; l <= 5; l++) {
        o += snprintf(text + o, sizeof(text) - (size_t)o, "  l%d: &a%d [", l, l);
        for (int k = 0; k < 10; k++)
            o += snprintf(text + o, sizeof(text) - (size_t)o, "%s*a%d", k ? ", " : "", l - 1);
        o += snprintf(text + o, sizeof(text) - (size_t)o, "]\n");
    }
    snprintf(text + o, sizeof(text) - (size_t)o, "  l6: [*a5, *a5]\n");
    write_at(rel, text);
}

/* The watched store parses only the files whose text changed; its
 * snapshots are what reading everything afresh gives, edit after edit:
 * same resources, order, node trees and findings. */
static void test_watched_equals_fresh(void **state)
{
    (void)state;
    mkdir_at("eq");
    mkdir_at("eq/sub");
    write_at("eq/a.yaml",
             "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: shop\n"
             "  labels: &l {app: web, tier: front}\nspec:\n  selector: *l\n"
             "  ports: [{port: 80, name: \"http\"}]\n---\n---\n"
             "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\n"
             "metadata: {name: web, namespace: shop}\n"
             "spec:\n  hosts: [web]\n  http:\n  - route: &r\n    - destination: {host: web}\n"
             "  - route: *r\n");
    write_at("eq/b.yaml", "apiVersion: v1\nkind: List\nitems:\n"
                          "- {apiVersion: v1, kind: Service, metadata: {name: b1}}\n"
                          "- {apiVersion: v1, kind: Service, metadata: {name: b2, namespace: x}}\n"
                          "- {apiVersion: v1, kind: Service, metadata: {name: 12}}\n");
    /* a document, then a syntax error (never good: read as it is) */
    write_at("eq/c.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: c-ok}\n---\n: [\n");
    /* object errors beside a good object */
    write_at("eq/d.yaml", "apiVersion: v1\nkind: Service\nmetadata: {namespace: Bad_NS}\n---\n"
                          "apiversion: v1\nkind: Pod\nmetadata: {name: p}\n---\n"
                          "apiVersion: v1\nkind: Pod\nmetadata: {name: d-ok}\n");
    /* a duplicate of a.yaml's Service */
    write_at("eq/e.yaml", "# again\napiVersion: v1\nkind: Service\nmetadata: {name: web, "
                          "namespace: shop}\n");
    write_at("eq/f.json", "{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": "
                          "{\"name\": \"f\"}, \"data\": {\"k\": \"v\"}}\n");
    /* libfyaml's empty entry (parsed twice) */
    write_at("eq/sub/g.yaml",
             "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: g\ndata:\n  k:\n  -\n  n: 1\n");
    write_at("eq/sub/empty.yaml", "");
    write_at("eq/sub/bad-utf8.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: \xff}\n");
    heavy("eq/sub/heavy1.yaml", "heavy1");
    int fd = open(at("eq/sub/huge.yaml"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(ftruncate(fd, (off_t)TR_RES_MAX_FILE_SIZE + 1), 0);
    close(fd);

    char eq[512], eq_b[512]; /* at()'s buffers are reused */
    snprintf(eq, sizeof(eq), "%s", at("eq"));
    snprintf(eq_b, sizeof(eq_b), "%s", at("eq/b.yaml"));
    const char *paths[] = {eq, eq_b}; /* b.yaml twice: a duplicate of each */
    struct tr_store *s = tr_store_files_watched(paths, 2);
    assert_non_null(s);
    struct tr_rset *f1 = NULL, *f = NULL;
    struct tr_rset *w1 = compare_once(s, paths, 2, &f1);
    assert_non_null(w1);
    assert_true(tr_rset_count(w1) >= 8);
    /* nothing changed: the kept parses */
    struct tr_rset *w = compare_once(s, paths, 2, &f);
    tr_rset_free(w);
    tr_rset_free(f);

    /* change, add, delete, rename; a broken file broken differently */
    write_at("eq/a.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop, "
                          "labels: {app: web2}}\n");
    write_at("eq/sub/new.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: b1}\n");
    assert_int_equal(unlink(at("eq/d.yaml")), 0);
    assert_int_equal(rename(at("eq/e.yaml"), at("eq/0-e.yaml")), 0);
    write_at("eq/c.yaml", "apiVersion: v1\nkind: Service\nmetadata: {name: c-ok}\n  bad: [\n");
    w = compare_once(s, paths, 2, &f);
    assert_non_null(w);
    tr_rset_free(w);
    tr_rset_free(f);

    /* a second heavy file: each fits alone, both pass the node budget (no
     * snapshot); the first one's kept parse counts as a parse would */
    heavy("eq/sub/heavy2.yaml", "heavy2");
    w = compare_once(s, paths, 2, &f);
    assert_null(w);
    assert_int_equal(unlink(at("eq/sub/heavy1.yaml")), 0);
    w = compare_once(s, paths, 2, &f);
    assert_non_null(w);
    tr_rset_free(w);
    tr_rset_free(f);

    /* the d.yaml deleted above comes back, as before */
    write_at("eq/d.yaml", "apiVersion: v1\nkind: Pod\nmetadata: {name: d-back}\n");
    w = compare_once(s, paths, 2, &f);

    /* a good file broken: its last good text stays (the set it gave) */
    write_at("eq/f.json", "{\"apiVersion\": \"v1\", \"kind\": ");
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *kept = tr_store_snapshot(s, &d);
    assert_rset_eq(kept, w);
    assert_true(has_finding(&d, TR_DIAG_WARNING, at("eq/f.json"), "last version without errors"));
    assert_true(has_finding(&d, TR_DIAG_ERROR, at("eq/f.json"), "YAML syntax error"));
    tr_diags_free(&d);
    tr_rset_free(kept);
    tr_rset_free(w);
    tr_rset_free(f);

    /* snapshots outlive later ones and the store */
    tr_store_free(s);
    assert_rset_eq(w1, f1);
    tr_rset_free(w1);
    tr_rset_free(f1);
}

/* ----------------------------------------- files being written */

/* Whether the watched store says a file is being written, after its
 * events are drained. */
static bool writing_now(struct tr_store *s)
{
    struct pollfd p = {.fd = tr_store_change_fd(s), .events = POLLIN};
    poll(&p, 1, 100);
    tr_store_drain(s);
    return tr_store_writing(s);
}

/* A file written to and not closed is being written, until it is closed,
 * moved away or deleted; files a snapshot does not read (an editor's swap
 * file, a temporary name) never are; a named file's own writes count. */
static void test_watched_writing(void **state)
{
    (void)state;
    mkdir_at("wr");
    service("wr/a.yaml", "a");
    write_at("wr/named.yaml", "");
    char dir[512], named[512];
    snprintf(dir, sizeof(dir), "%s", at("wr"));
    snprintf(named, sizeof(named), "%s", at("wr/named.yaml"));
    const char *paths[] = {dir};
    struct tr_store *s = tr_store_files_watched(paths, 1);
    assert_non_null(s);
    struct tr_rset *rs = tr_store_snapshot(s, NULL); /* watches the directory */
    assert_non_null(rs);
    tr_rset_free(rs);
    assert_false(tr_store_writing(s));

    int fd = open(at("wr/a.yaml"), O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "apiVersion: v1\n", 15), 15);
    assert_true(writing_now(s)); /* half a file */
    assert_int_equal(write(fd, "kind: Service\nmetadata: {name: a}\n", 34), 34);
    assert_true(writing_now(s));
    close(fd);
    assert_false(writing_now(s)); /* closed: complete */

    /* a new file, then deleted while open */
    fd = open(at("wr/b.yaml"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_true(writing_now(s));
    assert_int_equal(unlink(at("wr/b.yaml")), 0);
    assert_false(writing_now(s));
    close(fd);

    /* written under a temporary name, then renamed into place */
    fd = open(at("wr/c.yaml.tmp"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "a: 1\n", 5), 5);
    assert_false(writing_now(s));
    close(fd);
    assert_int_equal(rename(at("wr/c.yaml.tmp"), at("wr/c.yaml")), 0);
    assert_false(writing_now(s));

    /* an editor's swap file stays open for writing: not waited for */
    fd = open(at("wr/.a.yaml.swp"), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x", 1), 1);
    assert_false(writing_now(s));
    close(fd);
    tr_store_free(s);

    /* a named file (watched itself) */
    const char *one[] = {named};
    s = tr_store_files_watched(one, 1);
    assert_non_null(s);
    rs = tr_store_snapshot(s, NULL);
    tr_rset_free(rs);
    fd = open(named, O_WRONLY | O_TRUNC);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "apiVersion: v1\n", 15), 15);
    assert_true(writing_now(s));
    close(fd);
    assert_false(writing_now(s));
    tr_store_free(s);

    /* an unwatched store never says */
    s = tr_store_files(paths, 1);
    assert_non_null(s);
    assert_false(tr_store_writing(s));
    tr_store_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_walk_order_and_skips, setup, teardown),
        cmocka_unit_test_setup_teardown(test_named_paths, setup, teardown),
        cmocka_unit_test_setup_teardown(test_snapshots_read_afresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicates_across_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_size_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_depth_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_count_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watched_keeps_last_good, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watched_unreadable_and_deleted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watched_equals_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_watched_writing, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
