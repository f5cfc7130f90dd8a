/* Unit tests for src/up/stage.c: the workloads of a directory of Pods (what
 * runs, addresses given, kept or allocated, what is reported), and the staged
 * copy the compiler reads (addresses and the sidecar label injected, every
 * scalar keeping its meaning). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "resource/resource.h"
#include "up/up.h"

static char g_dir[64];

static int setup(void **state)
{
    (void)state;
    snprintf(g_dir, sizeof(g_dir), "/tmp/trellis-up-unit-XXXXXX");
    return mkdtemp(g_dir) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", g_dir);
    return system(cmd) == 0 ? 0 : -1;
}

/* Writes text to DIR/name and reads the directory as `up` does. */
static struct tr_rset *load(const char *name, const char *text, struct tr_diags *d)
{
    char path[256];
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    const char *paths[] = {path};
    struct tr_store *st = tr_store_files(paths, 1);
    assert_non_null(st);
    struct tr_rset *rs = tr_store_snapshot(st, d);
    tr_store_free(st);
    assert_non_null(rs);
    return rs;
}

static bool has_diag(const struct tr_diags *d, enum tr_diag_severity sev, const char *path,
                     const char *needle)
{
    for (size_t i = 0; i < d->n; i++)
        if (d->v[i].severity == sev && d->v[i].where.path &&
            strcmp(d->v[i].where.path, path) == 0 && strstr(d->v[i].msg, needle))
            return true;
    return false;
}

static const struct tr_up_workload *find(const struct tr_up *u, const char *name)
{
    for (size_t i = 0; i < u->n; i++)
        if (strcmp(u->w[i].name, name) == 0)
            return &u->w[i];
    fail_msg("no workload %s", name);
    return NULL;
}

static const char PODS[] = "apiVersion: v1\n"
                           "kind: Pod\n"
                           "metadata: {name: a, namespace: ns, labels: {app: a}}\n"
                           "spec:\n"
                           "  serviceAccountName: sa-a\n"
                           "  containers:\n"
                           "    - name: a\n"
                           "      image: example/a:1\n"
                           "      command: [python3, app.py]\n"
                           "      args: [--port, \"9080\"]\n"
                           "      env: [{name: MODE, value: fast}, {name: X, valueFrom: {}}]\n"
                           "      ports: [{containerPort: 9080}, {containerPort: 9090}]\n"
                           "    - name: extra\n"
                           "      command: [sleep, '1']\n"
                           "status: {podIP: 198.18.0.10}\n"
                           "---\n"
                           "apiVersion: v1\n"
                           "kind: Pod\n"
                           "metadata:\n"
                           "  name: b\n"
                           "  namespace: ns\n"
                           "  annotations: {sidecar.istio.io/inject: \"false\"}\n"
                           "spec:\n"
                           "  containers: [{name: b}]\n"
                           "---\n"
                           "apiVersion: v1\n"
                           "kind: Pod\n"
                           "metadata: {name: c}\n"
                           "spec:\n"
                           "  containers: [{name: c, command: [\"true\"]}]\n";

static void test_workloads(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = load("pods.yaml", PODS, &d);
    struct tr_up u = {.trust_domain = "cluster.local"};
    assert_int_equal(tr_up_workloads(&u, rs, "ns/b 198.18.0.77\n", &d), 0);
    assert_int_equal(d.n_errors, 0);
    assert_int_equal(u.n, 3);

    const struct tr_up_workload *a = find(&u, "a");
    assert_string_equal(a->ns, "ns");
    assert_string_equal(a->sa, "sa-a");
    assert_string_equal(a->ip, "198.18.0.10");
    assert_true(a->ip_given);
    assert_true(a->sidecar);
    assert_string_equal(a->netns, "trl-ns-a");
    assert_string_equal(a->argv[0], "python3");
    assert_string_equal(a->argv[1], "app.py");
    assert_string_equal(a->argv[2], "--port");
    assert_string_equal(a->argv[3], "9080");
    assert_null(a->argv[4]);
    assert_string_equal(a->env[0], "MODE=fast");
    assert_null(a->env[1]);
    assert_int_equal(a->n_ports, 2);
    assert_int_equal(a->ports[1], 9090);
    assert_string_equal(a->cwd, g_dir);
    assert_true(has_diag(&d, TR_DIAG_WARNING, "spec.containers[0].image", "ignored"));
    assert_true(has_diag(&d, TR_DIAG_WARNING, "spec.containers[1]", "containers[0] only"));
    assert_true(has_diag(&d, TR_DIAG_WARNING, "spec.containers[0].env[1]", "valueFrom"));

    const struct tr_up_workload *b = find(&u, "b");
    assert_false(b->sidecar);
    assert_null(b->argv); /* no command: only a warning */
    assert_true(has_diag(&d, TR_DIAG_WARNING, "spec.containers[0].command", "no command"));
    assert_string_equal(b->ip, "198.18.0.77"); /* kept from the last run */
    assert_false(b->ip_given);

    const struct tr_up_workload *c = find(&u, "c");
    assert_string_equal(c->ns, "default");
    assert_string_equal(c->sa, "default");
    assert_string_equal(c->ip, "198.18.0.11"); /* .10 is a's */
    assert_string_equal(c->argv[0], "true");
    tr_up_workloads_free(&u);
    tr_rset_free(rs);
    tr_diags_free(&d);
}

