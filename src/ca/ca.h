/* ca/ca.h: the mesh certificate authority (signing side) and the workload's
 * key/CSR helpers (proxy side). OpenSSL 3 EVP/X509 APIs only.
 *
 * State directory (Istio's plug-in CA file names, so an operator's existing
 * intermediate drops in unchanged):
 *   ca-cert.pem     the signing certificate (a root we made, or the
 *                   operator's intermediate)
 *   ca-key.pem      its private key; mode 0600, created with O_EXCL; a key
 *                   readable by group or others is refused at load
 *   root-cert.pem   the trust bundle: one root, or several during a rotation
 *   cert-chain.pem  ca-cert followed by its issuers; the non-self-signed
 *                   ones are appended to every issued leaf
 *   trust-domain    the SPIFFE trust domain, one line
 *   tokens          hashed bootstrap tokens (mode 0600), see tr_ca_token_*
 * Loading checks that the key matches ca-cert, ca-cert is a CA allowed to
 * sign certificates, and ca-cert chains (through cert-chain.pem) to a root
 * of root-cert.pem. Dates are not checked at load: `trellis ctl ca check`
 * reports them, and signing refuses an expired signer.
 *
 * Signing ignores every name and extension a CSR asks for: the leaf carries
 * exactly the URI SAN the caller authenticated, as a critical extension
 * with an empty subject. A tr_ca is immutable after load and may be shared by
 * threads.
 *
 * Errors: functions that can fail take char **err and set it to a malloc'd
 * message the caller frees (file name and reason).
 */
#ifndef TR_CA_CA_H
#define TR_CA_CA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#include <openssl/evp.h>

/* Largest CSR (PEM bytes) accepted by tr_ca_sign: a P-256 CSR is ~400. */
#define TR_CA_CSR_MAX          16384
/* Default and limits of an SVID's lifetime, in seconds. */
#define TR_CA_LIFETIME_DEFAULT (24 * 3600)
#define TR_CA_LIFETIME_MIN     10 /* short lives are for tests of rotation */
#define TR_CA_LIFETIME_MAX     (366 * 24 * 3600)
/* notBefore is backdated this much to tolerate clock skew between hosts. */
#define TR_CA_BACKDATE         300
/* Lifetime of a root created by tr_ca_init. */
#define TR_CA_ROOT_LIFETIME    (10L * 365 * 24 * 3600)
/* Bootstrap token: 256 random bits, printed as 64 hex digits. */
#define TR_CA_TOKEN_HEX        64

struct tr_ca;

/* Creates DIR (mode 0700 if missing) and the CA state in it. plugin_dir
 * NULL: a new self-signed EC P-256 root. Otherwise the four Istio plug-in
 * files of plugin_dir are copied in (the key with mode 0600) and validated.
 * trust_domain NULL means "cluster.local". Refuses a DIR that already holds
 * a CA. Returns 0 or -1. */
int tr_ca_init(const char *dir, const char *trust_domain, const char *plugin_dir, char **err);

/* Loads and validates DIR (see above). NULL on error. */
struct tr_ca *tr_ca_load(const char *dir, char **err);
void tr_ca_free(struct tr_ca *ca); /* NULL is fine */

const char *tr_ca_trust_domain(const struct tr_ca *ca);
/* The signer's validity. */
time_t tr_ca_not_after(const struct tr_ca *ca);

/* Signs a PEM CSR (at most TR_CA_CSR_MAX bytes) into an X.509 SVID for
 * spiffe_id, which must be spiffe://TD/ns/NS/sa/SA in the CA's trust
 * domain. The CSR's signature must verify and its key be EC P-256/P-384 or
 * RSA 2048..8192 bits. lifetime_s in [TR_CA_LIFETIME_MIN,
 * TR_CA_LIFETIME_MAX]; notAfter is capped at the signer's notAfter. Returns
 * the PEM chain (leaf, then intermediates; NUL-terminated, *out_len set if
 * not NULL), or NULL with *err. */
char *tr_ca_sign(const struct tr_ca *ca, const char *csr_pem, size_t csr_len, const char *spiffe_id,
                 long lifetime_s, size_t *out_len, char **err);
/* The same, and the certificate's notAfter into *not_after (for a caller
 * that would otherwise parse the chain again to learn it). */
char *tr_ca_sign_until(const struct tr_ca *ca, const char *csr_pem, size_t csr_len,
                       const char *spiffe_id, long lifetime_s, size_t *out_len, time_t *not_after,
                       char **err);

/* The trust bundle (root-cert.pem's roots) as PEM, NUL-terminated. */
char *tr_ca_bundle_pem(const struct tr_ca *ca, size_t *out_len);

/* "spiffe://TD/ns/NS/sa/SA" into out; -1 if a part is invalid or it does
 * not fit. */
int tr_ca_spiffe_id(const char *td, const char *ns, const char *sa, char *out, size_t size);

/* ---- proxy side: the key never leaves the process that uses it. ---- */

/* A new EC P-256 key, in memory only. NULL on failure. */
EVP_PKEY *tr_ca_key_new(void);
/* A CSR for key (empty subject: the CA decides the name), PEM,
 * NUL-terminated, malloc'd. NULL on failure. */
char *tr_ca_csr_new(EVP_PKEY *key, size_t *out_len);
/* When to renew a certificate valid from not_before to not_after: at
 * `fraction` of its life (0 < fraction < 1; 0.5 is the default, half-life). */
time_t tr_ca_renew_at(time_t not_before, time_t not_after, double fraction);

/* ---- expiry: what `trellis ctl ca check` and status report ---- */

enum tr_ca_expiry {
    TR_CA_EXPIRY_OK,
    TR_CA_EXPIRY_WARN,    /* CA: within 30 days of notAfter; leaf: past 80% of its life */
    TR_CA_EXPIRY_EXPIRED, /* or not valid yet */
};
#define TR_CA_WARN_CA_DAYS      30
#define TR_CA_WARN_LEAF_PERCENT 80

enum tr_ca_expiry tr_ca_expiry_status(time_t not_before, time_t not_after, bool is_ca, time_t now);
const char *tr_ca_expiry_name(enum tr_ca_expiry e);

/* Prints one line per certificate of the CA in DIR (roots, the signing
 * certificate, intermediates) and of each PEM file in leaf_files (its first
 * certificate is a leaf, the rest intermediates): role, subject or SPIFFE
 * ID, notAfter, days left, status. Returns the worst status, or -1 with
 * *err if DIR or a file cannot be loaded. */
int tr_ca_check(const char *dir, const char *const *leaf_files, size_t n_leaf_files, time_t now,
                FILE *out, char **err);

/* ---- bootstrap tokens (`trellis up` issues one per workload) ---- */

/* Issues a fresh token bound to NS/SA: 256 random bits, printed as hex into
 * out (TR_CA_TOKEN_HEX + 1 bytes). Only its SHA-256 is stored, appended to
 * DIR/tokens (created 0600). Returns 0 or -1. */
int tr_ca_token_issue(const char *dir, const char *ns, const char *sa,
                      char out[TR_CA_TOKEN_HEX + 1], char **err);
/* Authenticates a token against DIR/tokens: compares its hash with every
 * stored hash in constant time. On success returns 0 and the bound
 * namespace and service account (malloc'd); -1 with *err otherwise. */
int tr_ca_token_check(const char *dir, const char *token, char **ns, char **sa, char **err);

#endif
