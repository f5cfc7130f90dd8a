/* Shared helpers for the codec/h2 tests: a recording owner, an in-memory
 * client/server pair, a raw frame builder for attacks, and a parser for what
 * the codec writes. */
#ifndef TR_TEST_H2_UTIL_H
#define TR_TEST_H2_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/h2/h2.h"

/* Growable byte string. */
struct bytes {
    uint8_t *p;
    size_t len, cap;
};
void bytes_add(struct bytes *b, const void *p, size_t n);
void bytes_free(struct bytes *b);

#define MAX_STREAMS 1024
#define MAX_HDRS    64

/* What one stream looked like to an owner. */
struct rec_stream {
    int32_t id;
    int nheaders_blocks;
    char headers[4][512]; /* "name: value\n" per field, per block */
    bool headers_end[4];
    bool headers_trailers[4];
    uint64_t data_len;
    uint64_t data_hash; /* FNV-1a */
    bool data_end;
    int data_calls;
    bool closed;
    uint32_t close_code;
    int writable;
};

/* Recording owner. Optional behaviour knobs are read by the callbacks. */
struct rec {
    struct tr_h2 *h2;
    struct rec_stream s[MAX_STREAMS];
    int n;
    bool consume_now;    /* tr_h2_consume each chunk at once */
    bool reject_headers; /* return nonzero from on_headers */
    bool goaway_seen;
    int32_t goaway_last;
    uint32_t goaway_code;
    int headers_calls;
    int close_calls;
};
extern const struct tr_h2_ops rec_ops;
struct rec_stream *rec_get(struct rec *r, int32_t id); /* creates if new */
struct rec_stream *rec_find(struct rec *r, int32_t id);

uint64_t fnv(uint64_t h, const uint8_t *p, size_t n);
#define FNV_INIT 1469598103934665603ull

/* Move every pending byte between a client and a server until both are
 * quiet, handing output over in pieces of at most `chunk` bytes. Returns the
 * number of rounds, or -1 if a feed failed. */
int pair_pump(struct tr_h2 *c, struct tr_h2 *s, size_t chunk);
/* Everything h2 wants to write, appended to out (pieces of `chunk`). */
size_t drain(struct tr_h2 *h2, struct bytes *out, size_t chunk);

/* Raw frames. */
void frame(struct bytes *b, uint8_t type, uint8_t flags, uint32_t stream, const void *payload,
           size_t len);
void client_preface(struct bytes *b, bool ack_settings);
/* HPACK block for a simple GET request on stream (literal, no indexing). */
size_t hpack_request(uint8_t *out, size_t cap, const char *path);
void raw_request(struct bytes *b, uint32_t stream, bool end_stream);

/* Parsing what a codec wrote (server output, or client output after the
 * preface when skip_preface is set). */
struct frame_info {
    uint8_t type, flags;
    uint32_t stream;
    uint32_t len;
    const uint8_t *payload;
};
/* Returns the number of frames, or -1 if the bytes are not whole frames. */
int parse_frames(const uint8_t *p, size_t len, bool skip_preface, struct frame_info *out, int max);
/* Last GOAWAY error code in p, or -1 if none. */
int64_t find_goaway(const uint8_t *p, size_t len);
/* RST_STREAM error code for stream in p, or -1 if none. */
int64_t find_rst(const uint8_t *p, size_t len, uint32_t stream);
int count_frames(const uint8_t *p, size_t len, uint8_t type);

#define H(n, v)                                                                                    \
    {                                                                                              \
        TR_STR_LIT(n), TR_STR_LIT(v)                                                               \
    }

#endif
