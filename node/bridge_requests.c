/* Document requests on the Redis thread: join, leave, operation, cursor and sync, each one
 * EVALSHA of a script (bridge_scripts.c), answered to the WebSocket thread from its reply. */
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "relay/log.h"

static bool req_reply_array(const redisReply *r, size_t n)
{
    return r && r->type == REDIS_REPLY_ARRAY && r->elements >= n;
}

/* A script reply that is an error means the link is unusable as it stands (NOSCRIPT after a
 * Redis restart, or worse): reconnecting reloads the scripts. */
static void req_check_error(bridge *b, const redisReply *r)
{
    if (r && r->type == REDIS_REPLY_ERROR) {
        log_error("redis script error: %s", r->str);
        if (!strncmp(r->str, "NOSCRIPT", 8))
            bridge_link_down(b, "scripts missing (Redis restarted?)");
    }
}

static void req_unavailable(bridge *b, const bcmd *c)
{
    bridge_reply_error(b, c->conn_id, "unavailable", "document store unreachable, retry", c->ref);
}

static int req_push_reply(bridge *b, bevt_kind kind, uint64_t conn_id, uint64_t seq, msgbuf *m)
{
    bevt e = {.kind = kind, .conn_id = conn_id, .seq = seq, .m = m};
    if (!m || bridge_emit(b, &e) < 0) {
        msgbuf_unref(m);
        return -1;
    }
    return 0;
}

/* Wraps a broadcast body as a presence-channel message. */
static int req_presence_msg(bridge *b, uint64_t conn_id, msgbuf *body, wire_buf *out)
{
    int rc = body ? wire_presence(out, b->node_id, conn_id, body) : -1;
    msgbuf_unref(body);
    return rc;
}

/* ---- join ---------------------------------------------------------------------------- */

static void req_member_key(const char *doc, const char *sid, char *out, size_t len)
{
    snprintf(out, len, "%s\t%s", doc, sid);
}

static void req_remember_member(bridge *b, const bcmd *c)
{
    char key[200];
    req_member_key(c->doc, c->sid, key, sizeof key);
    bmember *m = calloc(1, sizeof *m);
    if (!m || wire_member(&m->value, c->user_id, c->user_name, c->color) < 0) {
        free(m);
        return;
    }
    snprintf(m->doc, sizeof m->doc, "%s", c->doc);
    snprintf(m->sid, sizeof m->sid, "%s", c->sid);
    m->conn_id = c->conn_id;
    bmember *old = hmap_get(b->members, key, strlen(key));
    if (hmap_put(b->members, key, strlen(key), m) < 0) {
        wire_buf_free(&m->value);
        free(m);
        return;
    }
    if (old) {
        wire_buf_free(&old->value);
        free(old);
    }
}

static void req_forget_member(bridge *b, const bcmd *c)
{
    char key[200];
    req_member_key(c->doc, c->sid, key, sizeof key);
    bmember *m = hmap_get(b->members, key, strlen(key));
    if (m && m->conn_id == c->conn_id) {
        hmap_del(b->members, key, strlen(key));
        wire_buf_free(&m->value);
        free(m);
    }
}

/* Builds the users of joined_document from the presence and cursor hashes (flat arrays). */
static msgbuf *req_encode_joined(const bcmd *c, const redisReply *epoch, uint64_t seq,
                                 const redisReply *presence, const redisReply *cursors)
{
    size_t n = presence->elements / 2;
    codec_user *users = calloc(n + 1, sizeof *users);
    char *names = calloc(n + 1, 600);
    char ep[33];
    snprintf(ep, sizeof ep, "%.*s", (int)epoch->len, epoch->str);
    size_t k = 0;
    for (size_t i = 0; users && names && i < n; i++) {
        const redisReply *sid = presence->element[2 * i], *val = presence->element[2 * i + 1];
        char *slot = names + k * 600;
        if (sid->type != REDIS_REPLY_STRING || val->type != REDIS_REPLY_STRING || sid->len > 64)
            continue;
        memcpy(slot, sid->str, sid->len);
        slot[sid->len] = '\0';
        codec_user *u = &users[k];
        u->session_id = slot;
        if (wire_parse_member((const uint8_t *)val->str, val->len, slot + 65, 600 - 65, &u->user_id,
                              &u->user_name, &u->color) < 0)
            continue;
        for (size_t j = 0; j + 1 < cursors->elements; j += 2) {
            const redisReply *cs = cursors->element[j], *cv = cursors->element[j + 1];
            if (cs->len == sid->len && !memcmp(cs->str, sid->str, sid->len)) {
                u->cursor = (codec_blob){(const uint8_t *)cv->str, cv->len};
                break;
            }
        }
        k++;
    }
    msgbuf *m = users && names ? codec_encode_joined(c->doc, ep, seq, users, k) : NULL;
    free(users);
    free(names);
    return m;
}

