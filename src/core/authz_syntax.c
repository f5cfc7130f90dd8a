/* core/authz_syntax.c: see authz_syntax.h. */
#include "core/authz_syntax.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#define WHY(...) (snprintf(why, size, __VA_ARGS__), false)

bool tr_ip_parse(const char *s, struct tr_ip *out)
{
    memset(out, 0, sizeof(*out));
    if (inet_pton(AF_INET, s, out->a) == 1) {
        out->family = 4;
        return true;
    }
    if (inet_pton(AF_INET6, s, out->a) == 1) {
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        out->family = 6;
        if (memcmp(out->a, v4mapped, 12) == 0) {
            memmove(out->a, out->a + 12, 4);
            memset(out->a + 4, 0, 12);
            out->family = 4;
        }
        return true;
    }
    return false;
}

bool tr_cidr_parse(const char *s, struct tr_cidr *out, char *why, size_t size)
{
    char buf[64];
    const char *slash = strchr(s, '/');
    size_t alen = slash != NULL ? (size_t)(slash - s) : strlen(s);
    memset(out, 0, sizeof(*out));
    if (alen == 0 || alen >= sizeof(buf))
        return WHY("invalid IP block \"%.64s\"", s);
    memcpy(buf, s, alen);
    buf[alen] = '\0';
    if (!tr_ip_parse(buf, &out->ip))
        return WHY("invalid IP block \"%.64s\"", s);
    unsigned max = out->ip.family == 4 ? 32 : 128, bits = max;
    if (slash != NULL) {
        const char *d = slash + 1;
        if (*d == '\0' || strlen(d) > 3)
            return WHY("invalid prefix length in \"%.64s\"", s);
        bits = 0;
        for (; *d != '\0'; d++) {
            if (*d < '0' || *d > '9')
                return WHY("invalid prefix length in \"%.64s\"", s);
            bits = bits * 10 + (unsigned)(*d - '0');
        }
        if (bits > max || (slash[1] == '0' && slash[2] != '\0'))
            return WHY("invalid prefix length in \"%.64s\"", s);
    }
    out->bits = (uint8_t)bits;
    for (unsigned i = bits; i < max; i++) {
        if (out->ip.a[i / 8] & (0x80u >> (i % 8)))
            return WHY("\"%.64s\" has bits set beyond its prefix length", s);
    }
    return true;
}

bool tr_cidr_contains(const struct tr_cidr *c, const struct tr_ip *ip)
{
    if (ip->family == 0 || ip->family != c->ip.family)
        return false;
    unsigned full = c->bits / 8, rest = c->bits % 8;
    if (memcmp(c->ip.a, ip->a, full) != 0)
        return false;
    if (rest == 0)
        return true;
    uint8_t mask = (uint8_t)(0xffu << (8 - rest));
    return (c->ip.a[full] & mask) == (ip->a[full] & mask);
}

struct tr_ip tr_ip_from_sockaddr(const struct sockaddr *sa, uint16_t *port)
{
    struct tr_ip ip = {0};
    if (port != NULL)
        *port = 0;
    if (sa == NULL)
        return ip;
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)(const void *)sa;
        ip.family = 4;
        memcpy(ip.a, &in->sin_addr, 4);
        if (port != NULL)
            *port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)(const void *)sa;
        static const uint8_t v4mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
        ip.family = 6;
        memcpy(ip.a, &in6->sin6_addr, 16);
        if (memcmp(ip.a, v4mapped, 12) == 0) {
            memmove(ip.a, ip.a + 12, 4);
            memset(ip.a + 4, 0, 12);
            ip.family = 4;
        }
        if (port != NULL)
            *port = ntohs(in6->sin6_port);
    }
    return ip;
}

static const struct {
    const char *name;
    enum tr_az_key key;
} az_plain_keys[] = {
    {"source.ip", TR_AZK_SOURCE_IP},
    {"remote.ip", TR_AZK_REMOTE_IP},
    {"source.namespace", TR_AZK_SOURCE_NS},
    {"source.principal", TR_AZK_SOURCE_PRINCIPAL},
    {"request.auth.principal", TR_AZK_AUTH_PRINCIPAL},
    {"request.auth.audiences", TR_AZK_AUTH_AUDIENCES},
    {"request.auth.presenter", TR_AZK_AUTH_PRESENTER},
    {"destination.ip", TR_AZK_DEST_IP},
    {"destination.port", TR_AZK_DEST_PORT},
    {"connection.sni", TR_AZK_SNI},
};

/* "[a][b]..." after a prefix: each name non-empty, without '[' or ']'. */
static size_t az_brackets(const char *p, tr_str *arg, size_t max)
{
    size_t n = 0;
    while (*p == '[') {
        const char *end = strchr(p + 1, ']');
        if (end == NULL || end == p + 1 || n == max || memchr(p + 1, '[', (size_t)(end - p - 1)))
            return 0;
        arg[n++] = tr_str_from(p + 1, (size_t)(end - p - 1));
        p = end + 1;
    }
    return *p == '\0' ? n : 0;
}

