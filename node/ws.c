#include "ws.h"

#include <string.h>

#include "handlers.h"
#include "http.h"
#include "node.h"
#include "relay/clock.h"
#include "relay/log.h"

static const char *const ws_channel_names[2] = {"document", "presence"};

/* Most messages and bytes coalesced into one write: one send() for many small broadcasts is
 * what lets a core deliver millions of messages a second (docs/BENCHMARKS.md). */
#define WS_BATCH_MAX   64
#define WS_BATCH_BYTES (64 * 1024)
_Static_assert(WS_BATCH_BYTES + WS_BATCH_MAX * 10 <= WS_SEND_MAX, "a batch must fit one send");

static uint8_t ws_batch_buf[LWS_PRE + WS_BATCH_BYTES];

static void ws_count_out(relay_node *n, const msgbuf *m)
{
    n->stats.msgs_out++;
    n->stats.bytes_out += m->len;
}

/* Lets libwebsockets frame one message in the buffer's own headroom (no copy). */
static int ws_write_one(relay_node *n, session *s, msgbuf *m)
{
    enum lws_write_protocol proto = m->kind == MSGBUF_TEXT ? LWS_WRITE_TEXT : LWS_WRITE_BINARY;
    if (lws_write(s->wsi, msgbuf_data(m), m->len, proto) < (int)m->len)
        return -1;
    ws_count_out(n, m);
    return 0;
}

/* Writes a server (unmasked, final) frame header; returns its length. */
static size_t ws_frame_header(uint8_t *p, const msgbuf *m)
{
    p[0] = (uint8_t)(0x80 | (m->kind == MSGBUF_TEXT ? 0x1 : 0x2));
    if (m->len < 126) {
        p[1] = (uint8_t)m->len;
        return 2;
    }
    if (m->len < 65536) {
        p[1] = 126;
        p[2] = (uint8_t)(m->len >> 8);
        p[3] = (uint8_t)m->len;
        return 4;
    }
    p[1] = 127;
    for (int i = 0; i < 8; i++)
        p[2 + i] = (uint8_t)((uint64_t)m->len >> (56 - 8 * i));
    return 10;
}

/* Frames several messages back to back and writes them with one raw write: each is still its
 * own WebSocket frame on the wire. */
static int ws_write_batch(relay_node *n, session *s, msgbuf **batch, size_t count)
{
    uint8_t *out = ws_batch_buf + LWS_PRE;
    size_t used = 0;
    for (size_t i = 0; i < count; i++) {
        used += ws_frame_header(out + used, batch[i]);
        memcpy(out + used, msgbuf_data(batch[i]), batch[i]->len);
        used += batch[i]->len;
        ws_count_out(n, batch[i]);
    }
    return lws_write(s->wsi, out, used, LWS_WRITE_RAW) < (int)used ? -1 : 0;
}

/* The next broadcast for s, with a reference the caller owns: a `lagged` notice at a gap first,
 * then the message after it. Messages the gate refuses, the sender's own, and operations
 * already in the joiner's snapshot are consumed without being sent. NULL when none. */
static msgbuf *ws_next_broadcast(relay_node *n, session *s)
{
    if (s->request_pending)
        return NULL; /* a join in flight: keep the stream for when it completes */
    for (int i = 0; i < 2; i++) {
        chan_kind k = (chan_kind)i;
        msgbuf *m;
        while ((!s->close_code || s->sub.pos[k] < s->flush_until[k]) &&
               (m = channel_peek(&s->sub, k)) != NULL) {
            if (s->sub.missed[k]) {
                uint64_t missed = s->sub.missed[k];
                s->sub.missed[k] = 0;
                n->stats.lag_drops += missed;
                return codec_encode_lagged(ws_channel_names[k], missed);
            }
            if (channel_superseded(&s->sub, k, m)) {
                /* A lagging reader gets only a session's latest cursor; the skipped ones are
                 * reported as missed, so received + missed still equals sent. */
                s->sub.pos[k]++;
                s->sub.missed[k]++;
                continue;
            }
            s->sub.pos[k]++;
            if (!session_can_receive_broadcast(s) || m->origin == s->conn_id ||
                (m->seq && m->seq <= s->snapshot_seq))
                continue;
            return msgbuf_ref(m);
        }
    }
    return NULL;
}

/* The next message in send order: direct replies first (they bypass the gate), nothing more
 * once a close is pending, then broadcasts. */
static msgbuf *ws_next(relay_node *n, session *s)
{
    msgbuf *m = s->carry;
    if (m) {
        s->carry = NULL;
        return m;
    }
    m = session_reply_pop(s);
    if (m) {
        node_flow_control(s);
        return m;
    }
    return s->close_code && !s->close_flush ? NULL : ws_next_broadcast(n, s);
}

static bool ws_more_pending(session *s)
{
    /* A pending close always wants one more WRITEABLE: the one that sends it. */
    return s->carry || s->dq_len || s->close_code ||
           (!s->request_pending &&
            (channel_peek(&s->sub, CHAN_DOCUMENT) || channel_peek(&s->sub, CHAN_PRESENCE)));
}