static void req_on_join(redisAsyncContext *ac, void *r, void *privdata)
{
    bridge *b = ac->data;
    redisReply *reply = r;
    bridge_saw_reply(b, reply);
    bcmd *c = privdata;
    req_check_error(b, reply);
    if (!req_reply_array(reply, 4) || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[2]->type != REDIS_REPLY_ARRAY ||
        reply->element[3]->type != REDIS_REPLY_ARRAY) {
        if (c->announce) /* a failed first join; a repeated one keeps its entry */
            req_forget_member(b, c);
        req_unavailable(b, c);
        free(c);
        return;
    }
    uint64_t seq = (uint64_t)reply->element[1]->integer;
    bridge_docs_set_base(b, c->doc, reply->element[0]->str, reply->element[0]->len, seq);
    msgbuf *m = req_encode_joined(c, reply->element[0], seq, reply->element[2], reply->element[3]);
    if (req_push_reply(b, BE_JOINED, c->conn_id, seq, m) < 0)
        req_unavailable(b, c);
    free(c);
}

void bridge_docs_join(bridge *b, bcmd *c)
{
    doc_keys k;
    bridge_doc_keys(b, c->doc, &k);
    char owner[200], epoch[17], ttl[16], entry[200];
    bridge_owner(b, c->conn_id, owner, sizeof owner);
    bridge_epoch_candidate(b, c->doc, epoch);
    snprintf(ttl, sizeof ttl, "%d", b->lim.history_ttl_s);
    req_member_key(c->doc, c->sid, entry, sizeof entry);
    wire_buf member = {0}, msg = {0};
    codec_user u = {c->sid, c->user_id, c->user_name, c->color, {0}};
    int ok =
        wire_member(&member, c->user_id, c->user_name, c->color) == 0 &&
        req_presence_msg(b, c->conn_id, codec_encode_bc_user("user_joined", c->doc, &u), &msg) == 0;
    const char *argv[] = {k.epoch,
                          k.seq,
                          k.hist,
                          k.presence,
                          k.owners,
                          k.cursors,
                          k.members,
                          c->sid,
                          (const char *)member.data,
                          owner,
                          epoch,
                          ttl,
                          c->announce ? "1" : "0",
                          k.pres_ch,
                          (const char *)msg.data,
                          entry};
    size_t lens[16];
    for (int i = 0; i < 16; i++)
        lens[i] = i == 8 ? member.len : i == 14 ? msg.len : strlen(argv[i]);
    /* Remembered now, in request order, so a leave queued behind this join forgets it. */
    if (ok && bridge_link_up(b))
        req_remember_member(b, c);
    if (!ok || !bridge_link_up(b) ||
        bridge_evalsha(b, req_on_join, c, SCRIPT_JOIN, 7, 9, argv, lens) < 0) {
        if (c->announce)
            req_forget_member(b, c);
        req_unavailable(b, c);
        free(c);
    }
    wire_buf_free(&member);
    wire_buf_free(&msg);
}

/* ---- leave ---------------------------------------------------------------------------- */

static void req_leave_now(bridge *b, bcmd *c)
{
    doc_keys k;
    bridge_doc_keys(b, c->doc, &k);
    char owner[200], entry[200];
    bridge_owner(b, c->conn_id, owner, sizeof owner);
    req_member_key(c->doc, c->sid, entry, sizeof entry);
    codec_user u = {c->sid, c->user_id, c->user_name, c->color, {0}};
    wire_buf msg = {0};
    if (req_presence_msg(b, c->conn_id, codec_encode_bc_user("user_left", c->doc, &u), &msg) == 0) {
        const char *argv[] = {k.presence, k.owners, k.cursors, k.members,
                              c->sid,     owner,    k.pres_ch, (const char *)msg.data,
                              entry};
        size_t lens[9];
        for (int i = 0; i < 9; i++)
            lens[i] = i == 7 ? msg.len : strlen(argv[i]);
        bridge_evalsha(b, NULL, NULL, SCRIPT_LEAVE, 4, 5, argv, lens);
    }
    wire_buf_free(&msg);
    free(c);
}

void bridge_docs_leave(bridge *b, bcmd *c)
{
    req_forget_member(b, c);
    if (bridge_link_up(b))
        req_leave_now(b, c);
    else
        bridge_defer(b, c);
}

