/**
 * @file harness.h
 * Integration test harness: real relay-node (and redis-server) processes on free loopback
 * ports, a raw HTTP/1.1 client, a raw WebSocket client for hand-made frames, token minting, and
 * assertion helpers over the wsc_sync client (include/relay/wsclient.h).
 *
 * Processes: every process the harness starts dies with the test process (PR_SET_PDEATHSIG),
 * and a small watchdog process prints the captured stderr of a node or redis whose test died
 * without tearing it down (a failed Check assertion _exit()s the test), so a failing test
 * shows the server's log under `ctest --output-on-failure`.
 *
 * Waits: everything waits on a condition with a deadline; nothing sleeps blindly. Helpers that
 * take a file/line report the caller's location through Check's ck_abort_msg().
 *
 * Environment: RELAY_NODE_BIN (path of relay-node, required by h_node_*), REDIS_SERVER_BIN
 * (default "redis-server").
 */
#ifndef RELAY_IT_HARNESS_H
#define RELAY_IT_HARNESS_H

#include <check.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "relay/wsclient.h"

/* Default deadline for anything the node should do promptly. */
#define H_WAIT_MS 5000
/* The HS256 secret every node started by the harness is given. */
#define H_SECRET "integration-secret-with-enough-entropy-0123456789"
/* Per-test time limit to pass to tcase_set_timeout(). */
#define H_TCASE_TIMEOUT 60

/* Reads a whole file into a malloc'd NUL-terminated string ("" if unreadable, NULL when out of
 * memory). */
char *h_read_file(const char *path);

/* Returns a TCP port on 127.0.0.1 that was free a moment ago, or -1. */
int h_free_port(void);

/* ---- relay-node ------------------------------------------------------------------------------ */

typedef struct h_node h_node;

/* Starts relay-node with `--port P --bind 127.0.0.1 --jwt-secret H_SECRET --node-id it-P
 * --log-level warn --drain-time 0` followed by the NULL-terminated extra arguments, and waits until
 * GET /healthz answers 200. Returns NULL with the reason (and the node's log) in err. */
h_node *h_node_try_start(char *err, size_t errlen, const char *arg, ...);
h_node *h_node_try_startv(const char *const *extra, char *err, size_t errlen);

/* As h_node_try_start, but fails the test when the node does not come up. */
#define h_node_start(...) h_node_start_at(__FILE__, __LINE__, __VA_ARGS__)
h_node *h_node_start_at(const char *file, int line, const char *arg, ...);

int h_node_port(const h_node *n);
pid_t h_node_pid(const h_node *n);

/* True while the process has not exited. */
bool h_node_alive(h_node *n);

/* Sends sig to the node. Returns 0 or -1. */
int h_node_signal(h_node *n, int sig);

/* Waits up to timeout_ms for the node to exit. Returns its exit status (0-255), 128+signal if a
 * signal ended it, or -1 on timeout. */
int h_node_wait_exit(h_node *n, int timeout_ms);

/* SIGTERM, then h_node_wait_exit(). */
int h_node_stop(h_node *n, int timeout_ms);

/* The node's captured stderr so far (malloc'd, NUL-terminated; "" if unreadable). */
char *h_node_log(const h_node *n);

/* Stops the node if still running (SIGTERM, SIGKILL after 5 s), reaps it, removes its log.
 * NULL is a no-op. */
void h_node_destroy(h_node *n);

/* Stops the node with SIGTERM and fails the test, showing the log, unless it exits 0 within
 * 10 s (so sanitizer and leak reports at exit fail the test); then destroys it. */
#define h_node_finish(n) h_node_finish_at(__FILE__, __LINE__, (n))
void h_node_finish_at(const char *file, int line, h_node *n);

/* Runs relay-node with exactly the given NULL-terminated arguments (no defaults added), waits
 * up to timeout_ms for it to exit and returns its exit status (-1 on timeout, after killing
 * it); its stderr+stdout are returned in *output (malloc'd) when output is not NULL. */
int h_run_node_cmd(int timeout_ms, char **output, const char *arg, ...);

/* ---- redis-server ------------------------------------------------------------------------- */

typedef struct h_redis h_redis;

/* Starts `redis-server --port P --bind 127.0.0.1 --save '' --appendonly no --daemonize no` and
 * waits until it answers PING. Returns NULL with the reason in err. */
