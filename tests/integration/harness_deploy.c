/*
 * harness_deploy.c - child processes with exactly the arguments a test chooses (relay-node on a
 * given port, scripts in their own process group), haproxy on chosen ports, port blocks and
 * /proc scans, for the deployment scenarios (local cluster script, rolling restart).
 */
#define _GNU_SOURCE /* pipe2 */
#include "harness_deploy.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness_cluster.h"
#include "relay/clock.h"

#define HD_MAX_ARGS       64
#define HD_GROUP_GRACE_MS 10000

struct hd_proc {
    pid_t pid;
    bool group; /* leads its own process group */
    bool reaped;
    int status;
    pid_t watchdog;
    int watchdog_fd; /* write end: 'r' = reaped, 'q' = quiet exit, EOF = the test died */
    char log_path[64];
    char label[64];
};

static void hd_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void hd_close_fds_except(int keep)
{
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
        max = 65536;
    for (int fd = 3; fd < max; fd++)
        if (fd != keep)
            close(fd);
}

/* True while some process is still in the group. */
static bool hd_group_exists(pid_t pgid)
{
    return kill(-pgid, 0) == 0 || errno == EPERM;
}

/* Ends a group: SIGINT (what Ctrl-C sends, so a script's trap cleans up), then SIGKILL for
 * whatever is still there after HD_GROUP_GRACE_MS. */
static void hd_stop_group(pid_t pgid, bool (*reaped)(void *), void *ud)
{
    kill(-pgid, SIGINT);
    int64_t deadline = clock_mono_ms() + HD_GROUP_GRACE_MS;
    while (clock_mono_ms() < deadline) {
        if (reaped && reaped(ud) && !hd_group_exists(pgid))
            return;
        if (!reaped && !hd_group_exists(pgid))
            return;
        hd_sleep_ms(20);
    }
    kill(-pgid, SIGKILL);
}

/* The watchdog: when the test dies first (EOF), stops the child, prints its log, removes it. */
static void hd_watchdog_main(int rfd, pid_t child, bool group, const char *log_path,
                             const char *label)
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
    if (group)
        hd_stop_group(child, NULL, NULL); /* the leader's pid is the group id */
    else if (!reaped)
        kill(child, SIGKILL);
    char *log = h_read_file(log_path);
    fprintf(stderr, "---- %s: captured output ----\n%s---- end of %s ----\n", label, log ? log : "",
            label);
    free(log);
    unlink(log_path);
    _exit(0);
}

static void hd_watchdog_say(hd_proc *p, char c)
{
    if (p->watchdog_fd >= 0) {
        ssize_t n = write(p->watchdog_fd, &c, 1);
        (void)n;
    }
}

/* The child side of hd_proc_start(); never returns. */
static void hd_child(const char *const *argv, const char *const *env, bool own_group, int logfd,
                     pid_t parent)
{
    if (own_group)
        setpgid(0, 0);
    else
        prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent)
        _exit(127);
    /* The test ignores SIGPIPE; a child must start with the default disposition. */
    signal(SIGPIPE, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, 0);
    dup2(logfd, 1);
    dup2(logfd, 2);
    hd_close_fds_except(-1);
    for (size_t i = 0; env && env[i]; i++)
        putenv((char *)env[i]);
    execvp(argv[0], (char *const *)argv);
    fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

hd_proc *hd_proc_start(const char *const *argv, const char *const *env, bool own_group,
                       const char *label, char *err, size_t errlen)
{
    hd_proc *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->watchdog_fd = -1;
    p->group = own_group;
    snprintf(p->label, sizeof p->label, "%s", label);
    snprintf(p->log_path, sizeof p->log_path, "/tmp/relay-it-deploy-XXXXXX");
    int logfd = mkstemp(p->log_path);
    if (logfd < 0) {
        snprintf(err, errlen, "mkstemp: %s", strerror(errno));
        free(p);
        return NULL;
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(logfd);
        unlink(p->log_path);
        free(p);
        return NULL;
    }
    if (pid == 0)
        hd_child(argv, env, own_group, logfd, parent);
    if (own_group)
        setpgid(pid, pid); /* also here, so the group exists before we signal it */
    close(logfd);
    p->pid = pid;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return p; /* no watchdog: a plain child still dies with the test (PDEATHSIG) */
    pid_t w = fork();
    if (w == 0) {
        /* Check's fork mode SIGKILLs the test's process group when a test ends; the watchdog
         * must outlive that to do its work. */
        setpgid(0, 0);
        hd_close_fds_except(pfd[0]);
        hd_watchdog_main(pfd[0], pid, own_group, p->log_path, p->label);
    }
    close(pfd[0]);
    if (w < 0) {
        close(pfd[1]);
        return p;
    }
    p->watchdog = w;
    p->watchdog_fd = pfd[1];
    return p;
}

pid_t hd_proc_pid(const hd_proc *p)
{
    return p->pid;
}

/* Non-blocking reap. Returns true once the child has exited. */
static bool hd_proc_poll(hd_proc *p)
{
    if (p->reaped)
        return true;
    int st;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
        p->reaped = true;
        p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        hd_watchdog_say(p, 'r');
        return true;
    }
    return false;
}

