/* The mesh CA: state directory, SVID signing, trust bundle, proxy-side key
 * and CSR helpers, expiry status and bootstrap tokens. See ca/ca.h. */
#include "ca/ca.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "core/str.h"
#include "identity/identity.h"

#define CA_CERT      "ca-cert.pem"
#define CA_KEY       "ca-key.pem"
#define ROOT_CERT    "root-cert.pem"
#define CERT_CHAIN   "cert-chain.pem"
#define TRUST_DOMAIN "trust-domain"
#define TOKENS       "tokens"

/* Bounds on files we read: PEM bundles of a few certificates, a token list. */
#define PEM_FILE_MAX    (1024 * 1024)
#define TOKENS_FILE_MAX (4 * 1024 * 1024)
#define CERTS_MAX       64
#define NAME_MAX_LEN    253

struct tr_ca {
    char *trust_domain;
    X509 *cert;
    EVP_PKEY *key;
    STACK_OF(X509) * roots;
    STACK_OF(X509) * intermediates; /* appended to every leaf */
    char *bundle;
    size_t bundle_len;
    time_t not_before, not_after;
};

static void set_err(char **err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_err(char **err, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    unsigned long e = ERR_peek_last_error();
    ERR_clear_error();
    if (err == NULL)
        return;
    free(*err);
    *err = NULL;
    char *out;
    int n = e ? asprintf(&out, "%s (%s)", msg,
                         ERR_reason_error_string(e) ? ERR_reason_error_string(e) : "openssl error")
              : asprintf(&out, "%s", msg);
    *err = n < 0 ? NULL : out;
}

static char *path_join(const char *dir, const char *name)
{
    char *p;
    return asprintf(&p, "%s/%s", dir, name) < 0 ? NULL : p;
}

/* Reads a whole regular file (at most max bytes) NUL-terminated. */
static char *read_file(const char *path, size_t max, size_t *out_len, char **err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        set_err(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        set_err(err, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if ((uint64_t)st.st_size > max) {
        set_err(err, "%s: larger than %zu bytes", path, max);
        close(fd);
        return NULL;
    }
    char *buf = malloc((size_t)st.st_size + 1);
    size_t len = 0;
    while (buf != NULL && len < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + len, (size_t)st.st_size - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (buf == NULL) {
        set_err(err, "%s: out of memory", path);
        return NULL;
    }
    buf[len] = '\0';
    if (out_len)
        *out_len = len;
    return buf;
}

static int write_all(int fd, const char *data, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Creates path (which must not exist) with exactly `mode`, whatever the
 * umask, and the data. */
static int write_new_file(const char *path, const char *data, size_t len, mode_t mode, char **err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
    if (fd < 0) {
        set_err(err, "%s: %s", path, strerror(errno));
        return -1;
    }
    if (fchmod(fd, mode) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        set_err(err, "%s: %s", path, strerror(errno));
        close(fd);
        unlink(path);
        return -1;
    }
    if (close(fd) != 0) {
        set_err(err, "%s: %s", path, strerror(errno));
        unlink(path);
        return -1;
    }
    return 0;
}

static time_t asn1_to_time(const ASN1_TIME *t)
{
    struct tm tm;
    if (t == NULL || ASN1_TIME_to_tm(t, &tm) != 1)
        return 0;
    return timegm(&tm);
}

/* Every certificate of a PEM buffer (1..CERTS_MAX). */
static STACK_OF(X509) * certs_from_pem(const char *pem, size_t len, const char *what, char **err)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509) *sk = sk_X509_new_null();
    if (bio == NULL || sk == NULL) {
        set_err(err, "%s: out of memory", what);
        goto fail;
    }
    for (;;) {
        X509 *x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
        if (x == NULL)
            break;
        if (sk_X509_num(sk) == CERTS_MAX || !sk_X509_push(sk, x)) {
            X509_free(x);
            set_err(err, "%s: more than %d certificates", what, CERTS_MAX);
            goto fail;
        }
    }
    unsigned long e = ERR_peek_last_error();
    if (e != 0 && !(ERR_GET_LIB(e) == ERR_LIB_PEM && ERR_GET_REASON(e) == PEM_R_NO_START_LINE)) {
        set_err(err, "%s: bad PEM certificate", what);
        goto fail;
    }
    ERR_clear_error();
    if (sk_X509_num(sk) == 0) {
        set_err(err, "%s: no certificate", what);
        goto fail;
    }
    BIO_free(bio);
    return sk;
fail:
    BIO_free(bio);
    sk_X509_pop_free(sk, X509_free);
    return NULL;
}

static STACK_OF(X509) * certs_from_file(const char *path, char **err)
{
    size_t len;
    char *pem = read_file(path, PEM_FILE_MAX, &len, err);
    if (pem == NULL)
        return NULL;
    STACK_OF(X509) *sk = certs_from_pem(pem, len, path, err);
    free(pem);
    return sk;
}

static EVP_PKEY *key_from_pem(const char *pem, size_t len, const char *what, char **err)
{
    BIO *bio = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *k = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (k == NULL)
        set_err(err, "%s: no PEM private key", what);
    return k;
}

static char *pem_of_certs(STACK_OF(X509) * sk, X509 *first, size_t *out_len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    if (bio == NULL)
        return NULL;
    bool ok = first == NULL || PEM_write_bio_X509(bio, first);
    for (int i = 0; ok && sk != NULL && i < sk_X509_num(sk); i++)
        ok = PEM_write_bio_X509(bio, sk_X509_value(sk, i));
    char *data;
    long n = BIO_get_mem_data(bio, &data);
    char *out = ok && n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (out != NULL) {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
        if (out_len)
            *out_len = (size_t)n;
    }
    BIO_free(bio);
    return out;
}

static int trust_domain_check(const char *td)
{
    char id[300];
    int n = snprintf(id, sizeof(id), "spiffe://%s/x", td);
    if (n < 0 || (size_t)n >= sizeof(id))
        return -1;
    tr_str got;
    return tr_spiffe_id_parse(id, (size_t)n, &got, NULL) == 0 && got.len == strlen(td) ? 0 : -1;
}

/* A Kubernetes namespace or service account name, as a SPIFFE path segment. */
static int name_check(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > NAME_MAX_LEN || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-' || c == '.' || c == '_'))
            return -1;
    }
    return 0;
}

int tr_ca_spiffe_id(const char *td, const char *ns, const char *sa, char *out, size_t size)
{
    if (trust_domain_check(td) != 0 || name_check(ns) != 0 || name_check(sa) != 0)
        return -1;
    int n = snprintf(out, size, "spiffe://%s/ns/%s/sa/%s", td, ns, sa);
    return n < 0 || (size_t)n >= size ? -1 : 0;
}

void tr_ca_free(struct tr_ca *ca)
{
    if (ca == NULL)
        return;
    free(ca->trust_domain);
    X509_free(ca->cert);
    EVP_PKEY_free(ca->key);
    sk_X509_pop_free(ca->roots, X509_free);
    sk_X509_pop_free(ca->intermediates, X509_free);
    free(ca->bundle);
    free(ca);
}

static bool self_signed(X509 *x)
{
    return X509_self_signed(x, 1) == 1;
}

/* Refuses a key file that group or others could read (fail closed). */
static EVP_PKEY *load_ca_key(const char *path, char **err)
{
    struct stat st;
    /* stat, not lstat: a Kubernetes secret mount is a symlink to a 0600 file. */
    if (stat(path, &st) != 0) {
        set_err(err, "%s: %s", path, strerror(errno));
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        set_err(err, "%s: not a regular file", path);
        return NULL;
    }
    if (st.st_mode & 077) {
        set_err(err,
                "%s: mode %04o: a CA key must not be accessible by group or others (chmod 600)",
                path, (unsigned)(st.st_mode & 07777));
        return NULL;
    }
    size_t len;
    char *pem = read_file(path, PEM_FILE_MAX, &len, err);
    if (pem == NULL)
        return NULL;
    EVP_PKEY *k = key_from_pem(pem, len, path, err);
    OPENSSL_cleanse(pem, len);
    free(pem);
    return k;
}

struct tr_ca *tr_ca_load(const char *dir, char **err)
{
    struct tr_ca *ca = calloc(1, sizeof(*ca));
    char *p_td = path_join(dir, TRUST_DOMAIN), *p_cert = path_join(dir, CA_CERT),
         *p_key = path_join(dir, CA_KEY), *p_root = path_join(dir, ROOT_CERT),
         *p_chain = path_join(dir, CERT_CHAIN);
    STACK_OF(X509) *certs = NULL, *chain = NULL;
    X509_STORE *store = NULL;
    X509_STORE_CTX *vctx = NULL;
    bool ok = false;
    if (ca == NULL || !p_td || !p_cert || !p_key || !p_root || !p_chain) {
        set_err(err, "out of memory");
        goto fail;
    }
    size_t td_len;
    ca->trust_domain = read_file(p_td, 512, &td_len, err);
    if (ca->trust_domain == NULL)
        goto fail;
    while (td_len > 0 &&
           (ca->trust_domain[td_len - 1] == '\n' || ca->trust_domain[td_len - 1] == '\r'))
        ca->trust_domain[--td_len] = '\0';
    if (trust_domain_check(ca->trust_domain) != 0) {
        set_err(err, "%s: invalid SPIFFE trust domain \"%s\"", p_td, ca->trust_domain);
        goto fail;
    }
    if ((certs = certs_from_file(p_cert, err)) == NULL)
        goto fail;
    if (sk_X509_num(certs) != 1) {
        set_err(err, "%s: holds %d certificates, expected one", p_cert, sk_X509_num(certs));
        goto fail;
    }
    ca->cert = sk_X509_shift(certs);
    if ((ca->key = load_ca_key(p_key, err)) == NULL)
        goto fail;
    if (X509_check_private_key(ca->cert, ca->key) != 1) {
        set_err(err, "%s: does not match the certificate in %s", p_key, p_cert);
        goto fail;
    }
    if (X509_check_ca(ca->cert) == 0 || !(X509_get_key_usage(ca->cert) & KU_KEY_CERT_SIGN)) {
        set_err(err, "%s: not a CA certificate allowed to sign certificates", p_cert);
        goto fail;
    }
    if ((ca->roots = certs_from_file(p_root, err)) == NULL)
        goto fail;
    for (int i = 0; i < sk_X509_num(ca->roots); i++) {
        if (!self_signed(sk_X509_value(ca->roots, i))) {
            set_err(err, "%s: certificate %d is not a self-signed root", p_root, i + 1);
            goto fail;
        }
    }
    if ((chain = certs_from_file(p_chain, err)) == NULL)
        goto fail;
    if (X509_cmp(sk_X509_value(chain, 0), ca->cert) != 0) {
        set_err(err, "%s: must start with the certificate of %s", p_chain, p_cert);
        goto fail;
    }
    if ((ca->intermediates = sk_X509_new_null()) == NULL)
        goto fail;
    for (int i = 0; i < sk_X509_num(chain); i++) {
        X509 *x = sk_X509_value(chain, i);
        if (self_signed(x))
            continue;
        if (!sk_X509_push(ca->intermediates, x)) {
            set_err(err, "out of memory");
            goto fail;
        }
        X509_up_ref(x);
    }
    /* ca-cert must lead to a root of the bundle; dates are ca check's job. */
    store = X509_STORE_new();
    vctx = X509_STORE_CTX_new();
    if (store == NULL || vctx == NULL)
        goto fail;
    for (int i = 0; i < sk_X509_num(ca->roots); i++)
        X509_STORE_add_cert(store, sk_X509_value(ca->roots, i));
    X509_STORE_set_flags(store, X509_V_FLAG_NO_CHECK_TIME);
    if (X509_STORE_CTX_init(vctx, store, ca->cert, chain) != 1)
        goto fail;
    if (X509_verify_cert(vctx) != 1) {
        int e = X509_STORE_CTX_get_error(vctx);
        ERR_clear_error();
        set_err(err, "%s: does not chain to a root of %s through %s: %s", p_cert, p_root, p_chain,
                X509_verify_cert_error_string(e));
        goto fail;
    }
    ca->bundle = pem_of_certs(ca->roots, NULL, &ca->bundle_len);
    if (ca->bundle == NULL)
        goto fail;
    ca->not_before = asn1_to_time(X509_get0_notBefore(ca->cert));
    ca->not_after = asn1_to_time(X509_get0_notAfter(ca->cert));
    ok = true;
fail: /* and success: the scratch goes either way, the CA only on failure */
    if (!ok && err != NULL && *err == NULL)
        set_err(err, "%s: cannot load the CA (out of memory)", dir);
    X509_STORE_CTX_free(vctx);
    X509_STORE_free(store);
    sk_X509_pop_free(certs, X509_free);
    sk_X509_pop_free(chain, X509_free);
    free(p_td);
    free(p_cert);
    free(p_key);
    free(p_root);
    free(p_chain);
    if (!ok) {
        tr_ca_free(ca);
        return NULL;
    }
    return ca;
}

const char *tr_ca_trust_domain(const struct tr_ca *ca)
{
    return ca->trust_domain;
}

time_t tr_ca_not_after(const struct tr_ca *ca)
{
    return ca->not_after;
}

char *tr_ca_bundle_pem(const struct tr_ca *ca, size_t *out_len)
{
    char *out = malloc(ca->bundle_len + 1);
    if (out == NULL)
        return NULL;
    memcpy(out, ca->bundle, ca->bundle_len + 1);
    if (out_len)
        *out_len = ca->bundle_len;
    return out;
}

/* A 16-octet serial with 126 random bits: the top bit clear keeps it positive
 * (RFC 5280: at most 20 octets), the next set keeps it non-zero and 16 octets. */
static int set_random_serial(X509 *x)
{
    unsigned char b[16];
    if (RAND_bytes(b, sizeof(b)) != 1)
        return -1;
    b[0] &= 0x7f;
    b[0] |= 0x40; /* never zero, always 16 octets */
    BIGNUM *bn = BN_bin2bn(b, sizeof(b), NULL);
    int rc = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) ? 0 : -1;
    BN_free(bn);
    return rc;
}

static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, v3, nid, value);
    int ok = ext != NULL && X509_add_ext(x, ext, -1) == 1;
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

