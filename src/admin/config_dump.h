/* admin/config_dump.h: the configuration model as JSON (/config_dump). */
#ifndef TR_ADMIN_CONFIG_DUMP_H
#define TR_ADMIN_CONFIG_DUMP_H

#include <stddef.h>
#include <stdint.h>

#include "config/model.h"

/* malloc'd JSON text (caller frees), or NULL if out of memory. */
char *tr_config_dump_json(const struct tr_config *cfg, uint64_t generation, size_t *len);

#endif
