/*
 * check_codec.c: decoding client requests (relay/codec.h). Every request type is decoded from
 * JSON text and from msgpack built with msgpack-c's own packer, and both must agree; every status
 * is provoked; refs are echoed exactly. Limits and hostile input: check_codec_limits.c; encoders
 * and conversions: check_codec_encode.c.
 */
#include "codec_testutil.h"

/* ---- Requests: every type, both encodings ------------------------------------------------- */

START_TEST(test_authenticate)
{
    codec_request r;
    decode_both("{\"type\":\"authenticate\",\"token\":\"abc.def.ghi\"}", CODEC_OK,
                CODEC_AUTHENTICATE, &r);
    ck_assert_str_eq(r.token, "abc.def.ghi");
    ck_assert_ptr_null(r.session_id);
    ck_assert_ptr_null(r.resume_token);
    ck_assert_uint_eq(r.ref.len, 0);
    codec_request_free(&r);

    decode_both("{\"type\":\"authenticate\",\"session_id\":\"s-1\",\"resume_token\":\"rt\","
                "\"extra\":[1,2]}",
                CODEC_OK, CODEC_AUTHENTICATE, &r);
    ck_assert_ptr_null(r.token);
    ck_assert_str_eq(r.session_id, "s-1");
    ck_assert_str_eq(r.resume_token, "rt");
    codec_request_free(&r);
}
END_TEST

START_TEST(test_fieldless_types)
{
    expect_both("{\"type\":\"join_document\"}", CODEC_OK, CODEC_JOIN_DOCUMENT);
    expect_both("{\"type\":\"leave_document\",\"unknown\":{\"x\":1}}", CODEC_OK,
                CODEC_LEAVE_DOCUMENT);
    expect_both("{\"type\":\"ping\"}", CODEC_OK, CODEC_PING);
}
END_TEST

START_TEST(test_operation)
{
    static const char *const payloads[] = {
        "{\"a\":[1,-2,\"x\",true,false,null,1.5],\"b\":{}}",
        "null",
        "\"text with \\u00e9 and \\u0000 NUL\"",
        "[]",
        "-9223372036854775808",
        "9223372036854775807",
    };
    for (size_t k = 0; k < sizeof payloads / sizeof payloads[0]; k++) {
        char text[256];
        codec_request r;
        snprintf(text, sizeof text, "{\"type\":\"operation\",\"payload\":%s,\"ref\":7}",
                 payloads[k]);
        decode_both(text, CODEC_OK, CODEC_OPERATION, &r);
        assert_blob_json(r.payload, payloads[k]);
        assert_blob_json(r.ref, "7");
        codec_request_free(&r);
    }
    /* An explicit null payload is the one byte 0xc0, not "absent". */
    codec_request r;
    ck_assert_int_eq(dec_json("{\"type\":\"operation\",\"payload\":null}", &r), CODEC_OK);
    ck_assert_uint_eq(r.payload.len, 1);
    ck_assert_uint_eq(r.payload.data[0], 0xc0);
    codec_request_free(&r);
}
END_TEST

START_TEST(test_cursor)
{
    codec_request r;
    decode_both("{\"type\":\"cursor\",\"cursor\":{\"line\":3,\"ch\":[1,2]}}", CODEC_OK,
                CODEC_CURSOR, &r);
    assert_blob_json(r.cursor, "{\"line\":3,\"ch\":[1,2]}");
    codec_request_free(&r);
    decode_both("{\"type\":\"cursor\",\"cursor\":null}", CODEC_OK, CODEC_CURSOR, &r);
    ck_assert_uint_eq(r.cursor.len, 1);
    codec_request_free(&r);
}
END_TEST

