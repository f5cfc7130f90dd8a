/* upstream/jwks_fetch.c: key sets fetched from jwks_uri (see jwks_fetch.h). */
#include "upstream/jwks_fetch.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster/cluster.h"
#include "core/log.h"
#include "filter/jwt.h"
#include "obs/metrics.h"
#include "runtime/worker.h"
#include "upstream/h1_body.h"
#include "upstream/h1_client.h"
#include "upstream/pool.h"

#define FIRST_BACKOFF_MS 1000u

struct fetcher {
    struct tr_jwks_fetch *set;
    const struct tr_listener_cfg *lcfg;
    const struct tr_jwt_rule_cfg *rule;
    struct tr_jwks **slot; /* what the request path reads */
    char *text;            /* the body the keys in *slot came from */
    struct tr_cluster_rt *cluster;
    char *request; /* the GET, written once */
    uint32_t request_len, sent;
    struct tr_h1_client uc;
    struct tr_buf *in; /* response bytes */
    char *body;        /* a 200's body so far (TR_JWT_MAX_JWKS + 1 bytes) */
    uint32_t body_len;
    bool busy;    /* an exchange is in flight (the timer is its deadline) */
    bool failing; /* the last fetch failed (warned once) */
    uint64_t backoff_ms;
    uint64_t due_at; /* loop clock: the next fetch */
    struct tr_timer timer;
    struct tr_deferred later;
};

struct tr_jwks_fetch {
    struct tr_worker *w;
    struct tr_wsnap *ws;
    struct fetcher *f;
    size_t n;
    struct tr_jwks ***by_listener; /* per listener: per rule, or NULL */
    size_t n_listeners;
    bool stopped;
};

static void fetch_begin(struct fetcher *f);
static void fetch_pump(struct fetcher *f);

struct tr_jwks *const *tr_jwks_fetched(const struct tr_jwks_fetch *s, int lidx)
{
    if (s == NULL || lidx < 0 || (size_t)lidx >= s->n_listeners)
        return NULL;
    return s->by_listener[lidx];
}

/* The exchange is over (or never started): counted, logged once per run of
 * failures, and the next fetch scheduled. */
static void fetch_end(struct fetcher *f, enum tr_jwks_fetch_result res, bool reusable,
                      const char *why)
{
    struct tr_worker *w = f->set->w;
    f->busy = false;
    tr_timer_cancel(w->loop, &f->timer);
    tr_loop_cancel(w->loop, &f->later);
    tr_h1c_release(&f->uc, reusable);
    if (f->in != NULL)
        tr_buf_put(&w->bufs, f->in);
    f->in = NULL;
    free(f->body);
    f->body = NULL;
    f->body_len = 0;
    tr_metrics_jwks_fetch(w->metrics, res);
    uint64_t refresh = f->rule->jwks_uri->refresh_ms, next;
    if (res == TR_JWKS_FETCH_OK) {
        if (f->failing)
            tr_info("listener %s, issuer %s: keys fetched from %s again", f->lcfg->name,
                    f->rule->issuer, f->rule->jwks_uri->url);
        f->failing = false;
        f->backoff_ms = 0;
        next = refresh;
    } else {
        if (!f->failing)
            tr_warn("listener %s, issuer %s: fetching keys from %s failed: %s (the last keys stay; "
                    "trying again)",
                    f->lcfg->name, f->rule->issuer, f->rule->jwks_uri->url, why);
        f->failing = true;
        f->backoff_ms = f->backoff_ms == 0 ? FIRST_BACKOFF_MS : f->backoff_ms * 2;
        if (f->backoff_ms > refresh)
            f->backoff_ms = refresh;
        next = f->backoff_ms;
    }
    f->due_at = tr_loop_now_ms(w->loop) + next;
    tr_timer_set(w->loop, &f->timer, next);
}