static const EVP_MD *sign_md(EVP_PKEY *key)
{
    /* Ed25519/Ed448 sign without a separate digest. */
    int id = EVP_PKEY_get_base_id(key);
    return id == EVP_PKEY_ED25519 || id == EVP_PKEY_ED448 ? NULL : EVP_sha256();
}

/* spiffe://TD/ns/NS/sa/SA in the CA's trust domain. */
static int check_workload_id(const struct tr_ca *ca, const char *id, char **err)
{
    tr_str td, path;
    if (tr_spiffe_id_parse(id, strlen(id), &td, &path) != 0) {
        set_err(err, "\"%s\" is not a valid SPIFFE ID", id);
        return -1;
    }
    if (!tr_str_eq(td, ca->trust_domain, strlen(ca->trust_domain))) {
        set_err(err, "\"%s\" is not in the CA's trust domain %s", id, ca->trust_domain);
        return -1;
    }
    /* path is /ns/X/sa/Y: exactly four segments. */
    const char *s = path.p;
    size_t n = path.len, seg = 0;
    const char *segs[5];
    size_t lens[5];
    for (size_t i = 0; i < n && seg < 5; i++) {
        if (s[i] == '/') {
            segs[seg] = s + i + 1;
            lens[seg] = 0;
            seg++;
        } else {
            lens[seg - 1]++;
        }
    }
    if (seg != 4 || lens[0] != 2 || memcmp(segs[0], "ns", 2) != 0 || lens[2] != 2 ||
        memcmp(segs[2], "sa", 2) != 0) {
        set_err(err, "\"%s\" is not a workload ID spiffe://%s/ns/NAMESPACE/sa/SERVICE_ACCOUNT", id,
                ca->trust_domain);
        return -1;
    }
    return 0;
}

