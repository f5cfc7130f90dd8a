/* Unit tests for src/ca: state directory, plug-in CA files, SVID signing,
 * tokens, expiry status. Certificates are checked with the OpenSSL API. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "ca/ca.h"

#define ID "spiffe://example.org/ns/default/sa/web"

static char g_root[64];
static int g_seq;
static bool g_no_ski; /* make_ca_cert leaves out the subject key identifier */

/* A fresh subdirectory path (not created) under the test's temp dir. */
static const char *new_path(char *buf, size_t size)
{
    snprintf(buf, size, "%s/d%d", g_root, ++g_seq);
    return buf;
}

static void rm_tree(const char *dir)
{
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static int group_setup(void **state)
{
    snprintf(g_root, sizeof(g_root), "/tmp/trellis-ca-test-XXXXXX");
    return mkdtemp(g_root) ? 0 : -1;
}

static int group_teardown(void **state)
{
    rm_tree(g_root);
    return 0;
}

static void write_text(const char *dir, const char *name, const char *data, size_t len)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, len, f), len);
    fclose(f);
}

static void write_certs(const char *dir, const char *name, X509 *a, X509 *b)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_X509(bio, a));
    if (b)
        assert_true(PEM_write_bio_X509(bio, b));
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    write_text(dir, name, data, (size_t)n);
    BIO_free(bio);
}

static void write_key(const char *dir, const char *name, EVP_PKEY *k)
{
    BIO *bio = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_PrivateKey(bio, k, NULL, NULL, 0, NULL, NULL));
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    write_text(dir, name, data, (size_t)n);
    BIO_free(bio);
}

static void add_ext(X509 *x, X509 *issuer, int nid, const char *v)
{
    X509V3_CTX c;
    X509V3_set_ctx(&c, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, &c, nid, v);
    assert_non_null(e);
    assert_true(X509_add_ext(x, e, -1));
    X509_EXTENSION_free(e);
}

/* A CA certificate for key, signed by issuer (NULL: self-signed), valid
 * [now - 1h, now + na_off]. */
static X509 *make_ca_cert(const char *cn, EVP_PKEY *key, X509 *issuer, EVP_PKEY *issuer_key,
                          long na_off)
{
    static long serial = 1;
    X509 *x = X509_new();
    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), na_off);
    X509_set_pubkey(x, key);
    add_ext(x, issuer ? issuer : x, NID_basic_constraints, "critical,CA:TRUE");
    add_ext(x, issuer ? issuer : x, NID_key_usage, "critical,keyCertSign,cRLSign");
    if (!g_no_ski)
        add_ext(x, issuer ? issuer : x, NID_subject_key_identifier, "hash");
    assert_true(X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0);
    return x;
}

struct plugin {
    EVP_PKEY *root_key, *int_key;
    X509 *root, *inter;
};

/* Istio plug-in files in dir: intermediate (valid for int_life seconds)
 * under a root. */
static void make_plugin(const char *dir, struct plugin *p, long int_life)
{
    assert_int_equal(mkdir(dir, 0700), 0);
    p->root_key = EVP_EC_gen("P-256");
    p->int_key = EVP_EC_gen("P-256");
    p->root = make_ca_cert("plugin root", p->root_key, NULL, NULL, 3650L * 86400);
    p->inter = make_ca_cert("plugin intermediate", p->int_key, p->root, p->root_key, int_life);
    write_certs(dir, "ca-cert.pem", p->inter, NULL);
    write_key(dir, "ca-key.pem", p->int_key);
    write_certs(dir, "root-cert.pem", p->root, NULL);
    write_certs(dir, "cert-chain.pem", p->inter, p->root);
}

static void plugin_free(struct plugin *p)
{
    EVP_PKEY_free(p->root_key);
    EVP_PKEY_free(p->int_key);
    X509_free(p->root);
    X509_free(p->inter);
}

