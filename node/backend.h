/**
 * @file backend.h
 * The seam between the WebSocket side of the node and where documents live.
 *
 * A backend owns sequencing, history, presence and resumable sessions. The memory backend
 * (backend_memory.c) keeps them in this process: a standalone node. The Redis backend (bridge.c)
 * keeps them in Redis and runs its own thread, so every request here is asynchronous: results
 * come back through backend_events, always on the WebSocket thread, possibly before the request
 * call returns (memory) or later (Redis). Connections are named by conn_id, never by pointer,
 * so a result for a connection that has gone away is simply dropped by the node.
 *
 * All functions here are called on the WebSocket thread only.
 */
#ifndef RELAY_BACKEND_H
#define RELAY_BACKEND_H

#include <stdbool.h>
#include <stdint.h>

#include "relay/codec.h"
#include "relay/msgbuf.h"
#include "relay/token.h"
#include "stats.h"

struct lws_context;

typedef enum { CHAN_DOCUMENT = 0, CHAN_PRESENCE = 1 } chan_kind;

/* A joined session as presence sees it. Strings are borrowed for the duration of the call. */
typedef struct backend_member {
    uint64_t conn_id;
    const char *document_id;
    const char *session_id;
    const char *user_id;
    const char *user_name;
    const char *color;
} backend_member;

/* A resumable session. Strings are borrowed for the duration of the call. */
typedef struct backend_session {
    const char *session_id;
    const char *user_id;
    const char *user_name;
    const char *color;
    const char *resume_token;
    const token_claims *claims; /* exp and docs survive a resume */
} backend_session;

/* Results, delivered on the WebSocket thread. msgbufs passed in are owned by the callee. */
typedef struct backend_events {
    void *ctx;
    /* join_document succeeded: reply is the encoded joined_document snapshot, seq its
     * document seq (broadcasts up to it are already in the snapshot). */
    void (*joined)(void *ctx, uint64_t conn_id, uint64_t seq, msgbuf *reply);
    /* A direct reply (ack, sync_response, error) for one connection. */
    void (*reply)(void *ctx, uint64_t conn_id, msgbuf *m);
    /* A broadcast for every local subscriber of a document's channel. */
    void (*publish)(void *ctx, const char *document_id, chan_kind kind, msgbuf *m);
    /* Result of session_resume: s is NULL and error says why when it failed. */
    void (*resumed)(void *ctx, uint64_t conn_id, const backend_session *s, const char *error);
    /* Another connection resumed this connection's session: close it with 4004. */
    void (*taken_over)(void *ctx, uint64_t conn_id);
    /* A document's history was lost: tell its joined clients to reload. */
    void (*reset)(void *ctx, const char *document_id, const char *epoch, uint64_t seq);
    /* Operations of a document could not be recovered: its local subscribers missed them. */
    void (*lagged)(void *ctx, const char *document_id, uint64_t missed);
    /* A new cluster-wide stats document (JSON text, owned by the callee). */
    void (*cluster_stats)(void *ctx, char *json);
} backend_events;

typedef struct backend backend;

typedef struct backend_vtable {
    void (*destroy)(backend *b);
    /* False while the backend cannot serve documents (Redis unreachable). */
    bool (*ready)(backend *b);
    /* Adds m to the document's presence and answers with events->joined; announce publishes
     * user_joined to the others (false for a repeated join). */
    void (*join)(backend *b, const backend_member *m, bool announce);
    /* Removes m from presence if it still owns its entry, publishing user_left. */
    void (*leave)(backend *b, const backend_member *m);
    /* Sequences and stores an operation, publishes it, acks the sender. */
    void (*operation)(backend *b, const backend_member *m, codec_blob ref, codec_blob payload);
    /* Stores the member's latest cursor and publishes it. */
    void (*cursor)(backend *b, const backend_member *m, codec_blob cursor);
    /* Replies with sync_response (or an error) to conn_id. */
    void (*sync)(backend *b, uint64_t conn_id, const char *document_id, uint64_t since,
                 uint32_t limit, codec_blob ref);
    /* Stores or refreshes a session record owned by conn_id (after auth_result). */
    void (*session_save)(backend *b, uint64_t conn_id, const backend_session *s);
    /* conn_id closed: its session becomes resumable for the resume TTL. */
    void (*session_release)(backend *b, uint64_t conn_id, const char *session_id);
    /* Looks up session_id, checks resume_token, installs new_resume_token and conn_id as the
     * owner, tells a previous owner it was taken over, and answers with events->resumed. */
    void (*session_resume)(backend *b, uint64_t conn_id, const char *session_id,
                           const char *resume_token, const char *new_resume_token);
    /* The first local session of a document joined / the last one left: start or stop
     * receiving its broadcasts from elsewhere (Redis SUBSCRIBE). */
    void (*subscribe)(backend *b, const char *document_id);
    void (*unsubscribe)(backend *b, const char *document_id);
    /* Periodic housekeeping (about once a second): expiry of idle state; st is the node's
     * current stats for the cluster view. */
    void (*tick)(backend *b, const relay_stats *st);
    /* Delivers results that arrived from another thread (called when the lws loop is woken). */
    void (*poll)(backend *b);
    /* Starts background work once the lws context exists (the Redis thread). 0 or -1. */
    int (*start)(backend *b, struct lws_context *ctx);
    /* Stops waking the lws context (call before destroying it). */
    void (*detach)(backend *b);
    /* Leaves the cluster cleanly (presence, stats) and stops background work. */
    void (*stop)(backend *b);
} backend_vtable;

struct backend {
    const backend_vtable *vt;
    backend_events ev;
};

typedef struct backend_limits {
    size_t history_length;
    int history_ttl_s;
    uint32_t sync_limit;
    int resume_ttl_s;
    int dedup_window_s;
} backend_limits;

/* The in-process backend of a standalone node. Returns NULL when out of memory. */
backend *backend_memory_create(const backend_events *ev, const backend_limits *lim);

/* Where a cluster node finds Redis and names itself. */
typedef struct backend_redis_config {
    const char *url;    /* redis://[user:password@]host:port[/db] */
    const char *prefix; /* key and channel prefix, e.g. "relay:" */
    const char *node_id;
    int node_ttl_s;
} backend_redis_config;

/* The Redis backend of a cluster node (bridge*.c). Parses the URL; connects once started.
 * Returns NULL with the reason in err. */
backend *backend_redis_create(const backend_events *ev, const backend_limits *lim,
                              const backend_redis_config *rc, char *err, size_t errlen);

static inline void backend_destroy(backend *b)
{
    if (b)
        b->vt->destroy(b);
}

#endif