void bridge_defer(bridge *b, bcmd *c)
{
    if (b->n_deferred == b->cap_deferred) {
        size_t cap = b->cap_deferred ? b->cap_deferred * 2 : 16;
        bcmd **grown = cap <= 65536 ? realloc(b->deferred, cap * sizeof *grown) : NULL;
        if (!grown) {
            log_warn("dropping deferred %s of session %s: queue full",
                     c->kind == BC_LEAVE ? "leave" : "release", c->sid);
            free(c);
            return;
        }
        b->deferred = grown;
        b->cap_deferred = cap;
    }
    b->deferred[b->n_deferred++] = c;
}

void bridge_requests_replay(bridge *b)
{
    size_t n = b->n_deferred;
    b->n_deferred = 0;
    for (size_t i = 0; i < n; i++) {
        bcmd *c = b->deferred[i];
        if (c->kind == BC_LEAVE)
            req_leave_now(b, c);
        else
            bridge_session_release(b, c);
    }
}

/* ---- operation -------------------------------------------------------------------------- */

static void req_on_op(redisAsyncContext *ac, void *r, void *privdata)
{
    bridge *b = ac->data;
    redisReply *reply = r;
    bridge_saw_reply(b, reply);
    bcmd *c = privdata;
    req_check_error(b, reply);
    if (!req_reply_array(reply, 3) || reply->element[1]->type != REDIS_REPLY_STRING) {
        req_unavailable(b, c);
        free(c);
        return;
    }
    uint64_t seq = (uint64_t)reply->element[0]->integer;
    if (req_push_reply(b, BE_REPLY, c->conn_id, 0, codec_encode_ack(c->ref, seq)) < 0)
        log_warn("ack for conn=%llu lost: WebSocket thread queue full",
                 (unsigned long long)c->conn_id);
    bridge_docs_check_epoch(b, c->doc, reply->element[1]->str, reply->element[1]->len);
    free(c);
}

void bridge_docs_op(bridge *b, bcmd *c)
{
    if (!bridge_link_up(b)) {
        req_unavailable(b, c);
        free(c);
        return;
    }
    doc_keys scratch;
    const doc_keys *k = bridge_keys_for(b, c->doc, &scratch);
    char dedup[700], epoch[17];
    int dl = wire_doc_key(dedup, sizeof dedup, b->prefix, c->doc, "ref:");
    size_t dedup_len = dl > 0 ? (size_t)dl : 0;
    size_t sl = strlen(c->sid);
    if (dedup_len + sl + 1 < sizeof dedup) {
        memcpy(dedup + dedup_len, c->sid, sl);
        dedup_len += sl;
        dedup[dedup_len++] = ':';
    }
    if (c->ref.len && dedup_len + c->ref.len < sizeof dedup) {
        memcpy(dedup + dedup_len, c->ref.data, c->ref.len);
        dedup_len += c->ref.len;
    }
    bridge_epoch_candidate(b, c->doc, epoch);
    /* The message parts go into buffers the Redis thread reuses for every operation. */
    wire_buf *prefix = &b->op_prefix, *suffix = &b->op_suffix;
    prefix->len = suffix->len = 0;
    int ok = wire_op_prefix(prefix, b->node_id, c->conn_id) == 0 &&
             wire_op_suffix(suffix, c->user_id, c->sid, c->blob) == 0;
    const char *argv[] = {k->epoch,
                          k->seq,
                          k->hist,
                          dedup,
                          k->presence,
                          k->owners,
                          k->cursors,
                          (const char *)prefix->data,
                          (const char *)suffix->data,
                          b->s_history_len,
                          b->s_history_ttl,
                          k->ops_ch,
                          epoch,
                          b->s_dedup_ttl,
                          c->ref.len ? "1" : "0"};
    size_t lens[15];
    for (int i = 0; i < 15; i++)
        lens[i] = i == 3   ? dedup_len
                  : i == 7 ? prefix->len
                  : i == 8 ? suffix->len
                           : strlen(argv[i]);
    if (!ok || bridge_evalsha(b, req_on_op, c, SCRIPT_OP, 7, 8, argv, lens) < 0) {
        req_unavailable(b, c);
        free(c);
    }
}

/* ---- cursor ----------------------------------------------------------------------------- */

/* A cursor broadcast, keyed by session so a lagging reader gets only the latest. */
static msgbuf *req_cursor_body(const bcmd *c)
{
    msgbuf *m = codec_encode_bc_cursor(c->doc, c->sid, c->user_id, c->blob);
    if (m)
        m->coalesce = hmap_hash(c->sid, strlen(c->sid)) | 1;
    return m;
}