/* Only keys a TLS peer of the mesh can use, of sound size. */
static int check_csr_key(EVP_PKEY *pub, char **err)
{
    int id = EVP_PKEY_get_base_id(pub);
    if (id == EVP_PKEY_EC) {
        char group[64];
        size_t glen;
        if (EVP_PKEY_get_group_name(pub, group, sizeof(group), &glen) != 1 ||
            (strcmp(group, "prime256v1") != 0 && strcmp(group, "secp384r1") != 0)) {
            set_err(err, "CSR key: EC curve not allowed (P-256 or P-384)");
            return -1;
        }
        return 0;
    }
    if (id == EVP_PKEY_RSA) {
        int bits = EVP_PKEY_get_bits(pub);
        if (bits < 2048 || bits > 8192) {
            set_err(err, "CSR key: RSA key of %d bits not allowed (2048..8192)", bits);
            return -1;
        }
        return 0;
    }
    set_err(err, "CSR key: type not allowed (EC P-256/P-384 or RSA)");
    return -1;
}

/* The request's SubjectPublicKeyInfo into x as it is: X509_set_pubkey
 * would encode the key again through OpenSSL 3's encoder machinery, which
 * costs more than the signature. */
static bool copy_spki(X509 *x, X509_REQ *req)
{
    ASN1_OBJECT *alg;
    const unsigned char *pk;
    int pklen, ptype;
    X509_ALGOR *a;
    const void *pval;
    if (X509_PUBKEY_get0_param(&alg, &pk, &pklen, &a, X509_REQ_get_X509_PUBKEY(req)) != 1 ||
        pklen <= 0)
        return false;
    X509_ALGOR_get0(NULL, &ptype, &pval, a);
    void *param = NULL;
    if (ptype == V_ASN1_OBJECT)
        param = OBJ_dup(pval);
    else if (ptype == V_ASN1_SEQUENCE)
        param = ASN1_STRING_dup(pval);
    else if (ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF)
        return false;
    unsigned char *key = OPENSSL_memdup(pk, (size_t)pklen);
    ASN1_OBJECT *oid = OBJ_dup(alg);
    if (key == NULL || oid == NULL || (ptype != V_ASN1_NULL && ptype != V_ASN1_UNDEF && !param) ||
        X509_PUBKEY_set0_param(X509_get_X509_PUBKEY(x), oid, ptype, param, key, pklen) != 1) {
        OPENSSL_free(key);
        ASN1_OBJECT_free(oid);
        if (ptype == V_ASN1_OBJECT)
            ASN1_OBJECT_free(param);
        else
            ASN1_STRING_free(param);
        return false;
    }
    return true;
}

