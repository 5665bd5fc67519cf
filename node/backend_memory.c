/* The in-process backend of a standalone node: sequencing, history, presence and resumable
 * sessions kept in this process's memory. Every result is delivered synchronously. */
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "relay/clock.h"
#include "relay/hmap.h"
#include "relay/log.h"
#include "relay/rand.h"

typedef struct mem_op {
    uint64_t seq;
    char *user_id;
    char *session_id;
    size_t payload_len;
    uint8_t payload[];
} mem_op;

typedef struct mem_member {
    uint64_t conn_id;
    char *session_id, *user_id, *user_name, *color;
    uint8_t *cursor; /* msgpack; NULL until set */
    size_t cursor_len;
} mem_member;

typedef struct mem_doc {
    char *document_id;
    char epoch[17];
    uint64_t seq;
    mem_op **history; /* ring of up to history_length operations, oldest at h_head */
    size_t h_cap, h_len, h_head;
    hmap *presence; /* session_id -> mem_member */
    int64_t last_used_ms;
} mem_doc;

typedef struct mem_session {
    char *session_id, *user_id, *user_name, *color;
    char resume_token[65];
    token_claims claims;
    uint64_t owner; /* conn_id holding it, 0 while released */
    int64_t released_ms;
} mem_session;

typedef struct backend_memory {
    backend base;
    backend_limits lim;
    hmap *docs;     /* document_id -> mem_doc */
    hmap *sessions; /* session_id -> mem_session */
} backend_memory;

static void mem_member_free(mem_member *m)
{
    if (!m)
        return;
    free(m->session_id);
    free(m->user_id);
    free(m->user_name);
    free(m->color);
    free(m->cursor);
    free(m);
}

static int mem_member_free_cb(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl, (void)ud;
    mem_member_free(v);
    return 0;
}

static void mem_op_free(mem_op *op)
{
    if (!op)
        return;
    free(op->user_id);
    free(op->session_id);
    free(op);
}

static void mem_doc_clear_history(mem_doc *d)
{
    for (size_t i = 0; i < d->h_len; i++)
        mem_op_free(d->history[(d->h_head + i) % d->h_cap]);
    d->h_len = d->h_head = 0;
}

static void mem_doc_free(mem_doc *d)
{
    if (!d)
        return;
    mem_doc_clear_history(d);
    free(d->history);
    if (d->presence) {
        hmap_each(d->presence, mem_member_free_cb, NULL);
        hmap_destroy(d->presence);
    }
    free(d->document_id);
    free(d);
}

static void mem_session_free(mem_session *s)
{
    if (!s)
        return;
    free(s->session_id);
    free(s->user_id);
    free(s->user_name);
    free(s->color);
    token_claims_free(&s->claims);
    free(s);
}

/* A new incarnation of a document's history: fresh epoch, seq back to 0. */
static void mem_doc_new_epoch(mem_doc *d)
{
    mem_doc_clear_history(d);
    d->seq = 0;
    if (rand_hex(d->epoch, 8) < 0)
        snprintf(d->epoch, sizeof d->epoch, "%016llx", (unsigned long long)clock_wall_ms());
}

/* Returns the document, creating it (or starting a new epoch after the idle TTL). */
static mem_doc *mem_doc_get(backend_memory *bm, const char *document_id)
{
    int64_t now = clock_mono_ms();
    mem_doc *d = hmap_get(bm->docs, document_id, strlen(document_id));
    if (d) {
        if (now - d->last_used_ms > (int64_t)bm->lim.history_ttl_s * 1000)
            mem_doc_new_epoch(d);
        d->last_used_ms = now;
        return d;
    }
    d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    d->document_id = strdup(document_id);
    d->presence = hmap_create();
    if (!d->document_id || !d->presence ||
        hmap_put(bm->docs, document_id, strlen(document_id), d) < 0) {
        mem_doc_free(d);
        return NULL;
    }
    mem_doc_new_epoch(d);
    d->last_used_ms = now;
    return d;
}

static backend_memory *mem_of(backend *b)
{
    return (backend_memory *)b;
}

