#include "handlers.h"

#include <stdlib.h>
#include <string.h>

#include "relay/clock.h"
#include "relay/log.h"
#include "relay/rand.h"

/* Close codes of protocol v1 (docs/PROTOCOL.md). */
enum {
    CLOSE_POLICY = 1008,
    CLOSE_AUTH_FAILED = 4001,
    CLOSE_AUTH_TIMEOUT = 4002,
    CLOSE_TOKEN_EXPIRED = 4003,
    CLOSE_TAKEN_OVER = 4004
};

static void handlers_reject(relay_node *n, session *s, const char *code, const char *message,
                            codec_blob ref)
{
    n->stats.rejected++;
    node_reply_error(n, s, code, message, ref);
}

static void handlers_auth_fail(relay_node *n, session *s, const char *why)
{
    n->stats.auth_failures++;
    log_info("conn=%llu authentication failed: %s", (unsigned long long)s->conn_id, why);
    msgbuf *m = codec_encode_auth_fail(why);
    if (m)
        node_reply(n, s, m);
    node_close(n, s, CLOSE_AUTH_FAILED, "authentication failed");
}

static int64_t handlers_expiry_ms(relay_node *n, const session *s)
{
    return (s->claims.exp + n->cfg->jwt_leeway) * 1000;
}

void handlers_arm_timer(relay_node *n, session *s)
{
    int64_t now_wall = clock_wall_ms(), now_mono = clock_mono_ms(), wait_ms;
    if (!s->authenticated)
        wait_ms = s->auth_deadline_ms - now_mono;
    else
        wait_ms = handlers_expiry_ms(n, s) - now_wall;
    if (wait_ms < 1)
        wait_ms = 1;
    lws_set_timer_usecs(s->wsi, (lws_usec_t)wait_ms * 1000);
}

void handlers_on_timer(relay_node *n, session *s)
{
    if (!s->authenticated && !s->request_pending && clock_mono_ms() >= s->auth_deadline_ms) {
        node_close(n, s, CLOSE_AUTH_TIMEOUT, "authentication timeout");
        return;
    }
    if (s->authenticated && clock_wall_ms() >= handlers_expiry_ms(n, s)) {
        node_close(n, s, CLOSE_TOKEN_EXPIRED, "token expired");
        return;
    }
    handlers_arm_timer(n, s);
}

/* Sends auth_result with a fresh resume token and records the session for resumes. The token
 * lives only in the session store (the backend copies it) and in the reply: the node never
 * reads it again, so the session does not keep it. */
static void handlers_auth_ok(relay_node *n, session *s)
{
    char resume_token[65];
    if (rand_hex(resume_token, 32) < 0) {
        handlers_auth_fail(n, s, "internal error");
        return;
    }
    if (!s->authenticated)
        session_set_state(s, SESSION_AUTHENTICATED);
    backend_session rec = {s->session_id, s->user_id,   s->user_name,
                           s->color,      resume_token, &s->claims};
    n->backend->vt->session_save(n->backend, s->conn_id, &rec);
    codec_user u = {s->session_id, s->user_id, s->user_name, s->color, {0}};
    msgbuf *m = codec_encode_auth_ok(&u, resume_token);
    if (m)
        node_reply(n, s, m);
    handlers_arm_timer(n, s);
}

static void handlers_authenticate_token(relay_node *n, session *s, const char *token,
                                        codec_blob ref)
{
    token_claims claims;
    char err[160];
    if (token_verify(n->tokens, token, clock_wall_s(), &claims, err, sizeof err) < 0) {
        handlers_auth_fail(n, s, err);
        return;
    }
    if (s->authenticated && strcmp(claims.user_id, s->user_id) != 0) {
        token_claims_free(&claims);
        handlers_reject(n, s, "forbidden", "token is for another user", ref);
        return;
    }
    char sid[33];
    if (s->authenticated)
        snprintf(sid, sizeof sid, "%s", s->session_id);
    else if (rand_hex(sid, 16) < 0)
        sid[0] = '\0';
    int rc = sid[0] ? session_set_identity(s, sid, claims.user_id, claims.user_name,
                                           s->authenticated ? s->color : NULL, &claims)
                    : -1;
    token_claims_free(&claims);
    if (rc < 0) {
        handlers_auth_fail(n, s, "internal error");
        return;
    }
    handlers_auth_ok(n, s);
}

