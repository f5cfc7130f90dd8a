/* libFuzzer target for the configuration loader: any bytes must either load
 * or fail with a message, never crash, leak or hang, and a loaded config
 * must pass tr_config_validate() again. File references in the
 * seeds point at /dev/null so TLS contexts pass the readability check. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "config/load.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

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
    tr_config_free(cfg);
    free(err);
    return 0;
}
