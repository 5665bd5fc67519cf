/*
 * check_bench.c: relay-bench's modules without sockets.
 *
 * - hist: the log-linear histogram keeps every value to within 1/64 (its upper bucket edge),
 *   is exact below 128, reads percentiles of known distributions, merges like one histogram,
 *   and clamps values past its last bucket while keeping max exact.
 * - bench_msg: operation requests round-trip their stamp (ts, sender, seq) through a broadcast
 *   built with msgpack-c the way the node sends it (alone and in batches), at the smallest and
 *   largest payloads; every truncation and every malformed stamp or map is rejected; JSON
 *   replies are classified.
 * - procstat: this process's own /proc/self/stat reads as plausible and monotonic CPU time, a
 *   process whose name holds ") (" parses, a reaped pid reads as -1, and RSS follows memory
 *   this test touches.
 * - report: the --json report parses with jansson and every figure the bench scripts read
 *   carries the value computed from known inputs; the text report has the lines they grep.
 */
#include <check.h>
#include <jansson.h>
#include <math.h>
#include <msgpack.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "bench_msg.h"
#include "hist.h"
#include "procstat.h"
#include "report.h"

/* ---- hist ------------------------------------------------------------------------------------ */

/* A histogram too big for Check's stack frames is allocated zeroed (an empty hist). */
static hist *hist_new(void)
{
    hist *h = calloc(1, sizeof(hist));
    ck_assert_ptr_nonnull(h);
    return h;
}

START_TEST(test_hist_empty)
{
    hist *h = hist_new();
    ck_assert_uint_eq(hist_quantile(h, 0.5), 0);
    ck_assert_uint_eq(hist_quantile(h, 1.0), 0);
    ck_assert_uint_eq(h->total, 0);
    free(h);
}
END_TEST

START_TEST(test_hist_exact_below_128)
{
    hist *h = hist_new();
    for (uint64_t v = 0; v < 128; v++)
        hist_record(h, v);
    ck_assert_uint_eq(h->total, 128);
    ck_assert_uint_eq(h->max, 127);
    /* The k-th smallest of 0..127 is k-1: exact, no bucket rounding. */
    ck_assert_uint_eq(hist_quantile(h, 0.5), 63);
    ck_assert_uint_eq(hist_quantile(h, 0.25), 31);
    ck_assert_uint_eq(hist_quantile(h, 1.0), 127);
    ck_assert_uint_eq(hist_quantile(h, 0.0), 0);
    free(h);
}
END_TEST

/* For values across the whole range, the reported bucket edge is >= the value and within 1/64
 * of it. A second, far larger value keeps the max cap from hiding the bucket edge. */
START_TEST(test_hist_relative_error_bound)
{
    for (uint64_t v = 1; v < (1ull << 46); v = v * 3 / 2 + 1) {
        hist *h = hist_new();
        hist_record(h, v);
        hist_record(h, 1ull << 46);
        uint64_t q = hist_quantile(h, 0.5);
        ck_assert_msg(q >= v && q - v <= v / 64, "value %llu reported as %llu",
                      (unsigned long long)v, (unsigned long long)q);
        free(h);
    }
}
END_TEST

START_TEST(test_hist_uniform_percentiles)
{
    hist *h = hist_new();
    for (uint64_t v = 1; v <= 100000; v++)
        hist_record(h, v);
    static const double qs[] = {0.5, 0.9, 0.99, 0.999};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        double want = qs[i] * 100000;
        double got = (double)hist_quantile(h, qs[i]);
        ck_assert_msg(got >= want && got <= want * (1 + 1.0 / 64), "q %.3f: %.0f, want %.0f", qs[i],
                      got, want);
    }
    ck_assert_uint_eq(hist_quantile(h, 1.0), 100000);
    ck_assert_uint_eq(h->max, 100000);
    /* Quantiles never decrease with q. */
    uint64_t prev = 0;
    for (double q = 0; q <= 1.0; q += 0.01) {
        uint64_t v = hist_quantile(h, q);
        ck_assert_uint_ge(v, prev);
        prev = v;
    }
    free(h);
}
END_TEST

/* 990 fast values and 10 slow ones: p99 is fast, p99.9 is slow, max is exact. */
START_TEST(test_hist_bimodal_tail)
{
    hist *h = hist_new();
    for (int i = 0; i < 990; i++)
        hist_record(h, 1000);
    for (int i = 0; i < 10; i++)
        hist_record(h, 5000000 + (uint64_t)i);
    uint64_t p99 = hist_quantile(h, 0.99), p999 = hist_quantile(h, 0.999);
    ck_assert_msg(p99 >= 1000 && p99 <= 1000 + 1000 / 64, "p99 %llu", (unsigned long long)p99);
    ck_assert_msg(p999 >= 5000000 && p999 <= 5000009, "p99.9 %llu", (unsigned long long)p999);
    ck_assert_uint_eq(h->max, 5000009);
    free(h);
}
END_TEST

