/*
 * 00 client: the WebSocket client library itself (include/relay/wsclient.h) against a real
 * node - many connections on one event loop as relay-bench will run them, source address
 * binding, failure reporting, cross-thread wake-up, destroying from callbacks, the receive cap,
 * and messages over 1 MiB in both directions.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "relay/clock.h"
#include "relay/codec.h"

static h_node *node;

static void setup(void)
{
    node = h_node_start("--rate-limit", "100000", "--rate-burst", "100000", NULL);
}

static void teardown(void)
{
    h_node_finish(node);
    node = NULL;
}

/* Per-connection state of the event-driven test clients. */
typedef struct peer {
    int index;
    bool opened, authed, joined, closed, errored;
    int close_code;
    int ops_received;
    int acks;
    char error[256];
} peer;

static void peer_open(wsc_conn *c, void *user)
{
    peer *p = user;
    p->opened = true;
    char sub[32];
    snprintf(sub, sizeof(sub), "user%d", p->index);
    char *tok = h_token(sub, NULL, 3600);
    char msg[1024];
    int n = snprintf(msg, sizeof(msg), "{\"type\":\"authenticate\",\"token\":\"%s\"}", tok);
    free(tok);
    wsc_conn_send(c, WSC_TEXT, msg, (size_t)n);
    wsc_conn_send(c, WSC_TEXT, "{\"type\":\"join_document\"}", 24);
}

static void peer_message(wsc_conn *c, void *user, wsc_kind kind, const uint8_t *data, size_t len)
{
    (void)c;
    peer *p = user;
    json_t *v = NULL;
    char err[128];
    if (kind == WSC_TEXT)
        v = json_loadb((const char *)data, len, 0, NULL);
    else
        v = codec_msgpack_to_json(data, len, err, sizeof(err));
    const char *type = json_string_value(json_object_get(v, "type"));
    if (!type)
        snprintf(p->error, sizeof(p->error), "undecodable message");
    else if (strcmp(type, "auth_result") == 0)
        p->authed = json_is_true(json_object_get(v, "success"));
    else if (strcmp(type, "joined_document") == 0)
        p->joined = true;
    else if (strcmp(type, "operation") == 0)
        p->ops_received++;
    else if (strcmp(type, "ack") == 0)
        p->acks++;
    json_decref(v);
}

static void peer_close(wsc_conn *c, void *user, int code, const char *reason, size_t rlen)
{
    (void)c;
    (void)reason;
    (void)rlen;
    peer *p = user;
    p->closed = true;
    p->close_code = code;
}

static void peer_error(wsc_conn *c, void *user, const char *text)
{
    (void)c;
    peer *p = user;
    p->errored = true;
    snprintf(p->error, sizeof(p->error), "%s", text);
}

static const wsc_callbacks peer_cbs = {peer_open, peer_message, peer_close, peer_error};

/* Runs loop until pred(peers, n) or the deadline; returns pred's last value. */
static bool run_until(wsc_loop *loop, peer *peers, int n, bool (*pred)(peer *, int), int ms)
{
    int64_t deadline = clock_mono_ms() + ms;
    while (!pred(peers, n) && clock_mono_ms() < deadline)
        ck_assert_int_eq(wsc_loop_run(loop, 50), 0);
    return pred(peers, n);
}

static bool all_joined(peer *p, int n)
{
    for (int i = 0; i < n; i++)
        if (!p[i].joined)
            return false;
    return true;
}

static bool others_got_op(peer *p, int n)
{
    if (p[0].acks != 1)
        return false;
    for (int i = 1; i < n; i++)
        if (p[i].ops_received != 1)
            return false;
    return true;
}

static bool all_closed(peer *p, int n)
{
    for (int i = 0; i < n; i++)
        if (!p[i].closed && !p[i].errored)
            return false;
    return true;
}

