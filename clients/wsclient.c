/*
 * wsclient.c - the event-driven WebSocket client core (wsc_loop, wsc_conn) on libwebsockets'
 * event loop. See include/relay/wsclient.h for the contract.
 *
 * Transport: each connection is a RAW libwebsockets client socket; this file does the opening
 * handshake and RFC 6455 framing itself (clients/wsframe.c). libwebsockets 4.1's ws client role
 * runs every received byte through a per-byte state machine, which cost relay-bench about two
 * thirds of its CPU at capacity; here a read is parsed frame by frame and a complete message
 * is handed to on_message straight from the read buffer, without a copy. libwebsockets still
 * owns sockets, connecting (source address binding), timers and partial writes.
 *
 * Ownership: a wsc_conn is owned by its caller and bound to one lws client wsi through the
 * wsi's user pointer (lws_client_connect_info.userdata). When the caller destroys a connection
 * whose wsi still exists, the wsi's user pointer is cleared first, so libwebsockets' later
 * callbacks for it find no connection and are ignored; the wsi itself is then killed from a
 * libwebsockets timeout rather than inside the caller's call chain.
 */
#include <libwebsockets.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/wsclient.h"
#include "wsframe.h"

/* Cap on the upgrade response head; a longer one fails the connection. */
#define WSC_MAX_RESPONSE_HEAD 16384
/* Seconds to wait for the 101 response, and for the peer's close frame after ours. */
#define WSC_HANDSHAKE_TIMEOUT_S 20
#define WSC_CLOSE_TIMEOUT_S     5
/* Bytes libwebsockets reads per recv() (its per-thread service buffer). */
#define WSC_READ_BUFFER (64 * 1024)

typedef enum { CONN_CONNECTING = 0, CONN_OPEN, CONN_DONE } conn_state;

/* One queued outgoing message: LWS_PRE bytes of headroom, then len bytes of payload. */
typedef struct wsc_out {
    struct wsc_out *next;
    wsc_kind kind;
    size_t len;
    size_t off; /* payload bytes already handed to lws_write() */
    uint8_t mem[];
} wsc_out;

struct wsc_loop {
    struct lws_context *ctx;
    lws_sorted_usec_list_t timeout_sul; /* bounds one wsc_loop_run() */
    void (*wake_cb)(wsc_loop *loop, void *user);
    void *wake_user;
    wsc_conn *conns;      /* every connection not yet destroyed (doubly linked) */
    wsc_conn *pending;    /* connections with a deferred notification (singly linked) */
    wsc_conn *connecting; /* the connection inside wsc_connect(), whose callbacks defer */
    size_t n_conns;
};

struct wsc_conn {
    wsc_loop *loop; /* NULL once the loop is gone */
    wsc_conn *prev, *next;
    wsc_conn *pending_next;
    bool on_pending;
    struct lws *wsi; /* NULL once libwebsockets destroyed it or we detached */
    wsc_callbacks cb;
    void *user;
    conn_state state;
    bool opened;
    /* Connection strings, kept until the connection is destroyed. */
    char *host, *host_hdr, *path, *origin, *bind_addr;
    int port;
    size_t max_message;
    size_t fragment_size;
    /* Send queue. */
    wsc_out *out_head, *out_tail;
    size_t out_msgs, out_bytes;
    /* Close state. */
    bool close_requested;
    int close_code_local;
    char close_reason_local[124];
    bool peer_closed;
    int close_code;
    char close_reason[124];
    size_t close_reason_len;
    char error[256];
    bool error_pending; /* error[] to report instead of a close */
    bool rx_paused;
    /* Reassembly of the message being received. */
    bool rx_active;
    wsc_kind rx_kind;
    uint8_t *rx;
    size_t rx_len, rx_cap;
    /* Transport: handshake and unparsed input (a partial frame, the response head before the
     * upgrade, or frames held back while rx is paused). */
    char key[25];      /* Sec-WebSocket-Key */
    bool request_sent; /* the upgrade request was written */
    bool close_sent;   /* our close frame was written */
    bool rx_backlog;   /* ib holds frames to parse once rx resumes */
    uint8_t *ib;
    size_t ib_len, ib_cap;
    uint8_t pong[125]; /* payload of the pong owed for the last ping */
    size_t pong_len;
    bool pong_pending;
    uint64_t mask_state; /* xorshift state for frame mask keys */
    /* Callback nesting: a destroy requested inside a callback is finished when it returns. */
    int in_cb;
    bool free_pending;
};