enum tr_az_key tr_az_key_parse(const char *key, tr_str arg[TR_AZ_MAX_CLAIM_DEPTH], size_t *n_arg,
                               char *why, size_t size)
{
    *n_arg = 0;
    for (size_t i = 0; i < sizeof(az_plain_keys) / sizeof(az_plain_keys[0]); i++) {
        if (strcmp(key, az_plain_keys[i].name) == 0)
            return az_plain_keys[i].key;
    }
    static const char hdr[] = "request.headers", claims[] = "request.auth.claims";
    if (strncmp(key, hdr, sizeof(hdr) - 1) == 0 && key[sizeof(hdr) - 1] == '[') {
        size_t n = az_brackets(key + sizeof(hdr) - 1, arg, 1);
        if (n != 1) {
            snprintf(why, size, "invalid key \"%.128s\": use request.headers[NAME]", key);
            return TR_AZK_INVALID;
        }
        for (uint32_t i = 0; i < arg[0].len; i++) {
            unsigned char c = (unsigned char)arg[0].p[i];
            if (c <= 0x20 || c >= 0x7f || (c == ':' && i > 0)) {
                snprintf(why, size, "invalid header name in key \"%.128s\"", key);
                return TR_AZK_INVALID;
            }
        }
        *n_arg = 1;
        return TR_AZK_HEADER;
    }
    if (strncmp(key, claims, sizeof(claims) - 1) == 0 && key[sizeof(claims) - 1] == '[') {
        size_t n = az_brackets(key + sizeof(claims) - 1, arg, TR_AZ_MAX_CLAIM_DEPTH);
        if (n == 0) {
            snprintf(
                why, size,
                "invalid key \"%.128s\": use request.auth.claims[NAME] (nested: [A][B], at most "
                "%u levels)",
                key, TR_AZ_MAX_CLAIM_DEPTH);
            return TR_AZK_INVALID;
        }
        *n_arg = n;
        return TR_AZK_AUTH_CLAIMS;
    }
    snprintf(why, size, "unknown condition key \"%.128s\"", key);
    return TR_AZK_INVALID;
}

bool tr_az_key_is_http(enum tr_az_key k)
{
    switch (k) {
    case TR_AZK_HEADER:
    case TR_AZK_AUTH_PRINCIPAL:
    case TR_AZK_AUTH_AUDIENCES:
    case TR_AZK_AUTH_PRESENTER:
    case TR_AZK_AUTH_CLAIMS:
        return true;
    default:
        return false;
    }
}

struct tr_az_pat tr_az_pat_make(const char *s, bool template_ok)
{
    size_t len = strlen(s);
    struct tr_az_pat p = {TR_AZP_EXACT, tr_str_from(s, len)};
    if (template_ok && strchr(s, '{') != NULL) {
        p.kind = TR_AZP_TEMPLATE;
    } else if (len == 1 && s[0] == '*') {
        p.kind = TR_AZP_ANY;
    } else if (len > 0 && s[len - 1] == '*') {
        p.kind = TR_AZP_PREFIX;
        p.s.len--;
    } else if (len > 0 && s[0] == '*') {
        p.kind = TR_AZP_SUFFIX;
        p.s.p++;
        p.s.len--;
    }
    return p;
}

static bool az_eq(const char *a, const char *b, size_t n, bool caseless)
{
    return caseless ? strncasecmp(a, b, n) == 0 : memcmp(a, b, n) == 0;
}

bool tr_az_pat_match(const struct tr_az_pat *p, tr_str v, bool caseless)
{
    switch (p->kind) {
    case TR_AZP_ANY:
        return v.len > 0;
    case TR_AZP_PREFIX:
        return v.len >= p->s.len && az_eq(v.p, p->s.p, p->s.len, caseless);
    case TR_AZP_SUFFIX:
        return v.len >= p->s.len && az_eq(v.p + v.len - p->s.len, p->s.p, p->s.len, caseless);
    case TR_AZP_EXACT:
        return v.len == p->s.len && az_eq(v.p, p->s.p, v.len, caseless);
    case TR_AZP_TEMPLATE:
        return tr_az_template_match(p->s, v);
    }
    return false;
}

