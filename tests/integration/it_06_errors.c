/*
 * 06 errors: malformed JSON and msgpack, wrong field types, unknown types, fields over their own
 * limits - each answered with error {code, message} (carrying the request's ref when it had
 * one) while the connection stays open and usable.
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

/* Sends text and expects error code; if ref_json is not NULL the error must carry that ref. */
static void text_error(wsc_sync *c, const char *text, const char *code, const char *ref_json)
{
    h_send_raw(c, WSC_TEXT, text, strlen(text));
    wsc_msg m;
    ck_assert_msg(wsc_sync_recv(c, H_WAIT_MS, &m) == WSC_SYNC_OK, "no reply to %s", text);
    ck_assert_msg(m.kind == WSC_TEXT && m.json, "bad reply to %s", text);
    const char *type = json_string_value(json_object_get(m.json, "type"));
    const char *got = json_string_value(json_object_get(m.json, "code"));
    ck_assert_msg(type && strcmp(type, "error") == 0 && got && strcmp(got, code) == 0,
                  "%s: expected error %s, got %s", text, code, h_dump(m.json));
    ck_assert_msg(json_is_string(json_object_get(m.json, "message")), "%s", h_dump(m.json));
    if (ref_json) {
        json_t *want = json_loads(ref_json, JSON_DECODE_ANY, NULL);
        ck_assert_msg(h_json_equal(json_object_get(m.json, "ref"), want), "%s: ref not echoed: %s",
                      text, h_dump(m.json));
        json_decref(want);
    }
    wsc_msg_clear(&m);
}

/* Sends binary bytes and expects error code. */
static void binary_error(wsc_sync *c, const void *data, size_t len, const char *code,
                         const char *what)
{
    h_send_raw(c, WSC_BINARY, data, len);
    json_t *e = h_expect(c, WSC_TEXT, "error");
    ck_assert_msg(strcmp(h_str(e, "code"), code) == 0, "%s: %s", what, h_dump(e));
    json_decref(e);
}