/* A whole 200 body: the new keys, if they are a usable set. */
static void fetch_finish(struct fetcher *f)
{
    f->body[f->body_len] = '\0';
    char *err = NULL;
    struct tr_jwks *k = tr_jwks_parse(f->body, f->body_len, &err);
    if (k == NULL) {
        char why[300];
        snprintf(why, sizeof(why), "not a usable JSON Web Key Set: %s", err != NULL ? err : "?");
        free(err);
        fetch_end(f, TR_JWKS_FETCH_BODY, false, why);
        return;
    }
    /* No verification is in progress: the request path runs to its end
     * within one event, on this thread. */
    tr_jwks_free(*f->slot);
    *f->slot = k;
    free(f->text);
    f->text = f->body;
    f->body = NULL;
    bool whole = f->sent == f->request_len && (f->in == NULL || tr_buf_len(f->in) == 0);
    fetch_end(f, TR_JWKS_FETCH_OK, whole && f->uc.resp.framing != TR_H1_BODY_UNTIL_CLOSE, NULL);
}

static void fetch_on_timer(struct tr_timer *t)
{
    struct fetcher *f = tr_container_of(t, struct fetcher, timer);
    if (!f->busy) {
        fetch_begin(f);
        return;
    }
    char why[64];
    snprintf(why, sizeof(why), "no response in %u ms", f->rule->jwks_uri->timeout_ms);
    fetch_end(f, TR_JWKS_FETCH_TIMEOUT, false, why);
}

static void fetch_on_ready(void *owner, struct tr_upstream *up, int err, const char *reason)
{
    struct fetcher *f = owner;
    (void)up;
    if (err < 0) {
        tr_h1c_connect_failed(&f->uc);
        fetch_end(f, TR_JWKS_FETCH_CONNECT, false, reason != NULL ? reason : "connect failed");
        return;
    }
    fetch_pump(f);
}

static void fetch_on_io(void *owner, struct tr_upstream *up)
{
    (void)up;
    fetch_pump(owner);
}

static const struct tr_upstream_owner_ops fetch_up_ops = {
    .on_ready = fetch_on_ready,
    .on_io = fetch_on_io,
};

static void fetch_begin(struct fetcher *f)
{
    struct tr_worker *w = f->set->w;
    f->busy = true;
    f->sent = 0;
    f->body_len = 0;
    tr_timer_set(w->loop, &f->timer, f->rule->jwks_uri->timeout_ms);
    uint64_t hash = (uint64_t)tr_worker_rand(w) << 32 | tr_worker_rand(w);
    enum tr_h1c_status st =
        tr_h1c_start(&f->uc, w, f->cluster, &fetch_up_ops, f, false, hash, NULL);
    switch (st) {
    case TR_H1C_READY:
        fetch_pump(f);
        return;
    case TR_H1C_CONNECTING:
        return;
    case TR_H1C_NO_HEALTHY:
        fetch_end(f, TR_JWKS_FETCH_CONNECT, false, "no healthy endpoint");
        return;
    case TR_H1C_OVERFLOW:
        fetch_end(f, TR_JWKS_FETCH_CONNECT, false, "a connection limit of the cluster");
        return;
    default:
        fetch_end(f, TR_JWKS_FETCH_CONNECT, false, "could not connect");
        return;
    }
}

/* The response bytes in f->in: the head, then a 200's body, kept. Returns
 * false once the exchange ended. */
static bool fetch_response(struct fetcher *f)
{
    const struct tr_h1_limits *lim = &f->set->ws->snap->h1_limits;
    while (f->in != NULL && tr_buf_len(f->in) > 0) {
        if (!f->uc.head_done) {
            int r = tr_h1c_head_end(&f->uc, &f->in, lim);
            if (r == 0)
                return true;
            struct tr_h1_message msg;
            memset(&msg, 0, sizeof(msg));
            msg.headers = f->set->w->headers; /* never nested in another parse */
            if (r < 0 ||
                tr_h1c_parse_response(&f->uc, tr_buf_head(f->in), (uint32_t)r, lim, TR_H1_M_GET,
                                      &msg) < 0 ||
                msg.body == TR_H1_BODY_TUNNEL) {
                fetch_end(f, TR_JWKS_FETCH_BODY, false, "an invalid response head");
                return false;
            }
            tr_buf_consume(f->in, (uint32_t)r);
            if (!f->uc.head_done)
                continue; /* an interim (1xx) response */
            if (msg.status != 200) {
                char why[48];
                snprintf(why, sizeof(why), "status %u", (unsigned)msg.status);
                fetch_end(f, TR_JWKS_FETCH_STATUS, false, why);
                return false;
            }
            f->body = malloc(TR_JWT_MAX_JWKS + 1);
            if (f->body == NULL) {
                fetch_end(f, TR_JWKS_FETCH_BODY, false, "out of memory");
                return false;
            }
        } else {
            struct tr_h1_body_run run;
            const char *p = tr_buf_head(f->in);
            if (tr_h1_body_decode(&f->uc.resp, NULL, p, tr_buf_len(f->in), &run) < 0) {
                fetch_end(f, TR_JWKS_FETCH_BODY, false, "invalid body framing");
                return false;
            }
            if (run.data_len > TR_JWT_MAX_JWKS - f->body_len) {
                fetch_end(f, TR_JWKS_FETCH_BODY, false, "the body is over 64 KiB");
                return false;
            }
            memcpy(f->body + f->body_len, p + run.data_off, run.data_len);
            f->body_len += run.data_len;
            tr_buf_consume(f->in, run.consumed);
            if (run.consumed == 0 && !f->uc.resp.done)
                return true; /* framing cut by the read */
        }
        if (f->uc.head_done && f->uc.resp.done) {
            fetch_finish(f);
            return false;
        }
    }
    if (f->uc.head_done && f->uc.resp.done) {
        fetch_finish(f); /* a 200 without a body: not a key set */
        return false;
    }
    return true;
}

