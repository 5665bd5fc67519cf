#include "http.h"

#include <stdlib.h>
#include <string.h>

#include "metrics.h"
#include "relay/log.h"

#define DOC_PREFIX "/ws/documents/"

int http_document_path(const char *uri, char *out, size_t outlen)
{
    size_t plen = strlen(DOC_PREFIX);
    if (strncmp(uri, DOC_PREFIX, plen) != 0)
        return strcmp(uri, "/ws/documents") == 0 ? 400 : 404;
    const char *id = uri + plen;
    size_t len = strcspn(id, "?");
    if (!codec_document_id_valid(id, len) || len >= outlen)
        return 400;
    memcpy(out, id, len);
    out[len] = '\0';
    return 0;
}

/* Sends a complete response. Returns what the HTTP callback should return. */
static int http_respond(struct lws *wsi, unsigned status, const char *ctype, const char *body,
                        size_t len, const char *extra_name, const char *extra_value)
{
    uint8_t buf[LWS_PRE + 1024], *start = buf + LWS_PRE, *p = start, *end = buf + sizeof buf;
    if (lws_add_http_common_headers(wsi, status, ctype, (lws_filepos_t)len, &p, end))
        return 1;
    if (extra_name && lws_add_http_header_by_name(wsi, (const unsigned char *)extra_name,
                                                  (const unsigned char *)extra_value,
                                                  (int)strlen(extra_value), &p, end))
        return 1;
    if (lws_add_http_header_by_name(wsi, (const unsigned char *)"cache-control:",
                                    (const unsigned char *)"no-store", 8, &p, end) ||
        lws_finalize_write_http_header(wsi, start, &p, end))
        return 1;
    if (len) {
        uint8_t *copy = malloc(LWS_PRE + len);
        if (!copy)
            return 1;
        memcpy(copy + LWS_PRE, body, len);
        int wrote = lws_write(wsi, copy + LWS_PRE, len, LWS_WRITE_HTTP_FINAL);
        free(copy);
        if (wrote < (int)len)
            return 1;
    }
    return lws_http_transaction_completed(wsi) ? -1 : 0;
}

static int http_text(struct lws *wsi, unsigned status, const char *text)
{
    return http_respond(wsi, status, "text/plain; charset=utf-8", text, strlen(text), NULL, NULL);
}

/* /stats?scope=cluster: the backend's latest cluster view; a standalone node is a cluster of
 * one. */
static int http_cluster_stats(relay_node *n, struct lws *wsi)
{
    if (n->cluster_stats)
        return http_respond(wsi, 200, "application/json", n->cluster_stats,
                            strlen(n->cluster_stats), NULL, NULL);
    if (n->cfg->redis_url && *n->cfg->redis_url)
        return http_text(wsi, 503, "cluster stats not available yet\n");
    json_t *self = metrics_stats_json(n->cfg->node_id, &n->stats);
    json_t *totals = self ? json_deep_copy(self) : NULL;
    if (totals)
        json_object_del(totals, "node_id");
    json_t *doc = json_pack("{s:[O], s:o, s:I}", "nodes", self, "totals", totals, "peak_concurrent",
                            (json_int_t)n->stats.peak);
    json_decref(self);
    char *body = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!body)
        return http_text(wsi, 500, "out of memory\n");
    int rc = http_respond(wsi, 200, "application/json", body, strlen(body), NULL, NULL);
    free(body);
    return rc;
}

static int http_stats(relay_node *n, struct lws *wsi)
{
    char scope[32];
    n->stats.documents = channel_registry_count(n->channels);
    const char *sc = lws_get_urlarg_by_name(wsi, "scope=", scope, sizeof scope);
    if (sc && !strcmp(sc, "cluster"))
        return http_cluster_stats(n, wsi);
    json_t *j = metrics_stats_json(n->cfg->node_id, &n->stats);
    char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!body)
        return http_text(wsi, 500, "out of memory\n");
    int rc = http_respond(wsi, 200, "application/json", body, strlen(body), NULL, NULL);
    free(body);
    return rc;
}

static int http_metrics(relay_node *n, struct lws *wsi)
{
    n->stats.documents = channel_registry_count(n->channels);
    char *body = metrics_prometheus(n->cfg->node_id, &n->stats, node_ready(n));
    if (!body)
        return http_text(wsi, 500, "out of memory\n");
    int rc = http_respond(wsi, 200, "text/plain; version=0.0.4; charset=utf-8", body, strlen(body),
                          NULL, NULL);
    free(body);
    return rc;
}

int http_handle(relay_node *n, struct lws *wsi, const char *uri)
{
    char doc[129];
    if (lws_hdr_total_length(wsi, WSI_TOKEN_GET_URI) <= 0)
        return http_text(wsi, 405, "method not allowed\n");
    if (!strcmp(uri, "/healthz"))
        return http_text(wsi, 200, "ok\n");
    if (!strcmp(uri, "/readyz"))
        return node_ready(n) ? http_text(wsi, 200, "ready\n") : http_text(wsi, 503, "not ready\n");
    if (!strcmp(uri, "/stats"))
        return http_stats(n, wsi);
    if (!strcmp(uri, "/metrics"))
        return http_metrics(n, wsi);
    int st = http_document_path(uri, doc, sizeof doc);
    if (st == 0)
        return http_respond(wsi, 426, "text/plain; charset=utf-8", "upgrade required\n", 17,
                            "upgrade:", "websocket");
    return http_text(wsi, (unsigned)st, st == 400 ? "bad document id\n" : "not found\n");
}

/* True when origin is one of the comma-separated allowed origins (exact match). */
static bool http_origin_allowed(const char *allowed, const char *origin)
{
    size_t olen = strlen(origin);
    for (const char *p = allowed; *p;) {
        size_t len = strcspn(p, ",");
        while (len && *p == ' ')
            p++, len--;
        size_t l = len;
        while (l && p[l - 1] == ' ')
            l--;
        if (l == olen && !strncmp(p, origin, olen))
            return true;
        p += len;
        if (*p == ',')
            p++;
    }
    return false;
}

int http_confirm_upgrade(relay_node *n, struct lws *wsi)
{
    char uri[512], doc[129], origin[256];
    if (lws_hdr_copy(wsi, uri, sizeof uri, WSI_TOKEN_GET_URI) < 0)
        return lws_return_http_status(wsi, 414, "uri too long") ? -1 : 1;
    int st = http_document_path(uri, doc, sizeof doc);
    if (st)
        return lws_return_http_status(wsi, (unsigned)st,
                                      st == 400 ? "bad document id" : "not found")
                   ? -1
                   : 1;
    const char *allowed = n->cfg->allowed_origins;
    if (allowed && *allowed) {
        if (lws_hdr_copy(wsi, origin, sizeof origin, WSI_TOKEN_ORIGIN) <= 0 ||
            !http_origin_allowed(allowed, origin))
            return lws_return_http_status(wsi, 403, "origin not allowed") ? -1 : 1;
    }
    if (n->phase != NODE_RUNNING)
        return lws_return_http_status(wsi, 503, "draining") ? -1 : 1;
    if (n->cfg->max_connections && n->stats.active >= (uint64_t)n->cfg->max_connections) {
        log_warn("refusing connection: max-connections %d reached", n->cfg->max_connections);
        return lws_return_http_status(wsi, 503, "too many connections") ? -1 : 1;
    }
    return 0;
}
