/* resource/store_files.c: the files-and-directories store (kubectl -f PATH
 * -R).
 *
 * Each snapshot reads the named paths afresh, in the order given. A named
 * file is read whatever its name; a named directory is walked: entries
 * whose names start with "." are skipped (editors' and VCS files, and the
 * "..data" directories of a mounted ConfigMap), files ending in .yaml, .yml
 * or .json are read in byte order of their paths, sub-directories are
 * walked. Directories are opened with openat(O_NOFOLLOW) relative to their
 * parent, so a symbolic link to a directory is never followed (no loops, no
 * escaping the tree; reported), while a symbolic link to a file is (a
 * mounted ConfigMap's files are such links). Entries are sorted with a
 * directory's name taken as "name/", which makes the depth-first walk visit
 * files in byte order of their whole paths.
 *
 * What gives no snapshot (NULL, reported): a named path that cannot be
 * opened, more files, directories, nesting or bytes than the limits in
 * resource/resource.h, running out of memory. Anything else (a file inside
 * a directory that cannot be read, a file over the size limit, any content
 * problem) is reported and left out of a snapshot that is still returned.
 *
 * A watched store keeps, per file, its text and parse (res_parsed) at the
 * last snapshot and its last text without errors: a snapshot still reads
 * every file (a few ms for megabytes, and no mtime or size can miss an
 * edit), but parses only the files whose bytes changed; an unchanged file's
 * kept parse is added to the new set as a parse would add it
 * (res_set_add_parsed). The parses of files a snapshot did not see are let
 * go after it. Its inotify events also say which files are being written
 * (created or modified, not yet closed): the control plane waits for their
 * close instead of reading half a file.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "resource/internal.h"

/* A watched store's memory of one file: its text at the last snapshot
 * that read it, and its last text without errors, each with its parse
 * (resource/internal.h: res_parsed), so that a snapshot parses only the
 * files whose text changed. */
struct cached {
    char *path;              /* owned */
    struct res_parsed *cur;  /* the text last read; NULL once the file was not seen */
    struct res_parsed *good; /* the last text without errors (may be cur); NULL: never good */
    bool seen;               /* read by the snapshot being taken */
};

/* A file written to and not closed since (a watched store's drain). */
struct open_write {
    int wd;         /* the watch of its directory, or of the named file itself */
    char *name;     /* owned; "" for a named file's own watch */
    uint64_t at_ms; /* its last write */
};

/* Files being written at once that are tracked; more are not (the quiet
 * time alone groups their writes, as before). A write older than this is
 * not waited for: a writer that keeps a file open without writing is not
 * saving it. */
#define OPEN_WRITES_MAX 64u
#define OPEN_WRITE_MS   1000u

struct files_store {
    struct tr_store base;
    char **paths; /* owned */
    size_t n;
    int ifd;           /* inotify, for a watched store; else -1 */
    struct cached **c; /* sorted by path */
    size_t n_c, cap_c;
    struct open_write open[OPEN_WRITES_MAX]; /* watched: files being written */
    size_t n_open;
};

/* One snapshot being read. */
struct walk {
    struct files_store *fs;
    struct tr_rset *rs;
    struct tr_diags *d;
    size_t files, dirs;
    bool fail; /* no snapshot: reported */
};

struct entry {
    char *name; /* owned */
    size_t len;
    bool dir;
};

static void walk_error(struct walk *w, const char *path, int err, const char *what)
{
    res_report(w->d, TR_DIAG_ERROR, path, 0, 0, "cannot %s: %s", what, strerror(err));
}

static void walk_oom(struct walk *w, const char *path)
{
    res_report(w->d, TR_DIAG_ERROR, path, 0, 0, "out of memory; no snapshot");
    w->fail = true;
}

static char *join(const char *dir, const char *name)
{
    size_t dl = strlen(dir), nl = strlen(name);
    bool slash = dl != 0 && dir[dl - 1] == '/';
    char *p = malloc(dl + nl + 2);
    if (p == NULL)
        return NULL;
    memcpy(p, dir, dl);
    if (!slash)
        p[dl++] = '/';
    memcpy(p + dl, name, nl + 1);
    return p;
}

