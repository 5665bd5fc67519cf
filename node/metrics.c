#include "metrics.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

json_t *metrics_stats_json(const char *node_id, const relay_stats *st)
{
    return json_pack(
        "{s:s, s:{s:I, s:I, s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I}, s:{s:I, s:I}, s:I, "
        "s:I, s:I}",
        "node_id", node_id, "connections", "active", (json_int_t)st->active, "peak",
        (json_int_t)st->peak, "total", (json_int_t)st->total, "authenticated",
        (json_int_t)st->authenticated, "joined", (json_int_t)st->joined, "messages", "in",
        (json_int_t)st->msgs_in, "out", (json_int_t)st->msgs_out, "rejected",
        (json_int_t)st->rejected, "writes", (json_int_t)st->writes, "bytes", "in",
        (json_int_t)st->bytes_in, "out", (json_int_t)st->bytes_out, "lag_drops",
        (json_int_t)st->lag_drops, "auth_failures", (json_int_t)st->auth_failures, "documents",
        (json_int_t)st->documents);
}

void metrics_sum(json_t *acc, json_t *src)
{
    const char *key;
    json_t *v;
    json_object_foreach(src, key, v)
    {
        json_t *have = json_object_get(acc, key);
        if (json_is_integer(v)) {
            json_int_t sum = json_integer_value(v) + (have ? json_integer_value(have) : 0);
            json_object_set_new(acc, key, json_integer(sum));
        } else if (json_is_object(v)) {
            if (!have) {
                have = json_object();
                json_object_set_new(acc, key, have);
            }
            if (json_is_object(have))
                metrics_sum(have, v);
        }
    }
}

typedef struct metric_row {
    const char *name, *type, *help;
    size_t offset;
} metric_row;

#define ST(f) offsetof(relay_stats, f)

static const metric_row metric_rows[] = {
    {"relay_connections_active", "gauge", "Open WebSocket connections", ST(active)},
    {"relay_connections_peak", "gauge", "Highest concurrent connections since start", ST(peak)},
    {"relay_connections_total", "counter", "Connections accepted since start", ST(total)},
    {"relay_connections_authenticated", "gauge", "Authenticated connections", ST(authenticated)},
    {"relay_connections_joined", "gauge", "Connections joined to their document", ST(joined)},
    {"relay_messages_in_total", "counter", "Messages received from clients", ST(msgs_in)},
    {"relay_messages_out_total", "counter", "Messages sent to clients", ST(msgs_out)},
    {"relay_messages_rejected_total", "counter", "Client messages answered with an error",
     ST(rejected)},
    {"relay_writes_total", "counter", "Socket writes carrying messages to clients (one per batch)",
     ST(writes)},
    {"relay_bytes_in_total", "counter", "Bytes received in client messages", ST(bytes_in)},
    {"relay_bytes_out_total", "counter", "Bytes sent in messages to clients", ST(bytes_out)},
    {"relay_lag_drops_total", "counter", "Broadcasts dropped for lagging clients", ST(lag_drops)},
    {"relay_auth_failures_total", "counter", "Failed authentications", ST(auth_failures)},
    {"relay_documents_active", "gauge", "Documents with local subscribers", ST(documents)},
};

char *metrics_prometheus(const char *node_id, const relay_stats *st, int ready)
{
    char *out = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&out, &len);
    if (!f)
        return NULL;
    for (size_t i = 0; i < sizeof metric_rows / sizeof metric_rows[0]; i++) {
        const metric_row *r = &metric_rows[i];
        uint64_t v = *(const uint64_t *)((const char *)st + r->offset);
        fprintf(f, "# HELP %s %s\n# TYPE %s %s\n%s{node=\"%s\"} %llu\n", r->name, r->help, r->name,
                r->type, r->name, node_id, (unsigned long long)v);
    }
    fprintf(f,
            "# HELP relay_ready Whether the node accepts traffic\n# TYPE relay_ready gauge\n"
            "relay_ready{node=\"%s\"} %d\n",
            node_id, ready);
    if (fclose(f) != 0) {
        free(out);
        return NULL;
    }
    return out;
}
