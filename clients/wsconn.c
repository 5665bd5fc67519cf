/*
 * wsconn.c - the transport of one wsc_conn: RFC 6455 on a RAW libwebsockets client socket.
 * The loop, the public API and the connection lifecycle are clients/wsclient.c; the state both
 * share is clients/wsclient_int.h.
 *
 * Each connection is a RAW libwebsockets client socket; this file does the opening handshake
 * and RFC 6455 framing itself (clients/wsframe.c). libwebsockets 4.1's ws client role runs
 * every received byte through a per-byte state machine, which cost relay-bench about two thirds
 * of its CPU at capacity; here a read is parsed frame by frame and a complete message is handed
 * to on_message straight from the read buffer, without a copy. libwebsockets still owns
 * sockets, connecting (source address binding), timers and partial writes.
 *
 * Everything here runs on the loop's thread, from the lws callback dispatch in wsclient.c.
 */
#include <libwebsockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "wsclient_int.h"
#include "wsframe.h"

/* Cap on the upgrade response head; a longer one fails the connection. */
#define WSC_MAX_RESPONSE_HEAD 16384
/* Seconds to wait for the 101 response, and for the peer's close frame after ours. */
#define WSC_HANDSHAKE_TIMEOUT_S 20
#define WSC_CLOSE_TIMEOUT_S     5

/* Seeds the Sec-WebSocket-Key and the mask keys from 16 random bytes. Returns 0 or -1. */
int wsconn_init(wsc_conn *c, struct lws_context *ctx)
{
    uint8_t rnd[16];
    if (lws_get_random(ctx, rnd, sizeof(rnd)) != sizeof(rnd))
        return -1;
    /* lws_b64_encode_string() does not terminate a result that fills its buffer. */
    char b64[40];
    int klen = lws_b64_encode_string((const char *)rnd, sizeof(rnd), b64, sizeof(b64));
    snprintf(c->key, sizeof(c->key), "%.*s", klen > 0 ? klen : 0, b64);
    memcpy(&c->mask_state, rnd, sizeof(c->mask_state));
    c->mask_state |= 1;
    return 0;
}

