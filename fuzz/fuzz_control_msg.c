/* libFuzzer target: the control-plane protocol's message reader
 * (control/protocol.h), which reads every body either side of the protocol
 * receives.
 *
 * Input: byte 0 sets the piece size (1..256) the rest is fed in, byte 1 the
 * payload limit (0..255 bytes, or the protocol's maximum for 255). Checked:
 *   - every message delivered has a payload within the limit, NUL-terminated,
 *     and a known type;
 *   - feeding the same bytes in one piece gives the same messages and the
 *     same outcome (the reader does not depend on how bytes arrive);
 *   - after a refusal the reader is reset and usable again. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "control/protocol.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x)                                                                                   \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s\n", __FILE__, __LINE__, #x);              \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

struct seen {
    size_t max;
    uint64_t hash; /* of every message's type, version, length and payload */
    size_t n;
};

static int on_msg(void *arg, enum tr_cp_type t, uint64_t version, const char *p, size_t len)
{
    struct seen *s = arg;
    CHECK((unsigned)t < TR_CP_N_TYPES);
    CHECK(len <= s->max);
    CHECK(p[len] == '\0');
    uint64_t h = s->hash ^ ((uint64_t)t * 0x9e3779b97f4a7c15ull) ^ version ^ (len << 32);
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)p[i]) * 0x100000001b3ull;
    s->hash = h;
    s->n++;
    return 0;
}

static int run(const uint8_t *d, size_t n, size_t piece, size_t max, struct seen *s)
{
    struct tr_cp_reader r;
    tr_cp_reader_init(&r, max);
    s->max = r.max_payload;
    int rc = 0;
    const char *why = NULL;
    for (size_t off = 0; off < n && rc == 0; off += piece) {
        size_t k = n - off < piece ? n - off : piece;
        rc = tr_cp_read(&r, d + off, k, on_msg, s, &why);
    }
    CHECK(rc == 0 || (rc == -1 && why != NULL));
    if (rc != 0) {
        /* reset and reuse */
        tr_cp_reader_free(&r);
        tr_cp_reader_init(&r, max);
        struct seen again = {0};
        const char ok[] = "ack 1 0\n";
        CHECK(tr_cp_read(&r, (const uint8_t *)ok, sizeof(ok) - 1, on_msg, &again, &why) == 0);
        CHECK(again.n == 1);
    }
    tr_cp_reader_free(&r);
    return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    size_t piece = (size_t)data[0] % 256 + 1;
    size_t max = data[1] == 255 ? TR_CP_MAX_PAYLOAD : data[1];
    data += 2;
    size -= 2;
    struct seen a = {0}, b = {0};
    int ra = run(data, size, piece, max, &a);
    int rb = run(data, size, size ? size : 1, max, &b);
    CHECK(ra == rb);
    CHECK(a.n == b.n && a.hash == b.hash);
    return 0;
}