START_TEST(test_hist_overflow_lands_in_last_bucket)
{
    hist *h = hist_new();
    hist_record(h, UINT64_MAX);
    hist_record(h, 1ull << 60);
    ck_assert_uint_eq(h->total, 2);
    ck_assert_uint_eq(h->max, UINT64_MAX);
    ck_assert_uint_eq(h->counts[HIST_BUCKETS - 1], 2);
    uint64_t q = hist_quantile(h, 1.0);
    ck_assert_uint_gt(q, 1ull << 46);
    ck_assert_uint_le(q, h->max);
    free(h);
}
END_TEST

START_TEST(test_hist_merge_equals_single)
{
    hist *a = hist_new(), *b = hist_new(), *all = hist_new(), *empty = hist_new();
    uint64_t x = 12345;
    for (int i = 0; i < 20000; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        uint64_t v = (x >> 33) % 50000000;
        hist_record(i % 3 ? a : b, v);
        hist_record(all, v);
    }
    hist_merge(a, b);
    ck_assert_uint_eq(a->total, all->total);
    ck_assert_uint_eq(a->max, all->max);
    ck_assert_int_eq(memcmp(a->counts, all->counts, sizeof a->counts), 0);
    /* Merging an empty histogram changes nothing, and src is left alone. */
    uint64_t btotal = b->total;
    hist_merge(a, empty);
    ck_assert_int_eq(memcmp(a, all, sizeof(hist)), 0);
    ck_assert_uint_eq(b->total, btotal);
    /* Merging into an empty one copies it. */
    hist_merge(empty, all);
    ck_assert_int_eq(memcmp(empty, all, sizeof(hist)), 0);
    free(a), free(b), free(all), free(empty);
}
END_TEST

/* ---- bench_msg ------------------------------------------------------------------------------- */

/* Packs a str the way msgpack-c does (shortest header). */
static void pack_str(msgpack_packer *pk, const void *s, size_t len)
{
    msgpack_pack_str(pk, len);
    msgpack_pack_str_body(pk, s, len);
}

/* Appends one operation broadcast to pk, as the node sends it, carrying payload. */
static void pack_op_broadcast(msgpack_packer *pk, const void *payload, size_t len, uint64_t seq)
{
    msgpack_pack_map(pk, 6);
    pack_str(pk, "type", 4), pack_str(pk, "operation", 9);
    pack_str(pk, "document_id", 11), pack_str(pk, "doc-1", 5);
    pack_str(pk, "seq", 3), msgpack_pack_uint64(pk, seq);
    pack_str(pk, "user_id", 7), pack_str(pk, "alice", 5);
    pack_str(pk, "session_id", 10), pack_str(pk, "9f2c41d0b7a8e6f1", 16);
    pack_str(pk, "payload", 7), pack_str(pk, payload, len);
}

/* Appends a presence broadcast with a nested map and array (skipped by the reader). */
static void pack_presence(msgpack_packer *pk)
{
    msgpack_pack_map(pk, 3);
    pack_str(pk, "type", 4), pack_str(pk, "presence", 8);
    pack_str(pk, "cursor", 6);
    msgpack_pack_map(pk, 2);
    pack_str(pk, "x", 1), msgpack_pack_double(pk, 1.5);
    pack_str(pk, "sel", 3);
    msgpack_pack_array(pk, 3);
    msgpack_pack_int64(pk, -70000), msgpack_pack_nil(pk), msgpack_pack_true(pk);
    pack_str(pk, "users", 5);
    msgpack_pack_array(pk, 0);
}

/* Finds key's value in the msgpack map o, or NULL. */
static const msgpack_object *mp_get(const msgpack_object *o, const char *key)
{
    ck_assert_int_eq(o->type, MSGPACK_OBJECT_MAP);
    for (uint32_t i = 0; i < o->via.map.size; i++) {
        const msgpack_object_kv *kv = &o->via.map.ptr[i];
        if (kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == strlen(key) &&
            memcmp(kv->key.via.str.ptr, key, strlen(key)) == 0)
            return &kv->val;
    }
    return NULL;
}

/* The payload inside a binary request of payload < 256 bytes: after the map header, "type":
 * "operation", the "payload" key and a str 8 header (1 + 5 + 10 + 8 + 2 bytes). */
static const char *req_payload(const char *req, int payload)
{
    ck_assert_uint_eq((uint8_t)req[24], 0xd9);
    ck_assert_uint_eq((uint8_t)req[25], (unsigned)payload);
    return req + 26;
}

static const int payload_sizes[] = {BENCH_MSG_STAMP_LEN, 100, 255, 256, 65535, BENCH_MAX_PAYLOAD};
static const struct {
    int64_t ts;
    uint32_t sid, seq;
} stamps[] = {{0, 0, 0},
              {1, 2, 3},
              {INT64_MAX, UINT32_MAX, UINT32_MAX},
              {0x0123456789abcdefLL, 0xdeadbeef, 0x80000000u}};

