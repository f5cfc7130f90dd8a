/* core/json.h: a strict, bounded JSON reader (RFC 8259) for small hostile
 * documents: JWT headers and payloads, JWKS. The text is tokenised into a
 * caller-provided array (no allocation), so a request can read a token with
 * fixed memory. Refused: anything RFC 8259 refuses (comments, single quotes,
 * trailing commas, leading zeros, control characters, bad escapes, lone
 * surrogates), malformed UTF-8, duplicate object keys, nesting deeper than
 * TR_JSON_MAX_DEPTH, more tokens than the array holds, and any text after
 * the value.
 *
 * Layout: tokens in document order; an object's members are key, value,
 * key, value...; each token records n (members of an object, elements of an
 * array) and next (the index just past its subtree), so a reader skips a
 * value in O(1). */
#ifndef TR_CORE_JSON_H
#define TR_CORE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/str.h"

#define TR_JSON_MAX_DEPTH 16
#define TR_JSON_MAX_KEY   256 /* longest object key (decoded bytes) */

enum tr_json_type {
    TR_JSON_NULL = 0,
    TR_JSON_FALSE,
    TR_JSON_TRUE,
    TR_JSON_NUMBER,
    TR_JSON_STRING,
    TR_JSON_ARRAY,
    TR_JSON_OBJECT,
};

struct tr_json_tok {
    uint8_t type;   /* enum tr_json_type */
    bool escaped;   /* a string holding a backslash escape */
    uint32_t start; /* a string's content (quotes excluded), a number's text */
    uint32_t len;
    uint32_t n;    /* object members or array elements */
    uint32_t next; /* index of the first token after this subtree */
};

struct tr_json {
    const char *text;
    const struct tr_json_tok *tok;
    uint32_t n_tok;
};

/* Parse text[0, len) into tok[0, cap). Returns true and fills *out; false
 * with a constant error string in *err (nothing to free). */
bool tr_json_parse(const char *text, size_t len, struct tr_json_tok *tok, uint32_t cap,
                   struct tr_json *out, const char **err);

/* The value of key in the object at index obj, or -1 (obj is no object, or
 * has no such key). Keys are compared decoded. */
int tr_json_get(const struct tr_json *j, uint32_t obj, const char *key);

/* The i-th element of the array at index arr (i < its n). */
uint32_t tr_json_elem(const struct tr_json *j, uint32_t arr, uint32_t i);

/* A string token decoded (escapes resolved, UTF-8) into out[0, cap): its
 * length, or -1 if it is not a string or does not fit. Not NUL-terminated. */
long tr_json_str(const struct tr_json *j, uint32_t t, char *out, size_t cap);

/* A string token without escapes as a slice of the text (the common case:
 * no copy); {0} when it is not such a string. */
tr_str tr_json_raw_str(const struct tr_json *j, uint32_t t);

/* Resolve every escaped string of a parsed document in place (decoding
 * never grows a string), so all strings become plain slices of text: for a
 * reader that then hands out slices. text is the buffer parsed. */
void tr_json_unescape(char *text, struct tr_json_tok *tok, uint32_t n);

/* A number token as whole seconds (a NumericDate: the fraction dropped);
 * false if it is not a number or is outside +-2^53. */
bool tr_json_int(const struct tr_json *j, uint32_t t, int64_t *v);

#endif
