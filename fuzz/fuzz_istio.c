/* libFuzzer target for the Istio compiler: any bytes, read as Kubernetes
 * resources next to a fixed client pod, compile for that workload to either
 * findings without a model or a model that the native loader accepts, and
 * writes back to the same text: never a crash, leak, hang or undefined
 * behaviour, never a model `trellis proxy --check` would refuse.
 *
 * Seeds (fuzz/corpus/fuzz_istio/): small meshes written for this target, and
 * copies of Istio's bookinfo networking samples (Apache-2.0, from the shared
 * corpus; its README names the commit). */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config/load.h"
#include "config/write.h"
#include "core/diag.h"
#include "dialect/istio/istio.h"
#include "resource/resource.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* The loader checks that a TLS context's files can be read (it does not
 * parse them): the compiled mesh context points at empty ones. */
static char g_certs[] = "/tmp/trellis-fuzz-istio-XXXXXX";
static const char *const g_cert_names[] = {"cert.pem", "key.pem", "ca.pem"};

static void remove_certs(void)
{
    for (size_t i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof(p), "%s/%s", g_certs, g_cert_names[i]);
        unlink(p);
    }
    rmdir(g_certs);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (mkdtemp(g_certs) == NULL)
        abort();
    atexit(remove_certs);
    for (size_t i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof(p), "%s/%s", g_certs, g_cert_names[i]);
        FILE *f = fopen(p, "w");
        if (f == NULL)
            abort();
        fclose(f);
    }
    return 0;
}

static const char CLIENT[] = "\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: fuzz-client, "
                             "namespace: default, labels: {app: fuzz}}\n"
                             "spec: {serviceAccountName: fuzz}\nstatus: {podIP: 127.0.0.9}\n";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > (1u << 20))
        return 0;
    char *buf = malloc(size + sizeof(CLIENT));
    if (buf == NULL)
        return 0;
    memcpy(buf, data, size);
    memcpy(buf + size, CLIENT, sizeof(CLIENT));
    struct tr_diags d;
    tr_diags_init(&d);
    struct tr_rset *rs = tr_rset_from_buffer(buf, size + sizeof(CLIENT) - 1, "fuzz.yaml", &d);
    /* An input that starts with a YAML comment compiles as with --capture
     * (virtual listeners, destinationSubnets): both paths get fuzzed. */
    struct tr_istio_options o = {.ns = "default",
                                 .name = "fuzz-client",
                                 .cert_dir = g_certs,
                                 .capture = size > 0 && data[0] == '#'};
    struct tr_config *cfg = rs ? tr_istio_compile(rs, &o, &d) : NULL;
    if (cfg != NULL) {
        /* The model must print, and the print must load: the rule every
         * compiled model keeps (validated files only: certificate files are
         * not read by the loader). */
        size_t len;
        char *err = NULL;
        char *text = tr_config_write(cfg, TR_CONFIG_YAML, &len, &err);
        if (text == NULL) {
            fprintf(stderr, "the compiled model does not print: %s\n", err);
            abort();
        }
        struct tr_config *back = tr_config_load_buffer(text, len, "compiled.yaml", &err);
        if (back == NULL) {
            fprintf(stderr, "the compiled model does not load: %s\n%s\n", err, text);
            abort();
        }
        size_t len2;
        char *again = tr_config_write(back, TR_CONFIG_YAML, &len2, &err);
        if (again == NULL || len2 != len || memcmp(again, text, len) != 0)
            abort();
        free(again);
        tr_config_free(back);
        free(text);
        free(err);
    }
    tr_config_free(cfg);
    tr_rset_free(rs);
    tr_diags_free(&d);
    free(buf);
    return 0;
}
