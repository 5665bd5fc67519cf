/*
 * 24 Redis stall: a Redis that stops answering (SIGSTOP) is detected within 5 s: /readyz fails
 * on every node, operations (also one already in flight), cursors, syncs, joins and resumes get
 * error unavailable with their ref while ping still works; after SIGCONT /readyz recovers, the
 * refused operations retried with the same ref are acked once, and nothing acked is lost.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness_cluster.h"
#include "relay/clock.h"

#define DETECT_MS  5000  /* the bound for noticing a deaf Redis */
#define RECOVER_MS 15000 /* reconnection with backoff after SIGCONT */

static hc_redis *redis;
static h_node *nodes[2], *na, *nb;

static void setup(void)
{
    redis = hc_cluster_start(false, nodes, 2);
    na = nodes[0], nb = nodes[1];
}

static void teardown(void)
{
    hc_cluster_destroy(redis, nodes, 2);
}

/* Expects error unavailable with this ref (the reply to a request sent before). */
static void expect_unavailable(hc_client *c, const char *ref, int ms)
{
    json_t *r = hc_take_reply(c, ref, ms);
    if (!r)
        r = hc_take(c, "error", 0); /* an error without the ref, to show it */
    ck_assert_msg(r != NULL, "no reply to %s within %d ms; %s", ref, ms, hc_recent(c));
    ck_assert_msg(!strcmp(h_str(r, "type"), "error") && !strcmp(h_str(r, "code"), "unavailable"),
                  "%s: expected error unavailable, got %s", ref, h_dump(r));
    ck_assert_str_eq(h_str(r, "ref"), ref);
    json_decref(r);
}

static void expect_ready(int status, int ms, const char *when)
{
    h_node *ns[] = {na, nb};
    for (size_t i = 0; i < 2; i++) {
        bool ok = hc_wait_http_status(h_node_port(ns[i]), "/readyz", status, ms);
        if (!ok) {
            char *log = hc_node_log_tail(ns[i], 2000);
            ck_abort_msg("%s: /readyz of node %s is not %d; log:\n%s", when, i ? "b" : "a", status,
                         log);
        }
        ck_assert_msg(h_node_alive(ns[i]), "node died");
        ck_assert_int_eq(hc_http_status(h_node_port(ns[i]), "/healthz"), 200);
    }
}

