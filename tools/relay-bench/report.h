/**
 * @file report.h
 * relay-bench's final report: the error vocabulary it counts, the figures collected from all
 * threads, and their printing as text or as one JSON line. The bench scripts parse both: keep
 * every field name and line format stable. Main thread only, after the threads have stopped;
 * report_err_index() and report_close_code_add() may run on any thread on its own data.
 */
#ifndef RELAY_BENCH_REPORT_H
#define RELAY_BENCH_REPORT_H

#include <stdint.h>

#include "bench.h"
#include "hist.h"

/* Error kinds counted; the last one, "other", collects codes the table does not name. */
#define REPORT_N_ERRS 15
extern const char *const report_err_names[REPORT_N_ERRS];

/* Returns the index of code in report_err_names, or that of "other" if it is not there. */
int report_err_index(const char *code);

/* Adds count to close code `code` in the table codes[BENCH_MAX_CODES] of {code, count} pairs,
 * taking the first empty slot for a new code. A code that finds no slot is dropped. */
void report_close_code_add(int (*codes)[2], int code, int count);

/* Everything the report shows, summed over the threads by the caller. */
typedef struct report_stats {
    bench_totals s;
    hist lat, connect; /* sender-to-receiver latency, connect-to-joined time; ns */
    uint64_t errors[REPORT_N_ERRS];
    uint64_t lagged, missed, gaps, reorders, skipped, throttled, join_retried, batches;
    double window_s, bench_cpu_s, node_cpu_s[BENCH_MAX_PIDS], node_cpu_total;
    long node_rss_kb[BENCH_MAX_PIDS];
    int close_codes[BENCH_MAX_CODES][2];
} report_stats;

/* Prints r on stdout: one compact JSON object when o->json, else the text summary. */
void report_print(const bench_opts *o, const report_stats *r);

#endif
