/* The WebSocket-thread side of the Redis backend: each backend call becomes a bcmd on the
 * queue to the Redis thread, and results come back as bevts delivered through backend_events
 * when lws is woken. See bridge.h for the thread model. */
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "relay/log.h"

static bridge *br_of(backend *b)
{
    return (bridge *)b;
}

/* Allocates a command with room for `extra` bytes of strings and blobs. */
static bcmd *br_cmd(bcmd_kind kind, uint64_t conn_id, size_t extra)
{
    bcmd *c = calloc(1, sizeof *c + extra);
    if (!c)
        return NULL;
    c->kind = kind;
    c->conn_id = conn_id;
    c->cap = extra;
    return c;
}

static const char *br_put(bcmd *c, const void *data, size_t len)
{
    if (c->used + len + 1 > c->cap)
        return NULL;
    char *dst = c->data + c->used;
    if (len)
        memcpy(dst, data, len);
    dst[len] = '\0';
    c->used += len + 1;
    return dst;
}

static const char *br_str(bcmd *c, const char *s)
{
    return s ? br_put(c, s, strlen(s)) : NULL;
}

static codec_blob br_blob(bcmd *c, codec_blob v)
{
    codec_blob out = {NULL, 0};
    if (v.len) {
        out.data = (const uint8_t *)br_put(c, v.data, v.len);
        out.len = out.data ? v.len : 0;
    }
    return out;
}

static size_t br_len(const char *s)
{
    return s ? strlen(s) + 1 : 0;
}

/* Hands c to the Redis thread. On a full queue the request fails visibly: requests that expect
 * an answer get `unavailable`, never silence. */
static void br_send(bridge *b, bcmd *c, codec_blob ref)
{
    if (!c) {
        log_error("out of memory queuing a Redis request");
        return;
    }
    uint64_t conn_id = c->conn_id;
    bool answers = c->kind == BC_JOIN || c->kind == BC_OP || c->kind == BC_SYNC;
    int rc = queue_push(b->to_redis, c);
    if (rc >= 0) {
        if (rc == 1)
            bridge_wake(b);
        return;
    }
    log_warn("Redis request queue full: refusing a request");
    free(c);
    if (answers) {
        msgbuf *m = codec_encode_error("unavailable", "node overloaded, retry", ref);
        if (m)
            b->base.ev.reply(b->base.ev.ctx, conn_id, m);
    }
}

static bcmd *br_member_cmd(bcmd_kind kind, const backend_member *m, size_t extra)
{
    bcmd *c = br_cmd(kind, m->conn_id,
                     br_len(m->document_id) + br_len(m->session_id) + br_len(m->user_id) +
                         br_len(m->user_name) + br_len(m->color) + extra);
    if (!c)
        return NULL;
    c->doc = br_str(c, m->document_id);
    c->sid = br_str(c, m->session_id);
    c->user_id = br_str(c, m->user_id);
    c->user_name = br_str(c, m->user_name);
    c->color = br_str(c, m->color);
    return c;
}

static bool br_ready(backend *b)
{
    return atomic_load(&br_of(b)->ready);
}

static void br_join(backend *b, const backend_member *m, bool announce)
{
    bcmd *c = br_member_cmd(BC_JOIN, m, 0);
    if (c)
        c->announce = announce;
    br_send(br_of(b), c, (codec_blob){0});
}

static void br_leave(backend *b, const backend_member *m)
{
    br_send(br_of(b), br_member_cmd(BC_LEAVE, m, 0), (codec_blob){0});
}

static void br_operation(backend *b, const backend_member *m, codec_blob ref, codec_blob payload)
{
    bcmd *c = br_member_cmd(BC_OP, m, ref.len + payload.len + 2);
    if (c) {
        c->ref = br_blob(c, ref);
        c->blob = br_blob(c, payload);
    }
    br_send(br_of(b), c, ref);
}

