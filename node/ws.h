/**
 * @file ws.h
 * The libwebsockets protocol callback: a thin dispatcher from lws events to the http, session
 * and handlers modules, and the send path — the only place the broadcast gate is enforced.
 */
#ifndef RELAY_WS_H
#define RELAY_WS_H

#include <libwebsockets.h>

/* Largest single write the send path makes: a batch of up to 64 KiB of messages plus their
 * frame headers (the protocol's tx_packet_size, so lws hands it to the kernel in one send()). */
#define WS_SEND_MAX (64 * 1024 + 64 * 10)

/* The callback of the node's single protocol (HTTP and WebSocket). */
int ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                size_t len);

/* The per-connection storage lws allocates for us: just the session pointer. */
typedef struct ws_pss {
    struct session *s;
} ws_pss;

#endif
