/*
 * 20 cluster fanout: one Redis and three nodes. Operations sent on nodes A and B are acked with
 * seqs that together are exactly 1..N; every client on every node receives the other senders'
 * operations in that seq order, without gaps or duplicates; sync_request on another node returns
 * exactly what the live stream carried, and fills a client's gap after a disconnect.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness_cluster.h"

#define N_A    200 /* operations sent from node A */
#define N_B    50  /* operations sent from node B */
#define N_OPS  (N_A + N_B)
#define WINDOW 16 /* operations in flight per sender */

static hc_redis *redis;
static h_node *nodes[3], *na, *nb, *nc;

static void setup(void)
{
    redis = hc_cluster_start(false, nodes, 3);
    na = nodes[0], nb = nodes[1], nc = nodes[2];
}

static void teardown(void)
{
    hc_cluster_destroy(redis, nodes, 3);
}

/* One sender's pipeline: refs sent and not yet answered, oldest first. */
typedef struct sender {
    hc_client *c;
    const char *name;
    char pending[WINDOW][32];
    int n_pending;
} sender;

/* What the test knows about every acked operation, by seq (1-based). */
typedef struct acked {
    json_t *payload;
    const char *session_id;
    const char *user_id;
} acked;

/* Waits for the oldest pending reply of s, which must be an ack with a fresh seq. */
static void settle_one(sender *s, acked *by_seq, json_t *payloads)
{
    const char *ref = s->pending[0];
    json_t *r = hc_take_reply(s->c, ref, H_WAIT_MS);
    ck_assert_msg(r != NULL, "no reply to %s; %s", ref, hc_recent(s->c));
    ck_assert_msg(!strcmp(h_str(r, "type"), "ack"), "%s: %s", ref, h_dump(r));
    json_int_t seq = h_int(r, "seq");
    ck_assert_msg(seq >= 1 && seq <= N_OPS, "ack seq %lld out of 1..%d", (long long)seq, N_OPS);
    ck_assert_msg(by_seq[seq].payload == NULL, "seq %lld acked twice (again for %s)",
                  (long long)seq, ref);
    by_seq[seq].payload = json_object_get(payloads, ref);
    by_seq[seq].session_id = h_str(s->c->auth, "session_id");
    by_seq[seq].user_id = h_str(s->c->auth, "user_id");
    json_decref(r);
    memmove(s->pending[0], s->pending[1], sizeof(s->pending[0]) * (WINDOW - 1));
    s->n_pending--;
}

static void send_one(sender *s, int i, json_t *payloads)
{
    char ref[32], payload[128];
    snprintf(ref, sizeof ref, "%s-%d", s->name, i);
    snprintf(payload, sizeof payload, "{\"from\":\"%s\",\"i\":%d,\"text\":\"op %d\"}", s->name, i,
             i);
    json_object_set_new(payloads, ref, json_loads(payload, 0, NULL));
    hc_send_op(s->c, ref, payload);
    snprintf(s->pending[s->n_pending++], sizeof s->pending[0], "%s", ref);
}

/* Checks that c received exactly the acked operations of senders other than itself, in seq
 * order, with the payload, session and user of the send. */
static void check_stream(hc_client *c, const char *who, const acked *by_seq, const char *own_sid)
{
    size_t k = 0;
    for (int seq = 1; seq <= N_OPS; seq++) {
        if (own_sid && !strcmp(by_seq[seq].session_id, own_sid))
            continue;
        json_t *op = json_array_get(c->ops, k++);
        ck_assert_msg(op != NULL, "%s: stream ends before seq %d", who, seq);
        ck_assert_msg(h_int(op, "seq") == seq, "%s: expected seq %d as operation #%zu, got %s", who,
                      seq, k, h_dump(op));
        ck_assert_str_eq(h_str(op, "document_id"), c->doc);
        ck_assert_str_eq(h_str(op, "session_id"), by_seq[seq].session_id);
        ck_assert_str_eq(h_str(op, "user_id"), by_seq[seq].user_id);
        ck_assert_msg(h_json_equal(h_field(op, "payload"), by_seq[seq].payload),
                      "%s: seq %d payload %s, sent %s", who, seq, h_dump(op),
                      h_dump(by_seq[seq].payload));
    }
    ck_assert_msg(k == json_array_size(c->ops), "%s: %zu operations beyond the expected %zu", who,
                  json_array_size(c->ops) - k, k);
    ck_assert_msg(hc_count_seen(c, "lagged", NULL, NULL) == 0, "%s got lagged: %s", who,
                  hc_recent(c));
    ck_assert_msg(hc_count_seen(c, "reset", NULL, NULL) == 0, "%s got reset", who);
}

