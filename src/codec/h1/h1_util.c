/* codec/h1/h1_util.c: byte classes, small validators, error and reason
 * strings, and header lookups shared by the HTTP/1.1 codec. */
#include "codec/h1/h1.h"

/* Bits: 0x01 tchar, 0x02 field-vchar, 0x04 SP/HTAB, 0x08 HEXDIG,
 * 0x10 request-target byte, 0x20 reg-name byte. The unit test recomputes
 * every entry from the RFC definitions. */
const uint8_t tr_h1_ctype[256] = {
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 00 */
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, /* 10 */
    0x04, 0x13, 0x12, 0x03, 0x13, 0x13, 0x13, 0x13,
    0x12, 0x12, 0x13, 0x13, 0x12, 0x33, 0x33, 0x12, /* 20 */
    0x3b, 0x3b, 0x3b, 0x3b, 0x3b, 0x3b, 0x3b, 0x3b,
    0x3b, 0x3b, 0x12, 0x12, 0x12, 0x12, 0x12, 0x12, /* 30 */
    0x12, 0x3b, 0x3b, 0x3b, 0x3b, 0x3b, 0x3b, 0x33,
    0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, /* 40 */
    0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33,
    0x33, 0x33, 0x33, 0x12, 0x12, 0x12, 0x13, 0x33, /* 50 */
    0x13, 0x3b, 0x3b, 0x3b, 0x3b, 0x3b, 0x3b, 0x33,
    0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, /* 60 */
    0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33,
    0x33, 0x33, 0x33, 0x12, 0x13, 0x12, 0x33, 0x00, /* 70 */
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, /* 80 */
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, /* 90 */
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, /* a0 */
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, /* b0 */
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, /* c0 */
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, /* d0 */
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, /* e0 */
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02,
    0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, 0x02, /* f0 */
};

static inline unsigned char lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? (unsigned char)(c | 0x20) : c;
}

static inline int is_class(unsigned char c, unsigned cls)
{
    return (tr_h1_ctype[c] & cls) != 0;
}

int tr_h1_ieq(tr_str a, const char *lower_lit, size_t lit_len)
{
    if (a.len != lit_len)
        return 0;
    for (size_t i = 0; i < lit_len; i++)
        if (lower((unsigned char)a.p[i]) != (unsigned char)lower_lit[i])
            return 0;
    return 1;
}

int tr_h1_is_token(tr_str s)
{
    if (s.len == 0)
        return 0;
    for (uint32_t i = 0; i < s.len; i++)
        if (!is_class((unsigned char)s.p[i], TR_H1_C_TCHAR))
            return 0;
    return 1;
}

int tr_h1_is_field_value(tr_str s)
{
    for (uint32_t i = 0; i < s.len; i++)
        if (!is_class((unsigned char)s.p[i], TR_H1_C_FVCHAR | TR_H1_C_WS))
            return 0;
    if (s.len > 0 && (is_class((unsigned char)s.p[0], TR_H1_C_WS) ||
                      is_class((unsigned char)s.p[s.len - 1], TR_H1_C_WS)))
        return 0;
    return 1;
}

int tr_h1_is_authority(tr_str s, int port_required)
{
    uint32_t i = 0;
    if (s.len > 0 && s.p[0] == '[') {
        /* IP-literal: loose IPv6 shape check (hex, ':' and '.' for an
         * embedded IPv4); IPvFuture is not accepted. */
        i = 1;
        while (i < s.len &&
               (is_class((unsigned char)s.p[i], TR_H1_C_HEX) || s.p[i] == ':' || s.p[i] == '.'))
            i++;
        if (i == 1 || i >= s.len || s.p[i] != ']')
            return 0;
        i++;
    } else {
        while (i < s.len && is_class((unsigned char)s.p[i], TR_H1_C_HOST))
            i++;
        if (i == 0)
            return 0;
    }
    if (i == s.len)
        return !port_required;
    if (s.p[i] != ':')
        return 0;
    /* "host:" (empty port) is valid grammar but useless; reject it. */
    uint32_t digits = 0, port = 0;
    for (i++; i < s.len; i++, digits++) {
        unsigned char c = (unsigned char)s.p[i];
        if (c < '0' || c > '9' || digits == 5)
            return 0;
        port = port * 10 + (uint32_t)(c - '0');
    }
    return digits > 0 && port <= 65535;
}

