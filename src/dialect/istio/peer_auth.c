/* PeerAuthentication (security.istio.io v1, v1beta1) -> the inbound mTLS mode
 * of each of the workload's ports.
 *
 * Istio's rules (pilot's ComposePeerAuthentication): a policy without a
 * selector in the root namespace is mesh-wide, one without a selector in
 * another namespace is namespace-wide, one with a selector applies to the
 * workloads it selects in its own namespace (a selector in the root
 * namespace applies to nobody). Per level the oldest policy wins
 * (creationTimestamp, then name); the others are reported. Modes are resolved
 * mesh, namespace, workload: UNSET keeps the level above, and with nothing
 * set the mode is PERMISSIVE. portLevelMtls (workload policies only) sets the
 * mode of one target (container) port; UNSET there keeps the workload's. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dialect/istio/internal.h"

#define IST_SECURITY_GROUP "security.istio.io"
#define PA_MAX_PORTS       1024u /* portLevelMtls entries per policy */

enum pa_mode { PA_UNSET = 0, PA_DISABLE, PA_PERMISSIVE, PA_STRICT, PA_BAD };

static enum pa_mode mode_of(const char *s)
{
    if (s == NULL || strcmp(s, "UNSET") == 0)
        return PA_UNSET;
    if (strcmp(s, "DISABLE") == 0)
        return PA_DISABLE;
    if (strcmp(s, "PERMISSIVE") == 0)
        return PA_PERMISSIVE;
    if (strcmp(s, "STRICT") == 0)
        return PA_STRICT;
    return PA_BAD;
}

static enum tr_tls_mode tls_of(enum pa_mode m)
{
    return m == PA_STRICT ? TR_TLS_STRICT : m == PA_DISABLE ? TR_TLS_DISABLE : TR_TLS_PERMISSIVE;
}

/* The mode of a MutualTLS message ({mode: ...}) already checked. */
static enum pa_mode mtls_mode(const struct tr_rnode *mtls)
{
    const char *s = NULL;
    if (!tr_rnode_str(tr_rnode_get(mtls, "mode"), &s))
        return PA_UNSET;
    return mode_of(s);
}

static const struct tr_rnode *match_labels(const struct tr_resource *r)
{
    const struct tr_rnode *l = tr_rnode_get(tr_rnode_get(r->spec, "selector"), "matchLabels");
    return l != NULL && l->kind == TR_RNODE_MAP && l->n > 0 ? l : NULL;
}

/* ------------------------------------------------------------ age */

/* creationTimestamp as seconds since 1970 and nanoseconds; RFC 3339
 * ("2024-05-01T10:00:00Z", a fraction and an offset allowed). */
static bool digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return true;
}

static int64_t days_from_civil(int y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

static bool parse_time(const char *s, int64_t *sec, int32_t *nsec)
{
    int Y, M, D, h, m, sc;
    if (strlen(s) < 20 || !digits(s, 4, &Y) || s[4] != '-' || !digits(s + 5, 2, &M) ||
        s[7] != '-' || !digits(s + 8, 2, &D) || (s[10] != 'T' && s[10] != 't') ||
        !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &m) || s[16] != ':' ||
        !digits(s + 17, 2, &sc))
        return false;
    if (M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sc > 60)
        return false;
    const char *p = s + 19;
    int32_t ns = 0;
    if (*p == '.') {
        int n = 0;
        for (p++; *p >= '0' && *p <= '9'; p++, n++) {
            if (n < 9)
                ns = ns * 10 + (*p - '0');
        }
        if (n == 0)
            return false;
        for (; n < 9; n++)
            ns *= 10;
    }
    int off = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) || oh > 23 || om > 59)
            return false;
        off = (oh * 60 + om) * 60 * (*p == '-' ? -1 : 1);
        p += 6;
    } else {
        return false;
    }
    if (*p != '\0')
        return false;
    *sec = days_from_civil(Y, M, D) * 86400 + h * 3600 + m * 60 + sc - off;
    *nsec = ns;
    return true;
}

