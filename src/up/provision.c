/* up/provision.c: how one workload's proxy gets its model and certificate.
 *
 * Control mode (default): a bootstrap token bound to the workload's
 * namespace and service account (tr_ca_token_issue), and `trellis proxy
 * --control`: the proxy makes its key, gets its SVID for the token and
 * streams its model from `trellis control`, which watches the staged
 * resources. Static mode (--static): compiled here, issued here, written
 * into the workload's directory, and the proxy runs `--config FILE`; its
 * file watcher picks up a rewritten model (tr_up_recompile).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "ca/ca.h"
#include "config/load.h"
#include "config/write.h"
#include "dialect/istio/istio.h"
#include "up/up.h"

/* Certificates live as long as a demo needs and far less than a day: the
 * static mode does not renew them. */
#define UP_CERT_LIFETIME TR_CA_LIFETIME_DEFAULT

/* path written through a temporary file and rename(), so a reader (the
 * proxy's file watcher) never sees half of it; created with mode. */
static int write_file(const char *path, const void *data, size_t len, mode_t mode)
{
    char tmp[4200];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    unlink(tmp);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return -1;
    const char *p = data;
    while (len > 0) {
        ssize_t k = write(fd, p, len);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            close(fd);
            unlink(tmp);
            return -1;
        }
        p += k;
        len -= (size_t)k;
    }
    if (fchmod(fd, mode) != 0 || close(fd) != 0) {
        unlink(tmp);
        return -1;
    }
    return rename(tmp, path);
}

/* The model of w, as YAML text (malloc'd); NULL after printing why. */
static char *compile_model(struct tr_up *u, struct tr_up_workload *w, const struct tr_rset *staged,
                           struct tr_config **out_cfg)
{
    char certs[4200];
    snprintf(certs, sizeof(certs), "%s/certs", w->dir);
    struct tr_istio_options o = {
        .ns = w->ns,
        .name = w->name,
        .trust_domain = u->trust_domain,
        .outbound_ip = w->out_ip,
        .app_ip = w->app_ip,
        .admin_address = u->loopback ? w->admin : NULL,
        .capture = u->capture,
        .cert_dir = certs,
        .file_name = "model.yaml",
    };
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_config *cfg = tr_istio_compile(staged, &o, &d);
    /* Warnings were shown once, with the user's file and line, by the
     * analysis of the resources; here only what stops this workload. */
    if (cfg == NULL || d.n_errors) {
        tr_diags_print(&d, stderr, true);
        fprintf(stderr, "trellis up: %s/%s: no model (%zu error(s))\n", w->ns, w->name, d.n_errors);
        tr_diags_free(&d);
        tr_config_free(cfg);
        return NULL;
    }
    tr_diags_free(&d);
    /* /config_dump on a socket next to the model (mode 0600): `curl
     * --unix-socket DIR/admin.sock http://admin/config_dump` from the host. */
    if (strlen(w->dir) + strlen("/admin.sock") <= TR_UNIX_PATH_MAX)
        cfg->admin.socket = "admin.sock"; /* else off: a longer path cannot be bound */
    size_t len;
    char *err = NULL;
    char *text = tr_config_write(cfg, TR_CONFIG_YAML, &len, &err);
    if (text == NULL) {
        fprintf(stderr, "trellis up: %s/%s: %s\n", w->ns, w->name, err ? err : "out of memory");
        free(err);
        tr_config_free(cfg);
        return NULL;
    }
    snprintf(w->admin, sizeof(w->admin), "%s",
             cfg->admin.addr.text ? cfg->admin.addr.text : "127.0.0.1:15000");
    if (out_cfg != NULL)
        *out_cfg = cfg;
    else
        tr_config_free(cfg);
    return text;
}

/* The names the outbound listeners answer, each on its listener's address
 * (capture mode: on its Service's virtual IP, which the capture rules send
 * to the sidecar): what the workload's /etc/hosts says (`ip netns exec`
 * mounts it there). */
