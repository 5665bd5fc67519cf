/**
 * @file harness_deploy.h
 * Deployment additions to the integration harness (harness.h, harness_cluster.h): child
 * processes started with exactly the arguments a test chooses (a relay-node on a given port and
 * node id, so it can be restarted in place; a script in its own process group, like a command
 * typed in a terminal), haproxy on a given port in front of given node ports, a block of
 * consecutive free ports, and /proc scans for what a process tree left behind.
 *
 * Processes are hp_proc (harness_proc.h): each has a watchdog that stops it, prints its output
 * and removes its log if the test dies first.
 *
 * Names start with hd_ so they cannot clash with the other harness files.
 */
#ifndef RELAY_IT_HARNESS_DEPLOY_H
#define RELAY_IT_HARNESS_DEPLOY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "harness.h"
#include "harness_proc.h"

/* ---- relay-node and haproxy on chosen ports ------------------------------------------------ */

/* Starts $RELAY_NODE_BIN with `--port port --bind 127.0.0.1 --jwt-secret H_SECRET --node-id id
 * --redis redis_url --log-level info` and the NULL-terminated extra arguments (may be NULL).
 * Does not wait for it; see hd_wait_status(). Returns NULL with the reason in err. */
hp_proc *hd_node_start(int port, const char *node_id, const char *redis_url,
                       const char *const *extra, char *err, size_t errlen);

/* Starts `haproxy -f cfg -db` on 127.0.0.1:port in front of the nodes on 127.0.0.1:node_ports:
 * http mode, balance roundrobin, `option httpchk GET /readyz`, checks every 200 ms with fall 1
 * rise 1, `timeout tunnel 1h`, redispatch of failed connections. Waits until every node is
 * reachable through it: that many consecutive GET /readyz through the proxy answer 200 (one per
 * server in round robin). Returns NULL with the reason in err. */
hp_proc *hd_haproxy_start(int port, const int *node_ports, size_t n, char *err, size_t errlen);

/* Polls GET path on 127.0.0.1:port until it answers status or timeout_ms passes. */
bool hd_wait_status(int port, const char *path, int status, int timeout_ms);

/* ---- Ports and process scans ------------------------------------------------------------- */

/* A port P in [20000, 32000) (below Linux's ephemeral range, so outgoing connections cannot
 * take it meanwhile) such that P..P+count-1 are all free on 127.0.0.1 and none is in avoid[]
 * (avoid_n entries). Returns -1 if none was found. */
int hd_free_port_block(int count, const int *avoid, size_t avoid_n);

/* True when a TCP connect to 127.0.0.1:port is refused (nothing listens there). */
bool hd_port_refuses(int port);

/* One process found by hd_scan(). */
typedef struct hd_found {
    pid_t pid;
    pid_t pgid;
    char comm[32];  /* /proc/PID/comm */
    char what[160]; /* why it matched, for messages */
} hd_found;

/* Lists the processes (other than zombies and this one) whose process group is pgid (pgid > 0),
 * or whose command line or environment contains one of the NULL-terminated needles (needles may
 * be NULL), into out[0..max). Arguments and environment entries are joined with single spaces,
 * with one after the last, so "--port 8081 " matches exactly that argument pair. Returns how
 * many matched (may exceed max; only max are stored). */
size_t hd_scan(pid_t pgid, const char *const *needles, hd_found *out, size_t max);

#endif
