/*
 * 21 cluster presence: joined_document.users lists the sessions of every node; user_joined,
 * user_left and cursor cross nodes; when a node dies (SIGKILL) its sessions are announced left
 * on the other nodes within 10 s and it drops out of /stats?scope=cluster, except a session that
 * already resumed on another node, which is never announced as left.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness_cluster.h"
#include "relay/clock.h"

#define DEAD_NODE_MS 10000 /* the bound for announcing a dead node's sessions */

static hc_redis *redis;
static h_node *cluster[3], *na, *nb, *nc;

static void setup(void)
{
    redis = hc_cluster_start(false, cluster, 3);
    na = cluster[0], nb = cluster[1], nc = cluster[2];
}

static void teardown(void)
{
    hc_cluster_destroy(redis, cluster, 3);
}

static const char *sid(const hc_client *c)
{
    return json_string_value(json_object_get(c->auth, "session_id"));
}

/* The users entry of a session in a joined_document, or NULL. */
static json_t *user_entry(const json_t *joined, const char *session_id)
{
    json_t *users = json_object_get(joined, "users");
    for (size_t i = 0; i < json_array_size(users); i++) {
        json_t *u = json_array_get(users, i);
        if (!strcmp(json_string_value(json_object_get(u, "session_id")), session_id))
            return u;
    }
    return NULL;
}

/* Expects a user_joined/user_left broadcast describing c. */
static void expect_presence(hc_client *watcher, const char *type, const hc_client *c, int ms)
{
    json_t *m = hc_expect_within(watcher, type, ms);
    ck_assert_str_eq(h_str(m, "document_id"), watcher->doc);
    ck_assert_str_eq(h_str(m, "session_id"), sid(c));
    ck_assert_str_eq(h_str(m, "user_id"), h_str(c->auth, "user_id"));
    ck_assert_str_eq(h_str(m, "user_name"), h_str(c->auth, "user_name"));
    ck_assert_str_eq(h_str(m, "color"), h_str(c->auth, "color"));
    json_decref(m);
}

/* True when the cluster stats of the node on port list node_id. */
static bool cluster_lists(int port, const char *node_id)
{
    json_t *st = hc_http_json(port, "/stats?scope=cluster");
    ck_assert_msg(st != NULL, "GET /stats?scope=cluster failed");
    json_t *nodes = json_object_get(st, "nodes");
    ck_assert_msg(json_is_array(nodes), "%s", h_dump(st));
    bool found = false;
    for (size_t i = 0; i < json_array_size(nodes); i++)
        if (!strcmp(h_str(json_array_get(nodes, i), "node_id"), node_id))
            found = true;
    json_decref(st);
    return found;
}

