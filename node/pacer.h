/**
 * @file pacer.h
 * Write pacing: a connection whose broadcasts arrive more often than twice per write delay (a
 * moving average) and that wrote less than the delay ago has its broadcasts held until the
 * pacer's next flush, so a busy document's messages leave in one write instead of one send()
 * each (a loopback or NIC send costs per call, not per byte). Connections at ordinary rates are
 * written at once: pacing never delays an isolated message, a quiet document's messages, or a
 * direct reply. With a delay of 0 the pacer holds nothing.
 *
 * The pacer keeps held sessions in an intrusive list (session.pace_prev/pace_next) and one
 * libev timer that fires at most one delay after the first hold. WebSocket thread only.
 */
#ifndef RELAY_PACER_H
#define RELAY_PACER_H

#include <stdbool.h>

#include "session.h"

struct ev_loop;
typedef struct pacer pacer;

/* Called at a flush for each held session, which is no longer held. */
typedef void (*pacer_release_fn)(session *s, void *ud);

/* A pacer on loop holding writes for delay_ms (0: never). NULL when out of memory. */
pacer *pacer_create(struct ev_loop *loop, int delay_ms, pacer_release_fn release, void *ud);

/* Stops the timer and frees the pacer; held sessions are simply forgotten. NULL is a no-op. */
void pacer_destroy(pacer *p);

/* Notes a broadcast for s. True when s is busy and wrote less than the delay ago: it is held
 * until the next flush (the caller must not ask for a write now). False when it may be written
 * at once (or a write is already requested). */
bool pacer_hold(pacer *p, session *s);

/* s just wrote: starts its delay and ends any hold (what it waited for has gone out). */
void pacer_wrote(pacer *p, session *s);

/* Ends any hold on s without releasing it (the session is going away). */
void pacer_forget(pacer *p, session *s);

#endif
