/*
 * harness_cluster_ws.c - the buffering WebSocket client of the cluster scenarios: operation
 * broadcasts are kept in arrival order, every other message waits in an inbox until a test
 * takes it by type or by ref, so replies and broadcasts from other nodes may interleave freely.
 */
#define _GNU_SOURCE /* vasprintf */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness_cluster.h"
#include "relay/clock.h"

hc_client *hc_connect_at(const char *file, int line, int port, const char *doc)
{
    hc_client *c = calloc(1, sizeof *c);
    h_check_at(file, line, c != NULL, "out of memory");
    char path[256], err[512];
    snprintf(path, sizeof path, "/ws/documents/%s", doc);
    c->ws = wsc_sync_connect("127.0.0.1", port, path, NULL, H_WAIT_MS, err, sizeof err);
    h_check_at(file, line, c->ws != NULL, "connecting to :%d%s: %s", port, path, err);
    snprintf(c->doc, sizeof c->doc, "%s", doc);
    c->port = port;
    c->ops = json_array();
    c->inbox = json_array();
    c->seen = json_array();
    return c;
}

/* Files one received message. */
static void hc_file(hc_client *c, wsc_msg *m)
{
    json_t *v = m->json ? json_incref(m->json) : json_pack("{s:s}", "type", "(undecodable)");
    const char *type = json_string_value(json_object_get(v, "type"));
    if (type && !strcmp(type, "operation")) {
        json_array_append_new(c->ops, v);
        return;
    }
    json_array_append(c->seen, v);
    json_array_append_new(c->inbox, v);
}

int hc_pump(hc_client *c, int timeout_ms)
{
    int n = 0;
    wsc_msg m;
    wsc_sync_status st = wsc_sync_recv(c->ws, timeout_ms, &m);
    while (st == WSC_SYNC_OK) {
        hc_file(c, &m);
        wsc_msg_clear(&m);
        n++;
        st = wsc_sync_recv(c->ws, 0, &m);
    }
    if (st == WSC_SYNC_CLOSED || st == WSC_SYNC_ERROR) {
        c->closed = true;
        if (n == 0)
            return -1;
    }
    return n;
}

/* Index of the first inbox message matching (type, ref); ref NULL matches any. -1 if none. */
static long hc_find(const hc_client *c, const char *type, const char *const *types, const char *ref)
{
    for (size_t i = 0; i < json_array_size(c->inbox); i++) {
        json_t *v = json_array_get(c->inbox, i);
        const char *t = json_string_value(json_object_get(v, "type"));
        if (!t)
            continue;
        bool type_ok = type && !strcmp(t, type);
        for (size_t k = 0; types && types[k] && !type_ok; k++)
            type_ok = !strcmp(t, types[k]);
        if (!type_ok)
            continue;
        if (ref) {
            const char *r = json_string_value(json_object_get(v, "ref"));
            if (!r || strcmp(r, ref) != 0)
                continue;
        }
        return (long)i;
    }
    return -1;
}

/* Waits up to timeout_ms for a matching inbox message and removes it. */
static json_t *hc_take_match(hc_client *c, const char *type, const char *const *types,
                             const char *ref, int timeout_ms)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    for (;;) {
        long i = hc_find(c, type, types, ref);
        if (i >= 0) {
            json_t *v = json_incref(json_array_get(c->inbox, (size_t)i));
            json_array_remove(c->inbox, (size_t)i);
            return v;
        }
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0 || (c->closed && wsc_sync_pending(c->ws) == 0))
            return NULL;
        hc_pump(c, (int)(left < 50 ? left : 50));
    }
}

json_t *hc_take(hc_client *c, const char *type, int timeout_ms)
{
    return hc_take_match(c, type, NULL, NULL, timeout_ms);
}

json_t *hc_take_reply(hc_client *c, const char *ref, int timeout_ms)
{
    static const char *const replies[] = {"ack", "error", NULL};
    return hc_take_match(c, NULL, replies, ref, timeout_ms);
}

const char *hc_recent(const hc_client *c)
{
    static char bufs[2][1600];
    static int next;
    char *b = bufs[next++ & 1];
    size_t n = json_array_size(c->seen), from = n > 6 ? n - 6 : 0, used = 0;
    b[0] = 0;
    used += (size_t)snprintf(b, sizeof bufs[0],
                             "%zu ops received; last messages:", json_array_size(c->ops));
    for (size_t i = from; i < n && used < sizeof bufs[0]; i++)
        used += (size_t)snprintf(b + used, sizeof bufs[0] - used, " %.240s",
                                 h_dump(json_array_get(c->seen, i)));
    if (c->closed && used < sizeof bufs[0])
        snprintf(b + used, sizeof bufs[0] - used, " (connection closed)");
    return b;
}

json_t *hc_expect_at(const char *file, int line, hc_client *c, const char *type, int timeout_ms)
{
    json_t *v = hc_take(c, type, timeout_ms);
    h_check_at(file, line, v != NULL, "expected %s on %s within %d ms; %s", type, c->doc,
               timeout_ms, hc_recent(c));
    return v;
}