static void handlers_authenticate(relay_node *n, session *s, const codec_request *req)
{
    if (req->token) {
        handlers_authenticate_token(n, s, req->token, req->ref);
        return;
    }
    if (s->authenticated) {
        handlers_reject(n, s, "bad_request", "already authenticated", req->ref);
        return;
    }
    if (!n->backend->vt->ready(n->backend)) {
        handlers_reject(n, s, "unavailable", "session store unreachable, retry", req->ref);
        return;
    }
    char fresh[65];
    if (rand_hex(fresh, 32) < 0) {
        handlers_auth_fail(n, s, "internal error");
        return;
    }
    s->request_pending = true;
    n->backend->vt->session_resume(n->backend, s->conn_id, req->session_id, req->resume_token,
                                   fresh);
}

backend_member node_member(const session *s)
{
    backend_member m = {s->conn_id, s->document_id, s->session_id,
                        s->user_id, s->user_name,   s->color};
    return m;
}

static void handlers_join(relay_node *n, session *s, const codec_request *req)
{
    if (!token_claims_allow(&s->claims, s->document_id)) {
        handlers_reject(n, s, "forbidden", "token does not allow this document", req->ref);
        return;
    }
    if (!n->backend->vt->ready(n->backend)) {
        handlers_reject(n, s, "unavailable", "document store unreachable, retry", req->ref);
        return;
    }
    backend_member m = node_member(s);
    if (s->document_joined) {
        n->backend->vt->join(n->backend, &m, false);
        return;
    }
    int created = channel_subscribe(n->channels, s->document_id, &s->sub);
    if (created < 0) {
        handlers_reject(n, s, "internal", "out of memory", req->ref);
        return;
    }
    if (created)
        n->backend->vt->subscribe(n->backend, s->document_id);
    s->request_pending = true;
    n->backend->vt->join(n->backend, &m, true);
}

/* Drops the session's local subscription, telling the backend when it was the last one. */
static void handlers_unsubscribe(relay_node *n, session *s)
{
    if (channel_unsubscribe(n->channels, &s->sub) == 1)
        n->backend->vt->unsubscribe(n->backend, s->document_id);
}

static void handlers_leave(relay_node *n, session *s, const codec_request *req)
{
    if (!s->document_joined) {
        handlers_reject(n, s, "not_joined", "not joined to the document", req->ref);
        return;
    }
    handlers_unsubscribe(n, s);
    backend_member m = node_member(s);
    n->backend->vt->leave(n->backend, &m);
    session_set_state(s, SESSION_AUTHENTICATED);
    msgbuf *reply = codec_encode_left(s->document_id);
    if (reply)
        node_reply(n, s, reply);
}

/* Requests that need the document joined and the backend up. Returns true when s may go on. */
static bool handlers_joined_and_ready(relay_node *n, session *s, const codec_request *req)
{
    if (!s->document_joined) {
        handlers_reject(n, s, "not_joined", "join_document first", req->ref);
        return false;
    }
    if (!n->backend->vt->ready(n->backend)) {
        handlers_reject(n, s, "unavailable", "document store unreachable, retry", req->ref);
        return false;
    }
    return true;
}

/* The backend owes s exactly one reply for what is being sent (ack, sync_response, or an error
 * instead); handlers_ev_reply settles it. */
static void handlers_owe_reply(session *s)
{
    s->inflight++;
    node_flow_control(s);
}

static void handlers_request(relay_node *n, session *s, const codec_request *req)
{
    backend_member m = node_member(s);
    switch (req->type) {
    case CODEC_AUTHENTICATE:
        handlers_authenticate(n, s, req);
        break;
    case CODEC_JOIN_DOCUMENT:
        handlers_join(n, s, req);
        break;
    case CODEC_LEAVE_DOCUMENT:
        handlers_leave(n, s, req);
        break;
    case CODEC_OPERATION:
        if (handlers_joined_and_ready(n, s, req)) {
            handlers_owe_reply(s);
            n->backend->vt->operation(n->backend, &m, req->ref, req->payload);
        }
        break;
    case CODEC_CURSOR:
        if (handlers_joined_and_ready(n, s, req))
            n->backend->vt->cursor(n->backend, &m, req->cursor);
        break;
    case CODEC_SYNC_REQUEST:
        if (handlers_joined_and_ready(n, s, req)) {
            handlers_owe_reply(s);
            n->backend->vt->sync(n->backend, s->conn_id, s->document_id, req->since, req->limit,
                                 req->ref);
        }
        break;
    case CODEC_PING: {
        msgbuf *pong = codec_encode_pong(req->ref);
        if (pong)
            node_reply(n, s, pong);
        break;
    }
    case CODEC_TYPE_UNKNOWN:
        break;
    }
}

