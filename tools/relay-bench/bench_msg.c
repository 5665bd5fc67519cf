/* bench_msg.c - requests relay-bench builds and replies/broadcasts it reads; see bench_msg.h.
 *
 * Broadcasts are read with a minimal msgpack reader rather than msgpack-c's unpacker: the
 * receive path runs once per delivery on every connection, and only "type" and the payload's
 * stamp matter, so nothing is allocated or copied. */
#include "bench_msg.h"

#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>

/* ---- Minimal msgpack reading ---------------------------------------------------------------- */

/* 0 if r has n more bytes, else -1. */
static int mp_need(const bench_msg_reader *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n ? 0 : -1;
}

/* Big-endian unsigned integer of n bytes at p. */
static uint64_t mp_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads a str or bin header; sets *s and *len. Returns 0, or -1 if the next value is neither. */
static int mp_read_bytes(bench_msg_reader *r, const uint8_t **s, size_t *len)
{
    if (mp_need(r, 1))
        return -1;
    uint8_t b = *r->p++;
    int hl;
    if ((b & 0xe0) == 0xa0) {
        *len = b & 0x1f;
        hl = 0;
    } else if (b == 0xd9 || b == 0xc4) {
        hl = 1;
    } else if (b == 0xda || b == 0xc5) {
        hl = 2;
    } else if (b == 0xdb || b == 0xc6) {
        hl = 4;
    } else {
        return -1;
    }
    if (hl) {
        if (mp_need(r, (size_t)hl))
            return -1;
        *len = (size_t)mp_be(r->p, hl);
        r->p += hl;
    }
    if (mp_need(r, *len))
        return -1;
    *s = r->p;
    r->p += *len;
    return 0;
}

/* Skips one value of any type. Returns 0 or -1 (truncated, too deep). */
static int mp_skip(bench_msg_reader *r, int depth)
{
    if (depth > 32 || mp_need(r, 1))
        return -1;
    uint8_t b = *r->p;
    const uint8_t *s;
    size_t len;
    if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3) {
        r->p++;
        return 0;
    }
    if ((b & 0xe0) == 0xa0 || (b >= 0xc4 && b <= 0xc6) || (b >= 0xd9 && b <= 0xdb))
        return mp_read_bytes(r, &s, &len);
    static const int fixed[] = {[0xca - 0xca] = 4, [0xcb - 0xca] = 8, [0xcc - 0xca] = 1,
                                [0xcd - 0xca] = 2, [0xce - 0xca] = 4, [0xcf - 0xca] = 8,
                                [0xd0 - 0xca] = 1, [0xd1 - 0xca] = 2, [0xd2 - 0xca] = 4,
                                [0xd3 - 0xca] = 8};
    if (b >= 0xca && b <= 0xd3) {
        r->p++;
        if (mp_need(r, (size_t)fixed[b - 0xca]))
            return -1;
        r->p += fixed[b - 0xca];
        return 0;
    }
    uint64_t n;
    int per;
    if ((b & 0xf0) == 0x90 || (b & 0xf0) == 0x80) {
        n = b & 0x0f;
        per = (b & 0xf0) == 0x80 ? 2 : 1;
        r->p++;
    } else if (b == 0xdc || b == 0xdd || b == 0xde || b == 0xdf) {
        int hl = (b == 0xdc || b == 0xde) ? 2 : 4;
        per = b >= 0xde ? 2 : 1;
        r->p++;
        if (mp_need(r, (size_t)hl))
            return -1;
        n = mp_be(r->p, hl);
        r->p += hl;
    } else {
        return -1; /* ext: relay never sends it */
    }
    for (uint64_t i = 0; i < n * (uint64_t)per; i++)
        if (mp_skip(r, depth + 1))
            return -1;
    return 0;
}

/* Reads one broadcast map from rd, finding its "type" and "payload". Returns 0 or -1 (not a
 * map, truncated); rd only advances on success. */
static int mp_broadcast(bench_msg_reader *rd, const uint8_t **type, size_t *type_len,
                        const uint8_t **payload, size_t *payload_len)
{
    bench_msg_reader r = *rd;
    if (mp_need(&r, 1))
        return -1;
    uint8_t b = *r.p++;
    uint64_t n;
    if ((b & 0xf0) == 0x80) {
        n = b & 0x0f;
    } else if (b == 0xde && !mp_need(&r, 2)) {
        n = mp_be(r.p, 2);
        r.p += 2;
    } else {
        return -1;
    }
    *type = *payload = NULL;
    for (uint64_t i = 0; i < n; i++) {
        const uint8_t *k;
        size_t kl;
        if (mp_read_bytes(&r, &k, &kl))
            return -1;
        if (kl == 4 && memcmp(k, "type", 4) == 0) {
            if (mp_read_bytes(&r, type, type_len))
                return -1;
        } else if (kl == 7 && memcmp(k, "payload", 7) == 0) {
            if (mp_read_bytes(&r, payload, payload_len))
                return -1;
        } else if (mp_skip(&r, 1)) {
            return -1;
        }
    }
    rd->p = r.p;
    return *type ? 0 : -1;
}

/* ---- Payload stamps ------------------------------------------------------------------------- */

static const char hexdig[] = "0123456789abcdef";

/* Writes v as exactly `digits` lowercase hex digits (no terminator). */
static void put_hex(char *out, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        out[i] = hexdig[v & 15];
}

