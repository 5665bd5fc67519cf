/**
 * @file http.h
 * The node's plain HTTP side on the WebSocket port: /healthz, /readyz, /stats, /metrics, and
 * the checks every upgrade passes before it becomes a WebSocket (path, Origin, capacity).
 * WebSocket thread only.
 */
#ifndef RELAY_HTTP_H
#define RELAY_HTTP_H

#include <stddef.h>

#include "node.h"

/* Answers one HTTP request for uri. Returns what the lws callback should return. */
int http_handle(relay_node *n, struct lws *wsi, const char *uri);

/* Decides whether an upgrade may proceed: 0 yes; 1 when a 4xx/5xx answer was sent; -1 to hang
 * up. */
int http_confirm_upgrade(relay_node *n, struct lws *wsi);

/* Extracts the document id of a /ws/documents/{id} path into out (size >= 129). Returns 0 when
 * valid, 404 for another path, 400 for a bad id. */
int http_document_path(const char *uri, char *out, size_t outlen);

#endif