static void test_addresses_refused(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = load("bad.yaml",
                              "apiVersion: v1\nkind: Pod\nmetadata: {name: x}\n"
                              "spec: {containers: [{name: x, command: [a]}]}\n"
                              "status: {podIP: 10.0.0.1}\n---\n"
                              "apiVersion: v1\nkind: Pod\nmetadata: {name: pod-y}\n"
                              "spec: {containers: [{name: y, command: [a]}]}\n"
                              "status: {podIP: 198.19.1.1}\n---\n"
                              "apiVersion: v1\nkind: Pod\nmetadata: {name: pod-z}\n"
                              "spec: {containers: [{name: z, command: [a]}]}\n"
                              "status: {podIP: 198.19.1.1}\n---\n"
                              "apiVersion: v1\nkind: Pod\nmetadata: {name: pod-c}\n"
                              "spec: {containers: [{name: c, command: [a]}]}\n"
                              "status: {podIP: 198.18.0.1}\n",
                              &d);
    struct tr_up u = {.trust_domain = "cluster.local"};
    assert_int_equal(tr_up_workloads(&u, rs, NULL, &d), -1);
    assert_true(has_diag(&d, TR_DIAG_ERROR, "status.podIP", "198.18.0.0/15"));
    assert_true(has_diag(&d, TR_DIAG_ERROR, "status.podIP", "also Pod default/pod-y's"));
    assert_true(has_diag(&d, TR_DIAG_ERROR, "status.podIP", "the control plane"));
    assert_int_equal(d.n_errors, 3);
    tr_up_workloads_free(&u);
    tr_rset_free(rs);
    tr_diags_free(&d);
}

static void test_long_names(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    char text[1024];
    const char *ns = "a-namespace-with-a-rather-long-name";
    snprintf(text, sizeof(text),
             "apiVersion: v1\nkind: Pod\nmetadata: {name: workload-%s, namespace: %s}\n"
             "spec: {containers: [{name: x, command: [a]}]}\n---\n"
             "apiVersion: v1\nkind: Pod\nmetadata: {name: workload-%s-2, namespace: %s}\n"
             "spec: {containers: [{name: x, command: [a]}]}\n",
             ns, ns, ns, ns);
    struct tr_rset *rs = load("long.yaml", text, &d);
    struct tr_up u = {.trust_domain = "cluster.local"};
    assert_int_equal(tr_up_workloads(&u, rs, NULL, &d), 0);
    assert_int_equal(u.n, 2);
    assert_true(strlen(u.w[0].netns) < 48);
    assert_true(strncmp(u.w[0].netns, "trl-a-namespace", 15) == 0);
    assert_string_not_equal(u.w[0].netns, u.w[1].netns);
    tr_up_workloads_free(&u);
    tr_rset_free(rs);
    tr_diags_free(&d);
}

static const char *str_at(const struct tr_rnode *n, const char *path)
{
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k; k = strtok_r(NULL, ".", &save))
        n = tr_rnode_get(n, k);
    const char *s = NULL;
    return n && tr_rnode_str(n, &s) ? s : NULL;
}