char *tr_ca_sign(const struct tr_ca *ca, const char *csr_pem, size_t csr_len, const char *spiffe_id,
                 long lifetime_s, size_t *out_len, char **err)
{
    return tr_ca_sign_until(ca, csr_pem, csr_len, spiffe_id, lifetime_s, out_len, NULL, err);
}

char *tr_ca_sign_until(const struct tr_ca *ca, const char *csr_pem, size_t csr_len,
                       const char *spiffe_id, long lifetime_s, size_t *out_len, time_t *not_after,
                       char **err)
{
    if (csr_len > TR_CA_CSR_MAX) {
        set_err(err, "CSR: %zu bytes, larger than the limit of %d", csr_len, TR_CA_CSR_MAX);
        return NULL;
    }
    if (lifetime_s < TR_CA_LIFETIME_MIN || lifetime_s > TR_CA_LIFETIME_MAX) {
        set_err(err, "lifetime %lds out of range [%d, %d]", lifetime_s, TR_CA_LIFETIME_MIN,
                TR_CA_LIFETIME_MAX);
        return NULL;
    }
    if (check_workload_id(ca, spiffe_id, err) != 0)
        return NULL;
    time_t now = time(NULL);
    if (ca->not_after <= now + TR_CA_LIFETIME_MIN) {
        set_err(err, "the CA certificate expires too soon (or expired): cannot sign");
        return NULL;
    }
    if (ca->not_before > now) {
        set_err(err, "the CA certificate is not valid yet: cannot sign");
        return NULL;
    }
    char *out = NULL;
    X509 *x = NULL;
    BIO *bio = BIO_new_mem_buf(csr_pem, (int)csr_len);
    X509_REQ *req = bio ? PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    if (req == NULL) {
        set_err(err, "CSR: not a PEM certificate request");
        return NULL;
    }
    EVP_PKEY *pub = X509_REQ_get0_pubkey(req);
    if (pub == NULL) {
        set_err(err, "CSR: no usable public key");
        goto done;
    }
    if (check_csr_key(pub, err) != 0)
        goto done;
    if (X509_REQ_verify(req, pub) != 1) {
        set_err(err, "CSR: signature does not verify (the requester does not hold the key)");
        goto done;
    }
    /* Everything else in the CSR (subject, requested extensions) is ignored. */
    time_t nb = now - TR_CA_BACKDATE;
    if (nb < ca->not_before)
        nb = ca->not_before;
    time_t na = now + lifetime_s;
    if (na > ca->not_after)
        na = ca->not_after;
    X509_NAME *empty = X509_NAME_new();
    x = X509_new();
    bool ok = x && empty && X509_set_version(x, X509_VERSION_3) && set_random_serial(x) == 0 &&
              X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) &&
              X509_set_subject_name(x, empty) && copy_spki(x, req) &&
              ASN1_TIME_set(X509_getm_notBefore(x), nb) && ASN1_TIME_set(X509_getm_notAfter(x), na);
    X509_NAME_free(empty);
    if (!ok) {
        set_err(err, "cannot build the certificate");
        goto done;
    }
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, ca->cert, x, NULL, NULL, 0);
    char san[TR_SPIFFE_ID_MAX + 32];
    snprintf(san, sizeof(san), "critical,URI:%s", spiffe_id);
    bool rsa = EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA;
    if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        add_ext(x, &v3, NID_key_usage,
                rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature") !=
            0 ||
        add_ext(x, &v3, NID_ext_key_usage, "serverAuth,clientAuth") != 0 ||
        add_ext(x, &v3, NID_subject_key_identifier, "hash") != 0 ||
        /* An operator's intermediate without an SKI gives no key ID to point to. */
        (X509_get0_subject_key_id(ca->cert) != NULL &&
         add_ext(x, &v3, NID_authority_key_identifier, "keyid") != 0) ||
        add_ext(x, &v3, NID_subject_alt_name, san) != 0) {
        set_err(err, "cannot add the certificate's extensions");
        goto done;
    }
    if (X509_sign(x, ca->key, sign_md(ca->key)) <= 0) {
        set_err(err, "cannot sign the certificate");
        goto done;
    }
    out = pem_of_certs(ca->intermediates, x, out_len);
    if (out == NULL)
        set_err(err, "out of memory");
    else if (not_after != NULL)
        *not_after = na;