static struct tr_ca *new_ca(char *dir, size_t size)
{
    char *err = NULL;
    new_path(dir, size);
    assert_int_equal(tr_ca_init(dir, "example.org", NULL, &err), 0);
    struct tr_ca *ca = tr_ca_load(dir, &err);
    assert_non_null(ca);
    assert_null(err);
    return ca;
}

static char *csr_for(EVP_PKEY *key, const char *san, size_t *len)
{
    X509_REQ *req = X509_REQ_new();
    X509_REQ_set_version(req, X509_REQ_VERSION_1);
    X509_NAME_add_entry_by_txt(X509_REQ_get_subject_name(req), "CN", MBSTRING_ASC,
                               (const unsigned char *)"admin", -1, -1, 0);
    X509_REQ_set_pubkey(req, key);
    if (san != NULL) {
        STACK_OF(X509_EXTENSION) *exts = sk_X509_EXTENSION_new_null();
        X509_EXTENSION *e = X509V3_EXT_nconf_nid(NULL, NULL, NID_subject_alt_name, san);
        assert_non_null(e);
        sk_X509_EXTENSION_push(exts, e);
        e = X509V3_EXT_nconf_nid(NULL, NULL, NID_basic_constraints, "critical,CA:TRUE");
        sk_X509_EXTENSION_push(exts, e);
        assert_true(X509_REQ_add_extensions(req, exts));
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }
    assert_true(X509_REQ_sign(req, key, EVP_sha256()) > 0);
    BIO *bio = BIO_new(BIO_s_mem());
    assert_true(PEM_write_bio_X509_REQ(bio, req));
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *out = strndup(data, (size_t)n);
    *len = (size_t)n;
    BIO_free(bio);
    X509_REQ_free(req);
    return out;
}

static STACK_OF(X509) * parse_chain(const char *pem, size_t len)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509) *sk = sk_X509_new_null();
    X509 *x;
    while ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
        sk_X509_push(sk, x);
    BIO_free(bio);
    return sk;
}

static time_t to_time(const ASN1_TIME *t)
{
    struct tm tm;
    assert_int_equal(ASN1_TIME_to_tm(t, &tm), 1);
    return timegm(&tm);
}

static int verify_with(X509 *leaf, STACK_OF(X509) * untrusted, X509 *root)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_add_cert(st, root);
    X509_STORE_CTX *c = X509_STORE_CTX_new();
    X509_STORE_CTX_init(c, st, leaf, untrusted);
    int rc = X509_verify_cert(c);
    X509_STORE_CTX_free(c);
    X509_STORE_free(st);
    return rc;
}

static X509 *first_cert_of(const char *dir, const char *name)
{
    char p[256];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    X509 *x = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(x);
    return x;
}

static mode_t mode_of(const char *dir, const char *name)
{
    char p[256];
    struct stat st;
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    assert_int_equal(stat(p, &st), 0);
    return st.st_mode & 07777;
}

static void test_create_and_reload(void **state)
{
    char dir[128], *err = NULL;
    new_path(dir, sizeof(dir));
    mode_t old = umask(0); /* the key must be 0600 whatever the umask */
    int rc = tr_ca_init(dir, "example.org", NULL, &err);
    umask(old);
    assert_int_equal(rc, 0);
    assert_int_equal(mode_of(dir, "ca-key.pem"), 0600);
    assert_int_equal(mode_of(dir, ""), 0700);
    struct tr_ca *ca = tr_ca_load(dir, &err);
    assert_non_null(ca);
    assert_string_equal(tr_ca_trust_domain(ca), "example.org");
    time_t now = time(NULL);
    assert_true(tr_ca_not_after(ca) > now + 9L * 365 * 86400);

    /* The root is an EC P-256 self-signed CA, and the bundle is exactly it. */
    X509 *root = first_cert_of(dir, "ca-cert.pem");
    assert_int_equal(X509_self_signed(root, 1), 1);
    assert_int_equal(X509_check_ca(root), 1);
    char group[32];
    size_t gl;
    assert_int_equal(EVP_PKEY_get_group_name(X509_get0_pubkey(root), group, sizeof(group), &gl), 1);
    assert_string_equal(group, "prime256v1");
    size_t blen;
    char *bundle = tr_ca_bundle_pem(ca, &blen);
    STACK_OF(X509) *b = parse_chain(bundle, blen);
    assert_int_equal(sk_X509_num(b), 1);
    assert_int_equal(X509_cmp(sk_X509_value(b, 0), root), 0);
    sk_X509_pop_free(b, X509_free);
    free(bundle);
    X509_free(root);
    tr_ca_free(ca);

    /* A second init refuses to overwrite it. */
    assert_int_equal(tr_ca_init(dir, "example.org", NULL, &err), -1);
    assert_non_null(strstr(err, "already holds a CA"));
    free(err);
    err = NULL;
    ca = tr_ca_load(dir, &err);
    assert_non_null(ca);
    tr_ca_free(ca);
}