static void fetch_pump_later(struct tr_deferred *d)
{
    struct fetcher *f = tr_container_of(d, struct fetcher, later);
    if (f->busy)
        fetch_pump(f);
}

static void fetch_pump(struct fetcher *f)
{
    for (int guard = 0; guard < 64 && f->busy; guard++) {
        if (f->sent < f->request_len &&
            tr_h1c_write(&f->uc, f->request, f->request_len, &f->sent) < 0) {
            fetch_end(f, TR_JWKS_FETCH_CONNECT, false, "the connection failed");
            return;
        }
        if (!fetch_response(f))
            return;
        ssize_t n = tr_h1c_read(&f->uc, &f->in);
        if (n == TR_H1C_READ_END) {
            /* The body ended with the connection. */
            if (!fetch_response(f))
                return;
            if (f->busy && f->body != NULL)
                fetch_finish(f);
            else if (f->busy)
                fetch_end(f, TR_JWKS_FETCH_CONNECT, false, "the connection closed");
            return;
        }
        if (n < 0) {
            fetch_end(f, TR_JWKS_FETCH_CONNECT, false,
                      "the connection closed before the response ended");
            return;
        }
        if (n == 0)
            return;
    }
    if (f->busy)
        tr_loop_defer(f->set->w->loop, &f->later, fetch_pump_later);
}

/* The first fetch: now, or when the previous worker snapshot's was due. */
static void fetch_start(struct tr_deferred *d)
{
    struct fetcher *f = tr_container_of(d, struct fetcher, later);
    uint64_t now = tr_loop_now_ms(f->set->w->loop);
    if (f->due_at > now)
        tr_timer_set(f->set->w->loop, &f->timer, f->due_at - now);
    else
        fetch_begin(f);
}

/* "GET PATH HTTP/1.1" with Host: the URL's host and port (validate
 * checked the URL: http[s]://HOST/PATH, printable ASCII; the cluster's TLS
 * is the https). */
static char *request_text(const char *url, uint32_t *len)
{
    const char *host = strstr(url, "://") + 3, *path = strchr(host, '/');
    size_t cap = strlen(url) + 128;
    char *r = malloc(cap);
    if (r == NULL || path == NULL) {
        free(r);
        return NULL;
    }
    int n = snprintf(r, cap,
                     "GET %s HTTP/1.1\r\nhost: %.*s\r\naccept: application/json\r\n"
                     "user-agent: trellis\r\n\r\n",
                     path, (int)(path - host), host);
    if (n < 0 || (size_t)n >= cap) {
        free(r);
        return NULL;
    }
    *len = (uint32_t)n;
    return r;
}

static const struct fetcher *find_prev(const struct tr_jwks_fetch *prev,
                                       const struct tr_listener_cfg *l,
                                       const struct tr_jwt_rule_cfg *r)
{
    for (size_t i = 0; prev != NULL && i < prev->n; i++) {
        const struct fetcher *p = &prev->f[i];
        if (strcmp(p->lcfg->name, l->name) == 0 && strcmp(p->rule->issuer, r->issuer) == 0 &&
            strcmp(p->rule->jwks_uri->url, r->jwks_uri->url) == 0 &&
            strcmp(p->rule->jwks_uri->cluster_name, r->jwks_uri->cluster_name) == 0)
            return p;
    }
    return NULL;
}

