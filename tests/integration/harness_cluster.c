/*
 * harness_cluster.c - processes for the cluster scenarios: a restartable redis-server with AOF,
 * haproxy in front of the nodes, a synchronous hiredis client, cluster nodes, HTTP and RSS
 * probes. The buffering WebSocket client is in harness_cluster_ws.c.
 */
#define _GNU_SOURCE /* pipe2 */
#include "harness_cluster.h"

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

#include "relay/clock.h"

#define HC_START_MS  10000
#define HC_MAX_ARGS  64
#define HC_PATH_SIZE 256

/* ---- Child processes ------------------------------------------------------------------------ */

/* A child with its output appended to a log file, and a watchdog that kills it, prints the log
 * and removes `cleanup_dir` if the test process dies first (EOF on the pipe). */
typedef struct hc_proc {
    pid_t pid;
    pid_t watchdog;
    int watchdog_fd; /* write end: 'q' = exit quietly, EOF = the test died */
    bool reaped;
    int status;
} hc_proc;

static void hc_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static void hc_close_fds_except(int keep)
{
    long max = sysconf(_SC_OPEN_MAX);
    if (max < 0 || max > 65536)
        max = 65536;
    for (int fd = 3; fd < max; fd++)
        if (fd != keep)
            close(fd);
}

