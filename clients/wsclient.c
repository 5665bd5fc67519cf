/*
 * wsclient.c - the event-driven WebSocket client core (wsc_loop, wsc_conn) on libwebsockets'
 * client API. See include/relay/wsclient.h for the contract.
 *
 * Ownership: a wsc_conn is owned by its caller and bound to one lws client wsi through the
 * wsi's user pointer (lws_client_connect_info.userdata). When the caller destroys a connection
 * whose wsi still exists, the wsi's user pointer is cleared first, so libwebsockets' later
 * callbacks for it find no connection and are ignored; the wsi itself is then killed from a
 * libwebsockets timeout rather than inside the caller's call chain.
 */
#include <libwebsockets.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/wsclient.h"

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
    if (c->state == CONN_OPEN && c->wsi)
        lws_rx_flow_control(c->wsi, paused ? 0 : 1);
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

/* Writes the next fragment of the head of the queue. Returns 0, or -1 to close. */
static int conn_write_next(wsc_conn *c, struct lws *wsi)
{
    wsc_out *o = c->out_head;
    if (!o) {
        if (c->close_requested) {
            lws_close_reason(wsi, (enum lws_close_status)c->close_code_local,
                             (unsigned char *)c->close_reason_local, strlen(c->close_reason_local));
            return -1;
        }
        return 0;
    }
    size_t chunk = o->len - o->off;
    if (chunk > c->fragment_size)
        chunk = c->fragment_size;
    bool first = o->off == 0, last = o->off + chunk == o->len;
    int flags =
        lws_write_ws_flags(o->kind == WSC_TEXT ? LWS_WRITE_TEXT : LWS_WRITE_BINARY, first, last);
    /* lws writes the frame header into the LWS_PRE bytes before the fragment: for later
     * fragments those are payload bytes already sent. */
    int n = lws_write(wsi, o->mem + LWS_PRE + o->off, chunk, (enum lws_write_protocol)flags);
    if (n < 0) {
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
    if (c->out_head || c->close_requested)
        lws_callback_on_writable(wsi);
    return 0;
}

/* Appends received bytes to the message being reassembled and delivers it when complete.
 * Returns 0, or -1 to close the connection. */
static int conn_receive(wsc_conn *c, struct lws *wsi, const uint8_t *in, size_t len)
{
    if (!c->rx_active) {
        c->rx_active = true;
        c->rx_kind = lws_frame_is_binary(wsi) ? WSC_BINARY : WSC_TEXT;
        c->rx_len = 0;
    }
    if (len > c->max_message - c->rx_len) {
        snprintf(c->error, sizeof(c->error), "received message over %zu bytes", c->max_message);
        c->error_pending = true;
        lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, NULL, 0);
        return -1;
    }
    if (c->rx_len + len + 1 > c->rx_cap) {
        size_t cap = c->rx_cap ? c->rx_cap : 4096;
        while (cap < c->rx_len + len + 1)
            cap *= 2;
        uint8_t *p = realloc(c->rx, cap);
        if (!p) {
            snprintf(c->error, sizeof(c->error), "out of memory");
            c->error_pending = true;
            return -1;
        }
        c->rx = p;
        c->rx_cap = cap;
    }
    if (len)
        memcpy(c->rx + c->rx_len, in, len);
    c->rx_len += len;
    if (!lws_is_final_fragment(wsi) || lws_remaining_packet_payload(wsi))
        return 0;
    c->rx_active = false;
    c->rx[c->rx_len] = 0;
    if (c->cb.on_message)
        c->cb.on_message(c, c->user, c->rx_kind, c->rx, c->rx_len);
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
    case LWS_CALLBACK_CLIENT_ESTABLISHED:
        c->state = CONN_OPEN;
        c->opened = true;
        if (c->rx_paused)
            lws_rx_flow_control(wsi, 0);
        if (c->out_head)
            lws_callback_on_writable(wsi);
        if (c->cb.on_open)
            c->cb.on_open(c, c->user);
        break;
    case LWS_CALLBACK_CLIENT_RECEIVE:
        if (c->state == CONN_OPEN)
            rc = conn_receive(c, wsi, in, len);
        break;
    case LWS_CALLBACK_CLIENT_WRITEABLE:
        if (c->state == CONN_OPEN)
            rc = conn_write_next(c, wsi);
        break;
    case LWS_CALLBACK_WS_PEER_INITIATED_CLOSE:
        conn_peer_close(c, in, len);
        break;
    case LWS_CALLBACK_CLIENT_CLOSED:
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