/* A resource's age; without a (readable) creationTimestamp, the zero time
 * (oldest), as a Kubernetes object that has none would sort in Istio. */
static void age_of(const struct tr_resource *r, int64_t *sec, int32_t *nsec)
{
    const char *s;
    *sec = INT64_MIN;
    *nsec = 0;
    const struct tr_rnode *meta = tr_rnode_get(r->obj, "metadata");
    if (tr_rnode_str(tr_rnode_get(meta, "creationTimestamp"), &s) && !parse_time(s, sec, nsec)) {
        *sec = INT64_MIN;
        *nsec = 0;
    }
}

/* Does a come before b in Istio's order (older, then name, then namespace)? */
static bool older(const struct tr_resource *a, const struct tr_resource *b)
{
    int64_t sa, sb;
    int32_t na, nb;
    age_of(a, &sa, &na);
    age_of(b, &sb, &nb);
    if (sa != sb)
        return sa < sb;
    if (na != nb)
        return na < nb;
    int c = strcmp(a->name, b->name);
    if (c != 0)
        return c < 0;
    return strcmp(a->ns ? a->ns : "", b->ns ? b->ns : "") < 0;
}

/* ----------------------------------------------------------- checking */

static bool mtls_check(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *map,
                       const char *key)
{
    static const struct ist_key keys[] = {{"mode", NULL}};
    const struct tr_rnode *m = ist_map(x, c, map, key);
    size_t saved = ist_push_key(c, key);
    bool ok = m == NULL || IST_KEYS(x, c, m, keys);
    const char *s = NULL;
    if (ok && ist_str(x, c, m, "mode", &s) && mode_of(s) == PA_BAD) {
        ist_error(x, c, tr_rnode_get(m, "mode"), "mode",
                  "expected UNSET, DISABLE, PERMISSIVE or STRICT, got \"%s\"", s);
        ok = false;
    }
    ist_pop(c, saved);
    return ok;
}

