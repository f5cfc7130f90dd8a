/* Are two models the same, field by field? For round-trip tests: a model
 * written and loaded again (config/write.h), a compiled model against the
 * file it prints. Every field of the schema tables (config/schema.c) is
 * compared, so a field added there is compared too, plus what the tables do
 * not hold: the match kinds, the names and indexes validate fills in, and
 * the source (origin and its path) of every object that has one. Where a
 * model came from (file, line, column, the path of an object read from a
 * file) is not compared. */
#ifndef TR_TEST_CONFIG_MODEL_EQ_H
#define TR_TEST_CONFIG_MODEL_EQ_H

#include <stdbool.h>
#include <stddef.h>

#include "config/model.h"

/* true if a and b hold the same model; else false with the first
 * difference in why: "clusters[1].pool.max_idle: 8 != 64". */
bool tmodel_equal(const struct tr_config *a, const struct tr_config *b, char *why, size_t size);

#endif