static int write_hosts(const struct tr_up *u, const struct tr_up_workload *w,
                       const struct tr_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return -1;
    fprintf(f,
            "# written by trellis up for %s/%s (%s)\n"
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n",
            w->ns, w->name,
            u->capture ? "capture: every service name is its Service's virtual IP;\n"
                         "# the capture rules send connections to them to the sidecar"
                       : "no capture: every service name is the outbound listener of\n"
                         "# the sidecar",
            w->ip, w->name);
    const char **seen = NULL;
    size_t n_seen = 0;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &cfg->listeners[i];
        if (l->direction != TR_DIR_OUTBOUND || l->route_table < 0 || l->addr.text == NULL)
            continue;
        char ip[64];
        snprintf(ip, sizeof(ip), "%s", l->addr.text);
        char *colon = strrchr(ip, ':');
        if (colon != NULL)
            *colon = '\0';
        const struct tr_route_table_cfg *rt = &cfg->route_tables[l->route_table];
        for (size_t v = 0; v < rt->n_vhosts; v++)
            for (size_t k = 0; k < rt->vhosts[v].n_domains; k++) {
                const char *dn = rt->vhosts[v].domains[k];
                if (strchr(dn, ':') != NULL || strchr(dn, '*') != NULL)
                    continue;
                const char *at = ip;
                if (u->capture && (at = tr_up_vip_of(u, dn, w->ns)) == NULL)
                    continue; /* not a Service's name (a ServiceEntry host) */
                bool dup = false;
                for (size_t s = 0; s < n_seen && !dup; s++)
                    dup = strcmp(seen[s], dn) == 0;
                if (dup)
                    continue;
                const char **ns = realloc(seen, (n_seen + 1) * sizeof(*seen));
                if (ns == NULL)
                    break;
                seen = ns;
                seen[n_seen++] = dn;
                fprintf(f, "%s\t%s\n", at, dn);
            }
    }
    free(seen);
    if (fclose(f) != 0) {
        free(buf);
        return -1;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/hosts", w->dir);
    int rc = write_file(path, buf, len, 0644);
    free(buf);
    return rc;
}

/* Loopback mode: where the application finds its sidecar, as environment
 * variables (up.h, docs/up.md): there is no hosts file of its own. */
