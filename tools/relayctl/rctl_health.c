/* relayctl health: one plain HTTP/1.0 GET over a TCP socket, for container health checks in an
 * image that has no curl. Exit 0 on a 2xx status, 1 on anything else, all within --timeout-ms. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "rctl.h"
#include "relay/clock.h"

typedef struct health_url {
    char host[256], port[8], path[1024];
} health_url;

/* Parses http://host[:port][/path] (IPv6 hosts in brackets). Returns 0 or -1. */
static int health_parse(const char *url, health_url *u)
{
    if (strncmp(url, "http://", 7) != 0)
        return -1;
    const char *h = url + 7, *slash = strchr(h, '/');
    size_t hl = slash ? (size_t)(slash - h) : strlen(h);
    snprintf(u->path, sizeof u->path, "%s", slash ? slash : "/");
    snprintf(u->port, sizeof u->port, "80");
    char auth[sizeof u->host];
    if (hl == 0 || hl >= sizeof auth || strpbrk(u->path, " \r\n"))
        return -1;
    memcpy(auth, h, hl);
    auth[hl] = '\0';
    char *host = auth, *port = NULL;
    if (auth[0] == '[') {
        char *close = strchr(auth, ']');
        if (!close || (close[1] && close[1] != ':'))
            return -1;
        *close = '\0';
        host = auth + 1;
        port = close[1] ? close + 2 : NULL;
    } else if ((port = strrchr(auth, ':')) != NULL) {
        *port++ = '\0';
    }
    if (port) {
        char *end;
        long p = strtol(port, &end, 10);
        if (!*port || *end || p < 1 || p > 65535)
            return -1;
        snprintf(u->port, sizeof u->port, "%ld", p);
    }
    snprintf(u->host, sizeof u->host, "%s", host);
    return host[0] ? 0 : -1;
}

/* Waits for events on fd until deadline (monotonic ms). Returns 1 ready, 0 timed out, -1. */
static int health_wait(int fd, short events, int64_t deadline)
{
    for (;;) {
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0)
            return 0;
        struct pollfd p = {fd, events, 0};
        int n = poll(&p, 1, (int)left);
        if (n >= 0 || errno != EINTR)
            return n > 0 ? 1 : n;
    }
}

/* Connects to the first address that accepts before the deadline. Returns the socket or -1 with
 * the reason in err. */
static int health_connect(const health_url *u, int64_t deadline, char *err, size_t errlen)
{
    struct addrinfo hints = {0}, *res = NULL;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICSERV;
    int gai = getaddrinfo(u->host, u->port, &hints, &res);
    if (gai != 0) {
        snprintf(err, errlen, "cannot resolve %s: %s", u->host, gai_strerror(gai));
        return -1;
    }
    int fd = -1;
    snprintf(err, errlen, "no address for %s", u->host);
    for (struct addrinfo *a = res; a && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, a->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, a->ai_protocol);
        if (fd < 0)
            continue;
        int rc = connect(fd, a->ai_addr, a->ai_addrlen);
        int soerr = rc == 0 ? 0 : errno;
        if (soerr == EINPROGRESS) {
            socklen_t sl = sizeof soerr;
            soerr = health_wait(fd, POLLOUT, deadline) == 1 &&
                            getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) == 0
                        ? soerr
                        : ETIMEDOUT;
        }
        if (soerr != 0) {
            snprintf(err, errlen, "cannot connect to %s port %s: %s", u->host, u->port,
                     strerror(soerr));
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    return fd;
}

/* Sends the request and reads the status line. Returns the status code, or -1 with the reason
 * in err. */
static int health_exchange(int fd, const health_url *u, int64_t deadline, char *err, size_t errlen)
{
    char req[1400];
    int len = snprintf(req, sizeof req,
                       "GET %s HTTP/1.0\r\nHost: %s\r\nUser-Agent: relayctl\r\n"
                       "Connection: close\r\n\r\n",
                       u->path, u->host);
    if (len < 0 || (size_t)len >= sizeof req || send(fd, req, (size_t)len, MSG_NOSIGNAL) != len) {
        snprintf(err, errlen, "cannot send the request: %s", strerror(errno));
        return -1;
    }
    char buf[256];
    size_t got = 0;
    while (got < sizeof buf - 1 && !memchr(buf, '\n', got)) {
        if (health_wait(fd, POLLIN, deadline) != 1) {
            snprintf(err, errlen, "no answer within the timeout");
            return -1;
        }
        ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
        if (n <= 0) {
            if (n < 0 && (errno == EAGAIN || errno == EINTR))
                continue;
            break;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    int status = 0;
    if (sscanf(buf, "HTTP/%*d.%*d %3d", &status) != 1 || status < 100 || status > 599) {
        snprintf(err, errlen, "not an HTTP response");
        return -1;
    }
    return status;
}

int rctl_cmd_health(rctl *o)
{
    health_url u;
    if (health_parse(o->arg, &u) < 0) {
        fprintf(stderr,
                "relayctl health: expected http://host[:port]/path, got '%s' (plain HTTP "
                "only)\n",
                o->arg);
        return RCTL_USAGE;
    }
    char err[512] = "";
    int64_t deadline = clock_mono_ms() + o->timeout_ms;
    int fd = health_connect(&u, deadline, err, sizeof err);
    int status = fd < 0 ? -1 : health_exchange(fd, &u, deadline, err, sizeof err);
    if (fd >= 0)
        close(fd);
    bool ok = status >= 200 && status <= 299;
    if (o->json)
        rctl_print_json(json_pack("{s:s, s:b, s:i, s:s?}", "url", o->arg, "ok", ok, "status",
                                  status < 0 ? 0 : status, "error", status < 0 ? err : NULL));
    else if (status < 0)
        fprintf(stderr, "relayctl health: %s: %s\n", o->arg, err);
    else
        printf("%s: HTTP %d\n", o->arg, status);
    return ok ? RCTL_OK : RCTL_FAIL;
}
