/* The node's lifetime: building the lws context and its parts, the service loop, the periodic
 * tick, and the drain that ends it. */
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>

#include "handlers.h"
#include "listener.h"
#include "node.h"
#include "relay/clock.h"
#include "relay/log.h"
#include "ws.h"

#define NODE_TICK_US (250 * 1000)

/* Dead peers (no FIN: a pulled cable, a sleeping laptop) are found by WebSocket pings: one
 * after 30 s without traffic, hang up after 70 s. Keeps load balancer idle timeouts happy too. */
static const lws_retry_bo_t node_idle_policy = {
    .secs_since_valid_ping = 30,
    .secs_since_valid_hangup = 70,
};

/* The node lws' signal callback reports to (one node per process). */
static relay_node *node_signal_target;

static const struct lws_protocols node_protocols[] = {
    /* rx_buffer_size is allocated for every connection (lws' rx_ubuf) but only carries control
     * frames: data frames reach us in place, up to this many bytes per callback, and ws.c
     * reassembles longer ones. tx_packet_size caps each send(): without it lws cuts writes at
     * rx_buffer_size, and a coalesced batch (ws.c) would leave 1 KiB per writable round trip. */
    {"relay", ws_callback, sizeof(ws_pss), 512, 0, NULL, WS_SEND_MAX},
    {"relay-accept", listener_callback, sizeof(listener_pss), 0, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

session *node_session(relay_node *n, uint64_t conn_id)
{
    return hmap_get(n->conns, &conn_id, sizeof conn_id);
}

void node_wake(relay_node *n, session *s)
{
    (void)n;
    if (!s->write_requested) {
        s->write_requested = true;
        lws_callback_on_writable(s->wsi);
    }
}

void node_wake_broadcast(relay_node *n, session *s)
{
    if (!pacer_hold(n->pacer, s))
        node_wake(n, s);
}

void node_reply(relay_node *n, session *s, msgbuf *m)
{
    if (s->close_code && s->state == SESSION_CLOSED) {
        msgbuf_unref(m);
        return;
    }
    if (session_reply(s, m) < 0) {
        log_warn("conn=%llu reply queue overflow, closing", (unsigned long long)s->conn_id);
        node_close(n, s, LWS_CLOSE_STATUS_POLICY_VIOLATION, "reply queue overflow");
        return;
    }
    node_flow_control(s);
    node_wake(n, s);
}

void node_flow_control(session *s)
{
    unsigned load = session_reply_load(s);
    if (!s->rx_paused && load >= SESSION_DIRECT_PAUSE) {
        s->rx_paused = true;
        lws_rx_flow_control(s->wsi, 0);
    } else if (s->rx_paused && load <= SESSION_DIRECT_RESUME) {
        s->rx_paused = false;
        lws_rx_flow_control(s->wsi, 1);
    }
}

void node_reply_error(relay_node *n, session *s, const char *code, const char *message,
                      codec_blob ref)
{
    msgbuf *m = codec_encode_error(code, message, ref);
    if (m)
        node_reply(n, s, m);
}

void node_close(relay_node *n, session *s, int code, const char *reason)
{
    session_close_after_flush(s, code, reason);
    node_wake(n, s);
}

void node_close_going_away(relay_node *n, session *s, const char *reason)
{
    if (!s->close_code) {
        s->close_flush = true;
        channel_heads(&s->sub, s->flush_until);
    }
    node_close(n, s, LWS_CLOSE_STATUS_GOINGAWAY, reason);
}

bool node_ready(relay_node *n)
{
    return n->phase == NODE_RUNNING && n->backend->vt->ready(n->backend);
}

void node_request_stop(relay_node *n)
{
    n->signal_pending = 1;
    if (n->ctx)
        lws_cancel_service(n->ctx);
}

typedef struct drain_walk {
    relay_node *n;
    size_t budget; /* connections to close this tick */
} drain_walk;

static int node_drain_one(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl;
    drain_walk *w = ud;
    session *s = v;
    if (s->close_code)
        return 0;
    if (w->budget == 0)
        return 1;
    w->budget--;
    node_close_going_away(w->n, s, "node shutting down");
    return 0;
}

/* Closes connections with 1001, spreading them evenly over what is left of the drain window so
 * clients do not reconnect elsewhere as one storm. */
static void node_drain_step(relay_node *n, int64_t now)
{
    size_t open = hmap_count(n->conns);
    int64_t left = n->phase_deadline_ms - now;
    size_t ticks_left = left > 0 ? (size_t)(left / (NODE_TICK_US / 1000)) + 1 : 1;
    drain_walk w = {n, (open + ticks_left - 1) / ticks_left};
    if (w.budget)
        hmap_each(n->conns, node_drain_one, &w);
    if (open == 0 || now > n->phase_deadline_ms + 5000)
        n->phase = NODE_STOPPED;
}

typedef struct shed_walk {
    relay_node *n;
    size_t budget;
} shed_walk;

static int node_shed_one(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl;
    shed_walk *w = ud;
    session *s = v;
    if (w->budget == 0)
        return 1;
    if (!s->close_code) {
        w->budget--;
        node_close_going_away(w->n, s, "rebalancing, reconnect");
    }
    return 0;
}

/* After a scale-out, long-lived connections stay where they were. A node well above the
 * cluster's average closes its excess a little at a time (at most 1% of its connections per
 * second) so the load balancer spreads the reconnects over the new nodes. */
static void node_shed(relay_node *n)
{
    if (!n->cfg->shed || n->cluster_nodes < 2 || n->phase != NODE_RUNNING)
        return;
    uint64_t avg = n->cluster_active / n->cluster_nodes;
    uint64_t limit = avg * (uint64_t)n->cfg->shed_threshold / 100;
    if (n->stats.active <= limit || n->stats.active < 2)
        return;
    uint64_t excess = n->stats.active - avg;
    uint64_t step = n->stats.active / 100 ? n->stats.active / 100 : 1;
    shed_walk w = {n, (size_t)(excess < step ? excess : step)};
    log_info("shedding %zu of %llu connections (cluster average %llu)", w.budget,
             (unsigned long long)n->stats.active, (unsigned long long)avg);
    hmap_each(n->conns, node_shed_one, &w);
}

/* A burst of handshakes leaves the heap full of small holes (header tables, accept buffers)
 * between long-lived sessions; glibc keeps those pages until asked. They are given back once
 * connections have stopped coming and going for a second (at least every 30 s under constant
 * churn), which keeps RSS near what is in use (docs/BENCHMARKS.md, memory). Called once a second.
 */
static void node_trim(relay_node *n, int64_t now)
{
    uint64_t churn = n->stats.total + n->stats.active;
    bool quiet = churn == n->trim_churn;
    n->trim_churn = churn;
    if (!n->trim_pending) {
        n->trim_pending = !quiet;
        return;
    }
    if (quiet || now - n->last_trim_ms >= 30000) {
        malloc_trim(64 * 1024);
        n->last_trim_ms = now;
        n->trim_pending = !quiet;
    }
}

static void node_on_signal(relay_node *n, int64_t now)
{
    n->signal_pending = 0;
    if (n->phase == NODE_RUNNING) {
        log_info("stop requested: readiness off, draining in %d s over %d s", n->cfg->drain_delay,
                 n->cfg->drain_time);
        n->phase = NODE_DRAIN_WAIT;
        n->phase_deadline_ms = now + (int64_t)n->cfg->drain_delay * 1000;
    } else {
        log_info("second stop request: closing every connection now");
        n->phase = NODE_DRAINING;
        n->phase_deadline_ms = now;
    }
}

static void node_tick(lws_sorted_usec_list_t *sul)
{
    relay_node *n = lws_container_of(sul, relay_node, tick_sul);
    int64_t now = clock_mono_ms();
    if (now - n->last_backend_tick_ms >= 1000) {
        n->last_backend_tick_ms = now;
        n->stats.documents = channel_registry_count(n->channels);
        n->backend->vt->tick(n->backend, &n->stats);
        node_shed(n);
        channel_registry_trim(n->channels);
        node_trim(n, now);
    }
    if (n->phase == NODE_DRAIN_WAIT && now >= n->phase_deadline_ms) {
        n->phase = NODE_DRAINING;
        n->phase_deadline_ms = now + (int64_t)n->cfg->drain_time * 1000;
    }
    node_check_signal(n);
    if (n->phase == NODE_DRAINING)
        node_drain_step(n, now);
    if (n->phase == NODE_STOPPED) {
        ev_break(n->evloop, EVBREAK_ALL);
        return;
    }
    lws_sul_schedule(n->ctx, 0, &n->tick_sul, node_tick, NODE_TICK_US);
}

/* libwebsockets' own messages, as our structured log lines. lws 4.1 reports every hand-over of
 * an adopted socket at error level ("adopt_socket_readbuf: calling service"): not an error. */
static void node_lws_log(int level, const char *line)
{
    if (strstr(line, "adopt_socket_readbuf"))
        return;
    size_t n = strlen(line);
    while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
        n--;
    log_level lv = level & LLL_ERR ? LOG_ERROR : level & LLL_WARN ? LOG_WARN : LOG_DEBUG;
    log_write(lv, "lws: %.*s", (int)n, line);
}

/* With an event library, lws watches SIGINT itself and reports it here. */
static void node_on_lws_signal(void *handle, int signum)
{
    (void)handle, (void)signum;
    if (node_signal_target) {
        node_signal_target->signal_pending = 1;
        node_check_signal(node_signal_target);
    }
}

static void node_wake_sub(channel_sub *sub, void *ud)
{
    node_wake_broadcast(ud, session_from_sub(sub));
}

static void node_release_paced(session *s, void *ud)
{
    node_wake(ud, s);
}

static int node_make_parts(relay_node *n, char *err, size_t errlen)
{
    const relay_config *cfg = n->cfg;
    token_config tc = {cfg->jwt_secret, cfg->jwt_keys, cfg->jwt_audience, cfg->jwt_issuer,
                       cfg->jwt_leeway};
    n->tokens = token_verifier_create(&tc, err, errlen);
    if (!n->tokens)
        return -1;
    n->limits = codec_default_limits;
    n->limits.max_cursor = (size_t)cfg->max_cursor_size;
    n->limits.max_ref = (size_t)cfg->max_ref_size;
    n->limits.max_token = 65536;
    n->conns = hmap_create();
    n->channels = channel_registry_create(1024, 256, node_wake_sub, n);
    backend_events ev = handlers_backend_events(n);
    backend_limits bl = {(size_t)cfg->history_length, cfg->history_ttl, (uint32_t)cfg->sync_limit,
                         cfg->resume_ttl, cfg->dedup_window};
    if (!n->conns || !n->channels) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    if (cfg->redis_url && *cfg->redis_url) {
        backend_redis_config rc = {cfg->redis_url, cfg->redis_prefix, cfg->node_id, cfg->node_ttl};
        n->backend = backend_redis_create(&ev, &bl, &rc, err, errlen);
        return n->backend ? 0 : -1;
    }
    n->backend = backend_memory_create(&ev, &bl);
    if (!n->backend) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return 0;
}

relay_node *node_create(const relay_config *cfg, char *err, size_t errlen)
{
    relay_node *n = calloc(1, sizeof *n);
    if (!n) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    n->cfg = cfg;
    node_signal_target = n;
    if (node_make_parts(n, err, errlen) < 0) {
        node_destroy(n);
        return NULL;
    }

    struct lws_context_creation_info info;
    memset(&info, 0, sizeof info);
    int lfd = listener_open(cfg->bind, cfg->port, err, errlen);
    if (lfd < 0) {
        node_destroy(n);
        return NULL;
    }
    info.port = CONTEXT_PORT_NO_LISTEN_SERVER; /* we accept ourselves: see listener.h */
    info.protocols = node_protocols;
    info.user = n;
    /* libev (epoll) rather than lws' default poll(): poll scans every socket on every turn of
     * the loop, which at tens of thousands of connections costs more than the work itself. The
     * loop is ours so the node decides when it ends. */
    n->evloop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOSIGMASK);
    if (!n->evloop) {
        snprintf(err, errlen, "cannot create the event loop");
        close(lfd);
        node_destroy(n);
        return NULL;
    }
    n->foreign_loops[0] = n->evloop;
    n->pacer = pacer_create(n->evloop, cfg->write_delay, node_release_paced, n);
    if (!n->pacer) {
        snprintf(err, errlen, "out of memory");
        close(lfd);
        node_destroy(n);
        return NULL;
    }
    info.foreign_loops = n->foreign_loops;
    info.signal_cb = node_on_lws_signal;
    info.options =
        LWS_SERVER_OPTION_VALIDATE_UTF8 | LWS_SERVER_OPTION_DISABLE_IPV6 | LWS_SERVER_OPTION_LIBEV;
    info.timeout_secs = 10;
    info.retry_and_idle_policy = &node_idle_policy;
    info.vhost_name = "relay";
    lws_set_log_level(log_get_level() <= LOG_DEBUG ? (LLL_ERR | LLL_WARN | LLL_NOTICE)
                                                   : (LLL_ERR | LLL_WARN),
                      node_lws_log);
    n->ctx = lws_create_context(&info);
    struct lws_vhost *vh = n->ctx ? lws_get_vhost_by_name(n->ctx, "relay") : NULL;
    if (!vh || listener_attach(vh, lfd) < 0) {
        snprintf(err, errlen, "cannot start libwebsockets on %s:%d", cfg->bind, cfg->port);
        close(lfd);
        node_destroy(n);
        return NULL;
    }
    if (n->backend->vt->start(n->backend, n->ctx) < 0) {
        snprintf(err, errlen, "cannot start the Redis thread");
        node_destroy(n);
        return NULL;
    }
    lws_sul_schedule(n->ctx, 0, &n->tick_sul, node_tick, NODE_TICK_US);
    log_info("relay-node %s listening on %s:%d (%s)", cfg->node_id, cfg->bind, cfg->port,
             cfg->redis_url && *cfg->redis_url ? "cluster" : "standalone");
    return n;
}

void node_check_signal(relay_node *n)
{
    if (n->signal_pending)
        node_on_signal(n, clock_mono_ms());
}

int node_run(relay_node *n)
{
    ev_run(n->evloop, 0); /* until node_tick breaks it when the node has stopped */
    log_info("relay-node %s stopped", n->cfg->node_id);
    return n->exit_code;
}

void node_destroy(relay_node *n)
{
    if (!n)
        return;
    if (n->backend)
        n->backend->vt->detach(n->backend);
    if (n->ctx) {
        lws_sul_schedule(n->ctx, 0, &n->tick_sul, NULL, LWS_SET_TIMER_USEC_CANCEL);
        lws_context_destroy(n->ctx); /* closes every connection: sessions freed in CLOSED */
    }
    if (n->backend)
        n->backend->vt->stop(n->backend); /* after the last leave: then leave the cluster */
    backend_destroy(n->backend);
    channel_registry_destroy(n->channels);
    pacer_destroy(n->pacer);
    if (n->evloop)
        ev_loop_destroy(n->evloop);
    if (node_signal_target == n)
        node_signal_target = NULL;
    hmap_destroy(n->conns);
    token_verifier_destroy(n->tokens);
    free(n->cluster_stats);
    free(n);
}