void bridge_docs_cursor(bridge *b, bcmd *c)
{
    doc_keys k;
    bridge_doc_keys(b, c->doc, &k);
    char owner[200], ttl[16];
    bridge_owner(b, c->conn_id, owner, sizeof owner);
    snprintf(ttl, sizeof ttl, "%d", b->lim.history_ttl_s);
    wire_buf msg = {0};
    if (bridge_link_up(b) && req_presence_msg(b, c->conn_id, req_cursor_body(c), &msg) == 0) {
        const char *argv[] = {k.owners,
                              k.cursors,
                              c->sid,
                              owner,
                              (const char *)c->blob.data,
                              k.pres_ch,
                              (const char *)msg.data,
                              ttl};
        size_t lens[8];
        for (int i = 0; i < 8; i++)
            lens[i] = i == 4 ? c->blob.len : i == 6 ? msg.len : strlen(argv[i]);
        bridge_evalsha(b, NULL, NULL, SCRIPT_CURSOR, 2, 6, argv, lens);
    }
    wire_buf_free(&msg);
    free(c);
}

/* ---- sync_request ----------------------------------------------------------------------- */

static msgbuf *req_encode_sync(const bcmd *c, const redisReply *reply)
{
    const redisReply *items = reply->element[4];
    char epoch[33];
    snprintf(epoch, sizeof epoch, "%.*s", (int)reply->element[0]->len, reply->element[0]->str);
    uint64_t latest = (uint64_t)reply->element[1]->integer;
    size_t n = items->elements;
    codec_op *ops = calloc(n + 1, sizeof *ops);
    char *names = calloc(n + 1, 600);
    size_t k = 0;
    for (size_t i = 0; ops && names && i < n; i++) {
        wire_msg w;
        const redisReply *it = items->element[i];
        if (it->type != REDIS_REPLY_STRING ||
            wire_parse((const uint8_t *)it->str, it->len, &w) < 0 || w.user_len > 500 ||
            w.session_len > 90)
            continue;
        char *slot = names + k * 600;
        memcpy(slot, w.user_id, w.user_len);
        slot[w.user_len] = '\0';
        memcpy(slot + 505, w.session_id, w.session_len);
        slot[505 + w.session_len] = '\0';
        ops[k++] = (codec_op){w.seq, slot, slot + 505, {w.rest, w.rest_len}};
    }
    uint64_t last = k ? ops[k - 1].seq : c->since;
    msgbuf *m = ops && names ? codec_encode_sync_response(c->doc, epoch, c->since, latest, ops, k,
                                                          reply->element[2]->integer == 1,
                                                          last < latest, c->ref)
                             : NULL;
    free(ops);
    free(names);
    return m;
}

static void req_on_sync(redisAsyncContext *ac, void *r, void *privdata)
{
    bridge *b = ac->data;
    redisReply *reply = r;
    bridge_saw_reply(b, reply);
    bcmd *c = privdata;
    req_check_error(b, reply);
    if (!req_reply_array(reply, 5) || reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[4]->type != REDIS_REPLY_ARRAY) {
        req_unavailable(b, c);
        free(c);
        return;
    }
    if (req_push_reply(b, BE_REPLY, c->conn_id, 0, req_encode_sync(c, reply)) < 0)
        req_unavailable(b, c);
    bridge_docs_check_epoch(b, c->doc, reply->element[0]->str, reply->element[0]->len);
    free(c);
}

void bridge_docs_sync(bridge *b, bcmd *c)
{
    doc_keys k;
    bridge_doc_keys(b, c->doc, &k);
    char since[24], limit[12], epoch[17], ttl[16];
    uint32_t lim = b->lim.sync_limit;
    if (c->limit && c->limit < lim)
        lim = c->limit;
    snprintf(since, sizeof since, "%llu", (unsigned long long)c->since);
    snprintf(limit, sizeof limit, "%u", lim);
    bridge_epoch_candidate(b, c->doc, epoch);
    snprintf(ttl, sizeof ttl, "%d", b->lim.history_ttl_s);
    const char *argv[] = {k.epoch, k.seq, k.hist, since, limit, epoch, ttl};
    if (!bridge_link_up(b) ||
        bridge_evalsha(b, req_on_sync, c, SCRIPT_SYNC, 3, 4, argv, NULL) < 0) {
        req_unavailable(b, c);
        free(c);
    }
}
