/* hist.c - log-linear latency histogram; see hist.h. */
#include "hist.h"

/* Bucket index of v: exact below 128, else ~1.6% wide (top 7 significant bits kept). */
static int hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    int idx = 2 * HIST_SUB + (shift - 1) * HIST_SUB + (int)((v >> shift) - HIST_SUB);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* Highest value that falls in bucket idx (quantiles report the bucket's upper edge). */
static uint64_t hist_upper(int idx)
{
    if (idx < 2 * HIST_SUB)
        return (uint64_t)idx;
    int shift = (idx - 2 * HIST_SUB) / HIST_SUB + 1;
    uint64_t sub = (uint64_t)((idx - 2 * HIST_SUB) % HIST_SUB + HIST_SUB);
    return ((sub + 1) << shift) - 1;
}

void hist_record(hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

void hist_merge(hist *dst, const hist *src)
{
    for (int i = 0; i < HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    if (src->max > dst->max)
        dst->max = src->max;
}

uint64_t hist_quantile(const hist *h, double q)
{
    if (!h->total)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->total + 0.5);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            uint64_t u = hist_upper(i);
            return u < h->max ? u : h->max;
        }
    }
    return h->max;
}