/* Maps a decode failure to its reply. Returns true when the request may be handled. */
static bool handlers_check_decoded(relay_node *n, session *s, codec_status st,
                                   const codec_request *req, const char *err)
{
    if (st == CODEC_MALFORMED) {
        handlers_reject(n, s, "bad_request", err, req->ref);
        return false;
    }
    if (st == CODEC_UNKNOWN_TYPE) {
        handlers_reject(n, s, "unknown_type", err, req->ref);
        return false;
    }
    if (req->type != CODEC_PING && req->type != CODEC_AUTHENTICATE &&
        !session_is_authenticated(s)) {
        handlers_reject(n, s, "unauthenticated", "authenticate first", req->ref);
        return false;
    }
    if (req->type == CODEC_AUTHENTICATE && st != CODEC_OK) {
        handlers_auth_fail(n, s, err);
        return false;
    }
    if (st != CODEC_OK) {
        handlers_reject(n, s, st == CODEC_TOO_LARGE ? "too_large" : "bad_request", err, req->ref);
        return false;
    }
    if (s->request_pending) {
        handlers_reject(n, s, "busy", "previous request still in progress", req->ref);
        return false;
    }
    return true;
}

void handlers_dispatch(relay_node *n, session *s, const uint8_t *data, size_t len, bool binary)
{
    n->stats.msgs_in++;
    n->stats.bytes_in += len;
    if (s->close_code)
        return; /* closing: nothing more is applied */
    rate_verdict rv =
        session_rate_charge(s, clock_mono_us(), n->cfg->rate_limit, n->cfg->rate_burst);
    if (rv == RATE_ABUSIVE) {
        n->stats.rejected++;
        node_close(n, s, CLOSE_POLICY, "message rate abuse");
        return;
    }
    codec_request req;
    char err[160] = "";
    codec_status st =
        binary ? codec_decode_binary(data, len, &n->limits, &req, err, sizeof err)
               : codec_decode_text((const char *)data, len, &n->limits, &req, err, sizeof err);
    if (rv == RATE_LIMITED)
        handlers_reject(n, s, "rate_limited", "too many messages, slow down", req.ref);
    else if (handlers_check_decoded(n, s, st, &req, err))
        handlers_request(n, s, &req);
    codec_request_free(&req);
}

void handlers_on_close(relay_node *n, session *s)
{
    /* A join still in flight will still add the session to presence (the backend runs
     * requests in order): the leave must follow it, or the session stays a ghost. */
    if (s->document_joined || s->sub.doc) {
        handlers_unsubscribe(n, s);
        backend_member m = node_member(s);
        n->backend->vt->leave(n->backend, &m);
    }
    if (s->authenticated)
        n->backend->vt->session_release(n->backend, s->conn_id, s->session_id);
}

/* ---- Backend results ------------------------------------------------------------------- */

static void handlers_ev_joined(void *ctx, uint64_t conn_id, uint64_t seq, msgbuf *reply)
{
    relay_node *n = ctx;
    session *s = node_session(n, conn_id);
    if (!s || s->close_code) {
        msgbuf_unref(reply);
        return;
    }
    s->request_pending = false;
    s->snapshot_seq = seq;
    if (!s->document_joined)
        session_set_state(s, SESSION_JOINED);
    node_reply(n, s, reply);
}

static void handlers_ev_reply(void *ctx, uint64_t conn_id, msgbuf *m)
{
    relay_node *n = ctx;
    session *s = node_session(n, conn_id);
    if (!s) {
        msgbuf_unref(m);
        return;
    }
    if (s->request_pending && !s->document_joined && s->sub.doc) {
        /* The only reply a pending first join gets besides joined_document: its error. */
        s->request_pending = false;
        handlers_unsubscribe(n, s);
    } else if (s->inflight) {
        s->inflight--;
    }
    node_reply(n, s, m);
}

