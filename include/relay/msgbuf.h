/**
 * @file msgbuf.h
 * Refcounted, immutable-once-shared message buffers with WebSocket framing headroom.
 *
 * A message to clients is encoded once into a msgbuf and shared by every queue or ring that
 * holds it; each holder owns one reference. The bytes start MSGBUF_HEADROOM bytes into the
 * allocation so libwebsockets can write its frame header in front without copying
 * (MSGBUF_HEADROOM >= LWS_PRE, checked where libwebsockets is included). The refcount is atomic:
 * the Redis thread may create a buffer that the WebSocket thread releases.
 */
#ifndef RELAY_MSGBUF_H
#define RELAY_MSGBUF_H

#include <stddef.h>
#include <stdint.h>

#define MSGBUF_HEADROOM 16

typedef enum { MSGBUF_TEXT = 0, MSGBUF_BINARY = 1 } msgbuf_kind;

typedef struct msgbuf {
    _Atomic uint32_t refs;
    uint8_t kind;      /* msgbuf_kind: the WebSocket frame type it is sent as */
    uint64_t origin;   /* connection id of the sender on this node, 0 if none: not echoed */
    uint64_t seq;      /* document operations: their seq, so a joiner skips what its snapshot
                          already holds; 0 for everything else */
    uint64_t coalesce; /* cursors: a key per session; a lagging reader skips a cursor when a
                          newer one with the same key is waiting. 0: never skipped */
    size_t len;        /* bytes of payload in use */
    size_t cap;        /* bytes of payload allocated */
    uint8_t mem[];     /* MSGBUF_HEADROOM bytes, then cap bytes of payload */
} msgbuf;

/* Allocates a buffer with room for cap payload bytes and one reference held by the caller.
 * Returns NULL when out of memory. */
msgbuf *msgbuf_new(msgbuf_kind kind, size_t cap);

/* Copies len bytes into a new buffer. Returns NULL when out of memory. */
msgbuf *msgbuf_from(msgbuf_kind kind, const void *data, size_t len);

/* Appends len bytes, growing the buffer. Only valid while the caller holds the only reference
 * (while encoding); *mb may move. Returns 0, or -1 when out of memory (the buffer is intact). */
int msgbuf_append(msgbuf **mb, const void *data, size_t len);

static inline uint8_t *msgbuf_data(msgbuf *mb)
{
    return mb->mem + MSGBUF_HEADROOM;
}

/* Takes another reference; returns mb. */
msgbuf *msgbuf_ref(msgbuf *mb);

/* Drops one reference and frees the buffer with the last. msgbuf_unref(NULL) is a no-op. */
void msgbuf_unref(msgbuf *mb);

#endif
