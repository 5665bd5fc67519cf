/*
 * harness.c - processes for the integration tests: relay-node and redis-server on free loopback
 * ports, their captured logs and a watchdog that prints a log when its test dies; token minting.
 */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jwt.h>
#include <libwebsockets.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "harness_proc.h"
#include "relay/clock.h"
#include "relay/token.h"

#define START_TIMEOUT_MS 10000
#define START_ATTEMPTS   3
#define MAX_ARGS         64

int h_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t sl = sizeof(sa);
    int port = -1;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 &&
        getsockname(fd, (struct sockaddr *)&sa, &sl) == 0)
        port = ntohs(sa.sin_port);
    close(fd);
    return port;
}

/* Starts argv with its output in a fresh log file and a watchdog (harness_proc.h). */
static hp_proc *proc_spawn(const char *const *argv, const char *label, char *err, size_t errlen)
{
    hp_opts o = {.argv = argv, .label = label};
    return hp_start(&o, err, errlen);
}

/* SIGTERM, a grace period, then hp_destroy(). */
static void proc_end(hp_proc *p)
{
    if (p && hp_signal(p, SIGTERM) == 0)
        hp_wait(p, 5000);
    hp_destroy(p);
}

char *h_read_file(const char *path)
{
    FILE *f = fopen(path, "r");
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    if (!buf) {
        if (f)
            fclose(f);
        return NULL;
    }
    if (f) {
        size_t n;
        while ((n = fread(buf + len, 1, cap - len - 1, f)) > 0) {
            len += n;
            if (cap - len - 1 == 0) {
                char *g = realloc(buf, cap * 2);
                if (!g)
                    break;
                buf = g;
                cap *= 2;
            }
        }
        fclose(f);
    }
    buf[len] = 0;
    return buf;
}

/* ---- relay-node ----------------------------------------------------------------------------- */

struct h_node {
    hp_proc *proc;
    int port;
};

static const char *node_bin(void)
{
    const char *b = getenv("RELAY_NODE_BIN");
    return b && *b ? b : NULL;
}

/* Polls GET /healthz until 200 or the node exits or the deadline passes. */
static int node_wait_ready(h_node *n, int timeout_ms)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    while (clock_mono_ms() < deadline) {
        if (!hp_alive(n->proc))
            return -1;
        h_http r;
        if (h_http_request(n->port, "GET", "/healthz", NULL, 1000, &r) == 0) {
            int st = r.status;
            h_http_free(&r);
            if (st == 200)
                return 0;
        }
        hp_sleep_ms(10);
    }
    return -1;
}

/* One attempt at starting a node on a fresh port. */
static h_node *node_start_once(const char *const *extra, char *err, size_t errlen)
{
    const char *bin = node_bin();
    if (!bin) {
        snprintf(err, errlen, "RELAY_NODE_BIN is not set");
        return NULL;
    }
    h_node *n = calloc(1, sizeof(*n));
    if (!n) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    n->port = h_free_port();
    char port[16], node_id[32];
    snprintf(port, sizeof(port), "%d", n->port);
    snprintf(node_id, sizeof(node_id), "it-%d", n->port);
    const char *argv[MAX_ARGS];
    size_t k = 0;
    const char *defaults[] = {bin,         "--port",       port,     "--bind",
                              "127.0.0.1", "--jwt-secret", H_SECRET, "--node-id",
                              node_id,     "--log-level",  "warn",   "--drain-time",
                              "0"};
    for (size_t i = 0; i < sizeof(defaults) / sizeof(defaults[0]); i++)
        argv[k++] = defaults[i];
    for (size_t i = 0; extra && extra[i] && k < MAX_ARGS - 1; i++)
        argv[k++] = extra[i];
    argv[k] = NULL;
    char label[64];
    snprintf(label, sizeof(label), "relay-node :%d", n->port);
    n->proc = proc_spawn(argv, label, err, errlen);
    if (!n->proc) {
        free(n);
        return NULL;
    }
    if (node_wait_ready(n, START_TIMEOUT_MS) == 0)
        return n;
    char *log = h_node_log(n);
    bool exited = !hp_alive(n->proc);
    snprintf(err, errlen, "relay-node on port %d %s; log:\n%.1500s", n->port,
             exited ? "exited during start-up" : "did not answer /healthz within 10 s",
             log ? log : "");
    free(log);
    h_node_destroy(n);
    return NULL;
}