static void pa_check(struct ist_ctx *x, const struct tr_resource *r)
{
    static const struct ist_key keys[] = {
        {"selector", NULL},
        {"mtls", NULL},
        {"portLevelMtls", NULL},
    };
    static const struct ist_key sel_keys[] = {{"matchLabels", NULL}};
    struct ist_cursor c;
    ist_cursor_init(&c, r, NULL);
    if (strcmp(r->version, "v1") != 0 && strcmp(r->version, "v1beta1") != 0) {
        ist_error(x, &c, NULL, NULL,
                  "apiVersion %s: PeerAuthentication is served as security.istio.io/v1 and "
                  "v1beta1",
                  r->api_version);
        return;
    }
    const char *ts;
    const struct tr_rnode *meta = tr_rnode_get(r->obj, "metadata");
    const struct tr_rnode *tsn = tr_rnode_get(meta, "creationTimestamp");
    int64_t sec;
    int32_t nsec;
    if (tsn != NULL && !tr_rnode_is_null(tsn) &&
        (!tr_rnode_str(tsn, &ts) || !parse_time(ts, &sec, &nsec))) {
        ist_cursor_init(&c, r, "metadata");
        ist_warn(x, &c, tsn, "creationTimestamp",
                 "expected an RFC 3339 time (2024-05-01T10:00:00Z): the policy counts as the "
                 "oldest when several conflict");
    }
    ist_cursor_init(&c, r, "spec");
    if (r->spec != NULL && !tr_rnode_is_null(r->spec) && r->spec->kind != TR_RNODE_MAP) {
        char b[64];
        ist_error(x, &c, r->spec, NULL, "expected a mapping, got %s",
                  tr_rnode_describe(r->spec, b, sizeof(b)));
        return;
    }
    if (!IST_KEYS(x, &c, r->spec, keys))
        return;
    const struct tr_rnode *sel = ist_map(x, &c, r->spec, "selector");
    size_t saved = ist_push_key(&c, "selector");
    if (IST_KEYS(x, &c, sel, sel_keys)) {
        const struct tr_rnode *ml = ist_map(x, &c, sel, "matchLabels");
        size_t s2 = ist_push_key(&c, "matchLabels");
        for (const struct tr_rnode *k = ml ? ml->head : NULL; k && k->next; k = k->next->next) {
            const char *v;
            if (k->len == 0 || strchr(k->s, '*') != NULL)
                ist_error(x, &c, k, NULL, "a label key must be non-empty and without '*'");
            else if (k->next->kind != TR_RNODE_SCALAR || !tr_rnode_str(k->next, &v))
                ist_error(x, &c, k->next, k->s, "expected a string label value");
            else if (strchr(v, '*') != NULL)
                ist_error(x, &c, k->next, k->s, "a label value cannot hold '*'");
        }
        ist_pop(&c, s2);
    }
    ist_pop(&c, saved);
    mtls_check(x, &c, r->spec, "mtls");
    const struct tr_rnode *plm = ist_map(x, &c, r->spec, "portLevelMtls");
    if (plm == NULL)
        return;
    if (match_labels(r) == NULL) {
        ist_error(x, &c, plm, "portLevelMtls",
                  "port-level mTLS needs a selector: a mesh- or namespace-wide policy cannot "
                  "set it (Istio's validation refuses it)");
        return;
    }
    if (plm->n == 0) {
        ist_error(x, &c, plm, "portLevelMtls", "port-level mTLS, if set, needs at least one port");
        return;
    }
    if (plm->n / 2 > PA_MAX_PORTS) {
        ist_error(x, &c, plm, "portLevelMtls", "more than %u ports", PA_MAX_PORTS);
        return;
    }
    saved = ist_push_key(&c, "portLevelMtls");
    for (const struct tr_rnode *k = plm->head; k && k->next; k = k->next->next) {
        int64_t port;
        if (!tr_rnode_int(k, &port) || port < 1 || port > 65535) {
            char b[64];
            ist_error(x, &c, k, NULL, "expected a port number 1..65535 as the key, got %s",
                      tr_rnode_describe(k, b, sizeof(b)));
            continue;
        }
        if (k->next->kind != TR_RNODE_MAP && !tr_rnode_is_null(k->next)) {
            char b[64];
            ist_error(x, &c, k->next, k->s, "expected a mapping, got %s",
                      tr_rnode_describe(k->next, b, sizeof(b)));
            continue;
        }
        mtls_check(x, &c, plm, k->s);
    }
    ist_pop(&c, saved);
}

/* Istio lets one policy per level act; the others are reported once, in
 * the check pass for the mesh and namespace levels (they do not depend on
 * the workload). */
void ist_peer_auth_check_all(struct ist_ctx *x)
{
    size_t n;
    const struct tr_resource *const *v =
        tr_rset_of_kind(x->rs, IST_SECURITY_GROUP, "PeerAuthentication", &n);
    for (size_t i = 0; i < n; i++)
        pa_check(x, v[i]);
    struct tr_strmap
        winner; /* namespace -> (a cell holding) its oldest policy without a selector */
    tr_strmap_init(&winner, x->tmp);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        if (ist_refused(x, r) || match_labels(r) != NULL)
            continue;
        const char *rns = r->ns ? r->ns : "default";
        const struct tr_resource **w = tr_strmap_get(&winner, rns);
        if (w == NULL) {
            bool oom = false;
            w = ist_alloc(x, 1, sizeof(*w));
            if (w == NULL)
                return;
            *w = r;
            tr_strmap_put(&winner, rns, w, &oom);
            if (oom) {
                ist_oom(x);
                return;
            }
        } else if (older(r, *w)) {
            *w = r;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        if (ist_refused(x, r))
            continue;
        const char *rns = r->ns ? r->ns : "default";
        struct ist_cursor c;
        ist_cursor_init(&c, r, NULL);
        if (match_labels(r) != NULL) {
            if (strcmp(rns, x->o->root_ns) == 0)
                ist_warn(x, &c, NULL, "spec.selector",
                         "a policy with a selector in the root namespace %s applies to no "
                         "workload (as in Istio): it is ignored",
                         rns);
            continue;
        }
        const struct tr_resource *const *wp = tr_strmap_get(&winner, rns);
        const struct tr_resource *w = wp ? *wp : NULL;
        if (w != NULL && w != r)
            ist_warn(x, &c, NULL, NULL,
                     "another %s PeerAuthentication in %s is older, %s/%s (%s:%u): Istio "
                     "applies the oldest one only, this one is ignored",
                     strcmp(rns, x->o->root_ns) == 0 ? "mesh-wide" : "namespace-wide", rns, rns,
                     w->name, w->file ? w->file : "?", w->line);
    }
}