static void test_stage(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = load(
        "mesh.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns1}\n"
        "spec: {containers: [{name: p, command: [a]}]}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: q, namespace: ns1, labels: {app: q}}\n"
        "spec: {containers: [{name: q, command: [a]}]}\nstatus: {phase: Running}\n---\n"
        "apiVersion: v1\nkind: Pod\n"
        "metadata: {name: r, namespace: ns1, labels: {sidecar.istio.io/inject: 'false'}}\n"
        "spec: {containers: [{name: r, command: [a]}]}\n---\n"
        "apiVersion: v1\nkind: Pod\nmetadata: {name: t, namespace: ns1, labels: ~}\n"
        "spec: {containers: [{name: t, command: [a]}]}\nstatus: {podIP: \"\", phase: x}\n---\n"
        "apiVersion: v1\nkind: Pod\n"
        "metadata: {name: u, namespace: ns1, labels: {security.istio.io/tlsMode: disabled}}\n"
        "spec: {containers: [{name: u, command: [a]}]}\nstatus: ~\n---\n"
        "apiVersion: v1\nkind: Service\nmetadata: {name: s, namespace: ns1}\n"
        "spec:\n  ports: [{port: 80, targetPort: \"80\", name: \"a \\\"quoted\\\\ name\\n\"}]\n"
        "  publishNotReadyAddresses: true\n  clusterIP: ~\n  x: 1.5\n  y: 0x10\n",
        &d);
    struct tr_up u = {.trust_domain = "cluster.local"};
    assert_int_equal(tr_up_workloads(&u, rs, NULL, &d), 0);
    char path[256];
    snprintf(path, sizeof(path), "%s/staged.json", g_dir);
    assert_int_equal(tr_up_stage(&u, rs, path), 0);

    struct tr_diags d2;
    tr_diags_init(&d2);
    const char *paths[] = {path};
    struct tr_store *st = tr_store_files(paths, 1);
    struct tr_rset *staged = tr_store_snapshot(st, &d2);
    tr_store_free(st);
    assert_non_null(staged);
    assert_int_equal(d2.n_errors, 0);
    assert_int_equal(tr_rset_count(staged), tr_rset_count(rs));

    const struct tr_resource *p = tr_rset_find(staged, "", "Pod", "ns1", "p");
    assert_non_null(p);
    assert_string_equal(str_at(p->obj, "status.podIP"), "198.18.0.10");
    assert_string_equal(tr_resource_label(p, "security.istio.io/tlsMode"), "istio");
    const struct tr_resource *q = tr_rset_find(staged, "", "Pod", "ns1", "q");
    assert_string_equal(str_at(q->obj, "status.podIP"), "198.18.0.11");
    assert_string_equal(str_at(q->obj, "status.phase"), "Running");
    assert_string_equal(tr_resource_label(q, "app"), "q");
    assert_string_equal(tr_resource_label(q, "security.istio.io/tlsMode"), "istio");
    const struct tr_resource *r = tr_rset_find(staged, "", "Pod", "ns1", "r");
    assert_null(tr_resource_label(r, "security.istio.io/tlsMode")); /* opted out */
    assert_string_equal(str_at(r->obj, "status.podIP"), "198.18.0.12");

    const struct tr_resource *t = tr_rset_find(staged, "", "Pod", "ns1", "t");
    assert_string_equal(str_at(t->obj, "status.podIP"), "198.18.0.13"); /* "" replaced */
    assert_string_equal(str_at(t->obj, "status.phase"), "x");
    assert_string_equal(tr_resource_label(t, "security.istio.io/tlsMode"), "istio");
    const struct tr_resource *u2 = tr_rset_find(staged, "", "Pod", "ns1", "u");
    assert_string_equal(str_at(u2->obj, "status.podIP"), "198.18.0.14"); /* status: ~ */
    assert_string_equal(tr_resource_label(u2, "security.istio.io/tlsMode"), "disabled");

    const struct tr_resource *s = tr_rset_find(staged, "", "Service", "ns1", "s");
    const struct tr_rnode *port = tr_rnode_get(s->spec, "ports")->head;
    int64_t v;
    assert_true(tr_rnode_int(tr_rnode_get(port, "port"), &v) && v == 80);
    assert_true(tr_rnode_get(port, "port")->plain);        /* a number stays one */
    assert_false(tr_rnode_get(port, "targetPort")->plain); /* a quoted "80" stays a string */
    assert_string_equal(str_at(port, "name"), "a \"quoted\\ name\n");
    bool b;
    assert_true(tr_rnode_bool(tr_rnode_get(s->spec, "publishNotReadyAddresses"), &b) && b);
    assert_true(tr_rnode_is_null(tr_rnode_get(s->spec, "clusterIP")));
    double x;
    assert_true(tr_rnode_double(tr_rnode_get(s->spec, "x"), &x) && x == 1.5);
    assert_string_equal(str_at(s->spec, "y"), "0x10");
    assert_true(tr_rnode_get(s->spec, "y")->plain); /* a plain token stays plain */
    tr_rset_free(staged);
    tr_diags_free(&d2);
    tr_up_workloads_free(&u);
    tr_rset_free(rs);
    tr_diags_free(&d);
}

