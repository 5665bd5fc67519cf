/* Documents on the Redis thread: SUBSCRIBE/UNSUBSCRIBE as local interest comes and goes, the
 * in-order delivery of each document's operations with gap repair from history, epoch changes
 * (history lost), and the document requests: join, leave, operation, cursor, sync. */
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "relay/clock.h"
#include "relay/log.h"

#define BRIDGE_PENDING_MAX 4096
#define BRIDGE_REPAIR_PAGE 1000

void bridge_doc_keys(const bridge *b, const char *doc, doc_keys *k)
{
    wire_doc_key(k->epoch, sizeof k->epoch, b->prefix, doc, "epoch");
    wire_doc_key(k->seq, sizeof k->seq, b->prefix, doc, "seq");
    wire_doc_key(k->hist, sizeof k->hist, b->prefix, doc, "hist");
    wire_doc_key(k->presence, sizeof k->presence, b->prefix, doc, "presence");
    wire_doc_key(k->owners, sizeof k->owners, b->prefix, doc, "owners");
    wire_doc_key(k->cursors, sizeof k->cursors, b->prefix, doc, "cursors");
    wire_doc_key(k->ops_ch, sizeof k->ops_ch, b->prefix, doc, "ops");
    wire_doc_key(k->pres_ch, sizeof k->pres_ch, b->prefix, doc, "pres");
    snprintf(k->members, sizeof k->members, "%snode:%s:members", b->prefix, b->node_id);
}

void bridge_epoch_candidate(bridge *b, const char *doc, char out[17])
{
    bdoc *d = bridge_doc(b, doc, false);
    if (!d) {
        bridge_new_epoch(out);
        return;
    }
    if (!d->next_epoch[0])
        bridge_new_epoch(d->next_epoch);
    memcpy(out, d->next_epoch, 17);
}

/* d->epoch was just set from Redis: a candidate Redis adopted must not be offered again. */
static void docs_epoch_adopted(bdoc *d)
{
    if (!strcmp(d->epoch, d->next_epoch))
        d->next_epoch[0] = '\0';
}

const doc_keys *bridge_keys_for(bridge *b, const char *doc, doc_keys *scratch)
{
    bdoc *d = bridge_doc(b, doc, false);
    if (d && !d->keys && (d->keys = malloc(sizeof *d->keys)) != NULL)
        bridge_doc_keys(b, d->id, d->keys);
    if (d && d->keys)
        return d->keys;
    bridge_doc_keys(b, doc, scratch);
    return scratch;
}

bdoc *bridge_doc(bridge *b, const char *doc, bool create)
{
    bdoc *d = hmap_get(b->docs, doc, strlen(doc));
    if (d || !create)
        return d;
    d = calloc(1, sizeof *d);
    if (!d)
        return NULL;
    snprintf(d->id, sizeof d->id, "%s", doc);
    if (hmap_put(b->docs, doc, strlen(doc), d) < 0) {
        free(d);
        return NULL;
    }
    return d;
}

static void docs_pending_clear(bdoc *d)
{
    for (size_t i = 0; i < d->n_pending; i++)
        wire_buf_free(&d->pending[i]);
    d->n_pending = 0;
}

static void docs_free_one(bridge *b, bdoc *d)
{
    hmap_del(b->docs, d->id, strlen(d->id));
    docs_pending_clear(d);
    free(d->pending);
    free(d->keys);
    free(d);
}

static void docs_subscribe_channels(bridge *b, bdoc *d, bool unsubscribe)
{
    doc_keys k;
    bridge_doc_keys(b, d->id, &k);
    const char *ch[2] = {k.ops_ch, k.pres_ch};
    bridge_subscribe(b, ch, 2, unsubscribe);
}

void bridge_docs_subscribe(bridge *b, const char *doc)
{
    bdoc *d = bridge_doc(b, doc, true);
    if (!d)
        return;
    d->local++;
    d->unsub_at_ms = 0;
    if (!d->subscribed && bridge_link_up(b)) {
        docs_subscribe_channels(b, d, false);
        d->subscribed = true;
    }
}

