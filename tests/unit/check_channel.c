/*
 * check_channel.c: the in-process channel registry: document lifetime follows its local
 * subscribers, a publish wakes each subscriber once and is shared by reference, new subscribers
 * start at the head, and the document (1024) and presence (256) rings lag independently.
 *
 * Subscribers are embedded in a test struct (as the session embeds its channel_sub) that counts
 * the wake-ups it receives.
 */
#include <check.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel.h"

/* The capacities the node configures (server.c), after the seed's broadcast channels. */
#define DOC_CAP      1024
#define PRESENCE_CAP 256

typedef struct {
    int id;
    unsigned wakes;
    channel_sub sub;
} test_sub;

typedef struct {
    unsigned total_wakes;
    channel_sub *last;
} wake_log;

static test_sub *sub_of(channel_sub *s)
{
    return (test_sub *)((char *)s - offsetof(test_sub, sub));
}

static void on_wake(channel_sub *s, void *ud)
{
    wake_log *log = ud;
    sub_of(s)->wakes++;
    log->total_wakes++;
    log->last = s;
}

static wake_log wlog;
static channel_registry *reg;

static void setup(void)
{
    memset(&wlog, 0, sizeof wlog);
    reg = channel_registry_create(DOC_CAP, PRESENCE_CAP, on_wake, &wlog);
    ck_assert_ptr_nonnull(reg);
}

static void teardown(void)
{
    channel_registry_destroy(reg);
    reg = NULL;
}

static msgbuf *msg_new(uint64_t seq)
{
    msgbuf *mb = msgbuf_from(MSGBUF_BINARY, &seq, sizeof seq);
    ck_assert_ptr_nonnull(mb);
    return mb;
}

static uint64_t msg_seq(msgbuf *mb)
{
    uint64_t seq;
    ck_assert_uint_eq(mb->len, sizeof seq);
    memcpy(&seq, msgbuf_data(mb), sizeof seq);
    return seq;
}

static uint32_t refs(msgbuf *mb)
{
    return atomic_load(&mb->refs);
}

/* Reads everything sub can read on kind, checking order; returns the number read. */
static uint64_t drain(test_sub *t, chan_kind kind, uint64_t first_expected)
{
    uint64_t n = 0;
    msgbuf *mb;
    while ((mb = channel_peek(&t->sub, kind)) != NULL) {
        ck_assert_uint_eq(msg_seq(mb), first_expected + n);
        t->sub.pos[kind]++;
        n++;
    }
    return n;
}

START_TEST(test_subscribe_creates_once)
{
    test_sub a = {.id = 1}, b = {.id = 2}, c = {.id = 3};
    ck_assert_uint_eq(channel_registry_count(reg), 0);
    ck_assert_int_eq(channel_subscribe(reg, "doc-1", &a.sub), 1);
    ck_assert_int_eq(channel_subscribe(reg, "doc-1", &b.sub), 0);
    ck_assert_int_eq(channel_subscribe(reg, "doc-2", &c.sub), 1);
    ck_assert_uint_eq(channel_registry_count(reg), 2);
    ck_assert_ptr_eq(a.sub.doc, b.sub.doc);
    ck_assert_ptr_ne(a.sub.doc, c.sub.doc);
    ck_assert_str_eq(channel_doc_id(a.sub.doc), "doc-1");
    ck_assert_str_eq(channel_doc_id(c.sub.doc), "doc-2");
    ck_assert_ptr_null(channel_doc_id(NULL));

    ck_assert_int_eq(channel_unsubscribe(reg, &a.sub), 0);
    ck_assert_ptr_null(a.sub.doc);
    ck_assert_uint_eq(channel_registry_count(reg), 2);
    ck_assert_int_eq(channel_unsubscribe(reg, &b.sub), 1); /* last of doc-1 */
    ck_assert_uint_eq(channel_registry_count(reg), 1);
    ck_assert_int_eq(channel_unsubscribe(reg, &b.sub), 0); /* not subscribed: no-op */
    ck_assert_int_eq(channel_unsubscribe(reg, &c.sub), 1);
    ck_assert_uint_eq(channel_registry_count(reg), 0);

    /* After its channels were freed, a document is created afresh. */
    ck_assert_int_eq(channel_subscribe(reg, "doc-1", &a.sub), 1);
    ck_assert_int_eq(channel_unsubscribe(reg, &a.sub), 1);
}
END_TEST