/* The cache entry of path, made when there is none; NULL when out of
 * memory. */
static struct cached *cached_of(struct files_store *fs, const char *path)
{
    size_t lo = 0, hi = fs->n_c;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(fs->c[mid]->path, path);
        if (c == 0)
            return fs->c[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (fs->n_c == fs->cap_c) {
        size_t ncap = fs->cap_c != 0 ? fs->cap_c * 2 : 16;
        struct cached **nv = realloc(fs->c, ncap * sizeof(*nv));
        if (nv == NULL)
            return NULL;
        fs->c = nv;
        fs->cap_c = ncap;
    }
    struct cached *e = calloc(1, sizeof(*e));
    if (e == NULL || (e->path = strdup(path)) == NULL) {
        free(e);
        return NULL;
    }
    memmove(fs->c + lo + 1, fs->c + lo, (fs->n_c - lo) * sizeof(*fs->c));
    fs->c[lo] = e;
    fs->n_c++;
    return e;
}

/* A watched store: a file whose text has errors is replaced, in this
 * snapshot, by its last text without errors (a half-saved or mistyped edit
 * leaves that file's resources as they were, and the other files' in force);
 * a file without errors becomes its new last good text. The errors are
 * reported either way. A text equal to the one read last time is not
 * parsed again: its kept parse is added (res_set_add_parsed), which gives
 * the resources and findings a parse would. Takes buf. */
static void read_watched(struct walk *w, char *buf, size_t len, const char *path)
{
    struct cached *c = cached_of(w->fs, path);
    if (c == NULL) {
        free(buf);
        walk_oom(w, path);
        return;
    }
    c->seen = true;
    struct res_parsed *cur = c->cur;
    if (cur != NULL && cur->len == len && memcmp(cur->text, buf, len) == 0) {
        free(buf);
    } else {
        cur = res_parsed_new(buf, len, path, true);
        if (cur == NULL) {
            walk_oom(w, path);
            return;
        }
        res_parsed_release(c->cur);
        c->cur = cur;
    }
    struct res_parsed *use = cur;
    if (cur->bad && c->good != NULL) {
        /* The text read below reports its own findings; a replaced one's
         * are reported here. */
        for (size_t i = 0; w->d != NULL && i < cur->diags.n; i++)
            tr_diags_add(w->d, cur->diags.v[i].severity, &cur->diags.v[i].where, "%s",
                         cur->diags.v[i].msg);
        res_report(w->d, TR_DIAG_WARNING, path, 0, 0,
                   "has errors: its last version without errors stays in force until it is "
                   "fixed");
        use = c->good;
    } else if (!cur->bad && c->good != cur) {
        res_parsed_release(c->good);
        c->good = res_parsed_ref(cur);
    }
    /* (never good: read as it is, the broken documents left out) */
    if (!res_set_add_parsed(w->rs, use, path, w->d))
        w->fail = true; /* out of memory, reported */
    else if (w->rs->spent != NULL)
        w->fail = true; /* a snapshot budget ran out, reported */
}

/* After a snapshot: what is kept of files it did not read is let go, their
 * last good text too. A deleted file's resources are gone; if it comes back
 * with errors, nothing of its old text returns (and the memory is bounded
 * by the files present, not by every path ever seen). Keeps the order. */
static void cache_sweep(struct files_store *fs)
{
    size_t k = 0;
    for (size_t i = 0; i < fs->n_c; i++) {
        struct cached *e = fs->c[i];
        if (e->seen) {
            fs->c[k++] = e;
            continue;
        }
        free(e->path);
        res_parsed_release(e->cur);
        res_parsed_release(e->good);
        free(e);
    }
    fs->n_c = k;
}

/* A watched file that cannot be read now (too big, a read error): its last
 * good text stays in force, as for a file with errors. */
static void fall_back(struct walk *w, const char *path)
{
    if (w->fs->ifd < 0)
        return;
    struct cached *c = cached_of(w->fs, path);
    if (c == NULL || c->good == NULL)
        return;
    c->seen = true;
    res_report(w->d, TR_DIAG_WARNING, path, 0, 0,
               "cannot be read: its last version without errors stays in force");
    if (!res_set_add_parsed(w->rs, c->good, path, w->d))
        w->fail = true;
    else if (w->rs->spent != NULL)
        w->fail = true;
}

/* Reads an open file (fd is closed) into the set under path. */
static void read_file(struct walk *w, int fd, const struct stat *st, const char *path)
{
    if (++w->files > TR_RES_MAX_FILES) {
        res_report(w->d, TR_DIAG_ERROR, path, 0, 0,
                   "more than %u files in the snapshot; no snapshot", TR_RES_MAX_FILES);
        w->fail = true;
        close(fd);
        return;
    }
    if (S_ISREG(st->st_mode) && (uint64_t)st->st_size > TR_RES_MAX_FILE_SIZE) {
        res_report(w->d, TR_DIAG_ERROR, path, 0, 0,
                   "%lld bytes; the limit is %u bytes; the file is not read",
                   (long long)st->st_size, TR_RES_MAX_FILE_SIZE);
        close(fd);
        fall_back(w, path);
        return;
    }
    /* Up to one byte past the limit, so that growth since fstat and pipes
     * are caught too. */
    size_t cap = S_ISREG(st->st_mode) && st->st_size > 0 ? (size_t)st->st_size + 1 : 65536;
    size_t len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (len == cap) {
            if (cap > TR_RES_MAX_FILE_SIZE)
                break;
            size_t ncap = cap * 2 > (size_t)TR_RES_MAX_FILE_SIZE + 1
                              ? (size_t)TR_RES_MAX_FILE_SIZE + 1
                              : cap * 2;
            char *nb = realloc(buf, ncap);
            if (nb == NULL) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = nb;
            cap = ncap;
        }
        ssize_t r = read(fd, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            walk_error(w, path, errno, "read");
            free(buf);
            close(fd);
            fall_back(w, path);
            return;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (buf == NULL) {
        walk_oom(w, path);
        return;
    }
    if (w->fs->ifd >= 0) {
        read_watched(w, buf, len, path);
        return;
    }
    if (!res_set_add_buffer(w->rs, buf, len, path, w->d))
        w->fail = true; /* out of memory, reported */
    else if (w->rs->spent != NULL)
        w->fail = true; /* a snapshot budget ran out, reported */
    free(buf);
}

static bool wanted(const char *name, size_t len)
{
    static const char *const ext[] = {".yaml", ".yml", ".json"};
    for (size_t i = 0; i < sizeof(ext) / sizeof(ext[0]); i++) {
        size_t el = strlen(ext[i]);
        if (len > el && memcmp(name + len - el, ext[i], el) == 0)
            return true;
    }
    return false;
}

/* Byte i of the entry's sort key: its name, then "/" for a directory. */
static int key_at(const struct entry *e, size_t i)
{
    if (i < e->len)
        return (unsigned char)e->name[i];
    return i == e->len && e->dir ? '/' : -1;
}

static int entry_order(const void *pa, const void *pb)
{
    const struct entry *a = pa, *b = pb;
    for (size_t i = 0;; i++) {
        int ca = key_at(a, i), cb = key_at(b, i);
        if (ca != cb)
            return ca < cb ? -1 : 1;
        if (ca < 0)
            return 0;
    }
}

static void walk_dir(struct walk *w, int dfd, const char *path, unsigned depth);

/* One entry of the directory open at dfd. */
static void walk_entry(struct walk *w, int dfd, const char *dpath, const struct entry *e,
                       unsigned depth)
{
    char *path = join(dpath, e->name);
    if (path == NULL) {
        walk_oom(w, dpath);
        return;
    }
    if (e->dir) {
        if (depth + 1 > TR_RES_MAX_DIR_DEPTH) {
            res_report(w->d, TR_DIAG_ERROR, path, 0, 0,
                       "directories nested more than %u deep; no snapshot", TR_RES_MAX_DIR_DEPTH);
            w->fail = true;
        } else {
            int cfd = openat(dfd, e->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (cfd < 0)
                walk_error(w, path, errno, "open directory");
            else
                walk_dir(w, cfd, path, depth + 1);
        }
        free(path);
        return;
    }
    /* Follows a symbolic link to a file; O_NONBLOCK: a FIFO put in its
     * place since the listing must not block the snapshot. */
    int fd = openat(dfd, e->name, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    struct stat st;
    if (fd < 0) {
        walk_error(w, path, errno, "open");
    } else if (fstat(fd, &st) != 0) {
        walk_error(w, path, errno, "stat");
        close(fd);
    } else if (S_ISDIR(st.st_mode)) {
        res_report(w->d, TR_DIAG_WARNING, path, 0, 0,
                   "a symbolic link to a directory is not followed; not read");
        close(fd);
    } else if (!S_ISREG(st.st_mode)) {
        res_report(w->d, TR_DIAG_WARNING, path, 0, 0, "not a regular file; not read");
        close(fd);
    } else {
        read_file(w, fd, &st, path);
    }
    free(path);
}

/* Walks the directory open at dfd (closed here). */
#define WATCH_MASK                                                                                 \
    (IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_CREATE | IN_DELETE | IN_DELETE_SELF |       \
     IN_MOVE_SELF | IN_MODIFY | IN_ATTRIB)

static void walk_dir(struct walk *w, int dfd, const char *path, unsigned depth)
{
    /* Watching each directory as it is read: one added since the last
     * snapshot is watched from this one on (adding a watch twice is a
     * no-op). */
    if (w->fs->ifd >= 0 && inotify_add_watch(w->fs->ifd, path, WATCH_MASK) < 0)
        res_report(w->d, TR_DIAG_WARNING, path, 0, 0, "cannot watch for changes: %s",
                   strerror(errno));
    if (++w->dirs > TR_RES_MAX_DIRS) {
        res_report(w->d, TR_DIAG_ERROR, path, 0, 0,
                   "more than %u directories in the snapshot; no snapshot", TR_RES_MAX_DIRS);
        w->fail = true;
        close(dfd);
        return;
    }
    DIR *dir = fdopendir(dfd);
    if (dir == NULL) {
        walk_error(w, path, errno, "read directory");
        close(dfd);
        return;
    }
    struct entry *v = NULL;
    size_t n = 0, cap = 0;
    bool listed = true;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(dir);
        if (de == NULL) {
            if (errno != 0) {
                walk_error(w, path, errno, "read directory");
                listed = false;
            }
            break;
        }
        if (de->d_name[0] == '.')
            continue; /* also "." and ".." */
        size_t len = strlen(de->d_name);
        bool dir_entry;
        if (de->d_type == DT_DIR) {
            dir_entry = true;
        } else if (de->d_type == DT_REG || de->d_type == DT_LNK) {
            dir_entry = false;
        } else {
            struct stat st;
            if (fstatat(dirfd(dir), de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0)
                continue; /* gone since the listing */
            dir_entry = S_ISDIR(st.st_mode);
            if (!dir_entry && !S_ISREG(st.st_mode) && !S_ISLNK(st.st_mode)) {
                if (wanted(de->d_name, len)) {
                    char *p = join(path, de->d_name);
                    res_report(w->d, TR_DIAG_WARNING, p != NULL ? p : path, 0, 0,
                               "not a regular file; not read");
                    free(p);
                }
                continue;
            }
        }
        if (!dir_entry && !wanted(de->d_name, len)) {
            struct stat st; /* a link to a directory is worth a word: it is not walked */
            if (de->d_type == DT_LNK && fstatat(dirfd(dir), de->d_name, &st, 0) == 0 &&
                S_ISDIR(st.st_mode)) {
                char *p = join(path, de->d_name);
                res_report(w->d, TR_DIAG_WARNING, p != NULL ? p : path, 0, 0,
                           "a symbolic link to a directory is not followed; not read");
                free(p);
            }
            continue;
        }
        /* Bounded: past the limits the snapshot fails anyway. */
        if (n >= (size_t)TR_RES_MAX_FILES + TR_RES_MAX_DIRS) {
            res_report(w->d, TR_DIAG_ERROR, path, 0, 0,
                       "more than %u files and %u directories; no snapshot", TR_RES_MAX_FILES,
                       TR_RES_MAX_DIRS);
            w->fail = true;
            break;
        }
        if (n == cap) {
            size_t ncap = cap != 0 ? cap * 2 : 32;
            struct entry *nv = realloc(v, ncap * sizeof(*nv));
            if (nv == NULL) {
                walk_oom(w, path);
                break;
            }
            v = nv;
            cap = ncap;
        }
        char *name = strdup(de->d_name);
        if (name == NULL) {
            walk_oom(w, path);
            break;
        }
        v[n++] = (struct entry){name, len, dir_entry};
    }
    if (listed && !w->fail && n != 0) {
        qsort(v, n, sizeof(*v), entry_order);
        for (size_t i = 0; i < n && !w->fail; i++)
            walk_entry(w, dirfd(dir), path, &v[i], depth);
    }
    for (size_t i = 0; i < n; i++)
        free(v[i].name);
    free(v);
    closedir(dir);
}

/* A path named by the user: a file (any name) or a directory. */
static void read_path(struct walk *w, const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        int err = errno;
        res_report(w->d, TR_DIAG_ERROR, path, 0, 0, "cannot %s: %s; no snapshot",
                   fd < 0 ? "open" : "stat", strerror(err));
        if (fd >= 0)
            close(fd);
        w->fail = true;
        return;
    }
    if (S_ISDIR(st.st_mode)) {
        walk_dir(w, fd, path, 0);
    } else {
        /* A named file saved by rename (most editors, a ConfigMap's symlink
         * swap) is a new inode: watch the name again at every snapshot. */
        if (w->fs->ifd >= 0)
            inotify_add_watch(w->fs->ifd, path, WATCH_MASK);
        read_file(w, fd, &st, path);
    }
}

static struct tr_rset *files_snapshot(struct tr_store *s, struct tr_diags *d)
{
    struct files_store *fs = (struct files_store *)s;
    struct tr_rset *rs = res_set_new();
    if (rs == NULL) {
        res_report(d, TR_DIAG_ERROR, NULL, 0, 0, "out of memory; no snapshot");
        return NULL;
    }
    struct walk w = {.fs = fs, .rs = rs, .d = d};
    for (size_t i = 0; i < fs->n_c; i++)
        fs->c[i]->seen = false;
    for (size_t i = 0; i < fs->n && !w.fail; i++)
        read_path(&w, fs->paths[i]);
    if (!w.fail && !res_set_seal(rs, d)) {
        res_report(d, TR_DIAG_ERROR, NULL, 0, 0, "out of memory; no snapshot");
        w.fail = true;
    }
    if (w.fail) {
        tr_rset_free(rs);
        return NULL;
    }
    if (fs->ifd >= 0)
        cache_sweep(fs);
    return rs;
}

static void files_destroy(struct tr_store *s)
{
    struct files_store *fs = (struct files_store *)s;
    for (size_t i = 0; i < fs->n; i++)
        free(fs->paths[i]);
    free(fs->paths);
    for (size_t i = 0; i < fs->n_c; i++) {
        free(fs->c[i]->path);
        res_parsed_release(fs->c[i]->cur);
        res_parsed_release(fs->c[i]->good);
        free(fs->c[i]);
    }
    free(fs->c);
    for (size_t i = 0; i < fs->n_open; i++)
        free(fs->open[i].name);
    if (fs->ifd >= 0)
        close(fs->ifd);
    free(fs);
}

static int files_change_fd(struct tr_store *s)
{
    return ((struct files_store *)s)->ifd;
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* One event for the files being written: a write (created, modified)
 * adds or refreshes (wd, name), an end (closed after writing, moved away,
 * deleted) removes it. */
static void note_write(struct files_store *fs, const struct inotify_event *e, uint64_t now)
{
    const char *name = e->len != 0 ? e->name : "";
    if ((e->mask & IN_ISDIR) ||
        (name[0] != '\0' && (name[0] == '.' || !wanted(name, strlen(name)))))
        return; /* not a file a snapshot reads: editors' swap files stay open */
    size_t i = 0;
    while (i < fs->n_open && !(fs->open[i].wd == e->wd && strcmp(fs->open[i].name, name) == 0))
        i++;
    bool end = (e->mask & (IN_CLOSE_WRITE | IN_MOVED_FROM | IN_MOVED_TO | IN_DELETE |
                           IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) != 0;
    if (end) {
        if (i < fs->n_open) {
            free(fs->open[i].name);
            fs->open[i] = fs->open[--fs->n_open];
        }
    } else if ((e->mask & (IN_CREATE | IN_MODIFY)) != 0) {
        if (i < fs->n_open) {
            fs->open[i].at_ms = now;
        } else if (fs->n_open < OPEN_WRITES_MAX) {
            char *copy = strdup(name);
            if (copy != NULL) /* else not tracked: the quiet time alone applies */
                fs->open[fs->n_open++] = (struct open_write){e->wd, copy, now};
        }
    }
}

static bool files_drain(struct tr_store *s)
{
    struct files_store *fs = (struct files_store *)s;
    char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
    bool any = false;
    uint64_t now = mono_ms();
    for (;;) {
        ssize_t n = read(fs->ifd, buf, sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return any;
        any = true;
        for (ssize_t o = 0; o + (ssize_t)sizeof(struct inotify_event) <= n;) {
            const struct inotify_event *e = (const struct inotify_event *)(buf + o);
            if (e->mask & IN_Q_OVERFLOW) { /* events lost: nothing known is waited for */
                for (size_t i = 0; i < fs->n_open; i++)
                    free(fs->open[i].name);
                fs->n_open = 0;
            } else {
                note_write(fs, e, now);
            }
            o += (ssize_t)sizeof(*e) + (ssize_t)e->len;
        }
    }
}

static bool files_writing(struct tr_store *s)
{
    struct files_store *fs = (struct files_store *)s;
    uint64_t now = mono_ms();
    for (size_t i = 0; i < fs->n_open; i++)
        if (now - fs->open[i].at_ms < OPEN_WRITE_MS)
            return true;
    return false;
}

static const struct tr_store_ops files_ops = {
    .snapshot = files_snapshot,
    .destroy = files_destroy,
};

static const struct tr_store_ops watched_ops = {
    .snapshot = files_snapshot,
    .destroy = files_destroy,
    .change_fd = files_change_fd,
    .drain = files_drain,
    .writing = files_writing,
};

static struct tr_store *files_new(const char *const *paths, size_t n, bool watched)
{
    struct files_store *fs = calloc(1, sizeof(*fs));
    if (fs == NULL)
        return NULL;
    fs->base.ops = watched ? &watched_ops : &files_ops;
    fs->ifd = -1;
    fs->paths = calloc(n != 0 ? n : 1, sizeof(*fs->paths));
    if (fs->paths == NULL) {
        free(fs);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        fs->paths[i] = strdup(paths[i] != NULL ? paths[i] : "");
        if (fs->paths[i] == NULL) {
            fs->n = i;
            files_destroy(&fs->base);
            return NULL;
        }
    }
    fs->n = n;
    if (watched) {
        fs->ifd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
        /* Named files are watched directly; directories as they are walked. */
        for (size_t i = 0; fs->ifd >= 0 && i < n; i++)
            inotify_add_watch(fs->ifd, fs->paths[i], WATCH_MASK);
        if (fs->ifd < 0) {
            files_destroy(&fs->base);
            return NULL;
        }
    }
    return &fs->base;
}

struct tr_store *tr_store_files(const char *const *paths, size_t n)
{
    return files_new(paths, n, false);
}

struct tr_store *tr_store_files_watched(const char *const *paths, size_t n)
{
    return files_new(paths, n, true);
}