static int write_env(const struct tr_up_workload *w, const struct tr_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (f == NULL)
        return -1;
    fprintf(f, "TRELLIS_POD_IP=%s\nTRELLIS_APP_IP=%s\nTRELLIS_OUTBOUND_IP=%s\nTRELLIS_ADMIN=%s\n",
            w->ip, w->app_ip, w->out_ip, w->admin);
    char **seen = NULL;
    size_t n_seen = 0;
    for (size_t i = 0; i < cfg->n_listeners; i++) {
        const struct tr_listener_cfg *l = &cfg->listeners[i];
        if (l->direction != TR_DIR_OUTBOUND || l->route_table < 0 || l->addr.text == NULL)
            continue;
        char ip[64];
        snprintf(ip, sizeof(ip), "%s", l->addr.text);
        char *colon = strrchr(ip, ':');
        if (colon == NULL)
            continue;
        *colon = '\0';
        const char *port = colon + 1;
        const struct tr_route_table_cfg *rt = &cfg->route_tables[l->route_table];
        for (size_t v = 0; v < rt->n_vhosts; v++)
            for (size_t k = 0; k < rt->vhosts[v].n_domains; k++) {
                /* The short names: the Services of the workload's namespace. */
                const char *dn = rt->vhosts[v].domains[k];
                if (strpbrk(dn, ".:*") != NULL || strlen(dn) > 200)
                    continue;
                char var[256];
                size_t j = 0;
                for (; dn[j]; j++)
                    var[j] = dn[j] == '-'                     ? '_'
                             : (dn[j] >= 'a' && dn[j] <= 'z') ? (char)(dn[j] - 'a' + 'A')
                                                              : dn[j];
                var[j] = '\0';
                bool dup = false;
                for (size_t s = 0; s < n_seen && !dup; s++)
                    dup = strcmp(seen[s], var) == 0;
                if (dup)
                    continue; /* a second port of the Service: the first one stands */
                char **ns = realloc(seen, (n_seen + 1) * sizeof(*seen));
                if (ns == NULL)
                    break;
                seen = ns;
                if ((seen[n_seen] = strdup(var)) == NULL)
                    break;
                n_seen++;
                fprintf(f, "%s_SERVICE_HOST=%s\n%s_SERVICE_PORT=%s\n", var, ip, var, port);
            }
    }
    for (size_t s = 0; s < n_seen; s++)
        free(seen[s]);
    free(seen);
    if (fclose(f) != 0) {
        free(buf);
        return -1;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/env", w->dir);
    int rc = write_file(path, buf, len, 0644);
    free(buf);
    return rc;
}

char **tr_up_env_read(const char *dir)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/env", dir);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return NULL;
    char **v = calloc(1, sizeof(char *));
    size_t n = 0;
    char line[1024];
    while (v != NULL && fgets(line, sizeof(line), f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (strchr(line, '=') == NULL)
            continue;
        char **nv = realloc(v, (n + 2) * sizeof(char *));
        if (nv == NULL || (nv[n] = strdup(line)) == NULL) {
            tr_up_env_free(nv ? nv : v);
            v = NULL;
            break;
        }
        v = nv;
        v[++n] = NULL;
    }
    fclose(f);
    return v;
}

void tr_up_env_free(char **env)
{
    for (size_t i = 0; env && env[i]; i++)
        free(env[i]);
    free(env);
}

/* A key made here, a CSR, the CA's signature: certs/{key,cert,ca}.pem. */
static int issue_cert(const struct tr_up_workload *w, struct tr_ca *ca)
{
    char dir[4200], path[4300];
    snprintf(dir, sizeof(dir), "%s/certs", w->dir);
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return -1;
    EVP_PKEY *key = tr_ca_key_new();
    size_t csr_len = 0, chain_len = 0, bundle_len = 0;
    char *csr = key ? tr_ca_csr_new(key, &csr_len) : NULL;
    char *err = NULL;
    char *chain =
        csr ? tr_ca_sign(ca, csr, csr_len, w->spiffe_id, UP_CERT_LIFETIME, &chain_len, &err) : NULL;
    char *bundle = tr_ca_bundle_pem(ca, &bundle_len);
    char *kpem = NULL;
    long klen = 0;
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio != NULL && key != NULL &&
        PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL) == 1)
        klen = BIO_get_mem_data(bio, &kpem);
    int rc = -1;
    if (chain != NULL && bundle != NULL && klen > 0) {
        snprintf(path, sizeof(path), "%s/key.pem", dir);
        rc = write_file(path, kpem, (size_t)klen, 0600);
        snprintf(path, sizeof(path), "%s/cert.pem", dir);
        rc |= write_file(path, chain, chain_len, 0644);
        snprintf(path, sizeof(path), "%s/ca.pem", dir);
        rc |= write_file(path, bundle, bundle_len, 0644);
    }
    if (rc != 0)
        fprintf(stderr, "trellis up: %s/%s: no certificate: %s\n", w->ns, w->name,
                err ? err : strerror(errno));
    BIO_free(bio);
    free(err);
    free(bundle);
    free(chain);
    free(csr);
    EVP_PKEY_free(key);
    return rc;
}

static char **argv_new(const char *const *v)
{
    size_t n = 0;
    while (v[n] != NULL)
        n++;
    char **out = calloc(n + 1, sizeof(char *));
    for (size_t i = 0; out != NULL && i < n; i++)
        if ((out[i] = strdup(v[i])) == NULL) {
            for (size_t j = 0; j < i; j++)
                free(out[j]);
            free(out);
            return NULL;
        }
    return out;
}

