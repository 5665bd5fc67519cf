/**
 * @file bridge.h
 * The Redis bridge of a cluster node (private to bridge*.c and backend_redis.c).
 *
 * Threads: the WebSocket thread calls the backend vtable (backend_redis.c), which turns each
 * request into a bcmd and pushes it onto `to_redis`, waking the Redis thread with
 * event_active(). The Redis thread (bridge.c) runs a libevent loop with two hiredis async
 * connections — `cmd` for commands and scripts, `sub` for SUBSCRIBE — and collects results as
 * bevts in a batch that goes onto `to_lws` as one item, waking the WebSocket thread with
 * lws_cancel_service() when the queue was empty. Nothing else is shared: every field below the
 * "Redis thread only" line is touched by the Redis thread alone; `ready` and `lws_backlog` are
 * atomics both use.
 *
 * Batching: everything the Redis thread does starts in one of its event handlers (a hiredis
 * socket readable or writable, the wake from the WebSocket thread, the timer). Commands issued
 * during a turn of the loop are written to Redis with one write per connection after its
 * handlers, and events produced go to the WebSocket thread as one batch then (bridge_flush), so
 * a read of many replies costs one write, one queue hand-off and at most one wake.
 */
#ifndef RELAY_BRIDGE_H
#define RELAY_BRIDGE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/async.h>

#include "backend.h"
#include "bridge_scripts.h"
#include "bridge_wire.h"
#include "relay/hmap.h"
#include "relay/queue.h"

#define BRIDGE_QUEUE_CAP          262144
#define BRIDGE_PING_EVERY_MS      1000
#define BRIDGE_PING_DEADLINE_MS   3000
#define BRIDGE_CANARY_DEADLINE_MS 4000
#define BRIDGE_UNSUB_LINGER_MS    1500
#define BRIDGE_SUB_BATCH          128
#define BRIDGE_EVENT_BATCH        64 /* events per hand-off to the WebSocket thread */

/* ---- WebSocket thread -> Redis thread ----------------------------------------------------- */

typedef enum {
    BC_JOIN,
    BC_LEAVE,
    BC_OP,
    BC_CURSOR,
    BC_SYNC,
    BC_SUBSCRIBE,
    BC_UNSUBSCRIBE,
    BC_SESSION_SAVE,
    BC_SESSION_RELEASE,
    BC_SESSION_RESUME,
    BC_STATS,
    BC_STOP
} bcmd_kind;

/* One request. Strings and blobs point into `data`, owned with the command (one allocation). */
typedef struct bcmd {
    bcmd_kind kind;
    uint64_t conn_id;
    bool announce;
    bool has_docs;
    uint64_t since;
    uint32_t limit;
    int64_t exp;
    relay_stats stats;
    const char *doc, *sid, *user_id, *user_name, *color, *rt, *new_rt;
    codec_blob ref, blob; /* blob: payload, cursor, or the docs claim as a msgpack array */
    size_t used, cap;
    char data[];
} bcmd;

/* ---- Redis thread -> WebSocket thread ----------------------------------------------------- */

typedef enum {
    BE_JOINED,
    BE_REPLY,
    BE_PUBLISH,
    BE_RESUMED,
    BE_TAKEN_OVER,
    BE_RESET,
    BE_LAGGED,
    BE_CLUSTER_STATS
} bevt_kind;

typedef struct bevt {
    bevt_kind kind;
    uint64_t conn_id;
    chan_kind chan;
    uint64_t seq;    /* JOINED, RESET */
    uint64_t missed; /* LAGGED */
    msgbuf *m;       /* JOINED, REPLY, PUBLISH */
    char *text;      /* CLUSTER_STATS json, RESUMED error */
    char doc[129];
    char epoch[33];
    /* RESUMED */
    char *sid, *user_id, *user_name, *color, *rt;
    token_claims claims;
} bevt;

/* Events handed to the WebSocket thread together: one queue item, one wake. Events keep the
 * order in which they were produced, within and across batches. */
typedef struct bevt_batch {
    size_t n;
    bevt ev[BRIDGE_EVENT_BATCH];
} bevt_batch;

