/**
 * @file wsclient.h
 * A WebSocket client on libwebsockets' client API, written once for the integration tests,
 * relayctl and relay-bench.
 *
 * Two layers:
 *
 * - The event-driven core (wsc_loop, wsc_conn). A loop owns one client-only lws_context (no
 *   listening socket) and is driven by exactly one thread; a load generator runs one loop per
 *   thread with thousands of connections on each. Connections report through callbacks
 *   (on_open, on_message, on_close, on_error) called from wsc_loop_run() on the loop's thread.
 *   Each connection has its own send queue; one frame is written per WRITEABLE callback, with
 *   LWS_PRE headroom so libwebsockets frames it without copying. Messages of any size are
 *   reassembled on receipt (up to a per-connection cap) and sent in fragments.
 *   permessage-deflate is never offered.
 *
 * - The blocking layer (wsc_sync) for tests and command-line tools: one connection with its own
 *   loop, connect/send/receive calls that each take a deadline, received messages queued in
 *   order and decoded to JSON (Text with jansson, Binary msgpack with codec_msgpack_to_json()),
 *   so a test can expect the next message of a given type without anything being skipped
 *   silently. A wsc_sync that is not being called does not read its socket, which is how a test
 *   makes a "slow client".
 *
 * Source address binding: wsc_conn_opts.bind_addr is passed to libwebsockets 4.1's
 * lws_client_connect_info.iface, which binds the socket to that local IP (or interface name)
 * before connecting; any 127.0.0.0/8 address works on Linux, which is how a load generator
 * spreads connections over many source addresses past the 64k ephemeral-port limit.
 *
 * Thread-safety: a loop and its connections belong to the thread that runs the loop; only
 * wsc_loop_wake() may be called from another thread. wsc_set_lws_log_level() is process-wide.
 */
#ifndef RELAY_WSCLIENT_H
#define RELAY_WSCLIENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Frame kinds of a message. WSC_ANY is only a filter for the expect helpers. */
typedef enum { WSC_TEXT = 0, WSC_BINARY = 1, WSC_ANY = -1 } wsc_kind;

/* Close codes this library reports when the peer sent no usable close frame (RFC 6455 7.4.1). */
#define WSC_CLOSE_NO_STATUS 1005
#define WSC_CLOSE_ABNORMAL  1006

/* Default cap on a received message (bytes); larger messages close the connection with 1009. */
#define WSC_DEFAULT_MAX_MESSAGE (64u * 1024u * 1024u)
/* Default size of the fragments a large outgoing message is split into. */
#define WSC_DEFAULT_FRAGMENT (64u * 1024u)

/* Process-wide libwebsockets log mask (LLL_* bits); 0 silences it. The default, applied when
 * the first loop is created unless this was called before, is errors only. */
void wsc_set_lws_log_level(int lll_mask);

/* ---- Event-driven core -------------------------------------------------------------------- */

typedef struct wsc_loop wsc_loop;
typedef struct wsc_conn wsc_conn;

/* Callbacks, all optional (NULL), all called on the loop's thread from inside wsc_loop_run().
 * Exactly one of on_close or on_error ends every connection, after which the connection sends
 * and receives nothing more; the owner then calls wsc_conn_destroy() (from the callback itself
 * if it likes).
 * - on_open: the upgrade succeeded.
 * - on_message: one complete message; data is valid only during the call.
 * - on_close: the connection closed after it had opened. code is the code in the peer's close
 *   frame, WSC_CLOSE_NO_STATUS if the frame had none, WSC_CLOSE_ABNORMAL if the peer sent no
 *   close frame; when this side started the close and no reply arrived, it is the code this
 *   side sent. reason is not NUL-terminated.
 * - on_error: the connection failed before opening (refused, HTTP status other than 101, bad
 *   handshake), or a local failure (out of memory, received message over the cap). */
typedef struct wsc_callbacks {
    void (*on_open)(wsc_conn *c, void *user);
    void (*on_message)(wsc_conn *c, void *user, wsc_kind kind, const uint8_t *data, size_t len);
    void (*on_close)(wsc_conn *c, void *user, int code, const char *reason, size_t reason_len);
    void (*on_error)(wsc_conn *c, void *user, const char *text);
} wsc_callbacks;

