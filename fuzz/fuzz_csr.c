/* libFuzzer target for the CA's signing path (src/ca/): any bytes given to
 * tr_ca_sign as a CSR give a signed chain or an error, never a crash, leak,
 * hang or undefined behaviour; and a signed leaf carries exactly the ID the
 * caller authenticated, whatever the CSR asked for.
 *
 * Input: the first byte selects the form of the rest: even = PEM as is,
 * odd = DER, wrapped into PEM here so that mutations reach the ASN.1 parser
 * instead of dying in base64. The CA (a fresh P-256 root) is created once in
 * a temporary directory that is removed at exit.
 *
 * Seeds (fuzz/corpus/fuzz_csr/): CSRs made with the openssl CLI for this
 * target (P-256, P-384, RSA 2048, with and without requested SANs), in both
 * forms. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define ID "spiffe://fuzz.example/ns/default/sa/fuzz"

static struct tr_ca *g_ca;
static char g_dir[64];

static void check(bool ok)
{
    if (!ok)
        abort();
}

static void remove_dir(void)
{
    static const char *const files[] = {"ca-key.pem", "ca-cert.pem", "root-cert.pem",
                                        "cert-chain.pem", "trust-domain"};
    char p[128];
    tr_ca_free(g_ca);
    for (size_t i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
        snprintf(p, sizeof(p), "%s/%s", g_dir, files[i]);
        unlink(p);
    }
    rmdir(g_dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    char *err = NULL;
    snprintf(g_dir, sizeof(g_dir), "/tmp/trellis-fuzz-ca-XXXXXX");
    check(mkdtemp(g_dir) != NULL);
    check(tr_ca_init(g_dir, "fuzz.example", NULL, &err) == 0);
    g_ca = tr_ca_load(g_dir, &err);
    check(g_ca != NULL);
    atexit(remove_dir);
    return 0;
}

/* The signed leaf: one URI SAN, exactly ID; not a CA. */
static void check_leaf(const char *pem, size_t len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    X509 *leaf = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    check(leaf != NULL);
    GENERAL_NAMES *sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    check(sans != NULL && sk_GENERAL_NAME_num(sans) == 1);
    const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, 0);
    check(g->type == GEN_URI);
    check((size_t)g->d.uniformResourceIdentifier->length == strlen(ID) &&
          memcmp(g->d.uniformResourceIdentifier->data, ID, strlen(ID)) == 0);
    check(X509_check_ca(leaf) == 0);
    GENERAL_NAMES_free(sans);
    X509_free(leaf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *body = data + 1;
    size_t blen = size - 1;
    char *pem = NULL;
    size_t pem_len = blen;
    if (data[0] & 1) {
        if (blen > TR_CA_CSR_MAX)
            return 0;
        static const char head[] = "-----BEGIN CERTIFICATE REQUEST-----\n";
        static const char tail[] = "\n-----END CERTIFICATE REQUEST-----\n";
        /* base64 without line breaks: PEM readers accept long lines */
        size_t b64 = 4 * ((blen + 2) / 3);
        pem = malloc(sizeof(head) + b64 + sizeof(tail) + 1);
        check(pem != NULL);
        memcpy(pem, head, sizeof(head) - 1);
        int n = EVP_EncodeBlock((unsigned char *)pem + sizeof(head) - 1, body, (int)blen);
        check(n >= 0 && (size_t)n == b64);
        memcpy(pem + sizeof(head) - 1 + b64, tail, sizeof(tail));
        pem_len = sizeof(head) - 1 + b64 + sizeof(tail) - 1;
    } else {
        pem = malloc(blen + 1);
        check(pem != NULL);
        memcpy(pem, body, blen);
        pem[blen] = '\0';
    }
    char *err = NULL;
    size_t out_len = 0;
    char *chain = tr_ca_sign(g_ca, pem, pem_len, ID, 3600, &out_len, &err);
    check((chain == NULL) != (err == NULL));
    if (chain != NULL) {
        check(out_len == strlen(chain));
        check_leaf(chain, out_len);
    }
    free(chain);
    free(err);
    free(pem);
    return 0;
}
