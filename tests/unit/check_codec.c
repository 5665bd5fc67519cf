/*
 * check_codec.c: the wire protocol v1 codec (relay/codec.h). Every request type is decoded from
 * JSON text and from msgpack built with msgpack-c's own packer, every status is provoked, hostile
 * msgpack headers are refused without allocating, and every encoder's output is parsed back
 * (JSON with jansson, msgpack through codec_msgpack_to_json) and checked field by field.
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay/codec.h"

/* ---- Allocation counting -------------------------------------------------------------------
 * "Refused without allocating" is asserted literally: outside sanitizer builds (ASan brings its
 * own allocator) this test program interposes malloc/calloc/realloc and counts the calls made
 * while counting is switched on. */
#if defined(__SANITIZE_ADDRESS__)
#define COUNT_ALLOCS 0
#else
#define COUNT_ALLOCS 1
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t n, size_t size);
extern void *__libc_realloc(void *p, size_t n);

static atomic_bool alloc_counting;
static atomic_size_t alloc_calls;

void *malloc(size_t n)
{
    if (atomic_load_explicit(&alloc_counting, memory_order_relaxed))
        atomic_fetch_add(&alloc_calls, 1);
    return __libc_malloc(n);
}

void *calloc(size_t n, size_t size)
{
    if (atomic_load_explicit(&alloc_counting, memory_order_relaxed))
        atomic_fetch_add(&alloc_calls, 1);
    return __libc_calloc(n, size);
}

void *realloc(void *p, size_t n)
{
    if (atomic_load_explicit(&alloc_counting, memory_order_relaxed))
        atomic_fetch_add(&alloc_calls, 1);
    return __libc_realloc(p, n);
}
#endif

static char err[256];

/* ---- Helpers ------------------------------------------------------------------------------ */

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Packs a jansson value with msgpack-c's packer (the test's own converter, independent of
 * codec_json_to_msgpack), keeping key order. */
static void pk_json(msgpack_packer *pk, const json_t *v)
{
    const char *key;
    json_t *item;
    size_t idx;
    switch (json_typeof(v)) {
    case JSON_OBJECT:
        msgpack_pack_map(pk, json_object_size(v));
        json_object_foreach((json_t *)v, key, item)
        {
            pk_str(pk, key);
            pk_json(pk, item);
        }
        break;
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(v));
        json_array_foreach(v, idx, item) pk_json(pk, item);
        break;
    case JSON_STRING:
        msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v));
        break;
    case JSON_INTEGER:
        msgpack_pack_int64(pk, json_integer_value(v));
        break;
    case JSON_REAL:
        msgpack_pack_double(pk, json_real_value(v));
        break;
    case JSON_TRUE:
        msgpack_pack_true(pk);
        break;
    case JSON_FALSE:
        msgpack_pack_false(pk);
        break;
    case JSON_NULL:
        msgpack_pack_nil(pk);
        break;
    }
}

/* msgpack bytes of a JSON text, in sb (caller destroys). */
static void mp_from_json(const char *text, msgpack_sbuffer *sb)
{
    json_error_t jerr;
    json_t *v = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
    ck_assert_msg(v != NULL, "test JSON does not parse: %s: %s", text, jerr.text);
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    pk_json(&pk, v);
    json_decref(v);
}

static codec_status dec_json(const char *text, codec_request *r)
{
    return codec_decode_text(text, strlen(text), &codec_default_limits, r, err, sizeof err);
}

static codec_status dec_mp(const msgpack_sbuffer *sb, codec_request *r)
{
    return codec_decode_binary((const uint8_t *)sb->data, sb->size, &codec_default_limits, r, err,
                               sizeof err);
}

static codec_status dec_raw(const void *data, size_t len, codec_request *r)
{
    return codec_decode_binary(data, len, &codec_default_limits, r, err, sizeof err);
}

/* A blob as JSON (asserts it converts). */
static json_t *blob_to_json(codec_blob b)
{
    ck_assert_uint_gt(b.len, 0);
    json_t *v = codec_msgpack_to_json(b.data, b.len, err, sizeof err);
    ck_assert_msg(v != NULL, "blob does not convert: %s", err);
    return v;
}