/* A sync_response operation must equal the live broadcast of the same seq. */
static void check_sync_matches(const json_t *synced, const hc_client *live, json_int_t since)
{
    ck_assert_int_eq(json_array_size(synced), N_OPS - since);
    for (size_t i = 0; i < json_array_size(synced); i++) {
        json_t *s = json_array_get(synced, i);
        json_t *l = json_array_get(live->ops, (size_t)since + i);
        ck_assert_int_eq(h_int(s, "seq"), since + 1 + (json_int_t)i);
        ck_assert_int_eq(h_int(s, "seq"), h_int(l, "seq"));
        ck_assert_str_eq(h_str(s, "session_id"), h_str(l, "session_id"));
        ck_assert_str_eq(h_str(s, "user_id"), h_str(l, "user_id"));
        ck_assert_msg(h_json_equal(h_field(s, "payload"), h_field(l, "payload")),
                      "sync %s vs live %s", h_dump(s), h_dump(l));
    }
}

START_TEST(operations_reach_every_node_in_one_seq_order)
{
    const char *doc = "it20-fanout";
    hc_client *ca = hc_joined(h_node_port(na), doc, "alice");
    hc_client *cb = hc_joined(h_node_port(nb), doc, "bob");
    hc_client *obs[] = {
        hc_joined(h_node_port(na), doc, "obs-a"), hc_joined(h_node_port(nb), doc, "obs-b"),
        hc_joined(h_node_port(nc), doc, "obs-c1"), hc_joined(h_node_port(nc), doc, "obs-c2")};
    const size_t n_obs = sizeof obs / sizeof obs[0];

    json_t *payloads = json_object();
    acked by_seq[N_OPS + 1];
    memset(by_seq, 0, sizeof by_seq);
    sender sa = {.c = ca, .name = "a"}, sb = {.c = cb, .name = "b"};
    int sent_a = 0, sent_b = 0;
    while (sent_a < N_A || sent_b < N_B) {
        /* Every fifth operation comes from B, so both streams interleave in Redis. */
        int total = sent_a + sent_b;
        sender *s = (sent_b < N_B && (total % 5 == 4 || sent_a == N_A)) ? &sb : &sa;
        if (s->n_pending == WINDOW)
            settle_one(s, by_seq, payloads);
        send_one(s, s == &sa ? sent_a++ : sent_b++, payloads);
        for (size_t i = 0; i < n_obs; i++)
            hc_pump(obs[i], 0);
    }
    while (sa.n_pending)
        settle_one(&sa, by_seq, payloads);
    while (sb.n_pending)
        settle_one(&sb, by_seq, payloads);
    for (int seq = 1; seq <= N_OPS; seq++)
        ck_assert_msg(by_seq[seq].payload != NULL, "seq %d was never acked", seq);

    for (size_t i = 0; i < n_obs; i++)
        ck_assert_msg(hc_wait_ops(obs[i], N_OPS, 15000), "observer %zu: %s", i, hc_recent(obs[i]));
    ck_assert_msg(hc_wait_ops(ca, N_B, 15000), "alice: %s", hc_recent(ca));
    ck_assert_msg(hc_wait_ops(cb, N_A, 15000), "bob: %s", hc_recent(cb));
    /* Nothing more may follow: no duplicates arriving late. */
    for (size_t i = 0; i < n_obs; i++)
        hc_pump(obs[i], i == 0 ? 300 : 0);
    hc_pump(ca, 0);
    hc_pump(cb, 0);

    const char *names[] = {"observer on A", "observer on B", "observer 1 on C", "observer 2 on C"};
    for (size_t i = 0; i < n_obs; i++)
        check_stream(obs[i], names[i], by_seq, NULL);
    check_stream(ca, "alice (sender on A)", by_seq, h_str(ca->auth, "session_id"));
    check_stream(cb, "bob (sender on B)", by_seq, h_str(cb->auth, "session_id"));

    /* History on C matches the live stream, from any point. */
    char *epoch = NULL;
    json_t *since100 = hc_sync(obs[2], 100, &epoch);
    check_sync_matches(since100, obs[2], 100);
    json_t *all = hc_sync(obs[3], 0, NULL);
    check_sync_matches(all, obs[3], 0);
    json_t *none = hc_sync(obs[2], N_OPS, NULL);
    ck_assert_int_eq(json_array_size(none), 0);
    /* The same epoch is shown on every node. */
    hc_client *late = hc_joined(h_node_port(na), doc, "late");
    json_t *sync_a = hc_sync(late, 240, NULL);
    check_sync_matches(sync_a, obs[0], 240);
    json_t *j = hc_join(late);
    ck_assert_str_eq(h_str(j, "epoch"), epoch);
    ck_assert_int_eq(h_int(j, "seq"), N_OPS);

    json_decref(j);
    json_decref(sync_a);
    json_decref(none);
    json_decref(all);
    json_decref(since100);
    free(epoch);
    json_decref(payloads);
    hc_client_destroy(late);
    for (size_t i = 0; i < n_obs; i++)
        hc_client_destroy(obs[i]);
    hc_client_destroy(ca);
    hc_client_destroy(cb);
}
END_TEST