/* Per-document state on the Redis thread. */
typedef struct bdoc {
    char id[129];
    int local;           /* local subscribers that asked for it (subscribe - unsubscribe) */
    bool subscribed;     /* SUBSCRIBE sent and not UNSUBSCRIBE */
    int64_t unsub_at_ms; /* when local reached 0: unsubscribe after the linger */
    bool has_base;       /* epoch/last_seq known */
    char epoch[33];
    char next_epoch[17];   /* the epoch scripts create if the document has none: drawn once and
                              kept until Redis adopts it (no getrandom per operation) */
    struct doc_keys *keys; /* its key and channel names, formatted once (bridge_keys_for) */
    uint64_t last_seq;     /* last operation delivered to the WebSocket thread */
    bool repairing;        /* a history fetch is in flight */
    wire_buf *pending;     /* live document messages that arrived ahead of a gap */
    size_t n_pending, cap_pending;
} bdoc;

/* A local presence entry, kept to re-register after Redis comes back. */
typedef struct bmember {
    char doc[129];
    char sid[33];
    uint64_t conn_id;
    wire_buf value; /* [user_id, user_name, color] */
} bmember;

typedef enum { LINK_DOWN = 0, LINK_CONNECTING, LINK_UP } link_state;

typedef struct bridge {
    backend base; /* must be first: the WebSocket thread sees a backend */
    backend_limits lim;
    char *host, *user, *password, *prefix, *node_id;
    int port, db, node_ttl;
    pthread_mutex_t ctx_lock; /* guards lws_ctx: the WebSocket thread detaches it */
    struct lws_context *lws_ctx;
    queue *to_redis, *to_lws;
    struct event_base *evbase;
    struct event *wake_ev, *timer_ev, *flush_ev;
    pthread_t thread;
    bool thread_started;
    _Atomic bool ready;
    _Atomic bool stopped;
    _Atomic size_t lws_backlog; /* events produced and not yet delivered: bounded by
                                   BRIDGE_QUEUE_CAP, so a full hand-off fails when produced */
    /* WebSocket thread only */
    bool stopping;
    /* ---- Redis thread only ---- */
    redisAsyncContext *cmd, *sub;
    link_state state;
    bool cmd_ok, sub_ok;
    int64_t link_up_ms, next_connect_ms, backoff_ms;
    int64_t ping_sent_ms, last_pong_ms, last_canary_ms, last_beat_ms, last_reply_ms;
    bool ping_outstanding;
    char sha[SCRIPT_COUNT][41];
    hmap *docs;    /* doc id -> bdoc */
    hmap *members; /* "doc\tsid" -> bmember */
    relay_stats stats;
    char s_history_ttl[16], s_history_len[24], s_dedup_ttl[16]; /* limits as script arguments */
    bcmd **deferred; /* leaves and releases that arrived while Redis was down */
    size_t n_deferred, cap_deferred;
    bool stop_requested;
    int64_t stop_at_ms;
    int stop_pending;           /* replies still awaited before the loop may exit */
    bevt_batch *out;            /* events not yet handed over (bridge_flush) */
    bool flush_armed;           /* flush_ev is active: bridge_flush runs before the next poll */
    redisAsyncContext *writing; /* the connection being written by bridge_flush, if any */
    char ctl_channel[300];      /* our control channel, formatted once */
    char *fmt;                  /* reusable buffer for formatting commands */
    size_t fmt_cap;
    wire_buf op_prefix, op_suffix; /* reusable buffers for the op script's arguments */
} bridge;

/* bridge.c */
int bridge_thread_start(bridge *b);
void bridge_thread_join(bridge *b);
void bridge_wake(bridge *b);
void bridge_exit_loop(bridge *b);
int bridge_subscribe(bridge *b, const char **channels, size_t n, bool unsubscribe);
/* Adds a copy of *e to the batch for the WebSocket thread (handed over at the end of the
 * current handler, bridge_flush). On success what e points to (m, text, strings, claims) belongs
 * to the batch; returns -1 when the WebSocket thread is that far behind or out of memory, and
 * the caller still owns it. Redis thread only. */
int bridge_emit(bridge *b, const bevt *e);
/* bridge_emit() for a heap event: on success the batch owns its contents and e itself is freed;
 * on -1 the caller still owns e. */
