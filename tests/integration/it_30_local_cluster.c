/*
 * 30 the local-cluster command (deploy/local-cluster.sh), run as a user runs it: in its own
 * process group (a terminal's foreground job), two nodes behind haproxy on chosen ports. Once it
 * prints that the cluster is ready, two clients connect through haproxy with the tokens it
 * printed, land on different nodes (leastconn; each node's /stats shows one connection), and an
 * operation from each reaches the other across nodes. Then Ctrl-C (SIGINT to the group): the
 * script must exit within 30 s, leaving no process it started, its work directory removed, and
 * every port it used refusing connections.
 */
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "harness_cluster.h"
#include "harness_deploy.h"
#include "relay/clock.h"

#define READY_DEADLINE_MS 120000
#define STOP_DEADLINE_MS  30000
#define DOC               "it30-local"

/* Polls every client (so close handshakes are answered) for ms milliseconds. */
static void pump_all(hc_client *const *cs, size_t n, int ms)
{
    int64_t deadline = clock_mono_ms() + ms;
    do {
        for (size_t i = 0; i < n; i++)
            if (cs[i] && !cs[i]->closed)
                hc_pump(cs[i], 0);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    } while (clock_mono_ms() < deadline);
}

/* The value printed after `label` at the start of a line of out (whitespace trimmed), copied
 * into buf; NULL if there is no such line. */
static const char *printed_value(const char *out, const char *label, char *buf, size_t len)
{
    for (const char *l = out; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
        const char *p = l;
        while (*p == ' ')
            p++;
        if (strncmp(p, label, strlen(label)) != 0)
            continue;
        p += strlen(label);
        while (*p == ' ')
            p++;
        size_t n = strcspn(p, " \r\n");
        if (n == 0 || n >= len)
            return NULL;
        memcpy(buf, p, n);
        buf[n] = 0;
        return buf;
    }
    return NULL;
}

/* connections.active of GET /stats on port, or -1. */
static json_int_t active_conns(int port)
{
    json_t *st = hc_http_json(port, "/stats");
    json_t *v = json_object_get(json_object_get(st, "connections"), "active");
    json_int_t n = json_is_integer(v) ? json_integer_value(v) : -1;
    json_decref(st);
    return n;
}

/* Connects through the proxy and authenticates with the given token. */
static hc_client *connect_with_token(int port, const char *token)
{
    hc_client *c = hc_connect(port, DOC);
    ck_assert_int_eq(wsc_sync_sendf(c->ws, "{\"type\":\"authenticate\",\"token\":\"%s\"}", token),
                     0);
    json_t *r = hc_expect(c, "auth_result");
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "auth failed: %s", h_dump(r));
    c->auth = r;
    json_decref(hc_join(c));
    return c;
}

/* Waits for an operation broadcast on c and checks it is the tag from from_user. */
static void expect_op_from(hc_client *c, const char *tag, const char *from_user)
{
    ck_assert_msg(hc_wait_ops(c, 1, H_WAIT_MS), "no operation crossed to %s: %s",
                  h_str(c->auth, "user_id"), hc_recent(c));
    json_t *op = json_array_get(c->ops, json_array_size(c->ops) - 1);
    ck_assert_str_eq(h_str(h_field(op, "payload"), "tag"), tag);
    ck_assert_str_eq(h_str(op, "user_id"), from_user);
}

static void show_leftovers(const char *when, const hd_found *f, size_t n)
{
    for (size_t i = 0; i < n && i < 16; i++)
        fprintf(stderr, "%s: pid %d (%s) pgid %d: %s\n", when, (int)f[i].pid, f[i].comm,
                (int)f[i].pgid, f[i].what);
}