/* A binary request parses with msgpack-c: 3 keys, payload of exactly B bytes, ref == seq. Its
 * payload, broadcast back, decodes to the same stamp. */
START_TEST(test_msg_binary_round_trip)
{
    int payload = payload_sizes[_i % 6];
    int64_t ts = stamps[_i / 6].ts;
    uint32_t sid = stamps[_i / 6].sid, seq = stamps[_i / 6].seq;
    char *buf = malloc((size_t)payload + 64);
    ck_assert_ptr_nonnull(buf);
    size_t n = bench_msg_build_op(buf, true, payload, ts, sid, seq);
    ck_assert_uint_le(n, (size_t)payload + 64);

    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    size_t off = 0;
    ck_assert_int_eq(msgpack_unpack_next(&up, buf, n, &off), MSGPACK_UNPACK_SUCCESS);
    ck_assert_uint_eq(off, n);
    ck_assert_uint_eq(up.data.via.map.size, 3);
    const msgpack_object *type = mp_get(&up.data, "type"), *pl = mp_get(&up.data, "payload"),
                         *ref = mp_get(&up.data, "ref");
    ck_assert_ptr_nonnull(type);
    ck_assert_ptr_nonnull(pl);
    ck_assert_ptr_nonnull(ref);
    ck_assert_int_eq(type->via.str.size, 9);
    ck_assert_int_eq(memcmp(type->via.str.ptr, "operation", 9), 0);
    ck_assert_int_eq(pl->type, MSGPACK_OBJECT_STR);
    ck_assert_uint_eq(pl->via.str.size, (uint32_t)payload);
    ck_assert_int_eq(ref->type, MSGPACK_OBJECT_POSITIVE_INTEGER);
    ck_assert_uint_eq(ref->via.u64, seq);

    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_op_broadcast(&pk, pl->via.str.ptr, pl->via.str.size, 77);
    bench_msg_reader r;
    bool batched = true, is_op = false;
    bench_msg_op op = {0};
    ck_assert_uint_eq(bench_msg_open(&r, (const uint8_t *)sb.data, sb.size, &batched), 1);
    ck_assert(!batched);
    ck_assert_int_eq(bench_msg_next_broadcast(&r, &is_op, &op), 0);
    ck_assert(is_op);
    ck_assert_uint_eq(op.ts, (uint64_t)ts);
    ck_assert_uint_eq(op.sender_id, sid);
    ck_assert_uint_eq(op.seq, seq);
    ck_assert_ptr_eq(r.p, r.end);
    msgpack_sbuffer_destroy(&sb);
    msgpack_unpacked_destroy(&up);
    free(buf);
}
END_TEST

/* A JSON request is valid JSON with the same fields; its payload carries the stamp. */
START_TEST(test_msg_json_request)
{
    char buf[300 + 64];
    size_t n = bench_msg_build_op(buf, false, 300, 987654321, 42, 7);
    json_error_t e;
    json_t *j = json_loadb(buf, n, 0, &e);
    ck_assert_msg(j != NULL, "%s", e.text);
    ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "operation");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "ref")), 7);
    const char *pl = json_string_value(json_object_get(j, "payload"));
    ck_assert_ptr_nonnull(pl);
    ck_assert_uint_eq(strlen(pl), 300);
    ck_assert_int_eq(strncmp(pl,
                             "000000003ade68b1"
                             "0000002a"
                             "00000007",
                             32),
                     0);
    ck_assert(strspn(pl + 32, "x") == 300 - 32);
    json_decref(j);
}
END_TEST

/* A batch (array) of broadcasts: operations and a presence message, read in order. */
START_TEST(test_msg_batch)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int count = _i == 0 ? 3 : 20; /* fixarray, then array 16 */
    msgpack_pack_array(&pk, (size_t)count);
    for (int i = 0; i < count; i++) {
        if (i == 1) {
            pack_presence(&pk);
            continue;
        }
        char buf[200];
        bench_msg_build_op(buf, true, 100, 1000 + i, 5, (uint32_t)i);
        pack_op_broadcast(&pk, req_payload(buf, 100), 100, (uint64_t)i);
    }
    bench_msg_reader r;
    bool batched = false;
    ck_assert_uint_eq(bench_msg_open(&r, (const uint8_t *)sb.data, sb.size, &batched),
                      (uint64_t)count);
    ck_assert(batched);
    for (int i = 0; i < count; i++) {
        bool is_op;
        bench_msg_op op;
        ck_assert_int_eq(bench_msg_next_broadcast(&r, &is_op, &op), 0);
        ck_assert(is_op == (i != 1));
        if (is_op) {
            ck_assert_uint_eq(op.ts, 1000 + (uint64_t)i);
            ck_assert_uint_eq(op.seq, (uint64_t)i);
            ck_assert_uint_eq(op.sender_id, 5);
        }
    }
    ck_assert_ptr_eq(r.p, r.end);
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* Every strict prefix of a valid broadcast is rejected, never read past its end. */
START_TEST(test_msg_truncation_rejected)
{
    char req[200];
    bench_msg_build_op(req, true, 100, 123456789, 1, 2);
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    pack_op_broadcast(&pk, req_payload(req, 100), 100, 1);
    for (size_t len = 0; len < sb.size; len++) {
        /* A private copy of exactly len bytes, so ASan sees any over-read. */
        uint8_t *cut = malloc(len ? len : 1);
        memcpy(cut, sb.data, len);
        bench_msg_reader r;
        bool batched, is_op;
        bench_msg_op op;
        uint64_t n = bench_msg_open(&r, cut, len, &batched);
        ck_assert_uint_eq(n, 1);
        ck_assert_msg(bench_msg_next_broadcast(&r, &is_op, &op) == -1, "prefix %zu accepted", len);
        free(cut);
    }
    msgpack_sbuffer_destroy(&sb);
}
END_TEST

