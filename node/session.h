/**
 * @file session.h
 * Per-connection session state (the seed's SessionState), its direct-reply queue, frame
 * reassembly and rate limiting.
 *
 * State changes only through session_set_state(), which checks the transition, keeps the
 * authenticated/document_joined flags and the stats gauges in step, and logs. A session is owned
 * by the connection manager and freed only at socket close (never inside a chain that may still
 * use it). WebSocket thread only.
 */
#ifndef RELAY_SESSION_H
#define RELAY_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "channel.h"
#include "relay/msgbuf.h"
#include "relay/token.h"
#include "stats.h"

#define SESSION_DIRECT_CAP       32 /* direct replies queued per connection (the seed's mpsc) */
#define SESSION_DIRECT_INLINE    4  /* of those, kept in the session; more use a heap ring */
#define SESSION_DIRECT_PAUSE     24 /* stop reading the client at this many queued replies */
#define SESSION_DIRECT_RESUME    8  /* read again once the queue is down to this */
#define SESSION_CLOSE_REASON_MAX 63 /* bytes of close reason kept (a close frame allows 123) */

typedef enum {
    SESSION_PENDING = 0,   /* registered at upgrade, not authenticated */
    SESSION_AUTHENTICATED, /* authenticate succeeded */
    SESSION_JOINED,        /* join_document succeeded: broadcasts delivered only here */
    SESSION_CLOSED         /* socket closing; nothing more is sent */
} session_state;

typedef enum { RATE_OK = 0, RATE_LIMITED, RATE_ABUSIVE } rate_verdict;

struct lws;

/* Memory: an idle joined connection costs what is in this struct plus its document id, the
 * identity strings and libwebsockets' own per-connection state, so nothing here is sized for the
 * worst case (docs/BENCHMARKS.md, memory). */
typedef struct session {
    uint64_t conn_id;
    struct lws *wsi;
    relay_stats *stats;
    session_state state;
    bool authenticated;
    bool document_joined;
    bool color_from_query;
    bool request_pending; /* an asynchronous authenticate/join is in flight */
    char session_id[33];
    char color[33];
    char *user_id;
    char *user_name;
    token_claims claims; /* valid when authenticated */
    int64_t auth_deadline_ms;

    /* Direct replies, bypassing the gate: a ring of up to SESSION_DIRECT_CAP buffers. The first
     * SESSION_DIRECT_INLINE fit in dq_inline; a longer queue moves to a heap ring of
     * SESSION_DIRECT_CAP (dq_heap) that is given back once the queue is empty again. */
    msgbuf *dq_inline[SESSION_DIRECT_INLINE];
    msgbuf **dq_heap;
    unsigned dq_head, dq_len;
    unsigned inflight; /* requests handed to the backend whose one reply has not come back:
                          they hold a place in the queue, so flow control counts them */
    bool rx_paused;

    channel_sub sub;       /* document + presence read positions */
    msgbuf *carry;         /* taken from a queue but left for the next write */
    uint64_t snapshot_seq; /* seq of the joined_document snapshot: older operations skipped */
    bool write_requested;
    bool write_deferred;       /* waiting in the node's pacer for its write delay to pass */
    double last_write;         /* loop time (s) of the last write, for the write delay */
    double last_arrival;       /* loop time (s) of the last broadcast for this connection */
    double arrival_gap;        /* moving average of the time between broadcasts (s) */
    struct session *pace_prev; /* the pacer's FIFO links (pacer.h) */
    struct session *pace_next;

    /* Reassembly of a fragmented message. */
    uint8_t *rx;
    size_t rx_len, rx_cap;

    /* Token bucket and the abuse window. */
    double tokens;
    int64_t refill_us;
    int64_t window_start_us;
    uint64_t window_count;

    int close_code;          /* non-zero: close with this code once the direct queue is flushed */
    bool close_flush;        /* going away: also deliver broadcasts queued before the close */
    uint64_t flush_until[2]; /* ring positions queued at that moment */
    char *close_reason;      /* set with close_code (owned; never NULL then) */
    char document_id[];      /* from the URL, allocated with the session */
} session;

/* Creates a session in SESSION_PENDING for an upgraded connection. color may be NULL. Counts
 * the connection in stats (active, peak, total). Returns NULL when out of memory. */
session *session_create(uint64_t conn_id, struct lws *wsi, const char *document_id,
                        const char *color, relay_stats *stats);

/* Frees the session, its queue and buffers; it must already be unsubscribed. Moves it to
 * SESSION_CLOSED first so the gauges drop. session_destroy(NULL) is a no-op. */
void session_destroy(session *s);

/* Moves the session to a new state. Returns 0, or -1 (logged, nothing changed) for a transition
 * the lifecycle does not allow. */
int session_set_state(session *s, session_state next);

const char *session_state_name(session_state st);

/* The seed's is_authenticated(): authenticated and a user id. */
bool session_is_authenticated(const session *s);

/* The gate: true only while authenticated and document_joined. */
bool session_can_receive_broadcast(const session *s);

/* Sets the identity after a successful authenticate or resume. Copies every string; keeps a
 * query-string color, else uses color (or a default hashed from user_id when NULL). Returns 0 or
 * -1 when out of memory. */
int session_set_identity(session *s, const char *session_id, const char *user_id,
                         const char *user_name, const char *color, const token_claims *claims);

/* Queues a direct reply, taking the caller's reference. Returns 0, or -1 when the queue is full
 * or its heap ring cannot be allocated (the reference is released either way). */
int session_reply(session *s, msgbuf *m);

/* Replies queued plus replies owed: what flow control compares with the queue's size. */
static inline unsigned session_reply_load(const session *s)
{
    return s->dq_len + s->inflight;
}

/* Removes and returns the oldest queued reply (caller owns it), or NULL. */
msgbuf *session_reply_pop(session *s);

/* Charges one message to the token bucket at time now_us. RATE_ABUSIVE means more than ten
 * times the rate arrived within one second. */
rate_verdict session_rate_charge(session *s, int64_t now_us, int rate, int burst);

/* Appends a fragment to the message being reassembled. Returns 0, or -1 when the message would
 * exceed max bytes or memory runs out. */
int session_rx_append(session *s, const void *data, size_t len, size_t max);
/* Ends the message being reassembled and frees its buffer. */
void session_rx_reset(session *s);

/* Asks for the connection to be closed with code once queued replies are written. The first
 * request wins; reason is copied (at most SESSION_CLOSE_REASON_MAX bytes). */
void session_close_after_flush(session *s, int code, const char *reason);

/* A default color for user_id from a fixed palette (stable across nodes). */
const char *session_default_color(const char *user_id);

/* Returns the session that embeds sub. */
session *session_from_sub(channel_sub *sub);

#endif