static pthread_once_t wsc_log_once = PTHREAD_ONCE_INIT;
static int wsc_log_mask = LLL_ERR;
static bool wsc_log_set;

static int wsc_lws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                            size_t len);

static const struct lws_protocols wsc_protocols[] = {
    {"relay-wsc", wsc_lws_callback, 0, 65536, 0, NULL, 0},
    {NULL, NULL, 0, 0, 0, NULL, 0},
};

void wsc_set_lws_log_level(int lll_mask)
{
    wsc_log_mask = lll_mask;
    wsc_log_set = true;
    lws_set_log_level(lll_mask, NULL);
}

/* Applies the default (quiet) log level once, unless the program chose one. */
static void wsc_log_default(void)
{
    if (!wsc_log_set)
        lws_set_log_level(wsc_log_mask, NULL);
}

/* ---- Loop ------------------------------------------------------------------------------------ */

wsc_loop *wsc_loop_create(char *err, size_t errlen)
{
    pthread_once(&wsc_log_once, wsc_log_default);
    wsc_loop *loop = calloc(1, sizeof(*loop));
    if (!loop) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct lws_context_creation_info info;
    memset(&info, 0, sizeof(info));
    info.port = CONTEXT_PORT_NO_LISTEN;
    info.protocols = wsc_protocols;
    info.gid = -1;
    info.uid = -1;
    info.user = loop;
    /* Send the Origin header as given; without this lws 4.1 prefixes "http://". */
    info.options = LWS_SERVER_OPTION_JUST_USE_RAW_ORIGIN;
    /* One recv() then carries hundreds of small broadcasts. */
    info.pt_serv_buf_size = WSC_READ_BUFFER;
    /* No info.extensions: permessage-deflate is never offered. */
    loop->ctx = lws_create_context(&info);
    if (!loop->ctx) {
        snprintf(err, errlen, "lws_create_context failed");
        free(loop);
        return NULL;
    }
    return loop;
}

/* Unlinks c from the loop's list of connections. */
static void loop_unlink(wsc_conn *c)
{
    wsc_loop *loop = c->loop;
    if (!loop)
        return;
    if (c->prev)
        c->prev->next = c->next;
    else
        loop->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    if (c->on_pending) {
        wsc_conn **pp = &loop->pending;
        while (*pp && *pp != c)
            pp = &(*pp)->pending_next;
        if (*pp)
            *pp = c->pending_next;
        c->on_pending = false;
    }
    if (loop->connecting == c)
        loop->connecting = NULL;
    loop->n_conns--;
    c->prev = c->next = NULL;
    c->loop = NULL;
}

/* Detaches c from its wsi so libwebsockets' later callbacks for it are ignored. */
static void conn_detach_wsi(wsc_conn *c)
{
    if (c->wsi) {
        lws_set_wsi_user(c->wsi, NULL);
        c->wsi = NULL;
    }
}

void wsc_loop_destroy(wsc_loop *loop)
{
    if (!loop)
        return;
    while (loop->conns) {
        wsc_conn *c = loop->conns;
        conn_detach_wsi(c);
        c->state = CONN_DONE;
        loop_unlink(c);
    }
    lws_sul_cancel(&loop->timeout_sul);
    lws_context_destroy(loop->ctx);
    free(loop);
}

/* Does nothing: its only purpose is to end the poll() of a bounded wsc_loop_run(). */
static void loop_timeout_cb(lws_sorted_usec_list_t *sul)
{
    (void)sul;
}

static void conn_free(wsc_conn *c);
static void conn_finish(wsc_conn *c);

/* Delivers deferred notifications. Returns how many were delivered. */
static int loop_deliver_pending(wsc_loop *loop)
{
    int n = 0;
    while (loop->pending) {
        wsc_conn *c = loop->pending;
        loop->pending = c->pending_next;
        c->on_pending = false;
        c->pending_next = NULL;
        conn_finish(c);
        n++;
    }
    return n;
}

