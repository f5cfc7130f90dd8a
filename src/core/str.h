/* core/str.h: non-owning byte slices. A tr_str points into memory owned by
 * someone else (a connection buffer, a config arena); it is never freed. */
#ifndef TR_CORE_STR_H
#define TR_CORE_STR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <strings.h>

typedef struct tr_str {
    const char *p;
    uint32_t len;
} tr_str;

#define TR_STR_LIT(s) ((tr_str){(s), sizeof(s) - 1})

static inline tr_str tr_str_from(const char *p, size_t len)
{
    return (tr_str){p, (uint32_t)len};
}

static inline bool tr_str_eq(tr_str a, const char *lit, size_t lit_len)
{
    return a.len == lit_len && memcmp(a.p, lit, lit_len) == 0;
}

/* ASCII case-insensitive compare, for header names and tokens. */
static inline bool tr_str_ieq(tr_str a, const char *lit, size_t lit_len)
{
    return a.len == lit_len && strncasecmp(a.p, lit, lit_len) == 0;
}

/* Copy src into dst (size > 0) as a NUL-terminated string, truncated to fit.
 * Returns false if it was truncated. */
static inline bool tr_str_to_cstr(char *dst, size_t size, tr_str src)
{
    size_t n = src.len < size - 1 ? src.len : size - 1;
    memcpy(dst, src.p, n);
    dst[n] = '\0';
    return n == src.len;
}

/* The value of a hexadecimal digit (either case), or -1. */
static inline int tr_hex_digit(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

#define TR_STR_EQ_LIT(s, lit)  tr_str_eq((s), (lit), sizeof(lit) - 1)
#define TR_STR_IEQ_LIT(s, lit) tr_str_ieq((s), (lit), sizeof(lit) - 1)

#endif
