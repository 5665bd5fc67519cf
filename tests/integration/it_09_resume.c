/*
 * 09 resume: authenticate {session_id, resume_token} restores a session (same session_id, user,
 * color, token expiry and docs) after a disconnect; each auth_result rotates the resume token;
 * resuming a session that is still connected closes the old connection with 4004; expired or
 * wrong resume data fails like any bad authentication (auth_result false, 4001).
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#include "relay/clock.h"

/* Sends a resume request and returns the auth_result. */
static json_t *resume(wsc_sync *c, const char *session_id, const char *resume_token)
{
    h_send(c, "{\"type\":\"authenticate\",\"session_id\":\"%s\",\"resume_token\":\"%s\"}",
           session_id, resume_token);
    return h_expect(c, WSC_TEXT, "auth_result");
}

/* Expects a failed resume: auth_result false and close 4001. */
static void expect_resume_failure(h_node *n, const char *session_id, const char *token,
                                  const char *what)
{
    wsc_sync *c = h_ws(n, "doc1");
    json_t *r = resume(c, session_id, token);
    ck_assert_msg(json_is_false(json_object_get(r, "success")), "%s: %s", what, h_dump(r));
    ck_assert_msg(json_is_string(json_object_get(r, "error")), "%s: %s", what, h_dump(r));
    json_decref(r);
    int code = h_expect_close(c);
    ck_assert_msg(code == 4001, "%s: closed with %d", what, code);
    wsc_sync_destroy(c);
}

START_TEST(resume_after_disconnect_restores_the_session)
{
    h_node *n = h_node_start(NULL);
    wsc_sync_opts o = {0};
    o.query = "color=%2300aa00";
    wsc_sync *c1 = h_ws_opts(n, "doc1", &o);
    json_t *first = h_auth_named(c1, "alice", "Alice");
    json_decref(h_join(c1));
    wsc_sync_destroy(c1);

    wsc_sync *c2 = h_ws(n, "doc1");
    json_t *r = resume(c2, h_str(first, "session_id"), h_str(first, "resume_token"));
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "%s", h_dump(r));
    ck_assert_str_eq(h_str(r, "session_id"), h_str(first, "session_id"));
    ck_assert_str_eq(h_str(r, "user_id"), "alice");
    ck_assert_str_eq(h_str(r, "user_name"), "Alice");
    ck_assert_str_eq(h_str(r, "color"), "#00aa00");
    ck_assert_str_ne(h_str(r, "resume_token"), h_str(first, "resume_token"));
    /* A resumed session is authenticated. */
    json_t *j = h_join(c2);
    json_t *users = h_field(j, "users");
    ck_assert_int_eq(json_array_size(users), 1);
    ck_assert_str_eq(h_str(json_array_get(users, 0), "session_id"), h_str(first, "session_id"));
    json_decref(j);

    /* The first token was replaced by the resume's auth_result. */
    wsc_sync_destroy(c2);
    expect_resume_failure(n, h_str(first, "session_id"), h_str(first, "resume_token"),
                          "rotated token");
    /* The latest still works. */
    wsc_sync *c3 = h_ws(n, "doc1");
    json_t *r3 = resume(c3, h_str(r, "session_id"), h_str(r, "resume_token"));
    ck_assert_msg(json_is_true(json_object_get(r3, "success")), "%s", h_dump(r3));
    json_decref(r3);
    json_decref(r);
    json_decref(first);
    wsc_sync_destroy(c3);
    h_node_finish(n);
}
END_TEST

START_TEST(reauthentication_rotates_the_resume_token)
{
    h_node *n = h_node_start(NULL);
    wsc_sync *c = h_ws(n, "doc1");
    json_t *first = h_auth(c, "bob");
    json_t *second = h_auth(c, "bob");
    wsc_sync_destroy(c);
    expect_resume_failure(n, h_str(first, "session_id"), h_str(first, "resume_token"),
                          "token replaced by re-authentication");
    wsc_sync *c2 = h_ws(n, "doc1");
    json_t *r = resume(c2, h_str(second, "session_id"), h_str(second, "resume_token"));
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "%s", h_dump(r));
    json_decref(r);
    json_decref(first);
    json_decref(second);
    wsc_sync_destroy(c2);
    h_node_finish(n);
}
END_TEST

