/* tests/support/jwt_mint.c: see jwt_mint.h. */
#include "jwt_mint.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/rsa.h>

void jwt_b64url(const unsigned char *in, size_t len, char *out)
{
    static const char abc[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0;
    uint32_t acc = 0;
    int bits = 0;
    for (size_t i = 0; i < len; i++) {
        acc = acc << 8 | in[i];
        bits += 8;
        while (bits >= 6) {
            bits -= 6;
            out[o++] = abc[(acc >> bits) & 63];
        }
    }
    if (bits > 0)
        out[o++] = abc[(acc << (6 - bits)) & 63];
    out[o] = '\0';
}

bool jwt_bn_b64(EVP_PKEY *k, const char *param, char *out)
{
    BIGNUM *bn = NULL;
    if (EVP_PKEY_get_bn_param(k, param, &bn) != 1)
        return false;
    unsigned char buf[512];
    int n = BN_num_bytes(bn) <= (int)sizeof(buf) ? BN_bn2bin(bn, buf) : -1;
    BN_free(bn);
    if (n < 0)
        return false;
    jwt_b64url(buf, (size_t)n, out);
    return true;
}

bool jwt_ec_xy(EVP_PKEY *k, size_t size, char *x, char *y)
{
    unsigned char pt[1 + 2 * 48];
    size_t len = 0;
    if (EVP_PKEY_get_octet_string_param(k, OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof(pt), &len) != 1 ||
        len != 1 + 2 * size)
        return false;
    jwt_b64url(pt + 1, size, x);
    jwt_b64url(pt + 1 + size, size, y);
    return true;
}

bool jwt_keys_make(struct jwt_keys *k)
{
    *k = (struct jwt_keys){0};
    k->rsa = EVP_RSA_gen(2048);
    k->p256 = EVP_EC_gen("P-256");
    k->p384 = EVP_EC_gen("P-384");
    k->ed = EVP_PKEY_Q_keygen(NULL, NULL, "ED25519");
    if (!k->rsa || !k->p256 || !k->p384 || !k->ed)
        return false;
    char n[400], e[16], x1[80], y1[80], x2[80], y2[80], ex[80];
    unsigned char raw[32];
    size_t rl = sizeof(raw);
    if (!jwt_bn_b64(k->rsa, OSSL_PKEY_PARAM_RSA_N, n) ||
        !jwt_bn_b64(k->rsa, OSSL_PKEY_PARAM_RSA_E, e) || !jwt_ec_xy(k->p256, 32, x1, y1) ||
        !jwt_ec_xy(k->p384, 48, x2, y2) || EVP_PKEY_get_raw_public_key(k->ed, raw, &rl) != 1)
        return false;
    jwt_b64url(raw, rl, ex);
    snprintf(
        k->jwks, sizeof(k->jwks),
        "{\"keys\":[{\"kty\":\"RSA\",\"kid\":\"r1\",\"use\":\"sig\",\"n\":\"%s\",\"e\":\"%s\"},"
        "{\"kty\":\"EC\",\"crv\":\"P-256\",\"kid\":\"e1\",\"x\":\"%s\",\"y\":\"%s\"},"
        "{\"kty\":\"EC\",\"crv\":\"P-384\",\"x\":\"%s\",\"y\":\"%s\"},"
        "{\"kty\":\"OKP\",\"crv\":\"Ed25519\",\"x\":\"%s\"},"
        "{\"kty\":\"oct\",\"k\":\"c2VjcmV0\"}]}",
        n, e, x1, y1, x2, y2, ex);
    return true;
}

void jwt_keys_free(struct jwt_keys *k)
{
    EVP_PKEY_free(k->rsa);
    EVP_PKEY_free(k->p256);
    EVP_PKEY_free(k->p384);
    EVP_PKEY_free(k->ed);
    *k = (struct jwt_keys){0};
}

bool jwt_sign(const char *alg, EVP_PKEY *key, const char *header, const char *payload, char *out,
              size_t size)
{
    char h[1400], p[5500];
    if (strlen(header) > 1000 || strlen(payload) > 4000)
        return false;
    jwt_b64url((const unsigned char *)header, strlen(header), h);
    jwt_b64url((const unsigned char *)payload, strlen(payload), p);
    int n = snprintf(out, size, "%s.%s", h, p);
    if (n < 0 || (size_t)n + 1 + 1400 > size)
        return false;
    const char *md = NULL;
    if (strncmp(alg, "EdDSA", 5) != 0)
        md = strstr(alg, "256") ? "SHA256" : strstr(alg, "384") ? "SHA384" : "SHA512";
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    EVP_PKEY_CTX *pctx = NULL;
    unsigned char sig[1024];
    size_t sl = sizeof(sig);
    bool ok = ctx != NULL && EVP_DigestSignInit_ex(ctx, &pctx, md, NULL, NULL, key, NULL) == 1;
    if (ok && alg[0] == 'P')
        ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
             EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
    ok = ok && EVP_DigestSign(ctx, sig, &sl, (unsigned char *)out, (size_t)n) == 1;
    EVP_MD_CTX_free(ctx);
    if (!ok)
        return false;
    if (alg[0] == 'E' && alg[1] == 'S') { /* DER -> r || s */
        size_t half = strstr(alg, "256") ? 32 : 48;
        const unsigned char *q = sig;
        ECDSA_SIG *es = d2i_ECDSA_SIG(NULL, &q, (long)sl);
        if (es == NULL)
            return false;
        unsigned char rs[96];
        BN_bn2binpad(ECDSA_SIG_get0_r(es), rs, (int)half);
        BN_bn2binpad(ECDSA_SIG_get0_s(es), rs + half, (int)half);
        ECDSA_SIG_free(es);
        memcpy(sig, rs, 2 * half);
        sl = 2 * half;
    }
    out[n] = '.';
    jwt_b64url(sig, sl, out + n + 1);
    return true;
}