/* Unsubscribing from the head, middle and tail of the subscriber list keeps the rest intact. */
START_TEST(test_unsubscribe_any_order)
{
    test_sub t[5];
    for (int i = 0; i < 5; i++) {
        t[i] = (test_sub){.id = i};
        ck_assert_int_eq(channel_subscribe(reg, "d", &t[i].sub), i == 0 ? 1 : 0);
    }
    static const int order[] = {2, 4, 0, 3, 1};
    for (int k = 0; k < 5; k++) {
        ck_assert_int_eq(channel_unsubscribe(reg, &t[order[k]].sub), k == 4 ? 1 : 0);
        if (k == 4)
            break;
        /* Everyone still subscribed is woken exactly once by a publish. */
        for (int i = 0; i < 5; i++)
            t[i].wakes = 0;
        channel_publish(reg, "d", CHAN_DOCUMENT, msg_new((uint64_t)k));
        for (int i = 0; i < 5; i++) {
            bool still = t[i].sub.doc != NULL;
            ck_assert_uint_eq(t[i].wakes, still ? 1 : 0);
        }
    }
    ck_assert_uint_eq(channel_registry_count(reg), 0);
}
END_TEST

START_TEST(test_publish_without_subscribers_releases)
{
    msgbuf *m = msg_new(7);
    msgbuf_ref(m);
    channel_publish(reg, "nobody-here", CHAN_DOCUMENT, m);
    ck_assert_uint_eq(refs(m), 1);
    ck_assert_uint_eq(wlog.total_wakes, 0);
    ck_assert_uint_eq(channel_registry_count(reg), 0); /* publishing creates nothing */
    msgbuf_unref(m);
}
END_TEST

START_TEST(test_wake_once_per_subscriber_per_publish)
{
    test_sub a = {.id = 1}, b = {.id = 2}, other = {.id = 3};
    channel_subscribe(reg, "doc", &a.sub);
    channel_subscribe(reg, "doc", &b.sub);
    channel_subscribe(reg, "elsewhere", &other.sub);

    for (uint64_t i = 0; i < 5; i++)
        channel_publish(reg, "doc", i % 2 ? CHAN_PRESENCE : CHAN_DOCUMENT, msg_new(i));
    ck_assert_uint_eq(a.wakes, 5);
    ck_assert_uint_eq(b.wakes, 5);
    ck_assert_uint_eq(other.wakes, 0);
    ck_assert_uint_eq(wlog.total_wakes, 10);

    channel_publish(reg, "elsewhere", CHAN_PRESENCE, msg_new(0));
    ck_assert_uint_eq(other.wakes, 1);
    ck_assert_ptr_eq(wlog.last, &other.sub);

    channel_unsubscribe(reg, &a.sub);
    channel_unsubscribe(reg, &b.sub);
    channel_unsubscribe(reg, &other.sub);
}
END_TEST