done:
    X509_free(x);
    X509_REQ_free(req);
    return out;
}

/* ---- creation ---- */

static char *pem_of_key(EVP_PKEY *key, size_t *len)
{
    BIO *bio = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (bio != NULL && PEM_write_bio_PrivateKey(bio, key, NULL, NULL, 0, NULL, NULL)) {
        char *data;
        long n = BIO_get_mem_data(bio, &data);
        out = n >= 0 ? malloc((size_t)n + 1) : NULL;
        if (out != NULL) {
            memcpy(out, data, (size_t)n);
            out[n] = '\0';
            *len = (size_t)n;
        }
        OPENSSL_cleanse(data, (size_t)n);
    }
    BIO_free(bio);
    return out;
}

static X509 *make_root(EVP_PKEY *key, const char *td)
{
    X509 *x = X509_new();
    X509_NAME *name = X509_NAME_new();
    /* A random tag tells two roots of one trust domain apart (rotation). */
    unsigned char tag[4];
    char cn[300];
    if (RAND_bytes(tag, sizeof(tag)) != 1) {
        X509_free(x);
        X509_NAME_free(name);
        return NULL;
    }
    /* CN is at most 64 bytes (RFC 5280), so the trust domain goes in O if it fits. */
    snprintf(cn, sizeof(cn), "trellis mesh root %02x%02x%02x%02x", tag[0], tag[1], tag[2], tag[3]);
    const char *org = strlen(td) <= 64 ? td : "trellis";
    time_t now = time(NULL);
    bool ok = x && name && X509_set_version(x, X509_VERSION_3) && set_random_serial(x) == 0 &&
              X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)org, -1,
                                         -1, 0) &&
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1,
                                         -1, 0) &&
              X509_set_subject_name(x, name) && X509_set_issuer_name(x, name) &&
              X509_set_pubkey(x, key) &&
              ASN1_TIME_set(X509_getm_notBefore(x), now - TR_CA_BACKDATE) &&
              ASN1_TIME_set(X509_getm_notAfter(x), now + TR_CA_ROOT_LIFETIME);
    X509_NAME_free(name);
    if (ok) {
        X509V3_CTX v3;
        X509V3_set_ctx(&v3, x, x, NULL, NULL, 0);
        ok = add_ext(x, &v3, NID_basic_constraints, "critical,CA:TRUE") == 0 &&
             add_ext(x, &v3, NID_key_usage, "critical,keyCertSign,cRLSign") == 0 &&
             add_ext(x, &v3, NID_subject_key_identifier, "hash") == 0 &&
             X509_sign(x, key, EVP_sha256()) > 0;
    }
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

