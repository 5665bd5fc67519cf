#include "bridge_wire.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wire_buf_free(wire_buf *w)
{
    free(w->data);
    w->data = NULL;
    w->len = w->cap = 0;
}

/* msgpack_packer write callback appending to a wire_buf. */
static int wire_write(void *data, const char *buf, size_t len)
{
    wire_buf *w = data;
    if (w->len + len > w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 128;
        while (cap < w->len + len)
            cap *= 2;
        uint8_t *grown = realloc(w->data, cap);
        if (!grown)
            return -1;
        w->data = grown;
        w->cap = cap;
    }
    memcpy(w->data + w->len, buf, len);
    w->len += len;
    return 0;
}

static int wire_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n);
}

int wire_op_prefix(wire_buf *out, const char *node_id, uint64_t conn_id)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, wire_write);
    return (msgpack_pack_array(&pk, 8) || wire_str(&pk, "o") || wire_str(&pk, node_id) ||
            msgpack_pack_uint64(&pk, conn_id))
               ? -1
               : 0;
}

int wire_op_suffix(wire_buf *out, const char *user_id, const char *session_id, codec_blob payload)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, wire_write);
    return (wire_str(&pk, user_id) || wire_str(&pk, session_id) ||
            wire_write(out, (const char *)payload.data, payload.len))
               ? -1
               : 0;
}

int wire_presence(wire_buf *out, const char *node_id, uint64_t conn_id, const msgbuf *body)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, wire_write);
    return (msgpack_pack_array(&pk, 5) || wire_str(&pk, "p") || wire_str(&pk, node_id) ||
            msgpack_pack_uint64(&pk, conn_id) || msgpack_pack_uint64(&pk, body->coalesce) ||
            wire_write(out, (const char *)body->mem + MSGBUF_HEADROOM, body->len))
               ? -1
               : 0;
}

int wire_member(wire_buf *out, const char *user_id, const char *user_name, const char *color)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, wire_write);
    return (msgpack_pack_array(&pk, 3) || wire_str(&pk, user_id) || wire_str(&pk, user_name) ||
            wire_str(&pk, color))
               ? -1
               : 0;
}

/* ---- Reading: only the shapes written above, from trusted peers, still bounds-checked. ---- */

typedef struct wire_rd {
    const uint8_t *p, *end;
} wire_rd;

static int wire_need(wire_rd *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n ? 0 : -1;
}

static uint64_t wire_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

static int wire_read_array(wire_rd *r, uint32_t *n)
{
    if (wire_need(r, 1))
        return -1;
    uint8_t b = *r->p++;
    if ((b & 0xf0) == 0x90) {
        *n = b & 0x0f;
        return 0;
    }
    int w = b == 0xdc ? 2 : b == 0xdd ? 4 : 0;
    if (!w || wire_need(r, (size_t)w))
        return -1;
    *n = (uint32_t)wire_be(r->p, w);
    r->p += w;
    return 0;
}

static int wire_read_str(wire_rd *r, const char **s, size_t *len)
{
    if (wire_need(r, 1))
        return -1;
    uint8_t b = *r->p++;
    size_t n;
    if ((b & 0xe0) == 0xa0) {
        n = b & 0x1f;
    } else {
        int w = b == 0xd9 ? 1 : b == 0xda ? 2 : b == 0xdb ? 4 : 0;
        if (!w || wire_need(r, (size_t)w))
            return -1;
        n = (size_t)wire_be(r->p, w);
        r->p += w;
    }
    if (wire_need(r, n))
        return -1;
    *s = (const char *)r->p;
    *len = n;
    r->p += n;
    return 0;
}

static int wire_read_uint(wire_rd *r, uint64_t *v)
{
    if (wire_need(r, 1))
        return -1;
    uint8_t b = *r->p++;
    if (b <= 0x7f) {
        *v = b;
        return 0;
    }
    int w = b == 0xcc ? 1 : b == 0xcd ? 2 : b == 0xce ? 4 : b == 0xcf ? 8 : 0;
    if (b == 0xcb && !wire_need(r, 8)) { /* Lua numbers may arrive as float64 */
        uint64_t bits = wire_be(r->p, 8);
        double d;
        memcpy(&d, &bits, sizeof d);
        r->p += 8;
        if (d < 0 || d > 9007199254740992.0)
            return -1;
        *v = (uint64_t)d;
        return 0;
    }
    if (!w || wire_need(r, (size_t)w))
        return -1;
    *v = wire_be(r->p, w);
    r->p += w;
    return 0;
}

int wire_parse(const uint8_t *data, size_t len, wire_msg *out)
{
    wire_rd r = {data, data + len};
    uint32_t n;
    const char *kind;
    size_t klen;
    memset(out, 0, sizeof *out);
    if (wire_read_array(&r, &n) || wire_read_str(&r, &kind, &klen) || klen != 1 ||
        wire_read_str(&r, &out->node_id, &out->node_len) || wire_read_uint(&r, &out->conn_id))
        return -1;
    out->kind = kind[0];
    if (out->kind == 'o') {
        if (n != 8 || wire_read_uint(&r, &out->seq) ||
            wire_read_str(&r, &out->epoch, &out->epoch_len) ||
            wire_read_str(&r, &out->user_id, &out->user_len) ||
            wire_read_str(&r, &out->session_id, &out->session_len))
            return -1;
    } else if (out->kind != 'p' || n != 5 || wire_read_uint(&r, &out->coalesce)) {
        return -1;
    }
    out->rest = r.p;
    out->rest_len = (size_t)(r.end - r.p);
    return out->rest_len ? 0 : -1;
}

int wire_parse_member(const uint8_t *data, size_t len, char *out, size_t outlen,
                      const char **user_id, const char **user_name, const char **color)
{
    wire_rd r = {data, data + len};
    uint32_t n;
    const char *s[3];
    size_t l[3], used = 0;
    if (wire_read_array(&r, &n) || n != 3)
        return -1;
    for (int i = 0; i < 3; i++) {
        if (wire_read_str(&r, &s[i], &l[i]) || used + l[i] + 1 > outlen)
            return -1;
        memcpy(out + used, s[i], l[i]);
        out[used + l[i]] = '\0';
        s[i] = out + used;
        used += l[i] + 1;
    }
    *user_id = s[0], *user_name = s[1], *color = s[2];
    return 0;
}

int wire_doc_key(char *out, size_t outlen, const char *prefix, const char *doc, const char *suffix)
{
    int n = snprintf(out, outlen, "%s{%s}:%s", prefix, doc, suffix);
    return n < 0 || (size_t)n >= outlen ? -1 : n;
}

int wire_parse_doc_channel(const char *channel, size_t len, const char *prefix, char *doc,
                           size_t doclen, const char **suffix)
{
    size_t plen = strlen(prefix);
    if (len < plen + 3 || strncmp(channel, prefix, plen) != 0 || channel[plen] != '{')
        return -1;
    const char *start = channel + plen + 1, *end = channel + len;
    const char *close = memchr(start, '}', (size_t)(end - start));
    if (!close || close + 1 >= end || close[1] != ':' || (size_t)(close - start) >= doclen ||
        !codec_document_id_valid(start, (size_t)(close - start)))
        return -1;
    memcpy(doc, start, (size_t)(close - start));
    doc[close - start] = '\0';
    *suffix = close + 2;
    return 0;
}