/* Asserts that blob b holds the JSON value written as text. */
static void assert_blob_json(codec_blob b, const char *text)
{
    json_t *want = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, NULL);
    ck_assert_ptr_nonnull(want);
    json_t *got = blob_to_json(b);
    char *dump = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
    ck_assert_msg(json_equal(want, got), "blob is %s, want %s", dump, text);
    free(dump);
    json_decref(want);
    json_decref(got);
}

/* Decodes text as JSON and as msgpack; both must give status st and type t, and any blob the
 * two produce must be byte-identical (both encodings mean the same thing). The JSON request is
 * left in *rj for further checks (caller frees). */
static void decode_both(const char *text, codec_status st, codec_type t, codec_request *rj)
{
    msgpack_sbuffer sb;
    codec_request rm;
    mp_from_json(text, &sb);
    codec_status sj = dec_json(text, rj);
    ck_assert_msg(sj == st, "JSON %s: status %d want %d (%s)", text, sj, st, err);
    codec_status sm = dec_mp(&sb, &rm);
    ck_assert_msg(sm == st, "msgpack %s: status %d want %d (%s)", text, sm, st, err);
    ck_assert_int_eq(rj->type, t);
    ck_assert_int_eq(rm.type, t);
    const codec_blob *bj[] = {&rj->ref, &rj->payload, &rj->cursor};
    const codec_blob *bm[] = {&rm.ref, &rm.payload, &rm.cursor};
    for (int k = 0; k < 3; k++) {
        ck_assert_uint_eq(bj[k]->len, bm[k]->len);
        if (bj[k]->len)
            ck_assert_mem_eq(bj[k]->data, bm[k]->data, bj[k]->len);
        /* Binary blobs are spans of the input, never copies. */
        if (bm[k]->len)
            ck_assert(bm[k]->data >= (const uint8_t *)sb.data &&
                      bm[k]->data + bm[k]->len <= (const uint8_t *)sb.data + sb.size);
    }
    ck_assert_uint_eq(rj->since, rm.since);
    ck_assert_uint_eq(rj->limit, rm.limit);
    const char *sj_s[] = {rj->token, rj->session_id, rj->resume_token};
    const char *sm_s[] = {rm.token, rm.session_id, rm.resume_token};
    for (int k = 0; k < 3; k++) {
        ck_assert_int_eq(sj_s[k] == NULL, sm_s[k] == NULL);
        if (sj_s[k])
            ck_assert_str_eq(sj_s[k], sm_s[k]);
    }
    codec_request_free(&rm);
    msgpack_sbuffer_destroy(&sb);
}

static void expect_both(const char *text, codec_status st, codec_type t)
{
    codec_request r;
    decode_both(text, st, t, &r);
    codec_request_free(&r);
}

/* Builds msgpack with msgpack-c: a map {"type": type, key: <raw value bytes>} in sb. */
static void mp_with_raw(msgpack_sbuffer *sb, const char *type, const char *key, const void *raw,
                        size_t raw_len)
{
    msgpack_packer pk;
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, key ? 2 : 1);
    pk_str(&pk, "type");
    pk_str(&pk, type);
    if (key) {
        pk_str(&pk, key);
        msgpack_sbuffer_write(sb, raw, raw_len);
    }
}

static codec_status dec_with_raw(const char *type, const char *key, const void *raw, size_t raw_len,
                                 codec_request *r)
{
    msgpack_sbuffer sb;
    mp_with_raw(&sb, type, key, raw, raw_len);
    codec_status st = dec_mp(&sb, r);
    msgpack_sbuffer_destroy(&sb);
    return st;
}

/* Parses a Text reply, asserting its kind. */
static json_t *reply_json(msgbuf *mb)
{
    ck_assert_ptr_nonnull(mb);
    ck_assert_int_eq(mb->kind, MSGBUF_TEXT);
    json_error_t jerr;
    json_t *v = json_loadb((const char *)msgbuf_data(mb), mb->len, JSON_REJECT_DUPLICATES, &jerr);
    ck_assert_msg(v != NULL, "reply is not JSON: %s", jerr.text);
    ck_assert(json_is_object(v));
    /* Compact: no whitespace outside strings in these replies. */
    ck_assert_ptr_null(memchr(msgbuf_data(mb), '\n', mb->len));
    msgbuf_unref(mb);
    return v;
}

