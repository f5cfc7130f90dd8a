/* config/values.c: scalar values.
 *
 * Parsers take a tree node and fail at it with the current field path; the
 * pure checks (cfg_check_*) take a string and explain a refusal in a buffer,
 * so the loader (at the node) and validate (at a built object) share them.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "codec/h1/h1.h"
#include "config/internal.h"
#include "config/load.h"
#include "core/arena.h"
#include "core/authz_syntax.h"
#include "filter/jwt.h"

/* ------------------------------------------------------------- parsers */

/* A string: any non-null scalar. Control characters other than tab (which
 * YAML escapes such as "\r\n" can produce) are refused unless allow_ctl:
 * these values end up in headers and logs. */
bool cfg_text_of(struct ld *ld, const struct cnode *n, size_t maxlen, bool allow_ctl,
                 const char **out)
{
    char b[96];
    if (n->kind != CN_SCALAR || cfg_is_null(n))
        return cfg_fail(ld, n, "expected a string, got %s", cfg_describe(n, b, sizeof(b)));
    if (memchr(n->s, '\0', n->len) != NULL)
        return cfg_fail(ld, n, "string contains a NUL byte");
    for (size_t i = 0; !allow_ctl && i < n->len; i++) {
        unsigned char c = (unsigned char)n->s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return cfg_fail(ld, n, "string contains control character 0x%02x", c);
    }
    if (n->len > maxlen)
        return cfg_fail(ld, n, "string is %zu bytes long; the limit is %zu", n->len, maxlen);
    char *s = tr_arena_strndup(ld->a, n->s, n->len);
    if (s == NULL)
        return cfg_oom(ld);
    *out = s;
    return true;
}

static bool str_of(struct ld *ld, const struct cnode *n, size_t maxlen, const char **out)
{
    return cfg_text_of(ld, n, maxlen, false, out);
}

bool cfg_nonempty_of(struct ld *ld, const struct cnode *n, size_t maxlen, const char **out)
{
    if (!str_of(ld, n, maxlen, out))
        return false;
    if ((*out)[0] == '\0')
        return cfg_fail(ld, n, "must not be empty");
    return true;
}

/* Names: non-empty, printable, no spaces (they show up in logs and metrics). */
bool cfg_name_of(struct ld *ld, const struct cnode *n, const char **out)
{
    if (!cfg_nonempty_of(ld, n, CFG_MAX_NAME, out))
        return false;
    for (const unsigned char *p = (const unsigned char *)*out; *p != '\0'; p++) {
        if (*p <= 0x20 || *p == 0x7f) {
            char b[96];
            return cfg_fail(ld, n,
                            "invalid name %s: whitespace and control characters are not allowed",
                            cfg_show(b, sizeof(b), n->s, n->len, true));
        }
    }
    return true;
}

bool cfg_bool_of(struct ld *ld, const struct cnode *n, bool *out)
{
    if (n->kind == CN_SCALAR && n->plain) {
        static const char *const t[] = {"true", "True", "TRUE"};
        static const char *const f[] = {"false", "False", "FALSE"};
        for (size_t i = 0; i < 3; i++) {
            if (strcmp(n->s, t[i]) == 0) {
                *out = true;
                return true;
            }
            if (strcmp(n->s, f[i]) == 0) {
                *out = false;
                return true;
            }
        }
    }
    char b[96];
    return cfg_fail(ld, n, "expected true or false, got %s", cfg_describe(n, b, sizeof(b)));
}

bool cfg_u32_of(struct ld *ld, const struct cnode *n, uint32_t min, uint32_t max, uint32_t *out)
{
    char b[96];
    const char *s = n->s;
    if (n->kind != CN_SCALAR || !n->plain || cfg_is_null(n))
        return cfg_fail(ld, n, "expected an integer, got %s", cfg_describe(n, b, sizeof(b)));
    bool neg = false;
    if (*s == '+' || *s == '-')
        neg = *s++ == '-';
    if (*s == '\0' || strspn(s, "0123456789") != strlen(s) ||
        (size_t)(s - n->s) + strlen(s) != n->len)
        return cfg_fail(ld, n, "expected an integer, got %s", cfg_describe(n, b, sizeof(b)));
    uint64_t v = 0;
    bool big = false;
    for (; *s != '\0'; s++) {
        v = v * 10 + (uint64_t)(*s - '0');
        if (v > UINT32_MAX) {
            big = true;
            break;
        }
    }
    if (neg && v != 0)
        big = true;
    if (big || v < min || v > max)
        return cfg_fail(ld, n, "must be between %u and %u, got %s", min, max,
                        cfg_show(b, sizeof(b), n->s, n->len, false));
    *out = (uint32_t)v;
    return true;
}

/* Durations as in Go / protobuf JSON: "250us", "100ms", "1.5s", "5m", "1h",
 * or a sum like "1m30s"; "0" alone is zero. Sub-millisecond values round up
 * so a tiny timeout never becomes 0 (which means "none" for some fields). */
