/* config/load.h: read a YAML or JSON file into a validated tr_config.
 *
 * Errors are precise: "FILE:LINE:COL: FIELD.PATH: what was expected". Unknown
 * fields are errors (never silently ignored). Cross references are resolved
 * and checked. Loading never touches sockets or TLS state.
 */
#ifndef TR_CONFIG_LOAD_H
#define TR_CONFIG_LOAD_H

#include <stddef.h>

#include "config/model.h"

/* Load from a file. On error returns NULL and sets *err to a malloc'd message
 * (caller frees). */
struct tr_config *tr_config_load_file(const char *path, char **err);

/* Load from memory; name is used as the file name in locations and errors. */
struct tr_config *tr_config_load_buffer(const char *buf, size_t len, const char *name, char **err);

/* Free a config and everything it owns. NULL is fine. */
void tr_config_free(struct tr_config *cfg);

/* Format "FILE:LINE:COL: PATH: " for loc into out; for callers that report
 * errors about an already-loaded object (e.g. a certificate that fails to
 * parse). Returns the number of bytes written (as snprintf). */
int tr_cfg_loc_format(const struct tr_cfg_loc *loc, char *out, size_t size);

/* Set *err (malloc'd; any previous message is freed) to "FILE:LINE:COL:
 * PATH: " for loc followed by the formatted message. For every stage that
 * reports an error about a configured object. NULL err: nothing. */
void tr_cfg_errorf(char **err, const struct tr_cfg_loc *loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
