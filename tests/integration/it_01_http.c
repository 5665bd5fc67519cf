/*
 * 01 http: the HTTP side of the port - routing and document id validation before the upgrade,
 * the Origin allow-list, /healthz, /readyz, /stats and /metrics.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay/clock.h"

static h_node *node;

static void setup(void)
{
    node = h_node_start(NULL);
}

static void teardown(void)
{
    h_node_finish(node);
    node = NULL;
}

/* Upgrades target with a raw client and returns the HTTP status (101 on success). */
static int upgrade_status(h_node *n, const char *target, const char *extra_headers)
{
    char err[512];
    h_raw *r = h_raw_connect(h_node_port(n), target, 0, extra_headers, err, sizeof(err));
    if (r) {
        h_raw_close(r);
        return 101;
    }
    const char *p = strstr(err, "HTTP/1.");
    ck_assert_msg(p != NULL, "upgrade of %s failed without an HTTP answer: %s", target, err);
    return atoi(p + 9);
}

START_TEST(healthz_and_readyz_answer_200)
{
    h_http r;
    ck_assert_int_eq(h_http_get(h_node_port(node), "/healthz", &r), 0);
    ck_assert_int_eq(r.status, 200);
    h_http_free(&r);
    ck_assert_int_eq(h_http_get(h_node_port(node), "/readyz", &r), 0);
    ck_assert_int_eq(r.status, 200);
    h_http_free(&r);
}
END_TEST

START_TEST(unknown_path_is_404)
{
    h_http r;
    ck_assert_int_eq(h_http_get(h_node_port(node), "/nope", &r), 0);
    ck_assert_int_eq(r.status, 404);
    h_http_free(&r);
    ck_assert_int_eq(upgrade_status(node, "/ws/other/doc", NULL), 404);
    ck_assert_int_eq(upgrade_status(node, "/", NULL), 404);
}
END_TEST

START_TEST(plain_get_on_document_path_is_426)
{
    h_http r;
    ck_assert_int_eq(h_http_get(h_node_port(node), "/ws/documents/doc1", &r), 0);
    ck_assert_int_eq(r.status, 426);
    h_http_free(&r);
}
END_TEST