START_TEST(sync_after_a_disconnect_returns_what_was_missed)
{
    const char *doc = "it20-gap";
    hc_client *writer = hc_joined(h_node_port(na), doc, "writer");
    hc_client *reader = hc_joined(h_node_port(nc), doc, "reader");
    char ref[32], payload[64];
    for (int i = 1; i <= 10; i++) {
        snprintf(ref, sizeof ref, "w-%d", i);
        snprintf(payload, sizeof payload, "{\"i\":%d}", i);
        ck_assert_int_eq(hc_op_acked(writer, ref, payload), i);
    }
    ck_assert_msg(hc_wait_ops(reader, 10, H_WAIT_MS), "%s", hc_recent(reader));
    json_int_t last = h_int(json_array_get(reader->ops, 9), "seq");
    ck_assert_int_eq(last, 10);
    hc_client_destroy(reader); /* a dropped connection: no goodbye */

    for (int i = 11; i <= 30; i++) {
        snprintf(ref, sizeof ref, "w-%d", i);
        snprintf(payload, sizeof payload, "{\"i\":%d}", i);
        ck_assert_int_eq(hc_op_acked(writer, ref, payload), i);
    }
    /* Back on another node this time. */
    reader = hc_connect(h_node_port(nb), doc);
    hc_auth(reader, "reader");
    json_t *j = hc_join(reader);
    ck_assert_int_eq(h_int(j, "seq"), 30);
    json_t *missed = hc_sync(reader, last, NULL);
    ck_assert_int_eq(json_array_size(missed), 20);
    for (size_t i = 0; i < 20; i++) {
        json_t *op = json_array_get(missed, i);
        ck_assert_int_eq(h_int(op, "seq"), 11 + (json_int_t)i);
        ck_assert_int_eq(h_int(h_field(op, "payload"), "i"), 11 + (json_int_t)i);
        ck_assert_str_eq(h_str(op, "session_id"), h_str(writer->auth, "session_id"));
    }
    /* The live stream continues right after. */
    ck_assert_int_eq(hc_op_acked(writer, "w-31", "{\"i\":31}"), 31);
    ck_assert_msg(hc_wait_ops(reader, 1, H_WAIT_MS), "%s", hc_recent(reader));
    ck_assert_int_eq(h_int(json_array_get(reader->ops, 0), "seq"), 31);
    json_decref(missed);
    json_decref(j);
    hc_client_destroy(reader);
    hc_client_destroy(writer);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("20_cluster_fanout");
    TCase *tc = tcase_create("fanout");
    tcase_set_timeout(tc, HC_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, operations_reach_every_node_in_one_seq_order);
    tcase_add_test(tc, sync_after_a_disconnect_returns_what_was_missed);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
