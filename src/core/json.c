#include "core/json.h"

#include <stdlib.h>
#include <string.h>

#include "core/utf8.h"

struct parser {
    const unsigned char *p;
    size_t len, pos;
    struct tr_json_tok *tok;
    uint32_t cap, n;
    const char *err;
};

static void skip_ws(struct parser *ps)
{
    while (ps->pos < ps->len) {
        unsigned char c = ps->p[ps->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            return;
        ps->pos++;
    }
}

static int fail(struct parser *ps, const char *err)
{
    if (ps->err == NULL)
        ps->err = err;
    return -1;
}

/* Four hex digits at p (len checked by the caller). */
static int hex4(const unsigned char *p)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        int h = tr_hex_digit((unsigned char)p[i]);
        if (h < 0)
            return -1;
        v = v << 4 | h;
    }
    return v;
}

/* A \u escape at p[0..] (after the backslash and 'u'), with a following
 * low surrogate when it is a high one: the code point and the bytes read,
 * or -1. */
static long unicode_escape(const unsigned char *p, size_t avail, size_t *used)
{
    if (avail < 4)
        return -1;
    int hi = hex4(p);
    if (hi < 0)
        return -1;
    *used = 4;
    if (hi >= 0xDC00 && hi <= 0xDFFF)
        return -1; /* a lone low surrogate */
    if (hi < 0xD800 || hi > 0xDBFF)
        return hi;
    if (avail < 10 || p[4] != '\\' || p[5] != 'u')
        return -1;
    int lo = hex4(p + 6);
    if (lo < 0xDC00 || lo > 0xDFFF)
        return -1;
    *used = 10;
    return 0x10000 + ((long)(hi - 0xD800) << 10) + (lo - 0xDC00);
}

static int parse_string(struct parser *ps, struct tr_json_tok *t)
{
    ps->pos++; /* the opening quote */
    t->type = TR_JSON_STRING;
    t->start = (uint32_t)ps->pos;
    while (ps->pos < ps->len) {
        unsigned char c = ps->p[ps->pos];
        if (c == '"') {
            t->len = (uint32_t)(ps->pos - t->start);
            ps->pos++;
            return 0;
        }
        if (c < 0x20)
            return fail(ps, "control character in a string");
        if (c == '\\') {
            if (ps->pos + 1 >= ps->len)
                return fail(ps, "unterminated string");
            unsigned char e = ps->p[ps->pos + 1];
            t->escaped = true;
            if (e == 'u') {
                size_t used;
                if (unicode_escape(ps->p + ps->pos + 2, ps->len - ps->pos - 2, &used) < 0)
                    return fail(ps, "bad \\u escape");
                ps->pos += 2 + used;
                continue;
            }
            if (strchr("\"\\/bfnrt", e) == NULL || e == '\0')
                return fail(ps, "bad escape");
            ps->pos += 2;
            continue;
        }
        if (c < 0x80) {
            ps->pos++;
            continue;
        }
        uint32_t cp;
        size_t n, bad;
        if (tr_utf8_decode(ps->p + ps->pos, ps->len - ps->pos, &cp, &n, &bad) != TR_UTF8_OK)
            return fail(ps, "malformed UTF-8");
        ps->pos += n;
    }
    return fail(ps, "unterminated string");
}

static int parse_number(struct parser *ps, struct tr_json_tok *t)
{
    size_t s = ps->pos, i = s;
    const unsigned char *p = ps->p;
    if (i < ps->len && p[i] == '-')
        i++;
    if (i >= ps->len)
        return fail(ps, "bad number");
    if (p[i] == '0') {
        i++;
    } else if (p[i] >= '1' && p[i] <= '9') {
        while (i < ps->len && p[i] >= '0' && p[i] <= '9')
            i++;
    } else {
        return fail(ps, "bad number");
    }
    if (i < ps->len && p[i] == '.') {
        i++;
        size_t d = i;
        while (i < ps->len && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == d)
            return fail(ps, "bad number");
    }
    if (i < ps->len && (p[i] == 'e' || p[i] == 'E')) {
        i++;
        if (i < ps->len && (p[i] == '+' || p[i] == '-'))
            i++;
        size_t d = i;
        while (i < ps->len && p[i] >= '0' && p[i] <= '9')
            i++;
        if (i == d)
            return fail(ps, "bad number");
    }
    if (i - s > 64)
        return fail(ps, "number too long");
    t->type = TR_JSON_NUMBER;
    t->start = (uint32_t)s;
    t->len = (uint32_t)(i - s);
    ps->pos = i;
    return 0;
}

static int parse_value(struct parser *ps, unsigned depth);

