/* wsframe.c - WebSocket framing and opening handshake of the client; see wsframe.h. */
#include "wsframe.h"

#include <libwebsockets.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

int wsf_parse_header(const uint8_t *p, size_t n, wsf_header *h)
{
    if (n < 2)
        return 0;
    h->fin = p[0] & 0x80;
    h->opcode = p[0] & 0x0f;
    h->masked = p[1] & 0x80;
    if (p[0] & 0x70)
        return -1;
    bool control = h->opcode & 8;
    if ((h->opcode > WSF_BINARY && !control) || h->opcode > WSF_PONG)
        return -1;
    uint64_t len = p[1] & 0x7f;
    size_t hl = 2;
    if (len == 126) {
        if (n < 4)
            return 0;
        len = (uint64_t)p[2] << 8 | p[3];
        hl = 4;
    } else if (len == 127) {
        if (n < 10)
            return 0;
        len = 0;
        for (int i = 0; i < 8; i++)
            len = len << 8 | p[2 + i];
        if (len >> 63)
            return -1;
        hl = 10;
    }
    if (control && (!h->fin || len > 125))
        return -1;
    if (h->masked) {
        if (n < hl + 4)
            return 0;
        memcpy(h->mask, p + hl, 4);
        hl += 4;
    }
    h->len = len;
    h->hdr_len = hl;
    return 1;
}

size_t wsf_build_header(uint8_t *out, int opcode, bool fin, uint64_t len, const uint8_t mask[4])
{
    size_t n = 0;
    out[n++] = (uint8_t)((fin ? 0x80 : 0) | (opcode & 0x0f));
    if (len < 126) {
        out[n++] = (uint8_t)(0x80 | len);
    } else if (len < 65536) {
        out[n++] = 0x80 | 126;
        out[n++] = (uint8_t)(len >> 8);
        out[n++] = (uint8_t)len;
    } else {
        out[n++] = 0x80 | 127;
        for (int i = 7; i >= 0; i--)
            out[n++] = (uint8_t)(len >> (8 * i));
    }
    memcpy(out + n, mask, 4);
    return n + 4;
}

void wsf_mask(uint8_t *p, size_t n, const uint8_t mask[4])
{
    uint64_t m8;
    uint8_t rep[8];
    for (int i = 0; i < 8; i++)
        rep[i] = mask[i & 3];
    memcpy(&m8, rep, 8);
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t v;
        memcpy(&v, p + i, 8);
        v ^= m8;
        memcpy(p + i, &v, 8);
    }
    for (; i < n; i++)
        p[i] ^= mask[i & 3];
}

void wsf_accept_value(const char *key, char out[29])
{
    static const char guid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char cat[64 + sizeof(guid)];
    int n = snprintf(cat, sizeof(cat), "%s%s", key, guid);
    unsigned char sha[20];
    lws_SHA1((const unsigned char *)cat, (size_t)n, sha);
    /* lws_b64_encode_string() does not terminate a result that fills its buffer. */
    char b64[40];
    int len = lws_b64_encode_string((const char *)sha, 20, b64, sizeof(b64));
    snprintf(out, 29, "%.*s", len > 0 ? len : 0, b64);
}

int wsf_build_request(char *buf, size_t cap, const char *host_hdr, const char *path,
                      const char *origin, const char *key)
{
    int n = snprintf(buf, cap,
                     "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n%s%s%s\r\n",
                     path, host_hdr, key, origin ? "Origin: " : "", origin ? origin : "",
                     origin ? "\r\n" : "");
    return n < 0 || (size_t)n >= cap ? -1 : n;
}

/* Finds header name (case-insensitive) in the response head and copies its value (trimmed)
 * into out. Returns 0, or -1 if it is absent. */
static int find_header(const char *head, size_t n, const char *name, char *out, size_t outlen)
{
    size_t nl = strlen(name);
    const char *p = memchr(head, '\n', n), *end = head + n;
    while (p && ++p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (!eol)
            break;
        if ((size_t)(eol - p) > nl && p[nl] == ':' && strncasecmp(p, name, nl) == 0) {
            const char *v = p + nl + 1, *ve = eol;
            while (v < ve && (*v == ' ' || *v == '\t'))
                v++;
            while (ve > v && (ve[-1] == '\r' || ve[-1] == ' ' || ve[-1] == '\t'))
                ve--;
            snprintf(out, outlen, "%.*s", (int)(ve - v), v);
            return 0;
        }
        p = eol;
    }
    return -1;
}

int wsf_parse_response(const char *buf, size_t n, const char *key, unsigned *status, char *err,
                       size_t errlen)
{
    *status = 0;
    const char *end = NULL;
    for (size_t i = 3; i < n && !end; i++)
        if (buf[i] == '\n' && buf[i - 1] == '\r' && buf[i - 2] == '\n' && buf[i - 3] == '\r')
            end = buf + i + 1;
    if (!end)
        return 0;
    size_t hl = (size_t)(end - buf);
    unsigned code = 0;
    if (sscanf(buf, "HTTP/1.%*1[01] %3u", &code) != 1) {
        snprintf(err, errlen, "bad HTTP response to the upgrade");
        return -1;
    }
    *status = code;
    if (code != 101) {
        snprintf(err, errlen, "upgrade refused (HTTP %u)", code);
        return -1;
    }
    char v[128], want[29];
    if (find_header(buf, hl, "Upgrade", v, sizeof(v)) || strcasecmp(v, "websocket") != 0) {
        snprintf(err, errlen, "101 response without Upgrade: websocket");
        return -1;
    }
    wsf_accept_value(key, want);
    if (find_header(buf, hl, "Sec-WebSocket-Accept", v, sizeof(v)) || strcmp(v, want) != 0) {
        snprintf(err, errlen, "bad Sec-WebSocket-Accept in the 101 response");
        return -1;
    }
    return (int)hl;
}
