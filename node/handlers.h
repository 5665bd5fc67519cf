/**
 * @file handlers.h
 * What the node does with each client request (protocol v1, docs/PROTOCOL.md), and the backend
 * results that complete asynchronous requests. WebSocket thread only.
 */
#ifndef RELAY_HANDLERS_H
#define RELAY_HANDLERS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node.h"

/* Handles one complete client message (binary: a msgpack Binary frame, else JSON Text). */
void handlers_dispatch(relay_node *n, session *s, const uint8_t *data, size_t len, bool binary);

/* The connection closed: leave the document, make the session resumable. */
void handlers_on_close(relay_node *n, session *s);

/* The per-connection timer fired: auth timeout (4002) or token expiry (4003). */
void handlers_on_timer(relay_node *n, session *s);

/* Arms the per-connection timer for the nearest deadline of s. */
void handlers_arm_timer(relay_node *n, session *s);

/* The backend_events the node gives its backend. */
backend_events handlers_backend_events(relay_node *n);

#endif
