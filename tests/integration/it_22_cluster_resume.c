/*
 * 22 cluster resume through haproxy: three nodes behind a real haproxy (round robin, health
 * check on /readyz). A client's node is killed with SIGKILL; the client reconnects through the
 * proxy, lands on a live node and resumes its session (same session_id, user, color); join +
 * sync_request gives it everything it missed; operations it retries with the same ref are acked
 * with their original seq and broadcast once; the dead node's other session is announced left,
 * the resumed one is not, and the dead node leaves the cluster stats.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness_cluster.h"
#include "relay/clock.h"

#define N_NODES 3

static hc_redis *redis;
static h_node *nodes[N_NODES];
static hc_haproxy *proxy;

static void setup(void)
{
    redis = hc_cluster_start(false, nodes, N_NODES);
    proxy = hc_haproxy_start(nodes, N_NODES);
}

static void teardown(void)
{
    hc_haproxy_destroy(proxy);
    hc_cluster_destroy(redis, nodes, N_NODES);
}

/* connections.joined of a node's /stats (-1 when unreadable). */
static json_int_t joined_count(const h_node *n)
{
    json_t *st = hc_http_json(h_node_port(n), "/stats");
    json_int_t v = -1;
    json_t *conns = json_object_get(st, "connections");
    if (json_is_integer(json_object_get(conns, "joined")))
        v = json_integer_value(json_object_get(conns, "joined"));
    json_decref(st);
    return v;
}

/* The node that carries the only joined session, waiting for the stats to show it. */
static int find_joined_node(void)
{
    int64_t deadline = clock_mono_ms() + H_WAIT_MS;
    do {
        int found = -1, count = 0;
        for (int i = 0; i < N_NODES; i++)
            if (joined_count(nodes[i]) == 1) {
                found = i;
                count++;
            }
        if (count == 1)
            return found;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    } while (clock_mono_ms() < deadline);
    ck_abort_msg("no single node reports the joined session in /stats");
    return -1;
}

/* Number of operations in ops whose payload has "tag" equal to tag. */
static size_t count_tag(const json_t *ops, const char *tag)
{
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(ops); i++) {
        json_t *t = json_object_get(json_object_get(json_array_get(ops, i), "payload"), "tag");
        if (json_is_string(t) && !strcmp(json_string_value(t), tag))
            n++;
    }
    return n;
}

/* The seq of the operation with this tag in ops, or 0. */
static json_int_t seq_of_tag(const json_t *ops, const char *tag)
{
    for (size_t i = 0; i < json_array_size(ops); i++) {
        json_t *op = json_array_get(ops, i);
        json_t *t = json_object_get(json_object_get(op, "payload"), "tag");
        if (json_is_string(t) && !strcmp(json_string_value(t), tag))
            return json_integer_value(json_object_get(op, "seq"));
    }
    return 0;
}

/* relayctl (the operator's view, read from Redis) lists the live nodes and not the dead one. */
static void check_relayctl(const char *dead_id)
{
    const char *bin = getenv("RELAYCTL_BIN");
    ck_assert_msg(bin && *bin, "RELAYCTL_BIN is not set");
    const char *argv[] = {bin, "stats", "--redis", hc_redis_url(redis), "--json", NULL};
    char *out = NULL;
    int st = hc_run(10000, &out, argv);
    ck_assert_msg(st == 0, "relayctl stats exited %d: %s", st, out ? out : "");
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_msg(j != NULL, "relayctl stats --json printed %s", out);
    json_t *ns = h_field(j, "nodes");
    ck_assert_msg(json_array_size(ns) == N_NODES - 1, "relayctl lists %s", h_dump(ns));
    for (size_t i = 0; i < json_array_size(ns); i++)
        ck_assert_str_ne(h_str(json_array_get(ns, i), "node_id"), dead_id);
    json_decref(j);
    free(out);
}