void bridge_docs_unsubscribe(bridge *b, const char *doc)
{
    bdoc *d = bridge_doc(b, doc, false);
    if (d && --d->local <= 0) {
        d->local = 0;
        d->unsub_at_ms = clock_mono_ms() + BRIDGE_UNSUB_LINGER_MS;
    }
}

/* ---- Delivery -------------------------------------------------------------------------- */

static int docs_push(bridge *b, bevt_kind kind, const char *doc, msgbuf *m, chan_kind chan)
{
    bevt e = {.kind = kind, .m = m, .chan = chan};
    snprintf(e.doc, sizeof e.doc, "%s", doc);
    if (bridge_emit(b, &e) < 0) {
        msgbuf_unref(m);
        return -1;
    }
    return 0;
}

static void docs_copy(char *dst, size_t cap, const char *src, size_t len)
{
    if (len >= cap)
        len = cap - 1;
    memcpy(dst, src, len);
    dst[len] = '\0';
}

static bool docs_is_me(const bridge *b, const wire_msg *w)
{
    return w->node_len == strlen(b->node_id) && !memcmp(w->node_id, b->node_id, w->node_len);
}

/* Encodes one operation as the broadcast clients get and hands it to the WebSocket thread.
 * Returns 0, or -1 when it could not (the operation stays undelivered and will be repaired). */
static int docs_deliver(bridge *b, bdoc *d, const wire_msg *w)
{
    char uid[512], sid[128];
    docs_copy(uid, sizeof uid, w->user_id, w->user_len);
    docs_copy(sid, sizeof sid, w->session_id, w->session_len);
    codec_op op = {w->seq, uid, sid, {w->rest, w->rest_len}};
    msgbuf *m = codec_encode_bc_operation(d->id, &op);
    if (!m)
        return -1;
    m->origin = docs_is_me(b, w) ? w->conn_id : 0;
    m->seq = w->seq;
    if (docs_push(b, BE_PUBLISH, d->id, m, CHAN_DOCUMENT) < 0)
        return -1;
    d->last_seq = w->seq;
    return 0;
}

static bool docs_same_epoch(const bdoc *d, const char *epoch, size_t len)
{
    return strlen(d->epoch) == len && !memcmp(d->epoch, epoch, len);
}

/* The document's history was lost (new epoch): its joined clients must reload, and the new
 * epoch's operations are delivered from seq 1. */
static void docs_reset(bridge *b, bdoc *d, const char *epoch, size_t len)
{
    log_warn("document %s: history lost, epoch %s -> %.*s", d->id, d->epoch, (int)len, epoch);
    docs_copy(d->epoch, sizeof d->epoch, epoch, len);
    docs_epoch_adopted(d);
    d->last_seq = 0;
    bevt *e = calloc(1, sizeof *e);
    if (!e)
        return;
    e->kind = BE_RESET;
    snprintf(e->doc, sizeof e->doc, "%s", d->id);
    snprintf(e->epoch, sizeof e->epoch, "%s", d->epoch);
    if (bridge_push_event(b, e) < 0)
        free(e);
}

static void docs_repair(bridge *b, bdoc *d);

/* Delivers queued live messages that have become next in line; drops stale ones. */
static void docs_drain_pending(bridge *b, bdoc *d)
{
    bool progressed = true;
    while (progressed && d->n_pending) {
        progressed = false;
        for (size_t i = 0; i < d->n_pending;) {
            wire_msg w;
            bool parsed = wire_parse(d->pending[i].data, d->pending[i].len, &w) == 0;
            bool stale =
                !parsed || !docs_same_epoch(d, w.epoch, w.epoch_len) || w.seq <= d->last_seq;
            if (!stale && w.seq == d->last_seq + 1) {
                if (docs_deliver(b, d, &w) < 0)
                    return;
                stale = progressed = true;
            }
            if (stale) {
                wire_buf_free(&d->pending[i]);
                d->pending[i] = d->pending[--d->n_pending];
            } else {
                i++;
            }
        }
    }
    if (d->n_pending && !d->repairing)
        docs_repair(b, d);
}

