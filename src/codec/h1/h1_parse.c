/* codec/h1/h1_parse.c: message head scanning and strict request/response
 * head parsing (RFC 9112 sections 2-6).
 *
 * Decisions worth knowing (all in the direction of refusing ambiguity):
 * - No leading empty line is skipped before a request line (RFC 9112 2.2
 *   allows it). A stray CRLF where a request should start means the client's
 *   idea of the previous body length differs from ours, so we answer 400.
 * - Several Content-Length fields are refused even when the values are equal,
 *   as is a comma list: RFC 9110 8.6 lets a recipient collapse them, but a
 *   peer that does not is exactly what smuggling exploits.
 * - Transfer-Encoding must be a single field whose value is exactly
 *   "chunked"; any other coding is refused in requests and responses alike.
 * - An absolute-form target must name the same authority as Host, so the
 *   router (Host) and the upstream (target) cannot disagree.
 * - A status line without the SP after the code ("HTTP/1.1 200\r\n") is
 *   accepted with an empty reason: servers in the wild send it and the
 *   reason is never used for framing.
 */
#include <limits.h>
#include <string.h>

#include "codec/h1/h1.h"

/* Top bit of *scanned: the first line has been seen complete. */
#define SCAN_LINE_DONE ((size_t)1 << (sizeof(size_t) * CHAR_BIT - 1))

static inline int is_class(unsigned char c, unsigned cls)
{
    return (tr_h1_ctype[c] & cls) != 0;
}

static inline int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

int tr_h1_head_end(const char *buf, size_t len, const struct tr_h1_limits *lim, int is_request,
                   size_t *scanned)
{
    size_t pos = *scanned & ~SCAN_LINE_DONE;
    int line_done = (*scanned & SCAN_LINE_DONE) != 0;
    size_t max_head = lim->max_header_bytes < INT_MAX ? lim->max_header_bytes : INT_MAX;
    size_t max_line = lim->max_request_line;
    int bad = is_request ? TR_H1_E_BAD_REQUEST : TR_H1_E_BAD_RESPONSE;
    int line_err = is_request ? TR_H1_E_URI_TOO_LONG : TR_H1_E_BAD_RESPONSE;
    /* Never look past the largest head we would accept. */
    size_t end = len < max_head ? len : max_head;

    if (pos > end)
        pos = end; /* defensive: the buffer must only grow between calls */
    /* Called again after the head was found: the same answer. The scan only
     * ever stops right after the first CRLF CRLF, so this cannot misfire. */
    if (line_done && pos >= 4 && memcmp(buf + pos - 4, "\r\n\r\n", 4) == 0)
        return (int)pos;
    while (pos < end) {
        const char *lf = memchr(buf + pos, '\n', end - pos);
        if (!lf) {
            pos = end;
            break;
        }
        size_t i = (size_t)(lf - buf);
        pos = i + 1;
        if (!line_done) {
            /* Limit first, so a split feed reports what a whole one does. */
            if (i + 1 > max_line)
                return line_err;
            if (i < 2 || buf[i - 1] != '\r')
                return bad; /* bare LF, or an empty first line */
            /* A request line must end in " HTTP/d.d": reject HTTP/0.9 and other
             * shapes now, not after waiting for a blank line that may never come. */
            if (is_request &&
                (i < 11 || buf[i - 10] != ' ' || memcmp(buf + i - 9, "HTTP/", 5) != 0 ||
                 !is_digit((unsigned char)buf[i - 4]) || buf[i - 3] != '.' ||
                 !is_digit((unsigned char)buf[i - 2])))
                return bad;
            line_done = 1;
            continue;
        }
        if (buf[i - 1] != '\r')
            return bad;
        /* i >= 3 here: the first line ended with CRLF at index >= 2. */
        if (buf[i - 2] == '\n') {
            *scanned = pos | SCAN_LINE_DONE;
            return (int)pos;
        }
    }
    *scanned = pos | (line_done ? SCAN_LINE_DONE : 0);
    if (!line_done && pos >= max_line)
        return line_err; /* no LF in max_line bytes: the line is longer */
    if (len >= max_head)
        return TR_H1_E_HEADERS_TOO_LARGE;
    return 0;
}

/* What the field loop learned, for the framing decision. */
struct fields {
    int cl_idx;
    int te_idx;
    int host_idx;
    uint64_t content_length;
};

