/* config/load.h: read a YAML or JSON file into a validated tr_config, or
 * validate a tr_config built directly (by a dialect compiler).
 *
 * Errors are precise: "FILE:LINE:COL: FIELD.PATH: what was expected", or for
 * an object compiled from another resource "KIND NS/NAME: PATH: ...". Unknown
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

/* Read a configuration file whole (bounded by the loader's size limit), for
 * callers that keep the text (partial updates below). Returns a malloc'd
 * buffer and its length, or NULL with *err set. */
char *tr_config_read_file(const char *path, size_t *len, char **err);

/* A partial update: one named object of a top-level list replaced, added or
 * removed, or one field of it replaced. A control plane sends these instead
 * of the whole configuration (one cluster's endpoints, one route table, one
 * certificate's files). */
struct tr_config_patch {
    const char *section; /* "tls", "listeners", "route_tables" or "clusters" */
    const char *name;    /* the object's name */
    const char *field;   /* NULL: the whole object; else one key of it, e.g. "endpoints" */
    const char *yaml;    /* the new value in the file's syntax (YAML or JSON); for a whole
                          * object a mapping whose name is `name`. NULL: remove the object */
    size_t len;
};

/* Load base (the text the running configuration was loaded from, named
 * name) with the patches applied in order, as one configuration, through
 * exactly the checks a file goes through: a patched model can never be one
 * that `trellis proxy --check` would refuse. A patch that names no existing
 * object adds it (whole objects) or fails (fields). Errors inside a patch's
 * text name the field path without a line (the line would be the patch's,
 * not the file's). Base and patches are untrusted input like any file. */
struct tr_config *tr_config_load_patched(const char *base, size_t base_len, const char *name,
                                         const struct tr_config_patch *patches, size_t n,
                                         char **err);

/* An empty config in its own arena (cfg->arena) with the top-level defaults
 * (limits, admin, drain timeout, log level) set, for building a model in
 * code; name is used as the file name in errors. Objects are added by
 * allocating arrays from cfg->arena; tr_config_free() frees everything.
 * NULL when out of memory. */
struct tr_config *tr_config_new(const char *name);

/* Reset an object to the format's defaults (what a file that omits every
 * optional field gets), for builders. */
void tr_cfg_tls_defaults(struct tr_tls_cfg *t);
void tr_cfg_listener_defaults(struct tr_listener_cfg *l);
void tr_cfg_route_defaults(struct tr_route_cfg *r);
void tr_cfg_cluster_defaults(struct tr_cluster_cfg *c);
void tr_cfg_endpoint_defaults(struct tr_endpoint_cfg *e);
/* A route's redirect and CORS policy (allocated by the builder from
 * cfg->arena; a fault has no defaults: zero it and set delay, abort). */
void tr_cfg_redirect_defaults(struct tr_redirect_cfg *r);
void tr_cfg_cors_defaults(struct tr_cors_cfg *c);
void tr_cfg_original_dst_defaults(struct tr_original_dst_cfg *o);

/* Check every invariant of cfg, however it was built: each field's type,
 * range and syntax (as the loader checks them), unique names per kind,
 * references by name (listener -> TLS context, route table, tcp cluster;
 * route -> clusters; cluster -> TLS context), weights, mutually exclusive
 * fields, regexes, addresses. On success it fills what the runtime uses:
 * the index fields from the names, total weights, default names of unnamed
 * virtual hosts ("vhost-N"), routes ("route-N") and endpoints (the
 * address), default HTTP/2 stream cap, address texts; so cfg needs an arena
 * (tr_config_new). The loader runs it; a compiler must run it before
 * handing a model to the proxy. Returns 0, or -1 with *err set to a
 * malloc'd message (caller frees; err may be NULL). A validated model
 * validates again (edits re-run it). */
int tr_config_validate(struct tr_config *cfg, char **err);

/* Would tr_config_validate take this route rewrite.regex and substitution?
 * false with why set if not (for compilers, to report at their own field). */
bool tr_cfg_regex_rewrite_ok(const char *pattern, const char *substitution, char *why, size_t size);

/* Free a config and everything it owns. NULL is fine. */
void tr_config_free(struct tr_config *cfg);

/* Format "FILE:LINE:COL: PATH: " for loc into out (without a line,
 * "FILE: PATH: "; with an origin, "KIND NS/NAME: PATH: " after the file
 * position if there is one); for callers that report errors about an
 * already-loaded object (e.g. a certificate that fails to parse). Returns the
 * number of bytes written (as snprintf). */
int tr_cfg_loc_format(const struct tr_cfg_loc *loc, char *out, size_t size);

/* Set *err (malloc'd; any previous message is freed) to "FILE:LINE:COL:
 * PATH: " for loc followed by the formatted message. For every stage that
 * reports an error about a configured object. NULL err: nothing. */
void tr_cfg_errorf(char **err, const struct tr_cfg_loc *loc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#endif
