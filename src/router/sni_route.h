/* router/sni_route.h: a listener's sni_routes (config/model.h,
 * tr_sni_route_cfg) compiled for the connection path.
 *
 * Built once per snapshot: every name of every rule, lower-cased, in two
 * sorted arrays (exact names; "*.x" suffixes stored as ".x"), each entry
 * keeping the first rule that lists it. A match lower-cases the SNI into a
 * stack buffer and binary-searches the exact name, then each suffix that
 * starts at a dot after the first label ("a.b.c": ".b.c", ".c"), and answers
 * the smallest rule index found: first match wins, as the rules are written,
 * in O(labels * log names) without allocating. Pure; unit-tested. */
#ifndef TR_ROUTER_SNI_ROUTE_H
#define TR_ROUTER_SNI_ROUTE_H

#include <stddef.h>

#include "config/model.h"

struct tr_sni_router;

/* The table of l (which has sni_routes), or NULL on no memory. */
struct tr_sni_router *tr_sni_router_build(const struct tr_listener_cfg *l);
void tr_sni_router_free(struct tr_sni_router *r);
/* The index of the first rule of l->sni_routes that takes name (len bytes,
 * any case), or -1. */
int tr_sni_router_match(const struct tr_sni_router *r, const char *name, size_t len);

#endif