static const char *const state_files[] = {CA_KEY, CA_CERT, ROOT_CERT, CERT_CHAIN, TRUST_DOMAIN};

static void remove_state(const char *dir, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char *p = path_join(dir, state_files[i]);
        if (p)
            unlink(p);
        free(p);
    }
}

/* Writes the state files in state_files order; on error removes what it wrote. */
static int write_state(const char *dir, const char *const data[5], const size_t len[5], char **err)
{
    for (size_t i = 0; i < 5; i++) {
        char *p = path_join(dir, state_files[i]);
        int rc = p ? write_new_file(p, data[i], len[i], i == 0 ? 0600 : 0644, err) : -1;
        if (p == NULL)
            set_err(err, "out of memory");
        free(p);
        if (rc != 0) {
            remove_state(dir, i);
            return -1;
        }
    }
    return 0;
}

int tr_ca_init(const char *dir, const char *trust_domain, const char *plugin_dir, char **err)
{
    const char *td = trust_domain ? trust_domain : "cluster.local";
    if (trust_domain_check(td) != 0) {
        set_err(err, "invalid SPIFFE trust domain \"%s\"", td);
        return -1;
    }
    char td_line[300];
    snprintf(td_line, sizeof(td_line), "%s\n", td);
    const char *data[5] = {NULL};
    size_t len[5] = {0};
    char *bufs[4] = {NULL};
    int rc = -1;
    if (plugin_dir == NULL) {
        EVP_PKEY *key = EVP_EC_gen("P-256");
        X509 *root = key ? make_root(key, td) : NULL;
        if (root == NULL) {
            set_err(err, "cannot create the root key and certificate");
            EVP_PKEY_free(key);
            return -1;
        }
        bufs[0] = pem_of_key(key, &len[0]);
        bufs[1] = pem_of_certs(NULL, root, &len[1]);
        EVP_PKEY_free(key);
        X509_free(root);
        if (bufs[0] == NULL || bufs[1] == NULL) {
            set_err(err, "out of memory");
            goto done;
        }
        data[0] = bufs[0];
        data[1] = data[2] = data[3] = bufs[1];
        len[2] = len[3] = len[1];
    } else {
        static const char *const names[4] = {CA_KEY, CA_CERT, ROOT_CERT, CERT_CHAIN};
        for (size_t i = 0; i < 4; i++) {
            char *src = path_join(plugin_dir, names[i]);
            bufs[i] = src ? read_file(src, PEM_FILE_MAX, &len[i], err) : NULL;
            free(src);
            if (bufs[i] == NULL)
                goto done;
            data[i] = bufs[i];
        }
    }
    data[4] = td_line;
    len[4] = strlen(td_line);
    /* Only now, so that bad input leaves no directory behind. */
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        set_err(err, "%s: %s", dir, strerror(errno));
        goto done;
    }
    char *p = path_join(dir, CA_CERT);
    struct stat st;
    bool exists = p && lstat(p, &st) == 0;
    free(p);
    if (exists) {
        set_err(err, "%s: already holds a CA (%s)", dir, CA_CERT);
        goto done;
    }
    if (write_state(dir, data, len, err) != 0)
        goto done;
    struct tr_ca *ca = tr_ca_load(dir, err);
    if (ca == NULL) {
        remove_state(dir, 5);
        goto done;
    }
    tr_ca_free(ca);
    rc = 0;
done:
    if (bufs[0] != NULL)
        OPENSSL_cleanse(bufs[0], len[0]);
    for (size_t i = 0; i < 4; i++)
        free(bufs[i]);
    return rc;
}

/* ---- proxy side ---- */

EVP_PKEY *tr_ca_key_new(void)
{
    return EVP_EC_gen("P-256");
}

