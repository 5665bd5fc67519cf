#include "session.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "relay/hmap.h"
#include "relay/log.h"

/* The close reason when copying one fails: the connection still closes, without a reason. */
static char session_no_reason[1];

static const char *const session_state_names[] = {"pending", "authenticated", "joined", "closed"};

const char *session_state_name(session_state st)
{
    return st <= SESSION_CLOSED ? session_state_names[st] : "?";
}

session *session_create(uint64_t conn_id, struct lws *wsi, const char *document_id,
                        const char *color, relay_stats *stats)
{
    size_t doc_len = strlen(document_id);
    session *s = calloc(1, sizeof *s + doc_len + 1);
    if (!s)
        return NULL;
    s->conn_id = conn_id;
    s->sub.self = conn_id;
    s->wsi = wsi;
    s->stats = stats;
    s->state = SESSION_PENDING;
    memcpy(s->document_id, document_id, doc_len + 1);
    if (color && *color) {
        snprintf(s->color, sizeof s->color, "%s", color);
        s->color_from_query = true;
    }
    stats->active++;
    stats->total++;
    if (stats->active > stats->peak)
        stats->peak = stats->active;
    return s;
}

void session_destroy(session *s)
{
    if (!s)
        return;
    session_set_state(s, SESSION_CLOSED);
    s->stats->active--;
    while (s->dq_len)
        msgbuf_unref(session_reply_pop(s));
    msgbuf_unref(s->carry);
    free(s->dq_heap);
    token_claims_free(&s->claims);
    free(s->user_id);
    free(s->user_name);
    free(s->rx);
    if (s->close_reason != session_no_reason)
        free(s->close_reason);
    free(s);
}

/* Allowed moves of the seed's lifecycle; CLOSED is reachable from everywhere. */
static bool session_transition_ok(session_state from, session_state to)
{
    if (to == SESSION_CLOSED)
        return from != SESSION_CLOSED;
    switch (from) {
    case SESSION_PENDING:
        return to == SESSION_AUTHENTICATED;
    case SESSION_AUTHENTICATED:
        return to == SESSION_JOINED;
    case SESSION_JOINED:
        return to == SESSION_AUTHENTICATED;
    default:
        return false;
    }
}

int session_set_state(session *s, session_state next)
{
    if (!session_transition_ok(s->state, next)) {
        if (s->state != next)
            log_warn("conn=%llu refused transition %s -> %s", (unsigned long long)s->conn_id,
                     session_state_name(s->state), session_state_name(next));
        return -1;
    }
    bool was_auth = s->authenticated, was_joined = s->document_joined;
    s->authenticated = next == SESSION_AUTHENTICATED || next == SESSION_JOINED;
    s->document_joined = next == SESSION_JOINED;
    s->stats->authenticated += (uint64_t)s->authenticated - (uint64_t)was_auth;
    s->stats->joined += (uint64_t)s->document_joined - (uint64_t)was_joined;
    log_debug("conn=%llu state %s -> %s", (unsigned long long)s->conn_id,
              session_state_name(s->state), session_state_name(next));
    s->state = next;
    return 0;
}

bool session_is_authenticated(const session *s)
{
    return s->authenticated && s->user_id != NULL;
}

bool session_can_receive_broadcast(const session *s)
{
    return session_is_authenticated(s) && s->document_joined;
}

static const char *const session_palette[] = {
    "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#469990",
    "#9a6324", "#800000", "#808000", "#000075", "#e6a800", "#2f8f2f", "#c2185b", "#5d4037"};

const char *session_default_color(const char *user_id)
{
    uint64_t h = hmap_hash(user_id, strlen(user_id));
    return session_palette[h % (sizeof session_palette / sizeof session_palette[0])];
}

int session_set_identity(session *s, const char *session_id, const char *user_id,
                         const char *user_name, const char *color, const token_claims *claims)
{
    char *uid = strdup(user_id), *uname = strdup(user_name);
    token_claims copy;
    if (!uid || !uname || token_claims_copy(&copy, claims) < 0) {
        free(uid);
        free(uname);
        return -1;
    }
    free(s->user_id);
    free(s->user_name);
    token_claims_free(&s->claims);
    s->user_id = uid;
    s->user_name = uname;
    s->claims = copy;
    snprintf(s->session_id, sizeof s->session_id, "%s", session_id);
    if (!s->color_from_query && color != s->color)
        snprintf(s->color, sizeof s->color, "%s", color ? color : session_default_color(uid));
    return 0;
}

