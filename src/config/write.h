/* config/write.h: a model written back as a native configuration file.
 *
 * The inverse of config/load.h, for whatever prints a model: `trellis ctl
 * compile` (a compiled model is a file the proxy runs as is), the admin
 * endpoint's /config_dump. The rule: loading the text gives the same model
 * (every field of the schema, the sources of compiled objects), and writing
 * that again gives the same bytes.
 *
 * The writer walks the loader's schema tables (config/schema.c), so a field
 * added there is written without touching it: every field that differs from
 * its default, in the tables' order (that of docs/config.md) with lists of
 * objects after an object's own settings. YAML is block style, without
 * comments; strings are plain where no YAML 1.1 or 1.2 reader could take
 * them for anything else, else double-quoted with escapes (core/fmt.h), so
 * any text a model holds survives. JSON is one object, indented. Pretty
 * text can be twice the size of a dense file the loader took; what would
 * pass the loader's 16 MiB that way is written as compact JSON on one line
 * (JSON is YAML too) instead.
 *
 * What a file cannot say is an error, never a silent change: a string that
 * is not UTF-8, an endpoint named other than by its address, HTTP settings
 * on a tcp listener, more than the loader's size limit even compact. File names are
 * written as the model holds them: the loader resolves relative ones
 * against the directory of the file it read, so a model loaded under an
 * absolute name holds absolute ones.
 */
#ifndef TR_CONFIG_WRITE_H
#define TR_CONFIG_WRITE_H

#include <stdbool.h>
#include <stddef.h>

#include "config/model.h"
#include "core/fmt.h"

enum tr_config_format {
    TR_CONFIG_YAML = 0,
    TR_CONFIG_JSON,
};

/* cfg (validated: tr_config_validate, or loaded) as a file in fmt: malloc'd,
 * NUL-terminated text ending in a newline (caller frees) and its length in
 * *len. NULL on error with *err set to a malloc'd message naming the model
 * path ("clusters[2].endpoints[0].name: ..."; caller frees; err may be
 * NULL). */
char *tr_config_write(const struct tr_config *cfg, enum tr_config_format fmt, size_t *len,
                      char **err);

/* The JSON object alone, appended to f as a value nested depth levels deep
 * (its lines indented to match, no final newline), for documents that carry
 * a configuration inside one of their fields (/config_dump). false with
 * *err set as above; what was appended is then incomplete (rewind f). */
bool tr_config_write_json_to(struct tr_fmt *f, const struct tr_config *cfg, unsigned depth,
                             char **err);

#endif
