/*
 * 05 sync: sync_request {since, limit} -> sync_response with the retained operations after
 * since, has_more paging, complete:false once the bounded history no longer reaches since, and
 * bad_request for a bad since.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

/* Sends n operations from c (payload {"n": first + i}) and consumes their acks. */
static void send_ops(wsc_sync *c, int first, int n)
{
    for (int i = 0; i < n; i++) {
        h_send(c, "{\"type\":\"operation\",\"payload\":{\"n\":%d}}", first + i);
        json_decref(h_expect(c, WSC_TEXT, "ack"));
    }
}

/* Sends sync_request with the given extra fields and returns the sync_response. */
static json_t *sync_req(wsc_sync *c, const char *fields)
{
    h_send(c, "{\"type\":\"sync_request\",%s}", fields);
    return h_expect(c, WSC_TEXT, "sync_response");
}

/* Checks that ops holds exactly the seqs first..last with payload n == seq. */
static void check_ops(json_t *resp, int first, int last)
{
    json_t *ops = h_field(resp, "operations");
    ck_assert_msg(json_is_array(ops), "%s", h_dump(resp));
    ck_assert_msg(json_array_size(ops) == (size_t)(last - first + 1), "want %d..%d in %s", first,
                  last, h_dump(resp));
    for (int s = first; s <= last; s++) {
        json_t *op = json_array_get(ops, (size_t)(s - first));
        ck_assert_int_eq(h_int(op, "seq"), s);
        ck_assert_int_eq(h_int(h_field(op, "payload"), "n"), s);
    }
}

START_TEST(sync_response_fields)
{
    h_node *n = h_node_start(NULL);
    wsc_sync *a = h_ws(n, "doc1");
    json_t *auth = h_auth(a, "alice");
    json_t *joined = h_join(a);
    send_ops(a, 1, 3);
    json_t *r = sync_req(a, "\"since\":0");
    ck_assert_str_eq(h_str(r, "document_id"), "doc1");
    ck_assert_str_eq(h_str(r, "epoch"), h_str(joined, "epoch"));
    ck_assert_int_eq(h_int(r, "since"), 0);
    ck_assert_int_eq(h_int(r, "seq"), 3);
    ck_assert(h_bool(r, "complete"));
    ck_assert(!h_bool(r, "has_more"));
    check_ops(r, 1, 3);
    json_t *op = json_array_get(h_field(r, "operations"), 0);
    ck_assert_str_eq(h_str(op, "user_id"), "alice");
    ck_assert_str_eq(h_str(op, "session_id"), h_str(auth, "session_id"));
    json_decref(r);

    r = sync_req(a, "\"since\":2");
    ck_assert_int_eq(h_int(r, "since"), 2);
    check_ops(r, 3, 3);
    ck_assert(h_bool(r, "complete"));
    json_decref(r);

    /* since >= latest: nothing, complete. */
    r = sync_req(a, "\"since\":3");
    check_ops(r, 4, 3);
    ck_assert(h_bool(r, "complete"));
    json_decref(r);
    r = sync_req(a, "\"since\":1000");
    check_ops(r, 4, 3);
    ck_assert(h_bool(r, "complete"));
    ck_assert_int_eq(h_int(r, "seq"), 3);
    json_decref(r);

    /* Another session reads the same history, written by someone else. */
    wsc_sync *b = h_joined(n, "doc1", "bob");
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    r = sync_req(b, "\"since\":0");
    check_ops(r, 1, 3);
    json_decref(r);

    json_decref(auth);
    json_decref(joined);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
    h_node_finish(n);
}
END_TEST

START_TEST(empty_document_sync)
{
    h_node *n = h_node_start(NULL);
    wsc_sync *a = h_joined(n, "fresh", "alice");
    json_t *r = sync_req(a, "\"since\":0");
    ck_assert_int_eq(h_int(r, "seq"), 0);
    check_ops(r, 1, 0);
    ck_assert(h_bool(r, "complete"));
    json_decref(r);
    wsc_sync_destroy(a);
    h_node_finish(n);
}
END_TEST