char *tr_ca_csr_new(EVP_PKEY *key, size_t *out_len)
{
    X509_REQ *req = X509_REQ_new();
    BIO *bio = BIO_new(BIO_s_mem());
    char *out = NULL;
    if (req != NULL && bio != NULL && X509_REQ_set_version(req, X509_REQ_VERSION_1) &&
        X509_REQ_set_pubkey(req, key) && X509_REQ_sign(req, key, EVP_sha256()) > 0 &&
        PEM_write_bio_X509_REQ(bio, req)) {
        char *data;
        long n = BIO_get_mem_data(bio, &data);
        out = n >= 0 ? malloc((size_t)n + 1) : NULL;
        if (out != NULL) {
            memcpy(out, data, (size_t)n);
            out[n] = '\0';
            if (out_len)
                *out_len = (size_t)n;
        }
    }
    BIO_free(bio);
    X509_REQ_free(req);
    return out;
}

time_t tr_ca_renew_at(time_t not_before, time_t not_after, double fraction)
{
    if (!(fraction > 0.0 && fraction < 1.0))
        fraction = 0.5;
    if (not_after <= not_before)
        return not_before;
    return not_before + (time_t)((double)(not_after - not_before) * fraction);
}

/* ---- expiry ---- */

enum tr_ca_expiry tr_ca_expiry_status(time_t not_before, time_t not_after, bool is_ca, time_t now)
{
    if (now < not_before || now >= not_after)
        return TR_CA_EXPIRY_EXPIRED;
    if (is_ca)
        return not_after - now <= (time_t)TR_CA_WARN_CA_DAYS * 24 * 3600 ? TR_CA_EXPIRY_WARN
                                                                         : TR_CA_EXPIRY_OK;
    /* now - nb >= 80% of (na - nb), in integers */
    return (now - not_before) * 100 >= (not_after - not_before) * TR_CA_WARN_LEAF_PERCENT
               ? TR_CA_EXPIRY_WARN
               : TR_CA_EXPIRY_OK;
}

const char *tr_ca_expiry_name(enum tr_ca_expiry e)
{
    switch (e) {
    case TR_CA_EXPIRY_OK:
        return "ok";
    case TR_CA_EXPIRY_WARN:
        return "warning";
    case TR_CA_EXPIRY_EXPIRED:
        return "expired";
    }
    return "?";
}

/* ---- bootstrap tokens ---- */

static int sha256(const void *data, size_t len, unsigned char out[32])
{
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL) == 1 && n == 32 ? 0 : -1;
}

static void to_hex(const unsigned char *b, size_t n, char *out)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[b[i] >> 4];
        out[2 * i + 1] = hex[b[i] & 15];
    }
    out[2 * n] = '\0';
}