void hc_auth_at(const char *file, int line, hc_client *c, const char *sub)
{
    char *tok = h_token(sub, NULL, 3600);
    h_check_at(file, line, tok != NULL, "token_mint_hs256 failed");
    int rc = wsc_sync_sendf(c->ws, "{\"type\":\"authenticate\",\"token\":\"%s\"}", tok);
    free(tok);
    h_check_at(file, line, rc == 0, "sending authenticate failed");
    json_t *r = hc_expect_at(file, line, c, "auth_result", H_WAIT_MS);
    h_check_at(file, line, json_is_true(json_object_get(r, "success")), "auth failed: %s",
               h_dump(r));
    json_decref(c->auth);
    c->auth = r;
}

json_t *hc_join_at(const char *file, int line, hc_client *c)
{
    int rc = wsc_sync_sendf(c->ws, "{\"type\":\"join_document\"}");
    h_check_at(file, line, rc == 0, "sending join_document failed");
    json_t *j = hc_take(c, "joined_document", H_WAIT_MS);
    if (!j) {
        json_t *e = hc_take(c, "error", 0);
        h_check_at(file, line, false, "join_document on %s got %s; %s", c->doc,
                   e ? h_dump(e) : "no reply", hc_recent(c));
    }
    return j;
}

hc_client *hc_joined_at(const char *file, int line, int port, const char *doc, const char *sub)
{
    hc_client *c = hc_connect_at(file, line, port, doc);
    hc_auth_at(file, line, c, sub);
    json_decref(hc_join_at(file, line, c));
    return c;
}

void hc_send_op_at(const char *file, int line, hc_client *c, const char *ref,
                   const char *payload_json)
{
    int rc = wsc_sync_sendf(c->ws, "{\"type\":\"operation\",\"ref\":\"%s\",\"payload\":%s}", ref,
                            payload_json);
    h_check_at(file, line, rc == 0, "sending operation %s failed (%s)", ref, wsc_sync_error(c->ws));
}

json_int_t hc_op_acked_at(const char *file, int line, hc_client *c, const char *ref,
                          const char *payload_json)
{
    hc_send_op_at(file, line, c, ref, payload_json);
    json_t *r = hc_take_reply(c, ref, H_WAIT_MS);
    h_check_at(file, line, r != NULL, "no reply to operation %s within %d ms; %s", ref, H_WAIT_MS,
               hc_recent(c));
    const char *type = json_string_value(json_object_get(r, "type"));
    h_check_at(file, line, type && !strcmp(type, "ack"), "operation %s: %s", ref, h_dump(r));
    json_int_t seq = h_int_at(file, line, r, "seq");
    json_decref(r);
    return seq;
}

bool hc_wait_ops(hc_client *c, size_t count, int timeout_ms)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    while (json_array_size(c->ops) < count) {
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0 || (c->closed && wsc_sync_pending(c->ws) == 0))
            return false;
        hc_pump(c, (int)(left < 50 ? left : 50));
    }
    return true;
}

json_t *hc_sync_at(const char *file, int line, hc_client *c, json_int_t since, char **epoch)
{
    json_t *all = json_array();
    static unsigned serial;
    if (epoch)
        *epoch = NULL;
    for (int page = 0; page < 1000; page++) {
        char ref[64];
        snprintf(ref, sizeof ref, "sync-%u", serial++);
        int rc = wsc_sync_sendf(c->ws, "{\"type\":\"sync_request\",\"since\":%lld,\"ref\":\"%s\"}",
                                (long long)since, ref);
        h_check_at(file, line, rc == 0, "sending sync_request failed");
        static const char *const replies[] = {"sync_response", "error", NULL};
        json_t *r = hc_take_match(c, NULL, replies, ref, H_WAIT_MS);
        h_check_at(file, line, r != NULL, "no sync_response within %d ms; %s", H_WAIT_MS,
                   hc_recent(c));
        h_check_at(file, line, !strcmp(h_str_at(file, line, r, "type"), "sync_response"),
                   "sync_request since %lld: %s", (long long)since, h_dump(r));
        json_t *ops = h_field_at(file, line, r, "operations");
        h_check_at(file, line, json_is_array(ops), "operations is not an array: %s", h_dump(r));
        json_array_extend(all, ops);
        if (epoch) {
            free(*epoch);
            *epoch = strdup(h_str_at(file, line, r, "epoch"));
        }
        bool more = h_bool_at(file, line, r, "has_more");
        size_t n = json_array_size(ops);
        if (n > 0)
            since = h_int_at(file, line, json_array_get(ops, n - 1), "seq");
        json_decref(r);
        if (!more)
            return all;
        h_check_at(file, line, n > 0, "has_more with no operations");
    }
    h_check_at(file, line, false, "sync_request did not end after 1000 pages");
    return all;
}

size_t hc_count_seen(const hc_client *c, const char *type, const char *key, const char *value)
{
    size_t n = 0;
    for (size_t i = 0; i < json_array_size(c->seen); i++) {
        json_t *v = json_array_get(c->seen, i);
        const char *t = json_string_value(json_object_get(v, "type"));
        if (!t || strcmp(t, type) != 0)
            continue;
        if (key) {
            const char *s = json_string_value(json_object_get(v, key));
            if (!s || strcmp(s, value) != 0)
                continue;
        }
        n++;
    }
    return n;
}

void hc_client_destroy(hc_client *c)
{
    if (!c)
        return;
    wsc_sync_destroy(c->ws);
    json_decref(c->auth);
    json_decref(c->ops);
    json_decref(c->inbox);
    json_decref(c->seen);
    free(c);
}