START_TEST(a_stopped_redis_is_detected_and_nothing_is_lost)
{
    const char *doc = "it24-stall";
    hc_client *sender = hc_joined(h_node_port(na), doc, "sender");
    hc_client *obs_a = hc_joined(h_node_port(na), doc, "obs-a");
    hc_client *obs_b = hc_joined(h_node_port(nb), doc, "obs-b");
    hc_client *gone = hc_connect(h_node_port(nb), doc);
    hc_auth(gone, "gone");
    json_t *gone_auth = json_incref(gone->auth);
    hc_client_destroy(gone);
    for (int i = 1; i <= 20; i++) {
        char ref[16], payload[32];
        snprintf(ref, sizeof ref, "s-%d", i);
        snprintf(payload, sizeof payload, "{\"i\":%d}", i);
        ck_assert_int_eq(hc_op_acked(sender, ref, payload), i);
    }

    ck_assert_int_eq(hc_redis_signal(redis, SIGSTOP), 0);
    int64_t stopped = clock_mono_ms();
    hc_send_op(sender, "s-21", "{\"i\":21}"); /* in flight while Redis is deaf */
    expect_ready(503, DETECT_MS, "after SIGSTOP");
    int64_t detected = clock_mono_ms() - stopped;
    ck_assert_msg(detected <= DETECT_MS, "readiness fell after %lld ms", (long long)detected);
    expect_unavailable(sender, "s-21", DETECT_MS);

    /* While Redis is deaf: refusals with the ref, ping still answered. */
    hc_send_op(sender, "s-22", "{\"i\":22}");
    expect_unavailable(sender, "s-22", H_WAIT_MS);
    ck_assert_int_eq(wsc_sync_sendf(sender->ws, "{\"type\":\"ping\",\"ref\":\"p-1\"}"), 0);
    json_t *pong = hc_expect(sender, "pong");
    ck_assert_str_eq(h_str(pong, "ref"), "p-1");
    json_decref(pong);
    ck_assert_int_eq(wsc_sync_sendf(obs_b->ws, "{\"type\":\"cursor\",\"cursor\":1,\"ref\":\"c\"}"),
                     0);
    expect_unavailable(obs_b, "c", H_WAIT_MS);
    ck_assert_int_eq(wsc_sync_sendf(obs_b->ws, "{\"type\":\"sync_request\",\"since\":0,"
                                               "\"ref\":\"y\"}"),
                     0);
    expect_unavailable(obs_b, "y", H_WAIT_MS);
    hc_client *fresh = hc_connect(h_node_port(nb), doc);
    hc_auth(fresh, "fresh");
    ck_assert_int_eq(wsc_sync_sendf(fresh->ws, "{\"type\":\"join_document\",\"ref\":\"j\"}"), 0);
    expect_unavailable(fresh, "j", H_WAIT_MS);
    hc_client *back = hc_connect(h_node_port(na), doc);
    ck_assert_int_eq(wsc_sync_sendf(back->ws,
                                    "{\"type\":\"authenticate\",\"session_id\":\"%s\","
                                    "\"resume_token\":\"%s\",\"ref\":\"r\"}",
                                    h_str(gone_auth, "session_id"),
                                    h_str(gone_auth, "resume_token")),
                     0);
    expect_unavailable(back, "r", H_WAIT_MS);
    ck_assert_msg(wsc_sync_is_open(back->ws), "a refused resume must leave the connection open");
    ck_assert_int_eq(hc_count_seen(sender, "auth_result", NULL, NULL), 1);

    ck_assert_int_eq(hc_redis_signal(redis, SIGCONT), 0);
    int64_t resumed = clock_mono_ms();
    expect_ready(200, RECOVER_MS, "after SIGCONT");
    fprintf(stderr, "it_24: detected after %lld ms, ready %lld ms after SIGCONT\n",
            (long long)detected, (long long)(clock_mono_ms() - resumed));

    /* Retries with the same ref are applied once; the stream goes on. */
    ck_assert_int_eq(hc_op_acked(sender, "s-21", "{\"i\":21}"), 21);
    ck_assert_int_eq(hc_op_acked(sender, "s-22", "{\"i\":22}"), 22);
    ck_assert_int_eq(hc_op_acked(sender, "s-23", "{\"i\":23}"), 23);
    json_decref(hc_join(fresh));
    ck_assert_int_eq(wsc_sync_sendf(back->ws,
                                    "{\"type\":\"authenticate\",\"session_id\":\"%s\","
                                    "\"resume_token\":\"%s\"}",
                                    h_str(gone_auth, "session_id"),
                                    h_str(gone_auth, "resume_token")),
                     0);
    json_t *ra = hc_expect(back, "auth_result");
    ck_assert_msg(json_is_true(json_object_get(ra, "success")), "resume after recovery: %s",
                  h_dump(ra));
    json_decref(ra);

    hc_client *obs[] = {obs_a, obs_b};
    for (size_t k = 0; k < 2; k++) {
        ck_assert_msg(hc_wait_ops(obs[k], 23, H_WAIT_MS), "%s", hc_recent(obs[k]));
        hc_pump(obs[k], k == 0 ? 300 : 0);
        ck_assert_int_eq(json_array_size(obs[k]->ops), 23);
        for (int i = 1; i <= 23; i++) {
            json_t *op = json_array_get(obs[k]->ops, (size_t)i - 1);
            ck_assert_msg(h_int(op, "seq") == i && h_int(h_field(op, "payload"), "i") == i,
                          "observer %zu: operation #%d is %s", k, i, h_dump(op));
        }
        ck_assert_int_eq(hc_count_seen(obs[k], "lagged", NULL, NULL), 0);
        ck_assert_int_eq(hc_count_seen(obs[k], "reset", NULL, NULL), 0);
    }
    json_t *hist = hc_sync(obs_b, 0, NULL);
    ck_assert_int_eq(json_array_size(hist), 23);
    for (int i = 1; i <= 23; i++)
        ck_assert_int_eq(h_int(h_field(json_array_get(hist, (size_t)i - 1), "payload"), "i"), i);

    json_decref(hist);
    json_decref(gone_auth);
    hc_client_destroy(back);
    hc_client_destroy(fresh);
    hc_client_destroy(obs_a);
    hc_client_destroy(obs_b);
    hc_client_destroy(sender);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("24_redis_stall");
    TCase *tc = tcase_create("stall");
    tcase_set_timeout(tc, HC_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, a_stopped_redis_is_detected_and_nothing_is_lost);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
