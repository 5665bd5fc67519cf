/*
 * 23 Redis restart: Redis with AOF (appendfsync always) is SIGKILLed and restarted on the same
 * port and directory under a steady stream of operations. No node crashes; every acked
 * operation is in the history exactly once and in order; clients that stayed connected received
 * every acked operation exactly once, in order, without asking for a sync. Restarted empty
 * instead, every joined client gets `reset` with a new epoch and operations continue in it.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness_cluster.h"
#include "relay/clock.h"

#define PACE_MS     10  /* the sender's pause between operations: at most 100 ops/s */
#define BEFORE_KILL 150 /* operations acked before Redis is killed */
#define AFTER_KILL  150 /* operations acked after it is back */
#define REPLY_MS    10000
#define DOWN_MS     1000  /* how long Redis stays dead */
#define RECOVERY_MS 30000 /* the whole stream must be through by then */

static hc_redis *redis;
static h_node *nodes[2], *na, *nb;

static void setup(void)
{
    redis = hc_cluster_start(true, nodes, 2);
    na = nodes[0], nb = nodes[1];
}

static void teardown(void)
{
    hc_cluster_destroy(redis, nodes, 2);
}

/* When Redis, killed, is due to be started again (0: not killed). */
static int64_t restart_at;

/* Reads every observer for ms, and restarts Redis (same directory) once it is due. */
static void pump_all(hc_client **cs, size_t n, int ms)
{
    int64_t until = clock_mono_ms() + ms;
    do {
        if (restart_at && clock_mono_ms() >= restart_at) {
            hc_redis_restart(redis, true);
            restart_at = 0;
        }
        for (size_t i = 0; i < n; i++)
            hc_pump(cs[i], 0);
        hc_pump(cs[0], 5);
    } while (clock_mono_ms() < until);
}

/* Fails the test with both nodes' logs if a node died or its /healthz is not 200. */
static void check_nodes_healthy(const char *when)
{
    h_node *ns[] = {na, nb};
    for (size_t i = 0; i < 2; i++) {
        bool alive = h_node_alive(ns[i]);
        int st = alive ? hc_http_status(h_node_port(ns[i]), "/healthz") : -1;
        if (!alive || st != 200) {
            char *log = hc_node_log_tail(ns[i], 3000);
            ck_abort_msg("%s: node %s %s (healthz %d); log:\n%s", when, i ? "b" : "a",
                         alive ? "unhealthy" : "died", st, log);
        }
    }
}

/* Sends operation i until it is acked, retrying `unavailable` with the same ref. Returns the
 * ack's seq; counts the refusals in *refused. */
static json_int_t send_until_acked(hc_client *s, int i, hc_client **obs, size_t n_obs, int *refused,
                                   void (*after_send)(hc_client **, size_t))
{
    char ref[32], payload[64];
    snprintf(ref, sizeof ref, "s-%d", i);
    snprintf(payload, sizeof payload, "{\"i\":%d}", i);
    int64_t deadline = clock_mono_ms() + RECOVERY_MS;
    for (;;) {
        hc_send_op(s, ref, payload);
        if (after_send) {
            after_send(obs, n_obs);
            after_send = NULL;
        }
        json_t *r = hc_take_reply(s, ref, REPLY_MS);
        ck_assert_msg(r != NULL,
                      "no reply to %s within %d ms (node must answer ack or "
                      "unavailable); %s",
                      ref, REPLY_MS, hc_recent(s));
        if (!strcmp(h_str(r, "type"), "ack")) {
            json_int_t seq = h_int(r, "seq");
            json_decref(r);
            return seq;
        }
        ck_assert_msg(!strcmp(h_str(r, "code"), "unavailable"), "%s: %s", ref, h_dump(r));
        json_decref(r);
        (*refused)++;
        ck_assert_msg(clock_mono_ms() < deadline, "%s still refused after %d ms", ref, RECOVERY_MS);
        pump_all(obs, n_obs, 100);
    }
}

/* With an operation in flight: SIGKILL Redis, wait until both nodes noticed (readiness off),
 * and have it started again on the same port and directory DOWN_MS later, while the sender
 * keeps retrying. */
