/**
 * @file hist.h
 * Log-linear latency histogram of relay-bench (HdrHistogram-like: 64 linear sub-buckets per
 * power of two, so every recorded value is kept to within ~1.6%).
 *
 * The type is not opaque on purpose: each bench thread embeds its histograms by value, records
 * without locks or allocation, and the main thread merges them after joining the threads. A
 * zero-initialised hist is empty. A hist has no internal locking; one thread at a time.
 */
#ifndef RELAY_BENCH_HIST_H
#define RELAY_BENCH_HIST_H

#include <stdint.h>

#define HIST_SUB     64
#define HIST_BUCKETS (2 * HIST_SUB + 40 * HIST_SUB)

typedef struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total, max;
} hist;

/* Counts value v in h (values beyond the last bucket land in it; max stays exact). */
void hist_record(hist *h, uint64_t v);

/* Adds every count of src to dst and keeps the larger max. src is not changed. */
void hist_merge(hist *dst, const hist *src);

/* Returns the value at quantile q (0..1): the upper edge of the bucket holding it, capped at
 * the recorded max; 0 for an empty histogram. */
uint64_t hist_quantile(const hist *h, double q);

#endif
