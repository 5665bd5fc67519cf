/* The Redis thread: its libevent loop, the two hiredis connections and their health (PING
 * deadline, canary through our own subscription, reconnection with backoff and jitter), and the
 * dispatch of requests from the WebSocket thread. */
#include "bridge.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/thread.h>
#include <libwebsockets.h>

#include "relay/clock.h"
#include "relay/log.h"
#include "relay/rand.h"

static void bridge_on_subscribe_reply(redisAsyncContext *ac, void *r, void *privdata);

void bridge_event_clear(bevt *e)
{
    msgbuf_unref(e->m);
    free(e->text);
    free(e->sid);
    free(e->user_id);
    free(e->user_name);
    free(e->color);
    free(e->rt);
    token_claims_free(&e->claims);
}

void bridge_event_free(bevt *e)
{
    if (!e)
        return;
    bridge_event_clear(e);
    free(e);
}

void bridge_batch_free(bevt_batch *batch)
{
    if (!batch)
        return;
    for (size_t i = 0; i < batch->n; i++)
        bridge_event_clear(&batch->ev[i]);
    free(batch);
}

/* Hands the current batch to the WebSocket thread. The backlog bound taken in bridge_emit
 * keeps the queue from filling (one producer, and a batch holds at least one event), so the
 * push cannot fail; if it did, the events are dropped like a full queue dropped them before. */
static void bridge_flush_events(bridge *b)
{
    bevt_batch *batch = b->out;
    if (!batch || batch->n == 0)
        return;
    b->out = NULL;
    int rc = queue_push(b->to_lws, batch);
    if (rc < 0) {
        log_warn("WebSocket thread queue full: %zu events dropped", batch->n);
        atomic_fetch_sub(&b->lws_backlog, batch->n);
        bridge_batch_free(batch);
        return;
    }
    if (rc == 0)
        return; /* the WebSocket thread has a wake pending and drains the whole queue */
    pthread_mutex_lock(&b->ctx_lock);
    if (b->lws_ctx)
        lws_cancel_service(b->lws_ctx);
    pthread_mutex_unlock(&b->ctx_lock);
}

int bridge_emit(bridge *b, const bevt *e)
{
    if (atomic_load(&b->lws_backlog) >= BRIDGE_QUEUE_CAP)
        return -1;
    if (b->out && b->out->n == BRIDGE_EVENT_BATCH)
        bridge_flush_events(b);
    if (!b->out) {
        b->out = malloc(sizeof *b->out);
        if (!b->out)
            return -1;
        b->out->n = 0;
    }
    b->out->ev[b->out->n++] = *e;
    atomic_fetch_add(&b->lws_backlog, 1);
    return 0;
}

int bridge_push_event(bridge *b, bevt *e)
{
    if (bridge_emit(b, e) < 0)
        return -1;
    free(e);
    return 0;
}

void bridge_reply_error(bridge *b, uint64_t conn_id, const char *code, const char *message,
                        codec_blob ref)
{
    bevt e = {.kind = BE_REPLY, .conn_id = conn_id};
    e.m = codec_encode_error(code, message, ref);
    if (e.m && bridge_emit(b, &e) < 0)
        msgbuf_unref(e.m);
}

bool bridge_link_up(const bridge *b)
{
    return b->state == LINK_UP;
}

void bridge_saw_reply(bridge *b, const void *reply)
{
    if (reply)
        b->last_reply_ms = clock_mono_ms();
}

void bridge_owner(const bridge *b, uint64_t conn_id, char *out, size_t outlen)
{
    snprintf(out, outlen, "%s\t%llu", b->node_id, (unsigned long long)conn_id);
}

void bridge_new_epoch(char out[17])
{
    if (rand_hex(out, 8) < 0)
        snprintf(out, 17, "%016llx", (unsigned long long)clock_wall_ms());
}