/* Loopback mode: every Pod gets 127.77.0.10 up (a podIP written is replaced,
 * warned, in the staged copy only; podIPs too), its application and outbound
 * addresses the same host part in 127.78/16 and 127.79/16; a kept address
 * stays; netns mode's are 127.0.0.1 and 127.0.0.2. */
static void test_loopback_addresses(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs =
        load("lo.yaml",
             "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: ns1}\n"
             "spec: {containers: [{name: p, command: [a]}]}\n"
             "status: {podIP: 198.18.0.50, podIPs: [{ip: 198.18.0.50}], phase: Running}\n---\n"
             "apiVersion: v1\nkind: Pod\nmetadata: {name: q, namespace: ns1}\n"
             "spec: {containers: [{name: q, command: [a]}]}\n---\n"
             "apiVersion: v1\nkind: Pod\nmetadata: {name: r, namespace: ns1}\n"
             "spec: {containers: [{name: r, command: [a]}]}\n",
             &d);
    struct tr_up u = {.trust_domain = "cluster.local", .loopback = true};
    assert_int_equal(tr_up_workloads(&u, rs, "ns1/r 127.77.1.2\n", &d), 0);
    assert_int_equal(d.n_errors, 0);
    assert_true(has_diag(&d, TR_DIAG_WARNING, "status.podIP", "loopback mode"));
    const struct tr_up_workload *p = find(&u, "p"), *q = find(&u, "q"), *r = find(&u, "r");
    assert_string_equal(p->ip, "127.77.0.10");
    assert_false(p->ip_given);
    assert_string_equal(p->app_ip, "127.78.0.10");
    assert_string_equal(p->out_ip, "127.79.0.10");
    assert_string_equal(q->ip, "127.77.0.11");
    assert_string_equal(r->ip, "127.77.1.2"); /* kept across a reload */
    assert_string_equal(r->app_ip, "127.78.1.2");
    assert_string_equal(r->out_ip, "127.79.1.2");

    char path[256];
    snprintf(path, sizeof(path), "%s/lo.json", g_dir);
    assert_int_equal(tr_up_stage(&u, rs, path), 0);
    struct tr_diags d2;
    tr_diags_init(&d2);
    const char *paths[] = {path};
    struct tr_store *st = tr_store_files(paths, 1);
    struct tr_rset *staged = tr_store_snapshot(st, &d2);
    tr_store_free(st);
    assert_non_null(staged);
    const struct tr_resource *sp = tr_rset_find(staged, "", "Pod", "ns1", "p");
    assert_string_equal(str_at(sp->obj, "status.podIP"), "127.77.0.10");
    assert_string_equal(str_at(sp->obj, "status.phase"), "Running");
    assert_null(tr_rnode_get(tr_rnode_get(sp->obj, "status"), "podIPs"));
    tr_rset_free(staged);
    tr_diags_free(&d2);
    tr_up_workloads_free(&u);

    /* the same Pods in netns mode */
    struct tr_up n = {.trust_domain = "cluster.local"};
    assert_int_equal(tr_up_workloads(&n, rs, NULL, &d), 0);
    assert_string_equal(find(&n, "p")->ip, "198.18.0.50");
    assert_string_equal(find(&n, "p")->app_ip, "127.0.0.1");
    assert_string_equal(find(&n, "p")->out_ip, "127.0.0.2");
    tr_up_workloads_free(&n);
    tr_rset_free(rs);
    tr_diags_free(&d);
}

/* Two trees read the same: same shape, same keys, and every scalar the same
 * text with the same meaning (null, bool, integer, number or string). */