/* Two decoded keys compared (the duplicate check). */
static bool keys_equal(const struct tr_json *j, uint32_t a, uint32_t b)
{
    const struct tr_json_tok *ta = &j->tok[a], *tb = &j->tok[b];
    if (!ta->escaped && !tb->escaped)
        return ta->len == tb->len && memcmp(j->text + ta->start, j->text + tb->start, ta->len) == 0;
    char ka[TR_JSON_MAX_KEY], kb[TR_JSON_MAX_KEY];
    long la = tr_json_str(j, a, ka, sizeof(ka)), lb = tr_json_str(j, b, kb, sizeof(kb));
    return la >= 0 && la == lb && memcmp(ka, kb, (size_t)la) == 0;
}

static int parse_container(struct parser *ps, unsigned depth, uint32_t self)
{
    bool object = ps->p[ps->pos] == '{';
    unsigned char close = object ? '}' : ']';
    ps->tok[self].type = object ? TR_JSON_OBJECT : TR_JSON_ARRAY;
    ps->pos++;
    skip_ws(ps);
    if (ps->pos < ps->len && ps->p[ps->pos] == close) {
        ps->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(ps);
        if (object) {
            if (ps->pos >= ps->len || ps->p[ps->pos] != '"')
                return fail(ps, "object key is not a string");
            uint32_t key = ps->n;
            if (parse_value(ps, depth + 1) < 0)
                return -1;
            if (ps->tok[key].len >= TR_JSON_MAX_KEY)
                return fail(ps, "object key too long");
            struct tr_json j = {(const char *)ps->p, ps->tok, ps->n};
            /* Earlier keys of this object: members are key, value pairs. */
            for (uint32_t k = self + 1; k < key; k = ps->tok[k + 1].next) {
                if (keys_equal(&j, k, key))
                    return fail(ps, "duplicate object key");
            }
            skip_ws(ps);
            if (ps->pos >= ps->len || ps->p[ps->pos] != ':')
                return fail(ps, "expected ':'");
            ps->pos++;
            skip_ws(ps);
        }
        if (parse_value(ps, depth + 1) < 0)
            return -1;
        ps->tok[self].n++;
        skip_ws(ps);
        if (ps->pos >= ps->len)
            return fail(ps, "unterminated container");
        unsigned char c = ps->p[ps->pos++];
        if (c == close)
            return 0;
        if (c != ',')
            return fail(ps, "expected ',' or end of container");
    }
}

static int parse_value(struct parser *ps, unsigned depth)
{
    if (depth > TR_JSON_MAX_DEPTH)
        return fail(ps, "nested too deeply");
    skip_ws(ps);
    if (ps->pos >= ps->len)
        return fail(ps, "expected a value");
    if (ps->n >= ps->cap)
        return fail(ps, "too many values");
    uint32_t self = ps->n++;
    struct tr_json_tok *t = &ps->tok[self];
    memset(t, 0, sizeof(*t));
    unsigned char c = ps->p[ps->pos];
    int rc = 0;
    if (c == '{' || c == '[') {
        rc = parse_container(ps, depth, self);
    } else if (c == '"') {
        rc = parse_string(ps, t);
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        rc = parse_number(ps, t);
    } else {
        static const struct {
            const char *word;
            enum tr_json_type type;
        } words[] = {{"null", TR_JSON_NULL}, {"false", TR_JSON_FALSE}, {"true", TR_JSON_TRUE}};
        rc = fail(ps, "unexpected character");
        for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
            size_t wl = strlen(words[i].word);
            if (ps->len - ps->pos >= wl && memcmp(ps->p + ps->pos, words[i].word, wl) == 0) {
                t->type = (uint8_t)words[i].type;
                ps->pos += wl;
                ps->err = NULL;
                rc = 0;
                break;
            }
        }
    }
    ps->tok[self].next = ps->n;
    return rc;
}

bool tr_json_parse(const char *text, size_t len, struct tr_json_tok *tok, uint32_t cap,
                   struct tr_json *out, const char **err)
{
    struct parser ps = {.p = (const unsigned char *)text, .len = len, .tok = tok, .cap = cap};
    if (len > UINT32_MAX / 2) {
        *err = "document too large";
        return false;
    }
    if (parse_value(&ps, 1) < 0) {
        *err = ps.err;
        return false;
    }
    skip_ws(&ps);
    if (ps.pos != len) {
        *err = "text after the value";
        return false;
    }
    *out = (struct tr_json){text, tok, ps.n};
    return true;
}

