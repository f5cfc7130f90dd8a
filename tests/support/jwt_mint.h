/* tests/support/jwt_mint.h: JSON Web Tokens made with OpenSSL for the JWT
 * unit tests and bench_jwt: keys of every algorithm filter/jwt verifies,
 * their key set, and compact tokens signed with them. Test support only:
 * nothing here is part of trellis. */
#ifndef TR_TESTS_JWT_MINT_H
#define TR_TESTS_JWT_MINT_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

struct jwt_keys {
    EVP_PKEY *rsa, *p256, *p384, *ed; /* kids "r1", "e1", none, none */
    char jwks[8192];                  /* the four public keys, and an "oct" key to skip */
};

/* Fresh keys (RSA 2048, P-256, P-384, Ed25519) and their key set; false
 * when OpenSSL fails. */
bool jwt_keys_make(struct jwt_keys *k);
void jwt_keys_free(struct jwt_keys *k);

/* base64url without padding of in[0, len) into out (4/3 len + 1 bytes). */
void jwt_b64url(const unsigned char *in, size_t len, char *out);

/* A key's big-number parameter (OSSL_PKEY_PARAM_RSA_N...) in base64url;
 * an EC public point's x and y, each size bytes, in base64url. */
bool jwt_bn_b64(EVP_PKEY *k, const char *param, char *out);
bool jwt_ec_xy(EVP_PKEY *k, size_t size, char *x, char *y);

/* A compact token: header and payload JSON, signed with key under alg
 * (RS/PS 256-512, ES256, ES384, EdDSA), into out of size bytes; false when
 * signing fails or it does not fit. */
bool jwt_sign(const char *alg, EVP_PKEY *key, const char *header, const char *payload, char *out,
              size_t size);

#endif