static void mem_reply_error(backend_memory *bm, uint64_t conn_id, const char *code,
                            const char *message, codec_blob ref)
{
    msgbuf *m = codec_encode_error(code, message, ref);
    if (m)
        bm->base.ev.reply(bm->base.ev.ctx, conn_id, m);
}

static bool mem_ready(backend *b)
{
    (void)b;
    return true;
}

static codec_user mem_member_user(const mem_member *m)
{
    codec_user u = {m->session_id, m->user_id, m->user_name, m->color, {m->cursor, m->cursor_len}};
    return u;
}

typedef struct mem_users {
    codec_user *users;
    size_t n;
} mem_users;

static int mem_collect_cb(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl;
    mem_users *acc = ud;
    acc->users[acc->n++] = mem_member_user(v);
    return 0;
}

static mem_member *mem_member_new(const backend_member *m)
{
    mem_member *e = calloc(1, sizeof *e);
    if (!e)
        return NULL;
    e->conn_id = m->conn_id;
    e->session_id = strdup(m->session_id);
    e->user_id = strdup(m->user_id);
    e->user_name = strdup(m->user_name);
    e->color = strdup(m->color);
    if (!e->session_id || !e->user_id || !e->user_name || !e->color) {
        mem_member_free(e);
        return NULL;
    }
    return e;
}

static void mem_publish_user(backend_memory *bm, const char *type, const mem_doc *d,
                             const mem_member *e)
{
    codec_user u = mem_member_user(e);
    msgbuf *m = codec_encode_bc_user(type, d->document_id, &u);
    if (!m)
        return;
    m->origin = e->conn_id;
    bm->base.ev.publish(bm->base.ev.ctx, d->document_id, CHAN_PRESENCE, m);
}

static void mem_join(backend *b, const backend_member *m, bool announce)
{
    backend_memory *bm = mem_of(b);
    mem_doc *d = mem_doc_get(bm, m->document_id);
    mem_member *e = d ? hmap_get(d->presence, m->session_id, strlen(m->session_id)) : NULL;
    if (d && (!e || e->conn_id != m->conn_id)) {
        mem_member *fresh = mem_member_new(m);
        if (fresh && e && e->cursor) { /* a resumed session keeps its cursor */
            fresh->cursor = e->cursor, fresh->cursor_len = e->cursor_len;
            e->cursor = NULL;
        }
        if (!fresh || hmap_put(d->presence, m->session_id, strlen(m->session_id), fresh) < 0) {
            mem_member_free(fresh);
            d = NULL;
        } else {
            mem_member_free(e);
            e = fresh;
        }
    }
    if (!d) {
        mem_reply_error(bm, m->conn_id, "internal", "out of memory", (codec_blob){0});
        return;
    }
    if (announce)
        mem_publish_user(bm, "user_joined", d, e);
    mem_users acc = {calloc(hmap_count(d->presence) + 1, sizeof(codec_user)), 0};
    if (!acc.users) {
        mem_reply_error(bm, m->conn_id, "internal", "out of memory", (codec_blob){0});
        return;
    }
    hmap_each(d->presence, mem_collect_cb, &acc);
    msgbuf *reply = codec_encode_joined(d->document_id, d->epoch, d->seq, acc.users, acc.n);
    free(acc.users);
    if (reply)
        bm->base.ev.joined(bm->base.ev.ctx, m->conn_id, d->seq, reply);
    else
        mem_reply_error(bm, m->conn_id, "internal", "out of memory", (codec_blob){0});
}

static void mem_leave(backend *b, const backend_member *m)
{
    backend_memory *bm = mem_of(b);
    mem_doc *d = hmap_get(bm->docs, m->document_id, strlen(m->document_id));
    mem_member *e = d ? hmap_get(d->presence, m->session_id, strlen(m->session_id)) : NULL;
    if (!e || e->conn_id != m->conn_id)
        return; /* the session has moved to another connection: not a leave */
    hmap_del(d->presence, m->session_id, strlen(m->session_id));
    mem_publish_user(bm, "user_left", d, e);
    mem_member_free(e);
}