START_TEST(presence_and_cursors_cross_nodes)
{
    const char *doc = "it21-presence";
    hc_client *alice = hc_joined(h_node_port(na), doc, "alice");
    hc_client *bob = hc_connect(h_node_port(nb), doc);
    hc_auth(bob, "bob");
    json_t *jb = hc_join(bob);
    ck_assert_msg(user_entry(jb, sid(alice)) && user_entry(jb, sid(bob)), "%s", h_dump(jb));
    ck_assert_int_eq(json_array_size(h_field(jb, "users")), 2);
    json_t *ua = user_entry(jb, sid(alice));
    ck_assert_str_eq(h_str(ua, "user_id"), "alice");
    ck_assert_str_eq(h_str(ua, "color"), h_str(alice->auth, "color"));
    ck_assert_msg(json_is_null(h_field(ua, "cursor")), "%s", h_dump(ua));
    expect_presence(alice, "user_joined", bob, H_WAIT_MS);

    hc_client *carol = hc_connect(h_node_port(nc), doc);
    hc_auth(carol, "carol");
    json_t *jc = hc_join(carol);
    ck_assert_int_eq(json_array_size(h_field(jc, "users")), 3);
    expect_presence(alice, "user_joined", carol, H_WAIT_MS);
    expect_presence(bob, "user_joined", carol, H_WAIT_MS);

    /* A cursor from B reaches A and C, and becomes part of bob's presence everywhere. */
    ck_assert_int_eq(wsc_sync_sendf(bob->ws, "{\"type\":\"cursor\",\"cursor\":{\"line\":3}}"), 0);
    hc_client *watchers[] = {alice, carol};
    for (size_t i = 0; i < 2; i++) {
        json_t *cur = hc_expect(watchers[i], "cursor");
        ck_assert_str_eq(h_str(cur, "session_id"), sid(bob));
        ck_assert_str_eq(h_str(cur, "user_id"), "bob");
        ck_assert_int_eq(h_int(h_field(cur, "cursor"), "line"), 3);
        json_decref(cur);
    }
    hc_client *dave = hc_connect(h_node_port(na), doc);
    hc_auth(dave, "dave");
    json_t *jd = hc_join(dave);
    ck_assert_int_eq(json_array_size(h_field(jd, "users")), 4);
    json_t *ub = user_entry(jd, sid(bob));
    ck_assert_msg(ub != NULL, "%s", h_dump(jd));
    ck_assert_int_eq(h_int(h_field(ub, "cursor"), "line"), 3);
    for (size_t i = 0; i < 2; i++)
        expect_presence(watchers[i], "user_joined", dave, H_WAIT_MS);
    expect_presence(bob, "user_joined", dave, H_WAIT_MS);

    /* leave_document on B and a dropped socket on C are both seen everywhere. */
    ck_assert_int_eq(wsc_sync_sendf(bob->ws, "{\"type\":\"leave_document\"}"), 0);
    json_decref(hc_expect(bob, "left_document"));
    expect_presence(alice, "user_left", bob, H_WAIT_MS);
    expect_presence(carol, "user_left", bob, H_WAIT_MS);
    expect_presence(dave, "user_left", bob, H_WAIT_MS);
    hc_client_destroy(carol);
    carol = NULL;
    json_t *left = hc_expect(alice, "user_left");
    ck_assert_str_eq(h_str(left, "user_id"), "carol");
    json_decref(left);
    left = hc_expect(dave, "user_left");
    ck_assert_str_eq(h_str(left, "user_id"), "carol");
    json_decref(left);
    hc_client *eve = hc_connect(h_node_port(nb), doc);
    hc_auth(eve, "eve");
    json_t *je = hc_join(eve);
    ck_assert_msg(json_array_size(h_field(je, "users")) == 3 && user_entry(je, sid(alice)) &&
                      user_entry(je, sid(dave)) && user_entry(je, sid(eve)),
                  "%s", h_dump(je));
    /* Nobody was announced twice. */
    hc_pump(alice, 200);
    ck_assert_int_eq(hc_count_seen(alice, "user_left", NULL, NULL), 2);
    ck_assert_int_eq(hc_count_seen(alice, "user_joined", "user_id", "dave"), 1);
    json_decref(je);
    json_decref(jd);
    json_decref(jc);
    json_decref(jb);
    hc_client_destroy(eve);
    hc_client_destroy(dave);
    hc_client_destroy(bob);
    hc_client_destroy(alice);
}
END_TEST