bool cfg_duration_parse(const char *s, uint64_t *out_us)
{
    static const struct {
        const char *name;
        uint64_t us;
    } units[] = {
        {"us", 1}, {"ms", 1000}, {"s", 1000000}, {"m", 60000000}, {"h", 3600000000ull},
    };
    uint64_t total = 0;
    if (strcmp(s, "0") == 0) {
        *out_us = 0;
        return true;
    }
    if (*s == '\0')
        return false;
    while (*s != '\0') {
        uint64_t ip = 0, frac = 0, scale = 1;
        size_t nd = 0;
        while (*s >= '0' && *s <= '9') {
            if (ip > 100000000000ull)
                return false;
            ip = ip * 10 + (uint64_t)(*s++ - '0');
            nd++;
        }
        if (*s == '.') {
            s++;
            while (*s >= '0' && *s <= '9') {
                if (scale < 1000000000ull) {
                    frac = frac * 10 + (uint64_t)(*s - '0');
                    scale *= 10;
                }
                s++;
                nd++;
            }
        }
        if (nd == 0)
            return false;
        size_t ulen = strspn(s, "abcdefghijklmnopqrstuvwxyz");
        size_t u;
        for (u = 0; u < sizeof(units) / sizeof(units[0]); u++) {
            if (strlen(units[u].name) == ulen && strncmp(s, units[u].name, ulen) == 0)
                break;
        }
        if (u == sizeof(units) / sizeof(units[0]))
            return false;
        s += ulen;
        /* ip <= 1e11 and us <= 3.6e9 keep this product below 2^64. */
        uint64_t part = ip * units[u].us + frac * units[u].us / scale;
        if (ip > UINT64_MAX / units[u].us || total > UINT64_MAX - part)
            return false;
        total += part;
    }
    *out_us = total;
    return true;
}

bool cfg_duration_of(struct ld *ld, const struct cnode *n, uint32_t min_ms, uint32_t max_ms,
                     uint32_t *out)
{
    char b[96];
    uint64_t us;
    if (n->kind != CN_SCALAR || cfg_is_null(n) || memchr(n->s, '\0', n->len) != NULL ||
        !cfg_duration_parse(n->s, &us))
        return cfg_fail(ld, n, "expected a duration such as \"100ms\", \"1.5s\", \"5m\", got %s",
                        cfg_describe(n, b, sizeof(b)));
    uint64_t ms = us / 1000 + (us % 1000 != 0);
    if (ms < min_ms || ms > max_ms)
        return cfg_fail(ld, n, "must be between %ums and %ums, got %s", min_ms, max_ms,
                        cfg_show(b, sizeof(b), n->s, n->len, true));
    *out = (uint32_t)ms;
    return true;
}

bool cfg_enum_of(struct ld *ld, const struct cnode *n, const char *const *names, size_t count,
                 int *out)
{
    if (n->kind == CN_SCALAR && !cfg_is_null(n)) {
        for (size_t i = 0; i < count; i++) {
            if (strlen(names[i]) == n->len && memcmp(names[i], n->s, n->len) == 0) {
                *out = (int)i;
                return true;
            }
        }
    }
    char list[256];
    size_t o = 0;
    list[0] = '\0';
    for (size_t i = 0; i < count && o < sizeof(list); i++)
        o += (size_t)snprintf(list + o, sizeof(list) - o, "%s%s", i != 0 ? ", " : "", names[i]);
    char b[96];
    return cfg_fail(ld, n, "expected one of %s, got %s", list, cfg_describe(n, b, sizeof(b)));
}