h_node *h_node_try_startv(const char *const *extra, char *err, size_t errlen)
{
    /* A port found free can be taken before the node binds it; retry on a new one. */
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        h_node *n = node_start_once(extra, err, errlen);
        if (n || !node_bin())
            return n;
    }
    return NULL;
}

/* Collects NULL-terminated variadic strings into argv (at most MAX_ARGS - 1). */
static void collect_args(const char **argv, const char *first, va_list ap)
{
    size_t k = 0;
    for (const char *a = first; a && k < MAX_ARGS - 1; a = va_arg(ap, const char *))
        argv[k++] = a;
    argv[k] = NULL;
}

h_node *h_node_try_start(char *err, size_t errlen, const char *arg, ...)
{
    const char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    collect_args(argv, arg, ap);
    va_end(ap);
    return h_node_try_startv(argv, err, errlen);
}

h_node *h_node_start_at(const char *file, int line, const char *arg, ...)
{
    const char *argv[MAX_ARGS];
    va_list ap;
    va_start(ap, arg);
    collect_args(argv, arg, ap);
    va_end(ap);
    char err[2048];
    h_node *n = h_node_try_startv(argv, err, sizeof(err));
    if (!n)
        ck_abort_msg("%s:%d: cannot start relay-node: %s", file, line, err);
    return n;
}

int h_node_port(const h_node *n)
{
    return n->port;
}

pid_t h_node_pid(const h_node *n)
{
    return hp_pid(n->proc);
}

bool h_node_alive(h_node *n)
{
    return hp_alive(n->proc);
}

int h_node_signal(h_node *n, int sig)
{
    return hp_signal(n->proc, sig);
}

int h_node_wait_exit(h_node *n, int timeout_ms)
{
    return hp_wait(n->proc, timeout_ms);
}

int h_node_stop(h_node *n, int timeout_ms)
{
    hp_signal(n->proc, SIGTERM);
    return hp_wait(n->proc, timeout_ms);
}

char *h_node_log(const h_node *n)
{
    return hp_log(n->proc, 0);
}

void h_node_destroy(h_node *n)
{
    if (!n)
        return;
    proc_end(n->proc);
    free(n);
}

void h_node_finish_at(const char *file, int line, h_node *n)
{
    int st = h_node_stop(n, 10000);
    if (st != 0) {
        char *log = h_node_log(n);
        size_t len = log ? strlen(log) : 0;
        char tail[3100];
        snprintf(tail, sizeof(tail), "%s", log ? log + (len > 3000 ? len - 3000 : 0) : "");
        free(log);
        h_node_destroy(n);
        ck_abort_msg("%s:%d: relay-node exited with %d on SIGTERM; log tail:\n%s", file, line, st,
                     tail);
    }
    h_node_destroy(n);
}

int h_run_node_cmd(int timeout_ms, char **output, const char *arg, ...)
{
    const char *argv[MAX_ARGS];
    argv[0] = node_bin();
    if (!argv[0])
        return -1;
    va_list ap;
    va_start(ap, arg);
    collect_args(argv + 1, arg, ap);
    va_end(ap);
    char err[256];
    hp_proc *p = proc_spawn(argv, "relay-node command", err, sizeof(err));
    if (!p)
        return -1;
    int st = hp_wait(p, timeout_ms);
    if (output)
        *output = hp_log(p, 0);
    hp_destroy(p);
    return st;
}