static void test_key_readable_by_others_refused(void **state)
{
    char dir[128], p[256], *err = NULL;
    tr_ca_free(new_ca(dir, sizeof(dir)));
    snprintf(p, sizeof(p), "%s/ca-key.pem", dir);
    assert_int_equal(chmod(p, 0640), 0);
    assert_null(tr_ca_load(dir, &err));
    assert_non_null(strstr(err, "ca-key.pem: mode 0640"));
    free(err);
}

static void test_bad_trust_domain_refused(void **state)
{
    char dir[128], *err = NULL;
    new_path(dir, sizeof(dir));
    assert_int_equal(tr_ca_init(dir, "Bad Domain", NULL, &err), -1);
    assert_non_null(strstr(err, "trust domain"));
    free(err);
}

static void test_plugin_good(void **state)
{
    char src[128], dir[128], *err = NULL;
    struct plugin pl;
    make_plugin(new_path(src, sizeof(src)), &pl, 365L * 86400);
    new_path(dir, sizeof(dir));
    assert_int_equal(tr_ca_init(dir, "example.org", src, &err), 0);
    assert_null(err);
    assert_int_equal(mode_of(dir, "ca-key.pem"), 0600);
    struct tr_ca *ca = tr_ca_load(dir, &err);
    assert_non_null(ca);

    EVP_PKEY *k = tr_ca_key_new();
    size_t clen, len;
    char *csr = tr_ca_csr_new(k, &clen);
    assert_non_null(csr);
    char *pem = tr_ca_sign(ca, csr, clen, ID, 3600, &len, &err);
    assert_non_null(pem);
    /* leaf + the intermediate, not the root */
    STACK_OF(X509) *chain = parse_chain(pem, len);
    assert_int_equal(sk_X509_num(chain), 2);
    assert_int_equal(X509_cmp(sk_X509_value(chain, 1), pl.inter), 0);
    X509 *leaf = sk_X509_shift(chain);
    assert_int_equal(verify_with(leaf, chain, pl.root), 1);
    assert_int_equal(X509_check_private_key(leaf, k), 1);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    free(pem);
    free(csr);
    EVP_PKEY_free(k);
    tr_ca_free(ca);
    plugin_free(&pl);
}

