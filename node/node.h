/**
 * @file node.h
 * The relay node: everything the WebSocket thread owns, in one struct.
 *
 * Ownership: the node owns the lws context, the connection manager (sessions by conn_id), the
 * channel registry, the backend and the token verifier. Every field is read and written on the
 * WebSocket (lws service) thread only, except `signal_pending`, which signal handlers set.
 */
#ifndef RELAY_NODE_H
#define RELAY_NODE_H

#include <signal.h>
#include <stdbool.h>
#include <stdint.h>

#include <libwebsockets.h>

struct ev_loop;

#include "backend.h"
#include "channel.h"
#include "relay/codec.h"
#include "relay/config.h"
#include "relay/hmap.h"
#include "relay/token.h"
#include "pacer.h"
#include "session.h"
#include "stats.h"

_Static_assert(MSGBUF_HEADROOM >= LWS_PRE, "msgbuf headroom must fit the lws frame header");

typedef enum { NODE_RUNNING = 0, NODE_DRAIN_WAIT, NODE_DRAINING, NODE_STOPPED } node_phase;

typedef struct relay_node {
    const relay_config *cfg;
    struct lws_context *ctx;
    struct lws_vhost *vhost;
    token_verifier *tokens;
    backend *backend;
    channel_registry *channels;
    hmap *conns; /* conn_id (8 bytes) -> session */
    relay_stats stats;
    uint64_t next_conn_id;
    codec_limits limits;
    node_phase phase;
    int64_t phase_deadline_ms;
    lws_sorted_usec_list_t tick_sul;
    struct ev_loop *evloop; /* the libev loop lws runs on (ours: see server.c) */
    pacer *pacer;           /* holds broadcast writes for the write delay (pacer.h) */
    void *foreign_loops[1];
    int64_t last_backend_tick_ms;
    int64_t last_trim_ms;
    uint64_t trim_churn;     /* connections opened + open at the last tick */
    bool trim_pending;       /* connections came or went since the heap was last trimmed */
    char *cluster_stats;     /* latest /stats?scope=cluster JSON from the backend, or NULL */
    size_t cluster_nodes;    /* live nodes in it */
    uint64_t cluster_active; /* their connections */
    volatile sig_atomic_t signal_pending;
    int exit_code;
} relay_node;

/* Builds the node from a validated configuration: token keys, backend, lws context listening on
 * cfg->port. Returns NULL with the reason in err. */
relay_node *node_create(const relay_config *cfg, char *err, size_t errlen);

/* Runs the service loop until the node has stopped (after a signal and drain). Returns the
 * process exit code. */
int node_run(relay_node *n);

/* Frees everything. node_destroy(NULL) is a no-op. */
void node_destroy(relay_node *n);

/* Handles a stop request noted by a signal handler (WebSocket thread). */
void node_check_signal(relay_node *n);

/* Async-signal-safe: asks the running node to drain and stop. */
void node_request_stop(relay_node *n);

/* Looks up a live session by connection id. */
session *node_session(relay_node *n, uint64_t conn_id);

/* Queues a direct reply for s (taking the reference) and asks for a writable callback. A full
 * queue closes the connection (1008): replies are never dropped silently. */
void node_reply(relay_node *n, session *s, msgbuf *m);

/* Flow control: a client whose queued plus owed replies reach SESSION_DIRECT_PAUSE stops being
 * read until they drop to SESSION_DIRECT_RESUME. Nothing is dropped; the connection stays. */
void node_flow_control(session *s);

/* Convenience: queues error {code, message, ref}. */
void node_reply_error(relay_node *n, session *s, const char *code, const char *message,
                      codec_blob ref);

/* Asks for a writable callback on s unless one is pending. */
void node_wake(relay_node *n, session *s);

/* node_wake() for broadcasts: subject to the write delay (pacer.h). */
void node_wake_broadcast(relay_node *n, session *s);

/* Closes s with code after its queued replies are written. */
void node_close(relay_node *n, session *s, int code, const char *reason);

/* Closes s with 1001 after everything already queued for it, broadcasts included, is written
 * (drain and shedding: the client resumes elsewhere having missed nothing). */
void node_close_going_away(relay_node *n, session *s, const char *reason);

/* The backend member view of a joined-or-joining session. */
backend_member node_member(const session *s);

/* True while the node accepts traffic and its backend is up (for /readyz). */
bool node_ready(relay_node *n);

#endif