/* A broadcast is stored once and shared: every subscriber peeks the same buffer. */
START_TEST(test_publish_shared_by_reference)
{
    test_sub a = {.id = 1}, b = {.id = 2};
    channel_subscribe(reg, "doc", &a.sub);
    channel_subscribe(reg, "doc", &b.sub);
    msgbuf *m = msg_new(42);
    msgbuf_ref(m);
    channel_publish(reg, "doc", CHAN_DOCUMENT, m);
    ck_assert_uint_eq(refs(m), 2); /* ours + the ring's single one */
    ck_assert_ptr_eq(channel_peek(&a.sub, CHAN_DOCUMENT), m);
    ck_assert_ptr_eq(channel_peek(&b.sub, CHAN_DOCUMENT), m);
    ck_assert_ptr_null(channel_peek(&a.sub, CHAN_PRESENCE));

    channel_unsubscribe(reg, &a.sub);
    ck_assert_uint_eq(refs(m), 2);
    channel_unsubscribe(reg, &b.sub); /* last: the rings and their messages are freed */
    ck_assert_uint_eq(refs(m), 1);
    msgbuf_unref(m);
}
END_TEST

START_TEST(test_new_subscriber_starts_at_head)
{
    test_sub a = {.id = 1}, b = {.id = 2};
    channel_subscribe(reg, "doc", &a.sub);
    for (uint64_t i = 0; i < 3; i++) {
        channel_publish(reg, "doc", CHAN_DOCUMENT, msg_new(i));
        channel_publish(reg, "doc", CHAN_PRESENCE, msg_new(100 + i));
    }

    ck_assert_int_eq(channel_subscribe(reg, "doc", &b.sub), 0);
    ck_assert_uint_eq(b.sub.pos[CHAN_DOCUMENT], 3);
    ck_assert_uint_eq(b.sub.pos[CHAN_PRESENCE], 3);
    ck_assert_uint_eq(b.sub.missed[CHAN_DOCUMENT], 0);
    ck_assert_ptr_null(channel_peek(&b.sub, CHAN_DOCUMENT));
    ck_assert_ptr_null(channel_peek(&b.sub, CHAN_PRESENCE));

    channel_publish(reg, "doc", CHAN_DOCUMENT, msg_new(3));
    ck_assert_uint_eq(drain(&b, CHAN_DOCUMENT, 3), 1);
    ck_assert_uint_eq(drain(&a, CHAN_DOCUMENT, 0), 4);
    ck_assert_uint_eq(drain(&a, CHAN_PRESENCE, 100), 3);
    ck_assert_uint_eq(b.sub.missed[CHAN_DOCUMENT], 0);

    /* A subscriber that leaves and comes back starts at the head again (no stale position). */
    channel_unsubscribe(reg, &b.sub);
    channel_publish(reg, "doc", CHAN_DOCUMENT, msg_new(4));
    b.sub.missed[CHAN_DOCUMENT] = 99;
    channel_subscribe(reg, "doc", &b.sub);
    ck_assert_uint_eq(b.sub.missed[CHAN_DOCUMENT], 0);
    ck_assert_ptr_null(channel_peek(&b.sub, CHAN_DOCUMENT));

    channel_unsubscribe(reg, &a.sub);
    channel_unsubscribe(reg, &b.sub);
}
END_TEST

START_TEST(test_peek_when_not_subscribed)
{
    test_sub a = {.id = 1};
    memset(&a.sub, 0, sizeof a.sub);
    ck_assert_ptr_null(channel_peek(&a.sub, CHAN_DOCUMENT));
    ck_assert_ptr_null(channel_peek(&a.sub, CHAN_PRESENCE));
}
END_TEST

/* Capacities are the configured ones, and each kind lags on its own: overflowing the presence
 * ring leaves the document ring untouched, and the other way round. */
