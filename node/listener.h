/**
 * @file listener.h
 * relay's own listening socket. libwebsockets percent-decodes and normalises the request path
 * before any callback sees it, but document ids must be checked on the raw path (docs/PROTOCOL.md)
 * — "/ws/documents/%41" is a bad id, not "A". So the node accepts connections itself, reads each
 * request line, answers 400 to a bad raw document path, and hands every other connection, with
 * the bytes already read, to libwebsockets. WebSocket thread only.
 */
#ifndef RELAY_LISTENER_H
#define RELAY_LISTENER_H

#include <libwebsockets.h>
#include <stddef.h>

/* Most bytes read before the hand-over (lws accepts at most 2048 bytes of prior input). */
#define LISTENER_HEAD_MAX 2048

/* Per-connection storage of the "relay-accept" protocol while a request line is awaited. */
typedef struct listener_pss {
    int is_listener;
    size_t len;
    char head[LISTENER_HEAD_MAX];
} listener_pss;

/* Binds and listens on bind:port (non-blocking). Returns the fd, or -1 with a reason. */
int listener_open(const char *bind, int port, char *err, size_t errlen);

/* Makes lws poll fd for us on vhost. Returns 0 or -1. */
int listener_attach(struct lws_vhost *vhost, int fd);

/* The callback of the "relay-accept" protocol. */
int listener_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len);

#endif