START_TEST(local_cluster_runs_crosses_nodes_and_stops_clean)
{
    const char *src = getenv("RELAY_SOURCE_DIR");
    const char *bin = getenv("RELAY_NODE_BIN");
    ck_assert_msg(src && bin, "RELAY_SOURCE_DIR and RELAY_NODE_BIN must be set");
    char bindir_buf[PATH_MAX], script[PATH_MAX];
    snprintf(bindir_buf, sizeof bindir_buf, "%s", bin);
    const char *build_dir = dirname(bindir_buf);
    snprintf(script, sizeof script, "%s/deploy/local-cluster.sh", src);

    int port = hd_free_port_block(3, NULL, 0);
    ck_assert_int_gt(port, 0);
    int taken[3] = {port, port + 1, port + 2};
    int redis_port = hd_free_port_block(1, taken, 3);
    ck_assert_int_gt(redis_port, 0);
    char pbuf[16], rbuf[16];
    snprintf(pbuf, sizeof pbuf, "%d", port);
    snprintf(rbuf, sizeof rbuf, "%d", redis_port);
    const char *argv[] = {"bash",         script, "--no-install", "--nodes", "2", "--port", pbuf,
                          "--redis-port", rbuf,   "--build-dir",  build_dir, NULL};
    char err[2048];
    hp_opts sh_opts = {.argv = argv, .own_group = true, .label = "local-cluster.sh"};
    hp_proc *sh = hp_start(&sh_opts, err, sizeof err);
    ck_assert_msg(sh != NULL, "cannot start the script: %s", err);

    /* Ready: the banner, printed after haproxy answers /readyz. */
    char *out = NULL;
    int64_t deadline = clock_mono_ms() + READY_DEADLINE_MS;
    for (;;) {
        free(out);
        out = hp_log(sh, 0);
        if (strstr(out, "relay local cluster ready"))
            break;
        ck_assert_msg(hp_alive(sh), "the script exited (status %d) before it was ready:\n%s",
                      hp_wait(sh, 0), out);
        ck_assert_msg(clock_mono_ms() < deadline, "not ready within %d s; output:\n%s",
                      READY_DEADLINE_MS / 1000, out);
        struct timespec ts = {0, 100 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    /* The banner is printed by one `cat`; wait for its last line so all of it is there. */
    while (!strstr(out, "Press Ctrl-C") && clock_mono_ms() < deadline) {
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
        free(out);
        out = hp_log(sh, 0);
    }
    char dev_token[4096], secret[256], workdir[PATH_MAX], url[256];
    ck_assert_msg(printed_value(out, "dev token", dev_token, sizeof dev_token), "%s", out);
    ck_assert_msg(printed_value(out, "JWT secret", secret, sizeof secret), "%s", out);
    ck_assert_msg(printed_value(out, "logs", workdir, sizeof workdir), "%s", out);
    ck_assert_msg(printed_value(out, "WebSocket URL", url, sizeof url), "%s", out);
    char want_url[64];
    snprintf(want_url, sizeof want_url, "ws://127.0.0.1:%d/ws/documents/", port);
    ck_assert_msg(!strncmp(url, want_url, strlen(want_url)), "printed URL %s", url);
    struct stat sb;
    ck_assert_msg(stat(workdir, &sb) == 0 && S_ISDIR(sb.st_mode), "no work dir %s", workdir);

    /* What identifies its processes: its ports (as an address, as --port) and its work dir, on
     * a command line or in an environment (haproxy gets its addresses from there). */
    int ports[] = {port, port + 1, port + 2, redis_port};
    char needle_buf[8][48];
    const char *needles[10] = {workdir};
    for (size_t i = 0; i < 4; i++) {
        snprintf(needle_buf[2 * i], sizeof needle_buf[0], "127.0.0.1:%d ", ports[i]);
        snprintf(needle_buf[2 * i + 1], sizeof needle_buf[0], "--port %d ", ports[i]);
        needles[1 + 2 * i] = needle_buf[2 * i];
        needles[2 + 2 * i] = needle_buf[2 * i + 1];
    }
    needles[9] = NULL;

    /* Everything it started is in its process group, and the needles find it all: redis, two
     * nodes and haproxy, so finding nothing after the stop means something. */
    hd_found found[32];
    size_t nf = 0;
    for (int pass = 0; pass < 2; pass++) {
        nf = pass == 0 ? hd_scan(hp_pid(sh), NULL, found, 32) : hd_scan(0, needles, found, 32);
        int n_redis = 0, n_node = 0, n_haproxy = 0;
        for (size_t i = 0; i < nf && i < 32; i++) {
            n_redis += !strcmp(found[i].comm, "redis-server");
            n_node += !strcmp(found[i].comm, "relay-node");
            n_haproxy += !strcmp(found[i].comm, "haproxy");
        }
        if (n_redis != 1 || n_node != 2 || n_haproxy < 1)
            show_leftovers(pass == 0 ? "in its group" : "matching", found, nf);
        ck_assert_msg(n_redis == 1 && n_node == 2 && n_haproxy >= 1,
                      "%s: %d redis-server, %d relay-node, %d haproxy",
                      pass == 0 ? "process group" : "needles", n_redis, n_node, n_haproxy);
    }

    /* Client a with the printed development token, b with a token minted from the printed
     * secret. leastconn puts them on different nodes. */
    hc_client *a = connect_with_token(port, dev_token);
    ck_assert_str_eq(h_str(a->auth, "user_id"), "dev");
    int64_t until = clock_mono_ms() + H_WAIT_MS;
    while (active_conns(port + 1) + active_conns(port + 2) != 1 && clock_mono_ms() < until)
        hc_pump(a, 20);
    char *tok = h_token_claims("{\"sub\":\"bob\",\"exp\":4102444800}", secret);
    hc_client *b = connect_with_token(port, tok);
    free(tok);
    json_int_t n1 = -1, n2 = -1;
    until = clock_mono_ms() + H_WAIT_MS;
    do {
        hc_pump(a, 10);
        hc_pump(b, 10);
        n1 = active_conns(port + 1);
        n2 = active_conns(port + 2);
    } while (!(n1 == 1 && n2 == 1) && clock_mono_ms() < until);
    ck_assert_msg(n1 == 1 && n2 == 1, "connections per node: %lld and %lld, expected 1 and 1",
                  (long long)n1, (long long)n2);

    /* Operations cross nodes both ways. */
    ck_assert_int_eq(hc_op_acked(a, "a1", "{\"tag\":\"from-a\"}"), 1);
    expect_op_from(b, "from-a", "dev");
    ck_assert_int_eq(hc_op_acked(b, "b1", "{\"tag\":\"from-b\"}"), 2);
    expect_op_from(a, "from-b", "bob");

    /* Ctrl-C: SIGINT to the foreground group, as a terminal sends it. The clients stay
     * connected and keep being read, as real ones would. */
    ck_assert_int_eq(hp_signal_group(sh, SIGINT), 0);
    hc_client *cs[] = {a, b};
    int status = -1;
    deadline = clock_mono_ms() + STOP_DEADLINE_MS;
    while ((status = hp_wait(sh, 0)) < 0 && clock_mono_ms() < deadline)
        pump_all(cs, 2, 50);
    free(out);
    out = hp_log(sh, 4000);
    ck_assert_msg(status >= 0, "the script did not stop within %d s of SIGINT; output:\n%s",
                  STOP_DEADLINE_MS / 1000, out);
    ck_assert_msg(strstr(out, "nothing left running"), "no stop message (status %d):\n%s", status,
                  out);

    /* Nothing left: no process of its group or matching the needles, no listener. */
    /* Processes that were SIGKILLed by the script are reaped by init, an instant later. */
    until = clock_mono_ms() + 2000;
    while ((nf = hd_scan(hp_pid(sh), needles, found, 32)) > 0 && clock_mono_ms() < until)
        pump_all(cs, 2, 50);
    show_leftovers("left behind", found, nf);
    ck_assert_msg(nf == 0, "%zu processes left behind, e.g. pid %d (%s): %s", nf,
                  nf ? (int)found[0].pid : 0, nf ? found[0].comm : "", nf ? found[0].what : "");
    ck_assert_msg(stat(workdir, &sb) != 0, "work dir %s was not removed", workdir);
    for (size_t i = 0; i < 4; i++)
        ck_assert_msg(hd_port_refuses(ports[i]), "port %d still accepts connections", ports[i]);
    ck_assert_msg(status == 0 || status == 130, "script exit status %d after SIGINT:\n%s", status,
                  out);

    free(out);
    hc_client_destroy(a);
    hc_client_destroy(b);
    hp_destroy(sh);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("30_local_cluster");
    TCase *tc = tcase_create("local_cluster");
    tcase_set_timeout(tc, 200);
    tcase_add_test(tc, local_cluster_runs_crosses_nodes_and_stops_clean);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