START_TEST(malformed_json_is_bad_request)
{
    wsc_sync *c = h_joined(node, "doc1", "alice");
    static const char *const bad[] = {
        "{",
        "not json",
        "",
        "[1,2]",
        "\"type\"",
        "42",
        "null",
        "{}",
        "{\"type\":5}",
        "{\"type\":null}",
        "{\"type\":\"ping\",\"type\":\"ping\"}",
        "{\"type\":\"operation\",\"payload\":1,\"payload\":2}",
        "{\"type\":\"ping\"} trailing",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        text_error(c, bad[i], "bad_request", NULL);
    h_roundtrip(c);
    /* Nothing was applied. */
    h_send(c, "{\"type\":\"operation\",\"payload\":0}");
    json_t *ack = h_expect(c, WSC_TEXT, "ack");
    ck_assert_int_eq(h_int(ack, "seq"), 1);
    json_decref(ack);
    wsc_sync_destroy(c);
}
END_TEST

START_TEST(deeply_nested_json_is_bad_request)
{
    wsc_sync *c = h_joined(node, "doc1", "alice");
    size_t depth = 5000;
    char *text = malloc(depth * 2 + 64);
    size_t k = (size_t)sprintf(text, "{\"type\":\"operation\",\"payload\":");
    for (size_t i = 0; i < depth; i++)
        text[k++] = '[';
    for (size_t i = 0; i < depth; i++)
        text[k++] = ']';
    text[k++] = '}';
    text[k] = 0;
    text_error(c, text, "bad_request", NULL);
    free(text);
    h_roundtrip(c);
    wsc_sync_destroy(c);
}
END_TEST

START_TEST(malformed_msgpack_is_bad_request)
{
    wsc_sync *c = h_joined(node, "doc1", "alice");
    static const uint8_t never_used[] = {0xc1};
    static const uint8_t truncated_map[] = {0x82, 0xa4, 't', 'y', 'p', 'e'};
    static const uint8_t array_not_map[] = {0x91, 0x01};
    static const uint8_t int_key[] = {0x81, 0x01, 0xa4, 'p', 'i', 'n', 'g'};
    /* Headers declaring 2^32-1 elements / bytes in 5 bytes: refused without allocating. */
    static const uint8_t huge_array[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t huge_map[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t huge_str[] = {0x81, 0xa4, 't',  'y',  'p', 'e',
                                       0xdb, 0xff, 0xff, 0xff, 0xff};
    static const uint8_t huge_bin_payload[] = {
        0x82, 0xa4, 't', 'y', 'p', 'e', 0xa9, 'o', 'p', 'e',  'r',  'a',  't',  'i', 'o',
        'n',  0xa7, 'p', 'a', 'y', 'l', 'o',  'a', 'd', 0xc6, 0xff, 0xff, 0xff, 0xff};
    /* Trailing bytes after one complete map. */
    static const uint8_t trailing[] = {0x81, 0xa4, 't', 'y', 'p', 'e',
                                       0xa4, 'p',  'i', 'n', 'g', 0x00};
    binary_error(c, never_used, sizeof(never_used), "bad_request", "0xc1");
    binary_error(c, truncated_map, sizeof(truncated_map), "bad_request", "truncated map");
    binary_error(c, array_not_map, sizeof(array_not_map), "bad_request", "array");
    binary_error(c, int_key, sizeof(int_key), "bad_request", "integer key");
    binary_error(c, huge_array, sizeof(huge_array), "bad_request", "array32 header");
    binary_error(c, huge_map, sizeof(huge_map), "bad_request", "map32 header");
    binary_error(c, huge_str, sizeof(huge_str), "bad_request", "str32 header");
    binary_error(c, huge_bin_payload, sizeof(huge_bin_payload), "bad_request", "bin32 header");
    binary_error(c, trailing, sizeof(trailing), "bad_request", "trailing bytes");
    binary_error(c, "", 0, "bad_request", "empty");
    h_roundtrip(c);
    wsc_sync_destroy(c);
}
END_TEST

/* Packs a string into pk. */
static void pack_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str(pk, strlen(s));
    msgpack_pack_str_body(pk, s, strlen(s));
}

START_TEST(payloads_json_cannot_represent_are_refused)
{
    wsc_sync *c = h_joined(node, "doc1", "alice");
    msgpack_sbuffer sb;
    msgpack_packer pk;
    /* ext payload */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 3);
    pack_str(&pk, "type");
    pack_str(&pk, "operation");
    pack_str(&pk, "ref");
    pack_str(&pk, "ext");
    pack_str(&pk, "payload");
    msgpack_pack_ext(&pk, 2, 5);
    msgpack_pack_ext_body(&pk, "\x01\x02", 2);
    h_send_raw(c, WSC_BINARY, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    json_t *e = h_expect_error(c, "bad_request");
    ck_assert_str_eq(h_str(e, "ref"), "ext");
    json_decref(e);
    /* payload map with an integer key */
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "type");
    pack_str(&pk, "operation");
    pack_str(&pk, "payload");
    msgpack_pack_map(&pk, 1);
    msgpack_pack_int(&pk, 1);
    pack_str(&pk, "one");
    h_send_raw(c, WSC_BINARY, sb.data, sb.size);
    msgpack_sbuffer_destroy(&sb);
    json_decref(h_expect_error(c, "bad_request"));
    h_send(c, "{\"type\":\"operation\",\"payload\":0}");
    json_t *ack = h_expect(c, WSC_TEXT, "ack");
    ck_assert_int_eq(h_int(ack, "seq"), 1);
    json_decref(ack);
    wsc_sync_destroy(c);
}
END_TEST

START_TEST(wrong_field_types_are_bad_request_with_ref)
{
    wsc_sync *c = h_joined(node, "doc1", "alice");
    text_error(c, "{\"type\":\"operation\",\"ref\":\"m\"}", "bad_request", "\"m\"");
    text_error(c, "{\"type\":\"cursor\",\"ref\":[1]}", "bad_request", "[1]");
    text_error(c, "{\"type\":\"sync_request\",\"since\":\"0\",\"ref\":{\"k\":2}}", "bad_request",
               "{\"k\":2}");
    h_roundtrip(c);
    wsc_sync_destroy(c);
}
END_TEST

START_TEST(unknown_type_echoes_ref)
{
    wsc_sync *c = h_joined(node, "doc1", "alice");
    text_error(c, "{\"type\":\"frobnicate\",\"ref\":\"u1\"}", "unknown_type", "\"u1\"");
    text_error(c, "{\"type\":\"PING\"}", "unknown_type", NULL);
    text_error(c, "{\"type\":\"\"}", "unknown_type", NULL);
    h_roundtrip(c);
    wsc_sync_destroy(c);
}
END_TEST

START_TEST(fields_over_their_limit_are_too_large)
{
    wsc_sync *a = h_joined(node, "doc1", "alice");
    wsc_sync *b = h_joined(node, "doc1", "bob");
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));

    /* A 3000-byte cursor is fine, a 5000-byte one is over the 4 KiB default. */
    char *s = malloc(5001);
    memset(s, 'c', 5000);
    s[3000] = 0;
    h_send(a, "{\"type\":\"cursor\",\"cursor\":\"%s\"}", s);
    json_t *cur = h_expect(b, WSC_BINARY, "cursor");
    json_decref(cur);
    s[3000] = 'c';
    s[5000] = 0;
    h_send(a, "{\"type\":\"cursor\",\"ref\":\"big-cursor\",\"cursor\":\"%s\"}", s);
    json_t *e = h_expect_error(a, "too_large");
    ck_assert_str_eq(h_str(e, "ref"), "big-cursor");
    json_decref(e);

    /* A 200-byte ref is fine, a 300-byte one is over the 256-byte default. */
    s[200] = 0;
    h_send(a, "{\"type\":\"operation\",\"payload\":1,\"ref\":\"%s\"}", s);
    json_t *ack = h_expect(a, WSC_TEXT, "ack");
    ck_assert_str_eq(h_str(ack, "ref"), s);
    json_decref(ack);
    json_decref(h_expect(b, WSC_BINARY, "operation"));
    s[200] = 'c';
    s[300] = 0;
    h_send(a, "{\"type\":\"operation\",\"payload\":2,\"ref\":\"%s\"}", s);
    json_decref(h_expect_error(a, "too_large"));
    free(s);

    /* Not applied, not broadcast; the connection stays usable. */
    h_roundtrip(a);
    h_expect_quiet(b, 200);
    h_send(a, "{\"type\":\"operation\",\"payload\":3}");
    ack = h_expect(a, WSC_TEXT, "ack");
    ck_assert_int_eq(h_int(ack, "seq"), 2);
    json_decref(ack);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
}
END_TEST