START_TEST(many_connections_on_one_loop)
{
    enum { N = 100 };
    char err[256];
    wsc_loop *loop = wsc_loop_create(err, sizeof(err));
    ck_assert_msg(loop != NULL, "%s", err);
    static peer peers[N];
    wsc_conn *conns[N];
    memset(peers, 0, sizeof(peers));
    wsc_conn_opts o = {0};
    o.host = "127.0.0.1";
    o.port = h_node_port(node);
    o.path = "/ws/documents/bench";
    for (int i = 0; i < N; i++) {
        peers[i].index = i;
        conns[i] = wsc_connect(loop, &o, &peer_cbs, &peers[i]);
        ck_assert_ptr_nonnull(conns[i]);
    }
    ck_assert_uint_eq(wsc_loop_conn_count(loop), N);
    ck_assert_msg(run_until(loop, peers, N, all_joined, 10000), "not all joined");
    for (int i = 0; i < N; i++) {
        ck_assert_msg(peers[i].authed, "peer %d: %s", i, peers[i].error);
        ck_assert(wsc_conn_is_open(conns[i]));
    }
    const char *op = "{\"type\":\"operation\",\"payload\":{\"t\":1}}";
    ck_assert_int_eq(wsc_conn_send(conns[0], WSC_TEXT, op, strlen(op)), 0);
    ck_assert_msg(run_until(loop, peers, N, others_got_op, 10000), "broadcast incomplete");
    for (int i = 0; i < N; i++)
        ck_assert_int_eq(wsc_conn_close(conns[i], 1000, "done"), 0);
    ck_assert_msg(run_until(loop, peers, N, all_closed, 10000), "not all closed");
    for (int i = 0; i < N; i++) {
        ck_assert_msg(peers[i].closed && peers[i].close_code == 1000, "peer %d: %d %s", i,
                      peers[i].close_code, peers[i].error);
        ck_assert(wsc_conn_is_done(conns[i]));
        wsc_conn_destroy(conns[i]);
    }
    ck_assert_uint_eq(wsc_loop_conn_count(loop), 0);
    wsc_loop_destroy(loop);
}
END_TEST

START_TEST(source_address_binding)
{
    wsc_sync_opts o = {0};
    o.bind_addr = "127.0.0.2";
    wsc_sync *c = h_ws_opts(node, "doc1", &o);
    int fd = wsc_conn_fd(wsc_sync_conn(c));
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char ip[INET_ADDRSTRLEN];
    inet_ntop(AF_INET, &sa.sin_addr, ip, sizeof(ip));
    ck_assert_str_eq(ip, "127.0.0.2");
    h_roundtrip(c);
    wsc_sync_destroy(c);
}
END_TEST

static bool one_failed(peer *p, int n)
{
    (void)n;
    return p[0].errored || p[0].closed;
}

START_TEST(connect_failures_are_reported_through_on_error)
{
    char err[256];
    wsc_loop *loop = wsc_loop_create(err, sizeof(err));
    ck_assert_ptr_nonnull(loop);
    peer p = {0};
    wsc_conn_opts o = {0};
    o.host = "127.0.0.1";
    o.port = h_free_port(); /* nobody listens there */
    o.path = "/ws/documents/doc1";
    wsc_conn *c = wsc_connect(loop, &o, &peer_cbs, &p);
    ck_assert_ptr_nonnull(c);
    ck_assert_msg(!p.errored, "on_error ran inside wsc_connect");
    ck_assert(run_until(loop, &p, 1, one_failed, 5000));
    ck_assert(p.errored && !p.opened && !p.closed);
    ck_assert(wsc_conn_is_done(c));
    ck_assert_int_eq(wsc_conn_send(c, WSC_TEXT, "x", 1), -1);
    wsc_conn_destroy(c);

    /* An HTTP refusal names the status. */
    peer q = {0};
    o.port = h_node_port(node);
    o.path = "/ws/documents/a!b";
    c = wsc_connect(loop, &o, &peer_cbs, &q);
    ck_assert(run_until(loop, &q, 1, one_failed, 5000));
    ck_assert_msg(q.errored && strstr(q.error, "400"), "error: %s", q.error);
    wsc_conn_destroy(c);
    wsc_loop_destroy(loop);

    ck_assert_ptr_null(wsc_sync_connect("127.0.0.1", h_free_port(), "/ws/documents/d", NULL, 2000,
                                        err, sizeof(err)));
    ck_assert_msg(strlen(err) > 0, "no error text");
}
END_TEST

static void count_wake(wsc_loop *loop, void *user)
{
    (void)loop;
    (*(int *)user)++;
}

static void *waker(void *arg)
{
    struct timespec ts = {0, 100 * 1000 * 1000};
    nanosleep(&ts, NULL);
    wsc_loop_wake(arg);
    return NULL;
}

START_TEST(wake_from_another_thread)
{
    char err[256];
    wsc_loop *loop = wsc_loop_create(err, sizeof(err));
    ck_assert_ptr_nonnull(loop);
    int wakes = 0;
    wsc_loop_set_wake_cb(loop, count_wake, &wakes);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, waker, loop), 0);
    int64_t t0 = clock_mono_ms();
    while (!wakes && clock_mono_ms() - t0 < 5000)
        ck_assert_int_eq(wsc_loop_run(loop, 5000), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(wakes, 1);
    ck_assert_int_lt(clock_mono_ms() - t0, 2000);
    /* Bounded runs with nothing to do block, but no longer than their timeout. */
    t0 = clock_mono_ms();
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(wsc_loop_run(loop, 200), 0);
    int64_t took = clock_mono_ms() - t0;
    ck_assert_msg(took >= 150 && took < 1500, "took %lld ms", (long long)took);
    wsc_loop_destroy(loop);
}
END_TEST

typedef struct destroyer {
    wsc_conn *conn;
    int messages;
} destroyer;