START_TEST(test_sync_request)
{
    codec_request r;
    decode_both("{\"type\":\"sync_request\",\"since\":0}", CODEC_OK, CODEC_SYNC_REQUEST, &r);
    ck_assert_uint_eq(r.since, 0);
    ck_assert_uint_eq(r.limit, 0);
    codec_request_free(&r);
    decode_both("{\"type\":\"sync_request\",\"since\":123456789012,\"limit\":50}", CODEC_OK,
                CODEC_SYNC_REQUEST, &r);
    ck_assert_uint_eq(r.since, 123456789012ULL);
    ck_assert_uint_eq(r.limit, 50);
    codec_request_free(&r);
    decode_both("{\"type\":\"sync_request\",\"since\":1,\"limit\":null}", CODEC_OK,
                CODEC_SYNC_REQUEST, &r);
    ck_assert_uint_eq(r.limit, 0);
    codec_request_free(&r);
    decode_both("{\"type\":\"sync_request\",\"since\":1,\"limit\":99999999999}", CODEC_OK,
                CODEC_SYNC_REQUEST, &r);
    ck_assert_uint_eq(r.limit, UINT32_MAX);
    codec_request_free(&r);

    /* msgpack-only encodings of the same numbers: uint64 since, a signed int8 holding 5. */
    uint8_t since64[] = {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe};
    ck_assert_int_eq(dec_with_raw("sync_request", "since", since64, sizeof since64, &r), CODEC_OK);
    ck_assert_uint_eq(r.since, UINT64_MAX - 1);
    codec_request_free(&r);
    uint8_t since_i8[] = {0xd0, 0x05};
    ck_assert_int_eq(dec_with_raw("sync_request", "since", since_i8, sizeof since_i8, &r),
                     CODEC_OK);
    ck_assert_uint_eq(r.since, 5);
    codec_request_free(&r);
}
END_TEST

START_TEST(test_ref_any_value_echoed)
{
    static const char *const refs[] = {"\"op-1\"", "42",  "null", "{\"k\":[1,\"x\",{}]}",
                                       "-1.25",    "true"};
    for (size_t k = 0; k < sizeof refs / sizeof refs[0]; k++) {
        char text[160];
        codec_request r;
        snprintf(text, sizeof text, "{\"type\":\"ping\",\"ref\":%s}", refs[k]);
        decode_both(text, CODEC_OK, CODEC_PING, &r);
        json_t *ack = reply_json(codec_encode_ack(r.ref, 9));
        assert_json_field(ack, "ref", refs[k]);
        json_decref(ack);
        json_t *e = reply_json(codec_encode_error("bad_request", "m", r.ref));
        assert_json_field(e, "ref", refs[k]);
        json_decref(e);
        json_t *p = reply_json(codec_encode_pong(r.ref));
        assert_json_field(p, "ref", refs[k]);
        json_decref(p);
        codec_request_free(&r);
    }
}
END_TEST

/* ---- Statuses ----------------------------------------------------------------------------- */

START_TEST(test_malformed_json)
{
    static const char *const bad[] = {
        "",
        "{",
        "not json",
        "[]",
        "[{\"type\":\"ping\"}]",
        "\"ping\"",
        "42",
        "null",
        "{}",
        "{\"type\":1}",
        "{\"type\":null}",
        "{\"type\":[\"ping\"]}",
        "{\"type\":\"ping\",\"type\":\"ping\"}",
        "{\"type\":\"ping\",\"ref\":{\"a\":1,\"a\":2}}",
        "{\"type\":\"ping\"} trailing",
        "{\"type\":\"ping\"}{}",
        "{\"type\":\"operation\",\"payload\":NaN}",
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        codec_request r;
        codec_status st = dec_json(bad[k], &r);
        ck_assert_msg(st == CODEC_MALFORMED, "%s: status %d", bad[k], st);
        ck_assert_msg(err[0] != '\0', "%s: no error text", bad[k]);
        codec_request_free(&r);
    }
    /* Invalid UTF-8 inside JSON text. */
    codec_request r;
    const char inv[] = "{\"type\":\"ping\",\"x\":\"\xc3\x28\"}";
    ck_assert_int_eq(codec_decode_text(inv, sizeof inv - 1, NULL, &r, err, sizeof err),
                     CODEC_MALFORMED);
    codec_request_free(&r);
    /* Not NUL-terminated input is read only up to len. */
    const char cut[] = "{\"type\":\"ping\"}GARBAGE";
    ck_assert_int_eq(codec_decode_text(cut, 15, NULL, &r, err, sizeof err), CODEC_OK);
    ck_assert_int_eq(r.type, CODEC_PING);
    codec_request_free(&r);
}
END_TEST