static void handlers_ev_publish(void *ctx, const char *document_id, chan_kind kind, msgbuf *m)
{
    relay_node *n = ctx;
    channel_publish(n->channels, document_id, kind, m);
}

static void handlers_ev_resumed(void *ctx, uint64_t conn_id, const backend_session *rec,
                                const char *error)
{
    relay_node *n = ctx;
    session *s = node_session(n, conn_id);
    if (!s || s->close_code)
        return;
    s->request_pending = false;
    if (!rec) {
        handlers_auth_fail(n, s, error);
        return;
    }
    if ((rec->claims->exp + n->cfg->jwt_leeway) * 1000 <= clock_wall_ms()) {
        handlers_auth_fail(n, s, "token expired");
        return;
    }
    if (session_set_identity(s, rec->session_id, rec->user_id, rec->user_name, rec->color,
                             rec->claims) < 0) {
        handlers_auth_fail(n, s, "internal error");
        return;
    }
    /* The backend already installed rec->resume_token; auth_ok stores a newer one. */
    handlers_auth_ok(n, s);
}

static void handlers_ev_taken_over(void *ctx, uint64_t conn_id)
{
    relay_node *n = ctx;
    session *s = node_session(n, conn_id);
    if (!s)
        return;
    /* The session now belongs to another connection: this one leaves its document now (the
     * new owner announces itself when it joins) and must not release the session at close. */
    if (s->document_joined) {
        handlers_unsubscribe(n, s);
        backend_member m = node_member(s);
        n->backend->vt->leave(n->backend, &m);
    }
    session_set_state(s, SESSION_CLOSED);
    node_close(n, s, CLOSE_TAKEN_OVER, "session resumed elsewhere");
}

static void handlers_reset_one(channel_sub *sub, void *ud)
{
    relay_node *n = ((void **)ud)[0];
    msgbuf *m = ((void **)ud)[1];
    node_reply(n, session_from_sub(sub), msgbuf_ref(m));
}

static void handlers_ev_reset(void *ctx, const char *document_id, const char *epoch, uint64_t seq)
{
    relay_node *n = ctx;
    msgbuf *m = codec_encode_reset(document_id, epoch, seq);
    if (!m)
        return;
    void *ud[2] = {n, m};
    channel_each_sub(n->channels, document_id, handlers_reset_one, ud);
    msgbuf_unref(m);
}

static void handlers_lagged_one(channel_sub *sub, void *ud)
{
    relay_node *n = ((void **)ud)[0];
    msgbuf *m = ((void **)ud)[1];
    session *s = session_from_sub(sub);
    if (session_can_receive_broadcast(s))
        node_reply(n, s, msgbuf_ref(m));
}

static void handlers_ev_lagged(void *ctx, const char *document_id, uint64_t missed)
{
    relay_node *n = ctx;
    msgbuf *m = codec_encode_lagged("document", missed);
    if (!m)
        return;
    void *ud[2] = {n, m};
    channel_each_sub(n->channels, document_id, handlers_lagged_one, ud);
    msgbuf_unref(m);
}

static void handlers_ev_cluster_stats(void *ctx, char *json)
{
    relay_node *n = ctx;
    free(n->cluster_stats);
    n->cluster_stats = json;
    json_t *doc = json_loads(json, 0, NULL);
    n->cluster_nodes = json_array_size(json_object_get(doc, "nodes"));
    json_t *conns = json_object_get(json_object_get(doc, "totals"), "connections");
    n->cluster_active = (uint64_t)json_integer_value(json_object_get(conns, "active"));
    json_decref(doc);
}

backend_events handlers_backend_events(relay_node *n)
{
    backend_events ev = {
        .ctx = n,
        .joined = handlers_ev_joined,
        .reply = handlers_ev_reply,
        .publish = handlers_ev_publish,
        .resumed = handlers_ev_resumed,
        .taken_over = handlers_ev_taken_over,
        .reset = handlers_ev_reset,
        .lagged = handlers_ev_lagged,
        .cluster_stats = handlers_ev_cluster_stats,
    };
    return ev;
}