/* Take over p's keys (built again from its text), state and schedule. */
static void take_over(struct fetcher *f, const struct fetcher *p)
{
    if (p == NULL)
        return;
    f->failing = p->failing;
    f->backoff_ms = p->backoff_ms;
    f->due_at = p->busy ? 0 : p->due_at;
    if (p->text == NULL)
        return;
    char *err = NULL;
    struct tr_jwks *k = tr_jwks_parse(p->text, strlen(p->text), &err);
    free(err); /* it parsed before: only memory can fail */
    f->text = k != NULL ? strdup(p->text) : NULL;
    if (f->text == NULL) {
        tr_jwks_free(k);
        f->due_at = 0;
        return;
    }
    *f->slot = k;
}

struct tr_jwks_fetch *tr_jwks_fetch_new(struct tr_wsnap *ws, const struct tr_jwks_fetch *prev)
{
    const struct tr_config *cfg = ws->snap->cfg;
    size_t n = 0;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        for (size_t k = 0; k < cfg->listeners[i].request_authn.n_rules; k++)
            n += cfg->listeners[i].request_authn.rules[k].jwks_uri != NULL;
    }
    if (n == 0)
        return NULL;
    struct tr_jwks_fetch *s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto oom;
    s->w = ws->w;
    s->ws = ws;
    s->f = calloc(n, sizeof(*s->f));
    s->by_listener = calloc(cfg->n_listeners, sizeof(*s->by_listener));
    s->n_listeners = cfg->n_listeners;
    if (s->f == NULL || s->by_listener == NULL)
        goto oom;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &cfg->listeners[i];
        for (size_t k = 0; k < l->request_authn.n_rules; k++) {
            const struct tr_jwt_rule_cfg *r = &l->request_authn.rules[k];
            if (r->jwks_uri == NULL)
                continue;
            if (s->by_listener[i] == NULL &&
                (s->by_listener[i] = calloc(l->request_authn.n_rules, sizeof(struct tr_jwks *))) ==
                    NULL)
                goto oom;
            struct fetcher *f = &s->f[s->n];
            f->set = s;
            f->lcfg = l;
            f->rule = r;
            f->slot = &s->by_listener[i][k];
            f->cluster = &ws->clusters[r->jwks_uri->cluster];
            tr_timer_init(&f->timer, fetch_on_timer);
            if ((f->request = request_text(r->jwks_uri->url, &f->request_len)) == NULL)
                goto oom;
            s->n++;
            take_over(f, find_prev(prev, l, r));
            tr_loop_defer(s->w->loop, &f->later, fetch_start);
        }
    }
    return s;
oom:
    tr_err("no memory to fetch JSON Web Key Sets: rules keep their inline keys only");
    tr_jwks_fetch_stop(s);
    tr_jwks_fetch_free(s);
    return NULL;
}

void tr_jwks_fetch_stop(struct tr_jwks_fetch *s)
{
    if (s == NULL || s->stopped)
        return;
    s->stopped = true;
    for (size_t i = 0; i < s->n; i++) {
        struct fetcher *f = &s->f[i];
        tr_timer_cancel(s->w->loop, &f->timer);
        tr_loop_cancel(s->w->loop, &f->later);
        if (f->busy) {
            f->busy = false;
            tr_h1c_release(&f->uc, false);
        }
        if (f->in != NULL)
            tr_buf_put(&s->w->bufs, f->in);
        f->in = NULL;
        free(f->body);
        f->body = NULL;
    }
}

void tr_jwks_fetch_free(struct tr_jwks_fetch *s)
{
    if (s == NULL)
        return;
    tr_jwks_fetch_stop(s);
    for (size_t i = 0; i < s->n; i++) {
        tr_jwks_free(*s->f[i].slot);
        free(s->f[i].text);
        free(s->f[i].request);
    }
    for (size_t i = 0; s->by_listener != NULL && i < s->n_listeners; i++)
        free(s->by_listener[i]);
    free(s->by_listener);
    free(s->f);
    free(s);
}
