/* identity/spiffe.c: SPIFFE ID syntax (per the SPIFFE-ID specification). */
#include "identity/identity.h"

#include <string.h>

#define SPIFFE_SCHEME    "spiffe://"
#define TRUST_DOMAIN_MAX 255

static bool is_td_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
}

static bool is_path_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '-' || c == '_';
}

int tr_spiffe_id_parse(const char *id, size_t len, tr_str *trust_domain, tr_str *path)
{
    const size_t slen = sizeof(SPIFFE_SCHEME) - 1;
    /* The scheme is matched case-sensitively: the spec requires lowercase. */
    if (id == NULL || len > TR_SPIFFE_ID_MAX || len < slen || memcmp(id, SPIFFE_SCHEME, slen) != 0)
        return -1;

    size_t i = slen;
    size_t td_start = i;
    while (i < len && id[i] != '/') {
        /* Uppercase, ':' (port), '@' (userinfo), '%', '?', '#' all fail here. */
        if (!is_td_char((unsigned char)id[i]))
            return -1;
        i++;
    }
    size_t td_len = i - td_start;
    if (td_len == 0 || td_len > TRUST_DOMAIN_MAX)
        return -1;

    /* A workload ID needs a path; "spiffe://td" names the trust domain only. */
    size_t path_start = i;
    if (i == len)
        return -1;
    while (i < len) {
        i++; /* the '/' */
        size_t seg = i;
        while (i < len && id[i] != '/') {
            if (!is_path_char((unsigned char)id[i]))
                return -1;
            i++;
        }
        size_t seg_len = i - seg;
        if (seg_len == 0)
            return -1; /* "//" or a trailing '/' */
        if (id[seg] == '.' && (seg_len == 1 || (seg_len == 2 && id[seg + 1] == '.')))
            return -1;
    }

    if (trust_domain)
        *trust_domain = tr_str_from(id + td_start, td_len);
    if (path)
        *path = tr_str_from(id + path_start, len - path_start);
    return 0;
}