h_redis *h_redis_try_start(char *err, size_t errlen);
int h_redis_port(const h_redis *r);
/* "redis://127.0.0.1:P" in a static buffer owned by r. */
const char *h_redis_url(const h_redis *r);
void h_redis_destroy(h_redis *r);

/* ---- Raw HTTP/1.1 ------------------------------------------------------------------------- */

typedef struct h_http {
    int status;
    char *headers; /* raw header block (after the status line), NUL-terminated */
    char *body;    /* NUL-terminated (not counted in body_len) */
    size_t body_len;
} h_http;

/* Sends `method path HTTP/1.1` to 127.0.0.1:port with Host, Connection: close and the extra
 * header lines (each ending in \r\n, or NULL), and reads the response (Content-Length,
 * chunked, or until close). Returns 0, or -1 on connect/timeout/parse failure. */
int h_http_request(int port, const char *method, const char *path, const char *extra_headers,
                   int timeout_ms, h_http *out);
int h_http_get(int port, const char *path, h_http *out);

/* Value of a response header (case-insensitive name) copied into buf; NULL if absent. */
const char *h_http_header(const h_http *r, const char *name, char *buf, size_t len);
void h_http_free(h_http *r);

/* ---- Raw WebSocket ------------------------------------------------------------------------ */

typedef struct h_raw h_raw;

typedef struct h_frame {
    int opcode; /* 0 continuation, 1 text, 2 binary, 8 close, 9 ping, 10 pong */
    bool fin;
    uint8_t *data; /* malloc'd, NUL-terminated (not counted in len) */
    size_t len;
} h_frame;

/* Connects and upgrades `target` (path and query) on 127.0.0.1:port with a blocking socket.
 * rcvbuf > 0 sets SO_RCVBUF before connecting (a small window makes a slow reader).
 * extra_headers as in h_http_request. Returns NULL with the reason in err (including the
 * HTTP status line if the upgrade was refused). */
h_raw *h_raw_connect(int port, const char *target, int rcvbuf, const char *extra_headers, char *err,
                     size_t errlen);

/* Writes one frame: fin bit, opcode, masked (clients must mask), payload. Returns 0 or -1. */
int h_raw_send_frame(h_raw *r, bool fin, int opcode, bool masked, const void *data, size_t len);

/* Writes a complete masked Text or Binary message. */
int h_raw_send_text(h_raw *r, const char *text);
int h_raw_send_binary(h_raw *r, const void *data, size_t len);

/* Writes raw bytes. Returns 0 or -1. */
int h_raw_send_bytes(h_raw *r, const void *data, size_t len);

/* Reads one frame within timeout_ms. Returns 0, -1 on timeout, -2 on EOF/error. */
int h_raw_read_frame(h_raw *r, int timeout_ms, h_frame *out);

/* Reads the next message: data frames are reassembled (opcode of the first frame), control
 * frames are returned as they come. Return values as h_raw_read_frame. */
int h_raw_read_msg(h_raw *r, int timeout_ms, h_frame *out);

/* Decodes a Text (JSON) or Binary (msgpack) message; NULL if it does not decode. */
json_t *h_frame_json(const h_frame *f);
void h_frame_free(h_frame *f);

/* Reads until a close frame or EOF within timeout_ms; *code is the close code, 1005 for a close
 * frame without one, 1006 for EOF without a close frame. Data messages read meanwhile are
 * counted in *skipped (may be NULL). Returns 0, or -1 on timeout. */
int h_raw_wait_close(h_raw *r, int timeout_ms, int *code, size_t *skipped);

int h_raw_fd(const h_raw *r);
void h_raw_close(h_raw *r);

/* ---- Tokens --------------------------------------------------------------------------------- */

/* HS256 token for sub (name may be NULL) expiring exp_in seconds from now, signed with
 * H_SECRET (token_mint_hs256). Caller frees. */
char *h_token(const char *sub, const char *name, int64_t exp_in);

/* HS256 token with exactly the given claims (a JSON object text) and secret. Caller frees. */
char *h_token_claims(const char *claims_json, const char *secret);

/* Unsigned token with header {"alg":"none","typ":"JWT"} and the given claims. Caller frees. */
char *h_token_alg_none(const char *claims_json);

/* ---- Assertion helpers over wsc_sync ----------------------------------------------------------
 */

