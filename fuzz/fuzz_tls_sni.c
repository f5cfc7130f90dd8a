/* libFuzzer target: the server_name extension parser and the SNI choice of
 * a TERMINATE listener (identity/identity.h: tr_tls_sni_parse,
 * tr_tls_sni_pick).
 *
 * Input: the body of a ClientHello's server_name extension, hostile. Checked
 * invariants:
 *   - a parse that succeeds gives no name, or one of 1..255 bytes without a
 *     NUL that lies inside the input (ASan sees a read past it: the input is
 *     copied to a buffer of its exact size);
 *   - the lengths it accepted add up: the list length is the input's;
 *   - the choice is a context whose names include one that matches (exact,
 *     case-insensitive, or a "*." suffix with a label before it) or, when
 *     none does, the first context without names. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "identity/identity.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static bool reference_match(const char *pattern, const char *name, size_t len)
{
    size_t pl = strlen(pattern);
    if (pattern[0] == '*') {
        const char *suffix = pattern + 1; /* ".example.com" */
        size_t sl = pl - 1;
        return len > sl && name[len - sl - 1] != '.' &&
               strncasecmp(name + len - sl, suffix, sl) == 0;
    }
    return pl == len && strncasecmp(name, pattern, len) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *ext = malloc(size ? size : 1);
    if (ext == NULL)
        return 0;
    memcpy(ext, data, size);
    const char *name = (const char *)ext; /* poison: must be reset */
    size_t len = 12345;
    int rc = tr_tls_sni_parse(ext, size, &name, &len);
    CHECK(rc == 0 || rc == -1);
    if (rc == 0) {
        CHECK(size >= 2 && (size_t)((ext[0] << 8) | ext[1]) == size - 2);
        if (name == NULL) {
            CHECK(len == 0);
        } else {
            CHECK(len >= 1 && len <= 255);
            CHECK((const unsigned char *)name >= ext + 2 &&
                  (const unsigned char *)name + len <= ext + size);
            CHECK(memchr(name, '\0', len) == NULL);
        }
        static const char *const a[] = {"a.example.com", "*.b.example.com"};
        static const char *const b[] = {"*.example.com"};
        const struct tr_tls_sni_choice choices[] = {
            {NULL, a, 2}, {NULL, b, 1}, {NULL, NULL, 0}, {NULL, NULL, 0}};
        for (size_t n = 0; n <= 4; n++) {
            const struct tr_tls_sni_table t = {choices, n};
            const struct tr_tls_sni_choice *pick = tr_tls_sni_pick(&t, name, len);
            const struct tr_tls_sni_choice *want = NULL;
            for (size_t i = 0; name != NULL && want == NULL && i < n; i++)
                for (size_t k = 0; k < choices[i].n_names; k++)
                    if (reference_match(choices[i].names[k], name, len))
                        want = &choices[i];
            for (size_t i = 0; want == NULL && i < n; i++)
                if (choices[i].n_names == 0)
                    want = &choices[i];
            CHECK(pick == want);
        }
    }
    free(ext);
    return 0;
}
