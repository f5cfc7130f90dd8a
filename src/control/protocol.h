/* control/protocol.h: the control-plane protocol's messages (docs/control.md).
 *
 * Every body of the protocol is a sequence of messages, each a header line
 * and a payload:
 *
 *     TYPE SP VERSION SP LENGTH LF PAYLOAD
 *
 * TYPE is one of the names below, VERSION and LENGTH are decimal (no sign,
 * no leading zero, at most 19 digits), LENGTH at most TR_CP_MAX_PAYLOAD.
 * The header line is at most TR_CP_MAX_HEADER bytes. Anything else ends the
 * exchange: the reader refuses it with a reason, it never guesses. The same
 * framing carries the pushed model (`model`), the trust bundle (`bundle`),
 * an issued certificate chain (`cert`) and the proxy's answers (`ack`,
 * `nack` with the loader's message as payload), so one small parser
 * (fuzzed: fuzz/fuzz_control_msg.c) reads everything either side receives.
 */
#ifndef TR_CONTROL_PROTOCOL_H
#define TR_CONTROL_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TR_CP_MAX_HEADER  64
#define TR_CP_MAX_PAYLOAD (16u * 1024u * 1024u) /* the model loader's file limit */

/* Paths (HTTP/2 over mutual TLS, ALPN h2). */
#define TR_CP_PATH_CERT   "/v1/certificate" /* POST: a CSR in, cert + bundle messages out */
#define TR_CP_PATH_STREAM "/v1/stream"      /* GET ?workload=NS/NAME: model, bundle... pushed */
#define TR_CP_PATH_ACK    "/v1/ack"         /* POST: one ack or nack message */

enum tr_cp_type {
    TR_CP_MODEL = 0,
    TR_CP_BUNDLE,
    TR_CP_CERT,
    TR_CP_ACK,
    TR_CP_NACK,
    TR_CP_N_TYPES,
};

const char *tr_cp_type_name(enum tr_cp_type t);

/* The header line of a message into out (at least TR_CP_MAX_HEADER bytes).
 * Returns its length. */
size_t tr_cp_header(char *out, enum tr_cp_type t, uint64_t version, size_t len);

typedef int (*tr_cp_msg_cb)(void *arg, enum tr_cp_type t, uint64_t version, const char *payload,
                            size_t len);

/* An incremental reader: bytes in any pieces, one callback per complete
 * message (its payload NUL-terminated, valid during the call). max_payload
 * (<= TR_CP_MAX_PAYLOAD) bounds what one message may carry, so a reader
 * holds at most that much. */
struct tr_cp_reader {
    size_t max_payload;
    char hdr[TR_CP_MAX_HEADER];
    size_t hdr_len;
    bool in_payload;
    enum tr_cp_type type;
    uint64_t version;
    size_t want, got;
    char *payload; /* owned; want + 1 bytes while in_payload */
};

void tr_cp_reader_init(struct tr_cp_reader *r, size_t max_payload);
void tr_cp_reader_free(struct tr_cp_reader *r);
/* Returns 0, the callback's nonzero result (reading stops), or -1 with
 * *why set (a static string) when the bytes break the framing. */
int tr_cp_read(struct tr_cp_reader *r, const uint8_t *data, size_t len, tr_cp_msg_cb cb, void *arg,
               const char **why);
/* True between messages (nothing half-read). */
bool tr_cp_reader_idle(const struct tr_cp_reader *r);

#endif
