/* codec/h1/h1_chunked.c: streaming, strict chunked transfer coding decoder
 * (RFC 9112 7.1). One byte-driven state machine, so any split of the input
 * gives the same result; no buffering, the caller forwards what we accept.
 *
 *   chunk      = chunk-size [ chunk-ext ] CRLF chunk-data CRLF
 *   chunk-ext  = *( BWS ";" BWS ext-name [ BWS "=" BWS ( token / quoted-string ) ] )
 *   last-chunk = 1*"0" [ chunk-ext ] CRLF, then trailer fields, then CRLF
 *
 * Beyond the grammar we refuse: more than 16 size digits or a size over
 * INT64_MAX, a size line over 4096 bytes, trailers over max_trailer_bytes,
 * and trailer fields that would change framing or routing if a downstream
 * merged them into the header section (Content-Length, Transfer-Encoding,
 * Host).
 */
#include "codec/h1/h1.h"

#define SIZE_LINE_MAX   4096
#define SIZE_DIGITS_MAX 16

enum {
    CS_SIZE_START, /* first hex digit of a chunk size */
    CS_SIZE,       /* more hex digits, or what follows them */
    CS_EXT_WS,     /* BWS that must lead to ';' */
    CS_EXT_NAME0,  /* after ';': BWS then ext-name */
    CS_EXT_NAME,
    CS_EXT_NAME_WS, /* BWS after a name: '=' or ';' */
    CS_EXT_VAL0,    /* after '=': BWS then token or quoted-string */
    CS_EXT_VAL_TOK,
    CS_EXT_VAL_Q,
    CS_EXT_VAL_QESC,
    CS_EXT_VAL_END, /* after the closing quote */
    CS_SIZE_LF,
    CS_DATA,
    CS_DATA_CR,
    CS_DATA_LF,
    CS_TRL_START, /* start of a trailer line, or the final CRLF */
    CS_TRL_NAME,
    CS_TRL_VALUE,
    CS_TRL_LF,
    CS_FINAL_LF,
    CS_DONE,
    CS_ERROR,
};

/* Trailer names refused, matched while streaming: a bit per name in
 * c->remaining (unused during trailers), the position in c->line_len. */
static const struct {
    const char *name;
    uint32_t len;
} forbidden_trailers[] = {
    {"content-length", 14},
    {"transfer-encoding", 17},
    {"host", 4},
};
#define N_FORBIDDEN (sizeof(forbidden_trailers) / sizeof(forbidden_trailers[0]))

static inline int is_class(unsigned char c, unsigned cls)
{
    return (tr_h1_ctype[c] & cls) != 0;
}

static inline unsigned hex_val(unsigned char c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)((c | 0x20) - 'a' + 10);
}

static inline int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t';
}

/* qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text */
static inline int is_qdtext(unsigned char c)
{
    return c == '\t' || c == ' ' || c == 0x21 || (c >= 0x23 && c <= 0x5b) ||
           (c >= 0x5d && c <= 0x7e) || c >= 0x80;
}

void tr_h1_chunked_init(struct tr_h1_chunked *c, uint32_t max_trailer_bytes)
{
    c->state = CS_SIZE_START;
    c->remaining = 0;
    c->line_len = 0;
    c->trailer_bytes = 0;
    c->max_trailer_bytes = max_trailer_bytes;
    c->payload_total = 0;
}

/* A trailer name byte: narrow the set of forbidden names still matching. */
static void trailer_name_byte(struct tr_h1_chunked *c, unsigned char ch)
{
    if (ch >= 'A' && ch <= 'Z')
        ch |= 0x20;
    for (unsigned k = 0; k < N_FORBIDDEN; k++)
        if (c->line_len >= forbidden_trailers[k].len ||
            (unsigned char)forbidden_trailers[k].name[c->line_len] != ch)
            c->remaining &= ~(1ull << k);
    if (c->line_len < 64) /* saturate: only the first 17 bytes matter */
        c->line_len++;
}