static void docs_pending_add(bdoc *d, const char *data, size_t len)
{
    if (d->n_pending == BRIDGE_PENDING_MAX)
        return; /* the repair will fetch it from history */
    if (d->n_pending == d->cap_pending) {
        size_t cap = d->cap_pending ? d->cap_pending * 2 : 8;
        wire_buf *grown = realloc(d->pending, cap * sizeof *grown);
        if (!grown)
            return;
        d->pending = grown;
        d->cap_pending = cap;
    }
    wire_buf *w = &d->pending[d->n_pending];
    w->data = malloc(len);
    if (!w->data)
        return;
    memcpy(w->data, data, len);
    w->len = w->cap = len;
    d->n_pending++;
}

static void docs_on_op(bridge *b, bdoc *d, const char *data, size_t len)
{
    wire_msg w;
    if (wire_parse((const uint8_t *)data, len, &w) < 0 || w.kind != 'o')
        return;
    if (!d->has_base) {
        docs_pending_add(d, data, len);
        return;
    }
    if (!docs_same_epoch(d, w.epoch, w.epoch_len))
        docs_reset(b, d, w.epoch, w.epoch_len);
    if (w.seq <= d->last_seq)
        return;
    if (w.seq == d->last_seq + 1 && !d->repairing && docs_deliver(b, d, &w) == 0) {
        docs_drain_pending(b, d);
        return;
    }
    docs_pending_add(d, data, len);
    if (!d->repairing)
        docs_repair(b, d);
}

static void docs_on_presence(bridge *b, bdoc *d, const char *data, size_t len)
{
    wire_msg w;
    if (wire_parse((const uint8_t *)data, len, &w) < 0 || w.kind != 'p')
        return;
    msgbuf *m = msgbuf_from(MSGBUF_BINARY, w.rest, w.rest_len);
    if (!m)
        return;
    m->origin = docs_is_me(b, &w) ? w.conn_id : 0;
    m->coalesce = w.coalesce;
    docs_push(b, BE_PUBLISH, d->id, m, CHAN_PRESENCE);
}

void bridge_docs_on_message(bridge *b, const char *channel, size_t clen, const char *data,
                            size_t len)
{
    char doc[129];
    const char *suffix;
    if (wire_parse_doc_channel(channel, clen, b->prefix, doc, sizeof doc, &suffix) < 0)
        return;
    bdoc *d = bridge_doc(b, doc, false);
    if (!d)
        return; /* a message racing our UNSUBSCRIBE */
    if (!strcmp(suffix, "ops"))
        docs_on_op(b, d, data, len);
    else if (!strcmp(suffix, "pres"))
        docs_on_presence(b, d, data, len);
}

void bridge_docs_set_base(bridge *b, const char *doc, const char *epoch, size_t len, uint64_t seq)
{
    bdoc *d = bridge_doc(b, doc, true);
    if (!d)
        return;
    if (!d->has_base) {
        d->has_base = true;
        docs_copy(d->epoch, sizeof d->epoch, epoch, len);
        docs_epoch_adopted(d);
        d->last_seq = seq;
        docs_drain_pending(b, d);
    } else if (!docs_same_epoch(d, epoch, len)) {
        docs_reset(b, d, epoch, len);
        docs_repair(b, d);
    } else if (seq > d->last_seq && !d->repairing) {
        docs_repair(b, d);
    }
}

void bridge_docs_check_epoch(bridge *b, const char *doc, const char *epoch, size_t len)
{
    bdoc *d = bridge_doc(b, doc, false);
    if (d && d->has_base && !docs_same_epoch(d, epoch, len)) {
        docs_reset(b, d, epoch, len);
        docs_repair(b, d);
    }
}

/* ---- Repair from history --------------------------------------------------------------- */

static bool docs_reply_ok(const redisReply *r, size_t elements)
{
    return r && r->type == REDIS_REPLY_ARRAY && r->elements >= elements;
}

static void docs_push_lagged(bridge *b, bdoc *d, uint64_t missed)
{
    bevt *e = calloc(1, sizeof *e);
    if (!e)
        return;
    e->kind = BE_LAGGED;
    e->missed = missed;
    snprintf(e->doc, sizeof e->doc, "%s", d->id);
    if (bridge_push_event(b, e) < 0)
        free(e);
}