int wsc_loop_run(wsc_loop *loop, int timeout_ms)
{
    if (loop_deliver_pending(loop))
        return 0;
    if (timeout_ms > 0)
        lws_sul_schedule(loop->ctx, 0, &loop->timeout_sul, loop_timeout_cb,
                         (lws_usec_t)timeout_ms * LWS_US_PER_MS);
    /* lws 4.1 ignores a positive timeout (it sleeps until the next event or timer, hence the
     * timer above); a negative one means "do not wait". */
    int n = lws_service(loop->ctx, timeout_ms > 0 ? 0 : -1);
    lws_sul_cancel(&loop->timeout_sul);
    loop_deliver_pending(loop);
    return n < 0 ? -1 : 0;
}

void wsc_loop_wake(wsc_loop *loop)
{
    lws_cancel_service(loop->ctx);
}

void wsc_loop_set_wake_cb(wsc_loop *loop, void (*cb)(wsc_loop *loop, void *user), void *user)
{
    loop->wake_cb = cb;
    loop->wake_user = user;
}

size_t wsc_loop_conn_count(const wsc_loop *loop)
{
    return loop->n_conns;
}

/* ---- Connections ------------------------------------------------------------------------------
 */

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

/* Builds path?query. Returns a malloc'd string or NULL. */
static char *build_path(const char *path, const char *query)
{
    size_t n = strlen(path) + (query ? strlen(query) + 1 : 0) + 1;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s%s%s", path, query ? "?" : "", query ? query : "");
    return p;
}

/* Marks c failed with text, to be reported by on_error from the next loop run. */
static void conn_fail_deferred(wsc_conn *c, const char *text)
{
    snprintf(c->error, sizeof(c->error), "%s", text);
    c->error_pending = true;
    c->state = CONN_DONE;
    if (c->loop && !c->on_pending) {
        c->pending_next = c->loop->pending;
        c->loop->pending = c;
        c->on_pending = true;
    }
}

wsc_conn *wsc_connect(wsc_loop *loop, const wsc_conn_opts *opts, const wsc_callbacks *cb,
                      void *user)
{
    if (!loop || !opts || !opts->host || !opts->path || opts->port <= 0)
        return NULL;
    wsc_conn *c = calloc(1, sizeof(*c));
    if (!c)
        return NULL;
    char hostport[300];
    snprintf(hostport, sizeof(hostport), "%s:%d", opts->host, opts->port);
    c->host = strdup(opts->host);
    c->host_hdr = strdup(hostport);
    c->path = build_path(opts->path, opts->query);
    c->origin = dup_or_null(opts->origin);
    c->bind_addr = dup_or_null(opts->bind_addr);
    if (!c->host || !c->host_hdr || !c->path || (opts->origin && !c->origin) ||
        (opts->bind_addr && !c->bind_addr)) {
        conn_free(c);
        return NULL;
    }
    c->port = opts->port;
    uint8_t rnd[16];
    if (lws_get_random(loop->ctx, rnd, sizeof(rnd)) != sizeof(rnd)) {
        conn_free(c);
        return NULL;
    }
    /* lws_b64_encode_string() does not terminate a result that fills its buffer. */
    char b64[40];
    int klen = lws_b64_encode_string((const char *)rnd, sizeof(rnd), b64, sizeof(b64));
    snprintf(c->key, sizeof(c->key), "%.*s", klen > 0 ? klen : 0, b64);
    memcpy(&c->mask_state, rnd, sizeof(c->mask_state));
    c->mask_state |= 1;
    c->max_message = opts->max_message ? opts->max_message : WSC_DEFAULT_MAX_MESSAGE;
    c->fragment_size = opts->fragment_size ? opts->fragment_size : WSC_DEFAULT_FRAGMENT;
    if (cb)
        c->cb = *cb;
    c->user = user;
    c->loop = loop;
    c->next = loop->conns;
    if (loop->conns)
        loop->conns->prev = c;
    loop->conns = c;
    loop->n_conns++;

    struct lws_client_connect_info ci;
    memset(&ci, 0, sizeof(ci));
    ci.context = loop->ctx;
    ci.address = c->host;
    ci.port = c->port;
    ci.path = c->path;
    ci.host = c->host_hdr;
    ci.origin = c->origin;
    ci.ietf_version_or_minus_one = -1;
    ci.method = "RAW";
    ci.local_protocol_name = wsc_protocols[0].name;
    ci.userdata = c;
    ci.iface = c->bind_addr;
    ci.pwsi = &c->wsi;

    loop->connecting = c;
    struct lws *wsi = lws_client_connect_via_info(&ci);
    if (loop->connecting == c)
        loop->connecting = NULL;
    if (!wsi) {
        c->wsi = NULL;
        if (c->state != CONN_DONE)
            conn_fail_deferred(c, "connect failed");
    }
    return c;
}