/* Decimal digits of v into out (at least 20 bytes); returns how many. */
static size_t bridge_utoa(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    for (size_t i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

/* Appends one RESP bulk string to b->fmt at *at (room was reserved by the caller). */
static void bridge_fmt_bulk(bridge *b, size_t *at, const char *s, size_t len)
{
    char *p = b->fmt + *at;
    *p++ = '$';
    p += bridge_utoa(p, len);
    *p++ = '\r', *p++ = '\n';
    memcpy(p, s, len);
    p += len;
    *p++ = '\r', *p++ = '\n';
    *at = (size_t)(p - b->fmt);
}

int bridge_evalsha(bridge *b, redisCallbackFn *fn, void *privdata, bridge_script s, int nkeys,
                   int nargs, const char **argv, const size_t *lens)
{
    if (!b->cmd || nkeys < 0 || nargs < 0 || nkeys + nargs > 64)
        return -1;
    int total = nkeys + nargs;
    size_t al[64], need = 64 + 40 + 32;
    for (int i = 0; i < total; i++) {
        al[i] = lens ? lens[i] : strlen(argv[i]);
        need += al[i] + 32;
    }
    if (need > b->fmt_cap) {
        size_t cap = need < 4096 ? 4096 : need * 2;
        char *grown = realloc(b->fmt, cap);
        if (!grown)
            return -1;
        b->fmt = grown;
        b->fmt_cap = cap;
    }
    /* RESP, formatted here rather than by hiredis' printf-like formatter (a measurable share of
     * the Redis thread at tens of thousands of operations per second). */
    size_t at = 0;
    char nk[24];
    b->fmt[at++] = '*';
    at += bridge_utoa(b->fmt + at, (uint64_t)total + 3);
    b->fmt[at++] = '\r', b->fmt[at++] = '\n';
    bridge_fmt_bulk(b, &at, "EVALSHA", 7);
    bridge_fmt_bulk(b, &at, b->sha[s], strlen(b->sha[s]));
    bridge_fmt_bulk(b, &at, nk, bridge_utoa(nk, (uint64_t)nkeys));
    for (int i = 0; i < total; i++)
        bridge_fmt_bulk(b, &at, argv[i], al[i]);
    return redisAsyncFormattedCommand(b->cmd, fn, privdata, b->fmt, at) == REDIS_OK ? 0 : -1;
}

/* ---- Link health ------------------------------------------------------------------------ */

static void bridge_maybe_up(bridge *b)
{
    if (b->state != LINK_CONNECTING || !b->cmd_ok || !b->sub_ok)
        return;
    for (int i = 0; i < SCRIPT_COUNT; i++)
        if (!b->sha[i][0])
            return;
    int64_t now = clock_mono_ms();
    b->state = LINK_UP;
    b->link_up_ms = b->last_pong_ms = b->last_canary_ms = b->last_reply_ms = now;
    b->ping_outstanding = false;
    b->backoff_ms = 100;
    log_info("redis %s:%d up", b->host, b->port);
    bridge_docs_resync(b);
    atomic_store(&b->ready, true);
    bridge_cluster_heartbeat(b);
}

void bridge_link_down(bridge *b, const char *why)
{
    if (b->state == LINK_DOWN)
        return;
    log_write(b->stop_requested ? LOG_INFO : LOG_WARN, "redis %s:%d down: %s", b->host, b->port,
              why);
    atomic_store(&b->ready, false);
    b->state = LINK_DOWN;
    b->cmd_ok = b->sub_ok = false;
    for (int i = 0; i < SCRIPT_COUNT; i++)
        b->sha[i][0] = '\0';
    int64_t jitter = (int64_t)(rand() % (int)(b->backoff_ms / 2 + 1)) - b->backoff_ms / 4;
    b->next_connect_ms = clock_mono_ms() + b->backoff_ms + jitter;
    b->backoff_ms = b->backoff_ms * 2 > 5000 ? 5000 : b->backoff_ms * 2;
    redisAsyncContext *cmd = b->cmd, *sub = b->sub;
    b->cmd = b->sub = NULL;
    /* Pending callbacks run now with a NULL reply: each answers its client "unavailable". */
    if (cmd)
        redisAsyncFree(cmd);
    if (sub)
        redisAsyncFree(sub);
}

static void bridge_on_disconnect(const redisAsyncContext *ac, int status)
{
    bridge *b = ac->data;
    (void)status;
    if (ac == b->cmd)
        b->cmd = NULL;
    if (ac == b->sub)
        b->sub = NULL;
    bridge_link_down(b, ac->errstr[0] ? ac->errstr : "connection closed");
}

static void bridge_on_connect(const redisAsyncContext *ac, int status)
{
    bridge *b = ac->data;
    if (status != REDIS_OK) {
        if (ac == b->cmd)
            b->cmd = NULL; /* hiredis frees a context whose connect failed */
        if (ac == b->sub)
            b->sub = NULL;
        bridge_link_down(b, ac->errstr);
    }
}

static void bridge_on_script_loaded(redisAsyncContext *ac, void *r, void *privdata)
{
    bridge *b = ac->data;
    redisReply *reply = r;
    int s = (int)(intptr_t)privdata;
    if (!reply || reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        if (reply && reply->type == REDIS_REPLY_ERROR)
            log_error("redis refused script %s: %s", bridge_script_name((bridge_script)s),
                      reply->str);
        bridge_link_down(b, "script load failed");
        return;
    }
    memcpy(b->sha[s], reply->str, 40);
    b->sha[s][40] = '\0';
    bridge_maybe_up(b);
}

static void bridge_on_pong(redisAsyncContext *ac, void *r, void *privdata)
{
    bridge *b = ac->data;
    redisReply *reply = r;
    (void)privdata;
    if (!reply)
        return;
    if (reply->type == REDIS_REPLY_ERROR) {
        log_error("redis: %s", reply->str);
        bridge_link_down(b, "refused (check the password in the URL)");
        return;
    }
    b->ping_outstanding = false;
    b->last_pong_ms = clock_mono_ms();
    if (b->state == LINK_CONNECTING && !b->cmd_ok) {
        b->cmd_ok = true;
        bridge_maybe_up(b);
    }
}

static void bridge_on_auth(redisAsyncContext *ac, void *r, void *privdata)
{
    redisReply *reply = r;
    (void)privdata;
    if (reply && reply->type == REDIS_REPLY_ERROR) {
        log_error("redis AUTH/SELECT refused: %s", reply->str);
        bridge_link_down(ac->data, "authentication refused");
    }
}

/* Every message on the subscriber connection arrives here: subscribe confirmations, our
 * control channel, and document channels. */
static void bridge_on_subscribe_reply(redisAsyncContext *ac, void *r, void *privdata)
{
    bridge *b = ac->data;
    redisReply *reply = r;
    (void)privdata;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_STRING)
        return;
    const char *kind = reply->element[0]->str;
    redisReply *chan = reply->element[1], *data = reply->element[2];
    bool is_ctl = chan->len == strlen(b->ctl_channel) && !strcmp(chan->str, b->ctl_channel);
    if (!strcmp(kind, "subscribe")) {
        if (is_ctl && b->state == LINK_CONNECTING) {
            b->sub_ok = true;
            bridge_maybe_up(b);
        }
        return;
    }
    if (strcmp(kind, "message") != 0 || data->type != REDIS_REPLY_STRING)
        return;
    b->last_canary_ms = clock_mono_ms(); /* anything arriving proves the subscription works */
    if (is_ctl)
        bridge_cluster_on_control(b, data->str, data->len);
    else
        bridge_docs_on_message(b, chan->str, chan->len, data->str, data->len);
}

int bridge_subscribe(bridge *b, const char **channels, size_t n, bool unsubscribe)
{
    if (!b->sub || n == 0)
        return -1;
    const char *av[BRIDGE_SUB_BATCH + 1];
    size_t done = 0;
    while (done < n) {
        size_t k = n - done > BRIDGE_SUB_BATCH ? BRIDGE_SUB_BATCH : n - done;
        av[0] = unsubscribe ? "UNSUBSCRIBE" : "SUBSCRIBE";
        for (size_t i = 0; i < k; i++)
            av[1 + i] = channels[done + i];
        if (redisAsyncCommandArgv(b->sub, bridge_on_subscribe_reply, NULL, (int)k + 1, av, NULL) !=
            REDIS_OK)
            return -1;
        done += k;
    }
    return 0;
}

/* ---- hiredis on our libevent loop ----------------------------------------------------
 * Our own adapter instead of hiredis' libevent one, for two differences: its events persist
 * (hiredis' adapter re-arms its one-shot read event after every read, an epoll_ctl each time),
 * and a command queued while connected does not arm a write event (an epoll_ctl and a loop turn
 * per batch): bridge_flush writes it once this turn's handlers have run, together with
 * everything else queued in the turn. Only when the socket cannot take it all is the write
 * event armed. */

typedef struct blink {
    bridge *b;
    redisAsyncContext *ac;
    struct event *rev, *wev;
    bool write_due; /* commands wait in hiredis' buffer for bridge_flush */
} blink;

static void blink_on_read(evutil_socket_t fd, short what, void *arg)
{
    blink *l = arg;
    bridge *b = l->b;
    (void)fd, (void)what;
    redisAsyncHandleRead(l->ac); /* may free l (disconnect) */
    bridge_flush(b);
}

static void blink_on_write(evutil_socket_t fd, short what, void *arg)
{
    blink *l = arg;
    bridge *b = l->b;
    (void)fd, (void)what;
    redisAsyncHandleWrite(l->ac); /* connects, or writes what did not fit; may free l */
    bridge_flush(b);
}

static void blink_add_read(void *privdata)
{
    event_add(((blink *)privdata)->rev, NULL);
}

static void blink_del_read(void *privdata)
{
    event_del(((blink *)privdata)->rev);
}

static void blink_add_write(void *privdata)
{
    blink *l = privdata;
    if (!(l->ac->c.flags & REDIS_CONNECTED) || l->b->writing == l->ac)
        event_add(l->wev, NULL); /* connecting, or the socket is full: wait until writable */
    else
        l->write_due = true;
}

static void blink_del_write(void *privdata)
{
    blink *l = privdata;
    l->write_due = false;
    event_del(l->wev);
}

static void blink_cleanup(void *privdata)
{
    blink *l = privdata;
    event_free(l->rev);
    event_free(l->wev);
    free(l);
}

static int blink_attach(bridge *b, redisAsyncContext *ac)
{
    blink *l = calloc(1, sizeof *l);
    if (!l)
        return -1;
    l->b = b;
    l->ac = ac;
    l->rev = event_new(b->evbase, ac->c.fd, EV_READ | EV_PERSIST, blink_on_read, l);
    l->wev = event_new(b->evbase, ac->c.fd, EV_WRITE | EV_PERSIST, blink_on_write, l);
    if (!l->rev || !l->wev) {
        if (l->rev)
            event_free(l->rev);
        if (l->wev)
            event_free(l->wev);
        free(l);
        return -1;
    }
    ac->ev.addRead = blink_add_read;
    ac->ev.delRead = blink_del_read;
    ac->ev.addWrite = blink_add_write;
    ac->ev.delWrite = blink_del_write;
    ac->ev.cleanup = blink_cleanup;
    ac->ev.data = l;
    event_add(l->rev, NULL);
    event_add(l->wev, NULL); /* the first writable event completes the connect */
    return 0;
}

/* Writes what commands the current handler queued on one connection. */
static void bridge_flush_link(bridge *b, redisAsyncContext *ac)
{
    blink *l = ac ? ac->ev.data : NULL;
    if (!l || !l->write_due)
        return;
    l->write_due = false;
    b->writing = ac;
    redisAsyncHandleWrite(ac); /* a write error frees ac and takes the link down */
    b->writing = NULL;
}

static void bridge_flush_now(bridge *b)
{
    bridge_flush_link(b, b->cmd);
    bridge_flush_link(b, b->sub); /* re-read: a failure on cmd clears both */
    bridge_flush_events(b);
}

/* flush_ev: activated by the first handler of a loop turn that has something to send, it runs
 * after every handler libevent found ready in that turn, so the replies of a read on cmd, the
 * messages of a read on sub and a wake from the WebSocket thread share one write per connection
 * and one hand-off. */
static void bridge_on_flush(evutil_socket_t fd, short what, void *arg)
{
    bridge *b = arg;
    (void)fd, (void)what;
    b->flush_armed = false;
    bridge_flush_now(b);
}

void bridge_flush(bridge *b)
{
    if (b->flush_armed)
        return;
    b->flush_armed = true;
    event_active(b->flush_ev, EV_READ, 0);
}

static redisAsyncContext *bridge_open(bridge *b)
{
    redisAsyncContext *ac = redisAsyncConnect(b->host, b->port);
    if (!ac)
        return NULL;
    if (ac->err) {
        log_warn("redis connect %s:%d: %s", b->host, b->port, ac->errstr);
        redisAsyncFree(ac);
        return NULL;
    }
    ac->data = b;
    if (blink_attach(b, ac) < 0) {
        redisAsyncFree(ac);
        return NULL;
    }
    redisAsyncSetConnectCallback(ac, bridge_on_connect);
    redisAsyncSetDisconnectCallback(ac, bridge_on_disconnect);
    if (b->password && b->user)
        redisAsyncCommand(ac, bridge_on_auth, NULL, "AUTH %s %s", b->user, b->password);
    else if (b->password)
        redisAsyncCommand(ac, bridge_on_auth, NULL, "AUTH %s", b->password);
    return ac;
}

/* Opens both connections and queues the handshake: scripts and a PING on cmd, our control
 * channel on sub. The link is up when all of it has answered (bridge_maybe_up). */
static void bridge_connect(bridge *b)
{
    b->state = LINK_CONNECTING;
    b->link_up_ms = clock_mono_ms();
    b->cmd = bridge_open(b);
    b->sub = b->cmd ? bridge_open(b) : NULL;
    if (!b->cmd || !b->sub) {
        bridge_link_down(b, "cannot connect");
        return;
    }
    if (b->db)
        redisAsyncCommand(b->cmd, bridge_on_auth, NULL, "SELECT %d", b->db);
    for (int i = 0; i < SCRIPT_COUNT; i++)
        redisAsyncCommand(b->cmd, bridge_on_script_loaded, (void *)(intptr_t)i, "SCRIPT LOAD %s",
                          bridge_script_source((bridge_script)i));
    b->ping_sent_ms = clock_mono_ms();
    redisAsyncCommand(b->cmd, bridge_on_pong, NULL, "PING");
    const char *chan = b->ctl_channel;
    bridge_subscribe(b, &chan, 1, false);
}

/* Health checks: a PING on cmd must answer within the deadline; a canary published on cmd
 * must come back through sub (a SUBSCRIBE connection cannot PING in hiredis 0.14). */
static void bridge_check_health(bridge *b, int64_t now)
{
    if (b->state == LINK_CONNECTING && now - b->link_up_ms > BRIDGE_PING_DEADLINE_MS) {
        bridge_link_down(b, "no answer while connecting");
        return;
    }
    if (b->state != LINK_UP)
        return;
    if (b->ping_outstanding && now - b->ping_sent_ms > BRIDGE_PING_DEADLINE_MS &&
        now - b->last_reply_ms > BRIDGE_PING_DEADLINE_MS) {
        bridge_link_down(b, "PING deadline missed");
        return;
    }
    if (now - b->last_canary_ms > BRIDGE_CANARY_DEADLINE_MS) {
        bridge_link_down(b, "canary did not come back through the subscription");
        return;
    }
    if (!b->ping_outstanding && now - b->ping_sent_ms >= BRIDGE_PING_EVERY_MS) {
        b->ping_outstanding = true;
        b->ping_sent_ms = now;
        redisAsyncCommand(b->cmd, bridge_on_pong, NULL, "PING");
        redisAsyncCommand(b->cmd, NULL, NULL, "PUBLISH %s canary", b->ctl_channel);
    }
}

static void bridge_on_timer(evutil_socket_t fd, short what, void *arg)
{
    bridge *b = arg;
    (void)fd, (void)what;
    int64_t now = clock_mono_ms();
    if (b->state == LINK_DOWN && now >= b->next_connect_ms && !b->stop_requested)
        bridge_connect(b);
    bridge_check_health(b, now);
    if (b->state == LINK_UP && now - b->last_beat_ms >= 1000) {
        b->last_beat_ms = now;
        bridge_cluster_heartbeat(b);
    }
    bridge_docs_tick(b, now);
    if (b->stop_requested && now - b->stop_at_ms > 2000)
        bridge_exit_loop(b); /* Redis did not answer the goodbye: leave anyway */
    bridge_flush(b);
}

static void bridge_dispatch(bridge *b, bcmd *c)
{
    switch (c->kind) {
    case BC_JOIN:
        bridge_docs_join(b, c);
        return;
    case BC_LEAVE:
        bridge_docs_leave(b, c);
        return;
    case BC_OP:
        bridge_docs_op(b, c);
        return;
    case BC_CURSOR:
        bridge_docs_cursor(b, c);
        return;
    case BC_SYNC:
        bridge_docs_sync(b, c);
        return;
    case BC_SUBSCRIBE:
        bridge_docs_subscribe(b, c->doc);
        break;
    case BC_UNSUBSCRIBE:
        bridge_docs_unsubscribe(b, c->doc);
        break;
    case BC_SESSION_SAVE:
        bridge_session_save(b, c);
        break;
    case BC_SESSION_RELEASE:
        bridge_session_release(b, c);
        return;
    case BC_SESSION_RESUME:
        bridge_session_resume(b, c);
        return;
    case BC_STATS:
        b->stats = c->stats;
        break;
    case BC_STOP:
        b->stop_requested = true;
        b->stop_at_ms = clock_mono_ms();
        bridge_cluster_leave(b);
        break;
    }
    free(c);
}

static void bridge_on_wake(evutil_socket_t fd, short what, void *arg)
{
    bridge *b = arg;
    (void)fd, (void)what;
    void *items[256];
    size_t n;
    while ((n = queue_pop_many(b->to_redis, items, 256)) > 0) {
        for (size_t i = 0; i < n; i++)
            bridge_dispatch(b, items[i]);
        if (n == 256)
            bridge_flush_now(b); /* bound what one turn of the loop buffers */
    }
    bridge_flush(b);
}

static void *bridge_main(void *arg)
{
    bridge *b = arg;
    event_base_dispatch(b->evbase);
    bridge_link_down(b, "stopping");
    bridge_flush_now(b); /* the "unavailable" answers of requests still pending */
    bridge_docs_free(b);
    atomic_store(&b->stopped, true);
    return NULL;
}

int bridge_thread_start(bridge *b)
{
    static int threads_enabled;
    if (!threads_enabled && evthread_use_pthreads() != 0)
        return -1;
    threads_enabled = 1;
    b->evbase = event_base_new();
    if (!b->evbase)
        return -1;
    snprintf(b->ctl_channel, sizeof b->ctl_channel, "%snode:%s:ctl", b->prefix, b->node_id);
    b->wake_ev = event_new(b->evbase, -1, 0, bridge_on_wake, b);
    b->timer_ev = event_new(b->evbase, -1, EV_PERSIST, bridge_on_timer, b);
    b->flush_ev = event_new(b->evbase, -1, 0, bridge_on_flush, b);
    struct timeval every = {0, 100 * 1000};
    if (!b->wake_ev || !b->timer_ev || !b->flush_ev || event_add(b->timer_ev, &every) < 0)
        return -1;
    b->backoff_ms = 100;
    if (pthread_create(&b->thread, NULL, bridge_main, b) != 0)
        return -1;
    b->thread_started = true;
    return 0;
}

void bridge_wake(bridge *b)
{
    event_active(b->wake_ev, EV_READ, 0);
}

/* Called on the Redis thread when the last goodbye write has been answered. */
void bridge_exit_loop(bridge *b)
{
    event_base_loopexit(b->evbase, NULL);
}

void bridge_thread_join(bridge *b)
{
    if (b->thread_started) {
        pthread_join(b->thread, NULL);
        b->thread_started = false;
    }
    if (b->wake_ev)
        event_free(b->wake_ev);
    if (b->timer_ev)
        event_free(b->timer_ev);
    if (b->flush_ev)
        event_free(b->flush_ev);
    if (b->evbase)
        event_base_free(b->evbase);
    b->wake_ev = b->timer_ev = b->flush_ev = NULL;
    b->evbase = NULL;
}