static void same_tree(const struct tr_rnode *a, const struct tr_rnode *b, const char *file)
{
    assert_non_null(b);
    if (a->kind != b->kind)
        fail_msg("%s:%u: kind differs", file, a->line);
    if (a->kind == TR_RNODE_SCALAR) {
        bool an = tr_rnode_is_null(a), bn = tr_rnode_is_null(b);
        if (an != bn || (!an && (a->len != b->len || memcmp(a->s, b->s, a->len) != 0)))
            fail_msg("%s:%u: scalar \"%s\" reads back as \"%s\"", file, a->line, a->s, b->s);
        bool ab = false, bb = false, abv = false, bbv = false;
        ab = tr_rnode_bool(a, &abv);
        bb = tr_rnode_bool(b, &bbv);
        int64_t ai = 0, bi = 0;
        double ad = 0, bd = 0;
        if (ab != bb || abv != bbv || tr_rnode_int(a, &ai) != tr_rnode_int(b, &bi) || ai != bi ||
            tr_rnode_double(a, &ad) != tr_rnode_double(b, &bd) || a->plain != b->plain)
            if (!(a->plain && !b->plain && !ab && !tr_rnode_int(a, &ai) &&
                  !tr_rnode_double(a, &ad)))
                fail_msg("%s:%u: scalar \"%s\" changes meaning", file, a->line, a->s);
        return;
    }
    if (a->n != b->n)
        fail_msg("%s:%u: %zu children read back as %zu", file, a->line, a->n, b->n);
    for (const struct tr_rnode *x = a->head, *y = b->head; x; x = x->next, y = y->next)
        same_tree(x, y, file);
}

/* Every resource of the fuzz corpora and of examples/bookinfo, staged and
 * read back, is the resource that was read. */
static void test_stage_round_trip(void **state)
{
    (void)state;
    static const char *const dirs[] = {"fuzz/corpus/fuzz_resource", "fuzz/corpus/fuzz_istio",
                                       "examples/bookinfo"};
    size_t files = 0, resources = 0;
    for (size_t i = 0; i < sizeof(dirs) / sizeof(dirs[0]); i++) {
        char dir[512];
        snprintf(dir, sizeof(dir), "%s/%s", TR_SOURCE_ROOT, dirs[i]);
        const char *paths[] = {dir};
        struct tr_diags d;
        tr_diags_init(&d);
        struct tr_store *st = tr_store_files(paths, 1);
        struct tr_rset *rs = tr_store_snapshot(st, &d);
        tr_store_free(st);
        assert_non_null(rs);
        struct tr_up u = {.trust_domain = "cluster.local"};
        char path[256];
        snprintf(path, sizeof(path), "%s/round-trip-%zu.json", g_dir, i);
        assert_int_equal(tr_up_stage(&u, rs, path), 0);
        const char *spaths[] = {path};
        struct tr_diags d2;
        tr_diags_init(&d2);
        st = tr_store_files(spaths, 1);
        struct tr_rset *back = tr_store_snapshot(st, &d2);
        tr_store_free(st);
        assert_non_null(back);
        assert_int_equal(d2.n_errors, 0);
        assert_int_equal(tr_rset_count(back), tr_rset_count(rs));
        for (size_t k = 0; k < tr_rset_count(rs); k++) {
            const struct tr_resource *a = tr_rset_at(rs, k), *b = tr_rset_at(back, k);
            assert_string_equal(a->kind, b->kind);
            assert_string_equal(a->name, b->name);
            same_tree(a->obj, b->obj, a->file);
            resources++;
        }
        files++;
        tr_rset_free(back);
        tr_rset_free(rs);
        tr_diags_free(&d);
        tr_diags_free(&d2);
    }
    assert_true(resources > 20);
    (void)files;
}

/* Capture mode: every Service's virtual IP: its clusterIP, none when
 * headless, else a hashed one in 198.19.128.0/17, the same on the next run
 * whatever the file order; host names map to it. */
static const char *SERVICES =
    "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: ns}\n"
    "spec: {containers: [{name: a, command: [true]}]}\n---\n"
    "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: ns}\n"
    "spec: {clusterIP: 10.96.0.50, ports: [{port: 80}]}\n---\n"
    "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: ns}\n"
    "spec: {ports: [{port: 5432}]}\n---\n"
    "apiVersion: v1\nkind: Service\nmetadata: {name: db, namespace: other}\n"
    "spec: {clusterIP: \"\", ports: [{port: 5432}]}\n---\n"
    "apiVersion: v1\nkind: Service\nmetadata: {name: head, namespace: ns}\n"
    "spec: {clusterIP: None, ports: [{port: 80}]}\n---\n"
    "apiVersion: v1\nkind: Service\nmetadata: {name: lo, namespace: ns}\n"
    "spec: {clusterIP: 127.0.0.9, ports: [{port: 80}]}\n";