/* --------------------------------------------------------- resolution */

/* The policies acting for a workload (namespace, labels): each level's
 * oldest (levels[0] mesh, [1] namespace, [2] workload), and the mode they
 * give its ports before portLevelMtls. */
static enum pa_mode policies_for(struct ist_ctx *x, const char *wl_ns,
                                 const struct tr_rnode *wl_labels,
                                 const struct tr_resource *levels[3])
{
    size_t n;
    const struct tr_resource *const *v =
        tr_rset_of_kind(x->rs, IST_SECURITY_GROUP, "PeerAuthentication", &n);
    levels[0] = levels[1] = levels[2] = NULL;
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        if (ist_refused(x, r))
            continue;
        const char *rns = r->ns ? r->ns : "default";
        const struct tr_rnode *sel = match_labels(r);
        size_t lv;
        if (sel == NULL && strcmp(rns, x->o->root_ns) == 0)
            lv = 0;
        else if (sel == NULL && strcmp(rns, wl_ns) == 0)
            lv = 1;
        else if (sel != NULL && strcmp(rns, wl_ns) == 0 && strcmp(rns, x->o->root_ns) != 0 &&
                 ist_labels_match(sel, wl_labels))
            lv = 2;
        else
            continue;
        if (levels[lv] == NULL || older(r, levels[lv]))
            levels[lv] = r;
    }
    enum pa_mode m = PA_UNSET;
    for (size_t i = 0; i < 3; i++) {
        enum pa_mode lm = levels[i] ? mtls_mode(tr_rnode_get(levels[i]->spec, "mtls")) : PA_UNSET;
        if (lm != PA_UNSET)
            m = lm;
    }
    return m;
}

bool ist_peer_auth_plaintext(struct ist_ctx *x, const struct ist_inst *in, uint32_t port)
{
    size_t n;
    tr_rset_of_kind(x->rs, IST_SECURITY_GROUP, "PeerAuthentication", &n);
    if (n == 0 || in == NULL || in->ns == NULL)
        return false;
    const struct tr_resource *levels[3];
    enum pa_mode m = policies_for(x, in->ns, in->labels, levels);
    char key[16];
    snprintf(key, sizeof(key), "%u", port);
    const struct tr_rnode *pl =
        levels[2] ? tr_rnode_get(tr_rnode_get(levels[2]->spec, "portLevelMtls"), key) : NULL;
    if (pl != NULL && mtls_mode(pl) != PA_UNSET)
        m = mtls_mode(pl);
    return m == PA_DISABLE;
}