bool cfg_addr_parse(const char *s, bool port0_ok, struct tr_cfg_addr *out, char *why, size_t size)
{
    char b[96], host[64];
    const char *port;
    size_t hlen;
    bool v6 = s[0] == '[';
    if (v6) {
        const char *close = strchr(s, ']');
        if (close == NULL || close[1] != ':') {
            snprintf(why, size, "expected [IPv6]:PORT, got %s",
                     cfg_show(b, sizeof(b), s, strlen(s), true));
            return false;
        }
        hlen = (size_t)(close - s - 1);
        memcpy(host, s + 1, hlen < sizeof(host) ? hlen : 0);
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (colon == NULL) {
            snprintf(why, size, "expected IP:PORT, got %s (missing port)",
                     cfg_show(b, sizeof(b), s, strlen(s), true));
            return false;
        }
        if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
            snprintf(why, size, "IPv6 addresses must be in brackets, e.g. [::1]:8080; got %s",
                     cfg_show(b, sizeof(b), s, strlen(s), true));
            return false;
        }
        hlen = (size_t)(colon - s);
        memcpy(host, s, hlen < sizeof(host) ? hlen : 0);
        port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof(host)) {
        snprintf(why, size, "invalid IP address in %s", cfg_show(b, sizeof(b), s, strlen(s), true));
        return false;
    }
    host[hlen] = '\0';

    size_t plen = strlen(port);
    unsigned long pnum = 0;
    if (plen == 0 || plen > 5 || strspn(port, "0123456789") != plen) {
        snprintf(why, size, "invalid port in %s", cfg_show(b, sizeof(b), s, strlen(s), true));
        return false;
    }
    pnum = strtoul(port, NULL, 10);
    if (pnum > 65535 || (pnum == 0 && !port0_ok)) {
        snprintf(why, size, "port must be between %d and 65535 in %s", port0_ok ? 0 : 1,
                 cfg_show(b, sizeof(b), s, strlen(s), true));
        return false;
    }

    memset(&out->ss, 0, sizeof(out->ss));
    if (v6) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&out->ss;
        if (inet_pton(AF_INET6, host, &sin6->sin6_addr) != 1) {
            snprintf(why, size, "invalid IPv6 address %s",
                     cfg_show(b, sizeof(b), host, hlen, true));
            return false;
        }
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons((uint16_t)pnum);
        out->len = sizeof(*sin6);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&out->ss;
        if (inet_pton(AF_INET, host, &sin->sin_addr) != 1) {
            if (strspn(host, "0123456789.") == hlen)
                snprintf(why, size, "invalid IPv4 address %s",
                         cfg_show(b, sizeof(b), host, hlen, true));
            else
                snprintf(why, size, "expected an IP address, got %s (hostnames are not resolved)",
                         cfg_show(b, sizeof(b), host, hlen, true));
            return false;
        }
        sin->sin_family = AF_INET;
        sin->sin_port = htons((uint16_t)pnum);
        out->len = sizeof(*sin);
    }
    return true;
}

/* Hostnames are refused: the proxy never resolves names on its own. */
bool cfg_addr_of(struct ld *ld, const struct cnode *n, bool port0_ok, struct tr_cfg_addr *out)
{
    const char *s;
    char why[CFG_WHY_MAX];
    if (!cfg_nonempty_of(ld, n, 128, &s))
        return false;
    if (!cfg_addr_parse(s, port0_ok, out, why, sizeof(why)))
        return cfg_fail(ld, n, "%s", why);
    out->text = s;
    return true;
}

/* Percentages as Istio writes them (Percent.value, a double 0-100), read
 * exactly: at most 4 decimals, which is the per-million resolution Envoy
 * gets; finer values are refused rather than rounded. */
bool cfg_percent_parse(const char *s, uint32_t *per_million)
{
    uint32_t ip = 0, frac = 0;
    size_t nd = 0, nf = 0;
    for (; *s >= '0' && *s <= '9'; s++, nd++) {
        if (ip > 100)
            return false;
        ip = ip * 10 + (uint32_t)(*s - '0');
    }
    if (*s == '.') {
        for (s++; *s >= '0' && *s <= '9'; s++, nf++) {
            if (nf == 4)
                return false;
            frac = frac * 10 + (uint32_t)(*s - '0');
        }
        if (nf == 0)
            return false;
    }
    if (nd == 0 || *s != '\0')
        return false;
    for (size_t i = nf; i < 4; i++)
        frac *= 10;
    uint32_t v = ip * 10000 + frac;
    if (ip > 100 || v > TR_PER_MILLION)
        return false;
    *per_million = v;
    return true;
}

bool cfg_percent_of(struct ld *ld, const struct cnode *n, uint32_t *per_million)
{
    char b[96];
    if (n->kind != CN_SCALAR || !n->plain || cfg_is_null(n) || memchr(n->s, '\0', n->len) != NULL ||
        !cfg_percent_parse(n->s, per_million))
        return cfg_fail(ld, n,
                        "expected a percentage from 0 to 100 with at most 4 decimals (the "
                        "resolution is 0.0001%%), got %s",
                        cfg_describe(n, b, sizeof(b)));
    return true;
}

/* ---- DNS names (cluster endpoints given by name) ---- */

/* RFC 1123 host name of len bytes: labels of letters, digits and '-' (not
 * first or last), 1-63 bytes each, at most 253 bytes, an optional final dot
 * (an absolute name: no search domains). A last label of digits only is
 * refused, so a mistyped IPv4 address is never sent to DNS as a name. */
static bool dns_name_ok(const char *s, size_t len, char *why, size_t size)
{
    char b[96];
    if (len > 0 && s[len - 1] == '.')
        len--;
    if (len == 0 || len > 253) {
        snprintf(why, size, "a DNS name is 1 to 253 bytes, got %zu: %s", len,
                 cfg_show(b, sizeof(b), s, len, true));
        return false;
    }
    size_t label = 0;
    bool digits_only = true;
    for (size_t i = 0; i <= len; i++) {
        char c = i < len ? s[i] : '.';
        if (c == '.') {
            if (label == 0 || label > 63 || s[i - 1] == '-' || s[i - label] == '-') {
                snprintf(why, size,
                         "invalid DNS name %s: labels are 1 to 63 letters, digits or '-', "
                         "not starting or ending with '-'",
                         cfg_show(b, sizeof(b), s, len, true));
                return false;
            }
            if (i < len) {
                label = 0;
                digits_only = true;
            }
            continue;
        }
        bool digit = c >= '0' && c <= '9';
        if (!digit && !(c >= 'a' && c <= 'z') && !(c >= 'A' && c <= 'Z') && c != '-') {
            snprintf(why, size,
                     "invalid DNS name %s: character 0x%02x is not a letter, digit, "
                     "'-' or '.'",
                     cfg_show(b, sizeof(b), s, len, true), (unsigned char)c);
            return false;
        }
        digits_only &= digit;
        label++;
    }
    if (digits_only) {
        snprintf(why, size, "invalid DNS name %s: the last label is all digits",
                 cfg_show(b, sizeof(b), s, len, true));
        return false;
    }
    return true;
}