/* An operator's CA without a subject key identifier still signs (no AKI). */
static void test_plugin_without_ski(void **state)
{
    char src[128], dir[128], *err = NULL;
    struct plugin pl;
    g_no_ski = true;
    make_plugin(new_path(src, sizeof(src)), &pl, 365L * 86400);
    g_no_ski = false;
    new_path(dir, sizeof(dir));
    assert_int_equal(tr_ca_init(dir, "example.org", src, &err), 0);
    struct tr_ca *ca = tr_ca_load(dir, &err);
    assert_non_null(ca);
    EVP_PKEY *k = tr_ca_key_new();
    size_t clen, len;
    char *csr = tr_ca_csr_new(k, &clen);
    char *pem = tr_ca_sign(ca, csr, clen, ID, 3600, &len, &err);
    assert_non_null(pem);
    STACK_OF(X509) *chain = parse_chain(pem, len);
    X509 *leaf = sk_X509_shift(chain);
    assert_null(X509_get0_authority_key_id(leaf));
    assert_non_null(X509_get0_subject_key_id(leaf));
    assert_int_equal(verify_with(leaf, chain, pl.root), 1);
    X509_free(leaf);
    sk_X509_pop_free(chain, X509_free);
    free(pem);
    free(csr);
    EVP_PKEY_free(k);
    tr_ca_free(ca);
    plugin_free(&pl);
}

static void test_plugin_mismatched_key(void **state)
{
    char src[128], dir[128], p[256], *err = NULL;
    struct plugin pl;
    make_plugin(new_path(src, sizeof(src)), &pl, 365L * 86400);
    EVP_PKEY *other = EVP_EC_gen("P-256");
    snprintf(p, sizeof(p), "%s/ca-key.pem", src);
    unlink(p);
    write_key(src, "ca-key.pem", other);
    new_path(dir, sizeof(dir));
    assert_int_equal(tr_ca_init(dir, "example.org", src, &err), -1);
    assert_non_null(strstr(err, "does not match"));
    free(err);
    /* Nothing half-written is left behind. */
    snprintf(p, sizeof(p), "%s/ca-key.pem", dir);
    assert_int_not_equal(access(p, F_OK), 0);
    snprintf(p, sizeof(p), "%s/ca-cert.pem", dir);
    assert_int_not_equal(access(p, F_OK), 0);
    EVP_PKEY_free(other);
    plugin_free(&pl);
}

static void test_plugin_wrong_root(void **state)
{
    char src[128], dir[128], p[256], *err = NULL;
    struct plugin pl;
    make_plugin(new_path(src, sizeof(src)), &pl, 365L * 86400);
    EVP_PKEY *k2 = EVP_EC_gen("P-256");
    X509 *other_root = make_ca_cert("plugin root", k2, NULL, NULL, 86400); /* same name */
    snprintf(p, sizeof(p), "%s/root-cert.pem", src);
    unlink(p);
    write_certs(src, "root-cert.pem", other_root, NULL);
    new_path(dir, sizeof(dir));
    assert_int_equal(tr_ca_init(dir, "example.org", src, &err), -1);
    assert_non_null(strstr(err, "does not chain to a root"));
    free(err);
    X509_free(other_root);
    EVP_PKEY_free(k2);
    plugin_free(&pl);
}

static bool has_eku(X509 *x, int nid)
{
    EXTENDED_KEY_USAGE *eku = X509_get_ext_d2i(x, NID_ext_key_usage, NULL, NULL);
    bool found = false;
    for (int i = 0; eku && i < sk_ASN1_OBJECT_num(eku); i++)
        found |= OBJ_obj2nid(sk_ASN1_OBJECT_value(eku, i)) == nid;
    EXTENDED_KEY_USAGE_free(eku);
    return found;
}