/* One write per WRITEABLE: everything pending, up to a batch, in send order; then the close
 * once the direct replies are flushed. */
static int ws_on_writeable(relay_node *n, session *s)
{
    s->write_requested = false;
    msgbuf *batch[WS_BATCH_MAX], *m;
    size_t count = 0, bytes = 0;
    while (count < WS_BATCH_MAX && (m = ws_next(n, s)) != NULL) {
        if (count && bytes + m->len + 10 > WS_BATCH_BYTES) {
            s->carry = m; /* first in the next write */
            break;
        }
        batch[count++] = m;
        bytes += m->len + 10;
    }
    int rc = 0;
    if (count) {
        pacer_wrote(n->pacer, s);
        n->stats.writes++;
    }
    if (count == 1 || (count && bytes > WS_BATCH_BYTES))
        rc = ws_write_one(n, s, batch[0]);
    else if (count > 1)
        rc = ws_write_batch(n, s, batch, count);
    for (size_t i = 0; i < count; i++)
        msgbuf_unref(batch[i]);
    if (rc < 0)
        return -1;
    if (count == 0 && s->close_code) {
        lws_close_reason(s->wsi, (enum lws_close_status)s->close_code,
                         (unsigned char *)s->close_reason, strlen(s->close_reason));
        return -1;
    }
    if (ws_more_pending(s))
        node_wake(n, s);
    return 0;
}

static int ws_close_now(struct lws *wsi, int code, const char *reason)
{
    lws_close_reason(wsi, (enum lws_close_status)code, (unsigned char *)reason, strlen(reason));
    return -1;
}

/* Reassembles fragments and hands complete messages to the handlers. */
static int ws_on_receive(relay_node *n, session *s, const uint8_t *in, size_t len)
{
    size_t max = (size_t)n->cfg->max_message_size;
    bool binary = lws_frame_is_binary(s->wsi);
    bool whole = lws_is_first_fragment(s->wsi) && lws_is_final_fragment(s->wsi);
    if (whole && s->rx_len == 0) {
        if (len > max)
            return ws_close_now(s->wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message too large");
        handlers_dispatch(n, s, in, len, binary);
        return 0;
    }
    if (s->rx_len + len + lws_remaining_packet_payload(s->wsi) > max ||
        session_rx_append(s, in, len, max) < 0)
        return ws_close_now(s->wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, "message too large");
    if (lws_is_final_fragment(s->wsi)) {
        handlers_dispatch(n, s, s->rx, s->rx_len, binary);
        session_rx_reset(s);
    }
    return 0;
}

static int ws_on_established(relay_node *n, struct lws *wsi, ws_pss *pss)
{
    char uri[512], doc[129], color[40];
    if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0 ||
        http_document_path(uri, doc, sizeof doc) != 0)
        return -1;
    const char *c = lws_get_urlarg_by_name(wsi, "color=", color, sizeof color);
    if (c && (strlen(c) == 0 || strlen(c) > 32))
        c = NULL;
    session *s = session_create(++n->next_conn_id, wsi, doc, c, &n->stats);
    if (!s)
        return -1;
    if (hmap_put(n->conns, &s->conn_id, sizeof s->conn_id, s) < 0) {
        session_destroy(s);
        return -1;
    }
    pss->s = s;
    s->auth_deadline_ms = clock_mono_ms() + (int64_t)n->cfg->auth_timeout * 1000;
    handlers_arm_timer(n, s);
    log_debug("conn=%llu upgraded doc=%s", (unsigned long long)s->conn_id, doc);
    return 0;
}

static void ws_on_closed(relay_node *n, ws_pss *pss)
{
    session *s = pss->s;
    if (!s)
        return;
    pss->s = NULL;
    pacer_forget(n->pacer, s);
    handlers_on_close(n, s);
    hmap_del(n->conns, &s->conn_id, sizeof s->conn_id);
    log_debug("conn=%llu closed", (unsigned long long)s->conn_id);
    session_destroy(s);
}

int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in, size_t len)
{
    struct lws_context *ctx = lws_get_context(wsi);
    relay_node *n = ctx ? lws_context_user(ctx) : NULL;
    ws_pss *pss = user;
    if (!n)
        return 0;
    switch (reason) {
    case LWS_CALLBACK_HTTP:
        return http_handle(n, wsi, (const char *)in);
    case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
        return http_confirm_upgrade(n, wsi);
    case LWS_CALLBACK_ESTABLISHED:
        return ws_on_established(n, wsi, pss);
    case LWS_CALLBACK_RECEIVE:
        return pss->s ? ws_on_receive(n, pss->s, in, len) : -1;
    case LWS_CALLBACK_SERVER_WRITEABLE:
        return pss->s ? ws_on_writeable(n, pss->s) : -1;
    case LWS_CALLBACK_TIMER:
        if (pss->s)
            handlers_on_timer(n, pss->s);
        return 0;
    case LWS_CALLBACK_CLOSED:
        ws_on_closed(n, pss);
        return 0;
    case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
        node_check_signal(n);
        n->backend->vt->poll(n->backend);
        return 0;
    default:
        return lws_callback_http_dummy(wsi, reason, user, in, len);
    }
}
