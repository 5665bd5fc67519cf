/**
 * @file metrics.h
 * The node's stats as /stats JSON and /metrics Prometheus text. WebSocket thread only.
 */
#ifndef RELAY_METRICS_H
#define RELAY_METRICS_H

#include <jansson.h>

#include "stats.h"

/* {node_id, connections:{active, peak, total, authenticated, joined}, messages:{in, out,
 * rejected}, bytes:{in, out}, lag_drops, auth_failures, documents}. New reference or NULL. */
json_t *metrics_stats_json(const char *node_id, const relay_stats *st);

/* Adds every integer of src into acc, recursively: how cluster totals are made from the nodes'
 * /stats documents (the node's /stats?scope=cluster and relayctl agree by sharing this). */
void metrics_sum(json_t *acc, json_t *src);

/* Prometheus text exposition format; malloc'd string or NULL. */
char *metrics_prometheus(const char *node_id, const relay_stats *st, int ready);

#endif