static void test_sign_ignores_requested_names(void **state)
{
    char dir[128], *err = NULL;
    struct tr_ca *ca = new_ca(dir, sizeof(dir));
    EVP_PKEY *k = tr_ca_key_new();
    size_t clen, len;
    char *csr =
        csr_for(k, "URI:spiffe://example.org/ns/kube-system/sa/admin,DNS:evil.example", &clen);
    time_t now = time(NULL), until = 0;
    char *pem = tr_ca_sign_until(ca, csr, clen, ID, 7200, &len, &until, &err);
    assert_non_null(pem);
    STACK_OF(X509) *chain = parse_chain(pem, len);
    assert_int_equal(sk_X509_num(chain), 1); /* a root CA: no intermediates */
    X509 *leaf = sk_X509_value(chain, 0);
    /* the certificate's key is the CSR's; the notAfter the signer reports
     * is the certificate's */
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(leaf), k), 1);
    struct tm tm_na;
    assert_int_equal(ASN1_TIME_to_tm(X509_get0_notAfter(leaf), &tm_na), 1);
    assert_int_equal((long long)until, (long long)timegm(&tm_na));

    /* exactly one SAN, the given URI, critical; empty subject */
    GENERAL_NAMES *sans = X509_get_ext_d2i(leaf, NID_subject_alt_name, NULL, NULL);
    assert_int_equal(sk_GENERAL_NAME_num(sans), 1);
    GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, 0);
    assert_int_equal(g->type, GEN_URI);
    assert_int_equal(g->d.uniformResourceIdentifier->length, strlen(ID));
    assert_memory_equal(g->d.uniformResourceIdentifier->data, ID, strlen(ID));
    GENERAL_NAMES_free(sans);
    int idx = X509_get_ext_by_NID(leaf, NID_subject_alt_name, -1);
    assert_true(X509_EXTENSION_get_critical(X509_get_ext(leaf, idx)));
    assert_int_equal(X509_NAME_entry_count(X509_get_subject_name(leaf)), 0);

    /* leaf profile */
    assert_int_equal(X509_check_ca(leaf), 0);
    assert_true(X509_get_extension_flags(leaf) & EXFLAG_BCONS);
    assert_int_equal(X509_get_key_usage(leaf), KU_DIGITAL_SIGNATURE);
    assert_true(has_eku(leaf, NID_server_auth));
    assert_true(has_eku(leaf, NID_client_auth));
    assert_non_null(X509_get0_subject_key_id(leaf));
    X509 *root = first_cert_of(dir, "root-cert.pem");
    assert_non_null(X509_get0_authority_key_id(leaf));
    assert_int_equal(
        ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf), X509_get0_subject_key_id(root)), 0);
    const ASN1_INTEGER *serial = X509_get0_serialNumber(leaf);
    assert_int_equal(serial->length, 16);
    assert_int_equal(serial->type, V_ASN1_INTEGER); /* positive */

    /* validity: backdated a little, lifetime as asked */
    time_t nb = to_time(X509_get0_notBefore(leaf)), na = to_time(X509_get0_notAfter(leaf));
    assert_true(nb <= now - TR_CA_BACKDATE + 2 && nb >= now - TR_CA_BACKDATE - 2);
    assert_true(na >= now + 7200 - 2 && na <= now + 7200 + 2);
    assert_int_equal(tr_ca_renew_at(nb, na, 0.5), nb + (na - nb) / 2);
    assert_int_equal(verify_with(leaf, NULL, root), 1);

    /* Two issuances never share a serial. */
    size_t len2;
    char *pem2 = tr_ca_sign(ca, csr, clen, ID, 7200, &len2, &err);
    STACK_OF(X509) *chain2 = parse_chain(pem2, len2);
    assert_int_not_equal(ASN1_INTEGER_cmp(serial, X509_get0_serialNumber(sk_X509_value(chain2, 0))),
                         0);
    sk_X509_pop_free(chain2, X509_free);
    free(pem2);

    X509_free(root);
    sk_X509_pop_free(chain, X509_free);
    free(pem);
    free(csr);
    EVP_PKEY_free(k);
    tr_ca_free(ca);
}