START_TEST(test_capacities_and_independent_lag)
{
    test_sub a = {.id = 1};
    channel_subscribe(reg, "doc", &a.sub);

    /* Exactly the capacity: nothing missed. */
    for (uint64_t i = 0; i < DOC_CAP; i++)
        channel_publish(reg, "doc", CHAN_DOCUMENT, msg_new(i));
    for (uint64_t i = 0; i < PRESENCE_CAP; i++)
        channel_publish(reg, "doc", CHAN_PRESENCE, msg_new(i));
    ck_assert_ptr_nonnull(channel_peek(&a.sub, CHAN_DOCUMENT));
    ck_assert_ptr_nonnull(channel_peek(&a.sub, CHAN_PRESENCE));
    ck_assert_uint_eq(a.sub.missed[CHAN_DOCUMENT], 0);
    ck_assert_uint_eq(a.sub.missed[CHAN_PRESENCE], 0);

    /* One more presence message: presence drops its oldest, the document ring does not. */
    channel_publish(reg, "doc", CHAN_PRESENCE, msg_new(PRESENCE_CAP));
    ck_assert_ptr_nonnull(channel_peek(&a.sub, CHAN_PRESENCE));
    ck_assert_uint_eq(a.sub.missed[CHAN_PRESENCE], 1);
    ck_assert_uint_eq(drain(&a, CHAN_PRESENCE, 1), PRESENCE_CAP);
    ck_assert_uint_eq(a.sub.missed[CHAN_DOCUMENT], 0);
    ck_assert_uint_eq(drain(&a, CHAN_DOCUMENT, 0), DOC_CAP);

    /* Now overflow the document ring by three; presence stays clean. */
    for (uint64_t i = 0; i < DOC_CAP + 3; i++)
        channel_publish(reg, "doc", CHAN_DOCUMENT, msg_new(DOC_CAP + i));
    channel_publish(reg, "doc", CHAN_PRESENCE, msg_new(PRESENCE_CAP + 1));
    ck_assert_ptr_nonnull(channel_peek(&a.sub, CHAN_DOCUMENT));
    ck_assert_uint_eq(a.sub.missed[CHAN_DOCUMENT], 3);
    ck_assert_uint_eq(drain(&a, CHAN_DOCUMENT, DOC_CAP + 3), DOC_CAP);
    ck_assert_uint_eq(drain(&a, CHAN_PRESENCE, PRESENCE_CAP + 1), 1);
    ck_assert_uint_eq(a.sub.missed[CHAN_PRESENCE], 1);

    /* reads + missed = published, per kind */
    ck_assert_uint_eq(a.sub.pos[CHAN_DOCUMENT], 2 * DOC_CAP + 3);
    ck_assert_uint_eq(a.sub.pos[CHAN_PRESENCE], PRESENCE_CAP + 2);
    channel_unsubscribe(reg, &a.sub);
}
END_TEST

/* Two subscribers of one document lag independently: a slow one's loss does not touch a fast
 * one's count. */
START_TEST(test_lag_per_subscriber)
{
    test_sub fast = {.id = 1}, slow = {.id = 2};
    channel_subscribe(reg, "doc", &fast.sub);
    channel_subscribe(reg, "doc", &slow.sub);
    uint64_t fast_reads = 0;
    for (uint64_t i = 0; i < 3 * PRESENCE_CAP; i++) {
        channel_publish(reg, "doc", CHAN_PRESENCE, msg_new(i));
        fast_reads += drain(&fast, CHAN_PRESENCE, i);
    }
    uint64_t slow_reads = drain(&slow, CHAN_PRESENCE, 2 * PRESENCE_CAP);
    ck_assert_uint_eq(fast_reads, 3 * PRESENCE_CAP);
    ck_assert_uint_eq(fast.sub.missed[CHAN_PRESENCE], 0);
    ck_assert_uint_eq(slow_reads, PRESENCE_CAP);
    ck_assert_uint_eq(slow.sub.missed[CHAN_PRESENCE], 2 * PRESENCE_CAP);
    channel_unsubscribe(reg, &fast.sub);
    channel_unsubscribe(reg, &slow.sub);
}
END_TEST

/* The trim releases what everyone has read and frees a fully read ring; positions, lag and
 * new subscribers carry on across the ring that is created by the next publish. */
