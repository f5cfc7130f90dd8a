/* up/stage.c: the workloads `trellis up` runs (one per Pod), their
 * addresses, and the staged copy of the resources the compiler reads (the
 * Pods given the addresses and the sidecar label `up` provides). */
#include <arpa/inet.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "up/up.h"

static void where_of(const struct tr_resource *r, const struct tr_rnode *n, const char *path,
                     struct tr_diag_where *w)
{
    memset(w, 0, sizeof(*w));
    w->file = r->file;
    w->line = n ? n->line : r->line;
    w->col = n ? n->col : r->col;
    w->kind = r->kind;
    w->ns = r->ns;
    w->name = r->name;
    w->path = path;
}

static const char *str_at(const struct tr_rnode *map, const char *key)
{
    const char *s = NULL;
    const struct tr_rnode *v = tr_rnode_get(map, key);
    if (v != NULL && v->kind == TR_RNODE_SCALAR && tr_rnode_str(v, &s))
        return s;
    return NULL;
}

/* 198.18.0.0/15 as host-order numbers. */
#define NET_LO 0xC6120000u /* 198.18.0.0 */
#define NET_HI 0xC613FFFFu /* 198.19.255.255 */

static bool parse_ip(const char *s, uint32_t *out)
{
    struct in_addr a;
    if (s == NULL || inet_pton(AF_INET, s, &a) != 1)
        return false;
    *out = ntohl(a.s_addr);
    return true;
}

static void ip_text(uint32_t v, char out[16])
{
    struct in_addr a = {.s_addr = htonl(v)};
    inet_ntop(AF_INET, &a, out, 16);
}

/* A FNV-1a hash keeps long namespace names unique and short. */
static void netns_name(const char *ns, const char *name, char out[TR_UP_NAME_MAX])
{
    int n = snprintf(out, TR_UP_NAME_MAX, "%s%s-%s", TR_UP_NETNS_PREFIX, ns, name);
    if (n >= 0 && n < 48)
        return;
    uint32_t h = 2166136261u;
    for (const char *p = ns; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ '/') * 16777619u;
    for (const char *p = name; *p; p++)
        h = (h ^ (uint8_t)*p) * 16777619u;
    char head[40];
    snprintf(head, sizeof(head), "%s%s-%s", TR_UP_NETNS_PREFIX, ns, name);
    snprintf(out, TR_UP_NAME_MAX, "%.38s-%08x", head, h);
}

/* NULL-terminated copy of a list of scalars appended to v (n entries). */
static bool push_strs(char ***v, size_t *n, const struct tr_rnode *seq)
{
    for (const struct tr_rnode *e = seq ? seq->head : NULL; e; e = e->next) {
        const char *s;
        if (e->kind != TR_RNODE_SCALAR || !tr_rnode_str(e, &s))
            return false;
        char **nv = realloc(*v, (*n + 2) * sizeof(char *));
        if (nv == NULL)
            return false;
        *v = nv;
        if ((nv[*n] = strdup(s)) == NULL)
            return false;
        nv[++*n] = NULL;
    }
    return true;
}

static bool opt_out(const struct tr_resource *r)
{
    const char *k = "sidecar.istio.io/inject";
    const char *v = tr_resource_label(r, k);
    if (v == NULL)
        v = str_at(r->annotations, k);
    return v != NULL && strcmp(v, "false") == 0;
}

/* containers[0]: what runs, its environment and ports; what `up` cannot do
 * is reported, never dropped silently. */