void ist_peer_auth_resolve(struct ist_ctx *x)
{
    x->pa_mode = TR_TLS_PERMISSIVE;
    x->pa_workload = NULL;
    size_t n;
    const struct tr_resource *const *v =
        tr_rset_of_kind(x->rs, IST_SECURITY_GROUP, "PeerAuthentication", &n);
    const struct tr_resource *levels[3];
    enum pa_mode m = policies_for(x, x->wl_ns, x->wl_labels, levels);
    const struct tr_resource *wl = levels[2];
    x->pa_mode = tls_of(m);
    x->pa_workload = wl;
    if (wl == NULL)
        return;
    /* Several workload policies select this workload: the oldest acts. */
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        const char *rns = r->ns ? r->ns : "default";
        const struct tr_rnode *sel = match_labels(r);
        if (r == wl || ist_refused(x, r) || sel == NULL || strcmp(rns, x->wl_ns) != 0 ||
            !ist_labels_match(sel, x->wl_labels))
            continue;
        struct ist_cursor c;
        ist_cursor_init(&c, r, NULL);
        ist_warn(x, &c, NULL, "spec.selector",
                 "workload %s/%s is also selected by the older %s/%s (%s:%u): Istio applies the "
                 "oldest policy only, this one is ignored for it",
                 x->wl_ns, x->wl_name, rns, wl->name, wl->file ? wl->file : "?", wl->line);
    }
    const struct tr_rnode *plm = tr_rnode_get(wl->spec, "portLevelMtls");
    if (plm == NULL || plm->kind != TR_RNODE_MAP)
        return;
    x->pa_ports = ist_alloc(x, plm->n / 2 + 1, sizeof(*x->pa_ports));
    if (x->pa_ports == NULL)
        return;
    for (const struct tr_rnode *k = plm->head; k && k->next; k = k->next->next) {
        int64_t port;
        if (!tr_rnode_int(k, &port) || port < 1 || port > 65535)
            continue; /* refused by the check */
        enum pa_mode pm = mtls_mode(k->next);
        struct ist_pa_port *pp = &x->pa_ports[x->n_pa_ports++];
        pp->port = (uint32_t)port;
        pp->mode = pm == PA_UNSET ? x->pa_mode : tls_of(pm);
        pp->key = k;
        pp->used = false;
    }
}

enum tr_tls_mode ist_peer_auth_mode(struct ist_ctx *x, uint32_t target)
{
    for (size_t i = 0; i < x->n_pa_ports; i++) {
        if (x->pa_ports[i].port == target) {
            x->pa_ports[i].used = true;
            return x->pa_ports[i].mode;
        }
    }
    return x->pa_mode;
}

void ist_peer_auth_unused(struct ist_ctx *x)
{
    for (size_t i = 0; i < x->n_pa_ports; i++) {
        const struct ist_pa_port *pp = &x->pa_ports[i];
        if (pp->used)
            continue;
        struct ist_cursor c;
        ist_cursor_init(&c, x->pa_workload, "spec.portLevelMtls");
        ist_warn(x, &c, pp->key, pp->key->s,
                 "workload %s/%s serves no port %u (no Service targets it): this setting has "
                 "no effect on it",
                 x->wl_ns, x->wl_name, pp->port);
    }
}

/* `ctl analyze`: workload policies that lose to an older one for some
 * workload they select (once per policy, naming one such workload). */
void ist_peer_auth_analyze(struct ist_ctx *x)
{
    size_t n;
    const struct tr_resource *const *v =
        tr_rset_of_kind(x->rs, IST_SECURITY_GROUP, "PeerAuthentication", &n);
    for (size_t i = 0; i < n; i++) {
        const struct tr_resource *r = v[i];
        const char *rns = r->ns ? r->ns : "default";
        const struct tr_rnode *sel = match_labels(r);
        if (ist_refused(x, r) || sel == NULL || strcmp(rns, x->o->root_ns) == 0)
            continue;
        size_t lost = 0;
        const struct ist_inst *first = NULL;
        const struct tr_resource *first_winner = NULL;
        for (size_t k = 0; k < x->n_insts; k++) {
            const struct ist_inst *in = x->insts[k];
            if (in->ns == NULL || strcmp(in->ns, rns) != 0 || !ist_labels_match(sel, in->labels))
                continue;
            const struct tr_resource *levels[3];
            policies_for(x, in->ns, in->labels, levels);
            if (levels[2] != NULL && levels[2] != r) {
                if (lost++ == 0) {
                    first = in;
                    first_winner = levels[2];
                }
            }
        }
        if (lost == 0)
            continue;
        struct ist_cursor c;
        ist_cursor_init(&c, r, NULL);
        ist_warn(x, &c, NULL, "spec.selector",
                 "%zu workload(s) it selects, %s/%s among them, are also selected by the older "
                 "%s/%s (%s:%u): Istio applies the oldest policy only, this one is ignored for "
                 "them",
                 lost, rns, first->name ? first->name : first->ip, rns, first_winner->name,
                 first_winner->file ? first_winner->file : "?", first_winner->line);
    }
}