/* Parses a Binary broadcast back through codec_msgpack_to_json. */
static json_t *bc_json(msgbuf *mb)
{
    ck_assert_ptr_nonnull(mb);
    ck_assert_int_eq(mb->kind, MSGBUF_BINARY);
    json_t *v = codec_msgpack_to_json(msgbuf_data(mb), mb->len, err, sizeof err);
    ck_assert_msg(v != NULL, "broadcast is not msgpack JSON can show: %s", err);
    ck_assert(json_is_object(v));
    msgbuf_unref(mb);
    return v;
}

static void assert_str_field(const json_t *o, const char *key, const char *want)
{
    const json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_string(v), "field %s missing or not a string", key);
    ck_assert_str_eq(json_string_value(v), want);
}

static void assert_int_field(const json_t *o, const char *key, json_int_t want)
{
    const json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "field %s missing or not an integer", key);
    ck_assert_int_eq(json_integer_value(v), want);
}

static void assert_json_field(const json_t *o, const char *key, const char *want_text)
{
    json_t *want = json_loads(want_text, JSON_DECODE_ANY, NULL);
    ck_assert_ptr_nonnull(want);
    ck_assert_msg(json_equal(json_object_get(o, key), want), "field %s differs from %s", key,
                  want_text);
    json_decref(want);
}

/* True if needle occurs in hay (memmem is a GNU extension this tree does not enable). */
static bool mem_contains(const uint8_t *hay, size_t hay_len, const uint8_t *needle, size_t n)
{
    for (size_t k = 0; n <= hay_len && k <= hay_len - n; k++) {
        if (memcmp(hay + k, needle, n) == 0)
            return true;
    }
    return false;
}

/* The msgpack encoding of a JSON text as a blob backed by sb (caller destroys sb). */
static codec_blob blob_from_json(const char *text, msgpack_sbuffer *sb)
{
    mp_from_json(text, sb);
    return (codec_blob){(const uint8_t *)sb->data, sb->size};
}

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
static char *nested_payload(int levels)
{
    size_t cap = (size_t)levels * 2 + 64;
    char *s = malloc(cap);
    ck_assert_ptr_nonnull(s);
    int o = snprintf(s, cap, "{\"type\":\"operation\",\"payload\":");
    for (int k = 0; k < levels; k++)
        s[o++] = '[';
    for (int k = 0; k < levels; k++)
        s[o++] = ']';
    snprintf(s + o, cap - (size_t)o, "}");
    return s;
}

START_TEST(test_depth_limit)
{
    /* Top level is depth 1, so max_depth 32 allows 31 nested arrays in the payload. */
    char *ok = nested_payload(31);
    char *deep = nested_payload(32);
    expect_both(ok, CODEC_OK, CODEC_OPERATION);
    expect_both(deep, CODEC_MALFORMED, CODEC_TYPE_UNKNOWN);
    free(ok);
    free(deep);
    /* Depth counts in ignored keys too, and with the caller's limit. */
    codec_limits lim = codec_default_limits;
    lim.max_depth = 2;
    codec_request r;
    const char *t = "{\"type\":\"ping\",\"x\":[1]}";
    ck_assert_int_eq(codec_decode_text(t, strlen(t), &lim, &r, err, sizeof err), CODEC_OK);
    codec_request_free(&r);
    t = "{\"type\":\"ping\",\"x\":[{}]}";
    ck_assert_int_eq(codec_decode_text(t, strlen(t), &lim, &r, err, sizeof err), CODEC_MALFORMED);
    codec_request_free(&r);
    msgpack_sbuffer sb;
    mp_from_json(t, &sb);
    ck_assert_int_eq(
        codec_decode_binary((const uint8_t *)sb.data, sb.size, &lim, &r, err, sizeof err),
        CODEC_MALFORMED);
    codec_request_free(&r);
    msgpack_sbuffer_destroy(&sb);
    /* Far deeper than jansson or the walker would ever recurse: refused, no crash. */
    int levels = 100000;
    char *huge = nested_payload(levels);
    ck_assert_int_eq(dec_json(huge, &r), CODEC_MALFORMED);
    codec_request_free(&r);
    free(huge);
    uint8_t *arrays = malloc((size_t)levels);
    ck_assert_ptr_nonnull(arrays);
    memset(arrays, 0x91, (size_t)levels - 1);
    arrays[levels - 1] = 0x90;
    ck_assert_int_eq(dec_with_raw("operation", "payload", arrays, (size_t)levels, &r),
                     CODEC_MALFORMED);
    codec_request_free(&r);
    free(arrays);
}
END_TEST

