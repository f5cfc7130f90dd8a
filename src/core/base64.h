/* core/base64.h: strict base64 decoders (RFC 4648). Both refuse anything
 * but the canonical encoding of some bytes: characters outside the
 * alphabet, a length no encoding has, nonzero unused bits; so one value has
 * one spelling, which is what a signature or a certificate needs. */
#ifndef TR_CORE_BASE64_H
#define TR_CORE_BASE64_H

#include <stddef.h>

/* RFC 4648 section 4 ('+', '/'), padded with '=' to a multiple of 4 (a
 * Kubernetes Secret's data). Returns the decoded length, or -1 on any fault
 * or when out (cap bytes) is too small. */
long tr_base64_decode(const char *in, size_t len, unsigned char *out, size_t cap);

/* RFC 4648 section 5 ('-', '_') without padding (RFC 7515 2: a JWS's
 * parts, a JWK's members). Returns the decoded length or -1. */
long tr_base64url_decode(const char *in, size_t len, unsigned char *out, size_t cap);

#endif
