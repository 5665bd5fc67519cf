/*
 * 02 auth: authenticate and its failures (4001), the pre-auth gate, the auth timeout (4002),
 * token expiry mid-session (4003) and re-authentication.
 */
#include "harness.h"

#include <jwt.h>
#include <stdlib.h>
#include <string.h>

#include "relay/clock.h"

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

START_TEST(success_carries_every_field)
{
    wsc_sync *c = h_ws(node, "doc1");
    json_t *r = h_auth_named(c, "alice", "Alice Doe");
    ck_assert_str_eq(h_str(r, "user_id"), "alice");
    ck_assert_str_eq(h_str(r, "user_name"), "Alice Doe");
    ck_assert_int_gt(strlen(h_str(r, "session_id")), 0);
    ck_assert_int_gt(strlen(h_str(r, "color")), 0);
    ck_assert_int_gt(strlen(h_str(r, "resume_token")), 0);
    json_decref(r);
    h_roundtrip(c);
    wsc_sync_destroy(c);
}
END_TEST

START_TEST(user_name_defaults_to_sub_and_sessions_are_distinct)
{
    wsc_sync *a = h_ws(node, "doc1");
    wsc_sync *b = h_ws(node, "doc1");
    json_t *ra = h_auth(a, "bob");
    json_t *rb = h_auth(b, "bob");
    ck_assert_str_eq(h_str(ra, "user_name"), "bob");
    ck_assert_str_ne(h_str(ra, "session_id"), h_str(rb, "session_id"));
    ck_assert_str_ne(h_str(ra, "resume_token"), h_str(rb, "resume_token"));
    /* The default color is a function of user_id. */
    ck_assert_str_eq(h_str(ra, "color"), h_str(rb, "color"));
    json_decref(ra);
    json_decref(rb);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
}
END_TEST

START_TEST(color_query_parameter_wins)
{
    wsc_sync_opts o = {0};
    o.query = "color=%23ff8800";
    wsc_sync *c = h_ws_opts(node, "doc1", &o);
    json_t *r = h_auth(c, "carol");
    ck_assert_str_eq(h_str(r, "color"), "#ff8800");
    json_decref(r);
    json_t *j = h_join(c);
    json_t *me = json_array_get(h_field(j, "users"), 0);
    ck_assert_str_eq(h_str(me, "color"), "#ff8800");
    json_decref(j);
    wsc_sync_destroy(c);
}
END_TEST

/* Sends authenticate with the given JSON fields and expects auth_result false + close 4001. */
static void expect_auth_failure(const char *fields, const char *what)
{
    wsc_sync *c = h_ws(node, "doc1");
    h_send(c, "{\"type\":\"authenticate\"%s%s}", fields[0] ? "," : "", fields);
    json_t *r = h_expect(c, WSC_TEXT, "auth_result");
    ck_assert_msg(json_is_false(json_object_get(r, "success")), "%s: %s", what, h_dump(r));
    ck_assert_msg(json_is_string(json_object_get(r, "error")), "%s: %s", what, h_dump(r));
    json_decref(r);
    int code = h_expect_close(c);
    ck_assert_msg(code == 4001, "%s: closed with %d, not 4001", what, code);
    wsc_sync_destroy(c);
}

/* As above with a token string. */
static void expect_token_failure(const char *token, const char *what)
{
    ck_assert_msg(token != NULL, "%s: could not mint the token", what);
    char fields[4096];
    snprintf(fields, sizeof(fields), "\"token\":\"%s\"", token);
    expect_auth_failure(fields, what);
}

START_TEST(missing_or_non_string_token_fails_with_4001)
{
    expect_auth_failure("", "no token");
    expect_auth_failure("\"token\":42", "numeric token");
    expect_auth_failure("\"token\":null", "null token");
    expect_auth_failure("\"token\":[\"a\"]", "array token");
}
END_TEST