/* ---- Hostile msgpack headers -------------------------------------------------------------- */

START_TEST(test_hostile_headers)
{
    static const struct {
        const char *name;
        uint8_t bytes[8];
        size_t len;
    } hostile[] = {
        {"array32 2^32-1", {0xdd, 0xff, 0xff, 0xff, 0xff}, 5},
        {"map32 2^32-1", {0xdf, 0xff, 0xff, 0xff, 0xff}, 5},
        {"str32 2^32-1", {0xdb, 0xff, 0xff, 0xff, 0xff}, 5},
        {"bin32 2^32-1", {0xc6, 0xff, 0xff, 0xff, 0xff}, 5},
        {"ext32 2^32-1", {0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}, 6},
        {"array16 65535", {0xdc, 0xff, 0xff}, 3},
        {"map16 65535", {0xde, 0xff, 0xff, 0xa0, 0xc0}, 5},
        {"fixarray 15 short", {0x9f, 0x01, 0x02}, 3},
    };
    msgpack_sbuffer sbs[2 * sizeof hostile / sizeof hostile[0]];
    size_t n = sizeof hostile / sizeof hostile[0];
    /* Each header alone, and as the payload of an otherwise valid operation. */
    for (size_t k = 0; k < n; k++) {
        msgpack_sbuffer_init(&sbs[2 * k]);
        msgpack_sbuffer_write(&sbs[2 * k], (const char *)hostile[k].bytes, hostile[k].len);
        mp_with_raw(&sbs[2 * k + 1], "operation", "payload", hostile[k].bytes, hostile[k].len);
    }
    codec_request r[2 * sizeof hostile / sizeof hostile[0]];
    codec_status st[2 * sizeof hostile / sizeof hostile[0]];
    json_t *conv[sizeof hostile / sizeof hostile[0]];
    double t0 = now_s();
#if COUNT_ALLOCS
    atomic_store(&alloc_calls, 0);
    atomic_store(&alloc_counting, true);
#endif
    for (size_t k = 0; k < 2 * n; k++)
        st[k] = codec_decode_binary((const uint8_t *)sbs[k].data, sbs[k].size,
                                    &codec_default_limits, &r[k], err, sizeof err);
    for (size_t k = 0; k < n; k++)
        conv[k] = codec_msgpack_to_json(hostile[k].bytes, hostile[k].len, err, sizeof err);
#if COUNT_ALLOCS
    atomic_store(&alloc_counting, false);
    ck_assert_uint_eq(atomic_load(&alloc_calls), 0);
#endif
    double elapsed = now_s() - t0;
    ck_assert_msg(elapsed < 0.5, "hostile headers took %.3f s", elapsed);
    for (size_t k = 0; k < 2 * n; k++) {
        ck_assert_msg(st[k] == CODEC_MALFORMED, "%s (%s): status %d", hostile[k / 2].name,
                      k % 2 ? "as payload" : "alone", st[k]);
        codec_request_free(&r[k]);
        msgpack_sbuffer_destroy(&sbs[k]);
    }
    for (size_t k = 0; k < n; k++)
        ck_assert_ptr_null(conv[k]);
}
END_TEST

