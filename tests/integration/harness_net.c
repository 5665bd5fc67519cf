/*
 * harness_net.c - raw sockets for the integration tests: a minimal HTTP/1.1 client and a raw
 * WebSocket client that writes hand-made frames (unmasked, fragmented, bad UTF-8, ...) and
 * reads frames one by one. Blocking sockets with poll() deadlines; loopback only.
 */
#define _GNU_SOURCE /* memmem, strcasestr */
#include "harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "relay/clock.h"
#include "relay/codec.h"

/* Connects to 127.0.0.1:port within timeout_ms, optionally with SO_RCVBUF set first.
 * Returns a blocking socket or -1. */
static int tcp_connect(int port, int rcvbuf, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (rcvbuf > 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int flags = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, flags | O_NONBLOCK);
    int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    if (rc < 0 && errno == EINPROGRESS) {
        struct pollfd p = {fd, POLLOUT, 0};
        int err = 0;
        socklen_t el = sizeof(err);
        if (poll(&p, 1, timeout_ms) == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) == 0 &&
            err == 0)
            rc = 0;
    }
    if (rc < 0) {
        close(fd);
        return -1;
    }
    fcntl(fd, F_SETFL, flags);
    return fd;
}

/* Writes all of data, waiting at most until deadline (monotonic ms). Returns 0 or -1. */
static int write_all(int fd, const void *data, size_t len, int64_t deadline)
{
    const uint8_t *p = data;
    while (len) {
        int left = (int)(deadline - clock_mono_ms());
        struct pollfd pf = {fd, POLLOUT, 0};
        if (left <= 0 || poll(&pf, 1, left) != 1)
            return -1;
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* A growable receive buffer. */
typedef struct rbuf {
    uint8_t *data;
    size_t len, cap;
} rbuf;

/* Reads more bytes into b until deadline. Returns bytes read, 0 on EOF, -1 on timeout/error. */
static ssize_t rbuf_fill(int fd, rbuf *b, int64_t deadline)
{
    if (b->cap - b->len < 4096) {
        size_t cap = b->cap ? b->cap * 2 : 8192;
        uint8_t *p = realloc(b->data, cap);
        if (!p)
            return -1;
        b->data = p;
        b->cap = cap;
    }
    for (;;) {
        int left = (int)(deadline - clock_mono_ms());
        struct pollfd pf = {fd, POLLIN, 0};
        if (left < 0)
            left = 0;
        int pr = poll(&pf, 1, left);
        if (pr == 0)
            return -1;
        if (pr < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        ssize_t n = recv(fd, b->data + b->len, b->cap - b->len - 1, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == ECONNRESET ? 0 : -1;
        b->len += (size_t)n;
        return n;
    }
}

static void rbuf_consume(rbuf *b, size_t n)
{
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

/* Finds "\r\n\r\n" in b; returns the offset just past it or 0. */
static size_t find_header_end(const rbuf *b)
{
    for (size_t i = 3; i < b->len; i++)
        if (b->data[i - 3] == '\r' && b->data[i - 2] == '\n' && b->data[i - 1] == '\r' &&
            b->data[i] == '\n')
            return i + 1;
    return 0;
}

/* ---- HTTP ------------------------------------------------------------------------------------ */

const char *h_http_header(const h_http *r, const char *name, char *buf, size_t len)
{
    size_t nl = strlen(name);
    const char *line = r->headers;
    while (line && *line) {
        const char *eol = strstr(line, "\r\n");
        size_t ll = eol ? (size_t)(eol - line) : strlen(line);
        if (ll > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ' || *v == '\t')
                v++;
            size_t vl = ll - (size_t)(v - line);
            snprintf(buf, len, "%.*s", (int)vl, v);
            return buf;
        }
        line = eol ? eol + 2 : NULL;
    }
    return NULL;
}

void h_http_free(h_http *r)
{
    free(r->headers);
    free(r->body);
    memset(r, 0, sizeof(*r));
}

/* Decodes a chunked body in place. Returns the decoded length, or -1 if incomplete/invalid. */
static ssize_t dechunk(uint8_t *p, size_t len)
{
    size_t in = 0, out = 0;
    for (;;) {
        char *end;
        const char *lenstr = (const char *)p + in;
        const void *crlf = memmem(p + in, len - in, "\r\n", 2);
        if (!crlf)
            return -1;
        unsigned long n = strtoul(lenstr, &end, 16);
        in = (size_t)((const uint8_t *)crlf - p) + 2;
        if (n == 0)
            return (ssize_t)out;
        if (in + n + 2 > len)
            return -1;
        memmove(p + out, p + in, n);
        out += n;
        in += n + 2;
    }
}

int h_http_request(int port, const char *method, const char *path, const char *extra_headers,
                   int timeout_ms, h_http *out)
{
    memset(out, 0, sizeof(*out));
    int64_t deadline = clock_mono_ms() + timeout_ms;
    int fd = tcp_connect(port, 0, timeout_ms);
    if (fd < 0)
        return -1;
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n%s\r\n", method,
                     path, port, extra_headers ? extra_headers : "");
    rbuf b = {0};
    int rc = -1;
    if (n <= 0 || (size_t)n >= sizeof(req) || write_all(fd, req, (size_t)n, deadline) < 0)
        goto out;
    size_t hdr_end;
    while (!(hdr_end = find_header_end(&b)))
        if (rbuf_fill(fd, &b, deadline) <= 0)
            goto out;
    b.data[b.len] = 0;
    if (sscanf((const char *)b.data, "HTTP/1.%*d %d", &out->status) != 1)
        goto out;
    const char *hs = strstr((const char *)b.data, "\r\n");
    out->headers = strndup(hs + 2, hdr_end - (size_t)(hs + 2 - (const char *)b.data));
    char v[64];
    const char *cl = h_http_header(out, "Content-Length", v, sizeof(v));
    char te[64];
    bool chunked = h_http_header(out, "Transfer-Encoding", te, sizeof(te)) &&
                   strcasestr(te, "chunked") != NULL;
    size_t want = cl ? strtoul(cl, NULL, 10) : SIZE_MAX;
    rbuf_consume(&b, hdr_end);
    bool head = strcmp(method, "HEAD") == 0 || out->status == 204 || out->status == 304;
    while (!head && b.len < want) {
        if (chunked && b.len >= 5 && memmem(b.data, b.len, "0\r\n\r\n", 5) &&
            dechunk(b.data, b.len) >= 0)
            break;
        ssize_t got = rbuf_fill(fd, &b, deadline);
        if (got == 0 && !cl)
            break; /* body delimited by close */
        if (got <= 0)
            goto out;
    }
    if (head)
        b.len = 0;
    if (chunked && !head) {
        ssize_t dl = dechunk(b.data, b.len);
        if (dl < 0)
            goto out;
        b.len = (size_t)dl;
    }
    if (cl && b.len > want)
        b.len = want;
    out->body = malloc(b.len + 1);
    if (!out->body)
        goto out;
    if (b.len)
        memcpy(out->body, b.data, b.len);
    out->body[b.len] = 0;
    out->body_len = b.len;
    rc = 0;
out:
    free(b.data);
    close(fd);
    if (rc < 0)
        h_http_free(out);
    return rc;
}

int h_http_get(int port, const char *path, h_http *out)
{
    return h_http_request(port, "GET", path, NULL, H_WAIT_MS, out);
}

/* ---- Raw WebSocket -----------------------------------------------------------------------------
 */

struct h_raw {
    int fd;
    rbuf in;
    /* A data message being reassembled by h_raw_read_msg(). */
    int msg_opcode;
    uint8_t *msg;
    size_t msg_len;
};

h_raw *h_raw_connect(int port, const char *target, int rcvbuf, const char *extra_headers, char *err,
                     size_t errlen)
{
    int64_t deadline = clock_mono_ms() + H_WAIT_MS;
    int fd = tcp_connect(port, rcvbuf, H_WAIT_MS);
    if (fd < 0) {
        snprintf(err, errlen, "connect to port %d failed", port);
        return NULL;
    }
    h_raw *r = calloc(1, sizeof(*r));
    if (!r) {
        close(fd);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->fd = fd;
    char req[2048];
    int n = snprintf(req, sizeof(req),
                     "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                     "Sec-WebSocket-Version: 13\r\n%s\r\n",
                     target, port, extra_headers ? extra_headers : "");
    if (n <= 0 || (size_t)n >= sizeof(req) || write_all(fd, req, (size_t)n, deadline) < 0) {
        snprintf(err, errlen, "sending the upgrade request failed");
        goto fail;
    }
    size_t hdr_end;
    while (!(hdr_end = find_header_end(&r->in)))
        if (rbuf_fill(fd, &r->in, deadline) <= 0) {
            snprintf(err, errlen, "no complete upgrade response");
            goto fail;
        }
    r->in.data[r->in.len] = 0;
    int status = 0;
    if (sscanf((const char *)r->in.data, "HTTP/1.%*d %d", &status) != 1 || status != 101) {
        const char *eol = strstr((const char *)r->in.data, "\r\n");
        snprintf(err, errlen, "upgrade refused: %.*s",
                 eol ? (int)(eol - (const char *)r->in.data) : 80, (const char *)r->in.data);
        goto fail;
    }
    /* This server never gets an extension offer, so none may come back. */
    if (strcasestr((const char *)r->in.data, "Sec-WebSocket-Extensions")) {
        snprintf(err, errlen, "server answered with an extension");
        goto fail;
    }
    rbuf_consume(&r->in, hdr_end);
    return r;
fail:
    h_raw_close(r);
    return NULL;
}

int h_raw_send_frame(h_raw *r, bool fin, int opcode, bool masked, const void *data, size_t len)
{
    uint8_t hdr[14];
    size_t h = 0;
    hdr[h++] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
    uint8_t mbit = masked ? 0x80 : 0;
    if (len < 126) {
        hdr[h++] = (uint8_t)(mbit | len);
    } else if (len <= 0xffff) {
        hdr[h++] = mbit | 126;
        hdr[h++] = (uint8_t)(len >> 8);
        hdr[h++] = (uint8_t)len;
    } else {
        hdr[h++] = mbit | 127;
        for (int i = 7; i >= 0; i--)
            hdr[h++] = (uint8_t)((uint64_t)len >> (8 * i));
    }
    static const uint8_t mask[4] = {0x37, 0xfa, 0x21, 0x3d};
    if (masked)
        for (int i = 0; i < 4; i++)
            hdr[h++] = mask[i];
    uint8_t *frame = malloc(h + len);
    if (!frame)
        return -1;
    memcpy(frame, hdr, h);
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++)
        frame[h + i] = masked ? (uint8_t)(p[i] ^ mask[i & 3]) : p[i];
    int rc = write_all(r->fd, frame, h + len, clock_mono_ms() + H_WAIT_MS);
    free(frame);
    return rc;
}

int h_raw_send_text(h_raw *r, const char *text)
{
    return h_raw_send_frame(r, true, 1, true, text, strlen(text));
}

int h_raw_send_binary(h_raw *r, const void *data, size_t len)
{
    return h_raw_send_frame(r, true, 2, true, data, len);
}

int h_raw_send_bytes(h_raw *r, const void *data, size_t len)
{
    return write_all(r->fd, data, len, clock_mono_ms() + H_WAIT_MS);
}

/* Parses one complete frame from the front of the buffer. Returns 1 and fills out, 0 if more
 * bytes are needed, -1 on a malformed or absurdly long frame. */
static int parse_frame(rbuf *b, h_frame *out)
{
    if (b->len < 2)
        return 0;
    const uint8_t *p = b->data;
    size_t h = 2;
    uint64_t len = p[1] & 0x7f;
    bool masked = p[1] & 0x80;
    if (len == 126) {
        if (b->len < 4)
            return 0;
        len = ((uint64_t)p[2] << 8) | p[3];
        h = 4;
    } else if (len == 127) {
        if (b->len < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = (len << 8) | p[2 + i];
        h = 10;
    }
    if (len > (256u << 20))
        return -1;
    uint8_t mask[4] = {0};
    if (masked) {
        if (b->len < h + 4)
            return 0;
        memcpy(mask, p + h, 4);
        h += 4;
    }
    if (b->len < h + len)
        return 0;
    out->opcode = p[0] & 0x0f;
    out->fin = p[0] & 0x80;
    out->len = (size_t)len;
    out->data = malloc(out->len + 1);
    if (!out->data)
        return -1;
    for (size_t i = 0; i < out->len; i++)
        out->data[i] = masked ? (uint8_t)(p[h + i] ^ mask[i & 3]) : p[h + i];
    out->data[out->len] = 0;
    rbuf_consume(b, h + (size_t)len);
    return 1;
}

int h_raw_read_frame(h_raw *r, int timeout_ms, h_frame *out)
{
    memset(out, 0, sizeof(*out));
    int64_t deadline = clock_mono_ms() + timeout_ms;
    for (;;) {
        int pr = parse_frame(&r->in, out);
        if (pr == 1)
            return 0;
        if (pr < 0)
            return -2;
        ssize_t n = rbuf_fill(r->fd, &r->in, deadline);
        if (n == 0)
            return -2;
        if (n < 0)
            return clock_mono_ms() >= deadline ? -1 : -2;
    }
}

int h_raw_read_msg(h_raw *r, int timeout_ms, h_frame *out)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    for (;;) {
        h_frame f;
        int left = (int)(deadline - clock_mono_ms());
        int rc = h_raw_read_frame(r, left > 0 ? left : 0, &f);
        if (rc < 0)
            return rc;
        if (f.opcode >= 8) {
            *out = f;
            return 0;
        }
        if (f.opcode != 0) {
            free(r->msg);
            r->msg = NULL;
            r->msg_len = 0;
            r->msg_opcode = f.opcode;
        }
        uint8_t *m = realloc(r->msg, r->msg_len + f.len + 1);
        if (!m) {
            h_frame_free(&f);
            return -2;
        }
        memcpy(m + r->msg_len, f.data, f.len);
        r->msg = m;
        r->msg_len += f.len;
        r->msg[r->msg_len] = 0;
        bool fin = f.fin;
        h_frame_free(&f);
        if (fin) {
            out->opcode = r->msg_opcode;
            out->fin = true;
            out->data = r->msg;
            out->len = r->msg_len;
            r->msg = NULL;
            r->msg_len = 0;
            return 0;
        }
    }
}

json_t *h_frame_json(const h_frame *f)
{
    if (f->opcode == 1)
        return json_loadb((const char *)f->data, f->len, JSON_DECODE_ANY, NULL);
    if (f->opcode == 2) {
        char err[128];
        return codec_msgpack_to_json(f->data, f->len, err, sizeof(err));
    }
    return NULL;
}

void h_frame_free(h_frame *f)
{
    free(f->data);
    memset(f, 0, sizeof(*f));
}

int h_raw_wait_close(h_raw *r, int timeout_ms, int *code, size_t *skipped)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    if (skipped)
        *skipped = 0;
    for (;;) {
        h_frame f;
        int left = (int)(deadline - clock_mono_ms());
        int rc = h_raw_read_msg(r, left > 0 ? left : 0, &f);
        if (rc == -1)
            return -1;
        if (rc == -2) {
            *code = WSC_CLOSE_ABNORMAL;
            return 0;
        }
        if (f.opcode == 8) {
            *code = f.len >= 2 ? (f.data[0] << 8) | f.data[1] : WSC_CLOSE_NO_STATUS;
            h_frame_free(&f);
            return 0;
        }
        if (skipped && f.opcode < 8)
            (*skipped)++;
        h_frame_free(&f);
    }
}

int h_raw_fd(const h_raw *r)
{
    return r->fd;
}

void h_raw_close(h_raw *r)
{
    if (!r)
        return;
    if (r->fd >= 0)
        close(r->fd);
    free(r->in.data);
    free(r->msg);
    free(r);
}