/* Connects to /ws/documents/<doc> (opts may be NULL); fails the test on error. */
#define h_ws(n, doc)         h_ws_at(__FILE__, __LINE__, (n), (doc), NULL)
#define h_ws_opts(n, doc, o) h_ws_at(__FILE__, __LINE__, (n), (doc), (o))
wsc_sync *h_ws_at(const char *file, int line, const h_node *n, const char *doc,
                  const wsc_sync_opts *opts);

/* Sends a printf-built Text frame; fails the test if it cannot be sent. */
#define h_send(c, ...) h_send_at(__FILE__, __LINE__, (c), __VA_ARGS__)
void h_send_at(const char *file, int line, wsc_sync *c, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Sends raw bytes as one message of the given kind; fails the test on error. */
#define h_send_raw(c, k, d, l) h_send_raw_at(__FILE__, __LINE__, (c), (k), (d), (l))
void h_send_raw_at(const char *file, int line, wsc_sync *c, wsc_kind kind, const void *data,
                   size_t len);

/* The next message must be of kind (WSC_ANY: either) with this type, within H_WAIT_MS.
 * Returns it (caller decrefs). */
#define h_expect(c, k, t) h_expect_at(__FILE__, __LINE__, (c), (k), (t))
json_t *h_expect_at(const char *file, int line, wsc_sync *c, wsc_kind kind, const char *type);

/* The next message must be a Text error with this code; returns it (caller decrefs). */
#define h_expect_error(c, code) h_expect_error_at(__FILE__, __LINE__, (c), (code))
json_t *h_expect_error_at(const char *file, int line, wsc_sync *c, const char *code);

/* Nothing may arrive for ms milliseconds (absence can only be checked over a window). */
#define h_expect_quiet(c, ms) h_expect_quiet_at(__FILE__, __LINE__, (c), (ms))
void h_expect_quiet_at(const char *file, int line, wsc_sync *c, int ms);

/* The connection must close within H_WAIT_MS with nothing left unread; returns the code. */
#define h_expect_close(c) h_expect_close_at(__FILE__, __LINE__, (c))
int h_expect_close_at(const char *file, int line, wsc_sync *c);

/* Sends ping and expects pong: proves everything sent before was processed in order. */
#define h_roundtrip(c) h_roundtrip_at(__FILE__, __LINE__, (c))
void h_roundtrip_at(const char *file, int line, wsc_sync *c);

/* Authenticates as sub (name NULL: none) with a fresh token; expects success. Returns the
 * auth_result (caller decrefs). */
#define h_auth(c, sub)             h_auth_at(__FILE__, __LINE__, (c), (sub), NULL)
#define h_auth_named(c, sub, name) h_auth_at(__FILE__, __LINE__, (c), (sub), (name))
json_t *h_auth_at(const char *file, int line, wsc_sync *c, const char *sub, const char *name);

/* Sends join_document and expects joined_document; returns it (caller decrefs). */
#define h_join(c) h_join_at(__FILE__, __LINE__, (c))
json_t *h_join_at(const char *file, int line, wsc_sync *c);

/* Connect + authenticate as sub + join doc. */
#define h_joined(n, doc, sub) h_joined_at(__FILE__, __LINE__, (n), (doc), (sub))
wsc_sync *h_joined_at(const char *file, int line, const h_node *n, const char *doc,
                      const char *sub);

/* Field accessors that fail the test when the field is missing or of another type. */
#define h_str(o, k) h_str_at(__FILE__, __LINE__, (o), (k))
const char *h_str_at(const char *file, int line, const json_t *o, const char *key);
#define h_int(o, k) h_int_at(__FILE__, __LINE__, (o), (k))
json_int_t h_int_at(const char *file, int line, const json_t *o, const char *key);
#define h_bool(o, k) h_bool_at(__FILE__, __LINE__, (o), (k))
bool h_bool_at(const char *file, int line, const json_t *o, const char *key);
#define h_field(o, k) h_field_at(__FILE__, __LINE__, (o), (k))
json_t *h_field_at(const char *file, int line, const json_t *o, const char *key);

/* True when a and b are equal JSON values (integers and reals compared by value). */
bool h_json_equal(const json_t *a, const json_t *b);

/* Compact JSON text of v in a static rotating buffer, for failure messages. */
const char *h_dump(const json_t *v);

/* Fails the test with a message if cond is false (like ck_assert_msg at a caller's location). */
void h_check_at(const char *file, int line, bool cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Builds a suite runner and runs it: the common main() of every it_*.c file. */
int h_run_suite(Suite *s);

#endif