static void vips_of(const char *file, const char *text, struct tr_up *u, struct tr_diags *d)
{
    struct tr_rset *rs = load(file, text, d);
    assert_int_equal(tr_up_workloads(u, rs, NULL, d), 0);
    assert_int_equal(tr_up_vips(u, rs, d), 0);
    tr_rset_free(rs);
}

static void test_vips(void **state)
{
    (void)state;
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_up u = {.trust_domain = "cluster.local", .capture = true};
    vips_of("svc.yaml", SERVICES, &u, &d);
    assert_int_equal(d.n_errors, 0);
    assert_int_equal(u.n_vips, 4); /* not the headless one */
    assert_string_equal(tr_up_vip_of(&u, "web", "ns"), "10.96.0.50");
    assert_string_equal(tr_up_vip_of(&u, "web.ns.svc.cluster.local", "other"), "10.96.0.50");
    assert_true(tr_up_vip_needs_route("10.96.0.50"));
    const char *db = tr_up_vip_of(&u, "db", "ns");
    const char *db2 = tr_up_vip_of(&u, "db.other", "ns");
    assert_non_null(db);
    assert_non_null(db2);
    assert_true(strncmp(db, "198.19.", 7) == 0 && strcmp(db, db2) != 0);
    unsigned o3 = 0;
    assert_int_equal(sscanf(db, "198.19.%u.", &o3), 1);
    assert_true(o3 >= 128 && o3 <= 255);
    assert_false(tr_up_vip_needs_route(db));
    assert_string_equal(tr_up_vip_of(&u, "db.ns.svc", "x"), db);
    assert_null(tr_up_vip_of(&u, "head", "ns"));
    assert_null(tr_up_vip_of(&u, "db.ns.example.com", "ns")); /* not a Service name */
    assert_null(tr_up_vip_of(&u, "nope", "ns"));
    /* loopback is never captured: allocated instead, with a warning */
    const char *lo = tr_up_vip_of(&u, "lo", "ns");
    assert_true(strncmp(lo, "198.19.", 7) == 0);
    assert_true(has_diag(&d, TR_DIAG_WARNING, "spec.clusterIP", "127.0.0.9"));
    char keep[16];
    snprintf(keep, sizeof(keep), "%s", db);

    /* the same Services in another order: the same addresses */
    struct tr_up u2 = {.trust_domain = "cluster.local", .capture = true};
    const char *rev = strstr(SERVICES, "apiVersion: v1\nkind: Service\nmetadata: {name: db,");
    char text[2048];
    snprintf(text, sizeof(text), "%s---\n%.*s", rev, (int)(rev - SERVICES), SERVICES);
    tr_diags_free(&d);
    tr_diags_init(&d);
    vips_of("svc2.yaml", text, &u2, &d);
    assert_string_equal(tr_up_vip_of(&u2, "db", "ns"), keep);
    tr_up_workloads_free(&u2);
    tr_up_workloads_free(&u);

    /* a clusterIP taken (by another Service, or a Pod) is an error */
    struct tr_up u3 = {.trust_domain = "cluster.local", .capture = true};
    tr_diags_free(&d);
    tr_diags_init(&d);
    vips_of("svc3.yaml",
            "apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: ns}\n"
            "spec: {containers: [{name: a, command: [true]}]}\nstatus: {podIP: 198.18.0.20}\n"
            "---\napiVersion: v1\nkind: Service\nmetadata: {name: sx, namespace: ns}\n"
            "spec: {clusterIP: 198.18.0.20}\n---\n"
            "apiVersion: v1\nkind: Service\nmetadata: {name: sy, namespace: ns}\n"
            "spec: {clusterIP: 10.0.0.1}\n---\n"
            "apiVersion: v1\nkind: Service\nmetadata: {name: sz, namespace: ns}\n"
            "spec: {clusterIP: 10.0.0.1}\n",
            &u3, &d);
    assert_int_equal(d.n_errors, 2);
    assert_true(has_diag(&d, TR_DIAG_ERROR, "spec.clusterIP", "198.18.0.20"));
    assert_true(has_diag(&d, TR_DIAG_ERROR, "spec.clusterIP", "10.0.0.1"));
    tr_up_workloads_free(&u3);
    tr_diags_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_workloads),
        cmocka_unit_test(test_addresses_refused),
        cmocka_unit_test(test_long_names),
        cmocka_unit_test(test_stage),
        cmocka_unit_test(test_stage_round_trip),
        cmocka_unit_test(test_loopback_addresses),
        cmocka_unit_test(test_vips),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
