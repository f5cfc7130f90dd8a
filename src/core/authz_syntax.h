/* core/authz_syntax.h: the value syntaxes of authorization policies, shared
 * by the configuration checks (config/values.c) and the evaluator
 * (filter/authz.c) so both read them the same way: CIDR blocks, condition
 * keys ("request.headers[x-id]", "request.auth.claims[groups][0]"), string
 * patterns ("abc", "abc*", "*abc", "*") and path templates ("/a/{*}/b",
 * "/a/{**}"). Pure functions; no allocation. */
#ifndef TR_CORE_AUTHZ_SYNTAX_H
#define TR_CORE_AUTHZ_SYNTAX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/str.h"

/* An IPv4 or IPv6 address; IPv4 is kept as such (family 4), and an
 * IPv4-mapped IPv6 address is read as IPv4. */
struct tr_ip {
    uint8_t family; /* 4 or 6; 0: unknown (matches no block) */
    uint8_t a[16];
};

struct tr_cidr {
    struct tr_ip ip; /* host bits cleared */
    uint8_t bits;    /* prefix length */
};

/* "10.0.0.0/8", "2001:db8::/32", or one address (a full-length block).
 * Host bits set beyond the prefix are refused: "10.0.0.1/8" is a typo more
 * often than a wish. */
bool tr_cidr_parse(const char *s, struct tr_cidr *out, char *why, size_t size);
bool tr_ip_parse(const char *s, struct tr_ip *out);
bool tr_cidr_contains(const struct tr_cidr *c, const struct tr_ip *ip);
/* From a sockaddr (AF_INET / AF_INET6); anything else gives family 0. */
struct sockaddr;
struct tr_ip tr_ip_from_sockaddr(const struct sockaddr *sa, uint16_t *port);

/* Condition keys of `when`. */
enum tr_az_key {
    TR_AZK_INVALID = 0,
    TR_AZK_HEADER,           /* request.headers[NAME] */
    TR_AZK_SOURCE_IP,        /* source.ip */
    TR_AZK_REMOTE_IP,        /* remote.ip */
    TR_AZK_SOURCE_NS,        /* source.namespace */
    TR_AZK_SOURCE_PRINCIPAL, /* source.principal */
    TR_AZK_AUTH_PRINCIPAL,   /* request.auth.principal */
    TR_AZK_AUTH_AUDIENCES,   /* request.auth.audiences */
    TR_AZK_AUTH_PRESENTER,   /* request.auth.presenter */
    TR_AZK_AUTH_CLAIMS,      /* request.auth.claims[a][b]... */
    TR_AZK_DEST_IP,          /* destination.ip */
    TR_AZK_DEST_PORT,        /* destination.port */
    TR_AZK_SNI,              /* connection.sni */
};

#define TR_AZ_MAX_CLAIM_DEPTH 8u

/* Parses key. For HEADER, *arg is the header name; for AUTH_CLAIMS, arg[0..
 * *n_arg) are the nested claim names. Returns TR_AZK_INVALID with why. */
enum tr_az_key tr_az_key_parse(const char *key, tr_str arg[TR_AZ_MAX_CLAIM_DEPTH], size_t *n_arg,
                               char *why, size_t size);
/* Request-only keys: on a TCP connection they are never known. */
bool tr_az_key_is_http(enum tr_az_key k);

/* String patterns: "*" (any non-empty value), "abc*" prefix, "*abc"
 * suffix, else exact. */
enum tr_az_pat_kind { TR_AZP_EXACT = 0, TR_AZP_PREFIX, TR_AZP_SUFFIX, TR_AZP_ANY, TR_AZP_TEMPLATE };
struct tr_az_pat {
    enum tr_az_pat_kind kind;
    tr_str s; /* without the '*'; TEMPLATE: the whole template */
};
/* template: paths with {*} / {**} become TEMPLATE (else the string forms). */
struct tr_az_pat tr_az_pat_make(const char *s, bool template_ok);
bool tr_az_pat_match(const struct tr_az_pat *p, tr_str v, bool caseless);

#define TR_AZ_MAX_TEMPLATE_OPS 5u
/* A path pattern: "*", "/x", "/x*", "*x", or a template whose operators
 * "{*}" (one segment) and "{**}" (the rest, possibly empty; last only) stand
 * as whole segments, at most TR_AZ_MAX_TEMPLATE_OPS of them. */
bool tr_az_path_check(const char *s, char *why, size_t size);
bool tr_az_template_match(tr_str tpl, tr_str path);

#endif
