#include "admin/config_dump.h"

#include <stdlib.h>
#include <string.h>

#include "config/write.h"
#include "core/fmt.h"

char *tr_config_dump_json(const struct tr_config *cfg, uint64_t generation, size_t *len, char **err)
{
    struct tr_fmt w;
    *err = NULL;
    tr_fmt_init_growable(&w, TR_CONFIG_DUMP_MAX);
    tr_fmt_printf(&w, "{\n  \"generation\": %llu,\n  \"file\": ", (unsigned long long)generation);
    tr_fmt_json_cstr(&w, cfg->file);
    tr_fmt_cstr(&w, ",\n  \"config\": ");
    /* The writer's own limit (what the loader reads) is below the dump's. */
    if (!tr_config_write_json_to(&w, cfg, 1, err)) {
        tr_fmt_free(&w);
        return NULL;
    }
    tr_fmt_cstr(&w, "\n}\n");
    bool oom = w.oom;
    char *json = tr_fmt_take(&w, len);
    if (json == NULL)
        *err = strdup(oom ? "out of memory" : "configuration dump exceeds TR_CONFIG_DUMP_MAX");
    return json;
}
