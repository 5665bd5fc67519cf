/**
 * @file harness_cluster.h
 * Cluster additions to the integration harness (harness.h): a restartable redis-server with AOF
 * persistence, a haproxy in front of N nodes, a synchronous hiredis client for inspecting Redis,
 * cluster nodes, process RSS, and a buffering client (hc_client) for scenarios where broadcasts
 * from other nodes interleave with direct replies.
 *
 * Processes started here die with the test process (PR_SET_PDEATHSIG); when a test dies without
 * tearing one down, a watchdog kills it, prints its captured output and removes its files, as
 * harness.c does for nodes.
 *
 * Every helper whose name ends in _at takes the caller's file/line and fails the test there;
 * use the macros without the suffix.
 */
#ifndef RELAY_IT_HARNESS_CLUSTER_H
#define RELAY_IT_HARNESS_CLUSTER_H

#include <hiredis/hiredis.h>

#include "harness.h"

/* Per-test time limit for the cluster scenarios (they start several processes). */
#define HC_TCASE_TIMEOUT 120

/* ---- redis-server with persistence ------------------------------------------------------- */

typedef struct hc_redis hc_redis;

/* Starts redis-server on a free loopback port with its own fresh directory. With aof, the server
 * runs with `--appendonly yes --appendfsync always` so that it keeps every acknowledged write
 * across a SIGKILL; without, it persists nothing. Waits until it answers PING. */
#define hc_redis_start(aof) hc_redis_start_at(__FILE__, __LINE__, (aof))
hc_redis *hc_redis_start_at(const char *file, int line, bool aof);

int hc_redis_port(const hc_redis *r);
pid_t hc_redis_pid(const hc_redis *r);
/* "redis://127.0.0.1:P", owned by r. */
const char *hc_redis_url(const hc_redis *r);

/* Sends sig (SIGSTOP, SIGCONT, ...) to the running server. Returns 0 or -1. */
int hc_redis_signal(hc_redis *r, int sig);

/* SIGKILLs the server and reaps it (its files stay for a restart). */
void hc_redis_kill(hc_redis *r);

/* Starts the server again on the same port, after hc_redis_kill(): with keep_data in the same
 * directory (so an AOF server loads what it had), otherwise in a new empty directory. */
#define hc_redis_restart(r, keep) hc_redis_restart_at(__FILE__, __LINE__, (r), (keep))
void hc_redis_restart_at(const char *file, int line, hc_redis *r, bool keep_data);

/* Kills the server if running, removes its directories and log. NULL is a no-op. */
void hc_redis_destroy(hc_redis *r);

/* Runs one command on a fresh synchronous connection (2 s timeouts). Returns the reply (caller
 * frees with freeReplyObject) or NULL when the server cannot be reached or answered an error
 * reply (the error text goes to stderr). */
redisReply *hc_redis_cmd(const hc_redis *r, const char *fmt, ...);

/* The channels of `PUBSUB CHANNELS pattern` as a sorted JSON array of strings, or NULL when the
 * server cannot be reached. Caller decrefs. */
json_t *hc_redis_channels(const hc_redis *r, const char *pattern);

/* The keys of `KEYS pattern` as a sorted JSON array of strings, or NULL. Caller decrefs. */
json_t *hc_redis_keys(const hc_redis *r, const char *pattern);

/* ---- Cluster nodes --------------------------------------------------------------------------- */

/* Starts relay-node with `--redis url --node-id node_id` and the NULL-terminated extra arguments
 * (harness.h's h_node_start adds the rest), and waits until /readyz answers 200, i.e. the node's
 * Redis link is up. */
#define hc_node_start(url, id, ...) hc_node_start_at(__FILE__, __LINE__, (url), (id), __VA_ARGS__)
h_node *hc_node_start_at(const char *file, int line, const char *url, const char *node_id,
                         const char *arg, ...);

/* The scenarios' fixture: redis-server (with AOF when aof) and n <= 26 ready cluster nodes on
 * it, named "a", "b", ... in nodes[0..n). Fails the test when one does not come up. */
#define hc_cluster_start(aof, nodes, n) hc_cluster_start_at(__FILE__, __LINE__, (aof), (nodes), (n))
hc_redis *hc_cluster_start_at(const char *file, int line, bool aof, h_node **nodes, size_t n);

/* Destroys the nodes (NULL entries are skipped), then the server. */
void hc_cluster_destroy(hc_redis *r, h_node **nodes, size_t n);

/* Status of GET path on 127.0.0.1:port, or -1 when there was no answer within 1 s. */
int hc_http_status(int port, const char *path);

/* Polls GET path until it answers status, or timeout_ms passes. Returns true on success. */
bool hc_wait_http_status(int port, const char *path, int status, int timeout_ms);

/* GET path as JSON (status 200 required), or NULL. Caller decrefs. */
json_t *hc_http_json(int port, const char *path);

/* VmRSS of a process in KiB (from /proc/PID/status), or -1. */
long hc_rss_kb(pid_t pid);

/* The node's log as a malloc'd string cut to its last maxlen bytes, for failure messages. */
char *hc_node_log_tail(const h_node *n, size_t maxlen);

/* Runs the NULL-terminated argv (argv[0] looked up in PATH) with stdin from /dev/null, waits up
 * to timeout_ms for it to exit and returns its exit status (-1 on timeout, after SIGKILL, or when
 * it cannot start). Its stdout is returned in *out (malloc'd) when out is not NULL; its stderr is
 * passed through. */
int hc_run(int timeout_ms, char **out, const char *const *argv);

/* ---- haproxy -----------------------------------------------------------------------------------
 */