static mem_op *mem_op_new(uint64_t seq, const backend_member *m, codec_blob payload)
{
    mem_op *op = malloc(sizeof *op + payload.len);
    if (!op)
        return NULL;
    op->seq = seq;
    op->user_id = strdup(m->user_id);
    op->session_id = strdup(m->session_id);
    op->payload_len = payload.len;
    memcpy(op->payload, payload.data, payload.len);
    if (!op->user_id || !op->session_id) {
        free(op->user_id);
        free(op->session_id);
        free(op);
        return NULL;
    }
    return op;
}

/* Appends op to the capped history, dropping the oldest when full. Returns 0 or -1 (OOM). */
static int mem_history_append(backend_memory *bm, mem_doc *d, mem_op *op)
{
    if (d->h_len == d->h_cap && d->h_cap < bm->lim.history_length) {
        size_t cap = d->h_cap ? d->h_cap * 2 : 16;
        if (cap > bm->lim.history_length)
            cap = bm->lim.history_length;
        mem_op **grown = malloc(cap * sizeof *grown);
        if (!grown)
            return -1;
        for (size_t i = 0; i < d->h_len; i++)
            grown[i] = d->history[(d->h_head + i) % d->h_cap];
        free(d->history);
        d->history = grown;
        d->h_cap = cap;
        d->h_head = 0;
    }
    if (d->h_len == d->h_cap) {
        mem_op_free(d->history[d->h_head]);
        d->history[d->h_head] = op;
        d->h_head = (d->h_head + 1) % d->h_cap;
    } else {
        d->history[(d->h_head + d->h_len) % d->h_cap] = op;
        d->h_len++;
    }
    return 0;
}

static void mem_operation(backend *b, const backend_member *m, codec_blob ref, codec_blob payload)
{
    backend_memory *bm = mem_of(b);
    mem_doc *d = mem_doc_get(bm, m->document_id);
    mem_op *op = d ? mem_op_new(d->seq + 1, m, payload) : NULL;
    if (!op || mem_history_append(bm, d, op) < 0) {
        mem_op_free(op);
        mem_reply_error(bm, m->conn_id, "internal", "out of memory", ref);
        return;
    }
    d->seq = op->seq;
    codec_op cop = {op->seq, op->user_id, op->session_id, {op->payload, op->payload_len}};
    msgbuf *bc = codec_encode_bc_operation(d->document_id, &cop);
    if (bc) {
        bc->origin = m->conn_id;
        bm->base.ev.publish(bm->base.ev.ctx, d->document_id, CHAN_DOCUMENT, bc);
    }
    msgbuf *ack = codec_encode_ack(ref, op->seq);
    if (ack)
        bm->base.ev.reply(bm->base.ev.ctx, m->conn_id, ack);
}

static void mem_cursor(backend *b, const backend_member *m, codec_blob cursor)
{
    backend_memory *bm = mem_of(b);
    mem_doc *d = hmap_get(bm->docs, m->document_id, strlen(m->document_id));
    mem_member *e = d ? hmap_get(d->presence, m->session_id, strlen(m->session_id)) : NULL;
    if (!e || e->conn_id != m->conn_id)
        return;
    uint8_t *copy = malloc(cursor.len);
    if (!copy)
        return;
    memcpy(copy, cursor.data, cursor.len);
    free(e->cursor);
    e->cursor = copy;
    e->cursor_len = cursor.len;
    msgbuf *bc = codec_encode_bc_cursor(d->document_id, e->session_id, e->user_id, cursor);
    if (bc) {
        bc->coalesce = hmap_hash(e->session_id, strlen(e->session_id)) | 1;
        bc->origin = m->conn_id;
        bm->base.ev.publish(bm->base.ev.ctx, d->document_id, CHAN_PRESENCE, bc);
    }
}

