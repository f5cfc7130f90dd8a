/* libFuzzer target for the configuration loader and writer: any bytes must
 * either load or fail with a message, never crash, leak or hang; a loaded
 * config must pass tr_config_validate() again; and written back (YAML and
 * JSON, config/write.h) it must load as the same model, field by field
 * (tests/unit/config/model_eq.h), and write the same bytes again. File
 * references in the seeds point at /dev/null so TLS contexts pass the
 * readability check. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/load.h"
#include "config/write.h"
#include "model_eq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(x, ...)                                                                              \
    do {                                                                                           \
        if (!(x)) {                                                                                \
            fprintf(stderr, "%s:%d: invariant failed: %s: ", __FILE__, __LINE__, #x);              \
            fprintf(stderr, __VA_ARGS__);                                                          \
            fputc('\n', stderr);                                                                   \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static void roundtrip(const struct tr_config *cfg, enum tr_config_format fmt)
{
    size_t len1 = 0, len2 = 0;
    char *err = NULL, why[512];
    char *text1 = tr_config_write(cfg, fmt, &len1, &err);
    CHECK(text1 != NULL, "write: %s", err);
    struct tr_config *again = tr_config_load_buffer(text1, len1, "fuzz.yaml", &err);
    CHECK(again != NULL, "the written text does not load: %s\n%s", err, text1);
    CHECK(tmodel_equal(cfg, again, why, sizeof(why)), "read back differently: %s\n%s", why, text1);
    char *text2 = tr_config_write(again, fmt, &len2, &err);
    CHECK(text2 != NULL, "second write: %s", err);
    CHECK(len1 == len2 && memcmp(text1, text2, len1) == 0, "written twice differently:\n%s\n%s",
          text1, text2);
    free(text1);
    free(text2);
    tr_config_free(again);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *err = NULL;
    struct tr_config *cfg = tr_config_load_buffer((const char *)data, size, "fuzz.yaml", &err);
    /* Exactly one of the two is set. */
    if ((cfg == NULL) == (err == NULL))
        abort();
    /* What the loader accepts, validation accepts again (edits re-validate). */
    if (cfg != NULL && tr_config_validate(cfg, NULL) != 0)
        abort();
    if (cfg != NULL) {
        roundtrip(cfg, TR_CONFIG_YAML);
        roundtrip(cfg, TR_CONFIG_JSON);
    }
    tr_config_free(cfg);
    free(err);
    return 0;
}
