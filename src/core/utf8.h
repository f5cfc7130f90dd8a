/* core/utf8.h: strict UTF-8 decoding (RFC 3629: no overlongs, no
 * surrogates, nothing above U+10FFFF) for the readers of untrusted text,
 * and YAML 1.2's set of printable characters. */
#ifndef TR_CORE_UTF8_H
#define TR_CORE_UTF8_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum tr_utf8_status {
    TR_UTF8_OK = 0,
    TR_UTF8_BAD_BYTE,     /* p[*bad] starts no sequence or continues none */
    TR_UTF8_TRUNCATED,    /* the sequence runs past len */
    TR_UTF8_BAD_SEQUENCE, /* overlong, surrogate or past U+10FFFF */
};

/* Decode the sequence at p[0, len) (len >= 1): *cp and its length *n, or a
 * status with *bad the offset of the offending byte (TR_UTF8_BAD_BYTE). */
enum tr_utf8_status tr_utf8_decode(const unsigned char *p, size_t len, uint32_t *cp, size_t *n,
                                   size_t *bad);

/* YAML 1.2 c-printable. */
bool tr_yaml_printable(uint32_t cp);

#endif