static void mem_sync(backend *b, uint64_t conn_id, const char *document_id, uint64_t since,
                     uint32_t limit, codec_blob ref)
{
    backend_memory *bm = mem_of(b);
    mem_doc *d = mem_doc_get(bm, document_id);
    if (!d) {
        mem_reply_error(bm, conn_id, "internal", "out of memory", ref);
        return;
    }
    uint32_t max = bm->lim.sync_limit;
    if (limit && limit < max)
        max = limit;
    uint64_t oldest = d->h_len ? d->history[d->h_head]->seq : d->seq + 1;
    bool complete = since + 1 >= oldest || since >= d->seq;
    size_t first = since + 1 > oldest ? (size_t)(since + 1 - oldest) : 0;
    size_t n = first < d->h_len ? d->h_len - first : 0;
    bool has_more = n > max;
    if (has_more)
        n = max;
    codec_op *ops = calloc(n ? n : 1, sizeof *ops);
    if (!ops) {
        mem_reply_error(bm, conn_id, "internal", "out of memory", ref);
        return;
    }
    for (size_t i = 0; i < n; i++) {
        mem_op *op = d->history[(d->h_head + first + i) % d->h_cap];
        ops[i] = (codec_op){op->seq, op->user_id, op->session_id, {op->payload, op->payload_len}};
    }
    msgbuf *resp = codec_encode_sync_response(d->document_id, d->epoch, since, d->seq, ops, n,
                                              complete, has_more, ref);
    free(ops);
    if (resp)
        bm->base.ev.reply(bm->base.ev.ctx, conn_id, resp);
}

static mem_session *mem_session_new(const backend_session *s)
{
    mem_session *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->session_id = strdup(s->session_id);
    r->user_id = strdup(s->user_id);
    r->user_name = strdup(s->user_name);
    r->color = strdup(s->color);
    if (!r->session_id || !r->user_id || !r->user_name || !r->color ||
        token_claims_copy(&r->claims, s->claims) < 0) {
        mem_session_free(r);
        return NULL;
    }
    snprintf(r->resume_token, sizeof r->resume_token, "%s", s->resume_token);
    return r;
}

static void mem_session_save(backend *b, uint64_t conn_id, const backend_session *s)
{
    backend_memory *bm = mem_of(b);
    mem_session *r = mem_session_new(s);
    if (!r) {
        log_error("session %s not saved: out of memory", s->session_id);
        return;
    }
    r->owner = conn_id;
    mem_session *old = hmap_get(bm->sessions, s->session_id, strlen(s->session_id));
    if (hmap_put(bm->sessions, s->session_id, strlen(s->session_id), r) < 0) {
        mem_session_free(r);
        return;
    }
    mem_session_free(old);
}

static void mem_session_release(backend *b, uint64_t conn_id, const char *session_id)
{
    mem_session *r = hmap_get(mem_of(b)->sessions, session_id, strlen(session_id));
    if (r && r->owner == conn_id) {
        r->owner = 0;
        r->released_ms = clock_mono_ms();
    }
}

/* Compares secrets in time independent of where they differ. */
static bool mem_token_equal(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    unsigned char diff = (unsigned char)(la != lb);
    for (size_t i = 0; i < la && i < lb; i++)
        diff |= (unsigned char)(a[i] ^ b[i]);
    return diff == 0;
}

static bool mem_session_expired(const backend_memory *bm, const mem_session *r, int64_t now)
{
    return r->owner == 0 && now - r->released_ms > (int64_t)bm->lim.resume_ttl_s * 1000;
}

static void mem_session_resume(backend *b, uint64_t conn_id, const char *session_id,
                               const char *resume_token, const char *new_resume_token)
{
    backend_memory *bm = mem_of(b);
    backend_events *ev = &bm->base.ev;
    mem_session *r = hmap_get(bm->sessions, session_id, strlen(session_id));
    if (!r || mem_session_expired(bm, r, clock_mono_ms())) {
        ev->resumed(ev->ctx, conn_id, NULL, "unknown or expired session");
        return;
    }
    if (!mem_token_equal(r->resume_token, resume_token)) {
        ev->resumed(ev->ctx, conn_id, NULL, "invalid resume token");
        return;
    }
    uint64_t previous = r->owner;
    r->owner = conn_id;
    snprintf(r->resume_token, sizeof r->resume_token, "%s", new_resume_token);
    if (previous && previous != conn_id)
        ev->taken_over(ev->ctx, previous);
    backend_session s = {r->session_id, r->user_id,      r->user_name,
                         r->color,      r->resume_token, &r->claims};
    ev->resumed(ev->ctx, conn_id, &s, NULL);
}

typedef struct mem_sweep {
    backend_memory *bm;
    int64_t now;
    char **keys;
    size_t n, cap;
} mem_sweep;