START_TEST(test_malformed_msgpack)
{
    codec_request r;
    static const struct {
        const char *name;
        const uint8_t bytes[16];
        size_t len;
    } bad[] = {
        {"empty", {0}, 0},
        {"array top", {0x91, 0xc0}, 2},
        {"string top", {0xa4, 'p', 'i', 'n', 'g'}, 5},
        {"nil top", {0xc0}, 1},
        {"empty map", {0x80}, 1},
        {"truncated map", {0x81, 0xa4, 't', 'y', 'p', 'e'}, 6},
        {"int key", {0x81, 0x01, 0xa4, 'p', 'i', 'n', 'g'}, 7},
        {"bin key", {0x81, 0xc4, 0x01, 't', 0xc0}, 5},
        {"type not str", {0x81, 0xa4, 't', 'y', 'p', 'e', 0x01}, 7},
        {"type is bin", {0x81, 0xa4, 't', 'y', 'p', 'e', 0xc4, 0x01, 'x'}, 9},
        {"reserved 0xc1", {0x81, 0xa4, 't', 'y', 'p', 'e', 0xc1}, 7},
        {"trailing byte", {0x81, 0xa4, 't', 'y', 'p', 'e', 0xa1, 'x', 0x00}, 9},
        {"bad utf8 value", {0x81, 0xa4, 't', 'y', 'p', 'e', 0xa2, 0xc3, 0x28}, 9},
        {"bad utf8 key", {0x81, 0xa2, 0xc3, 0x28, 0xc0}, 5},
        {"surrogate", {0x81, 0xa4, 't', 'y', 'p', 'e', 0xa3, 0xed, 0xa0, 0x80}, 10},
        {"overlong", {0x81, 0xa4, 't', 'y', 'p', 'e', 0xa2, 0xc0, 0xaf}, 9},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        codec_status st = dec_raw(bad[k].bytes, bad[k].len, &r);
        ck_assert_msg(st == CODEC_MALFORMED, "%s: status %d (%s)", bad[k].name, st, err);
        ck_assert_int_eq(r.type, CODEC_TYPE_UNKNOWN);
        codec_request_free(&r);
    }
    /* Duplicate keys, also when the duplicate is an ignored key. */
    static const char *const dups[][3] = {{"type", "x", "x"}, {"type", "type", "y"}};
    for (size_t k = 0; k < 2; k++) {
        msgpack_sbuffer sb;
        msgpack_packer pk;
        msgpack_sbuffer_init(&sb);
        msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
        msgpack_pack_map(&pk, 3);
        for (size_t j = 0; j < 3; j++) {
            pk_str(&pk, dups[k][j]);
            pk_str(&pk, "ping");
        }
        ck_assert_int_eq(dec_mp(&sb, &r), CODEC_MALFORMED);
        ck_assert_str_eq(err, "duplicate key in message");
        codec_request_free(&r);
        msgpack_sbuffer_destroy(&sb);
    }
    /* Invalid UTF-8 deep inside a payload is malformed too (documented choice). */
    uint8_t payload[] = {0x91, 0xa1, 0xff};
    ck_assert_int_eq(dec_with_raw("operation", "payload", payload, sizeof payload, &r),
                     CODEC_MALFORMED);
    codec_request_free(&r);
}
END_TEST

/* A map with n distinct keys k0..k(n-1) plus "type": ping, and optionally a repeat of k0. */
static void mp_many_keys(msgpack_sbuffer *sb, int n, bool dup)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, (size_t)n + 1 + (dup ? 1 : 0));
    for (int k = 0; k < n; k++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", k);
        pk_str(&pk, key);
        msgpack_pack_int(&pk, k);
    }
    if (dup) {
        pk_str(&pk, "k0");
        msgpack_pack_nil(&pk);
    }
    pk_str(&pk, "type");
    pk_str(&pk, "ping");
}

START_TEST(test_duplicate_keys_large_map)
{
    codec_request r;
    msgpack_sbuffer sb;
    int sizes[] = {3, 15, 16, 17, 200};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
        mp_many_keys(&sb, sizes[k], false);
        ck_assert_int_eq(dec_mp(&sb, &r), CODEC_OK);
        ck_assert_int_eq(r.type, CODEC_PING);
        codec_request_free(&r);
        msgpack_sbuffer_destroy(&sb);
        mp_many_keys(&sb, sizes[k], true);
        ck_assert_int_eq(dec_mp(&sb, &r), CODEC_MALFORMED);
        codec_request_free(&r);
        msgpack_sbuffer_destroy(&sb);
    }
}
END_TEST

