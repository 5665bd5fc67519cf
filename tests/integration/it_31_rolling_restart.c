/*
 * 31 rolling restart: three cluster nodes (drain delay 0, drain time 1 s) behind haproxy (round
 * robin, health check on /readyz every 200 ms). Six clients join one document through the proxy
 * and keep sending operations, each with a unique ref, while every node in turn gets SIGTERM
 * (it must exit 0) and is started again on the same port with the same node id.
 *
 * A client closed with 1001 does what docs/PROTOCOL.md section 8 tells it to: reconnects through
 * the proxy, resumes with session_id + resume_token (the same session_id comes back), joins,
 * asks sync_request from the last seq it has, and resends every operation it sent but saw no ack
 * for, with the same ref. A client applies each seq once, whether it came live or by sync.
 *
 * At the end: every client resumed, every restart made some client resume; the history read
 * back from seq 0 is 1..N without gaps and holds every acknowledged operation exactly once, at
 * the seq of its ack; nothing else is in it; every client holds exactly that history; no client
 * got an operation live twice or got its own operation back.
 */
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness_cluster.h"
#include "harness_deploy.h"
#include "relay/clock.h"

#define N_NODES       3
#define N_CLIENTS     6
#define DOC           "it31-rolling"
#define SEND_EVERY_MS 20 /* per client: ~300 operations/s in all */
#define MAX_INFLIGHT  8  /* unacknowledged operations per client */
#define MAX_OPS       2000
#define MAX_SEQ       (N_CLIENTS * MAX_OPS + 1)
#define REF_LEN       16
#define BUDGET_MS     90000
#define EXIT_MS       10000 /* SIGTERM to exit: drain time 1 s plus leaving the cluster */
#define SETTLE_MS     1000  /* steady sending between restarts */

typedef enum { C_CONNECTING, C_AUTHING, C_JOINING, C_JOINED } client_state;

typedef struct op {
    char ref[REF_LEN];
    json_int_t seq; /* 0 until acknowledged */
    int sends;
} op;

typedef struct client {
    int idx;
    char sub[16];
    wsc_sync *ws;
    client_state st;
    char sid[128], resume_token[512];
    op ops[MAX_OPS];
    size_t n_ops, n_acked;
    char (*seen)[REF_LEN]; /* seq -> ref of the operation the client holds at that seq */
    unsigned char *live;   /* seq -> times received as a live broadcast */
    json_int_t contig;     /* every seq up to here is held */
    json_int_t conn_live;  /* last live seq on the current connection */
    bool syncing;          /* a sync_request (page) is outstanding */
    char sync_ref[32];
    unsigned sync_serial;
    int64_t next_send_ms, next_connect_ms, down_since_ms;
    json_int_t join_seq; /* the document's seq when the client last joined */
    int resumes, closes, connect_failures, resent, deduped, restart_of_close;
} client;

/* Test-wide state: the proxy port, the acks seen by seq, per-restart counts. */
static int pport;
static char (*acked_by_seq)[REF_LEN];
static int restart_closes[N_NODES], restart_resumes[N_NODES];
static int restarting = -1; /* the restart (node index) in progress, -1 before the first */
static bool sending = true;

static const char *const node_ids[N_NODES] = {"r1", "r2", "r3"};
static const char *const node_extra[] = {
    "--drain-delay", "0", "--drain-time", "1", "--rate-limit", "10000", "--rate-burst",
    "20000",         NULL};

