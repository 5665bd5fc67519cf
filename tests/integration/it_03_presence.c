/*
 * 03 join/presence: join_document and its presence list, user_joined / user_left / cursor
 * broadcasts to the other joined sessions, leave, not_joined, documents allowed by the token.
 */
#include "harness.h"

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

/* Finds the entry of users with this session_id, or NULL. */
static json_t *find_user(json_t *users, const char *session_id)
{
    size_t i;
    json_t *u;
    json_array_foreach(users, i, u)
    {
        const char *sid = json_string_value(json_object_get(u, "session_id"));
        if (sid && strcmp(sid, session_id) == 0)
            return u;
    }
    return NULL;
}

/* Connects and authenticates; returns the connection and the auth_result in *auth. */
static wsc_sync *connect_auth(const char *doc, const char *sub, json_t **auth)
{
    wsc_sync *c = h_ws(node, doc);
    *auth = h_auth(c, sub);
    return c;
}

/* Checks a presence entry (users[] item) against an auth_result. */
static void check_user_entry(json_t *msg, json_t *auth)
{
    ck_assert_str_eq(h_str(msg, "session_id"), h_str(auth, "session_id"));
    ck_assert_str_eq(h_str(msg, "user_id"), h_str(auth, "user_id"));
    ck_assert_str_eq(h_str(msg, "user_name"), h_str(auth, "user_name"));
    ck_assert_str_eq(h_str(msg, "color"), h_str(auth, "color"));
}

/* Checks a user_joined/user_left broadcast against an auth_result. */
static void check_presence(json_t *msg, const char *doc, json_t *auth)
{
    ck_assert_str_eq(h_str(msg, "document_id"), doc);
    check_user_entry(msg, auth);
}

START_TEST(joined_document_has_every_field)
{
    json_t *auth;
    wsc_sync *a = connect_auth("doc1", "alice", &auth);
    json_t *j = h_join(a);
    ck_assert_str_eq(h_str(j, "document_id"), "doc1");
    ck_assert_int_gt(strlen(h_str(j, "epoch")), 0);
    ck_assert_int_eq(h_int(j, "seq"), 0);
    json_t *users = h_field(j, "users");
    ck_assert_msg(json_is_array(users) && json_array_size(users) == 1, "%s", h_dump(j));
    json_t *me = json_array_get(users, 0);
    check_user_entry(me, auth);
    ck_assert_msg(json_is_null(h_field(me, "cursor")), "cursor not null: %s", h_dump(me));
    json_decref(j);
    json_decref(auth);
    wsc_sync_destroy(a);
}
END_TEST

START_TEST(second_join_is_announced_to_the_first)
{
    json_t *aa, *ab;
    wsc_sync *a = connect_auth("doc1", "alice", &aa);
    json_decref(h_join(a));
    wsc_sync *b = connect_auth("doc1", "bob", &ab);
    json_t *j = h_join(b);
    json_t *users = h_field(j, "users");
    ck_assert_int_eq(json_array_size(users), 2);
    json_t *ua = find_user(users, h_str(aa, "session_id"));
    json_t *ub = find_user(users, h_str(ab, "session_id"));
    ck_assert_msg(ua && ub, "users: %s", h_dump(users));
    ck_assert_str_eq(h_str(ua, "user_id"), "alice");
    ck_assert_str_eq(h_str(ua, "user_name"), "alice");
    ck_assert_str_eq(h_str(ua, "color"), h_str(aa, "color"));
    ck_assert_str_eq(h_str(ub, "user_id"), "bob");
    json_decref(j);

    json_t *joined = h_expect(a, WSC_BINARY, "user_joined");
    check_presence(joined, "doc1", ab);
    json_decref(joined);
    /* The joiner is not told about itself. */
    h_roundtrip(b);
    h_expect_quiet(b, 200);
    json_decref(aa);
    json_decref(ab);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
}
END_TEST

START_TEST(join_twice_answers_again_without_second_user_joined)
{
    json_t *aa, *ab;
    wsc_sync *a = connect_auth("doc1", "alice", &aa);
    json_decref(h_join(a));
    wsc_sync *b = connect_auth("doc1", "bob", &ab);
    json_decref(h_join(b));
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    json_t *again = h_join(b);
    ck_assert_int_eq(json_array_size(h_field(again, "users")), 2);
    json_decref(again);
    h_expect_quiet(a, 300);
    json_decref(aa);
    json_decref(ab);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
}
END_TEST