START_TEST(invalid_tokens_fail_with_4001)
{
    char claims[512];
    int64_t now = clock_wall_s();
    char *t;

    expect_token_failure("not.a.jwt", "garbage");

    snprintf(claims, sizeof(claims), "{\"exp\":%lld}", (long long)now + 3600);
    t = h_token_claims(claims, H_SECRET);
    expect_token_failure(t, "no sub");
    free(t);

    snprintf(claims, sizeof(claims), "{\"sub\":\"a\"}");
    t = h_token_claims(claims, H_SECRET);
    expect_token_failure(t, "no exp");
    free(t);

    snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"exp\":%lld,\"docs\":\"doc1\"}",
             (long long)now + 3600);
    t = h_token_claims(claims, H_SECRET);
    expect_token_failure(t, "docs is a string");
    free(t);

    snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"exp\":%lld,\"docs\":[\"doc1\",7]}",
             (long long)now + 3600);
    t = h_token_claims(claims, H_SECRET);
    expect_token_failure(t, "docs holds a number");
    free(t);

    snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"exp\":%lld}", (long long)now + 3600);
    t = h_token_claims(claims, "some-other-secret-of-decent-length");
    expect_token_failure(t, "bad signature");
    free(t);

    snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"exp\":%lld}", (long long)now - 120);
    t = h_token_claims(claims, H_SECRET);
    expect_token_failure(t, "expired beyond the leeway");
    free(t);

    snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"exp\":%lld,\"nbf\":%lld}",
             (long long)now + 3600, (long long)now + 600);
    t = h_token_claims(claims, H_SECRET);
    expect_token_failure(t, "not yet valid");
    free(t);

    snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"exp\":%lld}", (long long)now + 3600);
    t = h_token_alg_none(claims);
    expect_token_failure(t, "alg none");
    free(t);

    /* Another HMAC algorithm with the right secret is still the wrong algorithm. */
    jwt_t *jwt = NULL;
    ck_assert_int_eq(jwt_new(&jwt), 0);
    ck_assert_int_eq(jwt_add_grants_json(jwt, claims), 0);
    ck_assert_int_eq(
        jwt_set_alg(jwt, JWT_ALG_HS384, (const unsigned char *)H_SECRET, (int)strlen(H_SECRET)), 0);
    t = jwt_encode_str(jwt);
    jwt_free(jwt);
    expect_token_failure(t, "HS384 instead of HS256");
    free(t);
}
END_TEST

START_TEST(expiry_within_leeway_and_nbf_in_past_are_accepted)
{
    char claims[512];
    int64_t now = clock_wall_s();
    snprintf(claims, sizeof(claims), "{\"sub\":\"late\",\"exp\":%lld,\"nbf\":%lld}",
             (long long)now - 5, (long long)now - 60);
    char *t = h_token_claims(claims, H_SECRET);
    wsc_sync *c = h_ws(node, "doc1");
    h_send(c, "{\"type\":\"authenticate\",\"token\":\"%s\"}", t);
    free(t);
    json_t *r = h_expect(c, WSC_TEXT, "auth_result");
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "%s", h_dump(r));
    json_decref(r);
    wsc_sync_destroy(c);
}
END_TEST

START_TEST(ping_works_before_auth)
{
    wsc_sync *c = h_ws(node, "doc1");
    h_roundtrip(c);
    h_roundtrip(c);
    wsc_sync_destroy(c);
}
END_TEST