static void client_send(client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Sends a message; a failure means the connection is going away, which the next receive
 * reports, so it is not an error here. */
static void client_send(client *c, const char *fmt, ...)
{
    char buf[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    wsc_sync_send(c->ws, WSC_TEXT, buf, strlen(buf));
}

static void client_send_op(client *c, op *o)
{
    o->sends++;
    client_send(c, "{\"type\":\"operation\",\"ref\":\"%s\",\"payload\":{\"ref\":\"%s\",\"c\":%d}}",
                o->ref, o->ref, c->idx);
}

static void client_sync(client *c)
{
    snprintf(c->sync_ref, sizeof c->sync_ref, "s%d-%u", c->idx, c->sync_serial++);
    c->syncing = true;
    client_send(c, "{\"type\":\"sync_request\",\"since\":%lld,\"ref\":\"%s\"}",
                (long long)c->contig, c->sync_ref);
}

/* The client now holds ref at seq (from an ack, a broadcast or a sync); how names the source. */
static void client_hold(client *c, json_int_t seq, const char *ref, const char *how)
{
    ck_assert_msg(seq >= 1 && seq < MAX_SEQ, "client %d: seq %lld out of range (%s)", c->idx,
                  (long long)seq, how);
    ck_assert_msg(ref && strlen(ref) < REF_LEN, "client %d: seq %lld without a payload ref (%s)",
                  c->idx, (long long)seq, how);
    if (c->seen[seq][0])
        ck_assert_msg(!strcmp(c->seen[seq], ref),
                      "client %d holds seq %lld as %s, and now %s says it is %s", c->idx,
                      (long long)seq, c->seen[seq], how, ref);
    else
        snprintf(c->seen[seq], REF_LEN, "%s", ref);
    while (c->contig + 1 < MAX_SEQ && c->seen[c->contig + 1][0])
        c->contig++;
}

static op *client_op(client *c, const char *ref)
{
    for (size_t i = 0; ref && i < c->n_ops; i++)
        if (!strcmp(c->ops[i].ref, ref))
            return &c->ops[i];
    return NULL;
}

static void on_ack(client *c, json_t *m)
{
    const char *ref = json_string_value(json_object_get(m, "ref"));
    op *o = client_op(c, ref);
    ck_assert_msg(o != NULL, "client %d: ack for an unknown ref: %s", c->idx, h_dump(m));
    json_int_t seq = h_int(m, "seq");
    if (o->seq) {
        ck_assert_msg(o->seq == seq, "client %d: %s acked as %lld, then as %lld", c->idx, ref,
                      (long long)o->seq, (long long)seq);
        return;
    }
    ck_assert_msg(seq >= 1 && seq < MAX_SEQ, "ack seq out of range: %s", h_dump(m));
    ck_assert_msg(!acked_by_seq[seq][0], "seq %lld acked for both %s and %s", (long long)seq,
                  acked_by_seq[seq], ref);
    snprintf(acked_by_seq[seq], REF_LEN, "%s", ref);
    o->seq = seq;
    c->n_acked++;
    /* A resent operation acked at or below the seq the client joined at had been applied
     * before the resume: the node answered with the original ack instead of a second copy. */
    if (o->sends > 1 && seq <= c->join_seq)
        c->deduped++;
    client_hold(c, seq, ref, "ack");
}

static void on_operation(client *c, json_t *m)
{
    json_int_t seq = h_int(m, "seq");
    ck_assert_msg(strcmp(h_str(m, "session_id"), c->sid) != 0,
                  "client %d got its own operation back: %s", c->idx, h_dump(m));
    ck_assert_msg(seq > c->conn_live, "client %d: live seq %lld after %lld on one connection",
                  c->idx, (long long)seq, (long long)c->conn_live);
    c->conn_live = seq;
    client_hold(c, seq, json_string_value(json_object_get(h_field(m, "payload"), "ref")), "live");
    ck_assert_msg(++c->live[seq] == 1, "client %d got seq %lld live %d times", c->idx,
                  (long long)seq, c->live[seq]);
}

static void on_sync_response(client *c, json_t *m)
{
    ck_assert_msg(c->syncing && !strcmp(h_str(m, "ref"), c->sync_ref),
                  "client %d: unexpected sync_response %s", c->idx, h_dump(m));
    ck_assert_msg(json_is_true(json_object_get(m, "complete")), "history incomplete: %s",
                  h_dump(m));
    json_t *ops = h_field(m, "operations");
    for (size_t i = 0; i < json_array_size(ops); i++) {
        json_t *o = json_array_get(ops, i);
        const char *ref = json_string_value(json_object_get(h_field(o, "payload"), "ref"));
        client_hold(c, h_int(o, "seq"), ref, "sync");
    }
    c->syncing = false;
    if (h_bool(m, "has_more"))
        client_sync(c); /* from the new contig, which the page just advanced */
}

static void on_auth_result(client *c, json_t *m)
{
    ck_assert_msg(c->st == C_AUTHING, "client %d: auth_result in state %d", c->idx, c->st);
    ck_assert_msg(json_is_true(json_object_get(m, "success")), "client %d: %s failed: %s", c->idx,
                  c->sid[0] ? "resume" : "authenticate", h_dump(m));
    if (c->sid[0]) {
        ck_assert_msg(!strcmp(h_str(m, "session_id"), c->sid),
                      "client %d resumed %s but got session %s", c->idx, c->sid,
                      h_str(m, "session_id"));
        c->resumes++;
        restart_resumes[c->restart_of_close]++;
    }
    snprintf(c->sid, sizeof c->sid, "%s", h_str(m, "session_id"));
    snprintf(c->resume_token, sizeof c->resume_token, "%s", h_str(m, "resume_token"));
    client_send(c, "{\"type\":\"join_document\"}");
    c->st = C_JOINING;
}

/* Joined again: ask for what was missed, then resend what was never acknowledged. */
static void on_joined(client *c, json_t *m)
{
    ck_assert_msg(c->st == C_JOINING, "client %d: joined_document in state %d", c->idx, c->st);
    c->st = C_JOINED;
    c->join_seq = h_int(m, "seq");
    client_sync(c);
    for (size_t i = 0; i < c->n_ops; i++)
        if (!c->ops[i].seq) {
            client_send_op(c, &c->ops[i]);
            c->resent++;
        }
    c->next_send_ms = clock_mono_ms();
}

static void client_on_message(client *c, json_t *m)
{
    const char *type = h_str(m, "type");
    if (!strcmp(type, "ack"))
        on_ack(c, m);
    else if (!strcmp(type, "operation"))
        on_operation(c, m);
    else if (!strcmp(type, "sync_response"))
        on_sync_response(c, m);
    else if (!strcmp(type, "auth_result"))
        on_auth_result(c, m);
    else if (!strcmp(type, "joined_document"))
        on_joined(c, m);
    else if (!strcmp(type, "lagged")) {
        if (!c->syncing)
            client_sync(c);
    } else if (strcmp(type, "user_joined") && strcmp(type, "user_left") && strcmp(type, "cursor"))
        ck_abort_msg("client %d (state %d) got %s", c->idx, c->st, h_dump(m));
}

static void client_on_close(client *c)
{
    int code = -1;
    wsc_sync_wait_close(c->ws, 0, &code);
    ck_assert_msg(restarting >= 0, "client %d closed (code %d, %s) before any restart", c->idx,
                  code, wsc_sync_error(c->ws));
    ck_assert_msg(code == 1001, "client %d closed with %d during restart of %s, expected 1001 (%s)",
                  c->idx, code, node_ids[restarting], wsc_sync_error(c->ws));
    ck_assert_msg(c->sid[0], "client %d closed before it authenticated", c->idx);
    wsc_sync_destroy(c->ws);
    c->ws = NULL;
    c->closes++;
    c->restart_of_close = restarting;
    restart_closes[restarting]++;
    c->st = C_CONNECTING;
    c->next_connect_ms = c->down_since_ms = clock_mono_ms();
}

static void client_connect(client *c)
{
    char path[64], err[512];
    snprintf(path, sizeof path, "/ws/documents/%s", DOC);
    c->ws = wsc_sync_connect("127.0.0.1", pport, path, NULL, 2000, err, sizeof err);
    if (!c->ws) {
        /* A draining node refuses upgrades (503) until the proxy's check takes it out. */
        c->connect_failures++;
        c->next_connect_ms = clock_mono_ms() + 50;
        ck_assert_msg(clock_mono_ms() - c->down_since_ms < 10000,
                      "client %d could not reconnect for 10 s: %s", c->idx, err);
        return;
    }
    c->conn_live = 0;
    c->st = C_AUTHING;
    if (c->sid[0]) {
        client_send(c, "{\"type\":\"authenticate\",\"session_id\":\"%s\",\"resume_token\":\"%s\"}",
                    c->sid, c->resume_token);
    } else {
        char *tok = h_token(c->sub, NULL, 3600);
        client_send(c, "{\"type\":\"authenticate\",\"token\":\"%s\"}", tok);
        free(tok);
    }
}

/* One non-blocking step: connect if due, handle what arrived, send the next operation if due. */
static void client_step(client *c, int64_t now)
{
    if (c->st == C_CONNECTING) {
        if (now >= c->next_connect_ms)
            client_connect(c);
        return;
    }
    for (;;) {
        wsc_msg m;
        wsc_sync_status st = wsc_sync_recv(c->ws, 0, &m);
        if (st == WSC_SYNC_TIMEOUT)
            break;
        if (st != WSC_SYNC_OK) {
            client_on_close(c);
            return;
        }
        ck_assert_msg(m.json != NULL, "client %d: undecodable message: %s", c->idx, m.decode_err);
        client_on_message(c, m.json);
        wsc_msg_clear(&m);
    }
    if (c->st != C_JOINED || !sending || now < c->next_send_ms ||
        c->n_ops - c->n_acked >= MAX_INFLIGHT)
        return;
    ck_assert_msg(c->n_ops < MAX_OPS, "client %d ran out of operation slots", c->idx);
    op *o = &c->ops[c->n_ops++];
    snprintf(o->ref, sizeof o->ref, "c%d-%zu", c->idx, c->n_ops);
    client_send_op(c, o);
    c->next_send_ms = now + SEND_EVERY_MS;
}

/* Waits up to ms for any client socket to become readable. */
static void wait_any(client *cs, int ms)
{
    struct pollfd pfd[N_CLIENTS];
    nfds_t n = 0;
    for (int i = 0; i < N_CLIENTS; i++) {
        int fd = cs[i].ws ? wsc_conn_fd(wsc_sync_conn(cs[i].ws)) : -1;
        if (fd >= 0)
            pfd[n++] = (struct pollfd){.fd = fd, .events = POLLIN};
    }
    poll(pfd, n, ms);
}

static bool all_settled(const client *cs)
{
    for (int i = 0; i < N_CLIENTS; i++)
        if (cs[i].st != C_JOINED || cs[i].syncing)
            return false;
    return true;
}

/* Runs every client for ms milliseconds, failing the test past the overall deadline. */
static void run_clients(client *cs, int ms, int64_t test_deadline)
{
    int64_t until = clock_mono_ms() + ms;
    do {
        wait_any(cs, 5);
        int64_t now = clock_mono_ms();
        for (int i = 0; i < N_CLIENTS; i++)
            client_step(&cs[i], now);
        ck_assert_msg(now < test_deadline, "the rolling restart took over %d s", BUDGET_MS / 1000);
    } while (clock_mono_ms() < until);
}

/* Runs the clients until cond holds, or fails with what after timeout_ms. */
static void run_until(client *cs, bool (*cond)(const client *), int timeout_ms, const char *what,
                      int64_t test_deadline)
{
    int64_t until = clock_mono_ms() + timeout_ms;
    while (!cond(cs)) {
        ck_assert_msg(clock_mono_ms() < until, "%s did not happen within %d ms", what, timeout_ms);
        run_clients(cs, 0, test_deadline);
    }
}

static size_t settle_target[N_CLIENTS];

/* Every client is joined, synced, and acknowledged two more operations since settle began. */
static bool settled_and_sending(const client *cs)
{
    for (int i = 0; i < N_CLIENTS; i++)
        if (cs[i].n_acked < settle_target[i])
            return false;
    return all_settled(cs);
}

static bool all_acked(const client *cs)
{
    for (int i = 0; i < N_CLIENTS; i++)
        if (cs[i].n_acked != cs[i].n_ops)
            return false;
    return all_settled(cs);
}

static json_int_t final_seq;

static bool all_hold_everything(const client *cs)
{
    for (int i = 0; i < N_CLIENTS; i++)
        if (cs[i].contig < final_seq)
            return false;
    return true;
}

static hp_proc *start_node(int i, int port, const char *redis_url)
{
    char err[2048];
    hp_proc *n = hd_node_start(port, node_ids[i], redis_url, node_extra, err, sizeof err);
    ck_assert_msg(n != NULL, "cannot start %s: %s", node_ids[i], err);
    return n;
}

/* Steady sending until every client has two more acks and SETTLE_MS passed. */
static void settle(client *cs, int64_t test_deadline)
{
    for (int i = 0; i < N_CLIENTS; i++)
        settle_target[i] = cs[i].n_acked + 2;
    run_clients(cs, SETTLE_MS, test_deadline);
    run_until(cs, settled_and_sending, 15000, "every client joined and sending", test_deadline);
}

/* SIGTERM to node i, which must exit 0 while the clients go on; then the same port and id
 * again, until /readyz answers. */
static hp_proc *restart_node(client *cs, hp_proc *node, int i, int port, const char *redis_url,
                             int64_t test_deadline)
{
    restarting = i;
    ck_assert_int_eq(hp_signal(node, SIGTERM), 0);
    int64_t until = clock_mono_ms() + EXIT_MS;
    int status;
    while ((status = hp_wait(node, 0)) < 0) {
        if (clock_mono_ms() > until) {
            char *log = hp_log(node, 3000);
            ck_abort_msg("%s did not exit within %d ms of SIGTERM; log:\n%s", node_ids[i], EXIT_MS,
                         log);
        }
        run_clients(cs, 0, test_deadline);
    }
    if (status != 0) {
        char *log = hp_log(node, 3000);
        ck_abort_msg("%s exited with status %d after SIGTERM, expected 0; log:\n%s", node_ids[i],
                     status, log);
    }
    hp_destroy(node);
    hp_proc *fresh = start_node(i, port, redis_url);
    until = clock_mono_ms() + 10000;
    while (hc_http_status(port, "/readyz") != 200) {
        if (clock_mono_ms() > until || !hp_alive(fresh)) {
            char *log = hp_log(fresh, 3000);
            ck_abort_msg("restarted %s not ready within 10 s; log:\n%s", node_ids[i], log);
        }
        run_clients(cs, 20, test_deadline);
    }
    return fresh;
}

/* The document's whole history, read by a fresh client straight from a node. */
static json_t *read_history(int node_port)
{
    hc_client *aud = hc_joined(node_port, DOC, "auditor");
    json_t *ops = hc_sync(aud, 0, NULL);
    hc_client_destroy(aud);
    return ops;
}

/* The history is 1..N, each acknowledged operation exactly once at the seq of its ack. */
static json_int_t check_history(const json_t *hist, const client *cs)
{
    json_int_t n = (json_int_t)json_array_size(hist);
    size_t total_acked = 0;
    for (int i = 0; i < N_CLIENTS; i++)
        total_acked += cs[i].n_acked;
    for (json_int_t s = 1; s <= n; s++) {
        json_t *o = json_array_get(hist, (size_t)(s - 1));
        ck_assert_msg(h_int(o, "seq") == s, "history position %lld holds seq %lld", (long long)s,
                      (long long)h_int(o, "seq"));
        const char *ref = json_string_value(json_object_get(h_field(o, "payload"), "ref"));
        ck_assert_msg(ref && acked_by_seq[s][0] && !strcmp(ref, acked_by_seq[s]),
                      "history seq %lld is %s but the ack for that seq named %s (duplicate or "
                      "unacknowledged operation)",
                      (long long)s, ref ? ref : "(none)", acked_by_seq[s]);
    }
    ck_assert_msg((size_t)n == total_acked,
                  "history holds %lld operations, %zu were acknowledged (lost ones)", (long long)n,
                  total_acked);
    return n;
}

START_TEST(rolling_restart_loses_and_duplicates_nothing)
{
    int64_t test_deadline = clock_mono_ms() + BUDGET_MS;
    acked_by_seq = calloc(MAX_SEQ, sizeof *acked_by_seq);
    client *cs = calloc(N_CLIENTS, sizeof *cs);
    ck_assert(acked_by_seq && cs);
    hc_redis *redis = hc_redis_start(false);
    int base = hd_free_port_block(N_NODES + 1, NULL, 0);
    ck_assert_int_gt(base, 0);
    int ports[N_NODES];
    hp_proc *nodes[N_NODES];
    for (int i = 0; i < N_NODES; i++) {
        ports[i] = base + 1 + i;
        nodes[i] = start_node(i, ports[i], hc_redis_url(redis));
    }
    for (int i = 0; i < N_NODES; i++)
        ck_assert_msg(hd_wait_status(ports[i], "/readyz", 200, 10000), "%s not ready", node_ids[i]);
    char err[2048];
    pport = base;
    hp_proc *proxy = hd_haproxy_start(pport, ports, N_NODES, err, sizeof err);
    ck_assert_msg(proxy != NULL, "%s", err);

    for (int i = 0; i < N_CLIENTS; i++) {
        cs[i].idx = i;
        snprintf(cs[i].sub, sizeof cs[i].sub, "user%d", i);
        cs[i].seen = calloc(MAX_SEQ, sizeof *cs[i].seen);
        cs[i].live = calloc(MAX_SEQ, 1);
        ck_assert(cs[i].seen && cs[i].live);
        cs[i].down_since_ms = clock_mono_ms();
    }
    /* Warm-up: everyone joined and sending before the first restart. */
    settle(cs, test_deadline);
    for (int i = 0; i < N_NODES; i++) {
        nodes[i] = restart_node(cs, nodes[i], i, ports[i], hc_redis_url(redis), test_deadline);
        settle(cs, test_deadline);
    }

    /* Stop sending; everything sent must be acknowledged. */
    sending = false;
    run_until(cs, all_acked, 15000, "every operation acknowledged", test_deadline);
    json_t *hist = read_history(ports[0]);
    final_seq = check_history(hist, cs);
    run_until(cs, all_hold_everything, 10000, "every client holding the whole history",
              test_deadline);
    int total_resent = 0, total_deduped = 0;
    for (int i = 0; i < N_CLIENTS; i++) {
        client *c = &cs[i];
        for (json_int_t s = 1; s <= final_seq; s++)
            ck_assert_msg(!strcmp(c->seen[s], acked_by_seq[s]),
                          "client %d holds %s at seq %lld, the history %s", i, c->seen[s],
                          (long long)s, acked_by_seq[s]);
        ck_assert_msg(!c->seen[final_seq + 1][0], "client %d holds seq %lld past the end", i,
                      (long long)final_seq + 1);
        ck_assert_msg(c->resumes >= 1, "client %d never resumed", i);
        ck_assert_int_eq(c->resumes, c->closes);
        total_resent += c->resent;
        total_deduped += c->deduped;
        fprintf(stderr,
                "client %d: %zu ops, %d closes, %d resumes, %d resent (%d applied before), %d "
                "failed connects\n",
                i, c->n_ops, c->closes, c->resumes, c->resent, c->deduped, c->connect_failures);
    }
    for (int i = 0; i < N_NODES; i++) {
        fprintf(stderr, "restart of %s: %d clients closed, %d resumed\n", node_ids[i],
                restart_closes[i], restart_resumes[i]);
        ck_assert_msg(restart_resumes[i] >= 1, "no client resumed after %s restarted", node_ids[i]);
    }
    fprintf(stderr,
            "%lld operations in the history, %d resent after a resume, %d of them had been "
            "applied before (answered from the dedup window)\n",
            (long long)final_seq, total_resent, total_deduped);

    for (int i = 0; i < N_CLIENTS; i++) {
        wsc_sync_destroy(cs[i].ws);
        free(cs[i].seen);
        free(cs[i].live);
    }
    for (int i = 0; i < N_NODES; i++) {
        ck_assert_int_eq(hp_signal(nodes[i], SIGTERM), 0);
        ck_assert_int_eq(hp_wait(nodes[i], EXIT_MS), 0);
        hp_destroy(nodes[i]);
    }
    json_decref(hist);
    hp_destroy(proxy);
    hc_redis_destroy(redis);
    free(cs);
    free(acked_by_seq);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("31_rolling_restart");
    TCase *tc = tcase_create("rolling_restart");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, rolling_restart_loses_and_duplicates_nothing);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