START_TEST(test_unknown_type)
{
    codec_request r;
    decode_both("{\"type\":\"fly\",\"ref\":\"r9\"}", CODEC_UNKNOWN_TYPE, CODEC_TYPE_UNKNOWN, &r);
    assert_blob_json(r.ref, "\"r9\""); /* echoed even for an unknown type */
    codec_request_free(&r);
    expect_both("{\"type\":\"\"}", CODEC_UNKNOWN_TYPE, CODEC_TYPE_UNKNOWN);
    expect_both("{\"type\":\"PING\"}", CODEC_UNKNOWN_TYPE, CODEC_TYPE_UNKNOWN);
    expect_both("{\"type\":\"ping \"}", CODEC_UNKNOWN_TYPE, CODEC_TYPE_UNKNOWN);
}
END_TEST

START_TEST(test_bad_fields)
{
    static const struct {
        const char *json;
        codec_type type;
    } bad[] = {
        {"{\"type\":\"authenticate\"}", CODEC_AUTHENTICATE},
        {"{\"type\":\"authenticate\",\"token\":5}", CODEC_AUTHENTICATE},
        {"{\"type\":\"authenticate\",\"token\":null}", CODEC_AUTHENTICATE},
        {"{\"type\":\"authenticate\",\"token\":[\"t\"]}", CODEC_AUTHENTICATE},
        {"{\"type\":\"authenticate\",\"session_id\":\"s\"}", CODEC_AUTHENTICATE},
        {"{\"type\":\"authenticate\",\"resume_token\":\"r\"}", CODEC_AUTHENTICATE},
        {"{\"type\":\"authenticate\",\"session_id\":1,\"resume_token\":\"r\"}", CODEC_AUTHENTICATE},
        {"{\"type\":\"authenticate\",\"token\":\"a\\u0000b\"}", CODEC_AUTHENTICATE},
        {"{\"type\":\"authenticate\",\"session_id\":\"s\\u0000\",\"resume_token\":\"r\"}",
         CODEC_AUTHENTICATE},
        {"{\"type\":\"authenticate\",\"token\":\"t\",\"session_id\":false}", CODEC_AUTHENTICATE},
        {"{\"type\":\"operation\"}", CODEC_OPERATION},
        {"{\"type\":\"operation\",\"ref\":1}", CODEC_OPERATION},
        {"{\"type\":\"cursor\"}", CODEC_CURSOR},
        {"{\"type\":\"sync_request\"}", CODEC_SYNC_REQUEST},
        {"{\"type\":\"sync_request\",\"since\":-1}", CODEC_SYNC_REQUEST},
        {"{\"type\":\"sync_request\",\"since\":1.5}", CODEC_SYNC_REQUEST},
        {"{\"type\":\"sync_request\",\"since\":1.0}", CODEC_SYNC_REQUEST},
        {"{\"type\":\"sync_request\",\"since\":\"3\"}", CODEC_SYNC_REQUEST},
        {"{\"type\":\"sync_request\",\"since\":null}", CODEC_SYNC_REQUEST},
        {"{\"type\":\"sync_request\",\"since\":1,\"limit\":0}", CODEC_SYNC_REQUEST},
        {"{\"type\":\"sync_request\",\"since\":1,\"limit\":-5}", CODEC_SYNC_REQUEST},
        {"{\"type\":\"sync_request\",\"since\":1,\"limit\":\"10\"}", CODEC_SYNC_REQUEST},
        {"{\"type\":\"sync_request\",\"since\":1,\"limit\":2.5}", CODEC_SYNC_REQUEST},
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        codec_request r;
        decode_both(bad[k].json, CODEC_BAD_FIELD, bad[k].type, &r);
        ck_assert_msg(err[0] != '\0', "%s: no error text", bad[k].json);
        codec_request_free(&r);
    }
    /* A token longer than max_token. */
    codec_limits lim = codec_default_limits;
    lim.max_token = 4;
    codec_request r;
    const char *t = "{\"type\":\"authenticate\",\"token\":\"12345\"}";
    ck_assert_int_eq(codec_decode_text(t, strlen(t), &lim, &r, err, sizeof err), CODEC_BAD_FIELD);
    codec_request_free(&r);
    t = "{\"type\":\"authenticate\",\"token\":\"1234\"}";
    ck_assert_int_eq(codec_decode_text(t, strlen(t), &lim, &r, err, sizeof err), CODEC_OK);
    ck_assert_str_eq(r.token, "1234");
    codec_request_free(&r);
}
END_TEST