bool hd_proc_alive(hd_proc *p)
{
    return !hd_proc_poll(p);
}

int hd_proc_signal(hd_proc *p, int sig)
{
    if (hd_proc_poll(p))
        return -1;
    return kill(p->pid, sig);
}

int hd_proc_signal_group(hd_proc *p, int sig)
{
    if (!p->group)
        return -1;
    return kill(-p->pid, sig);
}

int hd_proc_wait(hd_proc *p, int timeout_ms)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    while (!hd_proc_poll(p)) {
        if (clock_mono_ms() >= deadline)
            return -1;
        hd_sleep_ms(5);
    }
    return p->status;
}

char *hd_proc_log(const hd_proc *p, size_t maxlen)
{
    char *log = h_read_file(p->log_path);
    if (!log)
        return strdup("");
    size_t len = strlen(log);
    if (maxlen > 0 && len > maxlen)
        memmove(log, log + len - maxlen, maxlen + 1);
    return log;
}

static bool hd_reaped_cb(void *ud)
{
    return hd_proc_poll(ud);
}

void hd_proc_destroy(hd_proc *p)
{
    if (!p)
        return;
    if (p->group && hd_group_exists(p->pid))
        hd_stop_group(p->pid, hd_reaped_cb, p);
    else if (!hd_proc_poll(p))
        kill(p->pid, SIGKILL);
    hd_proc_wait(p, 5000);
    if (p->watchdog_fd >= 0) {
        hd_watchdog_say(p, 'q');
        close(p->watchdog_fd);
    }
    if (p->watchdog > 0)
        waitpid(p->watchdog, NULL, 0);
    unlink(p->log_path);
    free(p);
}

/* ---- relay-node and haproxy ------------------------------------------------------------- */

hd_proc *hd_node_start(int port, const char *node_id, const char *redis_url,
                       const char *const *extra, char *err, size_t errlen)
{
    const char *bin = getenv("RELAY_NODE_BIN");
    if (!bin || !*bin) {
        snprintf(err, errlen, "RELAY_NODE_BIN is not set");
        return NULL;
    }
    char portbuf[16], label[64];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    snprintf(label, sizeof label, "relay-node %s :%d", node_id, port);
    const char *argv[HD_MAX_ARGS] = {
        bin,         "--port", portbuf,   "--bind",  "127.0.0.1",   "--jwt-secret", H_SECRET,
        "--node-id", node_id,  "--redis", redis_url, "--log-level", "info"};
    size_t k = 13;
    for (size_t i = 0; extra && extra[i] && k < HD_MAX_ARGS - 1; i++)
        argv[k++] = extra[i];
    argv[k] = NULL;
    return hd_proc_start(argv, NULL, false, label, err, errlen);
}

bool hd_wait_status(int port, const char *path, int status, int timeout_ms)
{
    return hc_wait_http_status(port, path, status, timeout_ms);
}

/* Writes the proxy configuration. Every response names the server that answered it
 * (X-Relay-Server), which is how start-up sees that every server is in rotation. */
static int hd_haproxy_write_cfg(const char *path, int port, const int *node_ports, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "global\n"
            "    maxconn 1024\n"
            "    nbthread 1\n"
            "defaults\n"
            "    mode http\n"
            "    timeout connect 1s\n"
            "    timeout client 1h\n"
            "    timeout server 1h\n"
            "    timeout tunnel 1h\n"
            "    timeout check 1s\n"
            "    retries 3\n"
            "    option redispatch 1\n"
            "frontend fe\n"
            "    bind 127.0.0.1:%d\n"
            "    default_backend nodes\n"
            "backend nodes\n"
            "    balance roundrobin\n"
            "    option httpchk GET /readyz\n"
            "    http-response set-header X-Relay-Server %%[srv_name]\n"
            "    default-server check inter 200ms fall 1 rise 1\n",
            port);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "    server n%zu 127.0.0.1:%d\n", i, node_ports[i]);
    return fclose(f) == 0 ? 0 : -1;
}

/* True once GET /readyz through the proxy has been answered by each of the n servers. */
static bool hd_haproxy_all_up(int port, size_t n, int timeout_ms)
{
    bool seen[32] = {false};
    size_t count = 0;
    int64_t deadline = clock_mono_ms() + timeout_ms;
    while (count < n && clock_mono_ms() < deadline) {
        h_http r;
        if (h_http_request(port, "GET", "/readyz", NULL, 1000, &r) == 0) {
            char name[32];
            unsigned idx;
            if (r.status == 200 && h_http_header(&r, "X-Relay-Server", name, sizeof name) &&
                sscanf(name, "n%u", &idx) == 1 && idx < n && idx < 32 && !seen[idx]) {
                seen[idx] = true;
                count++;
            }
            h_http_free(&r);
        } else {
            hd_sleep_ms(20);
        }
    }
    return count == n;
}

