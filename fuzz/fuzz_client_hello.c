/* libFuzzer target: the ClientHello SNI reader of TCP listeners that route
 * by SNI without terminating TLS (detect/detect.h: tr_detect_sni).
 *
 * Input: the first bytes of a connection, hostile. Checked invariants:
 *   - the answer is one of the five; a name is found only with FOUND, and
 *     then it is 1..255 bytes of printable ASCII inside the input (ASan sees
 *     a read past it: the input is copied to a buffer of its exact size);
 *   - an answer other than NEED_MORE is final: more bytes after the input
 *     give the same answer and the same name (the listener peeks again as
 *     bytes arrive and must never change its mind);
 *   - NEED_MORE only while fewer than TR_SNI_PEEK_MAX bytes are there. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "detect/detect.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned char *p = malloc(size ? size : 1);
    unsigned char *more = malloc(size + 7);
    if (p == NULL || more == NULL) {
        free(p);
        free(more);
        return 0;
    }
    memcpy(p, data, size);
    const char *name = (const char *)p; /* poison: must be reset */
    size_t len = 12345;
    enum tr_sni_result r = tr_detect_sni(p, size, &name, &len);
    CHECK(r >= TR_SNI_NEED_MORE && r <= TR_SNI_NONE);
    if (r == TR_SNI_FOUND) {
        CHECK(len >= 1 && len <= 255);
        CHECK((const unsigned char *)name >= p && (const unsigned char *)name + len <= p + size);
        for (size_t i = 0; i < len; i++)
            CHECK(name[i] >= 0x21 && name[i] <= 0x7e);
    } else {
        CHECK(name == NULL && len == 0);
    }
    if (r == TR_SNI_NEED_MORE)
        CHECK(size < TR_SNI_PEEK_MAX);
    else {
        memcpy(more, p, size);
        memset(more + size, 0x16, 7);
        const char *name2 = NULL;
        size_t len2 = 0;
        CHECK(tr_detect_sni(more, size + 7, &name2, &len2) == r);
        CHECK(len2 == len);
        if (r == TR_SNI_FOUND)
            CHECK(name2 - (const char *)more == name - (const char *)p);
    }
    free(p);
    free(more);
    return 0;
}