START_TEST(requests_before_auth_are_refused_and_connection_stays_open)
{
    wsc_sync *c = h_ws(node, "doc1");
    h_send(c, "{\"type\":");
    json_decref(h_expect_error(c, "bad_request"));
    h_send(c, "{\"type\":\"no_such_thing\"}");
    json_decref(h_expect_error(c, "unknown_type"));
    static const char *const gated[] = {
        "{\"type\":\"join_document\"}",
        "{\"type\":\"leave_document\"}",
        "{\"type\":\"operation\",\"payload\":1}",
        "{\"type\":\"cursor\",\"cursor\":{\"x\":1}}",
        "{\"type\":\"sync_request\",\"since\":0}",
    };
    for (size_t i = 0; i < sizeof(gated) / sizeof(gated[0]); i++) {
        h_send(c, "%s", gated[i]);
        json_decref(h_expect_error(c, "unauthenticated"));
    }
    h_roundtrip(c);
    /* Still able to authenticate afterwards. */
    json_decref(h_auth(c, "dave"));
    wsc_sync_destroy(c);
}
END_TEST

START_TEST(auth_timeout_closes_with_4002)
{
    h_node *n = h_node_start("--auth-timeout", "1", NULL);
    wsc_sync *idle = h_ws(n, "doc1");
    wsc_sync *authed = h_ws(n, "doc1");
    json_decref(h_auth(authed, "erin"));
    int64_t t0 = clock_mono_ms();
    ck_assert_int_eq(h_expect_close(idle), 4002);
    ck_assert_int_ge(clock_mono_ms() - t0, 300);
    /* An authenticated connection is not subject to the auth timeout. */
    h_roundtrip(authed);
    h_expect_quiet(authed, 600);
    h_roundtrip(authed);
    wsc_sync_destroy(idle);
    wsc_sync_destroy(authed);
    h_node_finish(n);
}
END_TEST

START_TEST(token_expiry_mid_session_closes_with_4003)
{
    h_node *n = h_node_start("--jwt-leeway", "0", NULL);
    wsc_sync *c = h_ws(n, "doc1");
    char *t = h_token("frank", NULL, 2);
    h_send(c, "{\"type\":\"authenticate\",\"token\":\"%s\"}", t);
    free(t);
    json_t *r = h_expect(c, WSC_TEXT, "auth_result");
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "%s", h_dump(r));
    json_decref(r);
    json_decref(h_join(c));
    int code = 0;
    ck_assert_int_eq(wsc_sync_wait_close(c, 6000, &code), 0);
    ck_assert_int_eq(code, 4003);
    wsc_sync_destroy(c);
    h_node_finish(n);
}
END_TEST

START_TEST(reauthenticate_same_sub_refreshes_expiry)
{
    h_node *n = h_node_start("--jwt-leeway", "0", NULL);
    wsc_sync *c = h_ws(n, "doc1");
    char *t = h_token("gina", NULL, 2);
    h_send(c, "{\"type\":\"authenticate\",\"token\":\"%s\"}", t);
    free(t);
    json_t *first = h_expect(c, WSC_TEXT, "auth_result");
    ck_assert_msg(json_is_true(json_object_get(first, "success")), "%s", h_dump(first));
    json_t *second = h_auth(c, "gina");
    ck_assert_str_eq(h_str(second, "user_id"), "gina");
    ck_assert_str_eq(h_str(second, "session_id"), h_str(first, "session_id"));
    ck_assert_str_ne(h_str(second, "resume_token"), h_str(first, "resume_token"));
    json_decref(first);
    json_decref(second);
    /* Past the first token's expiry the connection is still open and usable. */
    h_expect_quiet(c, 3500);
    h_roundtrip(c);
    json_decref(h_join(c));
    wsc_sync_destroy(c);
    h_node_finish(n);
}
END_TEST

START_TEST(reauthenticate_other_sub_is_forbidden)
{
    wsc_sync *c = h_ws(node, "doc1");
    json_decref(h_auth(c, "hank"));
    char *t = h_token("ivan", NULL, 3600);
    h_send(c, "{\"type\":\"authenticate\",\"token\":\"%s\",\"ref\":\"r1\"}", t);
    free(t);
    json_t *e = h_expect_error(c, "forbidden");
    ck_assert_str_eq(h_str(e, "ref"), "r1");
    json_decref(e);
    /* Still hank. */
    json_t *j = h_join(c);
    json_t *me = json_array_get(h_field(j, "users"), 0);
    ck_assert_str_eq(h_str(me, "user_id"), "hank");
    json_decref(j);
    wsc_sync_destroy(c);
}
END_TEST