int tr_h1_error_status(int err)
{
    switch (err) {
    case TR_H1_E_BAD_REQUEST:
        return 400;
    case TR_H1_E_URI_TOO_LONG:
        return 414;
    case TR_H1_E_HEADERS_TOO_LARGE:
        return 431;
    case TR_H1_E_VERSION:
        return 505;
    case TR_H1_E_BAD_RESPONSE:
        return 502;
    default:
        return 400;
    }
}

const char *tr_h1_error_str(int err)
{
    switch (err) {
    case TR_H1_E_BAD_REQUEST:
        return "bad request";
    case TR_H1_E_URI_TOO_LONG:
        return "request line too long";
    case TR_H1_E_HEADERS_TOO_LARGE:
        return "headers too large";
    case TR_H1_E_VERSION:
        return "unsupported HTTP version";
    case TR_H1_E_BAD_RESPONSE:
        return "bad upstream response";
    default:
        return "unknown error";
    }
}

int tr_h1_find_header(const struct tr_h1_message *msg, const char *name, size_t name_len)
{
    for (uint32_t i = 0; i < msg->n_headers; i++) {
        tr_str n = msg->headers[i].name;
        if (n.len != name_len)
            continue;
        uint32_t j = 0;
        while (j < n.len && lower((unsigned char)n.p[j]) == lower((unsigned char)name[j]))
            j++;
        if (j == n.len)
            return (int)i;
    }
    return -1;
}

int tr_h1_is_hop_by_hop(tr_str name)
{
    switch (name.len) {
    case 2:
        return tr_h1_ieq(name, "te", 2);
    case 7:
        return tr_h1_ieq(name, "upgrade", 7) || tr_h1_ieq(name, "trailer", 7);
    case 10:
        return tr_h1_ieq(name, "connection", 10) || tr_h1_ieq(name, "keep-alive", 10);
    case 14:
        return tr_h1_ieq(name, "http2-settings", 14); /* RFC 9113 3.1: h2c upgrade only */
    case 16:
        return tr_h1_ieq(name, "proxy-connection", 16);
    case 17:
        return tr_h1_ieq(name, "transfer-encoding", 17);
    default:
        return 0;
    }
}

/* Case-insensitive equality of two arbitrary slices. */
static int slice_ieq(tr_str a, tr_str b)
{
    if (a.len != b.len)
        return 0;
    for (uint32_t i = 0; i < a.len; i++)
        if (lower((unsigned char)a.p[i]) != lower((unsigned char)b.p[i]))
            return 0;
    return 1;
}

int tr_h1_connection_lists(const struct tr_h1_message *msg, tr_str name)
{
    for (uint32_t h = 0; h < msg->n_headers; h++) {
        if (!tr_h1_ieq(msg->headers[h].name, "connection", 10))
            continue;
        tr_str v = msg->headers[h].value;
        uint32_t i = 0;
        while (i < v.len) {
            /* One list element: skip OWS, take up to ',' and trim OWS. */
            while (i < v.len && (v.p[i] == ' ' || v.p[i] == '\t'))
                i++;
            uint32_t start = i;
            while (i < v.len && v.p[i] != ',')
                i++;
            uint32_t end = i;
            while (end > start && (v.p[end - 1] == ' ' || v.p[end - 1] == '\t'))
                end--;
            if (slice_ieq(tr_str_from(v.p + start, end - start), name))
                return 1;
            i++; /* past ',' */
        }
    }
    return 0;
}

const char *tr_h1_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 103:
        return "Early Hints";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 203:
        return "Non-Authoritative Information";
    case 204:
        return "No Content";
    case 205:
        return "Reset Content";
    case 206:
        return "Partial Content";
    case 300:
        return "Multiple Choices";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 407:
        return "Proxy Authentication Required";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 421:
        return "Misdirected Request";
    case 422:
        return "Unprocessable Content";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        break;
    }
    /* Unknown codes get their class's generic phrase. */
    switch (status / 100) {
    case 1:
        return "Informational";
    case 2:
        return "Success";
    case 3:
        return "Redirection";
    case 4:
        return "Client Error";
    case 5:
        return "Server Error";
    default:
        return "Unknown";
    }
}