static void br_cursor(backend *b, const backend_member *m, codec_blob cursor)
{
    bcmd *c = br_member_cmd(BC_CURSOR, m, cursor.len + 1);
    if (c)
        c->blob = br_blob(c, cursor);
    br_send(br_of(b), c, (codec_blob){0});
}

static void br_sync(backend *b, uint64_t conn_id, const char *document_id, uint64_t since,
                    uint32_t limit, codec_blob ref)
{
    bcmd *c = br_cmd(BC_SYNC, conn_id, br_len(document_id) + ref.len + 1);
    if (c) {
        c->doc = br_str(c, document_id);
        c->since = since;
        c->limit = limit;
        c->ref = br_blob(c, ref);
    }
    br_send(br_of(b), c, ref);
}

static void br_doc_cmd(backend *b, bcmd_kind kind, const char *document_id)
{
    bcmd *c = br_cmd(kind, 0, br_len(document_id));
    if (c)
        c->doc = br_str(c, document_id);
    br_send(br_of(b), c, (codec_blob){0});
}

static void br_subscribe(backend *b, const char *document_id)
{
    br_doc_cmd(b, BC_SUBSCRIBE, document_id);
}

static void br_unsubscribe(backend *b, const char *document_id)
{
    br_doc_cmd(b, BC_UNSUBSCRIBE, document_id);
}

/* The docs claim travels one id per line. */
static size_t br_docs_len(const token_claims *cl)
{
    size_t n = 0;
    for (size_t i = 0; cl->has_docs && i < cl->n_docs; i++)
        n += strlen(cl->docs[i]) + 1;
    return n;
}

static void br_session_save(backend *b, uint64_t conn_id, const backend_session *s)
{
    size_t dl = br_docs_len(s->claims);
    bcmd *c = br_cmd(BC_SESSION_SAVE, conn_id,
                     br_len(s->session_id) + br_len(s->user_id) + br_len(s->user_name) +
                         br_len(s->color) + br_len(s->resume_token) + dl + 1);
    if (!c)
        return;
    c->sid = br_str(c, s->session_id);
    c->user_id = br_str(c, s->user_id);
    c->user_name = br_str(c, s->user_name);
    c->color = br_str(c, s->color);
    c->rt = br_str(c, s->resume_token);
    c->exp = s->claims->exp;
    c->has_docs = s->claims->has_docs;
    char *docs = c->data + c->used;
    size_t at = 0;
    for (size_t i = 0; c->has_docs && i < s->claims->n_docs; i++) {
        const char *d = s->claims->docs[i];
        if (strchr(d, '\n'))
            continue; /* cannot name a valid document anyway */
        at += (size_t)sprintf(docs + at, "%s%s", at ? "\n" : "", d);
    }
    c->blob = (codec_blob){(const uint8_t *)docs, at};
    c->used += at + 1;
    br_send(br_of(b), c, (codec_blob){0});
}

static void br_session_release(backend *b, uint64_t conn_id, const char *session_id)
{
    bcmd *c = br_cmd(BC_SESSION_RELEASE, conn_id, br_len(session_id));
    if (c)
        c->sid = br_str(c, session_id);
    br_send(br_of(b), c, (codec_blob){0});
}

static void br_session_resume(backend *b, uint64_t conn_id, const char *session_id,
                              const char *resume_token, const char *new_resume_token)
{
    bcmd *c = br_cmd(BC_SESSION_RESUME, conn_id,
                     br_len(session_id) + br_len(resume_token) + br_len(new_resume_token));
    if (!c) {
        b->ev.resumed(b->ev.ctx, conn_id, NULL, "internal error");
        return;
    }
    c->sid = br_str(c, session_id);
    c->rt = br_str(c, resume_token);
    c->new_rt = br_str(c, new_resume_token);
    int rc = queue_push(br_of(b)->to_redis, c);
    if (rc < 0) {
        free(c);
        b->ev.resumed(b->ev.ctx, conn_id, NULL, "node overloaded, retry");
        return;
    }
    if (rc == 1)
        bridge_wake(br_of(b));
}

