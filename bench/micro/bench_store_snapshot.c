/* bench/micro/bench_store_snapshot.c: a watched store's snapshot after a
 * one-file change (docs/performance.md, "Control plane at scale": the
 * control plane takes such a snapshot after every edit).
 *
 * usage: bench_store_snapshot DIR FILE [ROUNDS]
 *
 * Opens tr_store_files_watched(DIR), takes a first snapshot (every file
 * read and parsed), then ROUNDS times (default 3) rewrites FILE (a file
 * under DIR, e.g. bench/control/gen_mesh.py's hot.yaml) with its text plus
 * one comment line that differs each round, and times the next snapshot.
 * Prints each time in milliseconds and the objects in the snapshot. FILE is
 * left with its original text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "micro.h"
#include "resource/resource.h"

static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf != NULL && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (nb == NULL)
                free(buf);
            buf = nb;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

static int spit(const char *path, const char *text, size_t len, const char *extra)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL)
        return -1;
    fwrite(text, 1, len, f);
    if (extra != NULL)
        fputs(extra, f);
    return fclose(f);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s DIR FILE [ROUNDS]\n", argv[0]);
        return 2;
    }
    int rounds = argc > 3 ? atoi(argv[3]) : 3;
    size_t len = 0;
    char *orig = slurp(argv[2], &len);
    if (orig == NULL) {
        perror(argv[2]);
        return 1;
    }
    const char *paths[] = {argv[1]};
    struct tr_store *s = tr_store_files_watched(paths, 1);
    if (s == NULL) {
        fprintf(stderr, "no store\n");
        return 1;
    }
    micro_print_machine(stdout);
    uint64_t t0 = micro_now_ns();
    struct tr_rset *rs = tr_store_snapshot(s, NULL);
    uint64_t t1 = micro_now_ns();
    if (rs == NULL) {
        fprintf(stderr, "no snapshot\n");
        return 1;
    }
    printf("first snapshot: %.1f ms, %zu objects\n", (double)(t1 - t0) / 1e6, tr_rset_count(rs));
    for (int i = 0; i < rounds; i++) {
        char extra[64];
        snprintf(extra, sizeof(extra), "# bench round %d\n", i);
        if (spit(argv[2], orig, len, extra) != 0) {
            perror(argv[2]);
            return 1;
        }
        tr_store_drain(s);
        t0 = micro_now_ns();
        struct tr_rset *next = tr_store_snapshot(s, NULL);
        t1 = micro_now_ns();
        if (next == NULL) {
            fprintf(stderr, "no snapshot\n");
            return 1;
        }
        printf("after a change of %s: %.1f ms, %zu objects\n", argv[2], (double)(t1 - t0) / 1e6,
               tr_rset_count(next));
        tr_rset_free(rs); /* the previous one lives until the next is taken, as in control */
        rs = next;
    }
    tr_rset_free(rs);
    tr_store_free(s);
    spit(argv[2], orig, len, NULL);
    free(orig);
    return 0;
}