static void kill_and_restart(hc_client **obs, size_t n_obs)
{
    hc_redis_kill(redis);
    int64_t deadline = clock_mono_ms() + 5000;
    while (clock_mono_ms() < deadline && (hc_http_status(h_node_port(na), "/readyz") != 503 ||
                                          hc_http_status(h_node_port(nb), "/readyz") != 503))
        pump_all(obs, n_obs, 20);
    check_nodes_healthy("while Redis is down");
    restart_at = clock_mono_ms() + DOWN_MS;
}

START_TEST(aof_restart_under_load_loses_and_duplicates_nothing)
{
    const char *doc = "it23-aof";
    hc_client *sender = hc_joined(h_node_port(na), doc, "sender");
    hc_client *obs[] = {hc_joined(h_node_port(na), doc, "obs-a"),
                        hc_joined(h_node_port(nb), doc, "obs-b")};
    hc_client *probe = hc_connect(h_node_port(nb), doc);
    hc_auth(probe, "probe");
    json_t *j0 = hc_join(probe);
    char *epoch0 = strdup(h_str(j0, "epoch"));
    json_decref(j0);

    const int total = BEFORE_KILL + AFTER_KILL;
    int refused = 0;
    int64_t killed_at = 0, back_at = 0;
    for (int i = 1; i <= total; i++) {
        bool kill_now = i == BEFORE_KILL + 1;
        if (kill_now)
            killed_at = clock_mono_ms();
        json_int_t seq =
            send_until_acked(sender, i, obs, 2, &refused, kill_now ? kill_and_restart : NULL);
        if (kill_now)
            back_at = clock_mono_ms();
        ck_assert_msg(seq == i, "operation %d acked with seq %lld (refused so far: %d)", i,
                      (long long)seq, refused);
        pump_all(obs, 2, PACE_MS);
        if (i % 50 == 0)
            check_nodes_healthy("during the stream");
    }
    fprintf(stderr,
            "it_23: %d refusals; op %d acked %lld ms after the kill; stream done %lld ms later\n",
            refused, BEFORE_KILL + 1, (long long)(back_at - killed_at),
            (long long)(clock_mono_ms() - back_at));
    check_nodes_healthy("after the stream");

    /* Clients that stayed connected: every acked op exactly once, in order, no sync needed. */
    const char *names[] = {"observer on A", "observer on B"};
    for (size_t k = 0; k < 2; k++) {
        ck_assert_msg(hc_wait_ops(obs[k], total, 15000), "%s: %s", names[k], hc_recent(obs[k]));
        hc_pump(obs[k], k == 0 ? 300 : 0);
        ck_assert_int_eq(json_array_size(obs[k]->ops), total);
        for (int i = 1; i <= total; i++) {
            json_t *op = json_array_get(obs[k]->ops, (size_t)i - 1);
            ck_assert_msg(h_int(op, "seq") == i, "%s: operation #%d is %s", names[k], i,
                          h_dump(op));
            ck_assert_int_eq(h_int(h_field(op, "payload"), "i"), i);
        }
        ck_assert_msg(hc_count_seen(obs[k], "reset", NULL, NULL) == 0, "%s: %s", names[k],
                      hc_recent(obs[k]));
        ck_assert_msg(hc_count_seen(obs[k], "lagged", NULL, NULL) == 0, "%s: %s", names[k],
                      hc_recent(obs[k]));
    }
    /* The history holds each acked operation once, in order, in the same epoch. */
    char *epoch = NULL;
    json_t *hist = hc_sync(probe, 0, &epoch);
    ck_assert_str_eq(epoch, epoch0);
    ck_assert_int_eq(json_array_size(hist), total);
    for (int i = 1; i <= total; i++) {
        json_t *op = json_array_get(hist, (size_t)i - 1);
        ck_assert_int_eq(h_int(op, "seq"), i);
        ck_assert_int_eq(h_int(h_field(op, "payload"), "i"), i);
    }
    redisReply *len = hc_redis_cmd(redis, "LLEN relay:{%s}:hist", doc);
    ck_assert_msg(len && len->type == REDIS_REPLY_INTEGER && len->integer == total,
                  "LLEN of the history: %lld", len ? (long long)len->integer : -1LL);
    freeReplyObject(len);

    json_decref(hist);
    free(epoch);
    free(epoch0);
    hc_client_destroy(probe);
    hc_client_destroy(obs[0]);
    hc_client_destroy(obs[1]);
    hc_client_destroy(sender);
}
END_TEST