static int mem_sweep_collect(mem_sweep *sw, const void *key, size_t klen)
{
    if (sw->n == sw->cap) {
        size_t cap = sw->cap ? sw->cap * 2 : 16;
        char **grown = realloc(sw->keys, cap * sizeof *grown);
        if (!grown)
            return 1;
        sw->keys = grown;
        sw->cap = cap;
    }
    sw->keys[sw->n] = strndup(key, klen);
    if (!sw->keys[sw->n])
        return 1;
    sw->n++;
    return 0;
}

static int mem_sweep_session_cb(const void *k, size_t kl, void *v, void *ud)
{
    mem_sweep *sw = ud;
    return mem_session_expired(sw->bm, v, sw->now) ? mem_sweep_collect(sw, k, kl) : 0;
}

static int mem_sweep_doc_cb(const void *k, size_t kl, void *v, void *ud)
{
    mem_sweep *sw = ud;
    mem_doc *d = v;
    bool idle = sw->now - d->last_used_ms > (int64_t)sw->bm->lim.history_ttl_s * 1000;
    return idle && hmap_count(d->presence) == 0 ? mem_sweep_collect(sw, k, kl) : 0;
}

/* Frees resumable sessions past their TTL and idle documents nobody is in. */
static void mem_tick(backend *b, const relay_stats *st)
{
    (void)st;
    backend_memory *bm = mem_of(b);
    mem_sweep sw = {bm, clock_mono_ms(), NULL, 0, 0};
    hmap_each(bm->sessions, mem_sweep_session_cb, &sw);
    for (size_t i = 0; i < sw.n; i++) {
        mem_session_free(hmap_del(bm->sessions, sw.keys[i], strlen(sw.keys[i])));
        free(sw.keys[i]);
    }
    sw.n = 0;
    hmap_each(bm->docs, mem_sweep_doc_cb, &sw);
    for (size_t i = 0; i < sw.n; i++) {
        mem_doc_free(hmap_del(bm->docs, sw.keys[i], strlen(sw.keys[i])));
        free(sw.keys[i]);
    }
    free(sw.keys);
}

static int mem_free_doc_cb(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl, (void)ud;
    mem_doc_free(v);
    return 0;
}

static int mem_free_session_cb(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl, (void)ud;
    mem_session_free(v);
    return 0;
}

static void mem_destroy(backend *b)
{
    backend_memory *bm = mem_of(b);
    if (bm->docs) {
        hmap_each(bm->docs, mem_free_doc_cb, NULL);
        hmap_destroy(bm->docs);
    }
    if (bm->sessions) {
        hmap_each(bm->sessions, mem_free_session_cb, NULL);
        hmap_destroy(bm->sessions);
    }
    free(bm);
}

/* A standalone node has no other source of broadcasts, no thread and no cluster. */
static void mem_subscription(backend *b, const char *document_id)
{
    (void)b, (void)document_id;
}

static void mem_nothing(backend *b)
{
    (void)b;
}

static int mem_start(backend *b, struct lws_context *ctx)
{
    (void)b, (void)ctx;
    return 0;
}

static const backend_vtable mem_vtable = {
    .destroy = mem_destroy,
    .ready = mem_ready,
    .join = mem_join,
    .leave = mem_leave,
    .operation = mem_operation,
    .cursor = mem_cursor,
    .sync = mem_sync,
    .session_save = mem_session_save,
    .session_release = mem_session_release,
    .session_resume = mem_session_resume,
    .subscribe = mem_subscription,
    .unsubscribe = mem_subscription,
    .tick = mem_tick,
    .poll = mem_nothing,
    .start = mem_start,
    .detach = mem_nothing,
    .stop = mem_nothing,
};

backend *backend_memory_create(const backend_events *ev, const backend_limits *lim)
{
    backend_memory *bm = calloc(1, sizeof *bm);
    if (!bm)
        return NULL;
    bm->base.vt = &mem_vtable;
    bm->base.ev = *ev;
    bm->lim = *lim;
    bm->docs = hmap_create();
    bm->sessions = hmap_create();
    if (!bm->docs || !bm->sessions) {
        mem_destroy(&bm->base);
        return NULL;
    }
    return &bm->base;
}