START_TEST(test_trim_releases_and_positions_carry_on)
{
    test_sub a = {.id = 1}, b = {.id = 2};
    channel_subscribe(reg, "doc", &a.sub);
    channel_subscribe(reg, "doc", &b.sub);
    msgbuf *kept[3];
    for (uint64_t i = 0; i < 3; i++) {
        kept[i] = msgbuf_ref(msg_new(i));
        channel_publish(reg, "doc", CHAN_DOCUMENT, kept[i]);
    }
    ck_assert_uint_eq(drain(&a, CHAN_DOCUMENT, 0), 3);
    ck_assert_ptr_nonnull(channel_peek(&b.sub, CHAN_DOCUMENT));
    b.sub.pos[CHAN_DOCUMENT]++;
    channel_registry_trim(reg); /* b still needs 1 and 2 */
    ck_assert_uint_eq(refs(kept[0]), 1);
    ck_assert_uint_eq(refs(kept[1]), 2);
    ck_assert_uint_eq(drain(&b, CHAN_DOCUMENT, 1), 2);
    channel_registry_trim(reg); /* all read: nothing held */
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(refs(kept[i]), 1);
        msgbuf_unref(kept[i]);
    }
    uint64_t heads[2];
    channel_heads(&a.sub, heads);
    ck_assert_uint_eq(heads[CHAN_DOCUMENT], 3);
    ck_assert_ptr_null(channel_peek(&a.sub, CHAN_DOCUMENT));

    /* A newcomer starts at the head; the next message is position 3 for everyone. */
    test_sub c = {.id = 3};
    channel_subscribe(reg, "doc", &c.sub);
    ck_assert_uint_eq(c.sub.pos[CHAN_DOCUMENT], 3);
    channel_publish(reg, "doc", CHAN_DOCUMENT, msg_new(3));
    ck_assert_uint_eq(drain(&a, CHAN_DOCUMENT, 3), 1);
    ck_assert_uint_eq(drain(&c, CHAN_DOCUMENT, 3), 1);
    ck_assert_uint_eq(a.sub.pos[CHAN_DOCUMENT], 4);

    /* Lag in the new ring: b (still before 3) is overflowed by three; reads + missed =
     * published. */
    for (uint64_t i = 4; i < 4 + DOC_CAP + 2; i++)
        channel_publish(reg, "doc", CHAN_DOCUMENT, msg_new(i));
    ck_assert_uint_eq(drain(&b, CHAN_DOCUMENT, 6), DOC_CAP);
    ck_assert_uint_eq(b.sub.missed[CHAN_DOCUMENT], 3);
    ck_assert_uint_eq(b.sub.pos[CHAN_DOCUMENT], 4 + DOC_CAP + 2);
    channel_heads(&b.sub, heads);
    ck_assert_uint_eq(heads[CHAN_DOCUMENT], 4 + DOC_CAP + 2);
    ck_assert_uint_eq(heads[CHAN_PRESENCE], 0);
    channel_unsubscribe(reg, &a.sub);
    channel_unsubscribe(reg, &b.sub);
    channel_unsubscribe(reg, &c.sub);
}
END_TEST

/* A sender that is up to date steps over its own message even when the ring was just made. */
START_TEST(test_own_message_skipped_after_trim)
{
    test_sub a = {.id = 1}, b = {.id = 2};
    a.sub.self = 11;
    channel_subscribe(reg, "doc", &a.sub);
    channel_subscribe(reg, "doc", &b.sub);
    channel_registry_trim(reg);
    msgbuf *m = msg_new(0);
    m->origin = 11;
    channel_publish(reg, "doc", CHAN_PRESENCE, m);
    ck_assert_uint_eq(a.wakes, 0);
    ck_assert_uint_eq(a.sub.pos[CHAN_PRESENCE], 1);
    ck_assert_ptr_null(channel_peek(&a.sub, CHAN_PRESENCE));
    ck_assert_uint_eq(drain(&b, CHAN_PRESENCE, 0), 1);
    channel_registry_trim(reg);
    channel_publish(reg, "doc", CHAN_PRESENCE, msg_new(1));
    ck_assert_uint_eq(drain(&a, CHAN_PRESENCE, 1), 1);
    ck_assert_uint_eq(drain(&b, CHAN_PRESENCE, 1), 1);
    channel_unsubscribe(reg, &a.sub);
    channel_unsubscribe(reg, &b.sub);
}
END_TEST