static int parse_content_length(tr_str v, uint64_t *out)
{
    uint64_t n = 0;
    if (v.len == 0)
        return -1;
    for (uint32_t i = 0; i < v.len; i++) {
        unsigned char c = (unsigned char)v.p[i];
        if (!is_digit(c))
            return -1; /* signs, spaces, commas, hex... */
        if (n > ((uint64_t)INT64_MAX - (c - '0')) / 10)
            return -1;
        n = n * 10 + (uint64_t)(c - '0');
    }
    *out = n;
    return 0;
}

/* Walk a comma-separated list value, calling back on each non-empty element
 * with OWS trimmed. Returns -1 as soon as the callback does. */
typedef int (*list_fn)(tr_str elem, struct tr_h1_message *msg);

static int each_list_elem(tr_str v, struct tr_h1_message *msg, list_fn fn)
{
    uint32_t i = 0;
    while (i < v.len) {
        while (i < v.len && is_class((unsigned char)v.p[i], TR_H1_C_WS))
            i++;
        uint32_t start = i;
        while (i < v.len && v.p[i] != ',')
            i++;
        uint32_t end = i;
        while (end > start && is_class((unsigned char)v.p[end - 1], TR_H1_C_WS))
            end--;
        if (end > start && fn(tr_str_from(v.p + start, end - start), msg) < 0)
            return -1;
        i++; /* past ',' */
    }
    return 0;
}

static int connection_elem(tr_str e, struct tr_h1_message *msg)
{
    if (!tr_h1_is_token(e))
        return -1; /* unparsable: we could not tell which fields are hop-by-hop */
    if (tr_h1_ieq(e, "close", 5))
        msg->flags |= TR_H1_F_CONN_CLOSE;
    else if (tr_h1_ieq(e, "keep-alive", 10))
        msg->flags |= TR_H1_F_CONN_KEEP_ALIVE;
    else if (tr_h1_ieq(e, "upgrade", 7))
        msg->flags |= TR_H1_F_CONN_UPGRADE;
    else
        msg->flags |= TR_H1_F_HAS_CONNECTION_TOKENS;
    return 0;
}

static int te_elem(tr_str e, struct tr_h1_message *msg)
{
    /* t-codings = "trailers" / ( transfer-coding [ weight ] ): only the
     * leading token matters; TE is hop-by-hop and never forwarded. */
    uint32_t n = 0;
    while (n < e.len && is_class((unsigned char)e.p[n], TR_H1_C_TCHAR))
        n++;
    if (tr_h1_ieq(tr_str_from(e.p, n), "trailers", 8))
        msg->flags |= TR_H1_F_TE_TRAILERS;
    return 0;
}

/* Semantics of one field by name. Returns 0 or -1 (malformed/ambiguous). */
static int on_field(struct tr_h1_message *msg, struct fields *f, int is_request, int idx)
{
    tr_str n = msg->headers[idx].name, v = msg->headers[idx].value;

    switch (n.len) {
    case 2:
        if (is_request && tr_h1_ieq(n, "te", 2))
            return each_list_elem(v, msg, te_elem);
        break;
    case 4:
        if (tr_h1_ieq(n, "host", 4)) {
            if (!is_request) {
                if (f->host_idx < 0)
                    f->host_idx = idx; /* informational only */
                break;
            }
            if (f->host_idx >= 0 || !tr_h1_is_authority(v, 0))
                return -1;
            f->host_idx = idx;
        }
        break;
    case 6:
        if (is_request && tr_h1_ieq(n, "expect", 6) && tr_h1_ieq(v, "100-continue", 12))
            msg->flags |= TR_H1_F_EXPECT_CONTINUE;
        break;
    case 7:
        if (tr_h1_ieq(n, "upgrade", 7))
            msg->flags |= TR_H1_F_UPGRADE;
        break;
    case 10:
        if (tr_h1_ieq(n, "connection", 10))
            return each_list_elem(v, msg, connection_elem);
        break;
    case 14:
        if (tr_h1_ieq(n, "content-length", 14)) {
            if (f->cl_idx >= 0 || parse_content_length(v, &f->content_length) < 0)
                return -1;
            f->cl_idx = idx;
        }
        break;
    case 17:
        if (tr_h1_ieq(n, "transfer-encoding", 17)) {
            if (f->te_idx >= 0 || !tr_h1_ieq(v, "chunked", 7))
                return -1;
            f->te_idx = idx;
        }
        break;
    default:
        break;
    }
    return 0;
}