/* Builds a broadcast {type: operation, payload: pl} by hand and returns its reader result. */
static int read_payload(const char *pl, size_t len)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    pack_str(&pk, "type", 4), pack_str(&pk, "operation", 9);
    pack_str(&pk, "payload", 7), pack_str(&pk, pl, len);
    bench_msg_reader r;
    bool batched, is_op;
    bench_msg_op op;
    bench_msg_open(&r, (const uint8_t *)sb.data, sb.size, &batched);
    int rc = bench_msg_next_broadcast(&r, &is_op, &op);
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

START_TEST(test_msg_bad_stamps_rejected)
{
    char pl[40];
    memset(pl, '0', sizeof pl);
    ck_assert_int_eq(read_payload(pl, 32), 0);
    ck_assert_int_eq(read_payload(pl, 31), -1); /* too short for a stamp */
    static const char bad[] = {'A', 'g', 'x', ' ', '/', ':', '`', 0};
    for (int pos = 0; pos < 32; pos += 5)
        for (size_t b = 0; b < sizeof bad; b++) {
            pl[pos] = bad[b];
            ck_assert_msg(read_payload(pl, 40) == -1, "byte %d = 0x%02x accepted", pos, bad[b]);
            pl[pos] = 'f';
            ck_assert_int_eq(read_payload(pl, 40), 0);
        }
}
END_TEST

/* Malformed maps: not a map, no type, a non-str payload, ext values, nesting too deep, a batch
 * claiming more broadcasts than it holds. */
START_TEST(test_msg_malformed_maps_rejected)
{
    bench_msg_reader r;
    bool batched, is_op;
    bench_msg_op op;
    static const uint8_t not_map[] = {0x2a};
    static const uint8_t no_type[] = {0x81, 0xa1, 'x', 0x01};
    static const uint8_t int_type[] = {0x81, 0xa4, 't', 'y', 'p', 'e', 0x01};
    static const uint8_t int_key[] = {0x81, 0x01, 0x01};
    static const uint8_t ext_val[] = {0x82, 0xa4, 't', 'y',  'p',  'e', 0xa1,
                                      'p',  0xa1, 'e', 0xd4, 0x01, 0x02};
    static const uint8_t op_int_payload[] = {0x82, 0xa4, 't', 'y', 'p', 'e', 0xa9, 'o',  'p',
                                             'e',  'r',  'a', 't', 'i', 'o', 'n',  0xa7, 'p',
                                             'a',  'y',  'l', 'o', 'a', 'd', 0x05};
    static const uint8_t op_no_payload[] = {0x81, 0xa4, 't', 'y', 'p', 'e', 0xa9, 'o',
                                            'p',  'e',  'r', 'a', 't', 'i', 'o',  'n'};
    static const struct {
        const uint8_t *d;
        size_t n;
    } cases[] = {{not_map, sizeof not_map},
                 {no_type, sizeof no_type},
                 {int_type, sizeof int_type},
                 {int_key, sizeof int_key},
                 {ext_val, sizeof ext_val},
                 {op_int_payload, sizeof op_int_payload},
                 {op_no_payload, sizeof op_no_payload}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ck_assert_uint_eq(bench_msg_open(&r, cases[i].d, cases[i].n, &batched), 1);
        ck_assert_msg(bench_msg_next_broadcast(&r, &is_op, &op) == -1, "case %zu accepted", i);
    }
    /* 40 nested arrays under an unknown key: deeper than the reader's limit. */
    uint8_t deep[64] = {0x82, 0xa4, 't', 'y', 'p', 'e', 0xa1, 'p', 0xa1, 'z'};
    size_t n = 10;
    for (int i = 0; i < 40; i++)
        deep[n++] = 0x91;
    deep[n++] = 0xc0;
    ck_assert_uint_eq(bench_msg_open(&r, deep, n, &batched), 1);
    ck_assert_int_eq(bench_msg_next_broadcast(&r, &is_op, &op), -1);
    /* A batch of 3 holding one broadcast: the second read fails. */
    static const uint8_t short_batch[] = {0x93, 0x81, 0xa4, 't', 'y', 'p', 'e', 0xa1, 'p'};
    ck_assert_uint_eq(bench_msg_open(&r, short_batch, sizeof short_batch, &batched), 3);
    ck_assert(batched);
    ck_assert_int_eq(bench_msg_next_broadcast(&r, &is_op, &op), 0);
    ck_assert(!is_op);
    ck_assert_int_eq(bench_msg_next_broadcast(&r, &is_op, &op), -1);
    /* array 16 whose length bytes are cut off claims nothing. */
    static const uint8_t cut_hdr[] = {0xdc, 0x00};
    ck_assert_uint_eq(bench_msg_open(&r, cut_hdr, sizeof cut_hdr, &batched), 0);
}
END_TEST

