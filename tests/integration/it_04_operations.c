/*
 * 04 operations: ack {ref, seq}, per-document sequencing, Binary broadcasts to the other joined
 * sessions only, payloads that arrive unchanged (JSON and msgpack, bin included), and the
 * seed's gate: authenticated but not joined sees no broadcast.
 */
#include "harness.h"

#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

static h_node *node;

static void setup(void)
{
    node = h_node_start(NULL);
}

static void teardown(void)
{
    h_node_finish(node);
    node = NULL;
}

START_TEST(ack_and_broadcast_fields)
{
    wsc_sync *a = h_ws(node, "doc1");
    json_t *auth = h_auth(a, "alice");
    json_decref(h_join(a));
    wsc_sync *b = h_joined(node, "doc1", "bob");
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));

    h_send(a, "{\"type\":\"operation\",\"ref\":\"r-1\",\"payload\":{\"insert\":\"hi\",\"at\":0}}");
    json_t *ack = h_expect(a, WSC_TEXT, "ack");
    ck_assert_str_eq(h_str(ack, "ref"), "r-1");
    ck_assert_int_eq(h_int(ack, "seq"), 1);
    json_decref(ack);

    json_t *op = h_expect(b, WSC_BINARY, "operation");
    ck_assert_str_eq(h_str(op, "document_id"), "doc1");
    ck_assert_int_eq(h_int(op, "seq"), 1);
    ck_assert_str_eq(h_str(op, "user_id"), "alice");
    ck_assert_str_eq(h_str(op, "session_id"), h_str(auth, "session_id"));
    json_t *want = json_loads("{\"insert\":\"hi\",\"at\":0}", 0, NULL);
    ck_assert_msg(h_json_equal(h_field(op, "payload"), want), "%s", h_dump(op));
    json_decref(want);
    json_decref(op);

    /* The sender does not get its own operation back. */
    h_roundtrip(a);
    h_expect_quiet(a, 200);
    json_decref(auth);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
}
END_TEST

START_TEST(ref_is_echoed_exactly)
{
    wsc_sync *a = h_joined(node, "doc1", "alice");
    static const char *const refs[] = {
        "\"str\"",   "42",
        "-7",        "1.5",
        "true",      "{\"a\":[1,2,{\"b\":null}]}",
        "[\"x\",1]", "\"\\u00e9\\u2713\"",
        "null",
    };
    for (size_t i = 0; i < sizeof(refs) / sizeof(refs[0]); i++) {
        h_send(a, "{\"type\":\"operation\",\"payload\":%zu,\"ref\":%s}", i, refs[i]);
        json_t *ack = h_expect(a, WSC_TEXT, "ack");
        json_t *want = json_loads(refs[i], JSON_DECODE_ANY, NULL);
        ck_assert_msg(h_json_equal(h_field(ack, "ref"), want), "ref %s came back as %s", refs[i],
                      h_dump(ack));
        ck_assert_int_eq(h_int(ack, "seq"), (json_int_t)i + 1);
        json_decref(want);
        json_decref(ack);
    }
    /* Absent ref: null. */
    h_send(a, "{\"type\":\"operation\",\"payload\":\"no ref\"}");
    json_t *ack = h_expect(a, WSC_TEXT, "ack");
    ck_assert_msg(json_is_null(h_field(ack, "ref")), "%s", h_dump(ack));
    json_decref(ack);
    wsc_sync_destroy(a);
}
END_TEST