/* Parse the field lines from pos to the final empty line at head_len - 2.
 * The caller has checked that buf[head_len-4 .. head_len) is CRLF CRLF,
 * which bounds every scan below: each stops at a CR no later than
 * head_len - 4. Returns 0, -1 (malformed) or TR_H1_E_HEADERS_TOO_LARGE. */
static int parse_fields(const char *buf, size_t pos, size_t head_len,
                        const struct tr_h1_limits *lim, int is_request, struct tr_h1_message *msg,
                        struct fields *f)
{
    uint32_t max =
        lim->max_headers < TR_H1_MAX_HEADERS_CAP ? lim->max_headers : TR_H1_MAX_HEADERS_CAP;
    while (pos != head_len - 2) {
        size_t i = pos;
        /* field-name: a token right up to the colon. A line starting with
         * SP/HTAB (obs-fold or whitespace before the first field), CR (an
         * empty line before head_len) or ':' fails here. */
        while (is_class((unsigned char)buf[i], TR_H1_C_TCHAR))
            i++;
        if (i == pos || buf[i] != ':')
            return -1;
        size_t name_end = i++;
        while (is_class((unsigned char)buf[i], TR_H1_C_WS))
            i++;
        size_t vstart = i, vend = i;
        while (is_class((unsigned char)buf[i], TR_H1_C_FVCHAR | TR_H1_C_WS)) {
            if (!is_class((unsigned char)buf[i], TR_H1_C_WS))
                vend = i + 1;
            i++;
        }
        /* Anything but CRLF here is a CTL, NUL, DEL, bare CR or bare LF. */
        if (buf[i] != '\r' || buf[i + 1] != '\n')
            return -1;
        if (msg->n_headers >= max)
            return TR_H1_E_HEADERS_TOO_LARGE;
        uint32_t idx = msg->n_headers++;
        msg->headers[idx].name = tr_str_from(buf + pos, name_end - pos);
        msg->headers[idx].value = tr_str_from(buf + vstart, vend - vstart);
        if (on_field(msg, f, is_request, (int)idx) < 0)
            return -1;
        pos = i + 2;
    }
    return 0;
}

/* Common checks on the head as a whole. Sets *line_end to the index of the
 * CR that ends the first line. */
static int check_head(const char *buf, size_t head_len, const struct tr_h1_limits *lim, int bad,
                      int line_err, size_t *line_end)
{
    if (head_len < 4 || memcmp(buf + head_len - 4, "\r\n\r\n", 4) != 0)
        return bad;
    if (head_len > lim->max_header_bytes)
        return TR_H1_E_HEADERS_TOO_LARGE;
    const char *lf = memchr(buf, '\n', head_len);
    size_t i = (size_t)(lf - buf); /* found: the head ends with LF */
    if (i + 1 > lim->max_request_line)
        return line_err;
    if (i < 2 || buf[i - 1] != '\r')
        return bad;
    *line_end = i - 1;
    return 0;
}

static void msg_reset(struct tr_h1_message *msg)
{
    struct tr_h1_header *h = msg->headers;
    memset(msg, 0, sizeof(*msg));
    msg->headers = h;
    msg->host_idx = -1;
}

/* "HTTP/" DIGIT "." DIGIT at p. Returns the minor (0 or 1), -1 if malformed,
 * -2 if well-formed with a major other than 1. */
static int parse_version(const char *p)
{
    if (memcmp(p, "HTTP/", 5) != 0 || !is_digit((unsigned char)p[5]) || p[6] != '.' ||
        !is_digit((unsigned char)p[7]))
        return -1;
    if (p[5] != '1')
        return -2;
    return p[7] == '0' ? 0 : 1; /* 1.2+ is read as 1.1 */
}