static void test_sign_rsa_key_encipherment(void **state)
{
    char dir[128], *err = NULL;
    struct tr_ca *ca = new_ca(dir, sizeof(dir));
    EVP_PKEY *k = EVP_RSA_gen(2048);
    size_t clen, len;
    char *csr = csr_for(k, NULL, &clen);
    char *pem = tr_ca_sign(ca, csr, clen, ID, 3600, &len, &err);
    assert_non_null(pem);
    STACK_OF(X509) *chain = parse_chain(pem, len);
    assert_int_equal(X509_get_key_usage(sk_X509_value(chain, 0)),
                     KU_DIGITAL_SIGNATURE | KU_KEY_ENCIPHERMENT);
    assert_int_equal(EVP_PKEY_eq(X509_get0_pubkey(sk_X509_value(chain, 0)), k), 1);
    sk_X509_pop_free(chain, X509_free);
    free(pem);
    free(csr);
    EVP_PKEY_free(k);

    /* too small an RSA key is refused */
    k = EVP_RSA_gen(1024);
    csr = csr_for(k, NULL, &clen);
    assert_null(tr_ca_sign(ca, csr, clen, ID, 3600, &len, &err));
    assert_non_null(strstr(err, "1024 bits"));
    free(err);
    free(csr);
    EVP_PKEY_free(k);
    tr_ca_free(ca);
}

static void test_lifetime_capped_at_signer(void **state)
{
    char src[128], dir[128], *err = NULL;
    struct plugin pl;
    make_plugin(new_path(src, sizeof(src)), &pl, 3 * 3600);
    new_path(dir, sizeof(dir));
    assert_int_equal(tr_ca_init(dir, "example.org", src, &err), 0);
    struct tr_ca *ca = tr_ca_load(dir, &err);
    assert_non_null(ca);
    EVP_PKEY *k = tr_ca_key_new();
    size_t clen, len;
    char *csr = tr_ca_csr_new(k, &clen);
    char *pem = tr_ca_sign(ca, csr, clen, ID, TR_CA_LIFETIME_DEFAULT, &len, &err);
    assert_non_null(pem);
    STACK_OF(X509) *chain = parse_chain(pem, len);
    assert_int_equal(ASN1_TIME_compare(X509_get0_notAfter(sk_X509_value(chain, 0)),
                                       X509_get0_notAfter(pl.inter)),
                     0);
    assert_int_equal(to_time(X509_get0_notAfter(pl.inter)), tr_ca_not_after(ca));
    sk_X509_pop_free(chain, X509_free);
    free(pem);

    /* out-of-range lifetimes are refused outright */
    assert_null(tr_ca_sign(ca, csr, clen, ID, TR_CA_LIFETIME_MIN - 1L, &len, &err));
    assert_non_null(strstr(err, "lifetime"));
    free(err);
    err = NULL;
    assert_null(tr_ca_sign(ca, csr, clen, ID, TR_CA_LIFETIME_MAX + 1L, &len, &err));
    free(err);
    free(csr);
    EVP_PKEY_free(k);
    tr_ca_free(ca);
    plugin_free(&pl);
}

static void test_bad_csr_signature_refused(void **state)
{
    char dir[128], *err = NULL;
    struct tr_ca *ca = new_ca(dir, sizeof(dir));
    EVP_PKEY *k = tr_ca_key_new();
    size_t clen, len;
    char *csr = tr_ca_csr_new(k, &clen);
    /* Flip a bit of the signature's last byte (the DER ends with it). */
    BIO *bio = BIO_new_mem_buf(csr, (int)clen);
    X509_REQ *req = PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL);
    BIO_free(bio);
    unsigned char *der = NULL;
    int dlen = i2d_X509_REQ(req, &der);
    assert_true(dlen > 0);
    der[dlen - 1] ^= 0x01;
    const unsigned char *q = der;
    X509_REQ *bad = d2i_X509_REQ(NULL, &q, dlen);
    assert_non_null(bad);
    bio = BIO_new(BIO_s_mem());
    PEM_write_bio_X509_REQ(bio, bad);
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    assert_null(tr_ca_sign(ca, data, (size_t)n, ID, 3600, &len, &err));
    assert_non_null(strstr(err, "signature does not verify"));
    free(err);
    err = NULL;
    BIO_free(bio);
    X509_REQ_free(bad);
    X509_REQ_free(req);
    OPENSSL_free(der);

    /* garbage and oversize input */
    assert_null(tr_ca_sign(ca, "not a csr", 9, ID, 3600, &len, &err));
    assert_non_null(strstr(err, "not a PEM certificate request"));
    free(err);
    err = NULL;
    char *big = malloc(TR_CA_CSR_MAX + 1);
    memset(big, 'A', TR_CA_CSR_MAX + 1);
    assert_null(tr_ca_sign(ca, big, TR_CA_CSR_MAX + 1, ID, 3600, &len, &err));
    assert_non_null(strstr(err, "larger than the limit"));
    free(err);
    free(big);
    free(csr);
    EVP_PKEY_free(k);
    tr_ca_free(ca);
}

