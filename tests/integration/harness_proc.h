/**
 * @file harness_proc.h
 * Child processes for the integration tests, the one implementation every harness file uses:
 * a program with stdin from /dev/null and stdout+stderr appended to a log file, and a watchdog
 * process that, if the test process dies without destroying the child (a failed Check assertion
 * exits the test), stops it — a process group with SIGINT first, so a script's own cleanup
 * runs, then SIGKILL — prints its captured output and removes its files. Children that do not
 * lead their own group also die with the test (PDEATHSIG).
 */
#ifndef RELAY_IT_HARNESS_PROC_H
#define RELAY_IT_HARNESS_PROC_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct hp_proc hp_proc;

typedef struct hp_opts {
    const char *const *argv; /* NULL-terminated; argv[0] is looked up in PATH */
    const char *const *env;  /* NULL-terminated "NAME=value" added to the environment, or NULL */
    bool own_group;          /* leads a new process group (hp_signal_group reaches all of it) */
    const char *label;       /* names the process in the watchdog's output */
    const char *log_path;    /* append output here (kept on destroy); NULL: a fresh temp file,
                                removed on destroy */
    const char *cleanup_dir; /* removed by the watchdog when the test dies first; may be NULL */
} hp_opts;

/* Starts a process. Returns NULL with the reason in err. */
hp_proc *hp_start(const hp_opts *o, char *err, size_t errlen);

pid_t hp_pid(const hp_proc *p);
const char *hp_log_path(const hp_proc *p);

/* True while the process has not exited (reaps it when it has). */
bool hp_alive(hp_proc *p);

/* Sends sig to the process, or to its whole process group. Returns 0 or -1. */
int hp_signal(hp_proc *p, int sig);
int hp_signal_group(hp_proc *p, int sig);

/* Waits up to timeout_ms for the process to exit. Returns its exit status (0-255), 128+signal
 * if a signal ended it, or -1 on timeout. timeout_ms 0 polls once. */
int hp_wait(hp_proc *p, int timeout_ms);

/* The captured output so far (malloc'd, NUL-terminated, "" if unreadable), cut to its last
 * maxlen bytes when maxlen > 0. */
char *hp_log(const hp_proc *p, size_t maxlen);

/* Stops the process if it still runs (a group leader: SIGINT to the group, SIGKILL after 10 s;
 * otherwise SIGKILL), reaps it, retires the watchdog quietly, removes a temp log and frees p.
 * NULL is a no-op. */
void hp_destroy(hp_proc *p);

/* Small helpers the harness files share. */
void hp_sleep_ms(int ms);
void hp_close_fds_except(int keep); /* closes every descriptor from 3 up except keep (-1) */
void hp_rm_tree(const char *dir);   /* removes a directory tree; a missing one is fine */

#endif