static int read_container(struct tr_up_workload *w, const struct tr_resource *r, struct tr_diags *d)
{
    struct tr_diag_where wh;
    const struct tr_rnode *cs = tr_rnode_get(r->spec, "containers");
    if (cs == NULL || cs->kind != TR_RNODE_SEQ || cs->head == NULL) {
        where_of(r, cs, "spec.containers", &wh);
        tr_diags_add(d, TR_DIAG_WARNING, &wh, "no containers: only the sidecar runs");
        return 0;
    }
    const struct tr_rnode *c = cs->head;
    if (cs->n > 1) {
        where_of(r, c->next, "spec.containers[1]", &wh);
        tr_diags_add(d, TR_DIAG_WARNING, &wh,
                     "trellis up runs containers[0] only; the other %zu containers do not run",
                     cs->n - 1);
    }
    static const char *const ignored[] = {"image",        "imagePullPolicy", "resources",
                                          "volumeMounts", "securityContext", "workingDir"};
    for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++) {
        const struct tr_rnode *k = tr_rnode_key(c, ignored[i]);
        if (k == NULL)
            continue;
        char path[64];
        snprintf(path, sizeof(path), "spec.containers[0].%s", ignored[i]);
        where_of(r, k, path, &wh);
        tr_diags_add(d, TR_DIAG_WARNING, &wh,
                     "ignored by trellis up: command and args run as processes on this "
                     "machine%s",
                     strcmp(ignored[i], "workingDir") == 0
                         ? " in the directory of the file that holds the Pod"
                         : "");
    }
    size_t n = 0;
    if (!push_strs(&w->argv, &n, tr_rnode_get(c, "command")) ||
        !push_strs(&w->argv, &n, tr_rnode_get(c, "args"))) {
        where_of(r, tr_rnode_get(c, "command"), "spec.containers[0].command", &wh);
        tr_diags_add(d, TR_DIAG_ERROR, &wh, "command and args must be lists of strings");
        return -1;
    }
    if (n == 0 || tr_rnode_get(c, "command") == NULL) {
        where_of(r, c, "spec.containers[0].command", &wh);
        tr_diags_add(d, TR_DIAG_WARNING, &wh,
                     "no command (the image's entrypoint cannot run here): only the sidecar "
                     "runs");
        for (size_t i = 0; w->argv && w->argv[i]; i++)
            free(w->argv[i]);
        free(w->argv);
        w->argv = NULL;
    }
    size_t ne = 0;
    const struct tr_rnode *env = tr_rnode_get(c, "env");
    size_t i = 0;
    for (const struct tr_rnode *e = env ? env->head : NULL; e; e = e->next, i++) {
        const char *name = str_at(e, "name"), *value = str_at(e, "value");
        char path[64];
        snprintf(path, sizeof(path), "spec.containers[0].env[%zu]", i);
        if (name == NULL || tr_rnode_get(e, "valueFrom") != NULL) {
            where_of(r, e, path, &wh);
            tr_diags_add(d, TR_DIAG_WARNING, &wh,
                         "only name and value are read (valueFrom needs the Kubernetes API): "
                         "left out");
            continue;
        }
        char **nv = realloc(w->env, (ne + 2) * sizeof(char *));
        if (nv == NULL)
            return -1;
        w->env = nv;
        size_t len = strlen(name) + strlen(value ? value : "") + 2;
        if ((nv[ne] = malloc(len)) == NULL)
            return -1;
        snprintf(nv[ne], len, "%s=%s", name, value ? value : "");
        nv[++ne] = NULL;
    }
    const struct tr_rnode *ports = tr_rnode_get(c, "ports");
    for (const struct tr_rnode *p = ports ? ports->head : NULL; p; p = p->next) {
        int64_t v;
        if (tr_rnode_int(tr_rnode_get(p, "containerPort"), &v) && v > 0 && v < 65536 &&
            w->n_ports < TR_UP_MAX_PORTS)
            w->ports[w->n_ports++] = (uint16_t)v;
    }
    return 0;
}

static const char *keep_lookup(const char *keep, const char *ns, const char *name, char *out)
{
    char want[600];
    snprintf(want, sizeof(want), "%s/%s ", ns, name);
    for (const char *p = keep; p && *p;) {
        const char *eol = strchr(p, '\n');
        size_t len = eol ? (size_t)(eol - p) : strlen(p);
        size_t wl = strlen(want);
        if (len > wl && len - wl < 16 && strncmp(p, want, wl) == 0) {
            memcpy(out, p + wl, len - wl);
            out[len - wl] = '\0';
            return out;
        }
        p = eol ? eol + 1 : p + len;
    }
    return NULL;
}