START_TEST(seq_grows_by_one_and_everyone_sees_seq_order)
{
    wsc_sync *a = h_joined(node, "doc1", "alice");
    wsc_sync *b = h_joined(node, "doc1", "bob");
    wsc_sync *c = h_joined(node, "doc1", "carol");
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    json_decref(h_expect(b, WSC_BINARY, "user_joined"));

    /* Interleaved senders; each op is acked before the next is sent. A sender may see the
     * other's broadcasts before its ack: they are recorded, not skipped. */
    wsc_sync *order[] = {a, b, a, a, b, a};
    enum { N = 6 };
    json_int_t seen_a[N], seen_b[N];
    size_t na = 0, nb = 0;
    for (int i = 0; i < N; i++) {
        wsc_sync *snd = order[i];
        h_send(snd, "{\"type\":\"operation\",\"payload\":{\"i\":%d},\"ref\":%d}", i, i);
        for (;;) {
            wsc_msg m;
            ck_assert_int_eq(wsc_sync_recv(snd, H_WAIT_MS, &m), WSC_SYNC_OK);
            ck_assert_ptr_nonnull(m.json);
            const char *type = h_str(m.json, "type");
            if (strcmp(type, "operation") == 0 && m.kind == WSC_BINARY) {
                json_int_t seq = h_int(m.json, "seq");
                if (snd == a)
                    seen_a[na++] = seq;
                else
                    seen_b[nb++] = seq;
                wsc_msg_clear(&m);
                continue;
            }
            ck_assert_msg(strcmp(type, "ack") == 0 && m.kind == WSC_TEXT, "%s", h_dump(m.json));
            ck_assert_int_eq(h_int(m.json, "seq"), i + 1);
            ck_assert_int_eq(h_int(m.json, "ref"), i);
            wsc_msg_clear(&m);
            break;
        }
    }
    /* carol got all six in seq order; alice and bob got the other's only, in order. */
    for (int i = 0; i < N; i++) {
        json_t *op = h_expect(c, WSC_BINARY, "operation");
        ck_assert_int_eq(h_int(op, "seq"), i + 1);
        ck_assert_int_eq(h_int(h_field(op, "payload"), "i"), i);
        json_decref(op);
    }
    for (int i = 0; i < N; i++) {
        bool to_a = order[i] == b;
        size_t *count = to_a ? &na : &nb;
        json_int_t *seen = to_a ? seen_a : seen_b;
        bool already = false;
        for (size_t k = 0; k < *count; k++)
            already = already || seen[k] == i + 1;
        if (already)
            continue;
        json_t *op = h_expect(to_a ? a : b, WSC_BINARY, "operation");
        seen[(*count)++] = h_int(op, "seq");
        json_decref(op);
    }
    ck_assert_int_eq(na, 2);
    ck_assert_int_eq(nb, 4);
    static const json_int_t want_a[] = {2, 5}, want_b[] = {1, 3, 4, 6};
    for (size_t k = 0; k < na; k++)
        ck_assert_int_eq(seen_a[k], want_a[k]);
    for (size_t k = 0; k < nb; k++)
        ck_assert_int_eq(seen_b[k], want_b[k]);
    h_expect_quiet(a, 100);
    h_expect_quiet(b, 100);
    /* A new joiner learns the latest seq. */
    wsc_sync *d = h_ws(node, "doc1");
    json_decref(h_auth(d, "dave"));
    json_t *j = h_join(d);
    ck_assert_int_eq(h_int(j, "seq"), N);
    json_decref(j);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
    wsc_sync_destroy(c);
    wsc_sync_destroy(d);
}
END_TEST

START_TEST(pipelined_operations_are_acked_in_order)
{
    wsc_sync *a = h_joined(node, "doc1", "alice");
    wsc_sync *b = h_joined(node, "doc1", "bob");
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    const int n = 200;
    for (int i = 0; i < n; i++) {
        char msg[128];
        int len =
            snprintf(msg, sizeof(msg), "{\"type\":\"operation\",\"payload\":%d,\"ref\":%d}", i, i);
        ck_assert_int_eq(wsc_sync_queue(a, WSC_TEXT, msg, (size_t)len), 0);
    }
    for (int i = 0; i < n; i++) {
        json_t *ack = h_expect(a, WSC_TEXT, "ack");
        ck_assert_int_eq(h_int(ack, "ref"), i);
        ck_assert_int_eq(h_int(ack, "seq"), i + 1);
        json_decref(ack);
    }
    for (int i = 0; i < n; i++) {
        json_t *op = h_expect(b, WSC_BINARY, "operation");
        ck_assert_int_eq(h_int(op, "seq"), i + 1);
        ck_assert_int_eq(json_integer_value(h_field(op, "payload")), i);
        json_decref(op);
    }
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
}
END_TEST