int wsc_conn_send(wsc_conn *c, wsc_kind kind, const void *data, size_t len)
{
    if (c->state == CONN_DONE || c->close_requested || (kind != WSC_TEXT && kind != WSC_BINARY))
        return -1;
    wsc_out *o = malloc(sizeof(*o) + LWS_PRE + len);
    if (!o)
        return -1;
    o->next = NULL;
    o->kind = kind;
    o->len = len;
    o->off = 0;
    if (len)
        memcpy(o->mem + LWS_PRE, data, len);
    if (c->out_tail)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    c->out_msgs++;
    c->out_bytes += len;
    if (c->state == CONN_OPEN && c->wsi)
        lws_callback_on_writable(c->wsi);
    return 0;
}

int wsc_conn_close(wsc_conn *c, int code, const char *reason)
{
    if (c->state != CONN_OPEN || c->close_requested || !c->wsi)
        return -1;
    c->close_requested = true;
    c->close_code_local = code;
    snprintf(c->close_reason_local, sizeof(c->close_reason_local), "%s", reason ? reason : "");
    lws_callback_on_writable(c->wsi);
    return 0;
}

void wsc_conn_pause_rx(wsc_conn *c, bool paused)
{
    c->rx_paused = paused;
    if (c->state == CONN_OPEN && c->wsi) {
        lws_rx_flow_control(c->wsi, paused ? 0 : 1);
        /* Frames read before the pause are parsed from the next WRITEABLE callback. */
        if (!paused && c->ib_len) {
            c->rx_backlog = true;
            lws_callback_on_writable(c->wsi);
        }
    }
}

bool wsc_conn_is_open(const wsc_conn *c)
{
    return c->state == CONN_OPEN;
}

bool wsc_conn_is_done(const wsc_conn *c)
{
    return c->state == CONN_DONE && !c->on_pending;
}

size_t wsc_conn_queued_msgs(const wsc_conn *c)
{
    return c->out_msgs;
}

size_t wsc_conn_queued_bytes(const wsc_conn *c)
{
    return c->out_bytes;
}

int wsc_conn_fd(const wsc_conn *c)
{
    if (!c->wsi)
        return -1;
    return (int)lws_get_socket_fd(c->wsi);
}

static void out_clear(wsc_conn *c)
{
    wsc_out *o = c->out_head;
    while (o) {
        wsc_out *next = o->next;
        free(o);
        o = next;
    }
    c->out_head = c->out_tail = NULL;
    c->out_msgs = c->out_bytes = 0;
}

static void conn_free(wsc_conn *c)
{
    loop_unlink(c);
    out_clear(c);
    free(c->rx);
    free(c->ib);
    free(c->host);
    free(c->host_hdr);
    free(c->path);
    free(c->origin);
    free(c->bind_addr);
    free(c);
}

void wsc_conn_destroy(wsc_conn *c)
{
    if (!c)
        return;
    if (c->wsi) {
        struct lws *wsi = c->wsi;
        bool alive = c->state != CONN_DONE;
        conn_detach_wsi(c);
        /* A live wsi is killed from lws' own timer, outside this call chain. */
        if (alive)
            lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC);
    }
    c->state = CONN_DONE;
    if (c->in_cb) {
        c->free_pending = true;
        return;
    }
    conn_free(c);
}

/* ---- Callback dispatch ------------------------------------------------------------------------
 */

/* Reports the end of c once: on_error for a failure, else on_close (or on_error if the
 * connection never opened). */
