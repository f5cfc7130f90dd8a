/* admin/config_dump.h: the running configuration as JSON (/config_dump).
 *
 *   {"generation": N, "file": "PATH", "config": {...}}
 *
 * "config" is the model written as a native configuration file
 * (config/write.h): saved alone, it loads with `trellis proxy --check` and
 * gives the same model. Key paths are shown (the endpoint is on the 0600
 * admin socket only); key material never is. */
#ifndef TR_ADMIN_CONFIG_DUMP_H
#define TR_ADMIN_CONFIG_DUMP_H

#include <stddef.h>
#include <stdint.h>

#include "config/model.h"

/* The largest dump: a bigger one is an error, never a cut document. */
#define TR_CONFIG_DUMP_MAX (64u * 1024u * 1024u)

/* malloc'd JSON text ending in a newline (caller frees), always complete and
 * valid JSON, or NULL with *err set to a malloc'd message (caller frees):
 * out of memory, or what the writer refuses (config/write.h). */
char *tr_config_dump_json(const struct tr_config *cfg, uint64_t generation, size_t *len,
                          char **err);

#endif
