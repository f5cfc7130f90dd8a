/* config/load.c: file -> tree -> schema walk -> validate.
 *
 * The loader's parts are described in config/internal.h. The tree lives in
 * a scratch arena that is dropped when loading ends, so on success the
 * config arena holds nothing but the model, and on failure nothing survives.
 * The first error ends loading; its text is "FILE:LINE:COL: PATH: message".
 */
#include "config/load.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "config/internal.h"
#include "core/arena.h"

/* An empty config in its own arena, top-level defaults set. */
static struct tr_config *config_new(const char *name)
{
    struct tr_arena *arena = tr_arena_new(64 * 1024);
    struct tr_config *cfg = arena != NULL ? tr_arena_calloc(arena, 1, sizeof(*cfg)) : NULL;
    const char *file = cfg != NULL ? tr_arena_strdup(arena, name) : NULL;
    if (file == NULL) {
        tr_arena_free(arena);
        return NULL;
    }
    cfg->arena = arena;
    cfg->file = file;
    cfg_schema_defaults(&cfg_root_section, cfg);
    return cfg;
}

struct tr_config *tr_config_new(const char *name)
{
    return config_new(name != NULL ? name : "<config>");
}

void tr_cfg_tls_defaults(struct tr_tls_cfg *t)
{
    memset(t, 0, sizeof(*t));
    cfg_schema_defaults(&cfg_tls_section, t);
}

void tr_cfg_listener_defaults(struct tr_listener_cfg *l)
{
    memset(l, 0, sizeof(*l));
    cfg_schema_defaults(&cfg_listener_section, l);
}

/* The objects a compiler makes by the thousand start from a copy of their
 * defaults, made once (walking the schema's table for every route was a
 * twentieth of a mesh's compile). Compiles run on several threads: the
 * copies are made under pthread_once. Defaults hold only constants. */
static struct tr_route_cfg route_template;
static struct tr_cluster_cfg cluster_template;
static struct tr_endpoint_cfg endpoint_template;
static pthread_once_t templates_once = PTHREAD_ONCE_INIT;

static void templates_make(void)
{
    cfg_schema_defaults(&cfg_route_section, &route_template);
    cfg_schema_defaults(&cfg_cluster_section, &cluster_template);
    cfg_schema_defaults(&cfg_endpoint_section, &endpoint_template);
}

void tr_cfg_route_defaults(struct tr_route_cfg *r)
{
    pthread_once(&templates_once, templates_make);
    *r = route_template;
}

void tr_cfg_cluster_defaults(struct tr_cluster_cfg *c)
{
    pthread_once(&templates_once, templates_make);
    *c = cluster_template;
}

void tr_cfg_endpoint_defaults(struct tr_endpoint_cfg *e)
{
    pthread_once(&templates_once, templates_make);
    *e = endpoint_template;
}

/* Local route actions. */
void tr_cfg_redirect_defaults(struct tr_redirect_cfg *r)
{
    memset(r, 0, sizeof(*r));
    cfg_schema_defaults(&cfg_redirect_section, r);
}

void tr_cfg_original_dst_defaults(struct tr_original_dst_cfg *o)
{
    memset(o, 0, sizeof(*o));
    cfg_schema_defaults(&cfg_original_dst_section, o);
}

void tr_cfg_cors_defaults(struct tr_cors_cfg *c)
{
    memset(c, 0, sizeof(*c));
    cfg_schema_defaults(&cfg_cors_section, c);
}

static struct tr_config *load(const char *buf, size_t len, const char *name,
                              const struct tr_config_patch *patches, size_t n_patches, char **err)
{
    struct ld ld = {0};
    if (err != NULL)
        *err = NULL;
    if (name == NULL)
        name = "<config>";
    struct tr_config *cfg = config_new(name);
    ld.tmp = tr_arena_new(64 * 1024);
    if (cfg == NULL || ld.tmp == NULL) {
        tr_config_free(cfg);
        tr_arena_free(ld.tmp);
        if (err != NULL)
            *err = strdup("out of memory");
        return NULL;
    }
    ld.a = cfg->arena;
    ld.cfg = cfg;
    ld.file = cfg->file;
    /* Relative file names in the config are relative to its directory. */
    const char *slash = strrchr(name, '/');
    bool ok = true;
    if (slash == name)
        ld.dir = ""; /* "/x.yaml": "" + "/" + rel gives "/rel" */
    else if (slash != NULL &&
             (ld.dir = tr_arena_strndup(ld.a, name, (size_t)(slash - name))) == NULL)
        ok = cfg_oom(&ld);
    struct cnode *root = NULL;
    if (ok && buf == NULL && len != 0)
        ok = cfg_fail_file(&ld, "no input");
    if (ok && len > CFG_MAX_FILE_SIZE)
        ok = cfg_fail_file(&ld, "configuration is %zu bytes; the limit is %u bytes", len,
                           CFG_MAX_FILE_SIZE);
    if (ok && len != 0)
        ok = cfg_input_check(&ld, (const unsigned char *)buf, len);
    if (ok)
        ok = cfg_tree_build(&ld, len != 0 ? buf : "", len, &root);
    if (ok && (root == NULL || cfg_is_null(root)))
        ok = cfg_fail_file(
            &ld, "configuration is empty (expected a mapping with at least \"listeners\")");
    if (ok && root->kind != CN_MAP) {
        char b[96];
        ok = cfg_fail(&ld, root, "expected a mapping at the top level, got %s",
                      cfg_describe(root, b, sizeof(b)));
    }
    if (ok && cfg_refuse_kubernetes(&ld, root))
        ok = false;
    if (ok && n_patches > 0)
        ok = cfg_apply_patches(&ld, root, patches, n_patches);
    ld.root = root;
    if (ok)
        ok = cfg_schema_walk(&ld, root, &cfg_root_section, cfg, 0);
    if (ok)
        ok = cfg_validate(cfg, &ld, &ld.err);
    tr_arena_free(ld.tmp);
    if (!ok) {
        if (ld.err == NULL)
            ld.err = strdup("invalid configuration");
        if (err != NULL)
            *err = ld.err;
        else
            free(ld.err);
        tr_config_free(cfg);
        return NULL;
    }
    return cfg;
}