START_TEST(empty_restart_resets_every_joined_client)
{
    const char *doc = "it23-empty";
    hc_client *cs[3];
    cs[0] = hc_connect(h_node_port(na), doc);
    hc_auth(cs[0], "alice");
    json_t *j0 = hc_join(cs[0]);
    char *epoch0 = strdup(h_str(j0, "epoch"));
    json_decref(j0);
    cs[1] = hc_joined(h_node_port(na), doc, "bob");
    cs[2] = hc_joined(h_node_port(nb), doc, "carol");
    for (int i = 1; i <= 10; i++) {
        char ref[16], payload[32];
        snprintf(ref, sizeof ref, "old-%d", i);
        snprintf(payload, sizeof payload, "{\"i\":%d}", i);
        ck_assert_int_eq(hc_op_acked(cs[0], ref, payload), i);
    }
    for (size_t k = 1; k < 3; k++)
        ck_assert_msg(hc_wait_ops(cs[k], 10, H_WAIT_MS), "%s", hc_recent(cs[k]));

    hc_redis_kill(redis);
    hc_redis_restart(redis, false);
    int64_t back = clock_mono_ms();

    /* Every joined client is told, once, with the same new epoch. */
    char *epoch1 = NULL;
    for (size_t k = 0; k < 3; k++) {
        int left = (int)(20000 - (clock_mono_ms() - back));
        json_t *r = hc_expect_within(cs[k], "reset", left > 0 ? left : 0);
        ck_assert_str_eq(h_str(r, "document_id"), doc);
        ck_assert_str_ne(h_str(r, "epoch"), epoch0);
        ck_assert_int_eq(h_int(r, "seq"), 0);
        if (!epoch1)
            epoch1 = strdup(h_str(r, "epoch"));
        ck_assert_str_eq(h_str(r, "epoch"), epoch1);
        json_decref(r);
    }
    check_nodes_healthy("after the empty restart");

    /* Operations continue in the new epoch, from seq 1, on both nodes. */
    ck_assert_int_eq(hc_op_acked(cs[0], "new-1", "{\"i\":101}"), 1);
    ck_assert_int_eq(hc_op_acked(cs[2], "new-2", "{\"i\":102}"), 2);
    ck_assert_msg(hc_wait_ops(cs[1], 12, H_WAIT_MS), "%s", hc_recent(cs[1]));
    ck_assert_msg(hc_wait_ops(cs[2], 11, H_WAIT_MS), "%s", hc_recent(cs[2]));
    ck_assert_int_eq(h_int(json_array_get(cs[1]->ops, 10), "seq"), 1);
    ck_assert_int_eq(h_int(json_array_get(cs[1]->ops, 11), "seq"), 2);
    ck_assert_int_eq(h_int(json_array_get(cs[2]->ops, 10), "seq"), 1);
    char *epoch = NULL;
    json_t *ops = hc_sync(cs[2], 0, &epoch);
    ck_assert_str_eq(epoch, epoch1);
    ck_assert_int_eq(json_array_size(ops), 2);
    ck_assert_int_eq(h_int(h_field(json_array_get(ops, 0), "payload"), "i"), 101);
    /* The nodes registered their sessions again in the new Redis. */
    hc_client *late = hc_connect(h_node_port(nb), doc);
    hc_auth(late, "late");
    json_t *jl = hc_join(late);
    ck_assert_str_eq(h_str(jl, "epoch"), epoch1);
    ck_assert_int_eq(h_int(jl, "seq"), 2);
    ck_assert_msg(json_array_size(h_field(jl, "users")) == 4, "presence not re-registered: %s",
                  h_dump(jl));
    for (size_t k = 0; k < 3; k++) {
        hc_pump(cs[k], k == 0 ? 200 : 0);
        ck_assert_int_eq(hc_count_seen(cs[k], "reset", NULL, NULL), 1);
    }

    json_decref(jl);
    json_decref(ops);
    free(epoch);
    free(epoch1);
    free(epoch0);
    hc_client_destroy(late);
    for (size_t k = 0; k < 3; k++)
        hc_client_destroy(cs[k]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("23_redis_restart");
    TCase *tc = tcase_create("restart");
    tcase_set_timeout(tc, HC_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, aof_restart_under_load_loses_and_duplicates_nothing);
    tcase_add_test(tc, empty_restart_resets_every_joined_client);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
