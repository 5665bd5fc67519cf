#include "pacer.h"

#include <stdlib.h>

#include <ev.h>

struct pacer {
    struct ev_loop *loop;
    ev_timer flush;
    double delay; /* seconds */
    session *head;
    pacer_release_fn release;
    void *ud;
};

static void pacer_unlink(pacer *p, session *s)
{
    if (s->pace_prev)
        s->pace_prev->pace_next = s->pace_next;
    else
        p->head = s->pace_next;
    if (s->pace_next)
        s->pace_next->pace_prev = s->pace_prev;
    s->pace_prev = s->pace_next = NULL;
    s->write_deferred = false;
}

/* Releases everything held: whatever a session's own delay, one flush per delay bounds what
 * pacing adds to any message's latency at the delay. */
static void pacer_on_flush(struct ev_loop *loop, ev_timer *w, int revents)
{
    (void)loop, (void)revents;
    pacer *p = w->data;
    session *s;
    while ((s = p->head) != NULL) {
        pacer_unlink(p, s);
        p->release(s, p->ud);
    }
}

pacer *pacer_create(struct ev_loop *loop, int delay_ms, pacer_release_fn release, void *ud)
{
    pacer *p = calloc(1, sizeof *p);
    if (!p)
        return NULL;
    p->loop = loop;
    p->delay = delay_ms / 1000.0;
    p->release = release;
    p->ud = ud;
    ev_timer_init(&p->flush, pacer_on_flush, p->delay, 0);
    p->flush.data = p;
    return p;
}

void pacer_destroy(pacer *p)
{
    if (!p)
        return;
    ev_timer_stop(p->loop, &p->flush);
    free(p);
}

bool pacer_hold(pacer *p, session *s)
{
    /* Gaps count at most four delays, so that after a pause a burst is recognised within a
     * dozen or two messages; a connection's first broadcast counts as after a pause. */
    double now = ev_now(p->loop), cap = 4 * p->delay, gap = now - s->last_arrival;
    if (s->last_arrival == 0)
        s->arrival_gap = cap;
    s->last_arrival = now;
    s->arrival_gap += ((gap < cap ? gap : cap) - s->arrival_gap) / 8;
    if (s->write_deferred)
        return true;
    if (p->delay <= 0 || s->write_requested || s->arrival_gap >= p->delay / 2 ||
        now - s->last_write >= p->delay)
        return false;
    s->write_deferred = true;
    s->pace_prev = NULL;
    s->pace_next = p->head;
    if (p->head)
        p->head->pace_prev = s;
    p->head = s;
    if (!ev_is_active(&p->flush)) {
        ev_timer_set(&p->flush, p->delay, 0);
        ev_timer_start(p->loop, &p->flush);
    }
    return true;
}

void pacer_wrote(pacer *p, session *s)
{
    s->last_write = ev_now(p->loop);
    pacer_forget(p, s);
}

void pacer_forget(pacer *p, session *s)
{
    if (s->write_deferred)
        pacer_unlink(p, s);
}