static int trailer_name_forbidden(const struct tr_h1_chunked *c)
{
    for (unsigned k = 0; k < N_FORBIDDEN; k++)
        if ((c->remaining & (1ull << k)) && forbidden_trailers[k].len == c->line_len)
            return 1;
    return 0;
}

int tr_h1_chunked_feed(struct tr_h1_chunked *c, const char *buf, size_t len, size_t *consumed,
                       size_t *data_off, size_t *data_len)
{
    size_t i = 0;
    *data_off = 0;
    *data_len = 0;

    while (i < len) {
        unsigned char ch = (unsigned char)buf[i];
        int st = c->state;

        if (st == CS_DATA) {
            size_t n = len - i;
            if (n > c->remaining)
                n = (size_t)c->remaining;
            *data_off = i;
            *data_len = n;
            c->remaining -= n;
            c->payload_total += n;
            if (c->remaining == 0)
                c->state = CS_DATA_CR;
            *consumed = i + n;
            return TR_H1_CHUNKED_MORE; /* one data run per call */
        }
        if (st == CS_DONE) {
            *consumed = i;
            return TR_H1_CHUNKED_DONE;
        }
        if (st == CS_ERROR)
            goto fail;

        /* Every byte from here on is framing; bound the size line. */
        if (st <= CS_SIZE_LF && ++c->line_len > SIZE_LINE_MAX)
            goto fail;

        switch (st) {
        case CS_SIZE_START:
            if (!is_class(ch, TR_H1_C_HEX))
                goto fail; /* "-1", " 1", "", "\r\n" ... */
            c->remaining = hex_val(ch);
            c->state = CS_SIZE;
            break;
        case CS_SIZE:
            if (is_class(ch, TR_H1_C_HEX)) {
                /* line_len counts the digits so far, this one included. */
                if (c->line_len > SIZE_DIGITS_MAX || c->remaining > (uint64_t)INT64_MAX >> 4)
                    goto fail;
                c->remaining = c->remaining << 4 | hex_val(ch);
            } else if (ch == '\r') {
                c->state = CS_SIZE_LF;
            } else if (ch == ';') {
                c->state = CS_EXT_NAME0;
            } else if (is_ws(ch)) {
                c->state = CS_EXT_WS;
            } else {
                goto fail; /* "0x10", "1g", bare LF ... */
            }
            break;
        case CS_EXT_WS:
            if (ch == ';')
                c->state = CS_EXT_NAME0;
            else if (!is_ws(ch))
                goto fail; /* trailing whitespace without an extension */
            break;
        case CS_EXT_NAME0:
            if (is_class(ch, TR_H1_C_TCHAR))
                c->state = CS_EXT_NAME;
            else if (!is_ws(ch))
                goto fail;
            break;
        case CS_EXT_NAME:
            if (is_class(ch, TR_H1_C_TCHAR))
                break;
            if (ch == '\r')
                c->state = CS_SIZE_LF;
            else if (ch == ';')
                c->state = CS_EXT_NAME0;
            else if (ch == '=')
                c->state = CS_EXT_VAL0;
            else if (is_ws(ch))
                c->state = CS_EXT_NAME_WS;
            else
                goto fail;
            break;
        case CS_EXT_NAME_WS:
            if (ch == '=')
                c->state = CS_EXT_VAL0;
            else if (ch == ';')
                c->state = CS_EXT_NAME0;
            else if (!is_ws(ch))
                goto fail;
            break;
        case CS_EXT_VAL0:
            if (is_class(ch, TR_H1_C_TCHAR))
                c->state = CS_EXT_VAL_TOK;
            else if (ch == '"')
                c->state = CS_EXT_VAL_Q;
            else if (!is_ws(ch))
                goto fail;
            break;
        case CS_EXT_VAL_TOK:
        case CS_EXT_VAL_END:
            if (st == CS_EXT_VAL_TOK && is_class(ch, TR_H1_C_TCHAR))
                break;
            if (ch == '\r')
                c->state = CS_SIZE_LF;
            else if (ch == ';')
                c->state = CS_EXT_NAME0;
            else if (is_ws(ch))
                c->state = CS_EXT_WS;
            else
                goto fail;
            break;
        case CS_EXT_VAL_Q:
            if (ch == '"')
                c->state = CS_EXT_VAL_END;
            else if (ch == '\\')
                c->state = CS_EXT_VAL_QESC;
            else if (!is_qdtext(ch))
                goto fail;
            break;
        case CS_EXT_VAL_QESC:
            if (!is_class(ch, TR_H1_C_FVCHAR | TR_H1_C_WS))
                goto fail;
            c->state = CS_EXT_VAL_Q;
            break;
        case CS_SIZE_LF:
            if (ch != '\n')
                goto fail;
            if (c->remaining > UINT64_MAX - c->payload_total)
                goto fail;
            c->line_len = 0;
            c->state = c->remaining ? CS_DATA : CS_TRL_START;
            if (c->state == CS_TRL_START) {
                /* Stop at the trailer section so callers can tell its bytes
                 * from the last chunk's (tr_h1_chunked_in_trailers). */
                *consumed = i + 1;
                return TR_H1_CHUNKED_MORE;
            }
            break;
        case CS_DATA_CR:
            if (ch != '\r')
                goto fail; /* data longer than its size, or a bare LF */
            c->state = CS_DATA_LF;
            break;
        case CS_DATA_LF:
            if (ch != '\n')
                goto fail;
            c->state = CS_SIZE_START;
            break;
        case CS_TRL_START:
            if (ch == '\r') {
                c->state = CS_FINAL_LF;
                break;
            }
            /* SP/HTAB (obs-fold), ':' (empty name), CTLs... */
            if (!is_class(ch, TR_H1_C_TCHAR))
                goto fail;
            c->remaining = (1ull << N_FORBIDDEN) - 1;
            c->line_len = 0;
            trailer_name_byte(c, ch);
            c->state = CS_TRL_NAME;
            break;
        case CS_TRL_NAME:
            if (ch == ':') {
                if (trailer_name_forbidden(c))
                    goto fail;
                c->remaining = 0;
                c->state = CS_TRL_VALUE;
            } else if (is_class(ch, TR_H1_C_TCHAR)) {
                trailer_name_byte(c, ch);
            } else {
                goto fail; /* whitespace before ':', CTLs ... */
            }
            break;
        case CS_TRL_VALUE:
            if (ch == '\r')
                c->state = CS_TRL_LF;
            else if (!is_class(ch, TR_H1_C_FVCHAR | TR_H1_C_WS))
                goto fail;
            break;
        case CS_TRL_LF:
            if (ch != '\n')
                goto fail;
            c->state = CS_TRL_START;
            break;
        case CS_FINAL_LF:
            if (ch != '\n')
                goto fail;
            c->state = CS_DONE;
            *consumed = i + 1;
            return TR_H1_CHUNKED_DONE;
        default:
            goto fail;
        }
        /* Field lines count against the trailer limit; the final CRLF not. */
        if (st >= CS_TRL_START && st <= CS_TRL_LF && c->state != CS_FINAL_LF) {
            if (c->trailer_bytes >= c->max_trailer_bytes)
                goto fail;
            c->trailer_bytes++;
        }
        i++;
    }
    *consumed = i;
    return c->state == CS_DONE ? TR_H1_CHUNKED_DONE : TR_H1_CHUNKED_MORE;

fail:
    c->state = CS_ERROR;
    *consumed = i;
    return TR_H1_E_BAD_REQUEST;
}

int tr_h1_chunked_in_trailers(const struct tr_h1_chunked *c)
{
    return c->state >= CS_TRL_START && c->state <= CS_FINAL_LF;
}