int tr_json_get(const struct tr_json *j, uint32_t obj, const char *key)
{
    if (obj >= j->n_tok || j->tok[obj].type != TR_JSON_OBJECT)
        return -1;
    size_t kl = strlen(key);
    uint32_t k = obj + 1;
    for (uint32_t i = 0; i < j->tok[obj].n; i++, k = j->tok[k + 1].next) {
        const struct tr_json_tok *t = &j->tok[k];
        if (!t->escaped) {
            if (t->len == kl && memcmp(j->text + t->start, key, kl) == 0)
                return (int)k + 1;
            continue;
        }
        char buf[TR_JSON_MAX_KEY];
        long l = tr_json_str(j, k, buf, sizeof(buf));
        if (l >= 0 && (size_t)l == kl && memcmp(buf, key, kl) == 0)
            return (int)k + 1;
    }
    return -1;
}

uint32_t tr_json_elem(const struct tr_json *j, uint32_t arr, uint32_t i)
{
    uint32_t e = arr + 1;
    while (i-- > 0)
        e = j->tok[e].next;
    return e;
}

/* Append code point cp as UTF-8. */
static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

long tr_json_str(const struct tr_json *j, uint32_t t, char *out, size_t cap)
{
    if (t >= j->n_tok || j->tok[t].type != TR_JSON_STRING)
        return -1;
    const unsigned char *p = (const unsigned char *)j->text + j->tok[t].start;
    size_t len = j->tok[t].len, o = 0;
    for (size_t i = 0; i < len;) {
        char tmp[4];
        size_t add;
        const char *src = tmp;
        if (p[i] != '\\') {
            src = (const char *)p + i;
            add = 1;
            i++;
        } else {
            unsigned char e = p[i + 1];
            i += 2;
            add = 1;
            switch (e) {
            case 'b':
                tmp[0] = '\b';
                break;
            case 'f':
                tmp[0] = '\f';
                break;
            case 'n':
                tmp[0] = '\n';
                break;
            case 'r':
                tmp[0] = '\r';
                break;
            case 't':
                tmp[0] = '\t';
                break;
            case 'u': {
                size_t used;
                long cp = unicode_escape(p + i, len - i, &used);
                if (cp < 0)
                    return -1; /* the parser checked it already */
                i += used;
                add = put_utf8(tmp, (uint32_t)cp);
                break;
            }
            default:
                tmp[0] = (char)e;
                break;
            }
        }
        if (o + add > cap)
            return -1;
        memcpy(out + o, src, add);
        o += add;
    }
    return (long)o;
}

tr_str tr_json_raw_str(const struct tr_json *j, uint32_t t)
{
    if (t >= j->n_tok || j->tok[t].type != TR_JSON_STRING || j->tok[t].escaped)
        return (tr_str){0};
    return tr_str_from(j->text + j->tok[t].start, j->tok[t].len);
}

bool tr_json_int(const struct tr_json *j, uint32_t t, int64_t *v)
{
    if (t >= j->n_tok || j->tok[t].type != TR_JSON_NUMBER)
        return false;
    char buf[72];
    memcpy(buf, j->text + j->tok[t].start, j->tok[t].len);
    buf[j->tok[t].len] = '\0';
    char *end;
    double d = strtod(buf, &end);
    if (*end != '\0' || !(d >= -9007199254740992.0 && d <= 9007199254740992.0))
        return false;
    *v = (int64_t)d;
    return true;
}

void tr_json_unescape(char *text, struct tr_json_tok *tok, uint32_t n)
{
    for (uint32_t t = 0; t < n; t++) {
        if (tok[t].type != TR_JSON_STRING || !tok[t].escaped)
            continue;
        char *p = text + tok[t].start;
        size_t len = tok[t].len, o = 0;
        for (size_t i = 0; i < len;) {
            if (p[i] != '\\') {
                p[o++] = p[i++];
                continue;
            }
            char e = p[i + 1];
            i += 2;
            switch (e) {
            case 'b':
                p[o++] = '\b';
                break;
            case 'f':
                p[o++] = '\f';
                break;
            case 'n':
                p[o++] = '\n';
                break;
            case 'r':
                p[o++] = '\r';
                break;
            case 't':
                p[o++] = '\t';
                break;
            case 'u': {
                size_t used = 0;
                long cp = unicode_escape((const unsigned char *)p + i, len - i, &used);
                if (cp < 0)
                    cp = 0xFFFD; /* the parser refused these: unreachable */
                i += used;
                char tmp[4];
                size_t k = put_utf8(tmp, (uint32_t)cp);
                memcpy(p + o, tmp, k); /* o + k <= i: 6 escape bytes give at most 3 */
                o += k;
                break;
            }
            default:
                p[o++] = e;
                break;
            }
        }
        tok[t].len = (uint32_t)o;
        tok[t].escaped = false;
    }
}