START_TEST(session_resumes_on_another_node_after_sigkill)
{
    const char *doc = "it22-resume";
    int pport = hc_haproxy_port(proxy);
    hc_client *x = hc_connect(pport, doc);
    hc_auth(x, "xavier");
    json_decref(hc_join(x));
    json_t *first = json_incref(x->auth);
    int dead = find_joined_node();
    h_node *other1 = nodes[(dead + 1) % N_NODES], *other2 = nodes[(dead + 2) % N_NODES];

    /* Watchers on the two other nodes; a second session on the doomed node that will not
     * come back. */
    hc_client *w1 = hc_joined(h_node_port(other1), doc, "w1");
    hc_client *w2 = hc_joined(h_node_port(other2), doc, "w2");
    hc_client *y = hc_joined(h_node_port(nodes[dead]), doc, "yvonne");
    char *y_sid = strdup(h_str(y->auth, "session_id"));

    for (int i = 1; i <= 5; i++) {
        char ref[16], payload[64];
        snprintf(ref, sizeof ref, "x-%d", i);
        snprintf(payload, sizeof payload, "{\"tag\":\"x-%d\"}", i);
        ck_assert_int_eq(hc_op_acked(x, ref, payload), i);
    }
    json_int_t dup_seq = hc_op_acked(x, "dup", "{\"tag\":\"dup\"}");
    ck_assert_int_eq(dup_seq, 6);
    json_int_t last_seen = dup_seq; /* x saw its own acks up to here and nothing else */
    ck_assert_msg(hc_wait_ops(w1, 6, H_WAIT_MS), "%s", hc_recent(w1));

    /* An operation in flight when the node dies: applied or not, nobody knows. */
    hc_send_op(x, "race", "{\"tag\":\"race\"}");
    ck_assert_int_eq(h_node_signal(nodes[dead], SIGKILL), 0);
    int64_t killed = clock_mono_ms();
    ck_assert_int_eq(h_node_wait_exit(nodes[dead], 5000), 128 + SIGKILL);

    /* Meanwhile the others carry on. */
    for (int i = 1; i <= 3; i++) {
        char ref[16], payload[64];
        snprintf(ref, sizeof ref, "w-%d", i);
        snprintf(payload, sizeof payload, "{\"tag\":\"w-%d\"}", i);
        hc_op_acked(w1, ref, payload);
    }

    /* Reconnect through the proxy and resume. */
    hc_client *x2 = hc_connect(pport, doc);
    ck_assert_int_eq(wsc_sync_sendf(x2->ws,
                                    "{\"type\":\"authenticate\",\"session_id\":\"%s\","
                                    "\"resume_token\":\"%s\"}",
                                    h_str(first, "session_id"), h_str(first, "resume_token")),
                     0);
    json_t *r = hc_expect(x2, "auth_result");
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "resume failed: %s", h_dump(r));
    ck_assert_str_eq(h_str(r, "session_id"), h_str(first, "session_id"));
    ck_assert_str_eq(h_str(r, "user_id"), "xavier");
    ck_assert_str_eq(h_str(r, "user_name"), h_str(first, "user_name"));
    ck_assert_str_eq(h_str(r, "color"), h_str(first, "color"));
    ck_assert_str_ne(h_str(r, "resume_token"), h_str(first, "resume_token"));
    x2->auth = r;
    json_t *j = hc_join(x2);
    json_int_t head = h_int(j, "seq");
    ck_assert_msg(head == 9 || head == 10, "joined_document.seq %lld, expected 9 or 10 (%s)",
                  (long long)head, h_dump(j));

    /* What it missed, from history. */
    json_t *missed = hc_sync(x2, last_seen, NULL);
    ck_assert_int_eq(json_array_size(missed), head - last_seen);
    for (size_t i = 0; i < json_array_size(missed); i++)
        ck_assert_int_eq(h_int(json_array_get(missed, i), "seq"), last_seen + 1 + (json_int_t)i);
    for (int i = 1; i <= 3; i++) {
        char tag[16];
        snprintf(tag, sizeof tag, "w-%d", i);
        ck_assert_msg(count_tag(missed, tag) == 1, "%s not exactly once in %s", tag,
                      h_dump(missed));
    }
    json_int_t race_seq = seq_of_tag(missed, "race");
    ck_assert_int_eq(race_seq != 0, head == 10);

    /* Retries with the same ref: the original seq, never a second copy. */
    json_t *a = NULL;
    hc_send_op(x2, "dup", "{\"tag\":\"dup\"}");
    a = hc_take_reply(x2, "dup", H_WAIT_MS);
    ck_assert_msg(a && !strcmp(h_str(a, "type"), "ack"), "retry of dup: %s", h_dump(a));
    ck_assert_int_eq(h_int(a, "seq"), dup_seq);
    json_decref(a);
    hc_send_op(x2, "race", "{\"tag\":\"race\"}");
    a = hc_take_reply(x2, "race", H_WAIT_MS);
    ck_assert_msg(a && !strcmp(h_str(a, "type"), "ack"), "retry of race: %s", h_dump(a));
    if (race_seq)
        ck_assert_int_eq(h_int(a, "seq"), race_seq);
    else
        ck_assert_int_eq(h_int(a, "seq"), head + 1);
    json_int_t final = race_seq ? head : head + 1;
    json_decref(a);
    ck_assert_int_eq(hc_op_acked(x2, "after", "{\"tag\":\"after\"}"), final + 1);
    final++;

    /* The watchers saw 1..final exactly once each, dup and race once. */
    hc_client *ws[] = {w1, w2};
    for (size_t k = 0; k < 2; k++) {
        size_t own = k == 0 ? 3 : 0; /* w1's own operations do not come back to it */
        ck_assert_msg(hc_wait_ops(ws[k], (size_t) final - own, H_WAIT_MS), "%s", hc_recent(ws[k]));
        hc_pump(ws[k], 300);
        ck_assert_int_eq(json_array_size(ws[k]->ops), final - own);
        json_int_t prev = 0;
        for (size_t i = 0; i < json_array_size(ws[k]->ops); i++) {
            json_int_t s = h_int(json_array_get(ws[k]->ops, i), "seq");
            ck_assert_msg(s > prev, "watcher %zu: seq %lld after %lld", k, (long long)s,
                          (long long)prev);
            prev = s;
        }
        ck_assert_int_eq(count_tag(ws[k]->ops, "dup"), 1);
        ck_assert_int_eq(count_tag(ws[k]->ops, "race"), 1);
        ck_assert_int_eq(count_tag(ws[k]->ops, "after"), 1);
    }

    /* The dead node's other session is cleaned up; the resumed one is not announced. */
    int left = (int)(10000 - (clock_mono_ms() - killed));
    json_t *m = hc_expect_within(w2, "user_left", left > 0 ? left : 0);
    ck_assert_str_eq(h_str(m, "session_id"), y_sid);
    json_decref(m);
    hc_pump(w2, 1000);
    ck_assert_int_eq(hc_count_seen(w2, "user_left", "session_id", h_str(first, "session_id")), 0);
    hc_client *late = hc_connect(pport, doc);
    hc_auth(late, "late");
    json_t *jl = hc_join(late);
    json_t *users = h_field(jl, "users");
    ck_assert_int_eq(json_array_size(users), 4); /* w1, w2, xavier, late */
    bool has_x = false;
    for (size_t i = 0; i < json_array_size(users); i++) {
        const char *s = h_str(json_array_get(users, i), "session_id");
        ck_assert_str_ne(s, y_sid);
        has_x = has_x || !strcmp(s, h_str(first, "session_id"));
    }
    ck_assert_msg(has_x, "resumed session missing from %s", h_dump(jl));

    /* The dead node leaves the cluster view of the live ones. */
    const char *dead_id = dead == 0 ? "a" : dead == 1 ? "b" : "c";
    bool listed = true;
    while (listed && clock_mono_ms() - killed < 10000) {
        json_t *st = hc_http_json(pport, "/stats?scope=cluster");
        ck_assert_msg(st != NULL, "cluster stats through the proxy");
        listed = false;
        json_t *ns = json_object_get(st, "nodes");
        for (size_t i = 0; i < json_array_size(ns); i++)
            listed = listed || !strcmp(h_str(json_array_get(ns, i), "node_id"), dead_id);
        ck_assert_int_eq(json_array_size(ns), N_NODES - (listed ? 0 : 1));
        json_decref(st);
        hc_pump(late, 50);
    }
    ck_assert_msg(!listed, "node %s still in the cluster stats 10 s after SIGKILL", dead_id);
    check_relayctl(dead_id);

    json_decref(jl);
    json_decref(missed);
    json_decref(j);
    json_decref(first);
    free(y_sid);
    hc_client_destroy(late);
    hc_client_destroy(x2);
    hc_client_destroy(y);
    hc_client_destroy(w1);
    hc_client_destroy(w2);
    hc_client_destroy(x);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("22_cluster_resume");
    TCase *tc = tcase_create("resume");
    tcase_set_timeout(tc, HC_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, session_resumes_on_another_node_after_sigkill);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