bool cfg_check_dns_name(const char *s, char *why, size_t size)
{
    return dns_name_ok(s, strlen(s), why, size);
}

/* "IP:PORT" into addr (*host_len 0), or "NAME:PORT" with a DNS name: the
 * name is s[0, *host_len) and addr is left alone. */
bool cfg_endpoint_addr_parse(const char *s, struct tr_cfg_addr *addr, size_t *host_len,
                             uint16_t *port, char *why, size_t size)
{
    char b[96];
    *host_len = 0;
    const char *colon = strrchr(s, ':');
    if (colon == NULL) {
        snprintf(why, size, "expected IP:PORT or NAME:PORT, got %s (missing port)",
                 cfg_show(b, sizeof(b), s, strlen(s), true));
        return false;
    }
    /* IPv6 (bracketed, or an unbracketed one the address parser explains)
     * and anything of digits and dots are addresses, never names. */
    if (s[0] == '[' || memchr(s, ':', (size_t)(colon - s)) != NULL ||
        strspn(s, "0123456789.") == (size_t)(colon - s)) {
        if (!cfg_addr_parse(s, false, addr, why, size))
            return false;
        *port = ntohs(addr->ss.ss_family == AF_INET6
                          ? ((const struct sockaddr_in6 *)&addr->ss)->sin6_port
                          : ((const struct sockaddr_in *)&addr->ss)->sin_port);
        return true;
    }
    const char *p = colon + 1;
    size_t plen = strlen(p);
    if (plen == 0 || plen > 5 || strspn(p, "0123456789") != plen || strtoul(p, NULL, 10) == 0 ||
        strtoul(p, NULL, 10) > 65535) {
        snprintf(why, size, "port must be between 1 and 65535 in %s",
                 cfg_show(b, sizeof(b), s, strlen(s), true));
        return false;
    }
    if (!dns_name_ok(s, (size_t)(colon - s), why, size))
        return false;
    *host_len = (size_t)(colon - s);
    *port = (uint16_t)strtoul(p, NULL, 10);
    return true;
}

/* resolver.servers: "IP:PORT" or "[IPv6]:PORT". */
bool cfg_check_dns_server(const char *s, char *why, size_t size)
{
    struct tr_cfg_addr a;
    return cfg_addr_parse(s, false, &a, why, size);
}

bool cfg_addr_is_loopback(const struct tr_cfg_addr *a)
{
    if (a->ss.ss_family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&a->ss;
        return (ntohl(sin->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&a->ss;
    return a->ss.ss_family == AF_INET6 && IN6_IS_ADDR_LOOPBACK(&sin6->sin6_addr);
}

/* -------------------------------------------------------- pure checks */

#define WHY(...) (snprintf(why, size, __VA_ARGS__), false)
#define Q(s)     cfg_show(b, sizeof(b), (s), strlen(s), true)

/* What the walker checks of every string, for values of a built model. */
bool cfg_check_text(const char *s, size_t maxlen, bool allow_ctl, char *why, size_t size)
{
    size_t len = strlen(s);
    for (size_t i = 0; !allow_ctl && i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return WHY("string contains control character 0x%02x", c);
    }
    if (len > maxlen)
        return WHY("string is %zu bytes long; the limit is %zu", len, maxlen);
    return true;
}

/* Names: non-empty, printable, no spaces (they show up in logs and metrics). */
bool cfg_check_name(const char *s, char *why, size_t size)
{
    char b[96];
    if (s[0] == '\0')
        return WHY("must not be empty");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p == 0x7f)
            return WHY("invalid name %s: whitespace and control characters are not allowed", Q(s));
    }
    return true;
}

static bool is_tchar(unsigned char c)
{
    /* RFC 9110 token characters. */
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

bool cfg_check_token(const char *s, char *why, size_t size)
{
    char b[96];
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (!is_tchar(*p))
            return WHY("%s is not a valid HTTP token", Q(s));
    }
    return true;
}

bool cfg_check_spiffe(const char *s, char *why, size_t size)
{
    char b[96];
    if (strncmp(s, "spiffe://", 9) == 0 && s[9] != '\0')
        return true;
    return WHY("expected a SPIFFE ID (spiffe://TRUST_DOMAIN/PATH), got %s", Q(s));
}

/* Principals: "*" (any authenticated peer) or a SPIFFE ID, optionally
 * ending in "*" for a prefix match. */
bool cfg_check_principal(const char *s, char *why, size_t size)
{
    const char *star = strchr(s, '*');
    char b[96];
    if (strcmp(s, "*") == 0)
        return true;
    if (star != NULL && star[1] != '\0')
        return WHY("\"*\" is only allowed at the end of a principal, got %s", Q(s));
    return cfg_check_spiffe(s, why, size);
}

/* Authorization paths: "*", or "/..." with an optional trailing "*". */
bool cfg_check_authz_path(const char *s, char *why, size_t size)
{
    const char *star = strchr(s, '*');
    char b[96];
    if (strcmp(s, "*") == 0)
        return true;
    if (s[0] != '/')
        return WHY("paths must start with \"/\", got %s", Q(s));
    if (star != NULL && star[1] != '\0')
        return WHY("\"*\" is only allowed at the end of a path, got %s", Q(s));
    return true;
}

/* Policy string patterns: "*", "abc*", "*abc" or exact, printable. */
bool cfg_check_az_pattern(const char *s, char *why, size_t size)
{
    char b[96];
    size_t len = strlen(s);
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p < 0x20 || *p == 0x7f)
            return WHY("control characters are not allowed, got %s", Q(s));
    }
    const char *star = strchr(s, '*');
    if (star != NULL && len > 1 &&
        (strchr(star + 1, '*') != NULL || (star != s && star != s + len - 1)))
        return WHY("\"*\" is only allowed once, at the start or the end, got %s", Q(s));
    return true;
}

