/*
 * wsclient.c - the event-driven WebSocket client core (wsc_loop, wsc_conn) on libwebsockets'
 * event loop: the loop, the public connection API, the connection lifecycle and the lws
 * callback dispatch. See include/relay/wsclient.h for the contract.
 *
 * Transport: each connection is a RAW libwebsockets client socket that does its own opening
 * handshake and RFC 6455 framing; that lives in clients/wsconn.c (why: see its top comment).
 * The state both files share is clients/wsclient_int.h.
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
#include "wsclient_int.h"

/* Bytes libwebsockets reads per recv() (its per-thread service buffer). */
#define WSC_READ_BUFFER (64 * 1024)

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
    if (wsconn_init(c, loop->ctx)) {
        conn_free(c);
        return NULL;
    }
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
    case LWS_CALLBACK_RAW_CONNECTED:
        wsconn_connected(wsi);
        break;
    case LWS_CALLBACK_RAW_RX:
        if (c->state != CONN_DONE)
            rc = wsconn_rx(c, wsi, in, len);
        break;
    case LWS_CALLBACK_RAW_WRITEABLE:
        rc = wsconn_writeable(c, wsi);
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