START_TEST(test_ref_kept_on_field_error)
{
    codec_request r;
    decode_both("{\"type\":\"operation\",\"ref\":{\"id\":\"op-17\"}}", CODEC_BAD_FIELD,
                CODEC_OPERATION, &r);
    assert_blob_json(r.ref, "{\"id\":\"op-17\"}");
    json_t *e = reply_json(codec_encode_error("bad_request", err, r.ref));
    assert_str_field(e, "code", "bad_request");
    assert_json_field(e, "ref", "{\"id\":\"op-17\"}");
    json_decref(e);
    codec_request_free(&r);
    /* Even when type itself is missing. */
    decode_both("{\"ref\":3}", CODEC_MALFORMED, CODEC_TYPE_UNKNOWN, &r);
    assert_blob_json(r.ref, "3");
    codec_request_free(&r);
}
END_TEST

/* Values msgpack can carry but JSON clients cannot be shown: ext, non-string keys, NaN. */
START_TEST(test_unrepresentable_values)
{
    static const struct {
        const char *name;
        uint8_t bytes[12];
        size_t len;
    } vals[] = {
        {"fixext1", {0xd4, 0x01, 0x00}, 3},
        {"ext8", {0xc7, 0x02, 0x05, 0xaa, 0xbb}, 5},
        {"ext in array", {0x92, 0x01, 0xd5, 0x01, 0x00, 0x00}, 6},
        {"int key", {0x81, 0x01, 0xc0}, 3},
        {"nil key in nested map", {0x91, 0x81, 0xc0, 0xc0}, 4},
        {"NaN float64", {0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0}, 9},
        {"inf float32", {0xca, 0x7f, 0x80, 0x00, 0x00}, 5},
    };
    const char *fields[][2] = {{"operation", "payload"}, {"cursor", "cursor"}, {"ping", "ref"}};
    for (size_t f = 0; f < 3; f++) {
        for (size_t k = 0; k < sizeof vals / sizeof vals[0]; k++) {
            codec_request r;
            codec_status st =
                dec_with_raw(fields[f][0], fields[f][1], vals[k].bytes, vals[k].len, &r);
            ck_assert_msg(st == CODEC_BAD_FIELD, "%s in %s: status %d (%s)", vals[k].name,
                          fields[f][1], st, err);
            ck_assert_uint_eq(r.ref.len, 0); /* an unshowable ref is not echoed */
            codec_request_free(&r);
        }
    }
    /* An ext in a key the codec ignores is not its business. */
    codec_request r;
    ck_assert_int_eq(dec_with_raw("ping", "other", vals[0].bytes, vals[0].len, &r), CODEC_OK);
    codec_request_free(&r);
    /* An ext followed by a truncation is malformed, not a field error. */
    uint8_t ext_then_cut[] = {0x92, 0xd4, 0x01, 0x00, 0xa5, 'x'};
    ck_assert_int_eq(dec_with_raw("operation", "payload", ext_then_cut, sizeof ext_then_cut, &r),
                     CODEC_MALFORMED);
    codec_request_free(&r);
    /* bin is allowed, and JSON replies show it as {"$base64": ...}. */
    uint8_t bin[] = {0xc4, 0x03, 'f', 'o', 'o'};
    msgpack_sbuffer sb;
    mp_with_raw(&sb, "operation", "payload", bin, sizeof bin);
    ck_assert_int_eq(dec_mp(&sb, &r), CODEC_OK);
    ck_assert_uint_eq(r.payload.len, sizeof bin);
    codec_op op = {.seq = 1, .user_id = "u", .session_id = "s", .payload = r.payload};
    json_t *sr = reply_json(
        codec_encode_sync_response("d", "e", 0, 1, &op, 1, true, false, (codec_blob){0}));
    json_t *ops = json_object_get(sr, "operations");
    ck_assert_uint_eq(json_array_size(ops), 1);
    assert_json_field(json_array_get(ops, 0), "payload", "{\"$base64\":\"Zm9v\"}");
    json_decref(sr);
    codec_request_free(&r);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_too_large)
{
    char big[8192];
    codec_request r;
    /* cursor: a string of n bytes encodes to n + 3 (str16 header). */
    size_t n = codec_default_limits.max_cursor - 3;
    snprintf(big, sizeof big, "{\"type\":\"cursor\",\"cursor\":\"%0*d\"}", (int)n, 0);
    decode_both(big, CODEC_OK, CODEC_CURSOR, &r);
    ck_assert_uint_eq(r.cursor.len, codec_default_limits.max_cursor);
    codec_request_free(&r);
    snprintf(big, sizeof big, "{\"type\":\"cursor\",\"cursor\":\"%0*d\",\"ref\":1}", (int)n + 1, 0);
    decode_both(big, CODEC_TOO_LARGE, CODEC_CURSOR, &r);
    assert_blob_json(r.ref, "1");
    codec_request_free(&r);
    /* ref: a string of n bytes (32..255) encodes to n + 2 (str8 header). */
    n = codec_default_limits.max_ref - 2;
    snprintf(big, sizeof big, "{\"type\":\"ping\",\"ref\":\"%0*d\"}", (int)n, 0);
    decode_both(big, CODEC_OK, CODEC_PING, &r);
    codec_request_free(&r);
    snprintf(big, sizeof big, "{\"type\":\"operation\",\"payload\":1,\"ref\":\"%0*d\"}", (int)n + 1,
             0);
    decode_both(big, CODEC_TOO_LARGE, CODEC_OPERATION, &r);
    ck_assert_uint_eq(r.ref.len, 0); /* too large to echo */
    codec_request_free(&r);
    /* Caller-supplied limits. */
    codec_limits lim = codec_default_limits;
    lim.max_cursor = 4;
    const char *t = "{\"type\":\"cursor\",\"cursor\":[1,2,3,4]}";
    ck_assert_int_eq(codec_decode_text(t, strlen(t), &lim, &r, err, sizeof err), CODEC_TOO_LARGE);
    codec_request_free(&r);
    t = "{\"type\":\"cursor\",\"cursor\":[1,2,3]}";
    ck_assert_int_eq(codec_decode_text(t, strlen(t), &lim, &r, err, sizeof err), CODEC_OK);
    codec_request_free(&r);
    /* An unknown type is reported as such even with an oversized ref. */
    snprintf(big, sizeof big, "{\"type\":\"nope\",\"ref\":\"%0*d\"}", 600, 0);
    expect_both(big, CODEC_UNKNOWN_TYPE, CODEC_TYPE_UNKNOWN);
}
END_TEST

/* A JSON operation whose payload is nested `levels` arrays deep. */

static Suite *codec_suite(void)
{
    Suite *s = suite_create("codec");
    TCase *requests = tcase_create("requests");
    tcase_add_test(requests, test_authenticate);
    tcase_add_test(requests, test_fieldless_types);
    tcase_add_test(requests, test_operation);
    tcase_add_test(requests, test_cursor);
    tcase_add_test(requests, test_sync_request);
    tcase_add_test(requests, test_ref_any_value_echoed);
    suite_add_tcase(s, requests);
    TCase *statuses = tcase_create("statuses");
    tcase_add_test(statuses, test_malformed_json);
    tcase_add_test(statuses, test_malformed_msgpack);
    tcase_add_test(statuses, test_duplicate_keys_large_map);
    tcase_add_test(statuses, test_unknown_type);
    tcase_add_test(statuses, test_bad_fields);
    tcase_add_test(statuses, test_ref_kept_on_field_error);
    tcase_add_test(statuses, test_unrepresentable_values);
    tcase_add_test(statuses, test_too_large);
    suite_add_tcase(s, statuses);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(codec_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
