/*
 * 10 lifecycle: SIGTERM/SIGINT close every client with 1001 and exit 0; the node refuses to
 * start without a token key or with bad configuration, and --check-config / --help exit at once.
 */
#include "harness.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>

/* Starts a node with a joined client, an authenticated one and an anonymous one, sends sig and
 * checks that all three get 1001 and the node exits 0. */
static void shutdown_with_clients(int sig, const char *drain_time)
{
    h_node *n = h_node_start("--drain-time", drain_time, NULL);
    wsc_sync *joined = h_joined(n, "doc1", "alice");
    wsc_sync *authed = h_ws(n, "doc1");
    json_decref(h_auth(authed, "bob"));
    wsc_sync *anon = h_ws(n, "doc2");
    h_roundtrip(anon);
    ck_assert_int_eq(h_node_signal(n, sig), 0);
    wsc_sync *clients[] = {joined, authed, anon};
    for (size_t i = 0; i < 3; i++) {
        int code = 0;
        ck_assert_msg(wsc_sync_wait_close(clients[i], 10000, &code) == 0,
                      "client %zu not closed after the signal", i);
        ck_assert_msg(code == 1001, "client %zu closed with %d, not 1001", i, code);
    }
    int status = h_node_wait_exit(n, 10000);
    ck_assert_msg(status == 0, "relay-node exited with %d", status);
    for (size_t i = 0; i < 3; i++)
        wsc_sync_destroy(clients[i]);
    h_node_destroy(n);
}

START_TEST(sigterm_closes_clients_1001_and_exits_0)
{
    shutdown_with_clients(SIGTERM, "0");
}
END_TEST

START_TEST(sigterm_with_default_drain_time)
{
    shutdown_with_clients(SIGTERM, "2");
}
END_TEST

START_TEST(sigint_closes_clients_1001_and_exits_0)
{
    shutdown_with_clients(SIGINT, "0");
}
END_TEST

START_TEST(idle_node_stops_at_once)
{
    h_node *n = h_node_start(NULL);
    ck_assert_int_eq(h_node_stop(n, 5000), 0);
    h_node_finish(n);
}
END_TEST

START_TEST(refuses_to_start_without_a_token_key)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", h_free_port());
    char *out = NULL;
    int st = h_run_node_cmd(5000, &out, "--port", port, "--bind", "127.0.0.1", NULL);
    ck_assert_msg(st > 0 && st < 128, "exit status %d; output: %s", st, out);
    ck_assert_msg(out && strlen(out) > 0, "no message");
    free(out);
    st =
        h_run_node_cmd(5000, &out, "--port", port, "--bind", "127.0.0.1", "--jwt-secret", "", NULL);
    ck_assert_msg(st > 0 && st < 128, "empty secret: exit status %d; output: %s", st, out);
    free(out);
}
END_TEST

START_TEST(bad_configuration_is_refused)
{
    static const char *const bad[][2] = {
        {"--port", "0"},        {"--port", "70000"},       {"--max-message-size", "abc"},
        {"--rate-limit", "-5"}, {"--log-level", "chatty"}, {"--no-such-flag", "1"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *out = NULL;
        int st = h_run_node_cmd(5000, &out, "--jwt-secret", H_SECRET, "--check-config", bad[i][0],
                                bad[i][1], NULL);
        ck_assert_msg(st > 0 && st < 128, "%s %s: exit %d; output: %s", bad[i][0], bad[i][1], st,
                      out);
        ck_assert_msg(out && strlen(out) > 0, "%s %s: no message", bad[i][0], bad[i][1]);
        free(out);
    }
    char *out = NULL;
    int st = h_run_node_cmd(5000, &out, "--jwt-secret", H_SECRET, "--check-config", "--rate-limit",
                            "100", "--rate-burst", "10", NULL);
    ck_assert_msg(st > 0 && st < 128, "burst below rate accepted: %s", out);
    free(out);
}
END_TEST

START_TEST(check_config_and_help_exit_0)
{
    char *out = NULL;
    int st = h_run_node_cmd(5000, &out, "--jwt-secret", H_SECRET, "--check-config", NULL);
    ck_assert_msg(st == 0, "--check-config: exit %d: %s", st, out);
    free(out);
    st = h_run_node_cmd(5000, &out, "--help", NULL);
    ck_assert_msg(st == 0, "--help: exit %d", st);
    static const char *const flags[] = {"--port",
                                        "--jwt-secret",
                                        "--node-id",
                                        "--redis",
                                        "--max-message-size",
                                        "--rate-limit",
                                        "--max-connections",
                                        "--history-length",
                                        "--auth-timeout",
                                        "--allowed-origins",
                                        "--log-level",
                                        "--check-config"};
    for (size_t i = 0; i < sizeof(flags) / sizeof(flags[0]); i++)
        ck_assert_msg(out && strstr(out, flags[i]), "--help does not list %s", flags[i]);
    free(out);
}
END_TEST

START_TEST(environment_configures_like_flags)
{
    /* RELAY_JWT_SECRET alone is enough to pass --check-config. */
    setenv("RELAY_JWT_SECRET", H_SECRET, 1);
    char *out = NULL;
    int st = h_run_node_cmd(5000, &out, "--check-config", NULL);
    unsetenv("RELAY_JWT_SECRET");
    ck_assert_msg(st == 0, "exit %d: %s", st, out);
    free(out);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("10_lifecycle");
    TCase *tc = tcase_create("lifecycle");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_test(tc, sigterm_closes_clients_1001_and_exits_0);
    tcase_add_test(tc, sigterm_with_default_drain_time);
    tcase_add_test(tc, sigint_closes_clients_1001_and_exits_0);
    tcase_add_test(tc, idle_node_stops_at_once);
    tcase_add_test(tc, refuses_to_start_without_a_token_key);
    tcase_add_test(tc, bad_configuration_is_refused);
    tcase_add_test(tc, check_config_and_help_exit_0);
    tcase_add_test(tc, environment_configures_like_flags);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
