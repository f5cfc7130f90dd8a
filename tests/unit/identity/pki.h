/* Test PKI generated at run time with the OpenSSL API: a trust-domain CA, a
 * foreign CA, an impostor CA (same name as ours, other key) and leaves with
 * chosen SANs and validity, written as PEM files into a mkdtemp directory. */
#ifndef TR_TEST_IDENTITY_PKI_H
#define TR_TEST_IDENTITY_PKI_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/x509.h>

enum tpki_issuer { TPKI_CA = 0, TPKI_FOREIGN, TPKI_IMPOSTOR, TPKI_N_CA };

struct tpki {
    char dir[64];
    EVP_PKEY *ca_key[TPKI_N_CA];
    X509 *ca[TPKI_N_CA];
};

/* Creates the directory and the CAs; writes ca.pem, foreign.pem, impostor.pem.
 * Returns 0 or -1. */
int tpki_init(struct tpki *p);
/* Removes every file in the directory, the directory, and frees the CAs. */
void tpki_cleanup(struct tpki *p);
/* Issues a leaf with a fresh P-256 key: san is an OpenSSL subjectAltName
 * value ("URI:spiffe://td/x,DNS:y") or NULL for none; validity is
 * [now + nb_off, now + na_off] seconds. Writes <name>.crt and <name>.key,
 * each atomically (temp file + rename, so the inode changes). Returns 0. */
int tpki_leaf(struct tpki *p, const char *name, const char *san, enum tpki_issuer by, long nb_off,
              long na_off);
/* "<dir>/<name>" into buf; returns buf. */
const char *tpki_path(const struct tpki *p, const char *name, char *buf, size_t size);

#endif
