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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