/* ---- redis-server ------------------------------------------------------------------------ */

struct h_redis {
    hp_proc *proc;
    int port;
    char url[64];
};

/* True when 127.0.0.1:port answers PING with +PONG. */
static bool redis_pings(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct timeval tv = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    bool ok = false;
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0 && write(fd, "PING\r\n", 6) == 6) {
        char buf[16] = {0};
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        ok = n >= 5 && strncmp(buf, "+PONG", 5) == 0;
    }
    close(fd);
    return ok;
}

h_redis *h_redis_try_start(char *err, size_t errlen)
{
    const char *bin = getenv("REDIS_SERVER_BIN");
    if (!bin || !*bin)
        bin = "redis-server";
    for (int attempt = 0; attempt < START_ATTEMPTS; attempt++) {
        h_redis *r = calloc(1, sizeof(*r));
        if (!r) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        r->port = h_free_port();
        char port[16];
        snprintf(port, sizeof(port), "%d", r->port);
        snprintf(r->url, sizeof(r->url), "redis://127.0.0.1:%d", r->port);
        const char *argv[] = {bin, "--port",       port, "--bind",      "127.0.0.1", "--save",
                              "",  "--appendonly", "no", "--daemonize", "no",        NULL};
        char label[64];
        snprintf(label, sizeof(label), "redis-server :%d", r->port);
        r->proc = proc_spawn(argv, label, err, errlen);
        if (!r->proc) {
            free(r);
            return NULL;
        }
        int64_t deadline = clock_mono_ms() + START_TIMEOUT_MS;
        while (clock_mono_ms() < deadline && hp_alive(r->proc)) {
            if (redis_pings(r->port))
                return r;
            hp_sleep_ms(10);
        }
        char *log = hp_log(r->proc, 0);
        snprintf(err, errlen, "redis-server on port %d did not start; log:\n%.1000s", r->port,
                 log ? log : "");
        free(log);
        h_redis_destroy(r);
    }
    return NULL;
}

int h_redis_port(const h_redis *r)
{
    return r->port;
}

const char *h_redis_url(const h_redis *r)
{
    return r->url;
}

void h_redis_destroy(h_redis *r)
{
    if (!r)
        return;
    proc_end(r->proc);
    free(r);
}

/* ---- Tokens ------------------------------------------------------------------------------- */

char *h_token(const char *sub, const char *name, int64_t exp_in)
{
    return token_mint_hs256(H_SECRET, NULL, sub, name, clock_wall_s() + exp_in, 0, NULL, 0);
}

char *h_token_claims(const char *claims_json, const char *secret)
{
    jwt_t *jwt = NULL;
    char *out = NULL;
    if (jwt_new(&jwt) != 0)
        return NULL;
    if (jwt_add_grants_json(jwt, claims_json) == 0 &&
        jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) == 0)
        out = jwt_encode_str(jwt);
    jwt_free(jwt);
    return out;
}

/* base64url without padding of len bytes into a malloc'd string. */
static char *b64url(const char *in, size_t len)
{
    size_t cap = len * 4 / 3 + 8;
    char *out = malloc(cap);
    if (!out)
        return NULL;
    int n = lws_b64_encode_string_url(in, (int)len, out, (int)cap);
    if (n < 0) {
        free(out);
        return NULL;
    }
    while (n > 0 && out[n - 1] == '=')
        n--;
    out[n] = 0;
    return out;
}

char *h_token_alg_none(const char *claims_json)
{
    const char *hdr = "{\"alg\":\"none\",\"typ\":\"JWT\"}";
    char *h = b64url(hdr, strlen(hdr));
    char *c = b64url(claims_json, strlen(claims_json));
    char *out = NULL;
    if (h && c) {
        size_t n = strlen(h) + strlen(c) + 3;
        out = malloc(n);
        if (out)
            snprintf(out, n, "%s.%s.", h, c);
    }
    free(h);
    free(c);
    return out;
}
