/*
 * harness_cluster.c - processes for the cluster scenarios: a restartable redis-server with AOF,
 * haproxy in front of the nodes, a synchronous hiredis client, cluster nodes, HTTP and RSS
 * probes. The buffering WebSocket client is in harness_cluster_ws.c.
 */
#define _GNU_SOURCE /* pipe2 */
#include "harness_cluster.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "harness_proc.h"
#include "relay/clock.h"

#define HC_START_MS  10000
#define HC_MAX_ARGS  64
#define HC_PATH_SIZE 256

/* Starts argv with its output appended to log_path; the watchdog removes cleanup_dir if the test
 * dies first. NULL with the reason in err. */
static hp_proc *hc_spawn(const char *const *argv, const char *log_path, const char *cleanup_dir,
                         const char *label, char *err, size_t errlen)
{
    hp_opts o = {.argv = argv, .label = label, .log_path = log_path, .cleanup_dir = cleanup_dir};
    return hp_start(&o, err, errlen);
}

/* Kills (SIGKILL) and reaps the child; its files stay. */
static void hc_end(hp_proc **p)
{
    hp_destroy(*p);
    *p = NULL;
}

static bool hc_running(hp_proc *p)
{
    return p && hp_alive(p);
}

/* ---- redis-server ------------------------------------------------------------------------- */

struct hc_redis {
    hp_proc *proc;
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
    r->proc = hc_spawn(argv, r->log_path, r->base, label, err, errlen);
    if (!r->proc)
        return -1;
    int64_t deadline = clock_mono_ms() + HC_START_MS;
    while (clock_mono_ms() < deadline && hc_running(r->proc)) {
        if (hc_redis_pings(r->port))
            return 0;
        hp_sleep_ms(10);
    }
    char *log = h_read_file(r->log_path);
    snprintf(err, errlen, "redis-server on port %d did not start; log:\n%.1500s", r->port,
             log ? log : "");
    free(log);
    hc_end(&r->proc);
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
    return r->proc ? hp_pid(r->proc) : -1;
}

const char *hc_redis_url(const hc_redis *r)
{
    return r->url;
}

int hc_redis_signal(hc_redis *r, int sig)
{
    return r->proc ? hp_signal(r->proc, sig) : -1;
}

void hc_redis_kill(hc_redis *r)
{
    hc_end(&r->proc);
}

void hc_redis_restart_at(const char *file, int line, hc_redis *r, bool keep_data)
{
    hc_end(&r->proc);
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
    hc_end(&r->proc); /* SIGKILL also ends a stopped server */
    hp_rm_tree(r->base);
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

hc_redis *hc_cluster_start_at(const char *file, int line, bool aof, h_node **nodes, size_t n)
{
    hc_redis *r = hc_redis_start_at(file, line, aof);
    for (size_t i = 0; i < n && i < 26; i++) {
        char id[2] = {(char)('a' + i), 0};
        nodes[i] = hc_node_start_at(file, line, hc_redis_url(r), id, NULL);
    }
    return r;
}

void hc_cluster_destroy(hc_redis *r, h_node **nodes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h_node_destroy(nodes[i]);
    hc_redis_destroy(r);
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
        hp_sleep_ms(20);
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
        hp_close_fds_except(-1);
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
            hp_sleep_ms(5);
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
    hp_proc *proc;
    int port;
    char base[HC_PATH_SIZE];
    char log_path[HC_PATH_SIZE + 16];
};

int hc_haproxy_write_cfg(const char *path, int port, const int *node_ports, size_t n)
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
            "    http-response set-header X-Relay-Server %%[srv_name]\n"
            "    default-server check inter 200ms fall 1 rise 1\n",
            port);
    for (size_t i = 0; i < n; i++)
        fprintf(f, "    server n%zu 127.0.0.1:%d\n", i, node_ports[i]);
    return fclose(f) == 0 ? 0 : -1;
}

/* One attempt on a fresh port. Returns 0, or -1 with the reason in err. */
static int hc_haproxy_try(hc_haproxy *p, h_node *const *nodes, size_t n, char *err, size_t errlen)
{
    p->port = h_free_port();
    char cfg[HC_PATH_SIZE + 16];
    snprintf(cfg, sizeof cfg, "%s/haproxy.cfg", p->base);
    int ports[64];
    for (size_t i = 0; i < n && i < 64; i++)
        ports[i] = h_node_port(nodes[i]);
    if (hc_haproxy_write_cfg(cfg, p->port, ports, n < 64 ? n : 64) < 0) {
        snprintf(err, errlen, "cannot write %s", cfg);
        return -1;
    }
    const char *bin = getenv("HAPROXY_BIN");
    const char *argv[] = {bin && *bin ? bin : "haproxy", "-f", cfg, "-db", NULL};
    char label[64];
    snprintf(label, sizeof label, "haproxy :%d", p->port);
    p->proc = hc_spawn(argv, p->log_path, p->base, label, err, errlen);
    if (!p->proc)
        return -1;
    int64_t deadline = clock_mono_ms() + HC_START_MS;
    while (clock_mono_ms() < deadline && hc_running(p->proc)) {
        if (hc_http_status(p->port, "/readyz") == 200)
            return 0;
        hp_sleep_ms(20);
    }
    char *log = h_read_file(p->log_path);
    snprintf(err, errlen, "haproxy on port %d did not pass /readyz; log:\n%.1500s", p->port,
             log ? log : "");
    free(log);
    hc_end(&p->proc);
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
    hc_end(&p->proc);
    hp_rm_tree(p->base);
    free(p);
}