static int hc_rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* Removes a directory tree; a missing one is fine. */
static void hc_rm_tree(const char *dir)
{
    if (dir && *dir)
        nftw(dir, hc_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

static void hc_watchdog_main(int rfd, pid_t child, const char *log_path, const char *cleanup_dir,
                             const char *label)
{
    for (;;) {
        char c;
        ssize_t n = read(rfd, &c, 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n == 1 && c == 'q')
            _exit(0);
        if (n != 1)
            break;
    }
    kill(child, SIGKILL);
    /* Let it die before its files go (it is not our child: poll until it is gone). */
    for (int i = 0; i < 200 && kill(child, 0) == 0; i++)
        hc_sleep_ms(10);
    char *log = h_read_file(log_path);
    fprintf(stderr, "---- %s: captured output ----\n%s---- end of %s ----\n", label, log ? log : "",
            label);
    free(log);
    hc_rm_tree(cleanup_dir);
    _exit(0);
}

/* Starts argv with stdout+stderr appended to log_path. Returns 0 or -1 with the reason in err. */
static int hc_proc_spawn(hc_proc *p, char *const argv[], const char *log_path,
                         const char *cleanup_dir, const char *label, char *err, size_t errlen)
{
    memset(p, 0, sizeof *p);
    p->watchdog_fd = -1;
    int logfd = open(log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (logfd < 0) {
        snprintf(err, errlen, "open %s: %s", log_path, strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(logfd);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        hc_close_fds_except(-1);
        execvp(argv[0], argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(logfd);
    p->pid = pid;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return 0; /* no watchdog: the child still dies with the test (PDEATHSIG) */
    pid_t w = fork();
    if (w == 0) {
        /* Out of the test's process group: Check kills that group when a test ends. (Fails
         * harmlessly when the parent's setpgid came first.) */
        setsid();
        hc_close_fds_except(pfd[0]);
        hc_watchdog_main(pfd[0], pid, log_path, cleanup_dir, label);
    }
    close(pfd[0]);
    if (w < 0) {
        close(pfd[1]);
        return 0;
    }
    setpgid(w, w); /* also from here, so a test that dies at once cannot take it along */
    p->watchdog = w;
    p->watchdog_fd = pfd[1];
    return 0;
}

static bool hc_proc_poll(hc_proc *p)
{
    if (p->reaped || p->pid <= 0)
        return true;
    int st;
    if (waitpid(p->pid, &st, WNOHANG) == p->pid) {
        p->reaped = true;
        p->status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        return true;
    }
    return false;
}

/* Kills (SIGKILL) and reaps the child and retires its watchdog quietly. Files stay. */
static void hc_proc_end(hc_proc *p)
{
    if (!hc_proc_poll(p)) {
        kill(p->pid, SIGKILL);
        int64_t deadline = clock_mono_ms() + 5000;
        while (!hc_proc_poll(p) && clock_mono_ms() < deadline)
            hc_sleep_ms(2);
    }
    if (p->watchdog_fd >= 0) {
        ssize_t n = write(p->watchdog_fd, "q", 1);
        (void)n;
        close(p->watchdog_fd);
        p->watchdog_fd = -1;
    }
    if (p->watchdog > 0)
        waitpid(p->watchdog, NULL, 0);
    p->watchdog = 0;
}

/* ---- redis-server ------------------------------------------------------------------------- */

struct hc_redis {
    hc_proc proc;
    int port;
    bool aof;
    int generation; /* data directory number: data0, data1, ... */
    char base[HC_PATH_SIZE];
    char log_path[HC_PATH_SIZE + 16];
    char url[64];
};

static bool hc_redis_pings(int port)
{
    struct timeval tv = {0, 300 * 1000};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    bool ok = false;
    if (c && !c->err) {
        redisSetTimeout(c, tv);
        redisReply *r = redisCommand(c, "PING");
        ok = r && r->type == REDIS_REPLY_STATUS && !strcmp(r->str, "PONG");
        if (r)
            freeReplyObject(r);
    }
    if (c)
        redisFree(c);
    return ok;
}

/* Starts the server in data<generation> on r->port. Returns 0 or -1 with the reason in err. */
static int hc_redis_spawn(hc_redis *r, char *err, size_t errlen)
{
    const char *bin = getenv("REDIS_SERVER_BIN");
    if (!bin || !*bin)
        bin = "redis-server";
    char dir[HC_PATH_SIZE + 16], port[16];
    snprintf(dir, sizeof dir, "%s/data%d", r->base, r->generation);
    if (mkdir(dir, 0700) < 0 && errno != EEXIST) {
        snprintf(err, errlen, "mkdir %s: %s", dir, strerror(errno));
        return -1;
    }
    snprintf(port, sizeof port, "%d", r->port);
    const char *argv[] = {bin,
                          "--port",
                          port,
                          "--bind",
                          "127.0.0.1",
                          "--save",
                          "",
                          "--dir",
                          dir,
                          "--appendonly",
                          r->aof ? "yes" : "no",
                          "--appendfsync",
                          "always",
                          "--daemonize",
                          "no",
                          "--protected-mode",
                          "no",
                          NULL};
    char label[64];
    snprintf(label, sizeof label, "redis-server :%d", r->port);
    if (hc_proc_spawn(&r->proc, (char *const *)argv, r->log_path, r->base, label, err, errlen) < 0)
        return -1;
    int64_t deadline = clock_mono_ms() + HC_START_MS;
    while (clock_mono_ms() < deadline && !hc_proc_poll(&r->proc)) {
        if (hc_redis_pings(r->port))
            return 0;
        hc_sleep_ms(10);
    }
    char *log = h_read_file(r->log_path);
    snprintf(err, errlen, "redis-server on port %d did not start; log:\n%.1500s", r->port,
             log ? log : "");
    free(log);
    hc_proc_end(&r->proc);
    return -1;
}

hc_redis *hc_redis_start_at(const char *file, int line, bool aof)
{
    char err[2048] = "";
    for (int attempt = 0; attempt < 3; attempt++) {
        hc_redis *r = calloc(1, sizeof *r);
        h_check_at(file, line, r != NULL, "out of memory");
        r->aof = aof;
        snprintf(r->base, sizeof r->base, "/tmp/relay-it-redis-XXXXXX");
        h_check_at(file, line, mkdtemp(r->base) != NULL, "mkdtemp: %s", strerror(errno));
        snprintf(r->log_path, sizeof r->log_path, "%s/redis.log", r->base);
        r->port = h_free_port();
        snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", r->port);
        if (hc_redis_spawn(r, err, sizeof err) == 0)
            return r;
        hc_redis_destroy(r); /* the port may have been taken meanwhile: try another */
    }
    h_check_at(file, line, false, "cannot start redis-server: %s", err);
    return NULL;
}

int hc_redis_port(const hc_redis *r)
{
    return r->port;
}

pid_t hc_redis_pid(const hc_redis *r)
{
    return r->proc.pid;
}

const char *hc_redis_url(const hc_redis *r)
{
    return r->url;
}

int hc_redis_signal(hc_redis *r, int sig)
{
    if (hc_proc_poll(&r->proc))
        return -1;
    return kill(r->proc.pid, sig);
}

void hc_redis_kill(hc_redis *r)
{
    hc_proc_end(&r->proc);
}

void hc_redis_restart_at(const char *file, int line, hc_redis *r, bool keep_data)
{
    hc_proc_end(&r->proc);
    if (!keep_data)
        r->generation++;
    char err[2048] = "";
    /* The port was ours a moment ago; a freshly killed server's port binds at once (Redis sets
     * SO_REUSEADDR), so a failure here is real. */
    int rc = hc_redis_spawn(r, err, sizeof err);
    h_check_at(file, line, rc == 0, "cannot restart redis-server on port %d: %s", r->port, err);
}

void hc_redis_destroy(hc_redis *r)
{
    if (!r)
        return;
    hc_proc_end(&r->proc); /* SIGKILL also ends a stopped server */
    hc_rm_tree(r->base);
    free(r);
}

redisReply *hc_redis_cmd(const hc_redis *r, const char *fmt, ...)
{
    struct timeval tv = {2, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", r->port, tv);
    if (!c || c->err) {
        fprintf(stderr, "hc_redis_cmd: connect: %s\n", c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    va_list ap;
    va_start(ap, fmt);
    redisReply *rep = redisvCommand(c, fmt, ap);
    va_end(ap);
    if (!rep)
        fprintf(stderr, "hc_redis_cmd: %s\n", c->errstr);
    else if (rep->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "hc_redis_cmd: error reply: %s\n", rep->str);
        freeReplyObject(rep);
        rep = NULL;
    }
    redisFree(c);
    return rep;
}

static int hc_cmp_json_str(const void *a, const void *b)
{
    return strcmp(json_string_value(*(json_t *const *)a), json_string_value(*(json_t *const *)b));
}

/* A reply's string elements as a sorted JSON array. */
static json_t *hc_sorted_strings(redisReply *rep)
{
    if (!rep || rep->type != REDIS_REPLY_ARRAY) {
        if (rep)
            freeReplyObject(rep);
        return NULL;
    }
    json_t **items = calloc(rep->elements + 1, sizeof *items);
    for (size_t i = 0; items && i < rep->elements; i++)
        items[i] = json_stringn(rep->element[i]->str, rep->element[i]->len);
    json_t *out = json_array();
    if (items) {
        qsort(items, rep->elements, sizeof *items, hc_cmp_json_str);
        for (size_t i = 0; i < rep->elements; i++)
            json_array_append_new(out, items[i]);
    }
    free(items);
    freeReplyObject(rep);
    return out;
}

json_t *hc_redis_channels(const hc_redis *r, const char *pattern)
{
    return hc_sorted_strings(hc_redis_cmd(r, "PUBSUB CHANNELS %s", pattern));
}

json_t *hc_redis_keys(const hc_redis *r, const char *pattern)
{
    return hc_sorted_strings(hc_redis_cmd(r, "KEYS %s", pattern));
}

/* ---- Cluster nodes, HTTP, RSS -------------------------------------------------------------- */

h_node *hc_node_start_at(const char *file, int line, const char *url, const char *node_id,
                         const char *arg, ...)
{
    const char *argv[HC_MAX_ARGS];
    size_t k = 0;
    argv[k++] = "--redis";
    argv[k++] = url;
    argv[k++] = "--node-id";
    argv[k++] = node_id;
    va_list ap;
    va_start(ap, arg);
    for (const char *a = arg; a && k < HC_MAX_ARGS - 1; a = va_arg(ap, const char *))
        argv[k++] = a;
    va_end(ap);
    argv[k] = NULL;
    char err[2048];
    h_node *n = h_node_try_startv(argv, err, sizeof err);
    h_check_at(file, line, n != NULL, "cannot start relay-node %s: %s", node_id, err);
    if (!hc_wait_http_status(h_node_port(n), "/readyz", 200, HC_START_MS)) {
        char *log = hc_node_log_tail(n, 1500);
        h_check_at(file, line, false, "relay-node %s never became ready; log:\n%s", node_id, log);
    }
    return n;
}

int hc_http_status(int port, const char *path)
{
    h_http r;
    if (h_http_request(port, "GET", path, NULL, 1000, &r) < 0)
        return -1;
    int st = r.status;
    h_http_free(&r);
    return st;
}

bool hc_wait_http_status(int port, const char *path, int status, int timeout_ms)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    for (;;) {
        if (hc_http_status(port, path) == status)
            return true;
        if (clock_mono_ms() >= deadline)
            return false;
        hc_sleep_ms(20);
    }
}

json_t *hc_http_json(int port, const char *path)
{
    h_http r;
    if (h_http_request(port, "GET", path, NULL, 2000, &r) < 0)
        return NULL;
    json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
    h_http_free(&r);
    return j;
}

long hc_rss_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

char *hc_node_log_tail(const h_node *n, size_t maxlen)
{
    char *log = h_node_log(n);
    if (!log)
        return strdup("");
    size_t len = strlen(log);
    if (len > maxlen)
        memmove(log, log + len - maxlen, maxlen + 1);
    return log;
}

int hc_run(int timeout_ms, char **out, const char *const *argv)
{
    if (out)
        *out = NULL;
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) < 0)
        return -1;
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0)
            dup2(devnull, 0);
        dup2(pfd[1], 1);
        hc_close_fds_except(-1);
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    fcntl(pfd[0], F_SETFL, O_NONBLOCK);
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    int64_t deadline = clock_mono_ms() + timeout_ms;
    int status = -1;
    bool reaped = false, eof = false;
    while (buf && !(reaped && eof)) {
        if (!eof) {
            if (cap - len < 1024) {
                char *g = realloc(buf, cap * 2);
                if (!g)
                    break;
                buf = g;
                cap *= 2;
            }
            ssize_t n = read(pfd[0], buf + len, cap - len - 1);
            if (n > 0)
                len += (size_t)n;
            else if (n == 0)
                eof = true;
        }
        int st;
        if (!reaped && waitpid(pid, &st, WNOHANG) == pid) {
            reaped = true;
            status = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        }
        if (clock_mono_ms() >= deadline) {
            if (!reaped) {
                kill(pid, SIGKILL);
                waitpid(pid, NULL, 0);
            }
            status = -1;
            break;
        }
        if (!(reaped && eof))
            hc_sleep_ms(5);
    }
    close(pfd[0]);
    if (buf)
        buf[len] = 0;
    if (out)
        *out = buf;
    else
        free(buf);
    return status;
}

/* ---- haproxy ------------------------------------------------------------------------------ */

struct hc_haproxy {
    hc_proc proc;
    int port;
    char base[HC_PATH_SIZE];
    char log_path[HC_PATH_SIZE + 16];
};

/* Writes the configuration for port in front of the nodes. Returns 0 or -1. */
static int hc_haproxy_write_cfg(const char *path, int port, h_node *const *nodes, size_t n)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f,
            "global\n"
            "    maxconn 4096\n"
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
            "    default-server inter 250ms fall 1 rise 2\n",
            port);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "    server n%zu 127.0.0.1:%d check\n", i, h_node_port(nodes[i]));
    return fclose(f) == 0 ? 0 : -1;
}

/* One attempt on a fresh port. Returns 0, or -1 with the reason in err. */
static int hc_haproxy_try(hc_haproxy *p, h_node *const *nodes, size_t n, char *err, size_t errlen)
{
    p->port = h_free_port();
    char cfg[HC_PATH_SIZE + 16];
    snprintf(cfg, sizeof cfg, "%s/haproxy.cfg", p->base);
    if (hc_haproxy_write_cfg(cfg, p->port, nodes, n) < 0) {
        snprintf(err, errlen, "cannot write %s", cfg);
        return -1;
    }
    const char *bin = getenv("HAPROXY_BIN");
    const char *argv[] = {bin && *bin ? bin : "haproxy", "-f", cfg, "-db", NULL};
    char label[64];
    snprintf(label, sizeof label, "haproxy :%d", p->port);
    if (hc_proc_spawn(&p->proc, (char *const *)argv, p->log_path, p->base, label, err, errlen) < 0)
        return -1;
    int64_t deadline = clock_mono_ms() + HC_START_MS;
    while (clock_mono_ms() < deadline && !hc_proc_poll(&p->proc)) {
        if (hc_http_status(p->port, "/readyz") == 200)
            return 0;
        hc_sleep_ms(20);
    }
    char *log = h_read_file(p->log_path);
    snprintf(err, errlen, "haproxy on port %d did not pass /readyz; log:\n%.1500s", p->port,
             log ? log : "");
    free(log);
    hc_proc_end(&p->proc);
    return -1;
}

hc_haproxy *hc_haproxy_start_at(const char *file, int line, h_node *const *nodes, size_t n)
{
    hc_haproxy *p = calloc(1, sizeof *p);
    h_check_at(file, line, p != NULL, "out of memory");
    snprintf(p->base, sizeof p->base, "/tmp/relay-it-haproxy-XXXXXX");
    h_check_at(file, line, mkdtemp(p->base) != NULL, "mkdtemp: %s", strerror(errno));
    snprintf(p->log_path, sizeof p->log_path, "%s/haproxy.log", p->base);
    char err[2048] = "";
    for (int attempt = 0; attempt < 3; attempt++)
        if (hc_haproxy_try(p, nodes, n, err, sizeof err) == 0)
            return p;
    hc_haproxy_destroy(p);
    h_check_at(file, line, false, "cannot start haproxy: %s", err);
    return NULL;
}

int hc_haproxy_port(const hc_haproxy *p)
{
    return p->port;
}

void hc_haproxy_destroy(hc_haproxy *p)
{
    if (!p)
        return;
    hc_proc_end(&p->proc);
    hc_rm_tree(p->base);
    free(p);
}