/* Where and how to connect. Strings are copied; only host, port and path are required. */
typedef struct wsc_conn_opts {
    const char *host; /* IP address or name to connect to, also the Host header */
    int port;
    const char *path;      /* request path, e.g. "/ws/documents/doc1" */
    const char *query;     /* appended after '?' when non-NULL, e.g. "color=%23ff0000" */
    const char *origin;    /* Origin header, NULL for none */
    const char *bind_addr; /* local source address (e.g. "127.0.0.2"), NULL for any */
    size_t max_message;    /* receive cap in bytes, 0 for WSC_DEFAULT_MAX_MESSAGE */
    size_t fragment_size;  /* outgoing fragment size, 0 for WSC_DEFAULT_FRAGMENT */
} wsc_conn_opts;

/* Creates a loop with its own client-only lws_context. Returns NULL with a reason in err.
 * The caller owns the loop and destroys it after (or instead of) destroying its connections. */
wsc_loop *wsc_loop_create(char *err, size_t errlen);

/* Closes every connection still open (without callbacks) and frees the loop. Connections that
 * were not destroyed become inert and must still be freed with wsc_conn_destroy().
 * wsc_loop_destroy(NULL) is a no-op. */
void wsc_loop_destroy(wsc_loop *loop);

/* Services network events and timers for at most timeout_ms (0: only what is ready now),
 * calling callbacks; returns early once something was serviced. Returns 0, or -1 if the lws
 * context failed. Loop thread only; never from inside a callback. */
int wsc_loop_run(wsc_loop *loop, int timeout_ms);

/* Makes a wsc_loop_run() in progress (or the next one) return soon and calls the wake callback
 * on the loop's thread. The only function that may be called from any thread. */
void wsc_loop_wake(wsc_loop *loop);

/* Sets the function wsc_loop_wake() triggers on the loop's thread (NULL to clear). */
void wsc_loop_set_wake_cb(wsc_loop *loop, void (*cb)(wsc_loop *loop, void *user), void *user);

/* Number of connections created on the loop and not yet destroyed. */
size_t wsc_loop_conn_count(const wsc_loop *loop);

/* Starts connecting. Returns the connection (owned by the caller, freed with
 * wsc_conn_destroy()), or NULL only when out of memory or opts are incomplete. Failures to
 * connect are reported through on_error from a later wsc_loop_run(), never from inside this
 * call. Messages may be queued with wsc_conn_send() before the connection opens. */
wsc_conn *wsc_connect(wsc_loop *loop, const wsc_conn_opts *opts, const wsc_callbacks *cb,
                      void *user);

/* Queues one message (copied) for sending. Returns 0, or -1 when the connection is closing or
 * closed or memory ran out. */
int wsc_conn_send(wsc_conn *c, wsc_kind kind, const void *data, size_t len);

/* Starts a close handshake with code (1000-4999) and an optional reason (at most 123 bytes),
 * after the messages already queued have been sent. on_close follows. Returns 0, or -1 if the
 * connection is not open or closing already. */
int wsc_conn_close(wsc_conn *c, int code, const char *reason);

/* Stops (paused = true) or resumes reading from the socket, so the peer's writes back up
 * (TCP flow control). Queued sends are still written. */
void wsc_conn_pause_rx(wsc_conn *c, bool paused);

/* True between on_open and the end of the connection. */
bool wsc_conn_is_open(const wsc_conn *c);

/* True once on_close or on_error has been delivered. */
bool wsc_conn_is_done(const wsc_conn *c);

/* Messages and payload bytes queued and not yet fully written. */
size_t wsc_conn_queued_msgs(const wsc_conn *c);
size_t wsc_conn_queued_bytes(const wsc_conn *c);

/* The socket (for getsockname and the like), or -1 when there is none. */
int wsc_conn_fd(const wsc_conn *c);

/* Destroys a connection: an open one is dropped without further callbacks (libwebsockets
 * closes the socket on the loop's next run). May be called from the connection's own
 * callbacks; the memory is then freed when the callback returns. wsc_conn_destroy(NULL) is a
 * no-op. */
void wsc_conn_destroy(wsc_conn *c);

/* ---- Blocking layer ------------------------------------------------------------------------ */

typedef struct wsc_sync wsc_sync;

/* A received message. json is the decoded message (a new reference owned by the msg) or NULL
 * when decoding failed, with the reason in decode_err. data is NUL-terminated for convenience
 * (the NUL is not counted in len). Release with wsc_msg_clear(). */