START_TEST(bad_document_ids_are_400_before_upgrade)
{
    static const char *const bad[] = {
        "/ws/documents/",
        "/ws/documents/a/b",
        "/ws/documents/a%20b",
        "/ws/documents/a%2Fb",
        "/ws/documents/a!b",
        "/ws/documents/%41",
        "/ws/documents/caf\xc3\xa9",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        ck_assert_msg(upgrade_status(node, bad[i], NULL) == 400, "%s not refused with 400", bad[i]);
    char target[300];
    snprintf(target, sizeof(target), "/ws/documents/");
    memset(target + strlen(target), 'x', 129);
    target[strlen("/ws/documents/") + 129] = 0;
    ck_assert_int_eq(upgrade_status(node, target, NULL), 400);
}
END_TEST

START_TEST(valid_document_ids_upgrade)
{
    ck_assert_int_eq(upgrade_status(node, "/ws/documents/Doc_1.v2:main-x", NULL), 101);
    ck_assert_int_eq(upgrade_status(node, "/ws/documents/d?color=%23ff8800", NULL), 101);
    char target[300];
    snprintf(target, sizeof(target), "/ws/documents/");
    memset(target + strlen(target), 'y', 128);
    target[strlen("/ws/documents/") + 128] = 0;
    ck_assert_int_eq(upgrade_status(node, target, NULL), 101);
}
END_TEST

START_TEST(permessage_deflate_is_never_negotiated)
{
    char err[512];
    /* h_raw_connect refuses a response that carries Sec-WebSocket-Extensions. */
    h_raw *r = h_raw_connect(h_node_port(node), "/ws/documents/doc1", 0,
                             "Sec-WebSocket-Extensions: permessage-deflate; "
                             "client_max_window_bits\r\n",
                             err, sizeof(err));
    ck_assert_msg(r != NULL, "%s", err);
    h_raw_close(r);
}
END_TEST

START_TEST(origin_allow_list)
{
    h_node *n =
        h_node_start("--allowed-origins", "https://good.example,https://also.example", NULL);
    ck_assert_int_eq(upgrade_status(n, "/ws/documents/d", "Origin: https://good.example\r\n"), 101);
    ck_assert_int_eq(upgrade_status(n, "/ws/documents/d", "Origin: https://also.example\r\n"), 101);
    ck_assert_int_eq(upgrade_status(n, "/ws/documents/d", "Origin: https://evil.example\r\n"), 403);
    /* Exact match only: no prefix or suffix tricks. */
    ck_assert_int_eq(
        upgrade_status(n, "/ws/documents/d", "Origin: https://good.example.evil.example\r\n"), 403);
    /* The libwebsockets client sends the Origin header too. */
    wsc_sync_opts o = {0};
    o.origin = "https://good.example";
    wsc_sync *c = h_ws_opts(n, "d", &o);
    h_roundtrip(c);
    wsc_sync_destroy(c);
    char err[256];
    o.origin = "https://evil.example";
    c = wsc_sync_connect("127.0.0.1", h_node_port(n), "/ws/documents/d", &o, H_WAIT_MS, err,
                         sizeof(err));
    ck_assert_msg(c == NULL, "a disallowed origin was upgraded");
    h_node_finish(n);
}
END_TEST

START_TEST(any_origin_without_allow_list)
{
    ck_assert_int_eq(upgrade_status(node, "/ws/documents/d", "Origin: https://any.example\r\n"),
                     101);
}
END_TEST

/* Fetches /stats and returns the parsed object. */
static json_t *get_stats(h_node *n)
{
    h_http r;
    ck_assert_int_eq(h_http_get(h_node_port(n), "/stats", &r), 0);
    ck_assert_int_eq(r.status, 200);
    char ct[128];
    ck_assert_ptr_nonnull(h_http_header(&r, "Content-Type", ct, sizeof(ct)));
    ck_assert_msg(strstr(ct, "application/json") != NULL, "Content-Type %s", ct);
    json_error_t jerr;
    json_t *v = json_loads(r.body, 0, &jerr);
    ck_assert_msg(json_is_object(v), "/stats is not a JSON object: %s (%s)", r.body, jerr.text);
    h_http_free(&r);
    return v;
}

static json_int_t stat_at(const json_t *s, const char *group, const char *key)
{
    const json_t *o = group ? h_field(s, group) : s;
    return h_int(o, key);
}

START_TEST(stats_has_every_field)
{
    json_t *s = get_stats(node);
    char id[32];
    snprintf(id, sizeof(id), "it-%d", h_node_port(node));
    ck_assert_str_eq(h_str(s, "node_id"), id);
    static const char *const conn[] = {"active", "peak", "total", "authenticated", "joined"};
    for (size_t i = 0; i < 5; i++)
        ck_assert_int_ge(stat_at(s, "connections", conn[i]), 0);
    ck_assert_int_ge(stat_at(s, "messages", "in"), 0);
    ck_assert_int_ge(stat_at(s, "messages", "out"), 0);
    ck_assert_int_ge(stat_at(s, "messages", "rejected"), 0);
    ck_assert_int_ge(stat_at(s, "bytes", "in"), 0);
    ck_assert_int_ge(stat_at(s, "bytes", "out"), 0);
    ck_assert_int_ge(stat_at(s, NULL, "lag_drops"), 0);
    ck_assert_int_ge(stat_at(s, NULL, "auth_failures"), 0);
    ck_assert_int_ge(stat_at(s, NULL, "documents"), 0);
    json_decref(s);
}
END_TEST

/* Polls /stats until pred holds (stats may trail the socket events slightly). */
static json_t *stats_until(h_node *n, bool (*pred)(const json_t *s))
{
    int64_t deadline = clock_mono_ms() + H_WAIT_MS;
    for (;;) {
        json_t *s = get_stats(n);
        if (pred(s) || clock_mono_ms() > deadline)
            return s;
        json_decref(s);
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
}

static bool three_open_two_auth_one_joined(const json_t *s)
{
    const json_t *c = json_object_get(s, "connections");
    return json_integer_value(json_object_get(c, "active")) == 3 &&
           json_integer_value(json_object_get(c, "authenticated")) == 2 &&
           json_integer_value(json_object_get(c, "joined")) == 1;
}

static bool one_open(const json_t *s)
{
    const json_t *c = json_object_get(s, "connections");
    return json_integer_value(json_object_get(c, "active")) == 1;
}

START_TEST(stats_track_connections_and_messages)
{
    json_t *before = get_stats(node);
    wsc_sync *a = h_joined(node, "doc1", "alice");
    wsc_sync *b = h_ws(node, "doc1");
    json_decref(h_auth(b, "bob"));
    wsc_sync *c = h_ws(node, "doc2");
    h_send(c, "{\"type\":\"authenticate\",\"token\":\"garbage\"}");
    json_decref(h_expect(c, WSC_TEXT, "auth_result"));
    ck_assert_int_eq(h_expect_close(c), 4001);
    wsc_sync_destroy(c);
    c = h_ws(node, "doc2");

    json_t *s = stats_until(node, three_open_two_auth_one_joined);
    ck_assert_msg(three_open_two_auth_one_joined(s), "stats: %s", h_dump(s));
    ck_assert_int_ge(stat_at(s, "connections", "peak"), 3);
    ck_assert_int_ge(stat_at(s, "connections", "total"),
                     stat_at(before, "connections", "total") + 4);
    ck_assert_int_ge(stat_at(s, NULL, "auth_failures"), stat_at(before, NULL, "auth_failures") + 1);
    ck_assert_int_ge(stat_at(s, "messages", "in"), stat_at(before, "messages", "in") + 4);
    ck_assert_int_ge(stat_at(s, "messages", "out"), stat_at(before, "messages", "out") + 4);
    ck_assert_int_gt(stat_at(s, "bytes", "in"), stat_at(before, "bytes", "in"));
    ck_assert_int_gt(stat_at(s, "bytes", "out"), stat_at(before, "bytes", "out"));
    ck_assert_int_ge(stat_at(s, NULL, "documents"), 1);
    json_decref(s);

    wsc_sync_destroy(b);
    wsc_sync_destroy(c);
    s = stats_until(node, one_open);
    ck_assert_msg(one_open(s), "stats after two closes: %s", h_dump(s));
    ck_assert_int_ge(stat_at(s, "connections", "peak"), 3);
    json_decref(s);
    wsc_sync_destroy(a);
    json_decref(before);
}
END_TEST

/* Value of the first sample of metric name in Prometheus text, or -1 if absent. */
static double metric_value(const char *text, const char *name)
{
    size_t nl = strlen(name);
    for (const char *line = text; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, name, nl) == 0 && (line[nl] == ' ' || line[nl] == '{')) {
            const char *v = strchr(line + nl, ' ');
            return v ? strtod(v + 1, NULL) : -1;
        }
    }
    return -1;
}