bool cfg_check_header_pattern(const char *s, char *why, size_t size)
{
    return cfg_check_token(s, why, size) && cfg_check_az_pattern(s, why, size);
}

bool cfg_check_ext_authz_prefix(const char *s, char *why, size_t size)
{
    char b[96];
    if (s[0] != '/')
        return WHY("a path prefix starts with \"/\", got %s", Q(s));
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '?' || *p == '#')
            return WHY("a path prefix is printable, without spaces, \"?\" or \"#\", got %s", Q(s));
    }
    return true;
}

bool cfg_check_az_port(const char *s, char *why, size_t size)
{
    char b[96];
    unsigned long v = 0;
    size_t len = strlen(s);
    if (len == 0 || len > 5 || strspn(s, "0123456789") != len || (v = strtoul(s, NULL, 10)) == 0 ||
        v > 65535)
        return WHY("a port is a number 1-65535, got %s", Q(s));
    return true;
}

bool cfg_check_az_path(const char *s, char *why, size_t size)
{
    return tr_az_path_check(s, why, size);
}

bool cfg_check_az_key(const char *s, char *why, size_t size)
{
    tr_str arg[TR_AZ_MAX_CLAIM_DEPTH];
    size_t n;
    return tr_az_key_parse(s, arg, &n, why, size) != TR_AZK_INVALID;
}

/* Policy names as decisions print them: "NAME" or "NAMESPACE/NAME". */
bool cfg_check_az_policy_name(const char *s, char *why, size_t size)
{
    char b[96];
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '"' || *p == '\\')
            return WHY("a policy name is printable ASCII without spaces or quotes, got %s", Q(s));
    }
    return true;
}

bool cfg_check_cidr(const char *s, char *why, size_t size)
{
    struct tr_cidr c;
    return tr_cidr_parse(s, &c, why, size);
}

/* Virtual host domains: "*", "*suffix", "prefix*" or exact, optional
 * ":port". Lower case is the walker's job (CF_LOWER). */
bool cfg_check_domain(const char *s, char *why, size_t size)
{
    char b[96];
    size_t len = strlen(s);
    const char *star = strchr(s, '*');
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '/')
            return WHY("invalid domain %s", Q(s));
    }
    if (star != NULL && strchr(star + 1, '*') != NULL)
        return WHY("a domain may hold only one \"*\", got %s", Q(s));
    /* The router's rule: '*' first (suffix match) or last (prefix match),
     * before any ":port". */
    const char *colon = strrchr(s, ':');
    size_t hlen = colon != NULL && colon > s && colon[-1] != ']' && strchr(s, '[') == NULL
                      ? (size_t)(colon - s)
                      : len;
    if (star != NULL && star != s && star != s + hlen - 1)
        return WHY("\"*\" must be the first or last character of a domain, got %s", Q(s));
    return true;
}

bool cfg_check_trust_domain(const char *s, char *why, size_t size)
{
    char b[96];
    if (strpbrk(s, "/: \t") != NULL)
        return WHY("expected a trust domain name such as cluster.local, got %s", Q(s));
    return true;
}

/* Host rewrites: a host, optionally with a port. */
bool cfg_check_host(const char *s, char *why, size_t size)
{
    char b[96];
    if (strpbrk(s, " \t/") != NULL)
        return WHY("expected a host name, got %s", Q(s));
    return true;
}