START_TEST(leave_announces_user_left_and_stops_broadcasts)
{
    json_t *aa, *ab;
    wsc_sync *a = connect_auth("doc1", "alice", &aa);
    json_decref(h_join(a));
    wsc_sync *b = connect_auth("doc1", "bob", &ab);
    json_decref(h_join(b));
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));

    h_send(b, "{\"type\":\"leave_document\"}");
    json_t *left = h_expect(b, WSC_TEXT, "left_document");
    ck_assert_str_eq(h_str(left, "document_id"), "doc1");
    json_decref(left);
    json_t *ul = h_expect(a, WSC_BINARY, "user_left");
    check_presence(ul, "doc1", ab);
    json_decref(ul);

    /* Back to Authenticated: document requests need a join again, broadcasts stop. */
    h_send(b, "{\"type\":\"operation\",\"payload\":1,\"ref\":\"x\"}");
    json_t *e = h_expect_error(b, "not_joined");
    ck_assert_str_eq(h_str(e, "ref"), "x");
    json_decref(e);
    h_send(a, "{\"type\":\"operation\",\"payload\":{\"k\":1}}");
    json_decref(h_expect(a, WSC_TEXT, "ack"));
    h_send(a, "{\"type\":\"cursor\",\"cursor\":{\"line\":3}}");
    h_roundtrip(a);
    h_expect_quiet(b, 300);

    /* Leaving again: not joined. */
    h_send(b, "{\"type\":\"leave_document\"}");
    json_decref(h_expect_error(b, "not_joined"));
    /* Rejoin works and sees the operation's seq. */
    json_t *j = h_join(b);
    ck_assert_int_eq(h_int(j, "seq"), 1);
    json_decref(j);
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    json_decref(aa);
    json_decref(ab);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
}
END_TEST

START_TEST(document_requests_need_a_join)
{
    json_t *aa;
    wsc_sync *a = connect_auth("doc1", "alice", &aa);
    h_send(a, "{\"type\":\"operation\",\"payload\":null}");
    json_decref(h_expect_error(a, "not_joined"));
    h_send(a, "{\"type\":\"cursor\",\"cursor\":null}");
    json_decref(h_expect_error(a, "not_joined"));
    h_send(a, "{\"type\":\"sync_request\",\"since\":0}");
    json_decref(h_expect_error(a, "not_joined"));
    h_send(a, "{\"type\":\"leave_document\"}");
    json_decref(h_expect_error(a, "not_joined"));
    h_roundtrip(a);
    json_decref(aa);
    wsc_sync_destroy(a);
}
END_TEST

START_TEST(close_while_joined_announces_user_left)
{
    json_t *aa, *ab;
    wsc_sync *a = connect_auth("doc1", "alice", &aa);
    json_decref(h_join(a));
    wsc_sync *b = connect_auth("doc1", "bob", &ab);
    json_decref(h_join(b));
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    ck_assert_int_eq(wsc_sync_close(b, 1000, "bye", H_WAIT_MS), 0);
    json_t *ul = h_expect(a, WSC_BINARY, "user_left");
    check_presence(ul, "doc1", ab);
    json_decref(ul);
    wsc_sync_destroy(b);

    /* A dropped TCP connection (no close frame) too. */
    json_t *ac;
    wsc_sync *c = connect_auth("doc1", "carol", &ac);
    json_decref(h_join(c));
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    wsc_sync_destroy(c);
    ul = h_expect(a, WSC_BINARY, "user_left");
    check_presence(ul, "doc1", ac);
    json_decref(ul);
    json_t *j = h_join(a);
    ck_assert_int_eq(json_array_size(h_field(j, "users")), 1);
    json_decref(j);
    json_decref(aa);
    json_decref(ab);
    json_decref(ac);
    wsc_sync_destroy(a);
}
END_TEST

START_TEST(cursor_reaches_others_and_presence)
{
    json_t *aa, *ab;
    wsc_sync *a = connect_auth("doc1", "alice", &aa);
    json_decref(h_join(a));
    wsc_sync *b = connect_auth("doc1", "bob", &ab);
    json_decref(h_join(b));
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));

    h_send(a, "{\"type\":\"cursor\",\"cursor\":{\"line\":3,\"ch\":[1,2],\"sel\":null}}");
    json_t *cur = h_expect(b, WSC_BINARY, "cursor");
    ck_assert_str_eq(h_str(cur, "document_id"), "doc1");
    ck_assert_str_eq(h_str(cur, "session_id"), h_str(aa, "session_id"));
    ck_assert_str_eq(h_str(cur, "user_id"), "alice");
    json_t *want = json_loads("{\"line\":3,\"ch\":[1,2],\"sel\":null}", 0, NULL);
    ck_assert_msg(h_json_equal(h_field(cur, "cursor"), want), "cursor %s", h_dump(cur));
    json_decref(cur);
    /* The sender gets no echo of its cursor (and cursor has no ack). */
    h_roundtrip(a);

    /* A later joiner sees the latest cursor in the presence list. */
    json_t *ac;
    wsc_sync *c = connect_auth("doc1", "carol", &ac);
    json_t *j = h_join(c);
    json_t *ua = find_user(h_field(j, "users"), h_str(aa, "session_id"));
    ck_assert_ptr_nonnull(ua);
    ck_assert_msg(h_json_equal(h_field(ua, "cursor"), want), "%s", h_dump(j));
    json_t *ub = find_user(h_field(j, "users"), h_str(ab, "session_id"));
    ck_assert_ptr_nonnull(ub);
    ck_assert(json_is_null(h_field(ub, "cursor")));
    json_decref(j);
    json_decref(want);
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    json_decref(h_expect(b, WSC_BINARY, "user_joined"));
    h_expect_quiet(a, 200);
    json_decref(aa);
    json_decref(ab);
    json_decref(ac);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
    wsc_sync_destroy(c);
}
END_TEST