static void br_tick(backend *b, const relay_stats *st)
{
    bcmd *c = br_cmd(BC_STATS, 0, 0);
    if (c)
        c->stats = *st;
    br_send(br_of(b), c, (codec_blob){0});
}

/* Delivers one event; what it owns is passed on or freed (the event itself is not). */
static void br_deliver(bridge *b, bevt *e)
{
    backend_events *ev = &b->base.ev;
    switch (e->kind) {
    case BE_JOINED:
        ev->joined(ev->ctx, e->conn_id, e->seq, e->m);
        e->m = NULL;
        break;
    case BE_REPLY:
        ev->reply(ev->ctx, e->conn_id, e->m);
        e->m = NULL;
        break;
    case BE_PUBLISH:
        ev->publish(ev->ctx, e->doc, e->chan, e->m);
        e->m = NULL;
        break;
    case BE_RESUMED:
        if (e->text) {
            ev->resumed(ev->ctx, e->conn_id, NULL, e->text);
        } else {
            backend_session s = {e->sid, e->user_id, e->user_name, e->color, e->rt, &e->claims};
            ev->resumed(ev->ctx, e->conn_id, &s, NULL);
        }
        break;
    case BE_TAKEN_OVER:
        ev->taken_over(ev->ctx, e->conn_id);
        break;
    case BE_RESET:
        ev->reset(ev->ctx, e->doc, e->epoch, e->seq);
        break;
    case BE_LAGGED:
        ev->lagged(ev->ctx, e->doc, e->missed);
        break;
    case BE_CLUSTER_STATS:
        ev->cluster_stats(ev->ctx, e->text);
        e->text = NULL;
        break;
    }
    bridge_event_clear(e);
}

/* Delivers every batch queued by the Redis thread, in order. */
static void br_poll(backend *b)
{
    bridge *br = br_of(b);
    void *items[64];
    size_t n;
    while ((n = queue_pop_many(br->to_lws, items, 64)) > 0) {
        for (size_t i = 0; i < n; i++) {
            bevt_batch *batch = items[i];
            for (size_t j = 0; j < batch->n; j++)
                br_deliver(br, &batch->ev[j]);
            atomic_fetch_sub(&br->lws_backlog, batch->n);
            free(batch);
        }
    }
}

static int br_start(backend *b, struct lws_context *ctx)
{
    bridge *br = br_of(b);
    pthread_mutex_lock(&br->ctx_lock);
    br->lws_ctx = ctx;
    pthread_mutex_unlock(&br->ctx_lock);
    return bridge_thread_start(br);
}

static void br_detach(backend *b)
{
    bridge *br = br_of(b);
    pthread_mutex_lock(&br->ctx_lock);
    br->lws_ctx = NULL;
    pthread_mutex_unlock(&br->ctx_lock);
}

static void br_stop(backend *b)
{
    bridge *br = br_of(b);
    if (!br->thread_started || br->stopping)
        return;
    br->stopping = true;
    bcmd *c = br_cmd(BC_STOP, 0, 0);
    while (c && queue_push(br->to_redis, c) < 0)
        br_poll(b); /* make room: the Redis thread is waiting on us */
    bridge_wake(br);
    bridge_thread_join(br);
}

static void br_free_cmd(void *item)
{
    free(item);
}

static void br_free_batch(void *item)
{
    bridge_batch_free(item);
}

static void br_destroy(backend *b)
{
    bridge *br = br_of(b);
    br_detach(b);
    br_stop(b);
    bridge_thread_join(br);
    for (size_t i = 0; i < br->n_deferred; i++)
        free(br->deferred[i]);
    free(br->deferred);
    if (br->docs || br->members)
        bridge_docs_free(br);
    queue_destroy(br->to_redis, br_free_cmd);
    queue_destroy(br->to_lws, br_free_batch);
    bridge_batch_free(br->out);
    free(br->fmt);
    wire_buf_free(&br->op_prefix);
    wire_buf_free(&br->op_suffix);
    pthread_mutex_destroy(&br->ctx_lock);
    free(br->host);
    free(br->user);
    free(br->password);
    free(br->prefix);
    free(br->node_id);
    free(br);
}

