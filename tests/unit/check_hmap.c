/*
 * check_hmap.c: the byte-string hash map: put/get/del/replace, growth through many entries,
 * iteration that visits every entry once, and keys that are bytes, not C strings.
 */
#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/hmap.h"

static hmap *m;

static void setup(void)
{
    m = hmap_create();
    ck_assert_ptr_nonnull(m);
}

static void teardown(void)
{
    hmap_destroy(m);
    m = NULL;
}

/* Values are small integers disguised as pointers; the map never dereferences them. */
static void *val(uintptr_t v)
{
    return (void *)(v + 1); /* never NULL, which means "absent" */
}

static void put_s(const char *k, uintptr_t v)
{
    ck_assert_int_eq(hmap_put(m, k, strlen(k), val(v)), 0);
}

static void *get_s(const char *k)
{
    return hmap_get(m, k, strlen(k));
}

START_TEST(test_put_get_del_replace)
{
    ck_assert_uint_eq(hmap_count(m), 0);
    ck_assert_ptr_null(get_s("a"));
    ck_assert_ptr_null(hmap_del(m, "a", 1));

    put_s("a", 1);
    put_s("b", 2);
    put_s("ab", 3);
    ck_assert_uint_eq(hmap_count(m), 3);
    ck_assert_ptr_eq(get_s("a"), val(1));
    ck_assert_ptr_eq(get_s("b"), val(2));
    ck_assert_ptr_eq(get_s("ab"), val(3));
    ck_assert_ptr_null(get_s("ba"));
    /* A key is its bytes and its length: neither a longer nor a shorter one matches. */
    ck_assert_ptr_null(hmap_get(m, "abc", 3));
    ck_assert_ptr_null(hmap_get(m, "ab", 0));

    /* Replace: same count, new value. */
    put_s("a", 10);
    ck_assert_uint_eq(hmap_count(m), 3);
    ck_assert_ptr_eq(get_s("a"), val(10));

    ck_assert_ptr_eq(hmap_del(m, "a", 1), val(10));
    ck_assert_uint_eq(hmap_count(m), 2);
    ck_assert_ptr_null(get_s("a"));
    ck_assert_ptr_null(hmap_del(m, "a", 1)); /* twice: absent */
    ck_assert_uint_eq(hmap_count(m), 2);
    ck_assert_ptr_eq(get_s("ab"), val(3));

    /* A deleted key can come back. */
    put_s("a", 11);
    ck_assert_ptr_eq(get_s("a"), val(11));
    ck_assert_uint_eq(hmap_count(m), 3);
}
END_TEST

/* The map copies keys: the caller's buffer may change or go away. */
START_TEST(test_keys_copied)
{
    char key[16];
    snprintf(key, sizeof key, "doc-42");
    ck_assert_int_eq(hmap_put(m, key, strlen(key), val(42)), 0);
    memset(key, 'z', sizeof key - 1);
    ck_assert_ptr_eq(get_s("doc-42"), val(42));
}
END_TEST

/* Values are borrowed: destroying the map leaves them to their owner. */
START_TEST(test_values_borrowed)
{
    int *owned = malloc(sizeof *owned);
    ck_assert_ptr_nonnull(owned);
    *owned = 7;
    ck_assert_int_eq(hmap_put(m, "k", 1, owned), 0);
    hmap_destroy(m);
    m = NULL;
    ck_assert_int_eq(*owned, 7); /* still ours (ASan would flag a use after free) */
    free(owned);
    hmap_destroy(NULL);
}
END_TEST

START_TEST(test_keys_with_nul_bytes)
{
    static const char k1[] = {'a', '\0', 'b'};
    static const char k2[] = {'a', '\0', 'c'};
    static const char k3[] = {'a'};
    static const char k4[] = {'\0'};
    static const char k5[] = {'\0', '\0'};
    ck_assert_int_eq(hmap_put(m, k1, sizeof k1, val(1)), 0);
    ck_assert_int_eq(hmap_put(m, k2, sizeof k2, val(2)), 0);
    ck_assert_int_eq(hmap_put(m, k3, sizeof k3, val(3)), 0);
    ck_assert_int_eq(hmap_put(m, k4, sizeof k4, val(4)), 0);
    ck_assert_int_eq(hmap_put(m, k5, sizeof k5, val(5)), 0);
    ck_assert_int_eq(hmap_put(m, "", 0, val(6)), 0); /* the empty key is a key too */
    ck_assert_uint_eq(hmap_count(m), 6);
    ck_assert_ptr_eq(hmap_get(m, k1, sizeof k1), val(1));
    ck_assert_ptr_eq(hmap_get(m, k2, sizeof k2), val(2));
    ck_assert_ptr_eq(hmap_get(m, k3, sizeof k3), val(3));
    ck_assert_ptr_eq(hmap_get(m, k4, sizeof k4), val(4));
    ck_assert_ptr_eq(hmap_get(m, k5, sizeof k5), val(5));
    ck_assert_ptr_eq(hmap_get(m, "", 0), val(6));
    ck_assert_ptr_eq(hmap_del(m, k1, sizeof k1), val(1));
    ck_assert_ptr_null(hmap_get(m, k1, sizeof k1));
    ck_assert_ptr_eq(hmap_get(m, k2, sizeof k2), val(2));
    ck_assert_ptr_eq(hmap_get(m, k3, sizeof k3), val(3));
}
END_TEST

START_TEST(test_hash_is_fnv1a)
{
    /* Published FNV-1a 64 test vectors: colors and any cross-node use depend on these values. */
    ck_assert_uint_eq(hmap_hash("", 0), UINT64_C(0xcbf29ce484222325));
    ck_assert_uint_eq(hmap_hash("a", 1), UINT64_C(0xaf63dc4c8601ec8c));
    ck_assert_uint_eq(hmap_hash("foobar", 6), UINT64_C(0x85944171f73967e8));
}
END_TEST

