/**
 * @file harness_deploy.h
 * Deployment additions to the integration harness (harness.h, harness_cluster.h): child
 * processes started with exactly the arguments a test chooses (a relay-node on a given port and
 * node id, so it can be restarted in place; a script in its own process group, like a command
 * typed in a terminal), haproxy on a given port in front of given node ports, a block of
 * consecutive free ports, and /proc scans for what a process tree left behind.
 *
 * Every process started here has a watchdog: if the test process dies without destroying it
 * (a failed Check assertion exits the test), the watchdog stops it — a process group with
 * SIGINT first, so a script's own cleanup runs, then SIGKILL — prints its captured output and
 * removes the log. Children that are not group leaders also die with the test (PDEATHSIG).
 *
 * Names start with hd_ so they cannot clash with the other harness files.
 */
#ifndef RELAY_IT_HARNESS_DEPLOY_H
#define RELAY_IT_HARNESS_DEPLOY_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "harness.h"

/* ---- Child processes --------------------------------------------------------------------- */

typedef struct hd_proc hd_proc;

/* Starts argv (argv[0] looked up in PATH) with stdin from /dev/null and stdout+stderr appended
 * to a fresh log file. env: NULL-terminated "NAME=value" strings added to the environment, or
 * NULL. own_group: the child leads a new process group (hd_proc_signal_group reaches everything
 * it starts) and is not killed by PDEATHSIG, so that on test death its watchdog can let it clean
 * up. label names it in the watchdog's output. Returns NULL with the reason in err. */
hd_proc *hd_proc_start(const char *const *argv, const char *const *env, bool own_group,
                       const char *label, char *err, size_t errlen);

pid_t hd_proc_pid(const hd_proc *p);

/* True while the process has not exited (reaps it when it has). */
bool hd_proc_alive(hd_proc *p);

/* Sends sig to the process, or to its whole process group. Returns 0 or -1. */
int hd_proc_signal(hd_proc *p, int sig);
int hd_proc_signal_group(hd_proc *p, int sig);

/* Waits up to timeout_ms for the process to exit. Returns its exit status (0-255), 128+signal
 * if a signal ended it, or -1 on timeout. timeout_ms 0 polls once. */
int hd_proc_wait(hd_proc *p, int timeout_ms);

/* The captured output so far (malloc'd, NUL-terminated, "" if unreadable), cut to its last
 * maxlen bytes when maxlen > 0. */
char *hd_proc_log(const hd_proc *p, size_t maxlen);

/* Stops the process if it still runs (a group leader: SIGINT to the group, SIGKILL to the group
 * after 10 s; otherwise SIGKILL), reaps it, retires the watchdog and removes the log. NULL is a
 * no-op. */
void hd_proc_destroy(hd_proc *p);

/* ---- relay-node and haproxy on chosen ports ------------------------------------------------ */

/* Starts $RELAY_NODE_BIN with `--port port --bind 127.0.0.1 --jwt-secret H_SECRET --node-id id
 * --redis redis_url --log-level info` and the NULL-terminated extra arguments (may be NULL).
 * Does not wait for it; see hd_wait_status(). Returns NULL with the reason in err. */
hd_proc *hd_node_start(int port, const char *node_id, const char *redis_url,
                       const char *const *extra, char *err, size_t errlen);

/* Starts `haproxy -f cfg -db` on 127.0.0.1:port in front of the nodes on 127.0.0.1:node_ports:
 * http mode, balance roundrobin, `option httpchk GET /readyz`, checks every 200 ms with fall 1
 * rise 1, `timeout tunnel 1h`, redispatch of failed connections. Waits until every node is
 * reachable through it: that many consecutive GET /readyz through the proxy answer 200 (one per
 * server in round robin). Returns NULL with the reason in err. */
hd_proc *hd_haproxy_start(int port, const int *node_ports, size_t n, char *err, size_t errlen);

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