typedef struct hc_haproxy hc_haproxy;

/* Writes the haproxy configuration every scenario uses: 127.0.0.1:port in front of the servers
 * 127.0.0.1:node_ports[0..n), http mode, balance roundrobin, `option httpchk GET /readyz` every
 * 200 ms with fall 1 rise 1, `timeout tunnel 1h`, redispatch of failed connections, and an
 * X-Relay-Server response header naming the server that answered (n0, n1, ...). 0 or -1. */
int hc_haproxy_write_cfg(const char *path, int port, const int *node_ports, size_t n);

/* Starts `haproxy -f cfg -db` on a free port in front of the n nodes (hc_haproxy_write_cfg).
 * Waits until the proxy passes GET /readyz through (answers 200). */
#define hc_haproxy_start(nodes, n) hc_haproxy_start_at(__FILE__, __LINE__, (nodes), (n))
hc_haproxy *hc_haproxy_start_at(const char *file, int line, h_node *const *nodes, size_t n);
int hc_haproxy_port(const hc_haproxy *p);
/* Kills haproxy and removes its files. NULL is a no-op. */
void hc_haproxy_destroy(hc_haproxy *p);

/* ---- Buffering client --------------------------------------------------------------------- */

/* A WebSocket client that files every message it receives: `operation` broadcasts are appended
 * to ops (in arrival order, never consumed), everything else to inbox, from which hc_take()
 * removes the first message of a type. So a test can wait for an ack while broadcasts from
 * other nodes keep arriving, and still check the full order of the operations it saw. */
typedef struct hc_client {
    wsc_sync *ws;
    char doc[129];
    int port;
    json_t *auth;  /* the latest successful auth_result, or NULL */
    json_t *ops;   /* array: operation broadcasts received */
    json_t *inbox; /* array: every other message not yet taken */
    json_t *seen;  /* array: every message but operations (never consumed), for absence checks */
    bool closed;
} hc_client;

/* Connects to /ws/documents/doc on 127.0.0.1:port. */
#define hc_connect(port, doc) hc_connect_at(__FILE__, __LINE__, (port), (doc))
hc_client *hc_connect_at(const char *file, int line, int port, const char *doc);

/* Authenticates as sub with a fresh token; expects success and keeps the auth_result. */
#define hc_auth(c, sub) hc_auth_at(__FILE__, __LINE__, (c), (sub))
void hc_auth_at(const char *file, int line, hc_client *c, const char *sub);

/* Sends join_document; expects joined_document and returns it (caller decrefs). */
#define hc_join(c) hc_join_at(__FILE__, __LINE__, (c))
json_t *hc_join_at(const char *file, int line, hc_client *c);

/* Connect + authenticate as sub + join. The joined_document reply is dropped. */
#define hc_joined(port, doc, sub) hc_joined_at(__FILE__, __LINE__, (port), (doc), (sub))
hc_client *hc_joined_at(const char *file, int line, int port, const char *doc, const char *sub);

/* Reads whatever arrives within timeout_ms (at least one pass) and files it. Returns the number
 * of messages filed, or -1 once the connection is closed and drained. */
int hc_pump(hc_client *c, int timeout_ms);

/* Removes and returns the first inbox message of this type, waiting up to timeout_ms; NULL on
 * timeout or close. Caller decrefs. */
json_t *hc_take(hc_client *c, const char *type, int timeout_ms);

/* As hc_take, failing the test on timeout with what did arrive. */
#define hc_expect(c, type)            hc_expect_at(__FILE__, __LINE__, (c), (type), H_WAIT_MS)
#define hc_expect_within(c, type, ms) hc_expect_at(__FILE__, __LINE__, (c), (type), (ms))
json_t *hc_expect_at(const char *file, int line, hc_client *c, const char *type, int timeout_ms);

/* Removes and returns the first ack or error whose ref is the string ref, waiting up to
 * timeout_ms; NULL on timeout. Caller decrefs. */
json_t *hc_take_reply(hc_client *c, const char *ref, int timeout_ms);

/* Sends {"type":"operation","ref":ref,"payload":payload_json}. Fails the test if it cannot. */
#define hc_send_op(c, ref, payload) hc_send_op_at(__FILE__, __LINE__, (c), (ref), (payload))
void hc_send_op_at(const char *file, int line, hc_client *c, const char *ref,
                   const char *payload_json);

/* Sends an operation and expects its ack; returns ack.seq. */
#define hc_op_acked(c, ref, payload) hc_op_acked_at(__FILE__, __LINE__, (c), (ref), (payload))
json_int_t hc_op_acked_at(const char *file, int line, hc_client *c, const char *ref,
                          const char *payload_json);

/* Waits until c has received at least count operation broadcasts. Returns true on success. */
bool hc_wait_ops(hc_client *c, size_t count, int timeout_ms);

/* Sends sync_request {since, ref} and collects every page (has_more) into one array of
 * operations; fails the test on an error reply. *epoch (may be NULL) receives the epoch of the
 * last page (caller frees). Returns the operations (caller decrefs). */
#define hc_sync(c, since, epoch) hc_sync_at(__FILE__, __LINE__, (c), (since), (epoch))
json_t *hc_sync_at(const char *file, int line, hc_client *c, json_int_t since, char **epoch);

/* Number of messages of this type in c->seen whose field key equals the string value (key NULL:
 * all of that type). */
size_t hc_count_seen(const hc_client *c, const char *type, const char *key, const char *value);

/* Text of the last few messages seen, for failure messages (static rotating buffer). */
const char *hc_recent(const hc_client *c);

void hc_client_destroy(hc_client *c);

#endif