int tr_up_workloads(struct tr_up *u, const struct tr_rset *rs, const char *keep, struct tr_diags *d)
{
    size_t n;
    const struct tr_resource *const *pods = tr_rset_of_kind(rs, "", "Pod", &n);
    u->w = calloc(n ? n : 1, sizeof(*u->w));
    u->n = 0;
    if (u->w == NULL)
        return -1;
    size_t errors = d->n_errors;
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = pods[i];
        struct tr_up_workload *w = &u->w[u->n++];
        struct tr_diag_where wh;
        w->ns = strdup(r->ns ? r->ns : "default");
        w->name = strdup(r->name);
        const char *sa = str_at(r->spec, "serviceAccountName");
        if (sa == NULL)
            sa = str_at(r->spec, "serviceAccount");
        w->sa = strdup(sa ? sa : "default");
        if (w->ns == NULL || w->name == NULL || w->sa == NULL)
            return -1;
        w->sidecar = !opt_out(r);
        netns_name(w->ns, w->name, w->netns);
        snprintf(w->veth, sizeof(w->veth), "trl-v%u", (unsigned)(i % 100000u));
        char path[PATH_MAX];
        if (realpath(r->file, path) == NULL) {
            where_of(r, NULL, NULL, &wh);
            tr_diags_add(d, TR_DIAG_ERROR, &wh, "cannot resolve the file's path: %s",
                         strerror(errno));
            continue;
        }
        w->cwd = strdup(dirname(path));
        if (w->cwd == NULL || read_container(w, r, d) != 0)
            continue;
        const struct tr_rnode *status = tr_rnode_get(r->obj, "status");
        const char *ip = str_at(status, "podIP");
        if (ip != NULL && ip[0] == '\0')
            ip = NULL; /* "": not scheduled yet, as Kubernetes writes it */
        char kept[16];
        uint32_t v;
        if (ip != NULL && u->loopback) {
            where_of(r, tr_rnode_get(status, "podIP"), "status.podIP", &wh);
            tr_diags_add(d, TR_DIAG_WARNING, &wh,
                         "loopback mode: \"%s\" is replaced by an address from 127.77.0.0/16 "
                         "(in the staged copy; your file is unchanged)",
                         ip);
            ip = NULL;
        }
        if (ip != NULL) {
            if (parse_ip(ip, &v) && v >= NET_LO && v < NET_LO + 10) {
                where_of(r, tr_rnode_get(status, "podIP"), "status.podIP", &wh);
                tr_diags_add(d, TR_DIAG_ERROR, &wh,
                             "198.18.0.0 to 198.18.0.9 are trellis up's own (198.18.0.1: the "
                             "control plane): \"%s\" is one",
                             ip);
                continue;
            }
            if (!parse_ip(ip, &v) || v < NET_LO || v > NET_HI) {
                where_of(r, tr_rnode_get(status, "podIP"), "status.podIP", &wh);
                tr_diags_add(d, TR_DIAG_ERROR, &wh,
                             "trellis up gives workloads addresses in 198.18.0.0/15 (RFC 2544, "
                             "never routed): \"%s\" is not one",
                             ip);
                continue;
            }
            w->ip_given = true;
            snprintf(w->ip, sizeof(w->ip), "%s", ip);
        } else if (keep_lookup(keep, w->ns, w->name, kept) != NULL) {
            snprintf(w->ip, sizeof(w->ip), "%s", kept);
        }
    }
    /* Two workloads on one address would make one of them unreachable. */
    for (size_t i = 0; i < u->n; i++)
        for (size_t j = 0; j < i; j++)
            if (u->w[i].ip[0] && strcmp(u->w[i].ip, u->w[j].ip) == 0) {
                struct tr_diag_where wh;
                where_of(pods[i], NULL, "status.podIP", &wh);
                tr_diags_add(d, TR_DIAG_ERROR, &wh, "address %s is also Pod %s/%s's", u->w[i].ip,
                             u->w[j].ns, u->w[j].name);
            }
    /* The rest get the lowest free addresses from 198.18.0.10 (loopback
     * mode: 127.77.0.10) up. */
    uint32_t lo = u->loopback ? TR_UP_LO_POD_NET : NET_LO;
    uint32_t hi = u->loopback ? TR_UP_LO_POD_NET + 0xFFFFu : NET_HI;
    uint32_t next = lo + 10;
    for (size_t i = 0; i < u->n; i++) {
        if (u->w[i].ip[0])
            continue;
        for (;; next++) {
            char t[16];
            ip_text(next, t);
            bool used = false;
            for (size_t j = 0; j < u->n && !used; j++)
                used = strcmp(u->w[j].ip, t) == 0;
            if (!used)
                break;
        }
        if (next > hi - 1)
            return -1;
        ip_text(next++, u->w[i].ip);
    }
    /* The application's address and the outbound listeners': 127.0.0.1 and
     * 127.0.0.2 in a namespace of its own; on the shared loopback, the Pod
     * address's host part in 127.78/16 and 127.79/16. */
    for (size_t i = 0; i < u->n; i++) {
        struct tr_up_workload *w = &u->w[i];
        if (!u->loopback) {
            snprintf(w->app_ip, sizeof(w->app_ip), "%s", TR_UP_APP_IP);
            snprintf(w->out_ip, sizeof(w->out_ip), "%s", TR_UP_OUTBOUND_IP);
            continue;
        }
        uint32_t a;
        if (!parse_ip(w->ip, &a) || (a & 0xFFFF0000u) != TR_UP_LO_POD_NET) {
            struct tr_diag_where wh;
            where_of(pods[i], NULL, "status.podIP", &wh);
            tr_diags_add(d, TR_DIAG_ERROR, &wh,
                         "loopback mode: address %s is not in 127.77.0.0/16 (a state directory "
                         "of the other mode?)",
                         w->ip);
            continue;
        }
        ip_text(TR_UP_LO_APP_NET | (a & 0xFFFFu), w->app_ip);
        ip_text(TR_UP_LO_OUT_NET | (a & 0xFFFFu), w->out_ip);
    }
    return d->n_errors > errors ? -1 : 0;
}

