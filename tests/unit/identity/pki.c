/* Test PKI: see pki.h. */
#include "pki.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

static const char *const ca_names[TPKI_N_CA] = {"trellis test CA", "foreign CA", "trellis test CA"};
static const char *const ca_files[TPKI_N_CA] = {"ca.pem", "foreign.pem", "impostor.pem"};

const char *tpki_path(const struct tpki *p, const char *name, char *buf, size_t size)
{
    snprintf(buf, size, "%s/%s", p->dir, name);
    return buf;
}

static int add_ext(X509 *x, X509 *issuer, int nid, const char *value)
{
    X509V3_CTX v3;
    X509V3_set_ctx(&v3, issuer, x, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_nconf_nid(NULL, &v3, nid, value);
    if (ext == NULL)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok == 1 ? 0 : -1;
}

/* Builds and signs a certificate for key; issuer NULL means self-signed. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, X509 *issuer, EVP_PKEY *issuer_key, bool ca,
                       const char *san, long nb_off, long na_off)
{
    X509 *x = X509_new();
    if (x == NULL)
        return NULL;
    unsigned char serial[16];
    RAND_bytes(serial, sizeof(serial));
    serial[0] &= 0x7f; /* positive */
    BIGNUM *bn = BN_bin2bn(serial, sizeof(serial), NULL);
    int ok = bn && X509_set_version(x, X509_VERSION_3) &&
             BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) &&
             X509_gmtime_adj(X509_getm_notBefore(x), nb_off) &&
             X509_gmtime_adj(X509_getm_notAfter(x), na_off) && X509_set_pubkey(x, key);
    BN_free(bn);
    X509_NAME *name = X509_get_subject_name(x);
    ok = ok &&
         X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509 *iss = issuer ? issuer : x;
    ok = ok && X509_set_issuer_name(x, X509_get_subject_name(iss));
    if (ok && ca) {
        ok = add_ext(x, iss, NID_basic_constraints, "critical,CA:TRUE") == 0 &&
             add_ext(x, iss, NID_key_usage, "critical,keyCertSign,cRLSign") == 0;
    } else if (ok) {
        ok = add_ext(x, iss, NID_basic_constraints, "critical,CA:FALSE") == 0 &&
             add_ext(x, iss, NID_key_usage, "critical,digitalSignature,keyEncipherment") == 0 &&
             add_ext(x, iss, NID_ext_key_usage, "serverAuth,clientAuth") == 0;
    }
    ok = ok && add_ext(x, iss, NID_subject_key_identifier, "hash") == 0;
    ok = ok && add_ext(x, iss, NID_authority_key_identifier, "keyid:always") == 0;
    if (ok && san)
        ok = add_ext(x, iss, NID_subject_alt_name, san) == 0;
    ok = ok && X509_sign(x, issuer_key ? issuer_key : key, EVP_sha256()) > 0;
    if (!ok) {
        X509_free(x);
        return NULL;
    }
    return x;
}

/* Writes via a temp file and rename(2): readers never see a partial file. */
static int write_pem(const struct tpki *p, const char *name, X509 *cert, EVP_PKEY *key)
{
    char path[256], tmp[300];
    tpki_path(p, name, path, sizeof(path));
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    BIO *b = BIO_new_file(tmp, "w");
    if (b == NULL)
        return -1;
    int ok = cert ? PEM_write_bio_X509(b, cert)
                  : PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL);
    BIO_free(b);
    if (!ok || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

int tpki_init(struct tpki *p)
{
    memset(p, 0, sizeof(*p));
    snprintf(p->dir, sizeof(p->dir), "/tmp/trellis-pki-XXXXXX");
    if (mkdtemp(p->dir) == NULL)
        return -1;
    for (int i = 0; i < TPKI_N_CA; i++) {
        p->ca_key[i] = EVP_EC_gen("P-256");
        if (p->ca_key[i] == NULL)
            return -1;
        p->ca[i] =
            make_cert(p->ca_key[i], ca_names[i], NULL, NULL, true, NULL, -86400, 365L * 86400);
        if (p->ca[i] == NULL || write_pem(p, ca_files[i], p->ca[i], NULL) != 0)
            return -1;
    }
    return 0;
}

int tpki_leaf(struct tpki *p, const char *name, const char *san, enum tpki_issuer by, long nb_off,
              long na_off)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    if (key == NULL)
        return -1;
    X509 *x = make_cert(key, name, p->ca[by], p->ca_key[by], false, san, nb_off, na_off);
    char crt[128], kf[128];
    snprintf(crt, sizeof(crt), "%s.crt", name);
    snprintf(kf, sizeof(kf), "%s.key", name);
    int rc = x && write_pem(p, crt, x, NULL) == 0 && write_pem(p, kf, NULL, key) == 0 ? 0 : -1;
    X509_free(x);
    EVP_PKEY_free(key);
    return rc;
}

void tpki_cleanup(struct tpki *p)
{
    DIR *d = opendir(p->dir);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            snprintf(path, sizeof(path), "%s/%s", p->dir, e->d_name);
            unlink(path);
        }
        closedir(d);
        rmdir(p->dir);
    }
    for (int i = 0; i < TPKI_N_CA; i++) {
        X509_free(p->ca[i]);
        EVP_PKEY_free(p->ca_key[i]);
    }
    memset(p, 0, sizeof(*p));
}