/* Authenticates on n with a token of the given claims; returns whether it succeeded (a failure
 * must also close with 4001). */
static bool auth_with_claims(h_node *n, const char *claims)
{
    char *t = h_token_claims(claims, H_SECRET);
    ck_assert_ptr_nonnull(t);
    wsc_sync *c = h_ws(n, "doc1");
    h_send(c, "{\"type\":\"authenticate\",\"token\":\"%s\"}", t);
    free(t);
    json_t *r = h_expect(c, WSC_TEXT, "auth_result");
    bool ok = json_is_true(json_object_get(r, "success"));
    json_decref(r);
    if (!ok)
        ck_assert_int_eq(h_expect_close(c), 4001);
    wsc_sync_destroy(c);
    return ok;
}

START_TEST(audience_and_issuer_are_checked_when_configured)
{
    h_node *n =
        h_node_start("--jwt-audience", "relay", "--jwt-issuer", "https://auth.example", NULL);
    long long exp = (long long)clock_wall_s() + 3600;
    char claims[512];
    snprintf(claims, sizeof(claims),
             "{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"relay\",\"iss\":\"https://auth.example\"}",
             exp);
    ck_assert(auth_with_claims(n, claims));
    snprintf(claims, sizeof(claims),
             "{\"sub\":\"a\",\"exp\":%lld,\"aud\":[\"other\",\"relay\"],"
             "\"iss\":\"https://auth.example\"}",
             exp);
    ck_assert(auth_with_claims(n, claims));
    snprintf(claims, sizeof(claims),
             "{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"other\",\"iss\":\"https://auth.example\"}",
             exp);
    ck_assert(!auth_with_claims(n, claims));
    snprintf(claims, sizeof(claims),
             "{\"sub\":\"a\",\"exp\":%lld,\"iss\":\"https://auth.example\"}", exp);
    ck_assert(!auth_with_claims(n, claims));
    snprintf(claims, sizeof(claims),
             "{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"relay\",\"iss\":\"https://evil.example\"}",
             exp);
    ck_assert(!auth_with_claims(n, claims));
    snprintf(claims, sizeof(claims), "{\"sub\":\"a\",\"exp\":%lld,\"aud\":\"relay\"}", exp);
    ck_assert(!auth_with_claims(n, claims));
    h_node_finish(n);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("02_auth");
    TCase *tc = tcase_create("auth");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, success_carries_every_field);
    tcase_add_test(tc, user_name_defaults_to_sub_and_sessions_are_distinct);
    tcase_add_test(tc, color_query_parameter_wins);
    tcase_add_test(tc, missing_or_non_string_token_fails_with_4001);
    tcase_add_test(tc, invalid_tokens_fail_with_4001);
    tcase_add_test(tc, expiry_within_leeway_and_nbf_in_past_are_accepted);
    tcase_add_test(tc, ping_works_before_auth);
    tcase_add_test(tc, requests_before_auth_are_refused_and_connection_stays_open);
    tcase_add_test(tc, reauthenticate_other_sub_is_forbidden);
    suite_add_tcase(s, tc);
    TCase *custom = tcase_create("custom_config");
    tcase_set_timeout(custom, H_TCASE_TIMEOUT);
    tcase_add_test(custom, auth_timeout_closes_with_4002);
    tcase_add_test(custom, token_expiry_mid_session_closes_with_4003);
    tcase_add_test(custom, reauthenticate_same_sub_refreshes_expiry);
    tcase_add_test(custom, audience_and_issuer_are_checked_when_configured);
    suite_add_tcase(s, custom);
    return h_run_suite(s);
}
