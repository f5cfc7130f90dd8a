/* core/fmt.h: bounded appending of formatted text.
 *
 * A tr_fmt appends to one buffer and never writes past its capacity. It is
 * either
 *   - fixed: the caller's array (an access-log line), or
 *   - growable: malloc'd by the tr_fmt and doubled as needed up to a maximum
 *     text length (a metrics scrape, a config dump).
 * Every append is all or nothing: a piece that does not fit is not appended
 * at all and `truncated` is set (and stays set). So the text is always a
 * sequence of whole pieces (never half an escape or half a UTF-8 sequence),
 * `len` is the number of bytes really written, and the caller decides what a
 * truncation means: an error for a document that must be complete, a visible
 * mark for a log line. The text is always NUL-terminated; the NUL is not
 * counted in `len` and takes one byte of a fixed array.
 *
 * Escapers take untrusted bytes (s, n): NUL bytes included, invalid UTF-8
 * included. A byte that does not start a valid UTF-8 sequence (RFC 3629: no
 * overlongs, no surrogates, nothing above U+10FFFF) becomes U+FFFD; valid
 * sequences are copied unchanged.
 */
#ifndef TR_CORE_FMT_H
#define TR_CORE_FMT_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct tr_fmt {
    char *p;        /* text; NULL only for a growable tr_fmt before its first append */
    size_t len;     /* bytes of text, always <= max */
    size_t size;    /* bytes at p */
    size_t max;     /* most bytes of text (fixed: size - 1) */
    bool growable;  /* p is malloc'd and owned by this tr_fmt */
    bool truncated; /* some append did not fit and was dropped */
    bool oom;       /* growing failed (truncated is set too) */
};

/* Append into buf[0, size), size >= 1. Nothing is allocated; nothing to free. */
void tr_fmt_init_fixed(struct tr_fmt *f, char *buf, size_t size);
/* Append into a malloc'd buffer of at most max bytes of text. Release with
 * tr_fmt_take or tr_fmt_free. */
void tr_fmt_init_growable(struct tr_fmt *f, size_t max);
/* Growable only: hand the text over (malloc'd, NUL-terminated, caller frees)
 * and its length; NULL if anything was truncated (or growing failed), in
 * which case the buffer is freed. Either way f is left empty, its flags
 * still readable. */
char *tr_fmt_take(struct tr_fmt *f, size_t *len);
/* Free a growable buffer (no-op for a fixed one). */
void tr_fmt_free(struct tr_fmt *f);
/* Drop the text after an earlier length (e.g. a field that only half fit).
 * `truncated` stays as it is. */
void tr_fmt_rewind(struct tr_fmt *f, size_t len);

/* Each append returns false, appending nothing, if its whole output does not
 * fit; `truncated` is then set. */
bool tr_fmt_printf(struct tr_fmt *f, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool tr_fmt_vprintf(struct tr_fmt *f, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
bool tr_fmt_bytes(struct tr_fmt *f, const void *p, size_t n);
bool tr_fmt_cstr(struct tr_fmt *f, const char *s);

/* Whether s[0, n) is valid UTF-8 (RFC 3629), what the escapers below copy
 * without a U+FFFD. */
bool tr_fmt_utf8_valid(const char *s, size_t n);

/* A JSON string (RFC 8259), quotes included: '"' and '\' backslash-escaped,
 * control characters (< 0x20) and DEL as \u00XX, invalid UTF-8 as \ufffd.
 * Characters YAML does not allow raw (C1 controls U+0080-U+009F, U+2028,
 * U+2029, U+FEFF, U+FFFE, U+FFFF) as \uXXXX too, so the text also reads as
 * YAML 1.2 (a configuration written as JSON, config/write.h). */
bool tr_fmt_json_str(struct tr_fmt *f, const char *s, size_t n);
/* As tr_fmt_json_str, but when the whole string does not fit, appends the
 * quoted escape of its longest prefix that does (cut between characters,
 * never inside an escape or a UTF-8 sequence) and sets `truncated`. Returns
 * false, appending nothing, only when not even the two quotes fit. */
bool tr_fmt_json_str_prefix(struct tr_fmt *f, const char *s, size_t n);
/* A C string as JSON, or null for NULL. */
bool tr_fmt_json_cstr(struct tr_fmt *f, const char *s);

/* A YAML 1.2 double-quoted scalar, quotes included: '"' and '\' escaped,
 * tab, LF and CR as \t \n \r, other control characters, DEL and C1
 * controls as \xXX, U+2028, U+2029, U+FEFF, U+FFFE and U+FFFF as \uXXXX
 * (what a YAML reader must not see raw, or would fold or strip), invalid
 * UTF-8 as \ufffd. Every other character is copied, so any valid UTF-8
 * string reads back exactly. */
bool tr_fmt_yaml_str(struct tr_fmt *f, const char *s, size_t n);

/* A Prometheus label value without its quotes (text exposition format
 * 0.0.4): '\' as \\, '"' as \", newline as \n; invalid UTF-8 as U+FFFD. */
bool tr_fmt_prom_label_value(struct tr_fmt *f, const char *s, size_t n);

/* ---- field paths in a fixed buffer ----
 * Messages name the field they are about ("spec.http[2].route"); the model
 * writer and the compilers move such a path at every field they visit, so
 * it is plain copies, no format. path[0, *len) of size bytes: appends
 * ".key" ("key" when empty) or "[i]", cut where the buffer is full, always
 * NUL-terminated; returns the length before, which tr_path_pop restores. */
size_t tr_path_push_key(char *path, size_t size, size_t *len, const char *key);
size_t tr_path_push_index(char *path, size_t size, size_t *len, size_t i);
void tr_path_pop(char *path, size_t *len, size_t saved);

#endif