START_TEST(limit_pages_with_has_more)
{
    h_node *n = h_node_start(NULL);
    wsc_sync *a = h_joined(n, "doc1", "alice");
    send_ops(a, 1, 10);
    json_t *r = sync_req(a, "\"since\":0,\"limit\":4");
    check_ops(r, 1, 4);
    ck_assert(h_bool(r, "has_more"));
    ck_assert(h_bool(r, "complete"));
    ck_assert_int_eq(h_int(r, "seq"), 10);
    json_decref(r);
    r = sync_req(a, "\"since\":4,\"limit\":4");
    check_ops(r, 5, 8);
    ck_assert(h_bool(r, "has_more"));
    json_decref(r);
    r = sync_req(a, "\"since\":8,\"limit\":4");
    check_ops(r, 9, 10);
    ck_assert(!h_bool(r, "has_more"));
    json_decref(r);
    r = sync_req(a, "\"since\":6,\"limit\":4");
    check_ops(r, 7, 10);
    ck_assert(!h_bool(r, "has_more"));
    json_decref(r);
    wsc_sync_destroy(a);
    h_node_finish(n);
}
END_TEST

START_TEST(sync_limit_option_caps_responses)
{
    h_node *n = h_node_start("--sync-limit", "3", NULL);
    wsc_sync *a = h_joined(n, "doc1", "alice");
    send_ops(a, 1, 5);
    json_t *r = sync_req(a, "\"since\":0");
    check_ops(r, 1, 3);
    ck_assert(h_bool(r, "has_more"));
    json_decref(r);
    r = sync_req(a, "\"since\":0,\"limit\":100");
    check_ops(r, 1, 3);
    ck_assert(h_bool(r, "has_more"));
    json_decref(r);
    r = sync_req(a, "\"since\":3");
    check_ops(r, 4, 5);
    ck_assert(!h_bool(r, "has_more"));
    json_decref(r);
    wsc_sync_destroy(a);
    h_node_finish(n);
}
END_TEST

START_TEST(bounded_history_is_incomplete)
{
    h_node *n = h_node_start("--history-length", "5", NULL);
    wsc_sync *a = h_joined(n, "doc1", "alice");
    send_ops(a, 1, 8);
    /* Retained: 4..8. */
    json_t *r = sync_req(a, "\"since\":0");
    ck_assert(!h_bool(r, "complete"));
    check_ops(r, 4, 8);
    ck_assert_int_eq(h_int(r, "seq"), 8);
    json_decref(r);
    r = sync_req(a, "\"since\":2");
    ck_assert(!h_bool(r, "complete"));
    check_ops(r, 4, 8);
    json_decref(r);
    r = sync_req(a, "\"since\":3");
    ck_assert(h_bool(r, "complete"));
    check_ops(r, 4, 8);
    json_decref(r);
    r = sync_req(a, "\"since\":6");
    ck_assert(h_bool(r, "complete"));
    check_ops(r, 7, 8);
    json_decref(r);
    wsc_sync_destroy(a);
    h_node_finish(n);
}
END_TEST

START_TEST(bad_since_or_limit_is_bad_request)
{
    h_node *n = h_node_start(NULL);
    wsc_sync *a = h_joined(n, "doc1", "alice");
    static const char *const bad[] = {
        "",
        ",\"since\":-1",
        ",\"since\":\"5\"",
        ",\"since\":1.5",
        ",\"since\":null",
        ",\"since\":[0]",
        ",\"since\":0,\"limit\":-1",
        ",\"since\":0,\"limit\":\"x\"",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        h_send(a, "{\"type\":\"sync_request\",\"ref\":%zu%s}", i, bad[i]);
        json_t *e = h_expect_error(a, "bad_request");
        ck_assert_msg(json_integer_value(json_object_get(e, "ref")) == (json_int_t)i,
                      "ref not echoed for case %zu: %s", i, h_dump(e));
        json_decref(e);
    }
    h_roundtrip(a);
    wsc_sync_destroy(a);
    h_node_finish(n);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("05_sync");
    TCase *tc = tcase_create("sync");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_test(tc, sync_response_fields);
    tcase_add_test(tc, empty_document_sync);
    tcase_add_test(tc, limit_pages_with_has_more);
    tcase_add_test(tc, sync_limit_option_caps_responses);
    tcase_add_test(tc, bounded_history_is_incomplete);
    tcase_add_test(tc, bad_since_or_limit_is_bad_request);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
