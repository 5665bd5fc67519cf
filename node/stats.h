/**
 * @file stats.h
 * The node's counters and gauges. Owned and written by the WebSocket thread; the Redis thread
 * receives copies (snapshots) through its queue, never a pointer.
 */
#ifndef RELAY_STATS_H
#define RELAY_STATS_H

#include <stdint.h>

typedef struct relay_stats {
    uint64_t active;        /* open WebSocket connections, from upgrade to close */
    uint64_t peak;          /* highest active ever */
    uint64_t total;         /* connections accepted since start */
    uint64_t authenticated; /* connections currently authenticated (joined or not) */
    uint64_t joined;        /* connections currently joined to their document */
    uint64_t msgs_in, msgs_out, rejected;
    uint64_t writes; /* socket writes carrying messages: msgs_out / writes is the batching */
    uint64_t bytes_in, bytes_out;
    uint64_t lag_drops;
    uint64_t auth_failures;
    uint64_t documents; /* documents with local subscribers */
} relay_stats;

#endif
