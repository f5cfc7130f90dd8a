/* listener/listener.h: accepting connections and deciding what they are.
 *
 * Accept -> (detect: TLS ClientHello / HTTP/1 / HTTP/2 preface / opaque) ->
 * (mTLS handshake per the listener's mode) -> the HTTP or TCP session. */
#ifndef TR_LISTENER_H
#define TR_LISTENER_H

#include <stdint.h>

#include "event/loop.h"

/* Event callback of a listening socket (struct tr_listener_rt). */
void tr_listener_on_accept(struct tr_io *io, uint32_t events);
/* Callback of a retired listener whose event was already queued: ignores it. */
void tr_listener_on_accept_closed(struct tr_io *io, uint32_t events);
/* Timer: accept again after EMFILE/ENFILE (no new edge would come). */
void tr_listener_on_retry(struct tr_timer *t);

#endif
