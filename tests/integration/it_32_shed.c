/*
 * 32 Shedding: after a scale-out, long-lived connections stay on the old node. With --shed, a
 * node carrying more than --shed-threshold percent of the cluster's average closes the excess
 * gradually with 1001 (so the load balancer spreads the reconnects), and stops once it is back
 * under the threshold; a node without --shed never does.
 */
#include <stdio.h>
#include <stdlib.h>

#include "harness_cluster.h"
#include "relay/clock.h"

#define N_CLIENTS 20
#define SHED_MS   30000

static hc_redis *redis;
static h_node *busy, *fresh;

static void setup(void)
{
    redis = hc_redis_start(false);
    busy = hc_node_start(hc_redis_url(redis), "busy", "--shed", "--shed-threshold", "125", NULL);
    fresh = hc_node_start(hc_redis_url(redis), "fresh", NULL);
}

static void teardown(void)
{
    h_node_destroy(busy);
    h_node_destroy(fresh);
    hc_redis_destroy(redis);
}

static json_int_t active_on(const h_node *n)
{
    json_t *st = hc_http_json(h_node_port(n), "/stats");
    ck_assert_msg(st != NULL, "no /stats");
    json_int_t v =
        json_integer_value(json_object_get(json_object_get(st, "connections"), "active"));
    json_decref(st);
    return v;
}

static size_t pump_all(hc_client **c, size_t n)
{
    size_t closed = 0;
    for (size_t i = 0; i < n; i++) {
        hc_pump(c[i], 0);
        closed += c[i]->closed;
    }
    return closed;
}

/* Reconnects every client the busy node closed (with 1001, as a load balancer would) to the
 * fresh node. Returns how many moved now. */
static size_t move_closed(hc_client **c, hc_client **moved)
{
    size_t n = 0;
    pump_all(c, N_CLIENTS);
    for (size_t i = 0; i < N_CLIENTS; i++) {
        if (!c[i]->closed || moved[i])
            continue;
        int code = 0;
        ck_assert_int_eq(wsc_sync_wait_close(c[i]->ws, 1000, &code), 0);
        ck_assert_int_eq(code, 1001); /* going away: reconnect elsewhere */
        char sub[32];
        snprintf(sub, sizeof sub, "user-%zu", i);
        moved[i] = hc_joined(h_node_port(fresh), "it32-doc", sub);
        n++;
    }
    return n;
}

START_TEST(an_overloaded_node_sheds_down_to_the_threshold_and_stops)
{
    hc_client *c[N_CLIENTS], *moved[N_CLIENTS] = {0};
    for (size_t i = 0; i < N_CLIENTS; i++) {
        char sub[32];
        snprintf(sub, sizeof sub, "user-%zu", i);
        c[i] = hc_joined(h_node_port(busy), "it32-doc", sub);
    }
    /* A fresh node with no connections: the busy node holds all of them, far over 125% of the
     * cluster average. Shed clients come back through the "load balancer", which here sends
     * them to the fresh node, so the cluster settles at about half each. */
    json_int_t limit = N_CLIENTS / 2 * 125 / 100;
    size_t shed = 0;
    int64_t deadline = clock_mono_ms() + SHED_MS;
    while (active_on(busy) > limit || active_on(fresh) < (json_int_t)shed) {
        ck_assert_msg(clock_mono_ms() < deadline,
                      "after %d ms: busy node %lld connections, fresh node %lld", SHED_MS,
                      (long long)active_on(busy), (long long)active_on(fresh));
        shed += move_closed(c, moved);
        hc_pump(c[0], 10); /* a short wait instead of a spin */
    }

    /* Gradual and bounded: once under the threshold it stops, instead of emptying the node. */
    int64_t settle = clock_mono_ms() + 3000;
    while (clock_mono_ms() < settle) {
        shed += move_closed(c, moved);
        hc_pump(c[0], 50);
    }
    json_int_t left = active_on(busy);
    ck_assert_msg(left >= N_CLIENTS / 2 - 1 && left <= limit, "busy node settled at %lld",
                  (long long)left);
    ck_assert_uint_eq(shed, N_CLIENTS - (size_t)left);
    ck_assert_int_eq(active_on(fresh) + left, N_CLIENTS);
    for (size_t i = 0; i < N_CLIENTS; i++) {
        hc_client_destroy(c[i]);
        hc_client_destroy(moved[i]);
    }
    h_node_finish(busy);
    busy = NULL;
}
END_TEST

int main(void)
{
    Suite *s = suite_create("32_shed");
    TCase *tc = tcase_create("shed");
    tcase_set_timeout(tc, HC_TCASE_TIMEOUT);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, an_overloaded_node_sheds_down_to_the_threshold_and_stops);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
