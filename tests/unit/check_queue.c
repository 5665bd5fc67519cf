/*
 * check_queue.c: the bounded queue the WebSocket and Redis threads meet at. FIFO order, the
 * bound (a full queue refuses and the caller keeps the item), and no item lost or duplicated
 * when a producer and a consumer run on different threads.
 */
#include <check.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>

#include "relay/queue.h"

START_TEST(fifo_and_bound)
{
    queue *q = queue_create(4);
    ck_assert_ptr_nonnull(q);
    /* Only the push into an empty queue asks for a wake. */
    for (uintptr_t i = 1; i <= 4; i++)
        ck_assert_int_eq(queue_push(q, (void *)i), i == 1);
    ck_assert_int_eq(queue_push(q, (void *)5), -1);
    ck_assert_uint_eq(queue_length(q), 4);
    void *out[8];
    ck_assert_uint_eq(queue_pop_many(q, out, 3), 3);
    ck_assert_ptr_eq(out[0], (void *)1);
    ck_assert_ptr_eq(out[2], (void *)3);
    ck_assert_int_eq(queue_push(q, (void *)6), 0); /* wraps around */
    ck_assert_uint_eq(queue_pop_many(q, out, 8), 2);
    ck_assert_ptr_eq(out[0], (void *)4);
    ck_assert_ptr_eq(out[1], (void *)6);
    ck_assert_uint_eq(queue_pop_many(q, out, 8), 0);
    ck_assert_int_eq(queue_push(q, (void *)7), 1); /* drained: the consumer must be woken */
    queue_destroy(q, NULL);
}
END_TEST

static int freed;

static void count_free(void *item)
{
    freed++;
    free(item);
}

START_TEST(destroy_frees_what_is_left)
{
    queue *q = queue_create(8);
    for (int i = 0; i < 5; i++)
        ck_assert_int_ge(queue_push(q, malloc(16)), 0);
    freed = 0;
    queue_destroy(q, count_free);
    ck_assert_int_eq(freed, 5);
    queue_destroy(NULL, NULL);
}
END_TEST

#define N_ITEMS 200000

static void *producer(void *arg)
{
    queue *q = arg;
    for (uintptr_t i = 1; i <= N_ITEMS; i++)
        while (queue_push(q, (void *)i) < 0)
            sched_yield();
    return NULL;
}

START_TEST(two_threads_lose_nothing)
{
    queue *q = queue_create(64);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, producer, q), 0);
    uintptr_t expect = 1;
    void *out[32];
    while (expect <= N_ITEMS) {
        size_t n = queue_pop_many(q, out, 32);
        for (size_t i = 0; i < n; i++)
            ck_assert_ptr_eq(out[i], (void *)expect++);
        if (!n)
            sched_yield();
    }
    pthread_join(t, NULL);
    ck_assert_uint_eq(queue_length(q), 0);
    queue_destroy(q, NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("queue");
    TCase *tc = tcase_create("queue");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, fifo_and_bound);
    tcase_add_test(tc, destroy_frees_what_is_left);
    tcase_add_test(tc, two_threads_lose_nothing);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