START_TEST(test_msg_replies)
{
    bench_msg_reply m;
#define PARSE(s) bench_msg_parse_reply((const uint8_t *)(s), strlen(s), &m)
    PARSE("{\"type\":\"ack\",\"ref\":41,\"seq\":9}");
    ck_assert_int_eq(m.type, BENCH_MSG_REPLY_ACK);
    ck_assert_int_eq(m.ref, 41);
    ck_assert(m.has_ref);
    PARSE("{\"type\":\"auth_result\",\"success\":true}");
    ck_assert_int_eq(m.type, BENCH_MSG_REPLY_AUTH_RESULT);
    ck_assert(m.success);
    PARSE("{\"type\":\"auth_result\",\"success\":false}");
    ck_assert(!m.success);
    PARSE("{\"type\":\"joined_document\",\"seq\":0}");
    ck_assert_int_eq(m.type, BENCH_MSG_REPLY_JOINED);
    PARSE("{\"type\":\"lagged\",\"missed\":1234}");
    ck_assert_int_eq(m.type, BENCH_MSG_REPLY_LAGGED);
    ck_assert_int_eq(m.missed, 1234);
    PARSE("{\"type\":\"error\",\"code\":\"rate_limited\",\"ref\":3}");
    ck_assert_int_eq(m.type, BENCH_MSG_REPLY_ERROR);
    ck_assert_str_eq(m.code, "rate_limited");
    ck_assert(m.has_ref);
    PARSE("{\"type\":\"error\",\"code\":7,\"ref\":\"x\"}");
    ck_assert_str_eq(m.code, "other");
    ck_assert(!m.has_ref);
    PARSE("{\"type\":\"presence\"}");
    ck_assert_int_eq(m.type, BENCH_MSG_REPLY_OTHER);
    PARSE("{\"type\":5}");
    ck_assert_int_eq(m.type, BENCH_MSG_REPLY_INVALID);
    PARSE("{\"type\":\"ack\"");
    ck_assert_int_eq(m.type, BENCH_MSG_REPLY_INVALID);
    PARSE("");
    ck_assert_int_eq(m.type, BENCH_MSG_REPLY_INVALID);
    char longcode[200];
    snprintf(longcode, sizeof longcode, "{\"type\":\"error\",\"code\":\"%0100d\"}", 0);
    PARSE(longcode);
    ck_assert_uint_eq(strlen(m.code), sizeof m.code - 1);
#undef PARSE
}
END_TEST

START_TEST(test_msg_auth)
{
    char buf[64];
    int n = bench_msg_build_auth(buf, sizeof buf, "abc.def.ghi");
    ck_assert_int_gt(n, 0);
    json_t *j = json_loadb(buf, (size_t)n, 0, NULL);
    ck_assert_ptr_nonnull(j);
    ck_assert_str_eq(json_string_value(json_object_get(j, "type")), "authenticate");
    ck_assert_str_eq(json_string_value(json_object_get(j, "token")), "abc.def.ghi");
    json_decref(j);
    ck_assert_int_eq(bench_msg_build_auth(buf, 20, "abc.def.ghi"), -1);
    /* Exactly fitting needs room for the terminator too. */
    ck_assert_int_eq(bench_msg_build_auth(buf, (size_t)n, "abc.def.ghi"), -1);
    ck_assert_int_eq(bench_msg_build_auth(buf, (size_t)n + 1, "abc.def.ghi"), n);
}
END_TEST

/* ---- procstat -------------------------------------------------------------------------------- */

static double mono_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Spins for about s seconds of CPU. */
/* Spends s seconds of this process's CPU time (not wall time: on a loaded machine a wall-clock
 * loop may get almost no CPU). */