START_TEST(rejected_messages_are_counted)
{
    h_http r;
    ck_assert_int_eq(h_http_get(h_node_port(node), "/stats", &r), 0);
    json_t *before = json_loads(r.body, 0, NULL);
    h_http_free(&r);
    ck_assert_ptr_nonnull(before);
    json_int_t rejected0 = h_int(h_field(before, "messages"), "rejected");
    json_decref(before);

    wsc_sync *c = h_joined(node, "doc1", "alice");
    text_error(c, "{", "bad_request", NULL);
    text_error(c, "{\"type\":\"nope\"}", "unknown_type", NULL);
    h_roundtrip(c);
    ck_assert_int_eq(h_http_get(h_node_port(node), "/stats", &r), 0);
    json_t *after = json_loads(r.body, 0, NULL);
    h_http_free(&r);
    ck_assert_ptr_nonnull(after);
    ck_assert_int_ge(h_int(h_field(after, "messages"), "rejected"), rejected0 + 2);
    json_decref(after);
    wsc_sync_destroy(c);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("06_errors");
    TCase *tc = tcase_create("errors");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, malformed_json_is_bad_request);
    tcase_add_test(tc, deeply_nested_json_is_bad_request);
    tcase_add_test(tc, malformed_msgpack_is_bad_request);
    tcase_add_test(tc, payloads_json_cannot_represent_are_refused);
    tcase_add_test(tc, wrong_field_types_are_bad_request_with_ref);
    tcase_add_test(tc, unknown_type_echoes_ref);
    tcase_add_test(tc, fields_over_their_limit_are_too_large);
    tcase_add_test(tc, rejected_messages_are_counted);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
