#define _GNU_SOURCE /* accept4 */
#include "listener.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "http.h"
#include "relay/log.h"

#define LISTENER_PROTOCOL       "relay-accept"
#define LISTENER_ACCEPT_BURST   64
#define LISTENER_HEAD_TIMEOUT_S 10

int listener_open(const char *bind_addr, int port, char *err, size_t errlen)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    if (inet_pton(AF_INET, bind_addr, &sa.sin_addr) != 1) {
        snprintf(err, errlen, "--bind '%s' is not an IPv4 address", bind_addr);
        return -1;
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 4096) < 0) {
        snprintf(err, errlen, "cannot listen on %s:%d: %s", bind_addr, port, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static struct lws *listener_adopt(struct lws_vhost *vhost, int fd)
{
    lws_sock_file_fd_type d;
    d.filefd = fd;
    return lws_adopt_descriptor_vhost(vhost, LWS_ADOPT_RAW_FILE_DESC, d, LISTENER_PROTOCOL, NULL);
}

int listener_attach(struct lws_vhost *vhost, int fd)
{
    struct lws *wsi = listener_adopt(vhost, fd);
    if (!wsi)
        return -1;
    ((listener_pss *)lws_wsi_user(wsi))->is_listener = 1;
    return 0;
}

static void listener_accept(struct lws *wsi, int lfd)
{
    struct lws_vhost *vhost = lws_get_vhost(wsi);
    for (int i = 0; i < LISTENER_ACCEPT_BURST; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
                log_warn("accept: %s", strerror(errno));
            return;
        }
        /* Small frames must leave at once: with Nagle a second write waits for the peer's
         * delayed ACK (40 ms on Linux). */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct lws *conn = listener_adopt(vhost, fd);
        if (!conn) {
            close(fd);
            continue;
        }
        lws_set_timeout(conn, PENDING_TIMEOUT_USER_OK, LISTENER_HEAD_TIMEOUT_S);
    }
}

static void listener_refuse(int fd, const char *status, const char *body)
{
    char buf[256];
    int n = snprintf(buf, sizeof buf,
                     "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                     "Content-Length: %zu\r\nConnection: close\r\n\r\n%s",
                     status, strlen(body), body);
    if (write(fd, buf, (size_t)n) < 0)
        log_debug("refusing a request: %s", strerror(errno));
}

/* Returns 1 when the raw request target is a document path with a bad id. */
static int listener_bad_document(const char *line, size_t len)
{
    const char *sp = memchr(line, ' ', len);
    if (!sp)
        return 0;
    const char *target = sp + 1, *end = line + len;
    const char *stop = target;
    while (stop < end && *stop != ' ' && *stop != '?')
        stop++;
    char path[600];
    size_t plen = (size_t)(stop - target);
    if (plen >= sizeof path)
        return 1;
    memcpy(path, target, plen);
    path[plen] = '\0';
    char doc[129];
    return strncmp(path, "/ws/documents", 13) == 0 && http_document_path(path, doc, sizeof doc);
}

/* Reads until the request line is complete, then refuses it or hands it over. Returns -1 to
 * close this raw wsi (its fd), 0 to keep waiting. */
static int listener_read_head(struct lws *wsi, listener_pss *p)
{
    int fd = lws_get_socket_fd(wsi);
    ssize_t n = read(fd, p->head + p->len, sizeof p->head - p->len);
    if (n <= 0)
        return (n < 0 && (errno == EAGAIN || errno == EINTR)) ? 0 : -1;
    p->len += (size_t)n;
    const char *eol = memchr(p->head, '\n', p->len);
    if (!eol) {
        if (p->len < sizeof p->head)
            return 0;
        listener_refuse(fd, "414 URI Too Long", "request line too long\n");
        return -1;
    }
    if (listener_bad_document(p->head, (size_t)(eol - p->head))) {
        listener_refuse(fd, "400 Bad Request", "bad document id\n");
        return -1;
    }
    int keep = dup(fd);
    if (keep < 0)
        return -1;
    /* lws owns `keep` from here (it closes it on failure); this raw wsi closes `fd`. */
    lws_adopt_socket_vhost_readbuf(lws_get_vhost(wsi), keep, p->head, p->len);
    return -1;
}

int listener_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user, void *in,
                      size_t len)
{
    listener_pss *p = user;
    (void)in, (void)len;
    switch (reason) {
    case LWS_CALLBACK_RAW_RX_FILE:
        if (!p)
            return -1;
        if (p->is_listener) {
            listener_accept(wsi, lws_get_socket_fd(wsi));
            return 0;
        }
        return listener_read_head(wsi, p);
    case LWS_CALLBACK_RAW_CLOSE_FILE:
        if (p && p->is_listener)
            log_debug("listening socket closed");
        return 0;
    default:
        return 0;
    }
}