struct tr_config *tr_config_load_buffer(const char *buf, size_t len, const char *name, char **err)
{
    return load(buf, len, name, NULL, 0, err);
}

struct tr_config *tr_config_load_patched(const char *base, size_t base_len, const char *name,
                                         const struct tr_config_patch *patches, size_t n,
                                         char **err)
{
    return load(base, base_len, name, patches, n, err);
}

struct tr_config *tr_config_load_file(const char *path, char **err)
{
    size_t len = 0;
    char *buf = tr_config_read_file(path, &len, err);
    if (buf == NULL)
        return NULL;
    struct tr_config *cfg = tr_config_load_buffer(buf, len, path, err);
    free(buf);
    return cfg;
}

char *tr_config_read_file(const char *path, size_t *lenp, char **err)
{
    char msg[CFG_ERR_MAX];
    if (err != NULL)
        *err = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(msg, sizeof(msg), "%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || S_ISDIR(st.st_mode)) {
        snprintf(msg, sizeof(msg), "%s: cannot read: %s", path,
                 errno != 0 && !S_ISDIR(st.st_mode) ? strerror(errno) : "is a directory");
        close(fd);
        goto fail;
    }
    /* Read up to one byte past the limit, so oversize is detected even for
     * pipes and files whose size st_size does not tell. */
    size_t cap = 65536, len = 0;
    char *buf = malloc(cap);
    while (buf != NULL) {
        if (len == cap) {
            if (cap > CFG_MAX_FILE_SIZE)
                break;
            size_t ncap =
                cap * 2 > (size_t)CFG_MAX_FILE_SIZE + 1 ? (size_t)CFG_MAX_FILE_SIZE + 1 : cap * 2;
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
            snprintf(msg, sizeof(msg), "%s: cannot read: %s", path, strerror(errno));
            free(buf);
            close(fd);
            goto fail;
        }
        if (r == 0)
            break;
        len += (size_t)r;
    }
    close(fd);
    if (buf == NULL) {
        snprintf(msg, sizeof(msg), "%s: out of memory", path);
        goto fail;
    }
    *lenp = len;
    return buf;
fail:
    if (err != NULL)
        *err = strdup(msg);
    return NULL;
}

void tr_config_free(struct tr_config *cfg)
{
    if (cfg != NULL)
        tr_arena_free(cfg->arena); /* cfg itself lives in the arena */
}

int tr_cfg_loc_format(const struct tr_cfg_loc *loc, char *out, size_t size)
{
    const char *file = loc->file != NULL ? loc->file : "<config>";
    const char *path = loc->path != NULL ? loc->path : "";
    const char *sep = path[0] != '\0' ? ": " : "";
    const struct tr_cfg_origin *o = &loc->origin;
    if (o->kind != NULL || o->name != NULL) {
        /* A compiled object: the resource it came from, and where that was
         * read from when known. */
        char where[512] = "";
        if (loc->file != NULL && loc->line != 0)
            snprintf(where, sizeof(where), "%s:%u:%u: ", loc->file, loc->line, loc->col);
        else if (loc->file != NULL)
            snprintf(where, sizeof(where), "%s: ", loc->file);
        return snprintf(out, size, "%s%s%s%s%s%s: %s%s", where, o->kind != NULL ? o->kind : "",
                        o->kind != NULL ? " " : "", o->ns != NULL ? o->ns : "",
                        o->ns != NULL ? "/" : "", o->name != NULL ? o->name : "", path, sep);
    }
    if (loc->line == 0)
        return snprintf(out, size, "%s: %s%s", file, path, sep);
    return snprintf(out, size, "%s:%u:%u: %s%s", file, loc->line, loc->col, path, sep);
}

void tr_cfg_errorf(char **err, const struct tr_cfg_loc *loc, const char *fmt, ...)
{
    if (err == NULL)
        return;
    char prefix[512], msg[1024];
    static const struct tr_cfg_loc none = {0};
    tr_cfg_loc_format(loc != NULL ? loc : &none, prefix, sizeof(prefix));
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    char *out = NULL;
    if (asprintf(&out, "%s%s", prefix, msg) < 0)
        out = NULL;
    free(*err);
    *err = out;
}