START_TEST(metrics_in_prometheus_format)
{
    wsc_sync *a = h_joined(node, "doc1", "alice");
    h_http r;
    ck_assert_int_eq(h_http_get(h_node_port(node), "/metrics", &r), 0);
    ck_assert_int_eq(r.status, 200);
    char ct[128];
    ck_assert_ptr_nonnull(h_http_header(&r, "Content-Type", ct, sizeof(ct)));
    ck_assert_msg(strstr(ct, "text/plain") != NULL, "Content-Type %s", ct);
    static const char *const names[] = {
        "relay_connections_active", "relay_connections_peak",    "relay_connections_total",
        "relay_messages_in_total",  "relay_messages_out_total",  "relay_messages_rejected_total",
        "relay_lag_drops_total",    "relay_auth_failures_total", "relay_documents_active",
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        ck_assert_msg(metric_value(r.body, names[i]) >= 0, "metric %s missing in:\n%s", names[i],
                      r.body);
        char type_line[128];
        snprintf(type_line, sizeof(type_line), "# TYPE %s ", names[i]);
        ck_assert_msg(strstr(r.body, type_line) != NULL, "no TYPE line for %s", names[i]);
    }
    ck_assert_msg(metric_value(r.body, "relay_connections_active") == 1, "%s", r.body);
    ck_assert_msg(metric_value(r.body, "relay_documents_active") == 1, "%s", r.body);
    ck_assert_msg(metric_value(r.body, "relay_messages_in_total") >= 2, "%s", r.body);
    h_http_free(&r);
    wsc_sync_destroy(a);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("01_http");
    TCase *tc = tcase_create("http");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, healthz_and_readyz_answer_200);
    tcase_add_test(tc, unknown_path_is_404);
    tcase_add_test(tc, plain_get_on_document_path_is_426);
    tcase_add_test(tc, bad_document_ids_are_400_before_upgrade);
    tcase_add_test(tc, valid_document_ids_upgrade);
    tcase_add_test(tc, permessage_deflate_is_never_negotiated);
    tcase_add_test(tc, any_origin_without_allow_list);
    tcase_add_test(tc, stats_has_every_field);
    tcase_add_test(tc, stats_track_connections_and_messages);
    tcase_add_test(tc, metrics_in_prometheus_format);
    suite_add_tcase(s, tc);
    TCase *custom = tcase_create("custom_config");
    tcase_set_timeout(custom, H_TCASE_TIMEOUT);
    tcase_add_test(custom, origin_allow_list);
    suite_add_tcase(s, custom);
    return h_run_suite(s);
}