static void test_sign_id_checked(void **state)
{
    char dir[128], *err = NULL;
    struct tr_ca *ca = new_ca(dir, sizeof(dir));
    EVP_PKEY *k = tr_ca_key_new();
    size_t clen, len;
    char *csr = tr_ca_csr_new(k, &clen);
    static const char *const bad[] = {
        "spiffe://other.org/ns/default/sa/web",  "spiffe://example.org/ns/default",
        "spiffe://example.org/x/default/sa/web", "spiffe://example.org/ns/a/sa/b/c",
        "spiffe://example.org/ns/default/sa/",   "https://example.org/ns/a/sa/b",
        "spiffe://example.org/ns/a/sa/b,DNS:x",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_null(tr_ca_sign(ca, csr, clen, bad[i], 3600, &len, &err));
        assert_non_null(err);
        free(err);
        err = NULL;
    }
    char id[128];
    assert_int_equal(tr_ca_spiffe_id("example.org", "ns1", "sa1", id, sizeof(id)), 0);
    assert_string_equal(id, "spiffe://example.org/ns/ns1/sa/sa1");
    assert_int_equal(tr_ca_spiffe_id("example.org", "a/b", "sa1", id, sizeof(id)), -1);
    assert_int_equal(tr_ca_spiffe_id("example.org", "ns", "sa", id, 10), -1);
    free(csr);
    EVP_PKEY_free(k);
    tr_ca_free(ca);
}

static void test_tokens(void **state)
{
    char dir[128], tok[TR_CA_TOKEN_HEX + 1], tok2[TR_CA_TOKEN_HEX + 1], *err = NULL, *ns, *sa;
    tr_ca_free(new_ca(dir, sizeof(dir)));
    assert_int_equal(tr_ca_token_issue(dir, "default", "web", tok, &err), 0);
    assert_int_equal(tr_ca_token_issue(dir, "shop", "cart", tok2, &err), 0);
    assert_int_equal(strlen(tok), TR_CA_TOKEN_HEX);
    assert_string_not_equal(tok, tok2);
    assert_int_equal(mode_of(dir, "tokens"), 0600);

    /* only the hash is stored */
    char p[256];
    snprintf(p, sizeof(p), "%s/tokens", dir);
    FILE *f = fopen(p, "r");
    char text[1024] = {0};
    assert_true(fread(text, 1, sizeof(text) - 1, f) > 0);
    fclose(f);
    assert_null(strstr(text, tok));
    assert_null(strstr(text, tok2));

    assert_int_equal(tr_ca_token_check(dir, tok2, &ns, &sa, &err), 0);
    assert_string_equal(ns, "shop");
    assert_string_equal(sa, "cart");
    free(ns);
    free(sa);
    assert_int_equal(tr_ca_token_check(dir, tok, &ns, &sa, &err), 0);
    assert_string_equal(ns, "default");
    assert_string_equal(sa, "web");
    free(ns);
    free(sa);

    tok[0] = tok[0] == 'a' ? 'b' : 'a';
    assert_int_equal(tr_ca_token_check(dir, tok, &ns, &sa, &err), -1);
    assert_string_equal(err, "unknown token");
    assert_null(ns);
    free(err);
    err = NULL;
    assert_int_equal(tr_ca_token_check(dir, "short", &ns, &sa, &err), -1);
    assert_string_equal(err, "malformed token");
    free(err);
    err = NULL;
    assert_int_equal(tr_ca_token_issue(dir, "bad ns", "web", tok, &err), -1);
    free(err);
}