START_TEST(json_payloads_arrive_unchanged)
{
    wsc_sync *a = h_joined(node, "doc1", "alice");
    wsc_sync *b = h_joined(node, "doc1", "bob");
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    static const char *const payloads[] = {
        "null",
        "true",
        "false",
        "0",
        "-1",
        "9007199254740993",
        "-9223372036854775808",
        "1.5e-7",
        "\"plain\"",
        "\"\\u00e9\\u2713\\ud83d\\ude00 \\\" \\\\ \\n\"",
        "[]",
        "{}",
        "[1,[2,[3,[4]]],{\"a\":null}]",
        "{\"nested\":{\"list\":[{\"b\":false},\"x\",2.25]},\"\":\"empty key\"}",
    };
    for (size_t i = 0; i < sizeof(payloads) / sizeof(payloads[0]); i++) {
        h_send(a, "{\"type\":\"operation\",\"payload\":%s}", payloads[i]);
        json_decref(h_expect(a, WSC_TEXT, "ack"));
        json_t *op = h_expect(b, WSC_BINARY, "operation");
        json_t *want = json_loads(payloads[i], JSON_DECODE_ANY, NULL);
        ck_assert_ptr_nonnull(want);
        ck_assert_msg(h_json_equal(h_field(op, "payload"), want), "sent %s, got %s", payloads[i],
                      h_dump(op));
        json_decref(want);
        json_decref(op);
    }
    /* A large string payload (200 KiB). */
    size_t big = 200 * 1024;
    char *s = malloc(big + 1);
    for (size_t i = 0; i < big; i++)
        s[i] = (char)('a' + i % 26);
    s[big] = 0;
    h_send(a, "{\"type\":\"operation\",\"payload\":\"%s\"}", s);
    json_decref(h_expect(a, WSC_TEXT, "ack"));
    json_t *op = h_expect(b, WSC_BINARY, "operation");
    ck_assert_str_eq(json_string_value(h_field(op, "payload")), s);
    json_decref(op);
    free(s);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
}
END_TEST

START_TEST(payload_is_required)
{
    wsc_sync *a = h_joined(node, "doc1", "alice");
    h_send(a, "{\"type\":\"operation\",\"ref\":\"p\"}");
    json_t *e = h_expect_error(a, "bad_request");
    ck_assert_str_eq(h_str(e, "ref"), "p");
    json_decref(e);
    /* Nothing was sequenced. */
    h_send(a, "{\"type\":\"operation\",\"payload\":null}");
    json_t *ack = h_expect(a, WSC_TEXT, "ack");
    ck_assert_int_eq(h_int(ack, "seq"), 1);
    json_decref(ack);
    wsc_sync_destroy(a);
}
END_TEST

/* Packs a string into pk. */
static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