static double cpu_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void burn(double s)
{
    volatile uint64_t x = 0;
    double t0 = cpu_s();
    while (cpu_s() - t0 < s)
        for (int i = 0; i < 10000; i++)
            x += (uint64_t)i;
}

START_TEST(test_procstat_self_monotonic)
{
    double wall0 = mono_s();
    double a = procstat_cpu_s(getpid()), sa = procstat_self_cpu_s();
    ck_assert(a >= 0 && sa >= 0);
    burn(0.3);
    double b = procstat_cpu_s(getpid()), sb = procstat_self_cpu_s();
    double wall = mono_s() - wall0;
    /* Clock ticks are 10 ms; a loaded machine may run us for less than the wall time. */
    ck_assert_msg(b >= a, "cpu went back: %f -> %f", a, b);
    ck_assert_msg(b - a > 0.02 && b - a <= wall + 0.05, "burned %f s of cpu in %f s", b - a, wall);
    ck_assert_msg(sb - sa > 0.02 && sb - sa <= wall + 0.05, "rusage %f s in %f s", sb - sa, wall);
    /* /proc and getrusage describe the same process. */
    ck_assert_msg(fabs(b - sb) < 0.1, "/proc %f vs rusage %f", b, sb);
}
END_TEST

START_TEST(test_procstat_missing_pid)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0)
        _exit(0);
    ck_assert_int_eq(waitpid(pid, NULL, 0), pid);
    ck_assert(procstat_cpu_s(pid) == -1);
    ck_assert_int_eq(procstat_rss_kb(pid), -1);
    ck_assert(procstat_cpu_s(-1) == -1);
}
END_TEST

/* A process named "a) b (c" makes a parser that stops at the first ')' read the wrong fields. */
START_TEST(test_procstat_name_with_parens)
{
    int go[2], ready[2];
    ck_assert_int_eq(pipe(go), 0);
    ck_assert_int_eq(pipe(ready), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        prctl(PR_SET_NAME, "a) 1 2 (c) 3", 0, 0, 0);
        burn(0.2);
        char c = 1;
        if (write(ready[1], &c, 1) != 1)
            _exit(1);
        if (read(go[0], &c, 1) < 0)
            _exit(1);
        _exit(0);
    }
    char c;
    ck_assert_int_eq(read(ready[0], &c, 1), 1);
    double cpu = procstat_cpu_s(pid);
    long rss = procstat_rss_kb(pid);
    ck_assert_int_eq(write(go[1], &c, 1), 1);
    waitpid(pid, NULL, 0);
    ck_assert_msg(cpu > 0.05 && cpu < 5, "child cpu %f", cpu);
    ck_assert_int_gt(rss, 0);
}
END_TEST

START_TEST(test_procstat_rss_follows_memory)
{
    long before = procstat_rss_kb(getpid());
    ck_assert_int_gt(before, 0);
    size_t len = 64u << 20;
    uint8_t *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert(p != MAP_FAILED);
    memset(p, 1, len);
    long after = procstat_rss_kb(getpid());
    munmap(p, len);
    ck_assert_msg(after - before >= 60000, "rss %ld -> %ld kB after touching 64 MiB", before,
                  after);
    ck_assert_int_lt(procstat_rss_kb(getpid()), after);
}
END_TEST

/* ---- report ---------------------------------------------------------------------------------- */

/* Runs report_print and returns what it wrote on stdout (malloc'd). */
static char *capture_report(const bench_opts *o, const report_stats *r)
{
    fflush(stdout);
    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    int saved = dup(STDOUT_FILENO);
    ck_assert_int_ge(saved, 0);
    dup2(fileno(tmp), STDOUT_FILENO);
    report_print(o, r);
    fflush(stdout);
    dup2(saved, STDOUT_FILENO);
    close(saved);
    long n = ftell(tmp);
    if (n <= 0) {
        fseek(tmp, 0, SEEK_END);
        n = ftell(tmp);
    }
    char *out = calloc(1, (size_t)n + 1);
    rewind(tmp);
    ck_assert_uint_eq(fread(out, 1, (size_t)n, tmp), (size_t)n);
    fclose(tmp);
    return out;
}

/* Known inputs: 100 clients, 2 nodes, 10 s window, 1000 acked, 98,010 delivered of 99,000,
 * latencies 1..1000 us, 2 errors and one close code. */
static report_stats *known_stats(bench_opts *o)
{
    *o = (bench_opts){.per_doc = 100, .conns = 100, .docs = 1, .n_pids = 2, .json = true};
    o->pids[0] = 111, o->pids[1] = 222;
    report_stats *r = calloc(1, sizeof *r);
    ck_assert_ptr_nonnull(r);
    r->s = (bench_totals){
        .joined = 99, .failed = 1, .sent_win = 1010, .acked_win = 1000, .delivered_win = 98010};
    for (uint64_t us = 1; us <= 1000; us++)
        hist_record(&r->lat, us * 1000);
    hist_record(&r->connect, 3000000);
    r->errors[report_err_index("rate_limited")] = 2;
    report_close_code_add(r->close_codes, 1006, 1);
    r->lagged = 3, r->missed = 40, r->gaps = 5, r->reorders = 6, r->skipped = 7;
    r->throttled = 8;
    r->window_s = 10;
    r->bench_cpu_s = 4;
    r->node_cpu_s[0] = 0.5, r->node_cpu_s[1] = 0.25, r->node_cpu_total = 0.75;
    r->node_rss_kb[0] = 1000, r->node_rss_kb[1] = 2000;
    return r;
}

