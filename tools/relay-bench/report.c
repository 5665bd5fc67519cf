/* report.c - relay-bench's final report; see report.h. */
#include "report.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

const char *const report_err_names[REPORT_N_ERRS] = {
    "connect_failed", "closed",       "auth_failed",     "bad_request", "rate_limited",
    "unavailable",    "not_joined",   "forbidden",       "busy",        "internal",
    "too_large",      "unknown_type", "unauthenticated", "send_failed", "other"};

int report_err_index(const char *code)
{
    for (int i = 0; i < REPORT_N_ERRS - 1; i++)
        if (strcmp(report_err_names[i], code) == 0)
            return i;
    return REPORT_N_ERRS - 1;
}

void report_close_code_add(int (*codes)[2], int code, int count)
{
    for (int i = 0; i < BENCH_MAX_CODES; i++)
        if (codes[i][0] == code || !codes[i][1]) {
            codes[i][0] = code;
            codes[i][1] += count;
            return;
        }
}

/* The report as a JSON object (caller owns the reference). */
static json_t *report_json(const bench_opts *o, const report_stats *r, double expected,
                           double ratio, double rate, double us_per_msg)
{
    static const double qs[] = {0.5, 0.9, 0.99, 0.999};
    static const char *const qn[] = {"p50", "p90", "p99", "p99.9"};
    json_t *j =
        json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f}", "mode",
                  o->idle ? "idle" : "load", "connections", (json_int_t)o->conns, "joined",
                  (json_int_t)r->s.joined, "failed", (json_int_t)r->s.failed, "offered",
                  (json_int_t)r->s.sent_win, "acked", (json_int_t)r->s.acked_win, "delivered",
                  (json_int_t)r->s.delivered_win, "expected", (json_int_t)expected,
                  "delivery_ratio", ratio, "delivered_per_s", rate, "window_s", r->window_s);
    json_t *lat = json_object(), *con = json_object(), *err = json_object();
    for (int i = 0; i < 4; i++) {
        json_object_set_new(lat, qn[i], json_real((double)hist_quantile(&r->lat, qs[i]) / 1e3));
        json_object_set_new(con, qn[i], json_real((double)hist_quantile(&r->connect, qs[i]) / 1e6));
    }
    json_object_set_new(lat, "max", json_real((double)r->lat.max / 1e3));
    json_object_set_new(lat, "count", json_integer((json_int_t)r->lat.total));
    json_object_set_new(con, "max", json_real((double)r->connect.max / 1e6));
    for (int i = 0; i < REPORT_N_ERRS; i++)
        if (r->errors[i])
            json_object_set_new(err, report_err_names[i], json_integer((json_int_t)r->errors[i]));
    json_object_set_new(j, "latency_us", lat);
    json_object_set_new(con, "join_retries", json_integer((json_int_t)r->join_retried));
    json_object_set_new(j, "connect_ms", con);
    for (int i = 0; i < BENCH_MAX_CODES && r->close_codes[i][1]; i++) {
        char key[32];
        snprintf(key, sizeof(key), "close_%d", r->close_codes[i][0]);
        json_object_set_new(err, key, json_integer(r->close_codes[i][1]));
    }
    json_object_set_new(j, "errors", err);
    json_object_set_new(
        j, "lagged",
        json_pack("{s:I,s:I}", "messages", (json_int_t)r->lagged, "missed", (json_int_t)r->missed));
    json_object_set_new(
        j, "sequence",
        json_pack("{s:I,s:I}", "gaps", (json_int_t)r->gaps, "reorders", (json_int_t)r->reorders));
    json_object_set_new(j, "bench",
                        json_pack("{s:f,s:f,s:I,s:I}", "cpu_s", r->bench_cpu_s, "cpu_pct",
                                  r->window_s > 0 ? 100 * r->bench_cpu_s / r->window_s : 0,
                                  "skipped", (json_int_t)r->skipped, "throttled",
                                  (json_int_t)r->throttled));
    json_t *nodes = json_array();
    for (int i = 0; i < o->n_pids; i++)
        json_array_append_new(nodes,
                              json_pack("{s:i,s:f,s:I}", "pid", o->pids[i], "cpu_s",
                                        r->node_cpu_s[i], "rss_kb", (json_int_t)r->node_rss_kb[i]));
    json_object_set_new(j, "nodes", nodes);
    json_object_set_new(j, "acked_per_s",
                        json_real(r->window_s > 0 ? (double)r->s.acked_win / r->window_s : 0));
    json_object_set_new(j, "node_cpu_s", json_real(r->node_cpu_total));
    json_object_set_new(j, "node_us_per_msg", json_real(us_per_msg));
    return j;
}