/* A lagging reader's cursor is skipped for a newer one of the same session, in a ring that
 * starts after a trimmed one (positions offset from the ring's own). */
START_TEST(test_superseded_after_trim)
{
    test_sub a = {.id = 1}, slow = {.id = 2};
    channel_subscribe(reg, "doc", &a.sub);
    channel_subscribe(reg, "doc", &slow.sub);
    for (uint64_t i = 0; i < 5; i++)
        channel_publish(reg, "doc", CHAN_PRESENCE, msg_new(i));
    drain(&a, CHAN_PRESENCE, 0);
    drain(&slow, CHAN_PRESENCE, 0);
    channel_registry_trim(reg);
    for (uint64_t i = 5; i < 5 + PRESENCE_CAP / 2 + 2; i++) {
        msgbuf *m = msg_new(i);
        m->coalesce = i == 5 || i == 6 + PRESENCE_CAP / 2 ? 42 : 0;
        channel_publish(reg, "doc", CHAN_PRESENCE, m);
    }
    msgbuf *first = channel_peek(&slow.sub, CHAN_PRESENCE);
    ck_assert_uint_eq(msg_seq(first), 5);
    ck_assert(channel_superseded(&slow.sub, CHAN_PRESENCE, first));
    slow.sub.pos[CHAN_PRESENCE]++;
    msgbuf *second = channel_peek(&slow.sub, CHAN_PRESENCE);
    ck_assert(!channel_superseded(&slow.sub, CHAN_PRESENCE, second));
    channel_unsubscribe(reg, &a.sub);
    channel_unsubscribe(reg, &slow.sub);
}
END_TEST

typedef struct {
    int seen[8];
    size_t n;
    bool unsubscribe;
} each_log;

static void each_fn(channel_sub *s, void *ud)
{
    each_log *log = ud;
    ck_assert_uint_lt(log->n, 8);
    log->seen[log->n++] = sub_of(s)->id;
    if (log->unsubscribe)
        channel_unsubscribe(reg, s);
}

START_TEST(test_each_sub)
{
    test_sub t[4], other = {.id = 99};
    for (int i = 0; i < 4; i++) {
        t[i] = (test_sub){.id = i};
        channel_subscribe(reg, "doc", &t[i].sub);
    }
    channel_subscribe(reg, "other", &other.sub);

    each_log log = {.n = 0};
    channel_each_sub(reg, "doc", each_fn, &log);
    ck_assert_uint_eq(log.n, 4);
    int mask = 0;
    for (size_t i = 0; i < log.n; i++) {
        ck_assert_int_ge(log.seen[i], 0);
        ck_assert_int_lt(log.seen[i], 4);
        mask |= 1 << log.seen[i];
    }
    ck_assert_int_eq(mask, 0xf); /* each one exactly once, never the other document's */

    log = (each_log){.n = 0};
    channel_each_sub(reg, "absent", each_fn, &log);
    ck_assert_uint_eq(log.n, 0);

    /* fn may unsubscribe the subscriber it is given (closing everyone on a reset), even the
     * last one, which frees the document while the walk is on it. */
    log = (each_log){.n = 0, .unsubscribe = true};
    channel_each_sub(reg, "doc", each_fn, &log);
    ck_assert_uint_eq(log.n, 4);
    ck_assert_uint_eq(channel_registry_count(reg), 1);
    for (int i = 0; i < 4; i++)
        ck_assert_ptr_null(t[i].sub.doc);
    channel_unsubscribe(reg, &other.sub);
}
END_TEST

