/* Kubernetes Secrets with TLS material, named by credentialName (a
 * DestinationRule's tls, a Gateway server's tls), and the model's TLS
 * contexts made from them.
 *
 * The proxy fetches nothing: a Secret must be in the input, and its PEM goes
 * into the model inline (tls[].cert_pem, key_pem, ca_pem), so a compiled
 * model is self-contained. Keys read, as Istio reads them: tls.crt, tls.key,
 * ca.crt (type kubernetes.io/tls) or cert, key, cacert (a generic Secret),
 * in data (base64, RFC 4648 with padding, as Kubernetes writes it) or
 * stringData (text). Decoded values must be PEM text: printable ASCII and
 * line breaks, with a BEGIN line; the proxy parses the PEM itself when it
 * loads the model. */
#include <stdio.h>
#include <string.h>

#include "config/load.h"
#include "core/arena.h"
#include "core/base64.h"
#include "dialect/istio/internal.h"

#define SECRET_VALUE_MAX (256u * 1024u) /* decoded; the model's inline PEM limit */

/* One value of the Secret, decoded into the model's arena; NULL when
 * absent. *bad names the problem when present but unusable. */
static const char *secret_value(struct ist_ctx *x, const struct tr_resource *s, const char *key,
                                const char **bad)
{
    const char *text;
    const struct tr_rnode *v = tr_rnode_get(tr_rnode_get(s->obj, "data"), key);
    char *out = NULL;
    size_t n = 0;
    if (tr_rnode_str(v, &text)) {
        if (v->len / 4 * 3 > SECRET_VALUE_MAX) {
            *bad = "is too long";
            return NULL;
        }
        out = tr_arena_alloc(x->cfg->arena, v->len / 4 * 3 + 1);
        if (out == NULL)
            return (void)ist_oom(x), NULL;
        long dn = tr_base64_decode(text, v->len, (unsigned char *)out, v->len / 4 * 3);
        n = dn < 0 ? 0 : (size_t)dn;
        if (dn < 0) {
            *bad = "is not base64";
            return NULL;
        }
    } else if (tr_rnode_str((v = tr_rnode_get(tr_rnode_get(s->obj, "stringData"), key)), &text)) {
        if (v->len > SECRET_VALUE_MAX) {
            *bad = "is too long";
            return NULL;
        }
        out = tr_arena_alloc(x->cfg->arena, v->len + 1);
        if (out == NULL)
            return (void)ist_oom(x), NULL;
        memcpy(out, text, v->len);
        n = v->len;
    } else {
        return NULL;
    }
    out[n] = '\0';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)out[i];
        if ((c < 0x20 && c != '\n' && c != '\r' && c != '\t') || c >= 0x7f) {
            *bad = "is not PEM text";
            return NULL;
        }
    }
    if (strstr(out, "-----BEGIN ") == NULL) {
        *bad = "holds no PEM block";
        return NULL;
    }
    return out;
}

const struct tr_resource *ist_secret_find(struct ist_ctx *x, const char *ns, const char *name)
{
    return tr_rset_find(x->rs, "", "Secret", ns, name);
}

bool ist_secret_read(struct ist_ctx *x, struct ist_cursor *c, const struct tr_rnode *at,
                     const char *key, const struct tr_resource *s, struct ist_secret *out)
{
    static const char *const keys[3][2] = {
        {"tls.crt", "cert"}, {"tls.key", "key"}, {"ca.crt", "cacert"}};
    const char **dst[3] = {&out->crt, &out->key, &out->ca};
    memset(out, 0, sizeof(*out));
    out->res = s;
    for (size_t i = 0; i < 3; i++) {
        for (size_t k = 0; k < 2 && *dst[i] == NULL; k++) {
            const char *bad = NULL;
            *dst[i] = secret_value(x, s, keys[i][k], &bad);
            if (bad != NULL) {
                ist_error(x, c, at, key, "Secret %s/%s: %s %s", s->ns ? s->ns : "default", s->name,
                          keys[i][k], bad);
                return false;
            }
        }
    }
    return !x->oom;
}

/* ------------------------------------------------ the model's contexts */

struct tr_tls_cfg *ist_tls_context(struct ist_ctx *x, enum tr_tls_kind kind, const char *name,
                                   const struct ist_secret *s, bool with_cert, bool with_ca)
{
    for (size_t i = 0; i < x->n_tls_ctx; i++)
        if (strcmp(x->tls_ctx[i].name, name) == 0)
            return &x->tls_ctx[i];
    if (x->n_tls_ctx == x->cap_tls_ctx) {
        size_t cap = x->cap_tls_ctx ? 2 * x->cap_tls_ctx : 8;
        struct tr_tls_cfg *v = ist_malloc(x, cap, sizeof(*v));
        if (v == NULL)
            return NULL;
        if (x->n_tls_ctx)
            memcpy(v, x->tls_ctx, x->n_tls_ctx * sizeof(*v));
        x->tls_ctx = v;
        x->cap_tls_ctx = cap;
    }
    struct tr_tls_cfg *t = &x->tls_ctx[x->n_tls_ctx];
    tr_cfg_tls_defaults(t);
    t->name = ist_mstrdup(x, name);
    t->kind = kind;
    if (s != NULL) {
        t->cert_pem = with_cert ? s->crt : NULL;
        t->key_pem = with_cert ? s->key : NULL;
        t->ca_pem = with_ca ? s->ca : NULL;
        struct ist_cursor c;
        ist_cursor_init(&c, s->res, NULL);
        t->loc = ist_loc(x, &c, NULL);
    }
    if (t->name == NULL)
        return NULL;
    x->n_tls_ctx++;
    return t;
}
