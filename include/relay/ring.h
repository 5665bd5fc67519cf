/**
 * @file ring.h
 * A broadcast ring: one writer, many readers, each reader with its own position.
 *
 * Messages get consecutive positions. The ring keeps the newest `capacity` of them; a reader
 * that falls further behind loses the oldest ones (lag = drop oldest) and is told exactly how
 * many it missed, so for every reader: messages read + missed = messages published since it
 * joined. The ring holds one msgbuf reference per stored message. It does no I/O and is not
 * thread-safe: its owner (the WebSocket thread) is the only user.
 */
#ifndef RELAY_RING_H
#define RELAY_RING_H

#include <stddef.h>
#include <stdint.h>

#include "relay/msgbuf.h"

typedef struct ring ring;

/* Returns a ring of the given capacity (> 0), or NULL when out of memory. */
ring *ring_create(size_t capacity);

/* Releases every stored message and the ring. ring_destroy(NULL) is a no-op. */
void ring_destroy(ring *r);

/* Stores mb (taking the caller's reference) at position ring_head(r), overwriting and releasing
 * the oldest message when full. */
void ring_publish(ring *r, msgbuf *mb);

/* Position the next published message will get; a new reader starts here. */
uint64_t ring_head(const ring *r);

size_t ring_capacity(const ring *r);

/* Returns the message at *pos without taking a reference (valid until the next publish), or
 * NULL when the reader is up to date. If the message at *pos was overwritten, *pos first jumps
 * to the oldest retained message and the number skipped is added to *missed. The caller
 * advances *pos by one after consuming the returned message. */
msgbuf *ring_peek(const ring *r, uint64_t *pos, uint64_t *missed);

/* Releases every retained message at a position before pos: no reader will ask for them (the
 * caller passes the lowest reader position). Lets an idle document hold no messages. */
void ring_release_before(ring *r, uint64_t pos);

/* The message at pos without a reference, or NULL when pos is not retained. */
msgbuf *ring_at(const ring *r, uint64_t pos);

#endif