static enum tr_h1_method method_id(tr_str m)
{
#define M(lit, id)                                                                                 \
    if (TR_STR_EQ_LIT(m, lit))                                                                     \
        return id;
    switch (m.len) {
    case 3:
        M("GET", TR_H1_M_GET)
        M("PUT", TR_H1_M_PUT)
        break;
    case 4:
        M("HEAD", TR_H1_M_HEAD)
        M("POST", TR_H1_M_POST)
        break;
    case 5:
        M("PATCH", TR_H1_M_PATCH)
        M("TRACE", TR_H1_M_TRACE)
        break;
    case 6:
        M("DELETE", TR_H1_M_DELETE)
        break;
    case 7:
        M("CONNECT", TR_H1_M_CONNECT)
        M("OPTIONS", TR_H1_M_OPTIONS)
        break;
    default:
        break;
    }
#undef M
    return TR_H1_M_OTHER;
}

static int slice_ieq(tr_str a, tr_str b)
{
    if (a.len != b.len)
        return 0;
    for (uint32_t i = 0; i < a.len; i++) {
        unsigned char x = (unsigned char)a.p[i], y = (unsigned char)b.p[i];
        if (x >= 'A' && x <= 'Z')
            x |= 0x20;
        if (y >= 'A' && y <= 'Z')
            y |= 0x20;
        if (x != y)
            return 0;
    }
    return 1;
}

static int has_prefix_i(tr_str s, const char *lower_lit, size_t n)
{
    return s.len >= n && tr_h1_ieq(tr_str_from(s.p, n), lower_lit, n);
}

/* Validate the request-target form against the method (RFC 9112 3.2). For
 * absolute-form, *authority receives the authority component. */
static int check_target(tr_str t, enum tr_h1_method m, tr_str *authority)
{
    *authority = tr_str_from(NULL, 0);
    if (m == TR_H1_M_CONNECT)
        return tr_h1_is_authority(t, 1) ? 0 : -1;
    if (t.p[0] == '/')
        return 0;
    if (t.len == 1 && t.p[0] == '*')
        return m == TR_H1_M_OPTIONS ? 0 : -1;
    size_t skip;
    if (has_prefix_i(t, "http://", 7))
        skip = 7;
    else if (has_prefix_i(t, "https://", 8))
        skip = 8;
    else
        return -1; /* authority-form without CONNECT, other schemes, junk */
    uint32_t e = (uint32_t)skip;
    while (e < t.len && t.p[e] != '/' && t.p[e] != '?')
        e++;
    *authority = tr_str_from(t.p + skip, e - skip);
    return tr_h1_is_authority(*authority, 0) ? 0 : -1;
}

int tr_h1_parse_request(const char *buf, size_t head_len, const struct tr_h1_limits *lim,
                        struct tr_h1_message *msg)
{
    const int bad = TR_H1_E_BAD_REQUEST;
    size_t cr;
    msg_reset(msg);
    int rc = check_head(buf, head_len, lim, bad, TR_H1_E_URI_TOO_LONG, &cr);
    if (rc < 0)
        return rc;

    /* method SP request-target SP HTTP-version, all inside [0, cr). */
    size_t i = 0;
    while (i < cr && is_class((unsigned char)buf[i], TR_H1_C_TCHAR))
        i++;
    if (i == 0 || i == cr || buf[i] != ' ')
        return bad;
    msg->method = tr_str_from(buf, i);
    msg->method_id = method_id(msg->method);
    size_t t0 = ++i;
    while (i < cr && is_class((unsigned char)buf[i], TR_H1_C_TARGET))
        i++;
    /* Empty target (double SP), or a target ending at CR (HTTP/0.9) or at a
     * byte outside VCHAR (CTL, DEL, obs-text, HTAB, '#'). */
    if (i == t0 || i == cr || buf[i] != ' ')
        return bad;
    msg->target = tr_str_from(buf + t0, i - t0);
    i++;
    if (cr - i != 8)
        return bad;
    int minor = parse_version(buf + i);
    if (minor == -2)
        return TR_H1_E_VERSION;
    if (minor < 0)
        return bad;
    msg->version_minor = (uint8_t)minor;
    tr_str authority;
    if (check_target(msg->target, msg->method_id, &authority) < 0)
        return bad;

    struct fields f = {-1, -1, -1, 0};
    rc = parse_fields(buf, cr + 2, head_len, lim, 1, msg, &f);
    if (rc < 0)
        return rc == TR_H1_E_HEADERS_TOO_LARGE ? rc : bad;
    msg->host_idx = f.host_idx;
    msg->head_len = (uint32_t)head_len;

