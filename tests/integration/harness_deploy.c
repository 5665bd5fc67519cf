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

#define HD_MAX_ARGS 64

/* ---- relay-node and haproxy ------------------------------------------------------------- */

hp_proc *hd_node_start(int port, const char *node_id, const char *redis_url,
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
    hp_opts o = {.argv = argv, .label = label};
    return hp_start(&o, err, errlen);
}

bool hd_wait_status(int port, const char *path, int status, int timeout_ms)
{
    return hc_wait_http_status(port, path, status, timeout_ms);
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
            hp_sleep_ms(20);
        }
    }
    return count == n;
}

hp_proc *hd_haproxy_start(int port, const int *node_ports, size_t n, char *err, size_t errlen)
{
    char cfg[64];
    snprintf(cfg, sizeof cfg, "/tmp/relay-it-haproxy-%d.cfg", port);
    if (hc_haproxy_write_cfg(cfg, port, node_ports, n) < 0) {
        snprintf(err, errlen, "cannot write %s", cfg);
        return NULL;
    }
    const char *bin = getenv("HAPROXY_BIN");
    const char *argv[] = {bin && *bin ? bin : "haproxy", "-f", cfg, "-db", NULL};
    char label[64];
    snprintf(label, sizeof label, "haproxy :%d", port);
    hp_opts o = {.argv = argv, .label = label};
    hp_proc *p = hp_start(&o, err, errlen);
    if (p && !hd_haproxy_all_up(port, n, 10000)) {
        char *log = hp_log(p, 1500);
        snprintf(err, errlen, "haproxy on port %d did not reach all %zu servers; log:\n%s", port, n,
                 log);
        free(log);
        hp_destroy(p);
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