bool tr_az_path_check(const char *s, char *why, size_t size)
{
    size_t len = strlen(s);
    if (len == 0)
        return WHY("a path must not be empty");
    if (strcmp(s, "*") == 0)
        return true;
    if (strchr(s, '{') == NULL && strchr(s, '}') == NULL) {
        /* Like Istio, any string: one that does not start with "/" or "*"
         * matches no request path (the Istio compiler warns). */
        const char *star = strchr(s, '*');
        if (star != NULL && star != s && star != s + len - 1)
            return WHY("\"*\" is only allowed at the start or the end of a path, got \"%.128s\"",
                       s);
        if (star != NULL && strchr(star + 1, '*') != NULL)
            return WHY("a path may hold only one \"*\", got \"%.128s\"", s);
        return true;
    }
    /* A template: "/" then segments, each literal or one operator. */
    if (s[0] != '/')
        return WHY("a path template must start with \"/\", got \"%.128s\"", s);
    unsigned ops = 0, rest_ops = 0;
    const char *seg = s + 1;
    for (;;) {
        const char *end = strchr(seg, '/');
        size_t n = end != NULL ? (size_t)(end - seg) : strlen(seg);
        bool one = n == 3 && memcmp(seg, "{*}", 3) == 0;
        bool rest = n == 4 && memcmp(seg, "{**}", 4) == 0;
        if (one || rest) {
            if (++ops > TR_AZ_MAX_TEMPLATE_OPS)
                return WHY("a path template holds at most %u operators, got \"%.128s\"",
                           TR_AZ_MAX_TEMPLATE_OPS, s);
            if (rest && ++rest_ops > 1)
                return WHY("a path template holds at most one \"{**}\", got \"%.128s\"", s);
        } else if (memchr(seg, '{', n) || memchr(seg, '}', n) || memchr(seg, '*', n)) {
            return WHY("a path template's operators are whole segments \"{*}\" or \"{**}\", got "
                       "\"%.128s\"",
                       s);
        }
        if (end == NULL)
            break;
        seg = end + 1;
    }
    return true;
}

/* Segment by segment: tpl (no "{**}") against path, both starting with
 * "/"; equal numbers of segments. */
static bool az_segments_match(tr_str tpl, tr_str path)
{
    if (tpl.len == 0 || path.len == 0 || tpl.p[0] != '/' || path.p[0] != '/')
        return tpl.len == 0 && path.len == 0;
    size_t ti = 1, pi = 1;
    for (;;) {
        size_t te = ti, pe = pi;
        while (te < tpl.len && tpl.p[te] != '/')
            te++;
        while (pe < path.len && path.p[pe] != '/')
            pe++;
        if (te - ti == 3 && memcmp(tpl.p + ti, "{*}", 3) == 0) {
            if (pe == pi)
                return false; /* one segment means a non-empty one */
        } else if (te - ti != pe - pi || memcmp(tpl.p + ti, path.p + pi, te - ti) != 0) {
            return false;
        }
        bool tdone = te >= tpl.len, pdone = pe >= path.len;
        if (tdone || pdone)
            return tdone && pdone;
        ti = te + 1;
        pi = pe + 1;
    }
}

static size_t az_count(tr_str s, char c)
{
    size_t n = 0;
    for (uint32_t i = 0; i < s.len; i++)
        n += s.p[i] == c;
    return n;
}

bool tr_az_template_match(tr_str tpl, tr_str path)
{
    if (tpl.len == 0 || path.len == 0 || path.p[0] != '/')
        return false;
    const char *rest = NULL;
    for (uint32_t i = 0; i + 4 <= tpl.len && rest == NULL; i++) {
        if (memcmp(tpl.p + i, "{**}", 4) == 0)
            rest = tpl.p + i;
    }
    if (rest == NULL)
        return az_segments_match(tpl, path);
    /* head "{**}" tail: head ends with "/", tail is empty or starts with
     * "/". The path is head's segments, anything (slashes too, or nothing),
     * then tail's segments. */
    tr_str head = tr_str_from(tpl.p, (size_t)(rest - tpl.p));
    tr_str tail = tr_str_from(rest + 4, tpl.len - (size_t)(rest + 4 - tpl.p));
    /* The path's first head-many slashes delimit its head part. */
    size_t want = az_count(head, '/'), seen = 0;
    uint32_t hp = 0;
    while (hp < path.len && seen < want) {
        if (path.p[hp++] == '/')
            seen++;
    }
    if (seen < want)
        return false;
    /* Compare head without its final "/" against the path before that "/". */
    if (head.len > 1 &&
        !az_segments_match(tr_str_from(head.p, head.len - 1), tr_str_from(path.p, hp - 1)))
        return false;
    if (tail.len == 0)
        return true;
    /* The tail: the path's last tail-many segments, after the head. */
    size_t tsegs = az_count(tail, '/');
    uint32_t tp = path.len;
    size_t found = 0;
    while (tp > 0 && found < tsegs) {
        if (path.p[--tp] == '/')
            found++;
    }
    if (found < tsegs || tp < hp)
        return false;
    return az_segments_match(tail, tr_str_from(path.p + tp, path.len - tp));
}