static uint32_t fnv1a(const char *a, const char *b)
{
    uint32_t h = 2166136261u;
    for (const char *p = a; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    h = (h ^ '/') * 16777619u;
    for (const char *p = b; *p; p++)
        h = (h ^ (unsigned char)*p) * 16777619u;
    return h;
}

static bool ip_taken(const struct tr_up *u, const char *t)
{
    for (size_t j = 0; j < u->n; j++)
        if (strcmp(u->w[j].ip, t) == 0)
            return true;
    for (size_t j = 0; j < u->n_vips; j++)
        if (strcmp(u->vips[j].ip, t) == 0)
            return true;
    return false;
}

static int vip_cmp(const void *a, const void *b)
{
    const struct tr_up_vip *x = a, *y = b;
    int c = strcmp(x->ns, y->ns);
    return c ? c : strcmp(x->name, y->name);
}

int tr_up_vips(struct tr_up *u, const struct tr_rset *rs, struct tr_diags *d)
{
    size_t n;
    const struct tr_resource *const *svcs = tr_rset_of_kind(rs, "", "Service", &n);
    u->vips = calloc(n ? n : 1, sizeof(*u->vips));
    u->n_vips = 0;
    if (u->vips == NULL)
        return -1;
    /* Given addresses first, so an allocated one never takes them. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++) {
            const struct tr_resource *r = svcs[i];
            const char *cip = str_at(r->spec, "clusterIP");
            uint32_t v;
            /* loopback destinations are never captured */
            bool given = cip != NULL && parse_ip(cip, &v) && v != 0 && (v >> 24) != 127;
            if (cip != NULL && strcmp(cip, "None") == 0)
                continue; /* headless: names resolve to Pods, not written here */
            if (given != (pass == 0))
                continue;
            if (cip != NULL && cip[0] != '\0' && !given && pass == 1) {
                struct tr_diag_where wh;
                where_of(r, tr_rnode_get(r->spec, "clusterIP"), "spec.clusterIP", &wh);
                tr_diags_add(d, TR_DIAG_WARNING, &wh,
                             "trellis up: \"%s\" is not an IPv4 address capture can redirect: "
                             "the Service gets a virtual IP from 198.19.128.0/17",
                             cip);
            }
            struct tr_up_vip *s = &u->vips[u->n_vips];
            s->ns = strdup(r->ns ? r->ns : "default");
            s->name = strdup(r->name);
            if (s->ns == NULL || s->name == NULL) {
                free(s->ns);
                free(s->name);
                return -1;
            }
            u->n_vips++;
            s->given = given;
            if (!given)
                continue;
            /* One address, one destination: as Kubernetes refuses a
             * clusterIP taken, and a Pod's address is not a Service's. */
            if (ip_taken(u, cip)) {
                struct tr_diag_where wh;
                where_of(r, tr_rnode_get(r->spec, "clusterIP"), "spec.clusterIP", &wh);
                tr_diags_add(d, TR_DIAG_ERROR, &wh,
                             "trellis up: clusterIP %s is already another Service's or a Pod's "
                             "address",
                             cip);
            }
            snprintf(s->ip, sizeof(s->ip), "%s", cip);
        }
    /* Sorted, so that the probing below does not depend on file order. */
    qsort(u->vips, u->n_vips, sizeof(*u->vips), vip_cmp);
    for (size_t i = 0; i < u->n_vips; i++) {
        struct tr_up_vip *s = &u->vips[i];
        if (s->given)
            continue;
        uint32_t h = fnv1a(s->ns, s->name);
        for (uint32_t k = 0; k < TR_UP_VIP_SIZE; k++) {
            uint32_t off = (h + k) % TR_UP_VIP_SIZE;
            if (off == 0 || off == TR_UP_VIP_SIZE - 1)
                continue;
            char t[16];
            ip_text(TR_UP_VIP_NET + off, t);
            if (!ip_taken(u, t)) {
                snprintf(s->ip, sizeof(s->ip), "%s", t);
                break;
            }
        }
    }
    return 0;
}