START_TEST(documents_are_isolated)
{
    wsc_sync *a = h_joined(node, "doc1", "alice");
    wsc_sync *b = h_joined(node, "doc2", "bob");
    h_send(a, "{\"type\":\"operation\",\"payload\":1}");
    json_t *ack = h_expect(a, WSC_TEXT, "ack");
    ck_assert_int_eq(h_int(ack, "seq"), 1);
    json_decref(ack);
    h_send(a, "{\"type\":\"cursor\",\"cursor\":1}");
    h_roundtrip(a);
    h_expect_quiet(b, 300);
    /* Each document has its own sequence. */
    h_send(b, "{\"type\":\"operation\",\"payload\":2}");
    ack = h_expect(b, WSC_TEXT, "ack");
    ck_assert_int_eq(h_int(ack, "seq"), 1);
    json_decref(ack);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
}
END_TEST

/* Connects to doc with a token carrying docs and tries to join. Returns true if joined. */
static bool join_with_docs(const char *doc, const char *docs_json)
{
    char claims[512];
    snprintf(claims, sizeof(claims), "{\"sub\":\"limited\",\"exp\":%lld,\"docs\":%s}",
             (long long)clock_wall_s() + 3600, docs_json);
    char *t = h_token_claims(claims, H_SECRET);
    ck_assert_ptr_nonnull(t);
    wsc_sync *c = h_ws(node, doc);
    h_send(c, "{\"type\":\"authenticate\",\"token\":\"%s\"}", t);
    free(t);
    json_t *r = h_expect(c, WSC_TEXT, "auth_result");
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "%s", h_dump(r));
    json_decref(r);
    h_send(c, "{\"type\":\"join_document\",\"ref\":7}");
    wsc_msg m;
    ck_assert_int_eq(wsc_sync_recv(c, H_WAIT_MS, &m), WSC_SYNC_OK);
    ck_assert_ptr_nonnull(m.json);
    const char *type = h_str(m.json, "type");
    bool joined = strcmp(type, "joined_document") == 0;
    if (!joined) {
        ck_assert_msg(strcmp(type, "error") == 0, "%s", h_dump(m.json));
        ck_assert_str_eq(h_str(m.json, "code"), "forbidden");
        ck_assert_int_eq(h_int(m.json, "ref"), 7);
        h_roundtrip(c); /* still open */
    }
    wsc_msg_clear(&m);
    wsc_sync_destroy(c);
    return joined;
}

START_TEST(docs_claim_limits_joins)
{
    const char *docs = "[\"notes\",\"team-*\"]";
    ck_assert(join_with_docs("notes", docs));
    ck_assert(join_with_docs("team-alpha", docs));
    ck_assert(join_with_docs("team-", docs));
    ck_assert(!join_with_docs("doc1", docs));
    ck_assert(!join_with_docs("team", docs));
    ck_assert(!join_with_docs("notes2", docs));
    ck_assert(!join_with_docs("doc1", "[]"));
}
END_TEST

int main(void)
{
    Suite *s = suite_create("03_presence");
    TCase *tc = tcase_create("presence");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, joined_document_has_every_field);
    tcase_add_test(tc, second_join_is_announced_to_the_first);
    tcase_add_test(tc, join_twice_answers_again_without_second_user_joined);
    tcase_add_test(tc, leave_announces_user_left_and_stops_broadcasts);
    tcase_add_test(tc, document_requests_need_a_join);
    tcase_add_test(tc, close_while_joined_announces_user_left);
    tcase_add_test(tc, cursor_reaches_others_and_presence);
    tcase_add_test(tc, documents_are_isolated);
    tcase_add_test(tc, docs_claim_limits_joins);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
