/* filter/path_normalize.h: the path every request decision is taken on.
 *
 * A request target is normalised once per request (proxy/decide.c), before
 * routing and authorization, and the normalised path is what goes upstream,
 * so the proxy and the application read one and the same path. Pure: bytes
 * in, bytes out into the caller's buffer, no allocation.
 *
 * The query (from the first '?') is never normalised: it is copied after
 * the normalised path byte for byte. "*" (OPTIONS *) is kept as it is.
 * Modes (enum tr_path_normalization, config/model.h):
 *
 *  - NONE: the target as received (Istio NONE).
 *  - BASE: RFC 3986 normalisation as Envoy's normalize_path (Istio BASE):
 *    percent-encoded unreserved characters (ALPHA DIGIT - . _ ~) are
 *    decoded, the hex digits of the other escapes upper-cased (%2f -> %2F,
 *    RFC 3986 6.2.2.1), a backslash becomes '/', "." and ".." segments are
 *    removed (5.2.4; ".." never climbs above the root).
 *  - MERGE_SLASHES: BASE, then repeated slashes become one (Istio).
 *  - DECODE_AND_MERGE_SLASHES: %2F and %5C (any case) are decoded to '/'
 *    and '\' first, then MERGE_SLASHES (Istio).
 *  - STRICT (the default; stricter than Istio's BASE): BASE's decoding and
 *    dot segments with slashes merged, but a path that different
 *    applications read differently is refused (400) instead: %2F, %5C
 *    (encoded separators), a backslash, %00, and a "." or ".." segment carrying ';' parameters ("/..;/", read as ".." by
 *    Tomcat and Spring, as a name by others).
 *
 * In every mode but NONE: ';' is an ordinary character of a segment
 * ("/admin;x" stays, and a rule on the prefix "/admin" covers it); %25 is
 * never decoded (only unreserved characters are), so a path is decoded at
 * most once ("%252F" stays "%252F"); a control character or space (bytes
 * up to 0x20, 0x7f) is refused, and the path must start with '/'.
 */
#ifndef TR_FILTER_PATH_NORMALIZE_H
#define TR_FILTER_PATH_NORMALIZE_H

#include <stddef.h>

#include "config/model.h"

/* Why a path was refused (negative), or TR_PATH_OK. */
enum tr_path_status {
    TR_PATH_OK = 0,
    TR_PATH_BAD_ESCAPE = -1,    /* '%' not followed by two hex digits */
    TR_PATH_ENCODED_SLASH = -2, /* %2F or %5C (STRICT) */
    TR_PATH_BACKSLASH = -3,     /* '\' (STRICT) */
    TR_PATH_ENCODED_NUL = -4,   /* %00 (STRICT) */
    TR_PATH_DOT_PARAMS = -5,    /* "/.;x/" or "/..;x/" (STRICT) */
    TR_PATH_BAD_CHAR = -6,      /* a control character or space */
    TR_PATH_NOT_ABSOLUTE = -7,  /* does not start with '/' */
    TR_PATH_NO_ROOM = -8,       /* cap too small (never when cap >= len) */
};

/* Normalise the request target in[0..len) (query included) under mode into
 * out (cap bytes; it may not overlap in). The result is never longer than
 * the input, so cap >= len always suffices. On TR_PATH_OK *out_len is the
 * length of the normalised path followed by the untouched query; on error
 * out holds nothing meaningful. */
enum tr_path_status tr_path_normalize(enum tr_path_normalization mode, const char *in, size_t len,
                                      char *out, size_t cap, size_t *out_len);

/* The mode's name as written in the configuration ("STRICT", ...). */
const char *tr_path_normalization_name(enum tr_path_normalization mode);

/* A short text for logs ("encoded slash", ...). */
const char *tr_path_status_str(enum tr_path_status st);

#endif