/* SNI: a host name, no port. */
bool cfg_check_sni(const char *s, char *why, size_t size)
{
    char b[96];
    if (strpbrk(s, " \t/:") != NULL)
        return WHY("expected a host name, got %s", Q(s));
    return true;
}

bool cfg_check_server_name(const char *s, char *why, size_t size)
{
    char b[96];
    const char *host = strncmp(s, "*.", 2) == 0 ? s + 2 : s;
    if (*host == '\0' || strpbrk(host, " \t/:*") != NULL)
        return WHY("expected a host name or *.domain, got %s", Q(s));
    return true;
}

bool cfg_check_subject_alt_name(const char *s, char *why, size_t size)
{
    char b[96];
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        if (*p <= ' ' || *p >= 0x7f)
            return WHY("expected a DNS name or a URI, got %s", Q(s));
    return true;
}

bool cfg_check_pem(const char *s, char *why, size_t size)
{
    if (strstr(s, "-----BEGIN ") == NULL)
        return WHY("expected PEM text (a -----BEGIN ...----- block)");
    return true;
}

bool cfg_check_regex(const char *re, bool caseless, char *why, size_t size)
{
    int code = 0;
    PCRE2_SIZE off = 0;
    /* Same options as the router (full match, byte mode), so a pattern
     * accepted here compiles there. */
    uint32_t opts = PCRE2_ANCHORED | PCRE2_ENDANCHORED | (caseless ? PCRE2_CASELESS : 0);
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)re, strlen(re), opts, &code, &off, NULL);
    if (c != NULL) {
        pcre2_code_free(c);
        return true;
    }
    PCRE2_UCHAR msg[256];
    if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
        snprintf((char *)msg, sizeof(msg), "error %d", code);
    return WHY("invalid regex at offset %zu: %s", (size_t)off, (const char *)msg);
}

static void *arena_malloc(PCRE2_SIZE size, void *arena)
{
    return tr_arena_alloc(arena, size);
}

static void arena_free(void *p, void *arena)
{
    (void)p; /* the arena frees it with the model */
    (void)arena;
}

const void *cfg_regex_rewrite_compile(struct tr_arena *a, const char *pattern, const char *sub,
                                      const char **pcre_sub, char *why, size_t size)
{
    pcre2_general_context *g = pcre2_general_context_create(arena_malloc, arena_free, a);
    pcre2_compile_context *cc = g != NULL ? pcre2_compile_context_create(g) : NULL;
    if (cc == NULL) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    int code = 0;
    PCRE2_SIZE off = 0;
    /* Not JIT-compiled: JIT memory lives outside the arena, and a rewrite
     * runs once per request of its route. */
    pcre2_code *c = pcre2_compile((PCRE2_SPTR)pattern, strlen(pattern), 0, &code, &off, cc);
    if (c == NULL) {
        PCRE2_UCHAR msg[256];
        if (pcre2_get_error_message(code, msg, sizeof(msg)) < 0)
            snprintf((char *)msg, sizeof(msg), "error %d", code);
        snprintf(why, size, "invalid regex at offset %zu: %s", (size_t)off, (const char *)msg);
        return NULL;
    }
    uint32_t groups = 0;
    pcre2_pattern_info(c, PCRE2_INFO_CAPTURECOUNT, &groups);
    /* At most 4 bytes out per byte in ("$" -> "$$", "\N" -> "${N}"). */
    size_t n = strlen(sub);
    char *out = tr_arena_alloc(a, 2 * n + 1), *o = out;
    if (out == NULL) {
        snprintf(why, size, "out of memory");
        return NULL;
    }
    for (const char *p = sub; *p != '\0'; p++) {
        if (*p == '$') {
            *o++ = '$';
            *o++ = '$';
        } else if (*p != '\\') {
            *o++ = *p;
        } else if (p[1] == '\\') {
            *o++ = *++p;
        } else if (p[1] >= '0' && p[1] <= '9') {
            unsigned gi = (unsigned)(*++p - '0');
            if (gi > groups) {
                snprintf(why, size, "\\%u: the pattern has %u capture group%s", gi, groups,
                         groups == 1 ? "" : "s");
                return NULL;
            }
            *o++ = '$';
            *o++ = '{';
            *o++ = (char)('0' + gi);
            *o++ = '}';
        } else {
            snprintf(why, size,
                     "a backslash must be followed by a digit (a capture group) or another "
                     "backslash");
            return NULL;
        }
    }
    *o = '\0';
    *pcre_sub = out;
    return c;
}

bool tr_cfg_regex_rewrite_ok(const char *pattern, const char *substitution, char *why, size_t size)
{
    struct tr_arena *a = tr_arena_new(4096);
    const char *pcre_sub;
    bool ok = a != NULL &&
              cfg_regex_rewrite_compile(a, pattern, substitution, &pcre_sub, why, size) != NULL;
    if (a == NULL)
        snprintf(why, size, "out of memory");
    tr_arena_free(a);
    return ok;
}

