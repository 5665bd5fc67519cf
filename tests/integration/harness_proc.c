/*
 * harness_proc.c - child processes with a log file and a watchdog (harness_proc.h).
 */
#define _GNU_SOURCE /* pipe2 */
#include "harness_proc.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness.h"
#include "relay/clock.h"

#define HP_GROUP_GRACE_MS 10000
#define HP_PATH_SIZE      512

struct hp_proc {
    pid_t pid;
    bool group;    /* leads its own process group */
    bool temp_log; /* log_path is ours to remove */
    bool reaped;
    int status;
    pid_t watchdog;
    int watchdog_fd; /* write end: 'r' = reaped, 'q' = quiet exit, EOF = the test died */
    char log_path[HP_PATH_SIZE];
    char cleanup_dir[HP_PATH_SIZE];
    char label[64];
};

void hp_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

void hp_close_fds_except(int keep)
{
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
        max = 65536;
    for (int fd = 3; fd < max; fd++)
        if (fd != keep)
            close(fd);
}

static int hp_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    remove(path);
    return 0;
}

void hp_rm_tree(const char *dir)
{
    if (dir && *dir)
        nftw(dir, hp_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* True while some process is still in the group. */
static bool hp_group_exists(pid_t pgid)
{
    return kill(-pgid, 0) == 0 || errno == EPERM;
}

/* Ends a group: SIGINT (what Ctrl-C sends, so a script's trap cleans up), then SIGKILL for
 * whatever is still there after HP_GROUP_GRACE_MS. */
static void hp_stop_group(pid_t pgid, hp_proc *leader)
{
    kill(-pgid, SIGINT);
    int64_t deadline = clock_mono_ms() + HP_GROUP_GRACE_MS;
    while (clock_mono_ms() < deadline) {
        if ((!leader || !hp_alive(leader)) && !hp_group_exists(pgid))
            return;
        hp_sleep_ms(20);
    }
    kill(-pgid, SIGKILL);
}

/* The watchdog: when the test dies first (EOF), stops the child, prints its log and removes
 * its files. */
static void hp_watchdog_main(int rfd, const hp_proc *p)
{
    bool reaped = false;
    for (;;) {
        char c;
        ssize_t n = read(rfd, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 1 && c == 'r') {
            reaped = true;
            continue;
        }
        if (n == 1 && c == 'q')
            _exit(0);
        break;
    }
    if (p->group) {
        hp_stop_group(p->pid, NULL); /* the leader's pid is the group id */
    } else if (!reaped) {
        kill(p->pid, SIGKILL);
        /* Not our child: poll until it is gone before its files go. */
        for (int i = 0; i < 200 && kill(p->pid, 0) == 0; i++)
            hp_sleep_ms(10);
    }
    char *log = h_read_file(p->log_path);
    fprintf(stderr, "---- %s: captured output ----\n%s---- end of %s ----\n", p->label,
            log ? log : "", p->label);
    free(log);
    if (p->temp_log)
        unlink(p->log_path);
    hp_rm_tree(p->cleanup_dir);
    _exit(0);
}

static void hp_watchdog_say(hp_proc *p, char c)
{
    if (p->watchdog_fd >= 0) {
        ssize_t n = write(p->watchdog_fd, &c, 1);
        (void)n;
    }
}

/* The child side of hp_start(); never returns. */
static void hp_child(const hp_opts *o, int logfd, pid_t parent)
{
    if (o->own_group)
        setpgid(0, 0);
    else
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    /* The test ignores SIGPIPE; a child must start with the default dispositions. */
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, 0);
    dup2(logfd, 1);
    dup2(logfd, 2);
    hp_close_fds_except(-1);
    for (size_t i = 0; o->env && o->env[i]; i++)
        putenv((char *)o->env[i]);
    execvp(o->argv[0], (char *const *)o->argv);
    fprintf(stderr, "exec %s: %s\n", o->argv[0], strerror(errno));
    _exit(127);
}

static int hp_open_log(hp_proc *p, const hp_opts *o, char *err, size_t errlen)
{
    int fd;
    if (o->log_path) {
        snprintf(p->log_path, sizeof p->log_path, "%s", o->log_path);
        fd = open(p->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    } else {
        p->temp_log = true;
        snprintf(p->log_path, sizeof p->log_path, "/tmp/relay-it-log-XXXXXX");
        fd = mkostemp(p->log_path, O_CLOEXEC);
    }
    if (fd < 0)
        snprintf(err, errlen, "log file %s: %s", p->log_path, strerror(errno));
    return fd;
}

/* Starts the watchdog for p; without one the child still dies with the test (PDEATHSIG). */
static void hp_start_watchdog(hp_proc *p)
{
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return;
    pid_t w = fork();
    if (w == 0) {
        /* Check's fork mode SIGKILLs the test's process group when a test ends; the watchdog
         * must outlive that to do its work. */
        setpgid(0, 0);
        hp_close_fds_except(pfd[0]);
        hp_watchdog_main(pfd[0], p);
    }
    close(pfd[0]);
    if (w < 0) {
        close(pfd[1]);
        return;
    }
    setpgid(w, w); /* also from here, so a test that dies at once cannot take it along */
    p->watchdog = w;
    p->watchdog_fd = pfd[1];
}

hp_proc *hp_start(const hp_opts *o, char *err, size_t errlen)
{
    hp_proc *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->watchdog_fd = -1;
    p->group = o->own_group;
    snprintf(p->label, sizeof p->label, "%s", o->label ? o->label : o->argv[0]);
    snprintf(p->cleanup_dir, sizeof p->cleanup_dir, "%s", o->cleanup_dir ? o->cleanup_dir : "");
    int logfd = hp_open_log(p, o, err, errlen);
    if (logfd < 0) {
        free(p);
        return NULL;
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(logfd);
        if (p->temp_log)
            unlink(p->log_path);
        free(p);
        return NULL;
    }
    if (pid == 0)
        hp_child(o, logfd, parent);
    if (o->own_group)
        setpgid(pid, pid); /* also here, so the group exists before we signal it */
    close(logfd);
    p->pid = pid;
    hp_start_watchdog(p);
    return p;
}

pid_t hp_pid(const hp_proc *p)
{
    return p->pid;
}

const char *hp_log_path(const hp_proc *p)
{
    return p->log_path;
}

bool hp_alive(hp_proc *p)
{
    if (p->reaped)
        return false;
    int st;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
        p->reaped = true;
        p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        hp_watchdog_say(p, 'r');
        return false;
    }
    return true;
}

int hp_signal(hp_proc *p, int sig)
{
    return hp_alive(p) ? kill(p->pid, sig) : -1;
}

int hp_signal_group(hp_proc *p, int sig)
{
    return p->group ? kill(-p->pid, sig) : -1;
}

int hp_wait(hp_proc *p, int timeout_ms)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    while (hp_alive(p)) {
        if (clock_mono_ms() >= deadline)
            return -1;
        hp_sleep_ms(5);
    }
    return p->status;
}

char *hp_log(const hp_proc *p, size_t maxlen)
{
    char *log = h_read_file(p->log_path);
    if (!log)
        return strdup("");
    size_t len = strlen(log);
    if (maxlen > 0 && len > maxlen)
        memmove(log, log + len - maxlen, maxlen + 1);
    return log;
}

void hp_destroy(hp_proc *p)
{
    if (!p)
        return;
    if (p->group && hp_group_exists(p->pid))
        hp_stop_group(p->pid, p);
    else if (hp_alive(p))
        kill(p->pid, SIGKILL);
    hp_wait(p, 5000);
    if (p->watchdog_fd >= 0) {
        hp_watchdog_say(p, 'q');
        close(p->watchdog_fd);
    }
    if (p->watchdog > 0)
        waitpid(p->watchdog, NULL, 0);
    if (p->temp_log)
        unlink(p->log_path);
    free(p);
}