static void key_of(uint32_t i, char *buf, size_t len, size_t *klen)
{
    *klen = (size_t)snprintf(buf, len, "key-%u", i);
}

typedef struct {
    uint8_t *seen;
    size_t n;
    size_t visits;
    size_t stop_after; /* 0: never stop */
} each_state;

static int each_fn(const void *key, size_t klen, void *value, void *ud)
{
    each_state *st = ud;
    uintptr_t v = (uintptr_t)value - 1;
    char expect[32];
    size_t elen;
    ck_assert_uint_lt(v, st->n);
    key_of((uint32_t)v, expect, sizeof expect, &elen);
    ck_assert_uint_eq(klen, elen);
    ck_assert_int_eq(memcmp(key, expect, klen), 0);
    st->seen[v]++;
    st->visits++;
    return st->stop_after && st->visits == st->stop_after;
}

/* 10,000 entries: every one retrievable as the map grows, every one visited exactly once, and
 * deletes of half of them leave exactly the other half. */
START_TEST(test_growth_and_each)
{
    enum { N = 10000 };
    char k[32];
    size_t kl;
    for (uint32_t i = 0; i < N; i++) {
        key_of(i, k, sizeof k, &kl);
        ck_assert_int_eq(hmap_put(m, k, kl, val(i)), 0);
        ck_assert_uint_eq(hmap_count(m), i + 1);
        /* Spot-check earlier keys across the growth steps. */
        if ((i & (i + 1)) == 0) {
            for (uint32_t j = 0; j <= i; j += 1 + i / 64) {
                key_of(j, k, sizeof k, &kl);
                ck_assert_ptr_eq(hmap_get(m, k, kl), val(j));
            }
        }
    }
    for (uint32_t i = 0; i < N; i++) {
        key_of(i, k, sizeof k, &kl);
        ck_assert_ptr_eq(hmap_get(m, k, kl), val(i));
    }

    each_state st = {.seen = calloc(N, 1), .n = N};
    ck_assert_ptr_nonnull(st.seen);
    hmap_each(m, each_fn, &st);
    ck_assert_uint_eq(st.visits, N);
    for (size_t i = 0; i < N; i++)
        ck_assert_uint_eq(st.seen[i], 1);

    /* Early stop: fn returning non-zero ends the walk. */
    memset(st.seen, 0, N);
    st.visits = 0;
    st.stop_after = 17;
    hmap_each(m, each_fn, &st);
    ck_assert_uint_eq(st.visits, 17);

    for (uint32_t i = 0; i < N; i += 2) {
        key_of(i, k, sizeof k, &kl);
        ck_assert_ptr_eq(hmap_del(m, k, kl), val(i));
    }
    ck_assert_uint_eq(hmap_count(m), N / 2);
    for (uint32_t i = 0; i < N; i++) {
        key_of(i, k, sizeof k, &kl);
        if (i % 2)
            ck_assert_ptr_eq(hmap_get(m, k, kl), val(i));
        else
            ck_assert_ptr_null(hmap_get(m, k, kl));
    }
    memset(st.seen, 0, N);
    st.visits = 0;
    st.stop_after = 0;
    hmap_each(m, each_fn, &st);
    ck_assert_uint_eq(st.visits, N / 2);
    for (size_t i = 0; i < N; i++)
        ck_assert_uint_eq(st.seen[i], i % 2);
    free(st.seen);
}
END_TEST

static int count_fn(const void *key, size_t klen, void *value, void *ud)
{
    (void)key, (void)klen, (void)value;
    (*(size_t *)ud)++;
    return 0;
}

START_TEST(test_each_empty)
{
    size_t n = 0;
    hmap_each(m, count_fn, &n);
    ck_assert_uint_eq(n, 0);
}
END_TEST

/* Keys that collide in the low bits (same bucket) stay distinct: many keys sharing a long prefix
 * and differing only at the end, deleted from the middle of their chains. */
START_TEST(test_chains)
{
    enum { N = 2000 };
    char k[64];
    for (uint32_t i = 0; i < N; i++) {
        int kl = snprintf(k, sizeof k, "documents/shared/prefix/%08u", i);
        ck_assert_int_eq(hmap_put(m, k, (size_t)kl, val(i)), 0);
    }
    for (uint32_t i = 0; i < N; i += 3) {
        int kl = snprintf(k, sizeof k, "documents/shared/prefix/%08u", i);
        ck_assert_ptr_eq(hmap_del(m, k, (size_t)kl), val(i));
    }
    for (uint32_t i = 0; i < N; i++) {
        int kl = snprintf(k, sizeof k, "documents/shared/prefix/%08u", i);
        if (i % 3 == 0)
            ck_assert_ptr_null(hmap_get(m, k, (size_t)kl));
        else
            ck_assert_ptr_eq(hmap_get(m, k, (size_t)kl), val(i));
    }
    ck_assert_uint_eq(hmap_count(m), N - (N + 2) / 3);
}
END_TEST

static Suite *hmap_suite(void)
{
    Suite *s = suite_create("hmap");
    TCase *tc = tcase_create("hmap");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_put_get_del_replace);
    tcase_add_test(tc, test_keys_copied);
    tcase_add_test(tc, test_values_borrowed);
    tcase_add_test(tc, test_keys_with_nul_bytes);
    tcase_add_test(tc, test_hash_is_fnv1a);
    tcase_add_test(tc, test_growth_and_each);
    tcase_add_test(tc, test_each_empty);
    tcase_add_test(tc, test_chains);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(hmap_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