static int from_hex(const char *s, size_t n, unsigned char *out)
{
    for (size_t i = 0; i < n; i++) {
        int hi = tr_hex_digit((unsigned char)s[2 * i]),
            lo = tr_hex_digit((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

int tr_ca_token_issue(const char *dir, const char *ns, const char *sa,
                      char out[TR_CA_TOKEN_HEX + 1], char **err)
{
    if (name_check(ns) != 0 || name_check(sa) != 0) {
        set_err(err, "invalid namespace or service account name");
        return -1;
    }
    unsigned char tok[32], hash[32];
    char hash_hex[65];
    if (RAND_bytes(tok, sizeof(tok)) != 1 || sha256(tok, sizeof(tok), hash) != 0) {
        set_err(err, "no randomness");
        return -1;
    }
    /* The hash is over the raw token bytes; the holder presents them as hex. */
    to_hex(hash, sizeof(hash), hash_hex);
    char *p = path_join(dir, TOKENS);
    if (p == NULL) {
        set_err(err, "out of memory");
        return -1;
    }
    int fd = open(p, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        set_err(err, "%s: %s", p, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(st.st_mode) || (st.st_mode & 077)) {
        set_err(err, "%s: must be a regular file of mode 0600", p);
        goto fail;
    }
    char line[600];
    int n = snprintf(line, sizeof(line), "%s %s %s\n", hash_hex, ns, sa);
    if (n < 0 || (size_t)n >= sizeof(line) || write_all(fd, line, (size_t)n) != 0 ||
        fsync(fd) != 0) {
        set_err(err, "%s: cannot write: %s", p, strerror(errno));
        goto fail;
    }
    close(fd);
    free(p);
    to_hex(tok, sizeof(tok), out);
    OPENSSL_cleanse(tok, sizeof(tok));
    return 0;
fail:
    if (fd >= 0)
        close(fd);
    free(p);
    OPENSSL_cleanse(tok, sizeof(tok));
    return -1;
}

int tr_ca_token_check(const char *dir, const char *token, char **ns, char **sa, char **err)
{
    *ns = *sa = NULL;
    unsigned char tok[32], hash[32];
    if (strlen(token) != TR_CA_TOKEN_HEX || from_hex(token, 32, tok) != 0 ||
        sha256(tok, sizeof(tok), hash) != 0) {
        set_err(err, "malformed token");
        return -1;
    }
    char *p = path_join(dir, TOKENS);
    size_t len;
    char *text = p ? read_file(p, TOKENS_FILE_MAX, &len, err) : NULL;
    free(p);
    if (text == NULL)
        return -1;
    /* Compare with every entry, without stopping at a match. The stored
     * hashes are compared as text (lower-cased), not decoded: the file is
     * read at every bootstrap, and a thousand workloads starting at once
     * would decode it a million times. */
    char want[65];
    to_hex(hash, sizeof(hash), want);
    const char *match = NULL;
    for (char *line = text, *next; line < text + len; line = next) {
        char *nl = memchr(line, '\n', (size_t)(text + len - line));
        next = nl ? nl + 1 : text + len;
        if (nl)
            *nl = '\0';
        if (strlen(line) < 64 + 4 || line[64] != ' ')
            continue;
        unsigned diff = 0;
        for (size_t i = 0; i < 64; i++)
            diff |= (unsigned)(tolower((unsigned char)line[i]) ^ (unsigned char)want[i]);
        if (diff == 0 && match == NULL)
            match = line + 65;
    }
    int rc = -1;
    if (match != NULL) {
        const char *sp = strchr(match, ' ');
        if (sp != NULL) {
            *ns = strndup(match, (size_t)(sp - match));
            *sa = strdup(sp + 1);
        }
        if (*ns && *sa && name_check(*ns) == 0 && name_check(*sa) == 0) {
            rc = 0;
        } else {
            free(*ns);
            free(*sa);
            *ns = *sa = NULL;
            set_err(err, "token entry is malformed");
        }
    } else {
        set_err(err, "unknown token");
    }
    OPENSSL_cleanse(text, len);
    free(text);
    return rc;
}

/* ---- check ---- */

static void cert_label(X509 *x, char *out, size_t size)
{
    GENERAL_NAMES *sans = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    out[0] = '\0';
    for (int i = 0; sans != NULL && i < sk_GENERAL_NAME_num(sans); i++) {
        GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, i);
        if (g->type == GEN_URI) {
            const ASN1_IA5STRING *u = g->d.uniformResourceIdentifier;
            snprintf(out, size, "%.*s", u->length, (const char *)u->data);
            break;
        }
    }
    GENERAL_NAMES_free(sans);
    if (out[0] == '\0')
        X509_NAME_oneline(X509_get_subject_name(x), out, (int)size);
    for (char *c = out; *c; c++)
        if ((unsigned char)*c < 0x20 || (unsigned char)*c > 0x7e)
            *c = '?';
}

static enum tr_ca_expiry report_one(FILE *out, const char *role, X509 *x, bool is_ca, time_t now)
{
    time_t nb = asn1_to_time(X509_get0_notBefore(x)), na = asn1_to_time(X509_get0_notAfter(x));
    enum tr_ca_expiry st = tr_ca_expiry_status(nb, na, is_ca, now);
    char label[512], when[32];
    cert_label(x, label, sizeof(label));
    struct tm tm;
    gmtime_r(&na, &tm);
    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    long long left = (long long)(na - now);
    char rest[64];
    if (left > 0)
        snprintf(rest, sizeof(rest), "%lldd %lldh left", left / 86400, (left % 86400) / 3600);
    else
        snprintf(rest, sizeof(rest), "expired %lldd %lldh ago", -left / 86400,
                 (-left % 86400) / 3600);
    fprintf(out, "%-12s %-7s expires %s (%s)  %s\n", role, tr_ca_expiry_name(st), when, rest,
            label);
    return st;
}

int tr_ca_check(const char *dir, const char *const *leaf_files, size_t n_leaf_files, time_t now,
                FILE *out, char **err)
{
    struct tr_ca *ca = tr_ca_load(dir, err);
    if (ca == NULL)
        return -1;
    enum tr_ca_expiry worst = TR_CA_EXPIRY_OK, st;
#define WORST(x)                                                                                   \
    do {                                                                                           \
        st = (x);                                                                                  \
        if (st > worst)                                                                            \
            worst = st;                                                                            \
    } while (0)
    for (int i = 0; i < sk_X509_num(ca->roots); i++)
        WORST(report_one(out, "root", sk_X509_value(ca->roots, i), true, now));
    if (!self_signed(ca->cert)) {
        WORST(report_one(out, "signing", ca->cert, true, now));
        for (int i = 1; i < sk_X509_num(ca->intermediates); i++)
            WORST(report_one(out, "intermediate", sk_X509_value(ca->intermediates, i), true, now));
    }
    tr_ca_free(ca);
    for (size_t f = 0; f < n_leaf_files; f++) {
        STACK_OF(X509) *sk = certs_from_file(leaf_files[f], err);
        if (sk == NULL)
            return -1;
        for (int i = 0; i < sk_X509_num(sk); i++)
            WORST(report_one(out, i == 0 ? "leaf" : "intermediate", sk_X509_value(sk, i), i > 0,
                             now));
        sk_X509_pop_free(sk, X509_free);
    }
#undef WORST
    return (int)worst;
}