START_TEST(msgpack_requests_work_like_json)
{
    wsc_sync *b = h_joined(node, "doc1", "bob");
    wsc_sync *a = h_ws(node, "doc1");
    msgpack_sbuffer sb;
    msgpack_packer pk;

    /* authenticate as a msgpack map. */
    char *tok = h_token("alice", "Alice", 3600);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "type");
    pack_str(&pk, "authenticate");
    pack_str(&pk, "token");
    pack_str(&pk, tok);
    free(tok);
    h_send_raw(a, WSC_BINARY, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    json_t *r = h_expect(a, WSC_TEXT, "auth_result");
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "%s", h_dump(r));
    json_decref(r);

    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 1);
    pack_str(&pk, "type");
    pack_str(&pk, "join_document");
    h_send_raw(a, WSC_BINARY, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    json_decref(h_expect(a, WSC_TEXT, "joined_document"));
    json_decref(h_expect(b, WSC_BINARY, "user_joined"));

    /* operation with a bin payload and an integer ref. */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pack_str(&pk, "type");
    pack_str(&pk, "operation");
    pack_str(&pk, "ref");
    msgpack_pack_int(&pk, 77);
    pack_str(&pk, "payload");
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "blob");
    static const unsigned char bin[] = {0x00, 0xff, 0x10};
    msgpack_pack_bin(&pk, sizeof(bin));
    msgpack_pack_bin_body(&pk, bin, sizeof(bin));
    pack_str(&pk, "n");
    msgpack_pack_double(&pk, 0.25);
    h_send_raw(a, WSC_BINARY, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    json_t *ack = h_expect(a, WSC_TEXT, "ack");
    ck_assert_int_eq(h_int(ack, "ref"), 77);
    ck_assert_int_eq(h_int(ack, "seq"), 1);
    json_decref(ack);

    /* The broadcast carries the bin unchanged (decoded here as {"$base64": ...}). */
    json_t *op = h_expect(b, WSC_BINARY, "operation");
    json_t *want = json_loads("{\"blob\":{\"$base64\":\"AP8Q\"},\"n\":0.25}", 0, NULL);
    ck_assert_msg(h_json_equal(h_field(op, "payload"), want), "%s", h_dump(op));
    json_decref(op);

    /* In a Text reply (sync_response) the bin appears as {"$base64": ...}. */
    h_send(b, "{\"type\":\"sync_request\",\"since\":0}");
    json_t *sr = h_expect(b, WSC_TEXT, "sync_response");
    json_t *ops = h_field(sr, "operations");
    ck_assert_int_eq(json_array_size(ops), 1);
    ck_assert_msg(h_json_equal(h_field(json_array_get(ops, 0), "payload"), want), "%s", h_dump(sr));
    json_decref(sr);
    json_decref(want);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
}
END_TEST

START_TEST(authenticated_but_not_joined_sees_no_broadcast)
{
    wsc_sync *a = h_joined(node, "doc1", "alice");
    wsc_sync *lurker = h_ws(node, "doc1");
    json_decref(h_auth(lurker, "lurker"));
    wsc_sync *anon = h_ws(node, "doc1");
    wsc_sync *c = h_joined(node, "doc1", "carol");
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));

    h_send(a, "{\"type\":\"operation\",\"payload\":{\"x\":1}}");
    json_decref(h_expect(a, WSC_TEXT, "ack"));
    h_send(a, "{\"type\":\"cursor\",\"cursor\":{\"x\":1}}");
    /* The joined control client does see both. */
    json_decref(h_expect(c, WSC_BINARY, "operation"));
    json_decref(h_expect(c, WSC_BINARY, "cursor"));
    /* The authenticated-but-not-joined one and the anonymous one see nothing, but work. */
    h_roundtrip(lurker);
    h_roundtrip(anon);
    h_expect_quiet(lurker, 300);
    h_expect_quiet(anon, 50);
    /* Once joined, the lurker gets the next broadcasts. */
    json_decref(h_join(lurker));
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    json_decref(h_expect(c, WSC_BINARY, "user_joined"));
    h_send(a, "{\"type\":\"operation\",\"payload\":2}");
    json_decref(h_expect(a, WSC_TEXT, "ack"));
    json_t *op = h_expect(lurker, WSC_BINARY, "operation");
    ck_assert_int_eq(h_int(op, "seq"), 2);
    json_decref(op);
    wsc_sync_destroy(a);
    wsc_sync_destroy(lurker);
    wsc_sync_destroy(anon);
    wsc_sync_destroy(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("04_operations");
    TCase *tc = tcase_create("operations");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, ack_and_broadcast_fields);
    tcase_add_test(tc, ref_is_echoed_exactly);
    tcase_add_test(tc, seq_grows_by_one_and_everyone_sees_seq_order);
    tcase_add_test(tc, pipelined_operations_are_acked_in_order);
    tcase_add_test(tc, json_payloads_arrive_unchanged);
    tcase_add_test(tc, payload_is_required);
    tcase_add_test(tc, msgpack_requests_work_like_json);
    tcase_add_test(tc, authenticated_but_not_joined_sees_no_broadcast);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