/* Many documents at once (the registry's map grows) with publishes routed by id. */
START_TEST(test_many_documents)
{
    enum { N = 300 };
    test_sub *t = calloc(N, sizeof *t);
    ck_assert_ptr_nonnull(t);
    char id[32];
    for (int i = 0; i < N; i++) {
        t[i].id = i;
        snprintf(id, sizeof id, "doc-%d", i);
        ck_assert_int_eq(channel_subscribe(reg, id, &t[i].sub), 1);
    }
    ck_assert_uint_eq(channel_registry_count(reg), N);
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof id, "doc-%d", i);
        channel_publish(reg, id, CHAN_DOCUMENT, msg_new((uint64_t)i));
    }
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(t[i].wakes, 1);
        ck_assert_uint_eq(drain(&t[i], CHAN_DOCUMENT, (uint64_t)i), 1);
        ck_assert_int_eq(channel_unsubscribe(reg, &t[i].sub), 1);
    }
    ck_assert_uint_eq(channel_registry_count(reg), 0);
    free(t);
}
END_TEST

/* Registries are independent: the same document id in two registries (two nodes' worth of
 * state in one process) shares nothing. */
START_TEST(test_registries_independent)
{
    wake_log log2 = {0};
    channel_registry *r2 = channel_registry_create(4, 2, on_wake, &log2);
    ck_assert_ptr_nonnull(r2);
    test_sub a = {.id = 1}, b = {.id = 2};
    ck_assert_int_eq(channel_subscribe(reg, "doc", &a.sub), 1);
    ck_assert_int_eq(channel_subscribe(r2, "doc", &b.sub), 1);
    channel_publish(r2, "doc", CHAN_PRESENCE, msg_new(1));
    ck_assert_uint_eq(a.wakes, 0);
    ck_assert_uint_eq(b.wakes, 1);
    ck_assert_uint_eq(log2.total_wakes, 1);
    ck_assert_uint_eq(wlog.total_wakes, 0);
    ck_assert_ptr_null(channel_peek(&a.sub, CHAN_PRESENCE));
    ck_assert_ptr_nonnull(channel_peek(&b.sub, CHAN_PRESENCE));
    ck_assert_int_eq(channel_unsubscribe(r2, &b.sub), 1);
    ck_assert_uint_eq(channel_registry_count(reg), 1);
    ck_assert_int_eq(channel_unsubscribe(reg, &a.sub), 1);
    channel_registry_destroy(r2);
    channel_registry_destroy(NULL);
}
END_TEST

static Suite *channel_suite(void)
{
    Suite *s = suite_create("channel");

    TCase *reg_tc = tcase_create("registry");
    tcase_add_checked_fixture(reg_tc, setup, teardown);
    tcase_add_test(reg_tc, test_subscribe_creates_once);
    tcase_add_test(reg_tc, test_unsubscribe_any_order);
    tcase_add_test(reg_tc, test_each_sub);
    tcase_add_test(reg_tc, test_many_documents);
    tcase_add_test(reg_tc, test_registries_independent);
    suite_add_tcase(s, reg_tc);

    TCase *pub = tcase_create("publish");
    tcase_add_checked_fixture(pub, setup, teardown);
    tcase_add_test(pub, test_publish_without_subscribers_releases);
    tcase_add_test(pub, test_wake_once_per_subscriber_per_publish);
    tcase_add_test(pub, test_publish_shared_by_reference);
    tcase_add_test(pub, test_new_subscriber_starts_at_head);
    tcase_add_test(pub, test_peek_when_not_subscribed);
    suite_add_tcase(s, pub);

    TCase *lag = tcase_create("lag");
    tcase_add_checked_fixture(lag, setup, teardown);
    tcase_add_test(lag, test_capacities_and_independent_lag);
    tcase_add_test(lag, test_lag_per_subscriber);
    tcase_add_test(lag, test_trim_releases_and_positions_carry_on);
    tcase_add_test(lag, test_own_message_skipped_after_trim);
    tcase_add_test(lag, test_superseded_after_trim);
    suite_add_tcase(s, lag);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(channel_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