START_TEST(a_dead_nodes_sessions_are_announced_left)
{
    const char *doc = "it21-dead";
    hc_client *alice = hc_joined(h_node_port(na), doc, "alice");
    hc_client *carol = hc_joined(h_node_port(nc), doc, "carol");
    hc_client *bob = hc_joined(h_node_port(nb), doc, "bob");
    hc_client *bob2 = hc_joined(h_node_port(nb), doc, "bob2");
    expect_presence(alice, "user_joined", carol, H_WAIT_MS);
    expect_presence(alice, "user_joined", bob, H_WAIT_MS);
    expect_presence(alice, "user_joined", bob2, H_WAIT_MS);
    /* The cluster view comes from the heartbeats: wait until it has seen b. */
    int64_t deadline = clock_mono_ms() + 8000;
    while (!cluster_lists(h_node_port(na), "b") && clock_mono_ms() < deadline)
        hc_pump(alice, 50);
    ck_assert_msg(cluster_lists(h_node_port(na), "b"), "node b not in a's cluster stats");

    int64_t killed = clock_mono_ms();
    ck_assert_int_eq(h_node_signal(nb, SIGKILL), 0);
    ck_assert_int_eq(h_node_wait_exit(nb, 5000), 128 + SIGKILL);
    hc_client *watchers[] = {alice, carol};
    for (size_t i = 0; i < 2; i++) {
        int left = (int)(DEAD_NODE_MS - (clock_mono_ms() - killed));
        for (int k = 0; k < 2; k++) {
            json_t *m = hc_expect_within(watchers[i], "user_left", left > 0 ? left : 0);
            const char *s = h_str(m, "session_id");
            ck_assert_msg(!strcmp(s, sid(bob)) || !strcmp(s, sid(bob2)), "%s", h_dump(m));
            json_decref(m);
        }
    }
    int64_t announced = clock_mono_ms() - killed;
    bool gone_a = false, gone_c = false;
    while (!(gone_a && gone_c) && clock_mono_ms() - killed < DEAD_NODE_MS) {
        gone_a = !cluster_lists(h_node_port(na), "b");
        gone_c = !cluster_lists(h_node_port(nc), "b");
        hc_pump(alice, 50); /* paces the polling */
    }
    ck_assert_msg(gone_a && gone_c,
                  "node b still in /stats?scope=cluster on %s %d ms after SIGKILL",
                  gone_a ? "c" : "a", DEAD_NODE_MS);
    ck_assert_msg(cluster_lists(h_node_port(na), "a") && cluster_lists(h_node_port(na), "c"),
                  "live nodes missing from the cluster stats");
    /* Exactly once each, and a newcomer does not see them. */
    hc_pump(alice, 300);
    ck_assert_int_eq(hc_count_seen(alice, "user_left", "session_id", sid(bob)), 1);
    ck_assert_int_eq(hc_count_seen(alice, "user_left", "session_id", sid(bob2)), 1);
    hc_client *dave = hc_connect(h_node_port(nc), doc);
    hc_auth(dave, "dave");
    json_t *j = hc_join(dave);
    ck_assert_msg(json_array_size(h_field(j, "users")) == 3 && !user_entry(j, sid(bob)) &&
                      !user_entry(j, sid(bob2)),
                  "dead sessions still listed %lld ms after the kill: %s",
                  (long long)(clock_mono_ms() - killed), h_dump(j));
    fprintf(stderr, "it_21: dead node's sessions announced %lld ms after SIGKILL\n",
            (long long)announced);
    json_decref(j);
    hc_client_destroy(dave);
    hc_client_destroy(bob);
    hc_client_destroy(bob2);
    hc_client_destroy(carol);
    hc_client_destroy(alice);
}
END_TEST

START_TEST(a_session_that_resumed_elsewhere_is_not_announced_left)
{
    const char *doc = "it21-moved";
    hc_client *watcher = hc_joined(h_node_port(na), doc, "watcher");
    hc_client *mover = hc_joined(h_node_port(nb), doc, "mover");
    hc_client *stayer = hc_joined(h_node_port(nb), doc, "stayer");
    expect_presence(watcher, "user_joined", mover, H_WAIT_MS);
    expect_presence(watcher, "user_joined", stayer, H_WAIT_MS);
    char *mover_sid = strdup(sid(mover));
    char *mover_rt = strdup(h_str(mover->auth, "resume_token"));

    int64_t killed = clock_mono_ms();
    ck_assert_int_eq(h_node_signal(nb, SIGKILL), 0);
    ck_assert_int_eq(h_node_wait_exit(nb, 5000), 128 + SIGKILL);
    /* The mover resumes on C at once, well before B's liveness key expires. */
    hc_client *moved = hc_connect(h_node_port(nc), doc);
    ck_assert_int_eq(wsc_sync_sendf(moved->ws,
                                    "{\"type\":\"authenticate\",\"session_id\":\"%s\","
                                    "\"resume_token\":\"%s\"}",
                                    mover_sid, mover_rt),
                     0);
    json_t *r = hc_expect(moved, "auth_result");
    ck_assert_msg(json_is_true(json_object_get(r, "success")), "%s", h_dump(r));
    ck_assert_str_eq(h_str(r, "session_id"), mover_sid);
    moved->auth = r;
    json_t *j = hc_join(moved);
    ck_assert_msg(clock_mono_ms() - killed < 4000, "resume took too long to prove anything");

    /* The stayer is announced left; wait a little past it for a late, wrong announcement. */
    int left = (int)(DEAD_NODE_MS - (clock_mono_ms() - killed));
    json_t *m = hc_expect_within(watcher, "user_left", left);
    ck_assert_msg(!strcmp(h_str(m, "session_id"), sid(stayer)), "wrong user_left %s (mover %s)",
                  h_dump(m), mover_sid);
    json_decref(m);
    hc_pump(watcher, 1500);
    hc_pump(moved, 0);
    ck_assert_msg(hc_count_seen(watcher, "user_left", "session_id", mover_sid) == 0,
                  "the resumed session was announced as left: %s", hc_recent(watcher));
    ck_assert_msg(hc_count_seen(moved, "user_left", "session_id", mover_sid) == 0,
                  "the resumed session was told it left: %s", hc_recent(moved));
    /* It is still present for a newcomer; the stayer is not. */
    hc_client *late = hc_connect(h_node_port(na), doc);
    hc_auth(late, "late");
    json_t *jl = hc_join(late);
    ck_assert_msg(user_entry(jl, mover_sid) && !user_entry(jl, sid(stayer)), "%s", h_dump(jl));
    /* And its operations still reach the watcher. */
    hc_op_acked(moved, "after-move", "{\"moved\":true}");
    ck_assert_msg(hc_wait_ops(watcher, 1, H_WAIT_MS), "%s", hc_recent(watcher));
    ck_assert_str_eq(h_str(json_array_get(watcher->ops, 0), "session_id"), mover_sid);

    json_decref(jl);
    json_decref(j);
    free(mover_sid);
    free(mover_rt);
    hc_client_destroy(late);
    hc_client_destroy(moved);
    hc_client_destroy(stayer);
    hc_client_destroy(mover);
    hc_client_destroy(watcher);
}
END_TEST

