/*
 * 11 write pacing (--write-delay): a connection receiving a fast stream of broadcasts gets them
 * in few socket writes, complete and in order; without pacing every one is its own write; a
 * broadcast to a connection at an ordinary rate is never held, even right after a write.
 */
#include "harness.h"

#include <time.h>

#define BURST 100

static json_int_t stat_messages(const h_node *n, const char *key)
{
    h_http r;
    ck_assert_int_eq(h_http_get(h_node_port(n), "/stats", &r), 0);
    json_t *st = json_loads(r.body, 0, NULL);
    h_http_free(&r);
    ck_assert_ptr_nonnull(st);
    json_int_t v = h_int(h_field(st, "messages"), key);
    json_decref(st);
    return v;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* alice sends BURST operations, each after the previous ack; bob must receive every one, in
 * order. Returns how many socket writes per message the node made meanwhile (acks included). */
static double burst_writes_per_message(h_node *n)
{
    wsc_sync *a = h_joined(n, "doc1", "alice");
    wsc_sync *b = h_joined(n, "doc1", "bob");
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    json_int_t writes0 = stat_messages(n, "writes"), out0 = stat_messages(n, "out");

    for (int i = 1; i <= BURST; i++) {
        h_send(a, "{\"type\":\"operation\",\"ref\":%d,\"payload\":{\"n\":%d}}", i, i);
        json_t *ack = h_expect(a, WSC_TEXT, "ack");
        ck_assert_int_eq(h_int(ack, "seq"), i);
        json_decref(ack);
    }
    for (int i = 1; i <= BURST; i++) {
        json_t *op = h_expect(b, WSC_BINARY, "operation");
        ck_assert_int_eq(h_int(op, "seq"), i);
        ck_assert_int_eq(h_int(h_field(op, "payload"), "n"), i);
        json_decref(op);
    }
    h_roundtrip(b);
    json_int_t writes = stat_messages(n, "writes") - writes0;
    json_int_t out = stat_messages(n, "out") - out0;
    ck_assert_int_ge(out, 2 * BURST);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
    return (double)writes / (double)out;
}

START_TEST(paced_burst_is_complete_in_order_and_batched)
{
    h_node *n = h_node_start("--write-delay", "200", NULL);
    double wpm = burst_writes_per_message(n);
    /* The acks are one write each (alice waits for every one); bob's hundred share a few. */
    ck_assert_msg(wpm < 0.75, "%.2f writes per message with pacing", wpm);
    h_node_finish(n);
}
END_TEST

START_TEST(unpaced_burst_writes_each_message)
{
    h_node *n = h_node_start("--write-delay", "0", NULL);
    double wpm = burst_writes_per_message(n);
    ck_assert_msg(wpm > 0.9, "%.2f writes per message without pacing", wpm);
    h_node_finish(n);
}
END_TEST

START_TEST(ordinary_rate_is_never_held)
{
    h_node *n = h_node_start("--write-delay", "1000", NULL);
    wsc_sync *a = h_joined(n, "doc1", "alice");
    wsc_sync *b = h_joined(n, "doc1", "bob"); /* bob's last write was a moment ago */
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    for (int i = 1; i <= 3; i++) {
        int64_t t0 = now_ms();
        h_send(a, "{\"type\":\"operation\",\"payload\":%d}", i);
        json_t *op = h_expect(b, WSC_BINARY, "operation");
        int64_t took = now_ms() - t0;
        ck_assert_int_eq(h_int(op, "seq"), i);
        json_decref(op);
        /* A held write would wait for the pacer's flush, one second away. */
        ck_assert_msg(took < 500, "operation %d took %lld ms", i, (long long)took);
        json_decref(h_expect(a, WSC_TEXT, "ack"));
    }
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
    h_node_finish(n);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("11_pacing");
    TCase *tc = tcase_create("pacing");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_test(tc, paced_burst_is_complete_in_order_and_batched);
    tcase_add_test(tc, unpaced_burst_writes_each_message);
    tcase_add_test(tc, ordinary_rate_is_never_held);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