static void destroy_on_message(wsc_conn *c, void *user, wsc_kind kind, const uint8_t *data,
                               size_t len)
{
    (void)kind;
    (void)data;
    (void)len;
    destroyer *d = user;
    d->messages++;
    wsc_conn_destroy(c);
    d->conn = NULL;
}

static void send_pings_on_open(wsc_conn *c, void *user)
{
    (void)user;
    for (int i = 0; i < 5; i++)
        wsc_conn_send(c, WSC_TEXT, "{\"type\":\"ping\"}", 15);
}

START_TEST(destroy_from_inside_a_callback)
{
    char err[256];
    wsc_loop *loop = wsc_loop_create(err, sizeof(err));
    ck_assert_ptr_nonnull(loop);
    destroyer d = {0};
    wsc_callbacks cb = {send_pings_on_open, destroy_on_message, NULL, NULL};
    wsc_conn_opts o = {0};
    o.host = "127.0.0.1";
    o.port = h_node_port(node);
    o.path = "/ws/documents/doc1";
    d.conn = wsc_connect(loop, &o, &cb, &d);
    int64_t t0 = clock_mono_ms();
    while (d.conn && clock_mono_ms() - t0 < 5000)
        ck_assert_int_eq(wsc_loop_run(loop, 50), 0);
    ck_assert_ptr_null(d.conn);
    ck_assert_uint_eq(wsc_loop_conn_count(loop), 0);
    /* Later pongs for the destroyed connection are dropped quietly. */
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(wsc_loop_run(loop, 20), 0);
    ck_assert_int_eq(d.messages, 1);
    /* The node saw the connection go. */
    wsc_sync *c = h_ws(node, "doc1");
    h_roundtrip(c);
    wsc_sync_destroy(c);
    wsc_loop_destroy(loop);
}
END_TEST

START_TEST(receive_cap_fails_the_connection)
{
    wsc_sync *a = h_joined(node, "doc1", "alice");
    wsc_sync_opts o = {0};
    o.max_message = 1000;
    wsc_sync *b = h_ws_opts(node, "doc1", &o);
    json_decref(h_auth(b, "bob"));
    json_decref(h_join(b));
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    char payload[3000];
    memset(payload, 'x', sizeof(payload) - 1);
    payload[sizeof(payload) - 1] = 0;
    h_send(a, "{\"type\":\"operation\",\"payload\":\"%s\"}", payload);
    json_decref(h_expect(a, WSC_TEXT, "ack"));
    int code = 0;
    ck_assert_int_eq(wsc_sync_wait_close(b, H_WAIT_MS, &code), 0);
    ck_assert_int_eq(code, WSC_CLOSE_ABNORMAL);
    ck_assert_msg(strstr(wsc_sync_error(b), "over 1000 bytes"), "%s", wsc_sync_error(b));
    /* user_left for bob shows the node closed its side too. */
    json_decref(h_expect(a, WSC_BINARY, "user_left"));
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
}
END_TEST

START_TEST(messages_over_one_mib_both_ways)
{
    wsc_sync *a = h_joined(node, "doc1", "alice");
    /* Three operations of 600 KB (each message under the node's 1 MiB limit, sent in 64 KiB
     * fragments)... */
    size_t len = 600 * 1000;
    char *s = malloc(len + 1);
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < len; i++)
            s[i] = (char)('a' + (i + (size_t)k) % 26);
        s[len] = 0;
        h_send(a, "{\"type\":\"operation\",\"payload\":\"%s\"}", s);
        json_decref(h_expect(a, WSC_TEXT, "ack"));
    }
    /* ...come back in one 1.8 MB sync_response, reassembled from many frames. */
    h_send(a, "{\"type\":\"sync_request\",\"since\":0}");
    json_t *r = h_expect(a, WSC_TEXT, "sync_response");
    json_t *ops = h_field(r, "operations");
    ck_assert_uint_eq(json_array_size(ops), 3);
    for (int k = 0; k < 3; k++) {
        for (size_t i = 0; i < len; i++)
            s[i] = (char)('a' + (i + (size_t)k) % 26);
        const char *got = json_string_value(h_field(json_array_get(ops, (size_t)k), "payload"));
        ck_assert_msg(got && strcmp(got, s) == 0, "payload %d differs", k);
    }
    json_decref(r);
    free(s);
    wsc_sync_destroy(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("00_client");
    TCase *tc = tcase_create("client");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, many_connections_on_one_loop);
    tcase_add_test(tc, source_address_binding);
    tcase_add_test(tc, connect_failures_are_reported_through_on_error);
    tcase_add_test(tc, wake_from_another_thread);
    tcase_add_test(tc, destroy_from_inside_a_callback);
    tcase_add_test(tc, receive_cap_fails_the_connection);
    tcase_add_test(tc, messages_over_one_mib_both_ways);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