static void test_expiry_status(void **state)
{
    const time_t d = 86400, now = 1800000000;
    /* CA: warning within 30 days */
    assert_int_equal(tr_ca_expiry_status(now - d, now + 365 * d, true, now), TR_CA_EXPIRY_OK);
    assert_int_equal(tr_ca_expiry_status(now - d, now + 31 * d, true, now), TR_CA_EXPIRY_OK);
    assert_int_equal(tr_ca_expiry_status(now - d, now + 30 * d, true, now), TR_CA_EXPIRY_WARN);
    assert_int_equal(tr_ca_expiry_status(now - d, now + 1, true, now), TR_CA_EXPIRY_WARN);
    assert_int_equal(tr_ca_expiry_status(now - d, now, true, now), TR_CA_EXPIRY_EXPIRED);
    assert_int_equal(tr_ca_expiry_status(now + 1, now + d, true, now), TR_CA_EXPIRY_EXPIRED);
    /* leaf: warning past 80% of its life */
    assert_int_equal(tr_ca_expiry_status(now - 79, now + 21, false, now), TR_CA_EXPIRY_OK);
    assert_int_equal(tr_ca_expiry_status(now - 80, now + 20, false, now), TR_CA_EXPIRY_WARN);
    assert_int_equal(tr_ca_expiry_status(now - 100, now, false, now), TR_CA_EXPIRY_EXPIRED);
    assert_string_equal(tr_ca_expiry_name(TR_CA_EXPIRY_WARN), "warning");
    /* renewal at a configurable fraction, half-life by default */
    assert_int_equal(tr_ca_renew_at(1000, 2000, 0.5), 1500);
    assert_int_equal(tr_ca_renew_at(1000, 2000, 0.75), 1750);
    assert_int_equal(tr_ca_renew_at(1000, 2000, 1.5), 1500);
}

static void test_check_report(void **state)
{
    char src[128], dir[128], *err = NULL;
    struct plugin pl;
    make_plugin(new_path(src, sizeof(src)), &pl, 10L * 86400); /* intermediate: 10 days left */
    new_path(dir, sizeof(dir));
    assert_int_equal(tr_ca_init(dir, "example.org", src, &err), 0);
    char *buf = NULL;
    size_t blen = 0;
    FILE *out = open_memstream(&buf, &blen);
    int rc = tr_ca_check(dir, NULL, 0, time(NULL), out, &err);
    fclose(out);
    assert_int_equal(rc, TR_CA_EXPIRY_WARN);
    assert_non_null(strstr(buf, "root         ok"));
    assert_non_null(strstr(buf, "signing      warning"));
    free(buf);
    assert_int_equal(tr_ca_check(dir, NULL, 0, time(NULL) + 11 * 86400, stdout, &err),
                     TR_CA_EXPIRY_EXPIRED);
    plugin_free(&pl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_and_reload),
        cmocka_unit_test(test_key_readable_by_others_refused),
        cmocka_unit_test(test_bad_trust_domain_refused),
        cmocka_unit_test(test_plugin_good),
        cmocka_unit_test(test_plugin_without_ski),
        cmocka_unit_test(test_plugin_mismatched_key),
        cmocka_unit_test(test_plugin_wrong_root),
        cmocka_unit_test(test_sign_ignores_requested_names),
        cmocka_unit_test(test_sign_rsa_key_encipherment),
        cmocka_unit_test(test_lifetime_capped_at_signer),
        cmocka_unit_test(test_bad_csr_signature_refused),
        cmocka_unit_test(test_sign_id_checked),
        cmocka_unit_test(test_tokens),
        cmocka_unit_test(test_expiry_status),
        cmocka_unit_test(test_check_report),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