static const backend_vtable br_vtable = {
    .destroy = br_destroy,
    .ready = br_ready,
    .join = br_join,
    .leave = br_leave,
    .operation = br_operation,
    .cursor = br_cursor,
    .sync = br_sync,
    .session_save = br_session_save,
    .session_release = br_session_release,
    .session_resume = br_session_resume,
    .subscribe = br_subscribe,
    .unsubscribe = br_unsubscribe,
    .tick = br_tick,
    .poll = br_poll,
    .start = br_start,
    .detach = br_detach,
    .stop = br_stop,
};

/* Decodes %XX escapes in place (URL user and password). */
static void br_unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        unsigned v;
        if (*p == '%' && p[1] && p[2] && sscanf(p + 1, "%2x", &v) == 1) {
            *o++ = (char)v;
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

/* Parses redis://[[user]:password@]host[:port][/db]. Returns 0 or -1 with a reason. */
static int br_parse_url(bridge *b, const char *url, char *err, size_t errlen)
{
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "Redis URL must start with redis:// (got '%s')", url);
        return -1;
    }
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", url + 8);
    char *host = buf, *at = strrchr(buf, '@');
    if (at) {
        *at = '\0';
        host = at + 1;
        char *colon = strchr(buf, ':');
        if (colon) {
            *colon = '\0';
            b->password = strdup(colon + 1);
            b->user = buf[0] ? strdup(buf) : NULL;
        } else {
            b->password = strdup(buf);
        }
        if (b->password)
            br_unescape(b->password);
        if (b->user)
            br_unescape(b->user);
    }
    char *slash = strchr(host, '/');
    if (slash) {
        *slash = '\0';
        b->db = slash[1] ? atoi(slash + 1) : 0;
    }
    char *colon = strrchr(host, ':');
    b->port = 6379;
    if (colon) {
        *colon = '\0';
        b->port = atoi(colon + 1);
    }
    if (!host[0] || b->port <= 0 || b->port > 65535 || b->db < 0) {
        snprintf(err, errlen, "bad Redis URL '%s': expected redis://[user:password@]host:port/db",
                 url);
        return -1;
    }
    b->host = strdup(host);
    return b->host ? 0 : -1;
}

backend *backend_redis_create(const backend_events *ev, const backend_limits *lim,
                              const backend_redis_config *rc, char *err, size_t errlen)
{
    bridge *b = calloc(1, sizeof *b);
    if (!b) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&b->ctx_lock, NULL);
    b->base.vt = &br_vtable;
    b->base.ev = *ev;
    b->lim = *lim;
    snprintf(b->s_history_ttl, sizeof b->s_history_ttl, "%d", lim->history_ttl_s);
    snprintf(b->s_history_len, sizeof b->s_history_len, "%zu", lim->history_length);
    snprintf(b->s_dedup_ttl, sizeof b->s_dedup_ttl, "%d", lim->dedup_window_s);
    b->node_ttl = rc->node_ttl_s;
    b->prefix = strdup(rc->prefix);
    b->node_id = strdup(rc->node_id);
    b->to_redis = queue_create(BRIDGE_QUEUE_CAP);
    b->to_lws = queue_create(BRIDGE_QUEUE_CAP);
    b->docs = hmap_create();
    b->members = hmap_create();
    if (!b->prefix || !b->node_id || !b->to_redis || !b->to_lws || !b->docs || !b->members) {
        snprintf(err, errlen, "out of memory");
        br_destroy(&b->base);
        return NULL;
    }
    if (br_parse_url(b, rc->url, err, errlen) < 0) {
        br_destroy(&b->base);
        return NULL;
    }
    return &b->base;
}
