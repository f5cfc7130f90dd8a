/* control/protocol.c: message framing (see protocol.h). */
#include "control/protocol.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const type_names[TR_CP_N_TYPES] = {"model", "bundle", "cert", "ack", "nack"};

const char *tr_cp_type_name(enum tr_cp_type t)
{
    return (unsigned)t < TR_CP_N_TYPES ? type_names[t] : "?";
}

size_t tr_cp_header(char *out, enum tr_cp_type t, uint64_t version, size_t len)
{
    int n = snprintf(out, TR_CP_MAX_HEADER, "%s %llu %zu\n", tr_cp_type_name(t),
                     (unsigned long long)version, len);
    return n > 0 && n < TR_CP_MAX_HEADER ? (size_t)n : 0;
}

void tr_cp_reader_init(struct tr_cp_reader *r, size_t max_payload)
{
    memset(r, 0, sizeof(*r));
    r->max_payload = max_payload > TR_CP_MAX_PAYLOAD ? TR_CP_MAX_PAYLOAD : max_payload;
}

void tr_cp_reader_free(struct tr_cp_reader *r)
{
    free(r->payload);
    r->payload = NULL;
    r->in_payload = false;
    r->hdr_len = 0;
}

bool tr_cp_reader_idle(const struct tr_cp_reader *r)
{
    return !r->in_payload && r->hdr_len == 0;
}

/* A decimal of 1..19 digits without a leading zero (but "0"). */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
    if (n == 0 || n > 19 || (n > 1 && s[0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    *out = v;
    return true;
}

static int parse_header(struct tr_cp_reader *r, const char **why)
{
    const char *h = r->hdr;
    size_t n = r->hdr_len; /* without the LF */
    const char *sp1 = memchr(h, ' ', n);
    const char *sp2 = sp1 != NULL ? memchr(sp1 + 1, ' ', n - (size_t)(sp1 + 1 - h)) : NULL;
    if (sp1 == NULL || sp2 == NULL) {
        *why = "message header is not 'TYPE VERSION LENGTH'";
        return -1;
    }
    size_t tlen = (size_t)(sp1 - h);
    int type = -1;
    for (int i = 0; i < TR_CP_N_TYPES; i++)
        if (strlen(type_names[i]) == tlen && memcmp(type_names[i], h, tlen) == 0)
            type = i;
    if (type < 0) {
        *why = "unknown message type";
        return -1;
    }
    uint64_t version, len;
    if (!parse_u64(sp1 + 1, (size_t)(sp2 - sp1 - 1), &version) ||
        !parse_u64(sp2 + 1, n - (size_t)(sp2 + 1 - h), &len)) {
        *why = "message version or length is not a decimal number";
        return -1;
    }
    if (len > r->max_payload) {
        *why = "message payload over the limit";
        return -1;
    }
    r->payload = malloc((size_t)len + 1);
    if (r->payload == NULL) {
        *why = "out of memory";
        return -1;
    }
    r->type = (enum tr_cp_type)type;
    r->version = version;
    r->want = (size_t)len;
    r->got = 0;
    r->in_payload = true;
    return 0;
}

int tr_cp_read(struct tr_cp_reader *r, const uint8_t *data, size_t len, tr_cp_msg_cb cb, void *arg,
               const char **why)
{
    size_t i = 0;
    for (;;) {
        if (r->in_payload) {
            size_t take = r->want - r->got;
            if (take > len - i)
                take = len - i;
            memcpy(r->payload + r->got, data + i, take);
            r->got += take;
            i += take;
            if (r->got < r->want)
                return 0;
            r->payload[r->want] = '\0';
            int rc = cb(arg, r->type, r->version, r->payload, r->want);
            free(r->payload);
            r->payload = NULL;
            r->in_payload = false;
            r->hdr_len = 0;
            if (rc != 0)
                return rc;
            continue;
        }
        if (i == len)
            return 0;
        const uint8_t *lf = memchr(data + i, '\n', len - i);
        size_t take = lf != NULL ? (size_t)(lf - (data + i)) : len - i;
        if (r->hdr_len + take >= TR_CP_MAX_HEADER) {
            *why = "message header line too long";
            return -1;
        }
        memcpy(r->hdr + r->hdr_len, data + i, take);
        r->hdr_len += take;
        i += take;
        if (lf == NULL)
            return 0;
        i++; /* the LF */
        if (parse_header(r, why) < 0) {
            r->hdr_len = 0;
            return -1;
        }
    }
}