bool cfg_check_uri_host(const char *s, char *why, size_t size)
{
    char b[96];
    size_t len = strlen(s);
    bool v6 = s[0] == '[';
    bool port = v6 ? s[len - 1] != ']' : strchr(s, ':') != NULL;
    if (!tr_h1_is_authority(tr_str_from(s, len), 0))
        return WHY("expected a host name or IP address, got %s", Q(s));
    if (port)
        return WHY("expected a host without a port (set port), got %s", Q(s));
    return true;
}

bool cfg_check_uri_path(const char *s, char *why, size_t size)
{
    char b[96];
    if (s[0] != '/')
        return WHY("must start with \"/\"");
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '#')
            return WHY("%s is not a URI path: byte 0x%02x is not allowed (spaces, controls, "
                       "\"#\" and non-ASCII bytes must be percent-encoded)",
                       Q(s), *p);
    }
    return true;
}

/* ------------------------------ request matching and header edits */

/* Header matches: a token, or one of the pseudo-headers a route can match
 * (the request's authority, scheme and method, whatever the protocol). */
bool cfg_check_header_match_name(const char *s, char *why, size_t size)
{
    char b[96];
    if (s[0] != ':')
        return cfg_check_token(s, why, size);
    if (strcasecmp(s, ":authority") == 0 || strcasecmp(s, ":scheme") == 0 ||
        strcasecmp(s, ":method") == 0)
        return true;
    return WHY("pseudo-header %s cannot be matched; the ones that can are :authority, :scheme and "
               ":method (match.path matches the path)",
               Q(s));
}

/* Query names and values are matched as the request sends them (never
 * percent-decoded), so a byte a request-target cannot carry there would
 * never match: refuse it with the way to write it. */
static bool query_text(const char *s, const char *what, const char *seps, char *why, size_t size)
{
    char b[96];
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++) {
        if (*p <= 0x20 || *p >= 0x7f || *p == '#')
            return WHY("%s %s holds a byte a request's query cannot carry (0x%02x); query "
                       "parameters are matched as sent, not percent-decoded: write it "
                       "percent-encoded (%%%02X)",
                       what, Q(s), *p, *p);
        if (strchr(seps, *p) != NULL)
            return WHY("%s %s holds '%c', which separates query parameters%s; write it "
                       "percent-encoded (%%%02X)",
                       what, Q(s), *p, *p == '=' ? " from their values" : "", *p);
    }
    return true;
}

bool cfg_check_query_name(const char *s, char *why, size_t size)
{
    return query_text(s, "name", "&=", why, size);
}

bool cfg_check_query_value(const char *s, char *why, size_t size)
{
    return query_text(s, "value", "&", why, size);
}

/* Header edits may not touch what frames a message, what a hop owns or what
 * the mesh uses internally: a route could otherwise smuggle a request or
 * break the connection. */
bool cfg_check_header_edit_name(const char *s, char *why, size_t size)
{
    static const char *const hop_by_hop[] = {
        "connection", "keep-alive", "proxy-connection", "transfer-encoding",
        "upgrade",    "te",         "trailer",          "http2-settings",
    };
    char b[96];
    if (s[0] == ':')
        return WHY("pseudo-header %s cannot be edited (rewrite changes the path and the "
                   "authority)",
                   Q(s));
    if (!cfg_check_token(s, why, size))
        return false;
    for (size_t i = 0; i < sizeof(hop_by_hop) / sizeof(hop_by_hop[0]); i++) {
        if (strcasecmp(s, hop_by_hop[i]) == 0)
            return WHY("%s is a hop-by-hop header: it belongs to one connection and cannot be "
                       "edited",
                       Q(s));
    }
    if (strcasecmp(s, "content-length") == 0)
        return WHY("\"content-length\" frames the message: the proxy sets it and it cannot be "
                   "edited");
    if (strcasecmp(s, "host") == 0)
        return WHY("\"host\" cannot be edited; use rewrite.host");
    if (strncasecmp(s, "trellis-", 8) == 0)
        return WHY("%s: trellis-* headers are internal to the mesh and cannot be edited", Q(s));
    return true;
}

/* An inline JSON Web Key Set: read and every key built now, as the proxy
 * will (filter/jwt.h), so a bad key is an error at its field. */
bool cfg_check_jwks(const char *s, char *why, size_t size)
{
    char *err = NULL;
    struct tr_jwks *k = tr_jwks_parse(s, strlen(s), &err);
    if (k == NULL) {
        snprintf(why, size, "not a usable JSON Web Key Set: %s", err != NULL ? err : "?");
        free(err);
        return false;
    }
    tr_jwks_free(k);
    return true;
}

/* A field value an HTTP/1.1 or HTTP/2 peer takes as written: no control
 * bytes but tab, and no whitespace at either end (parsers strip it). */