/* Redis came back with an older seq in the same epoch (lost writes: RDB-only persistence, a
 * failover to a lagging replica): what clients hold is no longer in Redis. Dropping the epoch
 * key makes the next script start a new epoch, which the repair then turns into `reset`. */
static void docs_abandon_epoch(bridge *b, bdoc *d, uint64_t latest)
{
    log_error("document %s: Redis seq %llu is behind delivered seq %llu in epoch %s; starting "
              "a new epoch",
              d->id, (unsigned long long)latest, (unsigned long long)d->last_seq, d->epoch);
    doc_keys k;
    bridge_doc_keys(b, d->id, &k);
    const char *av[] = {"DEL", k.epoch};
    if (b->cmd)
        redisAsyncCommandArgv(b->cmd, NULL, NULL, 2, av, NULL);
    docs_repair(b, d);
}

static void docs_on_repair(redisAsyncContext *ac, void *r, void *privdata)
{
    bridge *b = ac->data;
    redisReply *reply = r;
    bridge_saw_reply(b, reply);
    char *doc = privdata;
    bdoc *d = bridge_doc(b, doc, false);
    free(doc);
    if (!d)
        return;
    d->repairing = false;
    if (!docs_reply_ok(reply, 5) || reply->element[0]->type != REDIS_REPLY_STRING)
        return; /* link trouble: the resync after reconnection repairs again */
    redisReply *ep = reply->element[0], *items = reply->element[4];
    uint64_t latest = (uint64_t)reply->element[1]->integer;
    uint64_t from = (uint64_t)reply->element[3]->integer;
    if (!docs_same_epoch(d, ep->str, ep->len)) {
        docs_reset(b, d, ep->str, ep->len);
    } else if (latest < d->last_seq) {
        docs_abandon_epoch(b, d, latest);
        return;
    }
    if (reply->element[2]->integer == 0 && from > d->last_seq + 1) {
        log_warn("document %s: history no longer holds seq %llu..%llu", d->id,
                 (unsigned long long)d->last_seq + 1, (unsigned long long)from - 1);
        docs_push_lagged(b, d, from - 1 - d->last_seq);
        d->last_seq = from - 1;
    }
    for (size_t i = 0; i < items->elements; i++) {
        wire_msg w;
        redisReply *it = items->element[i];
        if (it->type != REDIS_REPLY_STRING ||
            wire_parse((const uint8_t *)it->str, it->len, &w) < 0 || w.seq != d->last_seq + 1)
            continue;
        if (docs_deliver(b, d, &w) < 0)
            return;
    }
    docs_drain_pending(b, d);
    if (d->last_seq < latest && !d->repairing)
        docs_repair(b, d);
}

/* Fetches what follows last_seq from history (one page); the reply continues the repair. */
static void docs_repair(bridge *b, bdoc *d)
{
    if (!bridge_link_up(b) || !d->has_base)
        return;
    doc_keys k;
    bridge_doc_keys(b, d->id, &k);
    char since[24], limit[12], epoch[17], ttl[16];
    snprintf(since, sizeof since, "%llu", (unsigned long long)d->last_seq);
    snprintf(limit, sizeof limit, "%d", BRIDGE_REPAIR_PAGE);
    bridge_epoch_candidate(b, d->id, epoch);
    snprintf(ttl, sizeof ttl, "%d", b->lim.history_ttl_s);
    const char *argv[] = {k.epoch, k.seq, k.hist, since, limit, epoch, ttl};
    char *doc = strdup(d->id);
    if (!doc)
        return;
    if (bridge_evalsha(b, docs_on_repair, doc, SCRIPT_SYNC, 3, 4, argv, NULL) < 0) {
        free(doc);
        return;
    }
    d->repairing = true;
}

/* ---- Link recovery and housekeeping ----------------------------------------------------- */

typedef struct docs_walk {
    bridge *b;
    const char **channels;
    size_t n, cap;
    char (*names)[300];
} docs_walk;

