/**
 * @file wsclient_int.h
 * Private to clients/: the state of a wsc_loop and a wsc_conn, shared by the two halves of the
 * event-driven client core.
 *
 * - clients/wsclient.c owns the loop, the public connection API, the connection lifecycle
 *   (the send queue's allocation, deferred notifications, destroy and free) and the lws
 *   callback dispatch.
 * - clients/wsconn.c owns the transport of one connection on its RAW lws socket: the opening
 *   handshake, mask keys, writing frames from the send queue and parsing received frames
 *   (RFC 6455 framing itself is clients/wsframe.c).
 *
 * Every field and function here belongs to the thread that runs the connection's loop.
 */
#ifndef RELAY_CLIENTS_WSCLIENT_INT_H
#define RELAY_CLIENTS_WSCLIENT_INT_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay/wsclient.h"

typedef enum { CONN_CONNECTING = 0, CONN_OPEN, CONN_DONE } conn_state;

/* One queued outgoing message: LWS_PRE bytes of headroom, then len bytes of payload. Allocated
 * by wsc_conn_send(); freed by the transport once its last fragment is written, or by the
 * lifecycle when the connection ends. */
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

/* ---- Transport (clients/wsconn.c) ---------------------------------------------------------- */

/* Seeds c's Sec-WebSocket-Key and mask keys from ctx's random source, before connecting.
 * Returns 0, or -1 if the random source failed. */
int wsconn_init(wsc_conn *c, struct lws_context *ctx);

/* TCP to the server is up on wsi: asks for WRITEABLE to send the upgrade request and bounds the
 * wait for the response with an lws timeout. */
void wsconn_connected(struct lws *wsi);

/* Bytes in[0..len) read from wsi: the upgrade response until the connection opens (on_open),
 * then frames, delivered through on_message, possibly before this returns. Anything unparsed is
 * kept for the next read. Returns 0, or -1 to close the wsi (c->error set for a failure). */
int wsconn_rx(wsc_conn *c, struct lws *wsi, const uint8_t *in, size_t len);

/* wsi is writeable: parses frames held back while rx was paused, then writes exactly one thing
 * (upgrade request, pong, next fragment of the send queue, or our close frame) and asks for
 * WRITEABLE again while more is owed. Returns 0, or -1 to close the wsi. */
int wsconn_writeable(wsc_conn *c, struct lws *wsi);

#endif