/* Reads `digits` lowercase hex digits into *v. Returns 0, or -1 on any other character. */
static int get_hex(const uint8_t *in, int digits, uint64_t *v)
{
    uint64_t x = 0;
    for (int i = 0; i < digits; i++) {
        uint8_t ch = in[i];
        int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
        if (d < 0)
            return -1;
        x = x << 4 | (uint64_t)d;
    }
    *v = x;
    return 0;
}

/* ---- Requests ------------------------------------------------------------------------------- */

size_t bench_msg_build_op(char *buf, bool binary, int payload, int64_t ts, uint32_t sender_id,
                          uint32_t seq)
{
    char *p;
    size_t n = 0;
    if (binary) {
        uint8_t *u = (uint8_t *)buf;
        u[n++] = 0x83;
        u[n++] = 0xa4;
        memcpy(u + n, "type", 4), n += 4;
        u[n++] = 0xa9;
        memcpy(u + n, "operation", 9), n += 9;
        u[n++] = 0xa7;
        memcpy(u + n, "payload", 7), n += 7;
        if (payload < 256) {
            u[n++] = 0xd9;
            u[n++] = (uint8_t)payload;
        } else if (payload < 65536) {
            u[n++] = 0xda;
            u[n++] = (uint8_t)(payload >> 8);
            u[n++] = (uint8_t)payload;
        } else { /* str 32: BENCH_MAX_PAYLOAD itself does not fit in 16 bits */
            u[n++] = 0xdb;
            for (int i = 3; i >= 0; i--)
                u[n++] = (uint8_t)(payload >> (8 * i));
        }
        p = buf + n;
    } else {
        n = (size_t)sprintf(buf, "{\"type\":\"operation\",\"payload\":\"");
        p = buf + n;
    }
    put_hex(p, (uint64_t)ts, 16);
    put_hex(p + 16, sender_id, 8);
    put_hex(p + 24, seq, 8);
    memset(p + BENCH_MSG_STAMP_LEN, 'x', (size_t)payload - BENCH_MSG_STAMP_LEN);
    n += (size_t)payload;
    if (binary) {
        uint8_t *u = (uint8_t *)buf;
        u[n++] = 0xa3;
        memcpy(u + n, "ref", 3), n += 3;
        u[n++] = 0xce;
        for (int i = 3; i >= 0; i--)
            u[n++] = (uint8_t)(seq >> (8 * i));
    } else {
        n += (size_t)sprintf(buf + n, "\",\"ref\":%" PRIu32 "}", seq);
    }
    return n;
}

int bench_msg_build_auth(char *buf, size_t cap, const char *token)
{
    int n = snprintf(buf, cap, "{\"type\":\"authenticate\",\"token\":\"%s\"}", token);
    return n <= 0 || (size_t)n >= cap ? -1 : n;
}

/* ---- Replies and broadcasts ----------------------------------------------------------------- */

void bench_msg_parse_reply(const uint8_t *data, size_t len, bench_msg_reply *out)
{
    static const struct {
        const char *name;
        bench_msg_reply_type type;
    } types[] = {{"ack", BENCH_MSG_REPLY_ACK},
                 {"auth_result", BENCH_MSG_REPLY_AUTH_RESULT},
                 {"joined_document", BENCH_MSG_REPLY_JOINED},
                 {"lagged", BENCH_MSG_REPLY_LAGGED},
                 {"error", BENCH_MSG_REPLY_ERROR}};
    *out = (bench_msg_reply){.type = BENCH_MSG_REPLY_INVALID};
    json_t *m = json_loadb((const char *)data, len, 0, NULL);
    const char *type = m ? json_string_value(json_object_get(m, "type")) : NULL;
    if (!type) {
        json_decref(m);
        return;
    }
    out->type = BENCH_MSG_REPLY_OTHER;
    for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
        if (strcmp(type, types[i].name) == 0)
            out->type = types[i].type;
    json_t *ref = json_object_get(m, "ref");
    out->ref = json_integer_value(ref);
    out->has_ref = json_is_integer(ref);
    out->success = json_is_true(json_object_get(m, "success"));
    out->missed = json_integer_value(json_object_get(m, "missed"));
    const char *code = json_string_value(json_object_get(m, "code"));
    snprintf(out->code, sizeof(out->code), "%s", code ? code : "other");
    json_decref(m);
}

uint64_t bench_msg_open(bench_msg_reader *r, const uint8_t *data, size_t len, bool *batched)
{
    *r = (bench_msg_reader){data, data + len};
    *batched = false;
    if (!len || !((data[0] & 0xf0) == 0x90 || data[0] == 0xdc || data[0] == 0xdd))
        return 1;
    int hl = data[0] == 0xdc ? 2 : data[0] == 0xdd ? 4 : 0;
    uint64_t n = hl ? (len > (size_t)hl ? mp_be(data + 1, hl) : 0) : (uint64_t)(data[0] & 0x0f);
    r->p += 1 + hl;
    *batched = true;
    return n;
}

int bench_msg_next_broadcast(bench_msg_reader *r, bool *is_op, bench_msg_op *op)
{
    const uint8_t *type, *pl;
    size_t type_len, pl_len;
    if (mp_broadcast(r, &type, &type_len, &pl, &pl_len))
        return -1;
    *is_op = type_len == 9 && memcmp(type, "operation", 9) == 0;
    if (!*is_op)
        return 0;
    if (!pl || pl_len < BENCH_MSG_STAMP_LEN || get_hex(pl, 16, &op->ts) ||
        get_hex(pl + 16, 8, &op->sender_id) || get_hex(pl + 24, 8, &op->seq))
        return -1;
    return 0;
}