/* The human-readable report, one figure group per line. */
static void report_text(const bench_opts *o, const report_stats *r, double expected, double ratio,
                        double rate, double us_per_msg)
{
    printf("connections %ld joined %" PRIu64 " failed %" PRIu64 "\n", o->conns, r->s.joined,
           r->s.failed);
    if (!o->idle) {
        printf("window %.1f s: offered %" PRIu64 " acked %" PRIu64 " delivered %" PRIu64
               " expected %.0f ratio %.6f rate %.0f msg/s\n",
               r->window_s, r->s.sent_win, r->s.acked_win, r->s.delivered_win, expected, ratio,
               rate);
        printf("latency us: p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f\n",
               hist_quantile(&r->lat, 0.5) / 1e3, hist_quantile(&r->lat, 0.9) / 1e3,
               hist_quantile(&r->lat, 0.99) / 1e3, hist_quantile(&r->lat, 0.999) / 1e3,
               r->lat.max / 1e3);
    }
    printf("connect ms: p50 %.1f p99 %.1f max %.1f (join retries %" PRIu64 ")\n",
           hist_quantile(&r->connect, 0.5) / 1e6, hist_quantile(&r->connect, 0.99) / 1e6,
           r->connect.max / 1e6, r->join_retried);
    printf("errors:");
    for (int i = 0; i < REPORT_N_ERRS; i++)
        if (r->errors[i])
            printf(" %s=%" PRIu64, report_err_names[i], r->errors[i]);
    for (int i = 0; i < BENCH_MAX_CODES && r->close_codes[i][1]; i++)
        printf(" close_%d=%d", r->close_codes[i][0], r->close_codes[i][1]);
    printf("\nlagged %" PRIu64 " (missed %" PRIu64 ") gaps %" PRIu64 " reorders %" PRIu64
           " skipped %" PRIu64 " throttled %" PRIu64 "\n",
           r->lagged, r->missed, r->gaps, r->reorders, r->skipped, r->throttled);
    printf("bench cpu %.2f s (%.0f%% of the window)\n", r->bench_cpu_s,
           r->window_s > 0 ? 100 * r->bench_cpu_s / r->window_s : 0);
    for (int i = 0; i < o->n_pids; i++)
        printf("node %d: cpu %.2f s rss %ld kB\n", o->pids[i], r->node_cpu_s[i], r->node_rss_kb[i]);
    if (o->n_pids)
        printf("node cpu per delivered message: %.3f us\n", us_per_msg);
}

void report_print(const bench_opts *o, const report_stats *r)
{
    double expected = (double)r->s.acked_win * (o->per_doc - 1);
    double ratio = expected > 0 ? (double)r->s.delivered_win / expected : 0;
    double rate = r->window_s > 0 ? (double)r->s.delivered_win / r->window_s : 0;
    double us_per_msg =
        r->s.delivered_win ? r->node_cpu_total * 1e6 / (double)r->s.delivered_win : 0;
    if (o->json) {
        json_t *j = report_json(o, r, expected, ratio, rate, us_per_msg);
        json_dumpf(j, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        json_decref(j);
    } else {
        report_text(o, r, expected, ratio, rate, us_per_msg);
    }
}
