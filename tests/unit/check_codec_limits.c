/*
 * check_codec_limits.c: the codec's bounds. Nesting depth, hostile msgpack headers declaring
 * sizes the bytes cannot back (refused quickly and without allocating), and linear cost on large
 * valid input.
 */
#include <stdatomic.h>

#include "codec_testutil.h"

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

static Suite *codec_limits_suite(void)
{
    Suite *s = suite_create("codec-limits");
    TCase *depth = tcase_create("depth");
    tcase_add_test(depth, test_depth_limit);
    suite_add_tcase(s, depth);
    TCase *hostile = tcase_create("hostile");
    tcase_add_test(hostile, test_hostile_headers);
    tcase_add_test(hostile, test_binary_operation_no_allocation);
    tcase_add_test(hostile, test_large_valid_array_is_linear);
    tcase_set_timeout(hostile, 30);
    suite_add_tcase(s, hostile);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(codec_limits_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
