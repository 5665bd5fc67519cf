/*
 * check_codec_encode.c: msgpack <-> JSON conversions and every server message encoder. Each
 * encoder's output is parsed back (direct replies with jansson, broadcasts through
 * codec_msgpack_to_json) and checked field by field.
 */
#include "codec_testutil.h"

/* ---- Conversions -------------------------------------------------------------------------- */

START_TEST(test_msgpack_to_json)
{
    static const struct {
        const char *in;
        const char *b64;
    } vectors[] = {{"", ""},
                   {"f", "Zg=="},
                   {"fo", "Zm8="},
                   {"foo", "Zm9v"},
                   {"foob", "Zm9vYg=="},
                   {"fooba", "Zm9vYmE="},
                   {"foobar", "Zm9vYmFy"}};
    for (size_t k = 0; k < sizeof vectors / sizeof vectors[0]; k++) {
        uint8_t buf[16] = {0xc4, (uint8_t)strlen(vectors[k].in)};
        memcpy(buf + 2, vectors[k].in, strlen(vectors[k].in));
        json_t *v = codec_msgpack_to_json(buf, 2 + strlen(vectors[k].in), err, sizeof err);
        ck_assert_ptr_nonnull(v);
        ck_assert_uint_eq(json_object_size(v), 1);
        assert_str_field(v, "$base64", vectors[k].b64);
        json_decref(v);
    }
    /* Binary bytes (0xff 0xfe 0x00) use the standard alphabet, with '/' and '+'. */
    uint8_t bin[] = {0xc4, 0x03, 0xfb, 0xff, 0xfe};
    json_t *v = codec_msgpack_to_json(bin, sizeof bin, err, sizeof err);
    assert_str_field(v, "$base64", "+//+");
    json_decref(v);
    /* uint64 beyond INT64_MAX becomes a real; INT64_MAX stays an integer. */
    uint8_t u64[] = {0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    v = codec_msgpack_to_json(u64, sizeof u64, err, sizeof err);
    ck_assert(json_is_real(v));
    ck_assert(json_real_value(v) > 1.8e19);
    json_decref(v);
    uint8_t i64max[] = {0xcf, 0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    v = codec_msgpack_to_json(i64max, sizeof i64max, err, sizeof err);
    ck_assert(json_is_integer(v));
    ck_assert_int_eq(json_integer_value(v), INT64_MAX);
    json_decref(v);
    /* float32, negative ints of every width, nested map with bin. */
    uint8_t mixed[] = {0x95, 0xca, 0x3f, 0xc0, 0x00, 0x00,          /* 1.5f */
                       0xe0,                                        /* -32 */
                       0xd1, 0x80, 0x00,                            /* -32768 */
                       0xd3, 0x80, 0,    0,    0,    0,    0, 0, 0, /* INT64_MIN */
                       0x81, 0xa1, 'b',  0xc4, 0x01, 0x00};
    v = codec_msgpack_to_json(mixed, sizeof mixed, err, sizeof err);
    ck_assert_ptr_nonnull(v);
    json_t *want = json_pack("[f, i, i, I, {s:{s:s}}]", 1.5, -32, -32768, (json_int_t)INT64_MIN,
                             "b", "$base64", "AA==");
    ck_assert(json_equal(v, want));
    json_decref(v);
    json_decref(want);
    /* Refusals. */
    static const struct {
        uint8_t bytes[8];
        size_t len;
    } bad[] = {
        {{0xd4, 0x01, 0x00}, 3},    /* ext */
        {{0x81, 0x01, 0x02}, 3},    /* int key */
        {{0x92, 0x01}, 2},          /* truncated */
        {{0x01, 0x02}, 2},          /* trailing bytes */
        {{0xc1}, 1},                /* reserved */
        {{0xa2, 0xff, 0xfe}, 3},    /* invalid UTF-8 */
        {{0xcb, 0x7f, 0xf0, 0}, 4}, /* truncated float */
    };
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        err[0] = '\0';
        ck_assert_ptr_null(codec_msgpack_to_json(bad[k].bytes, bad[k].len, err, sizeof err));
        ck_assert_msg(err[0] != '\0', "refusal %zu has no message", k);
    }
}
END_TEST

START_TEST(test_json_to_msgpack)
{
    const char *text = "{\"s\":\"h\\u00e9llo\",\"i\":-5,\"u\":300,\"big\":9223372036854775807,"
                       "\"r\":0.25,\"t\":true,\"f\":false,\"n\":null,\"a\":[[],{}],"
                       "\"nul\":\"a\\u0000b\"}";
    json_t *v = json_loads(text, JSON_ALLOW_NUL, NULL);
    ck_assert_ptr_nonnull(v);
    msgbuf *mb = msgbuf_new(MSGBUF_BINARY, 0);
    ck_assert_ptr_nonnull(mb);
    ck_assert_int_eq(codec_json_to_msgpack(v, &mb), 0);
    /* Byte-identical to msgpack-c's packer choosing the smallest int encodings. */
    msgpack_sbuffer sb;
    mp_from_json(text, &sb);
    ck_assert_uint_eq(mb->len, sb.size);
    ck_assert_mem_eq(msgbuf_data(mb), sb.data, sb.size);
    json_t *back = codec_msgpack_to_json(msgbuf_data(mb), mb->len, err, sizeof err);
    ck_assert(json_equal(v, back));
    /* Appends: a second value follows the first. */
    size_t first = mb->len;
    json_t *two = json_integer(2);
    ck_assert_int_eq(codec_json_to_msgpack(two, &mb), 0);
    ck_assert_uint_eq(mb->len, first + 1);
    ck_assert_uint_eq(msgbuf_data(mb)[first], 0x02);
    json_decref(two);
    json_decref(back);
    json_decref(v);
    msgbuf_unref(mb);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

START_TEST(test_document_id_and_type_names)
{
    ck_assert(codec_document_id_valid("doc-1", 5));
    ck_assert(codec_document_id_valid("A.b_c:d-9", 9));
    ck_assert(codec_document_id_valid("doc-1/extra", 5)); /* only len bytes are looked at */
    char id[130];
    memset(id, 'x', sizeof id);
    ck_assert(codec_document_id_valid(id, 128));
    ck_assert(!codec_document_id_valid(id, 129));
    ck_assert(!codec_document_id_valid("", 0));
    ck_assert(!codec_document_id_valid(NULL, 3));
    static const struct {
        const char *s;
        size_t len;
    } bad[] = {{"a/b", 3}, {"a b", 3}, {"a%2Fb", 5},        {"caf\xc3\xa9", 5}, {"a\0b", 3},
               {"a?b", 3}, {"a#", 2},  {"doc-1/extra", 11}, {"a+b", 3},         {"\xff\xfe", 2}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++)
        ck_assert_msg(!codec_document_id_valid(bad[k].s, bad[k].len), "%s accepted", bad[k].s);
    ck_assert_str_eq(codec_type_name(CODEC_AUTHENTICATE), "authenticate");
    ck_assert_str_eq(codec_type_name(CODEC_JOIN_DOCUMENT), "join_document");
    ck_assert_str_eq(codec_type_name(CODEC_LEAVE_DOCUMENT), "leave_document");
    ck_assert_str_eq(codec_type_name(CODEC_OPERATION), "operation");
    ck_assert_str_eq(codec_type_name(CODEC_CURSOR), "cursor");
    ck_assert_str_eq(codec_type_name(CODEC_SYNC_REQUEST), "sync_request");
    ck_assert_str_eq(codec_type_name(CODEC_PING), "ping");
    ck_assert_str_eq(codec_type_name(CODEC_TYPE_UNKNOWN), "unknown");
    ck_assert_str_eq(codec_type_name((codec_type)99), "unknown");
    ck_assert_uint_eq(codec_default_limits.max_depth, 32);
    ck_assert_uint_eq(codec_default_limits.max_cursor, 4096);
    ck_assert_uint_eq(codec_default_limits.max_ref, 256);
    ck_assert_uint_eq(codec_default_limits.max_token, 8192);
}
END_TEST

/* ---- Encoders: direct replies ------------------------------------------------------------- */

START_TEST(test_encode_auth)
{
    codec_user u = {
        .session_id = "s-1", .user_id = "u-1", .user_name = "Ann \"A\" Lee", .color = "#ff8800"};
    json_t *o = reply_json(codec_encode_auth_ok(&u, "resume-xyz"));
    ck_assert_uint_eq(json_object_size(o), 7);
    assert_str_field(o, "type", "auth_result");
    ck_assert(json_is_true(json_object_get(o, "success")));
    assert_str_field(o, "user_id", "u-1");
    assert_str_field(o, "user_name", "Ann \"A\" Lee");
    assert_str_field(o, "session_id", "s-1");
    assert_str_field(o, "color", "#ff8800");
    assert_str_field(o, "resume_token", "resume-xyz");
    json_decref(o);
    o = reply_json(codec_encode_auth_ok(&u, NULL));
    ck_assert_uint_eq(json_object_size(o), 6);
    ck_assert_ptr_null(json_object_get(o, "resume_token"));
    json_decref(o);
    o = reply_json(codec_encode_auth_fail("token expired"));
    ck_assert_uint_eq(json_object_size(o), 3);
    assert_str_field(o, "type", "auth_result");
    ck_assert(json_is_false(json_object_get(o, "success")));
    assert_str_field(o, "error", "token expired");
    json_decref(o);
}
END_TEST

START_TEST(test_encode_joined_left)
{
    msgpack_sbuffer sb;
    codec_user users[2] = {
        {.session_id = "s-1",
         .user_id = "u-1",
         .user_name = "Ann",
         .color = "#111111",
         .cursor = blob_from_json("{\"line\":4}", &sb)},
        {.session_id = "s-2", .user_id = "u-2", .user_name = "Bob", .color = "#222222"},
    };
    json_t *o = reply_json(codec_encode_joined("doc-1", "ep-7", 0, users, 2));
    ck_assert_uint_eq(json_object_size(o), 5);
    assert_str_field(o, "type", "joined_document");
    assert_str_field(o, "document_id", "doc-1");
    assert_str_field(o, "epoch", "ep-7");
    assert_int_field(o, "seq", 0);
    json_t *arr = json_object_get(o, "users");
    ck_assert_uint_eq(json_array_size(arr), 2);
    for (size_t k = 0; k < 2; k++) {
        json_t *e = json_array_get(arr, k);
        ck_assert_uint_eq(json_object_size(e), 5);
        assert_str_field(e, "session_id", users[k].session_id);
        assert_str_field(e, "user_id", users[k].user_id);
        assert_str_field(e, "user_name", users[k].user_name);
        assert_str_field(e, "color", users[k].color);
    }
    assert_json_field(json_array_get(arr, 0), "cursor", "{\"line\":4}");
    assert_json_field(json_array_get(arr, 1), "cursor", "null");
    json_decref(o);
    o = reply_json(codec_encode_joined("doc-2", "ep", 42, NULL, 0));
    assert_int_field(o, "seq", 42);
    ck_assert_uint_eq(json_array_size(json_object_get(o, "users")), 0);
    json_decref(o);
    msgpack_sbuffer_destroy(&sb);

    o = reply_json(codec_encode_left("doc-1"));
    ck_assert_uint_eq(json_object_size(o), 2);
    assert_str_field(o, "type", "left_document");
    assert_str_field(o, "document_id", "doc-1");
    json_decref(o);
}
END_TEST

START_TEST(test_encode_ack_error_pong)
{
    json_t *o = reply_json(codec_encode_ack((codec_blob){0}, 17));
    ck_assert_uint_eq(json_object_size(o), 3);
    assert_str_field(o, "type", "ack");
    ck_assert(json_is_null(json_object_get(o, "ref"))); /* absent ref: present as null */
    assert_int_field(o, "seq", 17);
    json_decref(o);
    o = reply_json(codec_encode_ack((codec_blob){0}, (uint64_t)INT64_MAX));
    assert_int_field(o, "seq", INT64_MAX);
    json_decref(o);

    o = reply_json(codec_encode_error("not_joined", "join a document first", (codec_blob){0}));
    ck_assert_uint_eq(json_object_size(o), 3);
    assert_str_field(o, "type", "error");
    assert_str_field(o, "code", "not_joined");
    assert_str_field(o, "message", "join a document first");
    ck_assert_ptr_null(json_object_get(o, "ref")); /* absent ref: omitted */
    json_decref(o);

    o = reply_json(codec_encode_pong((codec_blob){0}));
    ck_assert_uint_eq(json_object_size(o), 1);
    assert_str_field(o, "type", "pong");
    json_decref(o);
}
END_TEST

START_TEST(test_encode_sync_response)
{
    msgpack_sbuffer p1, p2, ref;
    codec_op ops[2] = {
        {.seq = 4,
         .user_id = "u-1",
         .session_id = "s-1",
         .payload = blob_from_json("{\"insert\":\"x\",\"at\":[0,1]}", &p1)},
        {.seq = 5, .user_id = "u-2", .session_id = "s-2", .payload = blob_from_json("null", &p2)},
    };
    json_t *o = reply_json(codec_encode_sync_response("doc-1", "ep-1", 3, 5, ops, 2, true, false,
                                                      blob_from_json("\"sync-1\"", &ref)));
    ck_assert_uint_eq(json_object_size(o), 9);
    assert_str_field(o, "type", "sync_response");
    assert_str_field(o, "document_id", "doc-1");
    assert_str_field(o, "epoch", "ep-1");
    assert_int_field(o, "since", 3);
    assert_int_field(o, "seq", 5);
    ck_assert(json_is_true(json_object_get(o, "complete")));
    ck_assert(json_is_false(json_object_get(o, "has_more")));
    assert_str_field(o, "ref", "sync-1");
    json_t *arr = json_object_get(o, "operations");
    ck_assert_uint_eq(json_array_size(arr), 2);
    for (size_t k = 0; k < 2; k++) {
        json_t *e = json_array_get(arr, k);
        ck_assert_uint_eq(json_object_size(e), 4);
        assert_int_field(e, "seq", (json_int_t)ops[k].seq);
        assert_str_field(e, "user_id", ops[k].user_id);
        assert_str_field(e, "session_id", ops[k].session_id);
    }
    assert_json_field(json_array_get(arr, 0), "payload", "{\"insert\":\"x\",\"at\":[0,1]}");
    assert_json_field(json_array_get(arr, 1), "payload", "null");
    json_decref(o);
    /* Empty, incomplete, more to come, no ref. */
    o = reply_json(codec_encode_sync_response("doc-1", "ep-1", 0, 9000, NULL, 0, false, true,
                                              (codec_blob){0}));
    ck_assert_uint_eq(json_object_size(o), 8);
    ck_assert_uint_eq(json_array_size(json_object_get(o, "operations")), 0);
    ck_assert(json_is_false(json_object_get(o, "complete")));
    ck_assert(json_is_true(json_object_get(o, "has_more")));
    ck_assert_ptr_null(json_object_get(o, "ref"));
    json_decref(o);
    msgpack_sbuffer_destroy(&p1);
    msgpack_sbuffer_destroy(&p2);
    msgpack_sbuffer_destroy(&ref);
}
END_TEST

START_TEST(test_encode_lagged_reset)
{
    json_t *o = reply_json(codec_encode_lagged("presence", 12));
    ck_assert_uint_eq(json_object_size(o), 3);
    assert_str_field(o, "type", "lagged");
    assert_str_field(o, "channel", "presence");
    assert_int_field(o, "missed", 12);
    json_decref(o);
    o = reply_json(codec_encode_reset("doc-1", "ep-2", 0));
    ck_assert_uint_eq(json_object_size(o), 4);
    assert_str_field(o, "type", "reset");
    assert_str_field(o, "document_id", "doc-1");
    assert_str_field(o, "epoch", "ep-2");
    assert_int_field(o, "seq", 0);
    json_decref(o);
}
END_TEST

/* ---- Encoders: broadcasts ----------------------------------------------------------------- */

START_TEST(test_encode_bc_operation)
{
    /* A payload with bin in it: spliced raw, shown as $base64 when converted. */
    uint8_t payload[] = {0x82, 0xa1, 'k', 0x93, 0x01, 0xa1, 'x',
                         0xc3, 0xa1, 'b', 0xc4, 0x02, 0x00, 0xff};
    codec_op op = {.seq = 1234567,
                   .user_id = "u-1",
                   .session_id = "s-1",
                   .payload = {payload, sizeof payload}};
    msgbuf *mb = codec_encode_bc_operation("doc-1", &op);
    ck_assert_ptr_nonnull(mb);
    ck_assert(mem_contains(msgbuf_data(mb), mb->len, payload, sizeof payload));
    json_t *o = bc_json(mb);
    ck_assert_uint_eq(json_object_size(o), 6);
    assert_str_field(o, "type", "operation");
    assert_str_field(o, "document_id", "doc-1");
    assert_int_field(o, "seq", 1234567);
    assert_str_field(o, "user_id", "u-1");
    assert_str_field(o, "session_id", "s-1");
    assert_json_field(o, "payload", "{\"k\":[1,\"x\",true],\"b\":{\"$base64\":\"AP8=\"}}");
    json_decref(o);
    /* The first key is "type", so a client can dispatch on the first pair. */
    mb = codec_encode_bc_operation("doc-1", &op);
    ck_assert_uint_eq(msgbuf_data(mb)[0], 0x86);
    ck_assert_mem_eq(msgbuf_data(mb) + 1, "\xa4type\xa9operation", 15);
    msgbuf_unref(mb);
    /* Absent payload: nil. */
    op.payload = (codec_blob){0};
    o = bc_json(codec_encode_bc_operation("doc-1", &op));
    assert_json_field(o, "payload", "null");
    json_decref(o);
}
END_TEST

START_TEST(test_encode_bc_cursor_user)
{
    msgpack_sbuffer sb;
    codec_blob cur = blob_from_json("{\"line\":2,\"ch\":7}", &sb);
    msgbuf *mb = codec_encode_bc_cursor("doc-1", "s-1", "u-1", cur);
    ck_assert_ptr_nonnull(mb);
    ck_assert(mem_contains(msgbuf_data(mb), mb->len, cur.data, cur.len));
    json_t *o = bc_json(mb);
    ck_assert_uint_eq(json_object_size(o), 5);
    assert_str_field(o, "type", "cursor");
    assert_str_field(o, "document_id", "doc-1");
    assert_str_field(o, "session_id", "s-1");
    assert_str_field(o, "user_id", "u-1");
    assert_json_field(o, "cursor", "{\"line\":2,\"ch\":7}");
    json_decref(o);
    o = bc_json(codec_encode_bc_cursor("doc-1", "s-1", "u-1", (codec_blob){0}));
    assert_json_field(o, "cursor", "null");
    json_decref(o);
    msgpack_sbuffer_destroy(&sb);

    codec_user u = {.session_id = "s-9",
                    .user_id = "u-9",
                    .user_name = "Zoë",
                    .color = "#abcdef",
                    .cursor = cur};
    const char *types[] = {"user_joined", "user_left"};
    for (size_t k = 0; k < 2; k++) {
        o = bc_json(codec_encode_bc_user(types[k], "doc-3", &u));
        ck_assert_uint_eq(json_object_size(o), 6);
        assert_str_field(o, "type", types[k]);
        assert_str_field(o, "document_id", "doc-3");
        assert_str_field(o, "session_id", "s-9");
        assert_str_field(o, "user_id", "u-9");
        assert_str_field(o, "user_name", "Zoë");
        assert_str_field(o, "color", "#abcdef");
        json_decref(o);
    }
}
END_TEST

START_TEST(test_broadcast_roundtrip_through_decoder_shapes)
{
    /* A JSON client's payload and a msgpack client's payload with the same content produce the
     * same broadcast bytes. */
    const char *payload = "{\"ops\":[{\"retain\":5},{\"insert\":\"hé\"}],\"v\":-3.5}";
    char text[256];
    snprintf(text, sizeof text, "{\"type\":\"operation\",\"payload\":%s}", payload);
    codec_request rj, rm;
    msgpack_sbuffer sb;
    mp_from_json(text, &sb);
    ck_assert_int_eq(dec_json(text, &rj), CODEC_OK);
    ck_assert_int_eq(dec_mp(&sb, &rm), CODEC_OK);
    codec_op oj = {.seq = 1, .user_id = "u", .session_id = "s", .payload = rj.payload};
    codec_op om = oj;
    om.payload = rm.payload;
    msgbuf *a = codec_encode_bc_operation("d", &oj);
    msgbuf *b = codec_encode_bc_operation("d", &om);
    ck_assert_uint_eq(a->len, b->len);
    ck_assert_mem_eq(msgbuf_data(a), msgbuf_data(b), a->len);
    msgbuf_unref(a);
    msgbuf_unref(b);
    codec_request_free(&rj);
    codec_request_free(&rm);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

static Suite *codec_encode_suite(void)
{
    Suite *s = suite_create("codec-encode");
    TCase *conversions = tcase_create("conversions");
    tcase_add_test(conversions, test_msgpack_to_json);
    tcase_add_test(conversions, test_json_to_msgpack);
    tcase_add_test(conversions, test_document_id_and_type_names);
    suite_add_tcase(s, conversions);
    TCase *encoders = tcase_create("encoders");
    tcase_add_test(encoders, test_encode_auth);
    tcase_add_test(encoders, test_encode_joined_left);
    tcase_add_test(encoders, test_encode_ack_error_pong);
    tcase_add_test(encoders, test_encode_sync_response);
    tcase_add_test(encoders, test_encode_lagged_reset);
    tcase_add_test(encoders, test_encode_bc_operation);
    tcase_add_test(encoders, test_encode_bc_cursor_user);
    tcase_add_test(encoders, test_broadcast_roundtrip_through_decoder_shapes);
    suite_add_tcase(s, encoders);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(codec_encode_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