static int docs_resubscribe_cb(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl;
    docs_walk *w = ud;
    bdoc *d = v;
    d->repairing = false;
    d->subscribed = false;
    if (w->n + 2 > w->cap)
        return 0;
    wire_doc_key(w->names[w->n], 300, w->b->prefix, d->id, "ops");
    wire_doc_key(w->names[w->n + 1], 300, w->b->prefix, d->id, "pres");
    w->channels[w->n] = w->names[w->n];
    w->channels[w->n + 1] = w->names[w->n + 1];
    w->n += 2;
    d->subscribed = true;
    return 0;
}

static int docs_reregister_cb(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl;
    bridge *b = ud;
    bmember *m = v;
    doc_keys keys;
    bridge_doc_keys(b, m->doc, &keys);
    char owner[200], epoch[17], ttl[16], entry[200];
    bridge_owner(b, m->conn_id, owner, sizeof owner);
    bridge_epoch_candidate(b, m->doc, epoch);
    snprintf(ttl, sizeof ttl, "%d", b->lim.history_ttl_s);
    snprintf(entry, sizeof entry, "%s\t%s", m->doc, m->sid);
    const char *argv[] = {keys.epoch,    keys.seq,    keys.hist,
                          keys.presence, keys.owners, keys.cursors,
                          keys.members,  m->sid,      (const char *)m->value.data,
                          owner,         epoch,       ttl,
                          "0",           "",          "",
                          entry};
    size_t lens[16];
    for (int i = 0; i < 16; i++)
        lens[i] = i == 8 ? m->value.len : strlen(argv[i]);
    bridge_evalsha(b, NULL, NULL, SCRIPT_JOIN, 7, 9, argv, lens);
    return 0;
}

static int docs_repair_cb(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl;
    bdoc *d = v;
    if (d->has_base && !d->repairing)
        docs_repair(ud, d);
    return 0;
}

/* After (re)connecting: subscribe every document again, put our presence entries back (Redis
 * may have lost them) and repair whatever the live stream missed meanwhile. */
void bridge_docs_resync(bridge *b)
{
    size_t n = hmap_count(b->docs) * 2;
    docs_walk w = {b, calloc(n + 1, sizeof(char *)), 0, n, calloc(n + 1, 300)};
    if (w.channels && w.names) {
        hmap_each(b->docs, docs_resubscribe_cb, &w);
        if (w.n)
            bridge_subscribe(b, w.channels, w.n, false);
    }
    free(w.channels);
    free(w.names);
    hmap_each(b->members, docs_reregister_cb, b);
    bridge_requests_replay(b);
    hmap_each(b->docs, docs_repair_cb, b);
}

typedef struct docs_expired {
    bdoc **list;
    size_t n, cap;
    int64_t now;
} docs_expired;

static int docs_expired_cb(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl;
    docs_expired *x = ud;
    bdoc *d = v;
    if (d->local == 0 && d->unsub_at_ms && x->now >= d->unsub_at_ms && x->n < x->cap)
        x->list[x->n++] = d;
    return 0;
}

/* Unsubscribes documents whose last local subscriber left more than the linger ago (the
 * linger absorbs leave/join churn without SUBSCRIBE storms). */
void bridge_docs_tick(bridge *b, int64_t now)
{
    bdoc *list[256];
    docs_expired x = {list, 0, 256, now};
    hmap_each(b->docs, docs_expired_cb, &x);
    for (size_t i = 0; i < x.n; i++) {
        if (list[i]->subscribed && bridge_link_up(b))
            docs_subscribe_channels(b, list[i], true);
        docs_free_one(b, list[i]);
    }
}

static int docs_free_cb(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl, (void)ud;
    bdoc *d = v;
    docs_pending_clear(d);
    free(d->pending);
    free(d->keys);
    free(d);
    return 0;
}

static int docs_free_member_cb(const void *k, size_t kl, void *v, void *ud)
{
    (void)k, (void)kl, (void)ud;
    bmember *m = v;
    wire_buf_free(&m->value);
    free(m);
    return 0;
}

void bridge_docs_free(bridge *b)
{
    hmap_each(b->docs, docs_free_cb, NULL);
    hmap_destroy(b->docs);
    b->docs = NULL;
    hmap_each(b->members, docs_free_member_cb, NULL);
    hmap_destroy(b->members);
    b->members = NULL;
}
