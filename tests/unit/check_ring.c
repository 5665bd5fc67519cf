/*
 * check_ring.c: the broadcast ring's drop-oldest accounting (for every reader, messages read +
 * missed = messages published since it joined) and its msgbuf reference discipline.
 *
 * Every message carries its position as payload, so a reader can tell exactly which message it
 * got. The tests hold one extra reference on each msgbuf they publish; a buffer the ring still
 * retains then has refs == 2 and one it released has refs == 1, so a missing or doubled release
 * shows up as a wrong count (and a double free as an ASan report in the sanitizer build).
 */
#include <check.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "relay/msgbuf.h"
#include "relay/ring.h"

/* A text msgbuf whose payload is seq (8 bytes, host order). */
static msgbuf *msg_new(uint64_t seq)
{
    msgbuf *mb = msgbuf_from(MSGBUF_TEXT, &seq, sizeof seq);
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

/* Publishes n messages numbered from ring_head(), keeping an extra reference to each in keep
 * (indexed by position) when keep is not NULL. */
static void publish_n(ring *r, uint64_t n, msgbuf **keep)
{
    for (uint64_t i = 0; i < n; i++) {
        uint64_t seq = ring_head(r);
        msgbuf *mb = msg_new(seq);
        if (keep)
            keep[seq] = msgbuf_ref(mb);
        ring_publish(r, mb);
        ck_assert_uint_eq(ring_head(r), seq + 1);
    }
}

START_TEST(test_create_and_destroy_edge_cases)
{
    ck_assert_ptr_null(ring_create(0));
    ring_destroy(NULL);

    ring *r = ring_create(3);
    ck_assert_ptr_nonnull(r);
    ck_assert_uint_eq(ring_capacity(r), 3);
    ck_assert_uint_eq(ring_head(r), 0);
    ring_destroy(r); /* empty: nothing to release */
}
END_TEST

/* Publishing more than the capacity: a reader at 0 is told it missed exactly the overflow and
 * then reads the newest `capacity` messages in order. */
static const struct {
    size_t capacity;
    uint64_t published;
} overflow_cases[] = {
    {1, 1}, {1, 5}, {4, 4}, {4, 5}, {4, 10}, {8, 9}, {16, 1000}, {1024, 1024}, {1024, 5000},
};

START_TEST(test_drop_oldest_exact)
{
    size_t cap = overflow_cases[_i].capacity;
    uint64_t n = overflow_cases[_i].published;
    ring *r = ring_create(cap);
    ck_assert_ptr_nonnull(r);
    publish_n(r, n, NULL);

    uint64_t pos = 0, missed = 0, reads = 0;
    uint64_t expect_missed = n > cap ? n - cap : 0;
    msgbuf *mb;
    while ((mb = ring_peek(r, &pos, &missed)) != NULL) {
        /* The whole gap is reported on the first peek, before any message is read. */
        ck_assert_uint_eq(missed, expect_missed);
        ck_assert_uint_eq(msg_seq(mb), expect_missed + reads);
        ck_assert_uint_eq(pos, expect_missed + reads);
        pos++;
        reads++;
    }
    ck_assert_uint_eq(reads, n < cap ? n : cap);
    ck_assert_uint_eq(missed, expect_missed);
    ck_assert_uint_eq(reads + missed, n);
    ck_assert_uint_eq(pos, ring_head(r));
    ring_destroy(r);
}
END_TEST

START_TEST(test_peek_up_to_date_returns_null)
{
    ring *r = ring_create(4);
    uint64_t pos = 0, missed = 0;
    ck_assert_ptr_null(ring_peek(r, &pos, &missed)); /* empty ring */
    ck_assert_uint_eq(pos, 0);

    publish_n(r, 2, NULL);
    pos = ring_head(r);
    ck_assert_ptr_null(ring_peek(r, &pos, &missed));
    ck_assert_uint_eq(pos, 2);
    ck_assert_uint_eq(missed, 0);

    /* A new reader starts at the head and sees only what comes next. */
    publish_n(r, 1, NULL);
    msgbuf *mb = ring_peek(r, &pos, &missed);
    ck_assert_ptr_nonnull(mb);
    ck_assert_uint_eq(msg_seq(mb), 2);
    pos++;
    ck_assert_ptr_null(ring_peek(r, &pos, &missed));
    ck_assert_uint_eq(missed, 0);
    ring_destroy(r);
}
END_TEST

START_TEST(test_capacity_one)
{
    ring *r = ring_create(1);
    uint64_t pos = 0, missed = 0;
    publish_n(r, 3, NULL);

    msgbuf *mb = ring_peek(r, &pos, &missed);
    ck_assert_ptr_nonnull(mb);
    ck_assert_uint_eq(missed, 2);
    ck_assert_uint_eq(msg_seq(mb), 2);
    pos++;
    ck_assert_ptr_null(ring_peek(r, &pos, &missed));

    /* Keeping up with a capacity-1 ring loses nothing. */
    for (uint64_t i = 3; i < 10; i++) {
        publish_n(r, 1, NULL);
        mb = ring_peek(r, &pos, &missed);
        ck_assert_ptr_nonnull(mb);
        ck_assert_uint_eq(msg_seq(mb), i);
        pos++;
        ck_assert_ptr_null(ring_peek(r, &pos, &missed));
    }
    ck_assert_uint_eq(missed, 2);
    ring_destroy(r);
}
END_TEST

/* A peek that skips a gap moves the reader only once: a second peek at the same position does
 * not count the gap again. */
START_TEST(test_gap_counted_once)
{
    ring *r = ring_create(4);
    uint64_t pos = 0, missed = 0;
    publish_n(r, 10, NULL);
    msgbuf *a = ring_peek(r, &pos, &missed);
    msgbuf *b = ring_peek(r, &pos, &missed); /* not consumed: same message, no new miss */
    ck_assert_ptr_eq(a, b);
    ck_assert_uint_eq(missed, 6);
    ck_assert_uint_eq(pos, 6);
    ring_destroy(r);
}
END_TEST

/* Interleavings of publishers and several readers: each reader joins after `join` publishes
 * (at the head, as the channel registry does), and after every `every` publishes reads at most
 * `batch` messages (0: all it can). At the end every reader drains. For each reader the test
 * checks that messages arrive in position order, that a gap is reported exactly when positions
 * jump and by exactly the jump, that after a gap the reader gets the oldest retained message,
 * and that reads + missed = published since it joined. */
#define MAX_READERS 4

typedef struct {
    uint64_t join, every, batch;
} reader_plan;

static const struct {
    size_t capacity;
    uint64_t total;
    reader_plan readers[MAX_READERS];
    size_t n_readers;
} interleavings[] = {
    /* A fast reader never lags; a slow one lags repeatedly; a late one joins mid-stream. */
    {8, 200, {{0, 1, 0}, {0, 20, 3}, {50, 5, 1}}, 3},
    /* Readers that never read before the final drain. */
    {4, 100, {{0, 1000, 0}, {96, 1000, 0}, {97, 1000, 0}, {100, 1000, 0}}, 4},
    /* Capacity 1 with one reader exactly keeping up and one reading every other publish. */
    {1, 50, {{0, 1, 1}, {0, 2, 1}, {10, 3, 0}}, 3},
    /* Reading one message per publish keeps pace exactly; two per three publishes falls back. */
    {16, 500, {{0, 1, 1}, {0, 3, 2}, {0, 16, 0}, {0, 17, 0}}, 4},
    /* Batches larger than the capacity. */
    {32, 1000, {{5, 40, 100}, {7, 33, 0}, {999, 1, 0}}, 3},
    /* A big ring, as the document channel uses. */
    {1024, 5000, {{0, 1500, 0}, {1, 1024, 0}, {2048, 100, 10}}, 3},
};

typedef struct {
    uint64_t pos, missed, reads, joined_at;
    int64_t last_seq; /* -1 before the first read */
} reader_state;

static void reader_read(ring *r, reader_state *st, uint64_t batch)
{
    for (uint64_t n = 0; batch == 0 || n < batch; n++) {
        uint64_t missed_before = st->missed;
        msgbuf *mb = ring_peek(r, &st->pos, &st->missed);
        if (!mb)
            break;
        uint64_t seq = msg_seq(mb);
        uint64_t gap = st->missed - missed_before;
        uint64_t expected = st->last_seq < 0 ? st->joined_at : (uint64_t)st->last_seq + 1;
        ck_assert_uint_eq(seq, st->pos);
        ck_assert_msg(seq == expected + gap, "read %llu, expected %llu after a gap of %llu",
                      (unsigned long long)seq, (unsigned long long)expected,
                      (unsigned long long)gap);
        if (gap) /* after a gap: the oldest message still retained */
            ck_assert_uint_eq(seq, ring_head(r) - ring_capacity(r));
        st->last_seq = (int64_t)seq;
        st->pos++;
        st->reads++;
    }
}

START_TEST(test_interleavings)
{
    size_t cap = interleavings[_i].capacity;
    uint64_t total = interleavings[_i].total;
    size_t nr = interleavings[_i].n_readers;
    const reader_plan *plan = interleavings[_i].readers;
    reader_state st[MAX_READERS];
    bool joined[MAX_READERS] = {false};
    msgbuf **keep = calloc(total, sizeof *keep);
    ck_assert_ptr_nonnull(keep);
    ring *r = ring_create(cap);
    ck_assert_ptr_nonnull(r);

    for (uint64_t p = 0; p <= total; p++) {
        for (size_t k = 0; k < nr; k++) {
            if (!joined[k] && plan[k].join == p) {
                st[k] = (reader_state){ring_head(r), 0, 0, ring_head(r), -1};
                joined[k] = true;
            }
            if (joined[k] && p > plan[k].join && p % plan[k].every == 0)
                reader_read(r, &st[k], plan[k].batch);
        }
        if (p < total)
            publish_n(r, 1, keep);
    }
    for (size_t k = 0; k < nr; k++) {
        ck_assert(joined[k]);
        reader_read(r, &st[k], 0);
        ck_assert_msg(st[k].reads + st[k].missed == total - plan[k].join,
                      "reader %zu: reads %llu + missed %llu != published %llu", k,
                      (unsigned long long)st[k].reads, (unsigned long long)st[k].missed,
                      (unsigned long long)(total - plan[k].join));
        ck_assert_uint_eq(st[k].pos, ring_head(r));
    }

    /* The ring holds exactly the newest `cap` messages. */
    for (uint64_t i = 0; i < total; i++)
        ck_assert_uint_eq(refs(keep[i]), i + cap >= total ? 2 : 1);
    ring_destroy(r);
    for (uint64_t i = 0; i < total; i++) {
        ck_assert_uint_eq(refs(keep[i]), 1);
        msgbuf_unref(keep[i]);
    }
    free(keep);
}
END_TEST

/* Each message is released by the ring exactly once: when overwritten or at destroy. */
START_TEST(test_refcounts)
{
    enum { CAP = 5, N = 23 };
    msgbuf *keep[N];
    ring *r = ring_create(CAP);
    ck_assert_ptr_nonnull(r);

    for (uint64_t i = 0; i < N; i++) {
        publish_n(r, 1, keep);
        /* The ring's reference to message i - CAP went away exactly when i was stored. */
        for (uint64_t j = 0; j <= i; j++)
            ck_assert_uint_eq(refs(keep[j]), j + CAP > i ? 2 : 1);
    }

    /* Peeking borrows: no reference taken. */
    uint64_t pos = 0, missed = 0;
    msgbuf *mb = ring_peek(r, &pos, &missed);
    ck_assert_ptr_eq(mb, keep[N - CAP]);
    ck_assert_uint_eq(refs(mb), 2);

    ring_destroy(r);
    for (int i = 0; i < N; i++) {
        ck_assert_uint_eq(refs(keep[i]), 1);
        msgbuf_unref(keep[i]);
    }
}
END_TEST

/* ring_destroy releases the retained messages even when the ring never filled. */
START_TEST(test_destroy_partial)
{
    msgbuf *keep[3];
    ring *r = ring_create(8);
    publish_n(r, 3, keep);
    for (int i = 0; i < 3; i++)
        ck_assert_uint_eq(refs(keep[i]), 2);
    ring_destroy(r);
    for (int i = 0; i < 3; i++) {
        ck_assert_uint_eq(refs(keep[i]), 1);
        msgbuf_unref(keep[i]);
    }
}
END_TEST

/* Without extra references the ring is the only owner: ASan/LSan report any leak or double
 * free here in the sanitizer build. */
START_TEST(test_sole_owner_no_leak)
{
    ring *r = ring_create(7);
    publish_n(r, 100, NULL);
    ring_destroy(r);
}
END_TEST

static Suite *ring_suite(void)
{
    Suite *s = suite_create("ring");

    TCase *basic = tcase_create("basic");
    tcase_add_test(basic, test_create_and_destroy_edge_cases);
    tcase_add_test(basic, test_peek_up_to_date_returns_null);
    tcase_add_test(basic, test_capacity_one);
    tcase_add_test(basic, test_gap_counted_once);
    suite_add_tcase(s, basic);

    TCase *lag = tcase_create("lag");
    tcase_add_loop_test(lag, test_drop_oldest_exact, 0,
                        (int)(sizeof overflow_cases / sizeof overflow_cases[0]));
    tcase_add_loop_test(lag, test_interleavings, 0,
                        (int)(sizeof interleavings / sizeof interleavings[0]));
    suite_add_tcase(s, lag);

    TCase *refc = tcase_create("refcounts");
    tcase_add_test(refc, test_refcounts);
    tcase_add_test(refc, test_destroy_partial);
    tcase_add_test(refc, test_sole_owner_no_leak);
    suite_add_tcase(s, refc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(ring_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