static double jnum(json_t *o, const char *path)
{
    json_t *v = o;
    char key[64];
    const char *p = path;
    while (*p) {
        size_t l = strcspn(p, "/");
        snprintf(key, sizeof key, "%.*s", (int)l, p);
        v = json_object_get(v, key);
        ck_assert_msg(v != NULL, "missing %s", path);
        p += l + (p[l] == '/');
    }
    ck_assert_msg(json_is_number(v), "%s is not a number", path);
    return json_number_value(v);
}

/* Asserts a == b up to rounding. */
static void ck_near(double a, double b)
{
    ck_assert_msg(fabs(a - b) <= 1e-6 * (1 + fabs(b)), "%f != %f", a, b);
}

START_TEST(test_report_json_fields)
{
    bench_opts o;
    report_stats *r = known_stats(&o);
    char *out = capture_report(&o, r);
    ck_assert_msg(strchr(out, '\n') == out + strlen(out) - 1, "not one line: %s", out);
    json_error_t e;
    json_t *j = json_loads(out, 0, &e);
    ck_assert_msg(j != NULL, "%s in %s", e.text, out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "mode")), "load");
    ck_near(jnum(j, "connections"), 100);
    ck_near(jnum(j, "joined"), 99);
    ck_near(jnum(j, "failed"), 1);
    ck_near(jnum(j, "offered"), 1010);
    ck_near(jnum(j, "acked"), 1000);
    ck_near(jnum(j, "delivered"), 98010);
    ck_near(jnum(j, "expected"), 99000);
    ck_near(jnum(j, "delivery_ratio"), 0.99);
    ck_near(jnum(j, "delivered_per_s"), 9801);
    ck_near(jnum(j, "acked_per_s"), 100);
    ck_near(jnum(j, "window_s"), 10);
    double p50 = jnum(j, "latency_us/p50"), p99 = jnum(j, "latency_us/p99");
    ck_assert_msg(p50 >= 500 && p50 <= 500 * 1.016, "p50 %f", p50);
    ck_assert_msg(p99 >= 990 && p99 <= 1000, "p99 %f", p99);
    ck_assert(jnum(j, "latency_us/p90") >= 900 && jnum(j, "latency_us/p99.9") <= 1000);
    ck_near(jnum(j, "latency_us/max"), 1000);
    ck_near(jnum(j, "latency_us/count"), 1000);
    ck_near(jnum(j, "connect_ms/max"), 3);
    ck_near(jnum(j, "errors/rate_limited"), 2);
    ck_near(jnum(j, "errors/close_1006"), 1);
    ck_assert_uint_eq(json_object_size(json_object_get(j, "errors")), 2);
    ck_near(jnum(j, "lagged/messages"), 3);
    ck_near(jnum(j, "lagged/missed"), 40);
    ck_near(jnum(j, "sequence/gaps"), 5);
    ck_near(jnum(j, "sequence/reorders"), 6);
    ck_near(jnum(j, "bench/cpu_s"), 4);
    ck_near(jnum(j, "bench/cpu_pct"), 40);
    ck_near(jnum(j, "bench/skipped"), 7);
    ck_near(jnum(j, "bench/throttled"), 8);
    ck_near(jnum(j, "node_cpu_s"), 0.75);
    ck_near(jnum(j, "node_us_per_msg"), 0.75e6 / 98010);
    json_t *nodes = json_object_get(j, "nodes");
    ck_assert_uint_eq(json_array_size(nodes), 2);
    ck_near(jnum(json_array_get(nodes, 1), "pid"), 222);
    ck_near(jnum(json_array_get(nodes, 1), "cpu_s"), 0.25);
    ck_near(jnum(json_array_get(nodes, 0), "rss_kb"), 1000);
    json_decref(j);
    free(out);
    free(r);
}
END_TEST