bool cfg_check_header_value(const char *s, char *why, size_t size)
{
    size_t len = strlen(s);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if ((c < 0x20 && c != '\t') || c == 0x7f)
            return WHY("a header value must not hold control character 0x%02x", c);
    }
    if (len > 0 && (s[0] == ' ' || s[0] == '\t' || s[len - 1] == ' ' || s[len - 1] == '\t'))
        return WHY("a header value must not begin or end with whitespace (parsers strip it)");
    return true;
}

void cfg_lower(char *s)
{
    for (; *s != '\0'; s++) {
        if (*s >= 'A' && *s <= 'Z')
            *s = (char)(*s - 'A' + 'a');
    }
}

bool cfg_is_lower(const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s >= 'A' && *s <= 'Z')
            return false;
    }
    return true;
}

/* ---- retries and mirroring ---- */

/* Envoy's HTTP and gRPC retry conditions that the proxy implements. */
static const struct {
    const char *name;
    uint32_t bit;
} retry_conditions[] = {
    {"5xx", TR_RETRY_ON_5XX},
    {"gateway-error", TR_RETRY_ON_GATEWAY_ERROR},
    {"reset", TR_RETRY_ON_RESET},
    {"reset-before-request", TR_RETRY_ON_RESET_BEFORE_REQUEST},
    {"connect-failure", TR_RETRY_ON_CONNECT_FAILURE},
    {"refused-stream", TR_RETRY_ON_REFUSED_STREAM},
    {"retriable-4xx", TR_RETRY_ON_RETRIABLE_4XX},
    {"retriable-status-codes", TR_RETRY_ON_RETRIABLE_STATUS_CODES},
    {"cancelled", TR_RETRY_ON_CANCELLED},
    {"deadline-exceeded", TR_RETRY_ON_DEADLINE_EXCEEDED},
    {"resource-exhausted", TR_RETRY_ON_RESOURCE_EXHAUSTED},
    {"internal", TR_RETRY_ON_INTERNAL},
    {"unavailable", TR_RETRY_ON_UNAVAILABLE},
};

uint32_t cfg_retry_on_bit(const char *s)
{
    for (size_t i = 0; i < sizeof(retry_conditions) / sizeof(retry_conditions[0]); i++) {
        if (strcmp(s, retry_conditions[i].name) == 0)
            return retry_conditions[i].bit;
    }
    return 0;
}

bool cfg_check_retry_on(const char *s, char *why, size_t size)
{
    char b[96];
    if (cfg_retry_on_bit(s) != 0)
        return true;
    /* Envoy conditions that need what the proxy does not have: say so
     * rather than "unknown". */
    if (strcmp(s, "retriable-headers") == 0 || strcmp(s, "envoy-ratelimited") == 0 ||
        strcmp(s, "http3-post-connect-failure") == 0)
        return WHY("%s is not supported (no header matchers, rate limit service or HTTP/3)", Q(s));
    if (s[0] >= '0' && s[0] <= '9')
        return WHY("%s: write status codes in retriable_status_codes (with "
                   "retriable-status-codes here)",
                   Q(s));
    return WHY("unknown retry condition %s (accepted: 5xx, gateway-error, reset, "
               "reset-before-request, connect-failure, refused-stream, retriable-4xx, "
               "retriable-status-codes, cancelled, deadline-exceeded, resource-exhausted, "
               "internal, unavailable)",
               Q(s));
}

bool cfg_check_status_code(const char *s, char *why, size_t size)
{
    char b[96];
    if (strlen(s) != 3 || strspn(s, "0123456789") != 3 || s[0] < '2' || s[0] > '5')
        return WHY("expected an HTTP status code from %u to %u, got %s", TR_RETRY_CODE_MIN,
                   TR_RETRY_CODE_MAX, Q(s));
    return true;
}

/* jwks_uri.url: http[s]://HOST[:PORT]/PATH, printable ASCII without
 * spaces, userinfo or fragment; the proxy sends PATH and Host: HOST[:PORT]
 * as they are. https needs a cluster that originates TLS (validate.c,
 * check_jwt_rules). */
bool cfg_check_jwks_url(const char *s, char *why, size_t size)
{
    char b[96];
    size_t skip = strncmp(s, "https://", 8) == 0 ? 8 : strncmp(s, "http://", 7) == 0 ? 7 : 0;
    if (skip == 0)
        return WHY("%s: not an http:// or https:// URL", Q(s));
    for (const char *p = s; *p != '\0'; p++) {
        if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f || *p == '#')
            return WHY("%s: spaces, control characters, non-ASCII and '#' are not allowed", Q(s));
    }
    const char *host = s + skip, *slash = strchr(host, '/');
    size_t hlen = slash != NULL ? (size_t)(slash - host) : strlen(host);
    if (hlen == 0)
        return WHY("%s: no host", Q(s));
    if (memchr(host, '@', hlen) != NULL)
        return WHY("%s: user information is not allowed", Q(s));
    if (slash == NULL)
        return WHY("%s: no path (e.g. /.well-known/jwks.json)", Q(s));
    return true;
}