hd_proc *hd_haproxy_start(int port, const int *node_ports, size_t n, char *err, size_t errlen)
{
    char cfg[64];
    snprintf(cfg, sizeof cfg, "/tmp/relay-it-haproxy-%d.cfg", port);
    if (hd_haproxy_write_cfg(cfg, port, node_ports, n) < 0) {
        snprintf(err, errlen, "cannot write %s", cfg);
        return NULL;
    }
    const char *bin = getenv("HAPROXY_BIN");
    const char *argv[] = {bin && *bin ? bin : "haproxy", "-f", cfg, "-db", NULL};
    char label[64];
    snprintf(label, sizeof label, "haproxy :%d", port);
    hd_proc *p = hd_proc_start(argv, NULL, false, label, err, errlen);
    if (p && !hd_haproxy_all_up(port, n, 10000)) {
        char *log = hd_proc_log(p, 1500);
        snprintf(err, errlen, "haproxy on port %d did not reach all %zu servers; log:\n%s", port, n,
                 log);
        free(log);
        hd_proc_destroy(p);
        p = NULL;
    }
    unlink(cfg); /* haproxy read it at start-up */
    return p;
}

/* ---- Ports and process scans ------------------------------------------------------------- */

static bool hd_port_free(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    return ok;
}

int hd_free_port_block(int count, const int *avoid, size_t avoid_n)
{
    unsigned seed = (unsigned)getpid() ^ (unsigned)clock_mono_ms();
    for (int attempt = 0; attempt < 200; attempt++) {
        int base = 20000 + (int)(rand_r(&seed) % (12000u - (unsigned)count));
        bool ok = true;
        for (int i = 0; i < count && ok; i++) {
            for (size_t k = 0; k < avoid_n && ok; k++)
                ok = avoid[k] != base + i;
            ok = ok && hd_port_free(base + i);
        }
        if (ok)
            return base;
    }
    return -1;
}

bool hd_port_refuses(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool refused = connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno == ECONNREFUSED;
    close(fd);
    return refused;
}

/* Reads /proc/PID/<name> (NUL-separated for cmdline/environ) into buf; returns its length. */
static size_t hd_proc_file(pid_t pid, const char *name, char *buf, size_t cap)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, buf + len, cap - 1 - len);
        if (n <= 0)
            break;
        len += (size_t)n;
        if (len == cap - 1)
            break;
    }
    close(fd);
    buf[len] = 0;
    return len;
}

/* Joins the NUL-separated entries of buf[0..len) with spaces (and one after the last), so a
 * needle may span arguments ("--port 8081 "). Returns the first needle found, or NULL. */
static const char *hd_match(char *buf, size_t len, size_t cap, const char *const *needles)
{
    for (size_t i = 0; i < len; i++)
        if (buf[i] == 0)
            buf[i] = ' ';
    if (len + 1 < cap) {
        buf[len] = ' ';
        buf[len + 1] = 0;
    }
    for (size_t i = 0; needles && needles[i]; i++)
        if (strstr(buf, needles[i]))
            return needles[i];
    return NULL;
}

/* State and process group of /proc/PID/stat; false if the process is gone. */
static bool hd_proc_stat(pid_t pid, char *state, pid_t *pgid)
{
    char buf[512];
    if (hd_proc_file(pid, "stat", buf, sizeof buf) == 0)
        return false;
    const char *rp = strrchr(buf, ')'); /* comm may hold spaces and parentheses */
    int ppid, grp;
    if (!rp || sscanf(rp + 1, " %c %d %d", state, &ppid, &grp) != 3)
        return false;
    *pgid = grp;
    return true;
}

size_t hd_scan(pid_t pgid, const char *const *needles, hd_found *out, size_t max)
{
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    static char buf[256 * 1024];
    size_t found = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        pid_t pid = (pid_t)atoi(e->d_name);
        char state;
        pid_t grp;
        if (pid == getpid() || !hd_proc_stat(pid, &state, &grp) || state == 'Z')
            continue;
        const char *what = NULL;
        char text[160] = "";
        if (pgid > 0 && grp == pgid)
            what = "in the process group";
        size_t len;
        if (!what && (len = hd_proc_file(pid, "cmdline", buf, sizeof buf - 1)) > 0 &&
            (what = hd_match(buf, len, sizeof buf, needles)) != NULL)
            snprintf(text, sizeof text, "command line has \"%s\": %.100s", what, buf);
        if (!what && (len = hd_proc_file(pid, "environ", buf, sizeof buf - 1)) > 0 &&
            (what = hd_match(buf, len, sizeof buf, needles)) != NULL)
            snprintf(text, sizeof text, "environment has \"%s\"", what);
        if (!what)
            continue;
        if (!text[0])
            snprintf(text, sizeof text, "%s", what);
        if (found < max) {
            hd_found *f = &out[found];
            f->pid = pid;
            f->pgid = grp;
            snprintf(f->what, sizeof f->what, "%s", text);
            if (hd_proc_file(pid, "comm", f->comm, sizeof f->comm) > 0)
                f->comm[strcspn(f->comm, "\n")] = 0;
        }
        found++;
    }
    closedir(d);
    return found;
}