static void conn_finish(wsc_conn *c)
{
    c->state = CONN_DONE;
    out_clear(c);
    c->in_cb++;
    if (c->error_pending || !c->opened) {
        c->error_pending = false;
        if (!c->error[0])
            snprintf(c->error, sizeof(c->error), "connection closed before the upgrade");
        if (c->cb.on_error)
            c->cb.on_error(c, c->user, c->error);
    } else if (c->cb.on_close) {
        c->cb.on_close(c, c->user, c->close_code, c->close_reason, c->close_reason_len);
    }
    c->in_cb--;
    if (c->free_pending && !c->in_cb)
        conn_free(c);
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

static void conn_peer_close(wsc_conn *c, const uint8_t *in, size_t len);

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
static int conn_rx(wsc_conn *c, struct lws *wsi, const uint8_t *in, size_t len)
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

/* Reports the end of c now, or from the next loop run while wsc_connect() is still on the
 * stack (its caller has not even seen the connection yet). */
static void conn_end(wsc_conn *c)
{
    if (c->loop && c->loop->connecting == c) {
        char text[sizeof(c->error)];
        snprintf(text, sizeof(text), "%s", c->error[0] ? c->error : "connect failed");
        conn_fail_deferred(c, text);
        return;
    }
    conn_finish(c);
}

/* The wsi is closing: settle the close code and report. */
static void conn_closed(wsc_conn *c)
{
    if (c->state == CONN_DONE)
        return;
    if (!c->peer_closed) {
        if (c->close_requested) {
            c->close_code = c->close_code_local;
            size_t rl = strlen(c->close_reason_local);
            memcpy(c->close_reason, c->close_reason_local, rl);
            c->close_reason_len = rl;
        } else {
            c->close_code = WSC_CLOSE_ABNORMAL;
        }
    }
    conn_end(c);
}

/* Connection failed before the upgrade. */
static void conn_connect_error(wsc_conn *c, struct lws *wsi, const char *in, size_t len)
{
    if (c->state == CONN_DONE)
        return;
    unsigned int status = wsi ? lws_http_client_http_response(wsi) : 0;
    char text[200];
    snprintf(text, sizeof(text), "%.*s", (int)(in ? len : 0), in ? in : "");
    if (!text[0])
        snprintf(text, sizeof(text), "connection error");
    if (status)
        snprintf(c->error, sizeof(c->error), "%s (HTTP %u)", text, status);
    else
        snprintf(c->error, sizeof(c->error), "%s", text);
    c->error_pending = true;
    conn_end(c);
}

static int wsc_lws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                            size_t len)
{
    if (reason == LWS_CALLBACK_EVENT_WAIT_CANCELLED) {
        wsc_loop *loop = lws_context_user(lws_get_context(wsi));
        if (loop && loop->wake_cb)
            loop->wake_cb(loop, loop->wake_user);
        return 0;
    }
    wsc_conn *c = user;
    if (!c)
        return 0;
    int rc = 0;
    c->in_cb++;
    switch (reason) {
    case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
        conn_connect_error(c, wsi, in, in ? strnlen(in, len ? len : 200) : 0);
        break;
    case LWS_CALLBACK_RAW_CONNECTED: {
        /* Each message is one write: Nagle would hold a small one back for the peer's delayed
         * ACK (libwebsockets sets TCP_NODELAY for its ws role, not for raw sockets). */
        int one = 1;
        setsockopt((int)lws_get_socket_fd(wsi), IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        /* TCP is up: send the upgrade request and bound the wait for its response. */
        lws_set_timeout(wsi, PENDING_TIMEOUT_AWAITING_SERVER_RESPONSE, WSC_HANDSHAKE_TIMEOUT_S);
        lws_callback_on_writable(wsi);
        break;
    }
    case LWS_CALLBACK_RAW_RX:
        if (c->state != CONN_DONE)
            rc = conn_rx(c, wsi, in, len);
        break;
    case LWS_CALLBACK_RAW_WRITEABLE:
        if (c->rx_backlog && !c->rx_paused && c->state == CONN_OPEN) {
            c->rx_backlog = false;
            rc = conn_parse_ib(c, wsi);
        }
        if (!rc && !c->free_pending && c->state != CONN_DONE)
            rc = conn_write_next(c, wsi);
        break;
    case LWS_CALLBACK_RAW_CLOSE:
        conn_closed(c);
        break;
    case LWS_CALLBACK_WSI_DESTROY:
        /* Last callback for this wsi; a connection that never got CLOSED or an error ends. */
        c->wsi = NULL;
        if (c->state != CONN_DONE && !c->on_pending)
            conn_closed(c);
        break;
    default:
        break;
    }
    c->in_cb--;
    if (c->free_pending && !c->in_cb)
        conn_free(c);
    return rc;
}