bool tr_up_vip_needs_route(const char *ip)
{
    uint32_t v;
    return parse_ip(ip, &v) && (v < NET_LO || v > NET_HI);
}

const char *tr_up_vip_of(const struct tr_up *u, const char *host, const char *ns)
{
    char h[256], *lab[4] = {NULL};
    if (strlen(host) >= sizeof(h))
        return NULL;
    snprintf(h, sizeof(h), "%s", host);
    size_t n = 0;
    for (char *p = h; p != NULL && n < 4; n++) {
        lab[n] = p;
        p = strchr(p, '.');
        if (p != NULL)
            *p++ = '\0';
    }
    const char *name = lab[0], *sns = n == 1 ? ns : lab[1];
    /* NAME.NS.svc and NAME.NS.svc.DOMAIN... */
    if (n >= 3 && strcmp(lab[2], "svc") != 0)
        return NULL;
    for (size_t i = 0; i < u->n_vips; i++)
        if (strcmp(u->vips[i].name, name) == 0 && strcmp(u->vips[i].ns, sns) == 0 &&
            u->vips[i].ip[0])
            return u->vips[i].ip;
    return NULL;
}

void tr_up_workloads_free(struct tr_up *u)
{
    for (size_t i = 0; i < u->n_vips; i++) {
        free(u->vips[i].ns);
        free(u->vips[i].name);
    }
    free(u->vips);
    u->vips = NULL;
    u->n_vips = 0;
    for (size_t i = 0; i < u->n; i++) {
        struct tr_up_workload *w = &u->w[i];
        free(w->ns);
        free(w->name);
        free(w->sa);
        free(w->cwd);
        for (size_t j = 0; w->argv && w->argv[j]; j++)
            free(w->argv[j]);
        free(w->argv);
        for (size_t j = 0; w->env && w->env[j]; j++)
            free(w->env[j]);
        free(w->env);
    }
    free(u->w);
    u->w = NULL;
    u->n = 0;
}

/* ---- the staged copy: every resource as JSON (which the reader takes as
 * YAML). Each scalar keeps its meaning: a plain scalar that is a simple token
 * (letters, digits, . _ / + -, starting with a letter or digit: numbers,
 * true/false, and the YAML 1.1 words such as yes or on that the reader
 * reports) stays plain, so it reads back exactly as it was read; null stays
 * null; everything else becomes a quoted string, which is what it was. */

static void put_str(FILE *f, const char *s, size_t len)
{
    fputc('"', f);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(f, "\\%c", c);
        else if (c < 0x20 || c == 0x7f)
            fprintf(f, "\\u%04x", c);
        else
            fputc(c, f);
    }
    fputc('"', f);
}

static bool simple_token(const char *s, size_t len)
{
    if (len == 0 || !((s[0] >= '0' && s[0] <= '9') || (s[0] >= 'a' && s[0] <= 'z') ||
                      (s[0] >= 'A' && s[0] <= 'Z') || s[0] == '-' || s[0] == '.'))
        return false;
    if ((s[0] == '-' || s[0] == '.') && (len == 1 || !(s[1] >= '0' && s[1] <= '9')))
        return false; /* "-" alone, "- x", "..." : not a number, keep it quoted */
    return strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._/+-") == len;
}

static void put_scalar(FILE *f, const struct tr_rnode *n)
{
    if (n->plain && tr_rnode_is_null(n))
        fputs("null", f);
    else if (n->plain && simple_token(n->s, n->len))
        fwrite(n->s, 1, n->len, f);
    else
        put_str(f, n->s, n->len);
}

struct inject {
    const char *ip; /* status.podIP to set (NULL: keep what is written) */
    bool label;     /* add security.istio.io/tlsMode: istio */
};

/* Where a map sits in a Pod that gets something injected. */
enum role { ROLE_PLAIN, ROLE_TOP, ROLE_META, ROLE_LABELS, ROLE_STATUS };

#define TLS_MODE_LABEL "security.istio.io/tlsMode"

static bool is_map(const struct tr_rnode *n)
{
    return n != NULL && n->kind == TR_RNODE_MAP;
}

static bool key_is(const struct tr_rnode *k, const char *s)
{
    return k->kind == TR_RNODE_SCALAR && strcmp(k->s, s) == 0;
}