int tr_up_provision(struct tr_up *u, struct tr_up_workload *w, const struct tr_rset *staged,
                    struct tr_ca *ca, char ***argv)
{
    struct tr_config *cfg = NULL;
    char *text = compile_model(u, w, staged, &cfg);
    if (text == NULL)
        return -1;
    char model[4200];
    snprintf(model, sizeof(model), "%s/model.yaml", w->dir);
    int rc = write_file(model, text, strlen(text), 0600);
    free(text);
    if (rc != 0 || write_hosts(u, w, cfg) != 0 || (u->loopback && write_env(w, cfg) != 0)) {
        fprintf(stderr, "trellis up: %s: %s\n", w->dir, strerror(errno));
        tr_config_free(cfg);
        return -1;
    }
    tr_config_free(cfg);
    if (u->control) {
        char cadir[4200], token[4300], bundle[4300], wl[600];
        char tok[TR_CA_TOKEN_HEX + 2], *err = NULL;
        snprintf(cadir, sizeof(cadir), "%s/ca", u->state);
        snprintf(token, sizeof(token), "%s/token", w->dir);
        snprintf(bundle, sizeof(bundle), "%s/root-cert.pem", cadir);
        snprintf(wl, sizeof(wl), "%s/%s", w->ns, w->name);
        if (tr_ca_token_issue(cadir, w->ns, w->sa, tok, &err) != 0) {
            fprintf(stderr, "trellis up: %s: no token: %s\n", wl, err ? err : "out of memory");
            free(err);
            return -1;
        }
        size_t n = strlen(tok);
        tok[n] = '\n';
        rc = write_file(token, tok, n + 1, 0600);
        explicit_bzero(tok, sizeof(tok));
        if (rc != 0) {
            fprintf(stderr, "trellis up: %s: %s\n", token, strerror(errno));
            return -1;
        }
        /* `trellis ctl proxy-config` reads /config_dump here (an absolute
         * path: the proxy has no configuration file to be relative to). */
        char sock[4096] = "";
        if (w->dir[0] == '/' && strlen(w->dir) + strlen("/admin.sock") <= TR_UNIX_PATH_MAX)
            snprintf(sock, sizeof(sock), "%s/admin.sock", w->dir);
        const char *v[] = {
            u->self,        "proxy",   "--control",     u->control_addr, "--workload", wl,
            "--token-file", token,     "--ca-bundle",   bundle,          "--admin",    w->admin,
            "--app-ip",     w->app_ip, "--outbound-ip", w->out_ip,       NULL,         NULL,
            NULL,           NULL};
        size_t k = 16; /* after --outbound-ip IP */
        if (u->capture) {
            /* The control plane compiles capture listeners (outbound_ip
             * is then unused). */
            v[14] = "--capture";
            v[15] = NULL;
            k = 15;
        }
        if (sock[0]) {
            v[k] = "--admin-socket";
            v[k + 1] = sock;
        }
        *argv = argv_new(v);
        return *argv ? 0 : -1;
    }
    if (issue_cert(w, ca) != 0)
        return -1;
    const char *v[] = {u->self, "proxy", "--config", model, NULL};
    *argv = argv_new(v);
    return *argv ? 0 : -1;
}

int tr_up_recompile(struct tr_up *u, struct tr_up_workload *w, const struct tr_rset *staged)
{
    struct tr_config *cfg = NULL;
    char *text = compile_model(u, w, staged, &cfg);
    if (text == NULL)
        return -1;
    int hosts = write_hosts(u, w, cfg) | (u->loopback ? write_env(w, cfg) : 0);
    tr_config_free(cfg);
    if (hosts != 0) {
        fprintf(stderr, "trellis up: %s/hosts: %s\n", w->dir, strerror(errno));
        free(text);
        return -1;
    }
    char model[4200];
    snprintf(model, sizeof(model), "%s/model.yaml", w->dir);
    int changed = 1;
    FILE *f = fopen(model, "r");
    if (f != NULL) {
        size_t tl = strlen(text);
        char *old = malloc(tl + 2);
        size_t n = old ? fread(old, 1, tl + 1, f) : 0;
        changed = !(old != NULL && n == tl && memcmp(old, text, tl) == 0);
        free(old);
        fclose(f);
    }
    int rc = changed ? write_file(model, text, strlen(text), 0600) : 0;
    free(text);
    if (rc != 0) {
        fprintf(stderr, "trellis up: %s: %s\n", model, strerror(errno));
        return -1;
    }
    return changed;
}