typedef struct wsc_msg {
    wsc_kind kind;
    uint8_t *data;
    size_t len;
    json_t *json;
    char decode_err[128];
} wsc_msg;

void wsc_msg_clear(wsc_msg *m);

typedef enum {
    WSC_SYNC_OK = 0,
    WSC_SYNC_TIMEOUT = -1, /* nothing happened before the deadline */
    WSC_SYNC_CLOSED = -2,  /* the connection is closed and nothing more is queued */
    WSC_SYNC_ERROR = -3    /* local failure (out of memory, lws context failure) */
} wsc_sync_status;

/* Optional connection settings; NULL means none. */
typedef struct wsc_sync_opts {
    const char *query;
    const char *origin;
    const char *bind_addr;
    size_t max_message;
} wsc_sync_opts;

/* Connects to ws://host:port/path and waits up to timeout_ms for the upgrade. Returns the
 * client, or NULL with the failure (refused, HTTP status, timeout) written to err. */
wsc_sync *wsc_sync_connect(const char *host, int port, const char *path, const wsc_sync_opts *opts,
                           int timeout_ms, char *err, size_t errlen);

/* Drops the connection without a close handshake and frees everything. NULL is a no-op. */
void wsc_sync_destroy(wsc_sync *s);

/* Sends one message and waits (bounded, 10 s) until it has been handed to the kernel, so a peer
 * served by another loop can already see it. Returns 0, or -1 if the connection is closed or
 * the write did not complete. */
int wsc_sync_send(wsc_sync *s, wsc_kind kind, const void *data, size_t len);

/* Sends a Text frame built from a printf format (no trailing NUL). Returns as wsc_sync_send. */
int wsc_sync_sendf(wsc_sync *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sends value as a Text frame of compact JSON. Returns as wsc_sync_send. */
int wsc_sync_send_json(wsc_sync *s, const json_t *value);

/* Sends value encoded as msgpack in a Binary frame (codec_json_to_msgpack()). */
int wsc_sync_send_msgpack(wsc_sync *s, const json_t *value);

/* Queues a message without waiting for it to be written (for pipelining). */
int wsc_sync_queue(wsc_sync *s, wsc_kind kind, const void *data, size_t len);

/* Services the connection for up to timeout_ms (sending queued messages, queueing received
 * ones). Returns 0, or -1 on a local failure. */
int wsc_sync_pump(wsc_sync *s, int timeout_ms);

/* Takes the next received message, waiting up to timeout_ms (0: what has arrived already or
 * arrives during one non-blocking service pass). Returns WSC_SYNC_OK with *out filled (caller
 * clears it), WSC_SYNC_TIMEOUT, WSC_SYNC_CLOSED or WSC_SYNC_ERROR. Messages that arrived before
 * a close stay readable after it. */
wsc_sync_status wsc_sync_recv(wsc_sync *s, int timeout_ms, wsc_msg *out);

/* Takes the next message and checks it: frame kind (WSC_ANY for either) and "type" field.
 * Returns the decoded message (a new reference), or NULL with err describing what came instead
 * (the message itself, a timeout, or the close code). The message is consumed either way, so
 * nothing is skipped silently. */
json_t *wsc_sync_expect(wsc_sync *s, wsc_kind kind, const char *type, int timeout_ms, char *err,
                        size_t errlen);

/* Waits up to timeout_ms for the connection to end, without consuming queued messages.
 * Returns 0 with the close code in *code (see on_close; on_error reports WSC_CLOSE_ABNORMAL),
 * or -1 on timeout. */
int wsc_sync_wait_close(wsc_sync *s, int timeout_ms, int *code);

/* Starts a close handshake with code and waits up to timeout_ms for it to finish. Returns 0 or
 * -1 (not open, or timeout). */
int wsc_sync_close(wsc_sync *s, int code, const char *reason, int timeout_ms);

/* Received messages not yet taken. */
size_t wsc_sync_pending(const wsc_sync *s);

/* True while the connection is open (the close has not been received). */
bool wsc_sync_is_open(const wsc_sync *s);

/* Text of the failure that ended the connection, "" if none. */
const char *wsc_sync_error(const wsc_sync *s);

/* The underlying connection (e.g. for wsc_conn_pause_rx() or wsc_conn_fd()). */
wsc_conn *wsc_sync_conn(wsc_sync *s);

#endif