/* Moves the queue from the inline slots to a heap ring of SESSION_DIRECT_CAP, oldest first.
 * Most connections never queue more than a few replies, so the full ring is only paid for while
 * a burst is waiting. Returns 0 or -1 when out of memory (queue unchanged). */
static int session_dq_grow(session *s)
{
    msgbuf **slots = malloc(SESSION_DIRECT_CAP * sizeof *slots);
    if (!slots)
        return -1;
    for (unsigned i = 0; i < s->dq_len; i++)
        slots[i] = s->dq_inline[(s->dq_head + i) % SESSION_DIRECT_INLINE];
    memset(s->dq_inline, 0, sizeof s->dq_inline);
    s->dq_heap = slots;
    s->dq_head = 0;
    return 0;
}

int session_reply(session *s, msgbuf *m)
{
    if (s->dq_len == SESSION_DIRECT_CAP ||
        (!s->dq_heap && s->dq_len == SESSION_DIRECT_INLINE && session_dq_grow(s) < 0)) {
        msgbuf_unref(m);
        return -1;
    }
    if (s->dq_heap)
        s->dq_heap[(s->dq_head + s->dq_len) % SESSION_DIRECT_CAP] = m;
    else
        s->dq_inline[(s->dq_head + s->dq_len) % SESSION_DIRECT_INLINE] = m;
    s->dq_len++;
    return 0;
}

msgbuf *session_reply_pop(session *s)
{
    if (!s->dq_len)
        return NULL;
    unsigned cap = s->dq_heap ? SESSION_DIRECT_CAP : SESSION_DIRECT_INLINE;
    msgbuf **slots = s->dq_heap ? s->dq_heap : s->dq_inline;
    msgbuf *m = slots[s->dq_head];
    slots[s->dq_head] = NULL;
    s->dq_head = (s->dq_head + 1) % cap;
    if (--s->dq_len == 0 && s->dq_heap) {
        /* The burst is written: back to the inline slots. */
        free(s->dq_heap);
        s->dq_heap = NULL;
        s->dq_head = 0;
    }
    return m;
}

rate_verdict session_rate_charge(session *s, int64_t now_us, int rate, int burst)
{
    if (s->refill_us == 0) {
        s->tokens = burst;
        s->refill_us = now_us;
        s->window_start_us = now_us;
    }
    s->tokens += (double)(now_us - s->refill_us) * rate / 1e6;
    if (s->tokens > burst)
        s->tokens = burst;
    s->refill_us = now_us;
    if (now_us - s->window_start_us >= 1000000) {
        s->window_start_us = now_us;
        s->window_count = 0;
    }
    if (++s->window_count > 10 * (uint64_t)rate)
        return RATE_ABUSIVE;
    if (s->tokens < 1.0)
        return RATE_LIMITED;
    s->tokens -= 1.0;
    return RATE_OK;
}

int session_rx_append(session *s, const void *data, size_t len, size_t max)
{
    if (s->rx_len + len > max)
        return -1;
    if (s->rx_len + len > s->rx_cap) {
        size_t cap = s->rx_cap ? s->rx_cap : 4096;
        while (cap < s->rx_len + len)
            cap *= 2;
        uint8_t *grown = realloc(s->rx, cap);
        if (!grown)
            return -1;
        s->rx = grown;
        s->rx_cap = cap;
    }
    memcpy(s->rx + s->rx_len, data, len);
    s->rx_len += len;
    return 0;
}

/* Gives the buffer back: only messages longer than the libwebsockets rx chunk (server.c) are
 * reassembled, and an idle connection should not keep the last one's buffer. */
void session_rx_reset(session *s)
{
    s->rx_len = 0;
    free(s->rx);
    s->rx = NULL;
    s->rx_cap = 0;
}

void session_close_after_flush(session *s, int code, const char *reason)
{
    if (s->close_code)
        return;
    s->close_code = code;
    s->close_reason = strndup(reason, SESSION_CLOSE_REASON_MAX);
    if (!s->close_reason) /* out of memory: close without a reason rather than not at all */
        s->close_reason = session_no_reason;
}

session *session_from_sub(channel_sub *sub)
{
    return (session *)((char *)sub - offsetof(session, sub));
}