START_TEST(resume_while_connected_closes_the_old_connection_4004)
{
    h_node *n = h_node_start(NULL);
    wsc_sync *old = h_ws(n, "doc1");
    json_t *first = h_auth(old, "carol");
    json_decref(h_join(old));
    wsc_sync *watcher = h_joined(n, "doc1", "watcher");
    json_decref(h_expect(old, WSC_BINARY, "user_joined"));

    wsc_sync *fresh = h_ws(n, "doc1");
    json_t *r = resume(fresh, h_str(first, "session_id"), h_str(first, "resume_token"));
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "%s", h_dump(r));
    ck_assert_str_eq(h_str(r, "session_id"), h_str(first, "session_id"));
    json_decref(r);
    ck_assert_int_eq(h_expect_close(old), 4004);
    /* The new connection carries the session. */
    json_t *j = h_join(fresh);
    json_decref(j);
    h_send(fresh, "{\"type\":\"operation\",\"payload\":1}");
    json_decref(h_expect(fresh, WSC_TEXT, "ack"));
    /* The watcher sees carol's operation from the same session_id. */
    json_t *op = NULL;
    for (int i = 0; i < 4 && !op; i++) {
        wsc_msg m;
        ck_assert_int_eq(wsc_sync_recv(watcher, H_WAIT_MS, &m), WSC_SYNC_OK);
        const char *type = h_str(m.json, "type");
        if (strcmp(type, "operation") == 0)
            op = json_incref(m.json);
        else
            ck_assert_msg(strcmp(type, "user_left") == 0 || strcmp(type, "user_joined") == 0, "%s",
                          h_dump(m.json));
        wsc_msg_clear(&m);
    }
    ck_assert_ptr_nonnull(op);
    ck_assert_str_eq(h_str(op, "session_id"), h_str(first, "session_id"));
    json_decref(op);
    json_decref(first);
    wsc_sync_destroy(old);
    wsc_sync_destroy(fresh);
    wsc_sync_destroy(watcher);
    h_node_finish(n);
}
END_TEST

START_TEST(wrong_resume_data_fails_with_4001)
{
    h_node *n = h_node_start(NULL);
    wsc_sync *c = h_ws(n, "doc1");
    json_t *first = h_auth(c, "dave");
    wsc_sync_destroy(c);
    expect_resume_failure(n, h_str(first, "session_id"), "not-the-token", "wrong token");
    expect_resume_failure(n, "no-such-session", h_str(first, "resume_token"), "unknown session");
    json_decref(first);
    h_node_finish(n);
}
END_TEST

START_TEST(resume_expires_after_resume_ttl)
{
    h_node *n = h_node_start("--resume-ttl", "1", NULL);
    wsc_sync *c = h_ws(n, "doc1");
    json_t *first = h_auth(c, "erin");
    wsc_sync_destroy(c);
    /* Within the TTL it works... */
    wsc_sync *c2 = h_ws(n, "doc1");
    json_t *r = resume(c2, h_str(first, "session_id"), h_str(first, "resume_token"));
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "%s", h_dump(r));
    wsc_sync_destroy(c2);
    /* ...and 2.5 s after the disconnect it does not. */
    int64_t t0 = clock_mono_ms();
    wsc_sync *probe = h_ws(n, "doc1");
    h_expect_quiet(probe, 2500 - (int)(clock_mono_ms() - t0));
    wsc_sync_destroy(probe);
    expect_resume_failure(n, h_str(r, "session_id"), h_str(r, "resume_token"), "expired");
    json_decref(r);
    json_decref(first);
    h_node_finish(n);
}
END_TEST

START_TEST(resume_keeps_token_expiry_and_docs)
{
    h_node *n = h_node_start("--jwt-leeway", "0", NULL);
    char claims[256];
    snprintf(claims, sizeof(claims), "{\"sub\":\"fay\",\"exp\":%lld,\"docs\":[\"notes\"]}",
             (long long)clock_wall_s() + 3);
    char *t = h_token_claims(claims, H_SECRET);
    wsc_sync *c = h_ws(n, "notes");
    h_send(c, "{\"type\":\"authenticate\",\"token\":\"%s\"}", t);
    free(t);
    json_t *first = h_expect(c, WSC_TEXT, "auth_result");
    ck_assert_msg(json_is_true(json_object_get(first, "success")), "%s", h_dump(first));
    wsc_sync_destroy(c);

    /* Resumed on another document: the docs claim still applies. */
    wsc_sync *c2 = h_ws(n, "doc1");
    json_t *r = resume(c2, h_str(first, "session_id"), h_str(first, "resume_token"));
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "%s", h_dump(r));
    h_send(c2, "{\"type\":\"join_document\"}");
    json_decref(h_expect_error(c2, "forbidden"));
    /* And the original token's expiry: closed with 4003. */
    int code = 0;
    ck_assert_int_eq(wsc_sync_wait_close(c2, 6000, &code), 0);
    ck_assert_int_eq(code, 4003);
    json_decref(r);
    json_decref(first);
    wsc_sync_destroy(c2);
    h_node_finish(n);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("09_resume");
    TCase *tc = tcase_create("resume");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_test(tc, resume_after_disconnect_restores_the_session);
    tcase_add_test(tc, reauthentication_rotates_the_resume_token);
    tcase_add_test(tc, resume_while_connected_closes_the_old_connection_4004);
    tcase_add_test(tc, wrong_resume_data_fails_with_4001);
    tcase_add_test(tc, resume_expires_after_resume_ttl);
    tcase_add_test(tc, resume_keeps_token_expiry_and_docs);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