int bridge_push_event(bridge *b, bevt *e);
/* Arranges for the commands queued in this turn of the loop to be written (one write per
 * connection) and the events produced to be handed to the WebSocket thread (one queue item, a
 * wake only when it was idle) once this turn's handlers have run. Redis thread only; every
 * event handler of the Redis thread ends with it. */
void bridge_flush(bridge *b);
/* Frees an event and everything it owns. bridge_event_free(NULL) is a no-op. */
void bridge_event_free(bevt *e);
/* Frees what an event owns, not the event itself (events inside a batch). */
void bridge_event_clear(bevt *e);
/* Frees a batch and every event still in it. bridge_batch_free(NULL) is a no-op. */
void bridge_batch_free(bevt_batch *batch);
void bridge_reply_error(bridge *b, uint64_t conn_id, const char *code, const char *message,
                        codec_blob ref);
bool bridge_link_up(const bridge *b);
/* Notes that Redis answered (reply non-NULL): a busy link is a live one, even while a PING waits
 * behind a long pipeline. */
void bridge_saw_reply(bridge *b, const void *reply);
void bridge_link_down(bridge *b, const char *why);
/* Queues EVALSHA of script s with nkeys keys then nargs arguments (lens NULL: all are C
 * strings). The command is formatted here into a reused buffer and written at the end of the
 * handler. Returns 0, or -1 when the link is down or out of memory (fn is not called). */
int bridge_evalsha(bridge *b, redisCallbackFn *fn, void *privdata, bridge_script s, int nkeys,
                   int nargs, const char **argv, const size_t *lens);
void bridge_owner(const bridge *b, uint64_t conn_id, char *out, size_t outlen);
void bridge_new_epoch(char out[17]);
/* The epoch a script should create for doc if Redis has none (see bdoc.next_epoch). */
void bridge_epoch_candidate(bridge *b, const char *doc, char out[17]);

/* Keys and channels of one document (docs/REDIS.md). */
typedef struct doc_keys doc_keys;
struct doc_keys {
    char epoch[300], seq[300], hist[300], presence[300], owners[300], cursors[300];
    char ops_ch[300], pres_ch[300], members[300];
};

/* bridge_docs.c */
void bridge_doc_keys(const bridge *b, const char *doc, doc_keys *k);
/* The keys of doc: those formatted once for a known document, else formatted into scratch. */
const doc_keys *bridge_keys_for(bridge *b, const char *doc, doc_keys *scratch);
bdoc *bridge_doc(bridge *b, const char *doc, bool create);
/* A reply showed the document at (epoch, seq): set the base of a new document, or reset and
 * repair when the epoch changed, or repair when seq is ahead of what was delivered. */
void bridge_docs_set_base(bridge *b, const char *doc, const char *epoch, size_t len, uint64_t seq);
/* A reply showed the document's epoch: reset and repair if it changed. */
void bridge_docs_check_epoch(bridge *b, const char *doc, const char *epoch, size_t len);
void bridge_docs_subscribe(bridge *b, const char *doc);
void bridge_docs_unsubscribe(bridge *b, const char *doc);
void bridge_docs_on_message(bridge *b, const char *channel, size_t clen, const char *data,
                            size_t len);
void bridge_docs_resync(bridge *b);
void bridge_docs_tick(bridge *b, int64_t now);
void bridge_docs_free(bridge *b);

/* bridge_requests.c: document requests; each takes ownership of c. */
void bridge_docs_join(bridge *b, bcmd *c);
void bridge_docs_leave(bridge *b, bcmd *c);
void bridge_docs_op(bridge *b, bcmd *c);
void bridge_docs_cursor(bridge *b, bcmd *c);
void bridge_docs_sync(bridge *b, bcmd *c);
/* Keeps c to run when Redis is back (leaves, releases). Takes ownership. */
void bridge_defer(bridge *b, bcmd *c);
void bridge_requests_replay(bridge *b);

/* bridge_cluster.c */
void bridge_cluster_heartbeat(bridge *b);
void bridge_cluster_on_control(bridge *b, const char *data, size_t len);
void bridge_session_save(bridge *b, bcmd *c);
void bridge_session_release(bridge *b, bcmd *c);
void bridge_session_resume(bridge *b, bcmd *c);
void bridge_cluster_leave(bridge *b);

#endif