static void put_value(FILE *f, const struct tr_rnode *n, const struct inject *in, enum role role);

static void put_map(FILE *f, const struct tr_rnode *n, const struct inject *in, enum role role)
{
    fputc('{', f);
    bool first = true, had_status = false, had_meta = false, had_labels = false, had_mode = false;
    for (const struct tr_rnode *k = n->head; k && k->next; k = k->next->next) {
        const struct tr_rnode *v = k->next;
        enum role child = ROLE_PLAIN;
        if (in != NULL && role == ROLE_TOP && key_is(k, "status") && in->ip != NULL) {
            if (!is_map(v))
                continue; /* status: null; ours replaces it */
            child = ROLE_STATUS;
            had_status = true;
        } else if (in != NULL && role == ROLE_TOP && key_is(k, "metadata") && is_map(v)) {
            child = ROLE_META;
            had_meta = true;
        } else if (in != NULL && role == ROLE_META && key_is(k, "labels") && in->label) {
            if (!is_map(v))
                continue; /* labels: null; ours replaces it */
            child = ROLE_LABELS;
            had_labels = true;
        } else if (in != NULL && role == ROLE_STATUS &&
                   (key_is(k, "podIP") || key_is(k, "podIPs"))) {
            continue; /* an empty podIP (loopback mode: any): ours replaces it */
        } else if (in != NULL && role == ROLE_LABELS && key_is(k, TLS_MODE_LABEL)) {
            had_mode = true; /* the user's value stands */
        }
        if (!first)
            fputs(", ", f);
        first = false;
        put_scalar(f, k);
        fputs(": ", f);
        put_value(f, v, child == ROLE_PLAIN ? NULL : in, child);
    }
    const char *sep = first ? "" : ", ";
    const char *lbl = "\"" TLS_MODE_LABEL "\": \"istio\"";
    if (in != NULL && role == ROLE_TOP && in->ip != NULL && !had_status) {
        fprintf(f, "%s\"status\": {\"podIP\": \"%s\"}", sep, in->ip);
        sep = ", ";
    }
    if (in != NULL && role == ROLE_TOP && in->label && !had_meta)
        fprintf(f, "%s\"metadata\": {\"labels\": {%s}}", sep, lbl);
    if (in != NULL && role == ROLE_META && in->label && !had_labels)
        fprintf(f, "%s\"labels\": {%s}", sep, lbl);
    if (in != NULL && role == ROLE_LABELS && !had_mode)
        fprintf(f, "%s%s", sep, lbl);
    if (in != NULL && role == ROLE_STATUS)
        fprintf(f, "%s\"podIP\": \"%s\"", sep, in->ip);
    fputc('}', f);
}

static void put_value(FILE *f, const struct tr_rnode *n, const struct inject *in, enum role role)
{
    if (n == NULL) {
        fputs("null", f);
    } else if (n->kind == TR_RNODE_SCALAR) {
        put_scalar(f, n);
    } else if (n->kind == TR_RNODE_SEQ) {
        fputc('[', f);
        for (const struct tr_rnode *e = n->head; e; e = e->next) {
            put_value(f, e, NULL, ROLE_PLAIN);
            if (e->next)
                fputs(", ", f);
        }
        fputc(']', f);
    } else {
        put_map(f, n, in, role);
    }
}

int tr_up_stage(const struct tr_up *u, const struct tr_rset *rs, const char *path)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (f == NULL)
        return -1;
    fputs("{\"apiVersion\":\"v1\",\"kind\":\"List\",\"items\":[\n", f);
    size_t n = tr_rset_count(rs);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = tr_rset_at(rs, i);
        struct inject in = {0}, *pin = NULL;
        if (strcmp(r->group, "") == 0 && strcmp(r->kind, "Pod") == 0) {
            for (size_t j = 0; j < u->n; j++) {
                const struct tr_up_workload *w = &u->w[j];
                if (strcmp(w->ns, r->ns ? r->ns : "default") == 0 &&
                    strcmp(w->name, r->name) == 0) {
                    in.ip = w->ip_given ? NULL : w->ip;
                    in.label = w->sidecar;
                    pin = &in;
                }
            }
        }
        put_value(f, r->obj, pin, pin ? ROLE_TOP : ROLE_PLAIN);
        fputs(i + 1 < n ? ",\n" : "\n", f);
    }
    fputs("]}\n", f);
    if (ferror(f) | (fclose(f) != 0))
        return -1;
    return rename(tmp, path);
}
