/*
 * codec_testutil.h: helpers shared by the codec's Check suites (check_codec.c,
 * check_codec_limits.c, check_codec_encode.c). Header-only so each suite stays one executable
 * under the tests/ glob; functions are static inline so a suite need not use all of them.
 */
#ifndef RELAY_CODEC_TESTUTIL_H
#define RELAY_CODEC_TESTUTIL_H

#include <check.h>
#include <jansson.h>
#include <msgpack.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "relay/codec.h"

static char err[256];

/* ---- Helpers ------------------------------------------------------------------------------ */

static inline double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static inline void pk_str(msgpack_packer *pk, const char *s)
{
    msgpack_pack_str_with_body(pk, s, strlen(s));
}

/* Packs a jansson value with msgpack-c's packer (the test's own converter, independent of
 * codec_json_to_msgpack), keeping key order. */
static inline void pk_json(msgpack_packer *pk, const json_t *v)
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
static inline void mp_from_json(const char *text, msgpack_sbuffer *sb)
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

static inline codec_status dec_json(const char *text, codec_request *r)
{
    return codec_decode_text(text, strlen(text), &codec_default_limits, r, err, sizeof err);
}

static inline codec_status dec_mp(const msgpack_sbuffer *sb, codec_request *r)
{
    return codec_decode_binary((const uint8_t *)sb->data, sb->size, &codec_default_limits, r, err,
                               sizeof err);
}

static inline codec_status dec_raw(const void *data, size_t len, codec_request *r)
{
    return codec_decode_binary(data, len, &codec_default_limits, r, err, sizeof err);
}

/* A blob as JSON (asserts it converts). */
static inline json_t *blob_to_json(codec_blob b)
{
    ck_assert_uint_gt(b.len, 0);
    json_t *v = codec_msgpack_to_json(b.data, b.len, err, sizeof err);
    ck_assert_msg(v != NULL, "blob does not convert: %s", err);
    return v;
}

/* Asserts that blob b holds the JSON value written as text. */
static inline void assert_blob_json(codec_blob b, const char *text)
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
static inline void decode_both(const char *text, codec_status st, codec_type t, codec_request *rj)
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

static inline void expect_both(const char *text, codec_status st, codec_type t)
{
    codec_request r;
    decode_both(text, st, t, &r);
    codec_request_free(&r);
}

/* Builds msgpack with msgpack-c: a map {"type": type, key: <raw value bytes>} in sb. */
static inline void mp_with_raw(msgpack_sbuffer *sb, const char *type, const char *key,
                               const void *raw, size_t raw_len)
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

static inline codec_status dec_with_raw(const char *type, const char *key, const void *raw,
                                        size_t raw_len, codec_request *r)
{
    msgpack_sbuffer sb;
    mp_with_raw(&sb, type, key, raw, raw_len);
    codec_status st = dec_mp(&sb, r);
    msgpack_sbuffer_destroy(&sb);
    return st;
}

/* Parses a Text reply, asserting its kind. */
static inline json_t *reply_json(msgbuf *mb)
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
static inline json_t *bc_json(msgbuf *mb)
{
    ck_assert_ptr_nonnull(mb);
    ck_assert_int_eq(mb->kind, MSGBUF_BINARY);
    json_t *v = codec_msgpack_to_json(msgbuf_data(mb), mb->len, err, sizeof err);
    ck_assert_msg(v != NULL, "broadcast is not msgpack JSON can show: %s", err);
    ck_assert(json_is_object(v));
    msgbuf_unref(mb);
    return v;
}

static inline void assert_str_field(const json_t *o, const char *key, const char *want)
{
    const json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_string(v), "field %s missing or not a string", key);
    ck_assert_str_eq(json_string_value(v), want);
}

static inline void assert_int_field(const json_t *o, const char *key, json_int_t want)
{
    const json_t *v = json_object_get(o, key);
    ck_assert_msg(json_is_integer(v), "field %s missing or not an integer", key);
    ck_assert_int_eq(json_integer_value(v), want);
}

static inline void assert_json_field(const json_t *o, const char *key, const char *want_text)
{
    json_t *want = json_loads(want_text, JSON_DECODE_ANY, NULL);
    ck_assert_ptr_nonnull(want);
    ck_assert_msg(json_equal(json_object_get(o, key), want), "field %s differs from %s", key,
                  want_text);
    json_decref(want);
}

/* True if needle occurs in hay (memmem is a GNU extension this tree does not enable). */
static inline bool mem_contains(const uint8_t *hay, size_t hay_len, const uint8_t *needle, size_t n)
{
    for (size_t k = 0; n <= hay_len && k <= hay_len - n; k++) {
        if (memcmp(hay + k, needle, n) == 0)
            return true;
    }
    return false;
}

/* The msgpack encoding of a JSON text as a blob backed by sb (caller destroys sb). */
static inline codec_blob blob_from_json(const char *text, msgpack_sbuffer *sb)
{
    mp_from_json(text, sb);
    return (codec_blob){(const uint8_t *)sb->data, sb->size};
}

#endif