/* Nothing measured: ratios and rates are 0, never NaN or inf (which JSON cannot carry). */
START_TEST(test_report_json_empty)
{
    bench_opts o = {.per_doc = 10, .conns = 5, .idle = true, .json = true};
    report_stats *r = calloc(1, sizeof *r);
    char *out = capture_report(&o, r);
    json_t *j = json_loads(out, 0, NULL);
    ck_assert_msg(j != NULL, "%s", out);
    ck_assert_str_eq(json_string_value(json_object_get(j, "mode")), "idle");
    ck_near(jnum(j, "delivery_ratio"), 0);
    ck_near(jnum(j, "delivered_per_s"), 0);
    ck_near(jnum(j, "node_us_per_msg"), 0);
    ck_near(jnum(j, "latency_us/p99"), 0);
    ck_assert_uint_eq(json_object_size(json_object_get(j, "errors")), 0);
    ck_assert_uint_eq(json_array_size(json_object_get(j, "nodes")), 0);
    json_decref(j);
    free(out);
    free(r);
}
END_TEST

START_TEST(test_report_text)
{
    bench_opts o;
    report_stats *r = known_stats(&o);
    o.json = false;
    char *out = capture_report(&o, r);
    ck_assert_msg(strstr(out, "connections 100 joined 99 failed 1\n"), "%s", out);
    ck_assert_msg(strstr(out, "offered 1010 acked 1000 delivered 98010 expected 99000 ratio "
                              "0.990000 rate 9801 msg/s\n"),
                  "%s", out);
    ck_assert_msg(strstr(out, "errors: rate_limited=2 close_1006=1\n"), "%s", out);
    ck_assert_msg(strstr(out, "bench cpu 4.00 s (40% of the window)\n"), "%s", out);
    ck_assert_msg(strstr(out, "node 222: cpu 0.25 s rss 2000 kB\n"), "%s", out);
    ck_assert_msg(strstr(out, "node cpu per delivered message: 7.652 us\n"), "%s", out);
    free(out);
    free(r);
}
END_TEST

START_TEST(test_report_error_table)
{
    for (int i = 0; i < REPORT_N_ERRS; i++)
        ck_assert_int_eq(report_err_index(report_err_names[i]), i);
    ck_assert_int_eq(report_err_index("no_such_code"), REPORT_N_ERRS - 1);
    ck_assert_int_eq(report_err_index(""), REPORT_N_ERRS - 1);

    int codes[BENCH_MAX_CODES][2] = {{0}};
    report_close_code_add(codes, 1006, 1);
    report_close_code_add(codes, 1000, 2);
    report_close_code_add(codes, 1006, 3);
    ck_assert_int_eq(codes[0][0], 1006);
    ck_assert_int_eq(codes[0][1], 4);
    ck_assert_int_eq(codes[1][0], 1000);
    ck_assert_int_eq(codes[1][1], 2);
    ck_assert_int_eq(codes[2][1], 0);
    for (int c = 0; c < BENCH_MAX_CODES + 4; c++)
        report_close_code_add(codes, 4000 + c, 1);
    /* Full: the table holds BENCH_MAX_CODES distinct codes and drops the rest. */
    int total = 0;
    for (int i = 0; i < BENCH_MAX_CODES; i++)
        total += codes[i][1];
    ck_assert_int_eq(total, 4 + 2 + BENCH_MAX_CODES - 2);
}
END_TEST

static Suite *bench_suite(void)
{
    Suite *s = suite_create("relay-bench");
    TCase *h = tcase_create("hist");
    tcase_add_test(h, test_hist_empty);
    tcase_add_test(h, test_hist_exact_below_128);
    tcase_add_test(h, test_hist_relative_error_bound);
    tcase_add_test(h, test_hist_uniform_percentiles);
    tcase_add_test(h, test_hist_bimodal_tail);
    tcase_add_test(h, test_hist_overflow_lands_in_last_bucket);
    tcase_add_test(h, test_hist_merge_equals_single);
    suite_add_tcase(s, h);

    TCase *m = tcase_create("bench_msg");
    tcase_add_loop_test(m, test_msg_binary_round_trip, 0,
                        (int)(6 * (sizeof stamps / sizeof stamps[0])));
    tcase_add_test(m, test_msg_json_request);
    tcase_add_loop_test(m, test_msg_batch, 0, 2);
    tcase_add_test(m, test_msg_truncation_rejected);
    tcase_add_test(m, test_msg_bad_stamps_rejected);
    tcase_add_test(m, test_msg_malformed_maps_rejected);
    tcase_add_test(m, test_msg_replies);
    tcase_add_test(m, test_msg_auth);
    suite_add_tcase(s, m);

    TCase *p = tcase_create("procstat");
    tcase_set_timeout(p, 20);
    tcase_add_test(p, test_procstat_self_monotonic);
    tcase_add_test(p, test_procstat_missing_pid);
    tcase_add_test(p, test_procstat_name_with_parens);
    tcase_add_test(p, test_procstat_rss_follows_memory);
    suite_add_tcase(s, p);

    TCase *r = tcase_create("report");
    tcase_add_test(r, test_report_json_fields);
    tcase_add_test(r, test_report_json_empty);
    tcase_add_test(r, test_report_text);
    tcase_add_test(r, test_report_error_table);
    suite_add_tcase(s, r);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(bench_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