/* TCP is up: send the upgrade request and bound the wait for its response. */
void wsconn_connected(struct lws *wsi)
{
    /* Each message is one write: Nagle would hold a small one back for the peer's delayed
     * ACK (libwebsockets sets TCP_NODELAY for its ws role, not for raw sockets). */
    int one = 1;
    setsockopt((int)lws_get_socket_fd(wsi), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    lws_set_timeout(wsi, PENDING_TIMEOUT_AWAITING_SERVER_RESPONSE, WSC_HANDSHAKE_TIMEOUT_S);
    lws_callback_on_writable(wsi);
}

/* Fills mask with the next mask key of c (xorshift64: masking only has to defeat proxy cache
 * poisoning, RFC 6455 10.3, and a server never checks it). */
static void conn_next_mask(wsc_conn *c, uint8_t mask[4])
{
    uint64_t x = c->mask_state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    c->mask_state = x;
    memcpy(mask, &x, 4);
}

/* Writes a control frame (close, pong) with payload pl[0..len), len <= 125, right away.
 * Returns 0, or -1 if the write failed. */
static int conn_write_control(wsc_conn *c, struct lws *wsi, int opcode, const uint8_t *pl,
                              size_t len)
{
    uint8_t buf[LWS_PRE + WSF_MAX_HEADER + 125], mask[4];
    conn_next_mask(c, mask);
    size_t hl = wsf_build_header(buf + LWS_PRE, opcode, true, len, mask);
    if (len)
        memcpy(buf + LWS_PRE + hl, pl, len);
    wsf_mask(buf + LWS_PRE + hl, len, mask);
    return lws_write(wsi, buf + LWS_PRE, hl + len, LWS_WRITE_RAW) < 0 ? -1 : 0;
}

/* Writes a close frame with code and reason (at most 123 bytes). Returns 0 or -1. */
static int conn_write_close(wsc_conn *c, struct lws *wsi, int code, const char *reason,
                            size_t reason_len)
{
    uint8_t pl[125];
    size_t n = 0;
    if (code) {
        pl[n++] = (uint8_t)(code >> 8);
        pl[n++] = (uint8_t)code;
        if (reason_len > 123)
            reason_len = 123;
        if (reason_len)
            memcpy(pl + n, reason, reason_len);
        n += reason_len;
    }
    c->close_sent = true;
    return conn_write_control(c, wsi, WSF_CLOSE, pl, n);
}

/* Writes the next fragment of the head of the queue as one masked frame. */
static int conn_write_fragment(wsc_conn *c, struct lws *wsi)
{
    wsc_out *o = c->out_head;
    size_t chunk = o->len - o->off;
    if (chunk > c->fragment_size)
        chunk = c->fragment_size;
    bool first = o->off == 0, last = o->off + chunk == o->len;
    int opcode = !first ? WSF_CONT : o->kind == WSC_TEXT ? WSF_TEXT : WSF_BINARY;
    uint8_t mask[4], hdr[WSF_MAX_HEADER];
    conn_next_mask(c, mask);
    size_t hl = wsf_build_header(hdr, opcode, last, chunk, mask);
    /* The header goes into the LWS_PRE bytes before the fragment: for later fragments those
     * are payload bytes already sent. */
    uint8_t *frame = o->mem + LWS_PRE + o->off - hl;
    memcpy(frame, hdr, hl);
    wsf_mask(frame + hl, chunk, mask);
    if (lws_write(wsi, frame, hl + chunk, LWS_WRITE_RAW) < 0) {
        snprintf(c->error, sizeof(c->error), "write failed");
        return -1;
    }
    o->off += chunk;
    c->out_bytes -= chunk;
    if (last) {
        c->out_head = o->next;
        if (!c->out_head)
            c->out_tail = NULL;
        c->out_msgs--;
        free(o);
    }
    return 0;
}

/* Writes one thing per WRITEABLE: the upgrade request, an owed pong, the next fragment, or the
 * close frame once the queue is empty. Returns 0, or -1 to close. */
static int conn_write_next(wsc_conn *c, struct lws *wsi)
{
    if (c->state == CONN_CONNECTING) {
        if (c->request_sent)
            return 0;
        char req[4096];
        int n = wsf_build_request(req + LWS_PRE, sizeof(req) - LWS_PRE, c->host_hdr, c->path,
                                  c->origin, c->key);
        if (n < 0 || lws_write(wsi, (uint8_t *)req + LWS_PRE, (size_t)n, LWS_WRITE_RAW) < 0) {
            snprintf(c->error, sizeof(c->error), n < 0 ? "request too long" : "write failed");
            c->error_pending = true;
            return -1;
        }
        c->request_sent = true;
        return 0;
    }
    if (c->pong_pending) {
        c->pong_pending = false;
        if (conn_write_control(c, wsi, WSF_PONG, c->pong, c->pong_len))
            return -1;
    } else if (c->out_head) {
        if (conn_write_fragment(c, wsi))
            return -1;
    } else if (c->close_requested && !c->close_sent) {
        if (conn_write_close(c, wsi, c->close_code_local, c->close_reason_local,
                             strlen(c->close_reason_local)))
            return -1;
        lws_set_timeout(wsi, PENDING_TIMEOUT_CLOSE_ACK, WSC_CLOSE_TIMEOUT_S);
        return 0;
    }
    if (c->out_head || c->pong_pending || (c->close_requested && !c->close_sent))
        lws_callback_on_writable(wsi);
    return 0;
}

/* Fails the open connection: error text for on_error, close code sent to the peer. Returns -1
 * (close now). */
static int conn_fail(wsc_conn *c, struct lws *wsi, int code, const char *text)
{
    snprintf(c->error, sizeof(c->error), "%s", text);
    c->error_pending = true;
    if (!c->close_sent)
        conn_write_close(c, wsi, code, NULL, 0);
    return -1;
}

/* Records the close frame the peer sent. */
static void conn_peer_close(wsc_conn *c, const uint8_t *in, size_t len)
{
    c->peer_closed = true;
    if (len >= 2) {
        c->close_code = (in[0] << 8) | in[1];
        size_t rl = len - 2;
        if (rl > sizeof(c->close_reason))
            rl = sizeof(c->close_reason);
        memcpy(c->close_reason, in + 2, rl);
        c->close_reason_len = rl;
    } else {
        c->close_code = WSC_CLOSE_NO_STATUS;
    }
}

/* Handles one complete control frame. Returns 0, or -1 to close. */
static int conn_control(wsc_conn *c, struct lws *wsi, int opcode, const uint8_t *pl, size_t len)
{
    if (opcode == WSF_PING) {
        memcpy(c->pong, pl, len);
        c->pong_len = len;
        c->pong_pending = true;
        lws_callback_on_writable(wsi);
    } else if (opcode == WSF_CLOSE) {
        conn_peer_close(c, pl, len);
        /* Echo the peer's code (none if it sent none), then close: the peer closes too. */
        if (!c->close_sent)
            conn_write_close(c, wsi, len >= 2 ? c->close_code : 0, NULL, 0);
        return -1;
    }
    return 0;
}

/* Handles one data frame whose payload pl[0..len) is complete: delivered in place when it is a
 * whole message, else appended to the message being reassembled. Returns 0 or -1. */
static int conn_data(wsc_conn *c, struct lws *wsi, const wsf_header *h, const uint8_t *pl)
{
    size_t len = (size_t)h->len;
    if ((h->opcode == WSF_CONT) != c->rx_active)
        return conn_fail(c, wsi, 1002, "bad continuation frame");
    if (!c->rx_active)
        c->rx_kind = h->opcode == WSF_BINARY ? WSC_BINARY : WSC_TEXT;
    if (h->fin && !c->rx_active) {
        if (c->cb.on_message)
            c->cb.on_message(c, c->user, c->rx_kind, pl, len);
        return 0;
    }
    if (!c->rx_active) {
        c->rx_active = true;
        c->rx_len = 0;
    }
    if (c->rx_len + len + 1 > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 4096;
        while (cap < c->rx_len + len + 1)
            cap *= 2;
        uint8_t *p = realloc(c->rx, cap);
        if (!p)
            return conn_fail(c, wsi, 1011, "out of memory");
        c->rx = p;
        c->rx_cap = cap;
    }
    memcpy(c->rx + c->rx_len, pl, len);
    c->rx_len += len;
    if (!h->fin)
        return 0;
    c->rx_active = false;
    c->rx[c->rx_len] = 0;
    if (c->cb.on_message)
        c->cb.on_message(c, c->user, c->rx_kind, c->rx, c->rx_len);
    return 0;
}

/* Parses and handles the complete frames at p[0..n), stopping early when rx is paused or the
 * connection ended inside a callback. Sets *used to the bytes consumed. Returns 0 or -1. */
static int conn_parse(wsc_conn *c, struct lws *wsi, const uint8_t *p, size_t n, size_t *used)
{
    size_t off = 0;
    int rc = 0;
    while (off < n && !c->rx_paused && c->state == CONN_OPEN && !c->free_pending) {
        wsf_header h;
        int r = wsf_parse_header(p + off, n - off, &h);
        if (r < 0 || (r > 0 && h.masked)) {
            rc = conn_fail(c, wsi, 1002, "protocol error in a received frame");
            break;
        }
        if (r == 0)
            break;
        if (!(h.opcode & 8) && h.len > c->max_message - (c->rx_active ? c->rx_len : 0)) {
            char text[96];
            snprintf(text, sizeof(text), "received message over %zu bytes", c->max_message);
            rc = conn_fail(c, wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, text);
            break;
        }
        if (h.len > n - off - h.hdr_len)
            break; /* the payload is not all here yet */
        const uint8_t *pl = p + off + h.hdr_len;
        off += h.hdr_len + (size_t)h.len;
        rc = h.opcode & 8 ? conn_control(c, wsi, h.opcode, pl, (size_t)h.len)
                          : conn_data(c, wsi, &h, pl);
        if (rc)
            break;
    }
    *used = off;
    return rc;
}

/* Appends in[0..len) to c's input buffer. Returns 0 or -1 (out of memory). */
static int conn_ib_append(wsc_conn *c, const uint8_t *in, size_t len)
{
    if (c->ib_len + len > c->ib_cap) {
        size_t cap = c->ib_cap ? c->ib_cap : 4096;
        while (cap < c->ib_len + len)
            cap *= 2;
        uint8_t *p = realloc(c->ib, cap);
        if (!p)
            return -1;
        c->ib = p;
        c->ib_cap = cap;
    }
    memcpy(c->ib + c->ib_len, in, len);
    c->ib_len += len;
    return 0;
}

/* Parses what the input buffer holds and keeps the unparsed rest. Returns 0 or -1. */
static int conn_parse_ib(wsc_conn *c, struct lws *wsi)
{
    size_t used = 0;
    int rc = conn_parse(c, wsi, c->ib, c->ib_len, &used);
    if (c->free_pending || !c->ib)
        return rc;
    memmove(c->ib, c->ib + used, c->ib_len - used);
    c->ib_len -= used;
    return rc;
}

/* The upgrade response, once complete: on success the connection opens (on_open) and any
 * frames that followed the head are parsed. Returns 0 or -1. */
static int conn_handshake(wsc_conn *c, struct lws *wsi)
{
    unsigned status;
    char err[160];
    int hl = wsf_parse_response((const char *)c->ib, c->ib_len, c->key, &status, err, sizeof(err));
    if (hl == 0 && c->ib_len > WSC_MAX_RESPONSE_HEAD) {
        snprintf(err, sizeof(err), "upgrade response head over %d bytes", WSC_MAX_RESPONSE_HEAD);
        hl = -1;
    }
    if (hl == 0)
        return 0;
    if (hl < 0) {
        snprintf(c->error, sizeof(c->error), "%s", err);
        c->error_pending = true;
        return -1;
    }
    memmove(c->ib, c->ib + hl, c->ib_len - (size_t)hl);
    c->ib_len -= (size_t)hl;
    lws_set_timeout(wsi, NO_PENDING_TIMEOUT, 0);
    c->state = CONN_OPEN;
    c->opened = true;
    if (c->rx_paused)
        lws_rx_flow_control(wsi, 0);
    if (c->out_head || c->close_requested)
        lws_callback_on_writable(wsi);
    if (c->cb.on_open)
        c->cb.on_open(c, c->user);
    if (c->free_pending || c->state != CONN_OPEN)
        return 0;
    return c->ib_len ? conn_parse_ib(c, wsi) : 0;
}

/* Bytes read from the socket. Frames are parsed straight from lws' read buffer; only a
 * partial frame at its end (or everything, while earlier bytes wait) is copied. Returns 0, or
 * -1 to close the connection. */
int wsconn_rx(wsc_conn *c, struct lws *wsi, const uint8_t *in, size_t len)
{
    if (c->state == CONN_CONNECTING) {
        if (conn_ib_append(c, in, len))
            return conn_fail(c, wsi, 1011, "out of memory");
        return conn_handshake(c, wsi);
    }
    if (c->state != CONN_OPEN)
        return 0;
    if (c->ib_len) {
        if (conn_ib_append(c, in, len))
            return conn_fail(c, wsi, 1011, "out of memory");
        return conn_parse_ib(c, wsi);
    }
    size_t used = 0;
    int rc = conn_parse(c, wsi, in, len, &used);
    if (rc || c->free_pending || c->state != CONN_OPEN || used == len)
        return rc;
    if (conn_ib_append(c, in + used, len - used))
        return conn_fail(c, wsi, 1011, "out of memory");
    return 0;
}

/* Parses frames held back while rx was paused, then writes the next thing owed. Returns 0, or
 * -1 to close. */
int wsconn_writeable(wsc_conn *c, struct lws *wsi)
{
    int rc = 0;
    if (c->rx_backlog && !c->rx_paused && c->state == CONN_OPEN) {
        c->rx_backlog = false;
        rc = conn_parse_ib(c, wsi);
    }
    if (!rc && !c->free_pending && c->state != CONN_DONE)
        rc = conn_write_next(c, wsi);
    return rc;
}
