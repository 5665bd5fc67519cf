/**
 * @file channel.h
 * In-process channels: per document, a document ring (operations, capacity 1024) and a
 * presence ring (cursors, join/leave, capacity 256), plus the local subscribers of both.
 *
 * A broadcast is published once into a ring and shared by every subscriber, each reading at its
 * own position (see ring.h for the lag rule). A document's channels are created when its first
 * local session subscribes and freed when its last one leaves. The registry calls `wake` for
 * each subscriber a publish gives something to read, so the owner can ask for a writable
 * callback. WebSocket thread only.
 */
#ifndef RELAY_CHANNEL_H
#define RELAY_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"
#include "relay/ring.h"

typedef struct channel_doc channel_doc;
typedef struct channel_registry channel_registry;

/* A subscriber, embedded in its owner (the session). pos/missed are per channel kind. */
typedef struct channel_sub {
    struct channel_sub *prev, *next;
    channel_doc *doc; /* NULL when not subscribed */
    uint64_t pos[2];
    uint64_t missed[2];
    uint64_t self; /* origin id of what this subscriber publishes: never delivered back */
} channel_sub;

typedef void (*channel_wake_fn)(channel_sub *sub, void *ud);

/* Returns a registry, or NULL when out of memory. */
channel_registry *channel_registry_create(size_t document_capacity, size_t presence_capacity,
                                          channel_wake_fn wake, void *ud);
/* Frees every channel; subscribers must have left. channel_registry_destroy(NULL) is a no-op. */
void channel_registry_destroy(channel_registry *reg);

/* Subscribes sub to document_id's channels, creating them on first use; sub starts reading at
 * the current head, so it sees only what is published from now on. Returns 1 if this created
 * the document's channels (the first local subscriber), 0 if they existed, -1 when out of
 * memory (sub unchanged). */
int channel_subscribe(channel_registry *reg, const char *document_id, channel_sub *sub);

/* Unsubscribes sub (no-op when not subscribed). Returns 1 when it was the document's last local
 * subscriber (its channels are freed), else 0. */
int channel_unsubscribe(channel_registry *reg, channel_sub *sub);

/* Publishes m (taking the caller's reference) into document_id's channel of the given kind and
 * wakes its subscribers. Without local subscribers the message is released: nobody here needs
 * it. A subscriber that is up to date steps over its own message at once, so a client that
 * sends without reading never lags on what it would not receive anyway. */
void channel_publish(channel_registry *reg, const char *document_id, chan_kind kind, msgbuf *m);

/* The next message for sub on a channel kind, as ring_peek(); NULL when none. */
msgbuf *channel_peek(channel_sub *sub, chan_kind kind);

/* True when sub is more than half a ring behind on kind and a newer message with the same
 * coalesce key as m (the message at its position) is waiting: m can be skipped. */
bool channel_superseded(const channel_sub *sub, chan_kind kind, const msgbuf *m);

/* Releases ring messages every local subscriber has already read, so idle documents hold no
 * broadcasts, and frees a ring once all of it has been read (the next publish creates a new one,
 * positions carrying on). Cost: one pass over the subscribers; called about once a second. */
void channel_registry_trim(channel_registry *reg);

/* Current ring heads of sub's document (0 when not subscribed) into heads[2]. */
void channel_heads(const channel_sub *sub, uint64_t heads[2]);

/* Document id of the channels sub is subscribed to, NULL if none. */
const char *channel_doc_id(const channel_doc *doc);

/* Number of documents with local subscribers. */
size_t channel_registry_count(const channel_registry *reg);

/* Calls fn for every subscriber of document_id. */
void channel_each_sub(channel_registry *reg, const char *document_id,
                      void (*fn)(channel_sub *sub, void *ud), void *ud);

#endif