START_TEST(a_connection_closed_during_its_join_leaves_no_ghost)
{
    const char *doc = "it21-ghost";
    hc_client *watcher = hc_joined(h_node_port(na), doc, "watcher");
    /* join_document and the close frame back to back: the close overtakes the join's round
     * trip to Redis. */
    for (int i = 0; i < 10; i++) {
        char sub[16];
        snprintf(sub, sizeof sub, "ghost-%d", i);
        hc_client *g = hc_connect(h_node_port(nb), doc);
        hc_auth(g, sub);
        ck_assert_int_eq(wsc_sync_sendf(g->ws, "{\"type\":\"join_document\"}"), 0);
        wsc_sync_close(g->ws, 1000, NULL, H_WAIT_MS);
        hc_client_destroy(g);
    }
    /* Only the watcher may remain in the document's presence. */
    int64_t deadline = clock_mono_ms() + H_WAIT_MS;
    long long entries = -1;
    do {
        hc_pump(watcher, 50);
        redisReply *r = hc_redis_cmd(redis, "HLEN relay:{%s}:presence", doc);
        entries = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
        if (r)
            freeReplyObject(r);
    } while (entries != 1 && clock_mono_ms() < deadline);
    hc_client *late = hc_connect(h_node_port(na), doc);
    hc_auth(late, "late");
    json_t *j = hc_join(late);
    ck_assert_msg(entries == 1 && json_array_size(h_field(j, "users")) == 2,
                  "sessions closed during their join are still present (%lld presence entries "
                  "in Redis): %s",
                  entries, h_dump(j));
    /* Every ghost the watcher saw arrive, it also saw leave. */
    hc_pump(watcher, 200);
    ck_assert_int_eq(hc_count_seen(watcher, "user_joined", NULL, NULL) -
                         hc_count_seen(watcher, "user_joined", "user_id", "late"),
                     hc_count_seen(watcher, "user_left", NULL, NULL));
    json_decref(j);
    hc_client_destroy(late);
    hc_client_destroy(watcher);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("21_cluster_presence");
    TCase *tc = tcase_create("presence");
    tcase_set_timeout(tc, HC_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, presence_and_cursors_cross_nodes);
    tcase_add_test(tc, a_dead_nodes_sessions_are_announced_left);
    tcase_add_test(tc, a_session_that_resumed_elsewhere_is_not_announced_left);
    tcase_add_test(tc, a_connection_closed_during_its_join_leaves_no_ghost);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