START_TEST(test_binary_operation_no_allocation)
{
    /* The hot path: a well-formed binary operation decodes without touching the heap. */
    msgpack_sbuffer sb;
    mp_from_json("{\"type\":\"operation\",\"ref\":12,\"payload\":{\"ops\":[1,2,\"ins\"]}}", &sb);
    codec_request r;
#if COUNT_ALLOCS
    atomic_store(&alloc_calls, 0);
    atomic_store(&alloc_counting, true);
#endif
    codec_status st = dec_mp(&sb, &r);
    codec_request_free(&r);
#if COUNT_ALLOCS
    atomic_store(&alloc_counting, false);
    ck_assert_uint_eq(atomic_load(&alloc_calls), 0);
#endif
    ck_assert_int_eq(st, CODEC_OK);
    msgpack_sbuffer_destroy(&sb);
#if COUNT_ALLOCS
    /* The instrument works: the JSON decoder, which does allocate, is seen doing so. */
    atomic_store(&alloc_calls, 0);
    atomic_store(&alloc_counting, true);
    st = dec_json("{\"type\":\"operation\",\"payload\":[1]}", &r);
    codec_request_free(&r);
    atomic_store(&alloc_counting, false);
    ck_assert_int_eq(st, CODEC_OK);
    ck_assert_uint_gt(atomic_load(&alloc_calls), 0);
#endif
}
END_TEST

START_TEST(test_large_valid_array_is_linear)
{
    /* One million nils in an array32: walked, not reserved, and quickly. */
    size_t count = 1000000;
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pk_str(&pk, "type");
    pk_str(&pk, "operation");
    pk_str(&pk, "payload");
    msgpack_pack_array(&pk, count);
    for (size_t k = 0; k < count; k++)
        msgpack_pack_nil(&pk);
    codec_request r;
    double t0 = now_s();
    ck_assert_int_eq(dec_mp(&sb, &r), CODEC_OK);
    ck_assert_msg(now_s() - t0 < 2.0, "walking 1M elements took too long");
    ck_assert_uint_eq(r.payload.len, count + 5);
    codec_request_free(&r);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

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

static Suite *codec_suite(void)
{
    Suite *s = suite_create("codec");
    TCase *req = tcase_create("requests");
    tcase_add_test(req, test_authenticate);
    tcase_add_test(req, test_fieldless_types);
    tcase_add_test(req, test_operation);
    tcase_add_test(req, test_cursor);
    tcase_add_test(req, test_sync_request);
    tcase_add_test(req, test_ref_any_value_echoed);
    suite_add_tcase(s, req);

    TCase *st = tcase_create("statuses");
    tcase_add_test(st, test_malformed_json);
    tcase_add_test(st, test_malformed_msgpack);
    tcase_add_test(st, test_duplicate_keys_large_map);
    tcase_add_test(st, test_unknown_type);
    tcase_add_test(st, test_bad_fields);
    tcase_add_test(st, test_ref_kept_on_field_error);
    tcase_add_test(st, test_unrepresentable_values);
    tcase_add_test(st, test_too_large);
    tcase_add_test(st, test_depth_limit);
    suite_add_tcase(s, st);

    TCase *hostile = tcase_create("hostile");
    tcase_add_test(hostile, test_hostile_headers);
    tcase_add_test(hostile, test_binary_operation_no_allocation);
    tcase_add_test(hostile, test_large_valid_array_is_linear);
    tcase_set_timeout(hostile, 30);
    suite_add_tcase(s, hostile);

    TCase *conv = tcase_create("conversions");
    tcase_add_test(conv, test_msgpack_to_json);
    tcase_add_test(conv, test_json_to_msgpack);
    tcase_add_test(conv, test_document_id_and_type_names);
    suite_add_tcase(s, conv);

    TCase *enc = tcase_create("encoders");
    tcase_add_test(enc, test_encode_auth);
    tcase_add_test(enc, test_encode_joined_left);
    tcase_add_test(enc, test_encode_ack_error_pong);
    tcase_add_test(enc, test_encode_sync_response);
    tcase_add_test(enc, test_encode_lagged_reset);
    tcase_add_test(enc, test_encode_bc_operation);
    tcase_add_test(enc, test_encode_bc_cursor_user);
    tcase_add_test(enc, test_broadcast_roundtrip_through_decoder_shapes);
    suite_add_tcase(s, enc);
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
