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

START_TEST(an_overloaded_node_sheds_down_to_the_threshold_and_stops)
{
    hc_client *c[N_CLIENTS];
    for (size_t i = 0; i < N_CLIENTS; i++) {
        char sub[32];
        snprintf(sub, sizeof sub, "user-%zu", i);
        c[i] = hc_joined(h_node_port(busy), "it32-doc", sub);
    }
    /* A fresh node with no connections: the cluster average is N/2, the limit 125% of it. */
    json_int_t limit = N_CLIENTS / 2 * 125 / 100;
    int64_t deadline = clock_mono_ms() + SHED_MS;
    while (active_on(busy) > limit) {
        ck_assert_msg(clock_mono_ms() < deadline,
                      "busy node still has %lld connections after %d ms",
                      (long long)active_on(busy), SHED_MS);
        pump_all(c, N_CLIENTS);
    }
    /* The node has let them go; the clients hear of it a moment later. */
    size_t closed;
    int64_t heard = clock_mono_ms() + 5000;
    while ((closed = pump_all(c, N_CLIENTS)) < N_CLIENTS - (size_t)limit && clock_mono_ms() < heard)
        hc_pump(c[N_CLIENTS - 1], 10); /* a short wait instead of a spin */
    ck_assert_msg(closed >= N_CLIENTS - (size_t)limit, "only %zu clients were closed", closed);
    ck_assert_int_eq(active_on(fresh), 0);

    /* Gradual and bounded: it stops under the threshold instead of emptying the node. */
    int64_t settle = clock_mono_ms() + 3000;
    while (clock_mono_ms() < settle)
        pump_all(c, N_CLIENTS);
    ck_assert_int_ge(active_on(busy), N_CLIENTS / 2);

    /* The shed clients were told to go away (1001) and can come back elsewhere. */
    for (size_t i = 0; i < N_CLIENTS; i++) {
        int code = 0;
        if (c[i]->closed) {
            ck_assert_int_eq(wsc_sync_wait_close(c[i]->ws, 1000, &code), 0);
            ck_assert_int_eq(code, 1001);
        }
    }
    hc_client *back = hc_joined(h_node_port(fresh), "it32-doc", "returning");
    ck_assert_int_eq(active_on(fresh), 1);
    hc_client_destroy(back);
    for (size_t i = 0; i < N_CLIENTS; i++)
        hc_client_destroy(c[i]);
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
