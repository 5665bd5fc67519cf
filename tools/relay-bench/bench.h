/**
 * @file bench.h
 * What relay-bench's modules share: its limits, the parsed options and the summed progress
 * counters. Options are parsed (and owned) by relay-bench.c's main(); after parsing they are
 * read-only and read by every thread.
 */
#ifndef RELAY_BENCH_BENCH_H
#define RELAY_BENCH_BENCH_H

#include <stdbool.h>
#include <stdint.h>

#define BENCH_MAX_LIST    64
#define BENCH_MAX_THREADS 32
#define BENCH_MAX_PIDS    8
#define BENCH_MAX_CODES   16
#define BENCH_MIN_PAYLOAD 32
#define BENCH_MAX_PAYLOAD 65536

typedef struct bench_endpoint {
    char host[64];
    int port;
} bench_endpoint;

typedef struct bench_opts {
    bench_endpoint eps[BENCH_MAX_LIST];
    int n_eps;
    char binds[BENCH_MAX_LIST][64];
    int n_binds;
    long conns; /* total connections; docs * per_doc unless --conns */
    long docs;
    int per_doc, senders;
    double rate; /* ops/s per sender */
    int payload;
    double warmup_s, duration_s, drain_s, ramp, connect_timeout_s, hold_s;
    bool idle, binary, json;
    int threads;
    int max_inflight;
    const char *secret, *token, *doc_prefix, *ready_file, *query;
    int pids[BENCH_MAX_PIDS];
    int n_pids;
} bench_opts;

/* The threads' progress counters summed at one moment (the *_win ones count only operations
 * sent inside the measured window). */
typedef struct bench_totals {
    uint64_t up, joined, failed, settled, sent, acked, delivered, sent_win, acked_win,
        delivered_win;
} bench_totals;

#endif