    if (f.host_idx < 0) {
        if (minor == 1)
            return bad;
    } else if (authority.p) {
        /* absolute-form: RFC 9112 3.2.2 says use the target and ignore Host;
         * a router keyed on Host would then disagree, so insist they match. */
        if (!slice_ieq(msg->headers[f.host_idx].value, authority))
            return bad;
    }

    if (f.te_idx >= 0) {
        /* TE with CL, TE in HTTP/1.0 (RFC 9112 6.1), or a body on CONNECT. */
        if (f.cl_idx >= 0 || minor == 0 || msg->method_id == TR_H1_M_CONNECT)
            return bad;
        msg->body = TR_H1_BODY_CHUNKED;
    } else if (f.cl_idx >= 0) {
        if (msg->method_id == TR_H1_M_CONNECT && f.content_length != 0)
            return bad;
        msg->body = TR_H1_BODY_LENGTH;
        msg->content_length = f.content_length;
    } else {
        msg->body = TR_H1_BODY_NONE;
    }
    if (minor == 0 && !(msg->flags & TR_H1_F_CONN_KEEP_ALIVE))
        msg->flags |= TR_H1_F_CONN_CLOSE;
    return 0;
}

int tr_h1_parse_response(const char *buf, size_t head_len, const struct tr_h1_limits *lim,
                         enum tr_h1_method req_method, struct tr_h1_message *msg)
{
    const int bad = TR_H1_E_BAD_RESPONSE;
    size_t cr;
    msg_reset(msg);
    int rc = check_head(buf, head_len, lim, bad, bad, &cr);
    if (rc < 0)
        return rc;

    /* HTTP-version SP 3DIGIT [ SP reason-phrase ] */
    int minor = cr >= 12 ? parse_version(buf) : -1;
    if (minor < 0 || buf[8] != ' ')
        return bad; /* includes HTTP/2.0 and other majors */
    for (int k = 9; k < 12; k++)
        if (!is_digit((unsigned char)buf[k]))
            return bad;
    int status = (buf[9] - '0') * 100 + (buf[10] - '0') * 10 + (buf[11] - '0');
    if (status < 100 || status > 599)
        return bad;
    msg->status = (uint16_t)status;
    msg->version_minor = (uint8_t)minor;
    if (cr > 12) {
        if (buf[12] != ' ')
            return bad;
        for (size_t k = 13; k < cr; k++)
            if (!is_class((unsigned char)buf[k], TR_H1_C_FVCHAR | TR_H1_C_WS))
                return bad;
        msg->reason = tr_str_from(buf + 13, cr - 13);
    } else {
        msg->reason = tr_str_from(buf + 12, 0);
    }

    struct fields f = {-1, -1, -1, 0};
    rc = parse_fields(buf, cr + 2, head_len, lim, 0, msg, &f);
    if (rc < 0)
        return rc == TR_H1_E_HEADERS_TOO_LARGE ? rc : bad;
    msg->host_idx = f.host_idx;
    msg->head_len = (uint32_t)head_len;

    /* Framing errors first, whatever the status: we never guess. */
    if (f.te_idx >= 0 && (f.cl_idx >= 0 || minor == 0))
        return bad;
    int connect_ok = req_method == TR_H1_M_CONNECT && status >= 200 && status < 300;
    if (f.te_idx >= 0 && (status < 200 || status == 204))
        return bad; /* RFC 9112 6.1: MUST NOT send TE in 1xx or 204 */

    if (status == 101 || connect_ok) {
        /* RFC 9112 6.3 (2): CL/TE on a 2xx to CONNECT are ignored. */
        msg->body = TR_H1_BODY_TUNNEL;
    } else if (status < 200 || status == 204 || status == 304 || req_method == TR_H1_M_HEAD) {
        msg->body = TR_H1_BODY_NONE; /* CL, if any, describes another response */
    } else if (f.te_idx >= 0) {
        msg->body = TR_H1_BODY_CHUNKED;
    } else if (f.cl_idx >= 0) {
        msg->body = TR_H1_BODY_LENGTH;
        msg->content_length = f.content_length;
    } else {
        msg->body = TR_H1_BODY_UNTIL_CLOSE;
        msg->flags |= TR_H1_F_CONN_CLOSE; /* the close is the framing */
    }
    if (minor == 0 && !(msg->flags & TR_H1_F_CONN_KEEP_ALIVE))
        msg->flags |= TR_H1_F_CONN_CLOSE;
    return 0;
}
