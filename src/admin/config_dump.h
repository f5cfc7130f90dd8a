/* admin/config_dump.h: the configuration model as JSON (/config_dump). */
#ifndef TR_ADMIN_CONFIG_DUMP_H
#define TR_ADMIN_CONFIG_DUMP_H

#include <stddef.h>
#include <stdint.h>

#include "config/model.h"

/* The largest dump: a bigger one is an error, never a cut document. */
#define TR_CONFIG_DUMP_MAX (64u * 1024u * 1024u)

/* malloc'd JSON text (caller frees), always complete and valid JSON (strings
 * escaped by core/fmt.h), or NULL with errno E2BIG if it would exceed
 * TR_CONFIG_DUMP_MAX, ENOMEM if out of memory. */
char *tr_config_dump_json(const struct tr_config *cfg, uint64_t generation, size_t *len);

#endif
