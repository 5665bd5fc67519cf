/*
 * relay-bench - load generator for relay nodes, on the event-driven client core
 * (include/relay/wsclient.h).
 *
 * N connections are spread round-robin over node endpoints (connection i goes to endpoint
 * i % E, source address i % A, thread i % T); connection i is member i % C of document i / C,
 * and members 0..S-1 of each document are senders. Each thread runs its own wsc_loop and owns
 * its connections; the main thread only sequences the phases (ramp, warm-up, measured window,
 * drain) through shared timestamps and an atomic phase, prints progress and reports.
 *
 * Every operation payload is a str of B bytes: 16 hex digits of CLOCK_MONOTONIC ns at send,
 * 8 of the global sender id, 8 of the sender's sequence, then padding. Sender and receivers
 * live in this process, so a receiver computes sender-to-receiver latency directly and checks
 * each sender's sequence. Only operations sent inside the measured window count; expected
 * deliveries are acked operations times (members - 1).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "relay/token.h"
#include "relay/wsclient.h"

#define BENCH_MAX_LIST    64
#define BENCH_MAX_THREADS 32
#define BENCH_MAX_PIDS    8
#define BENCH_MAX_CODES   16
#define BENCH_MIN_PAYLOAD 32
#define BENCH_MAX_PAYLOAD 65536
#define NS_PER_S          1000000000LL

/* ---- Log-linear histogram (HdrHistogram-like: 64 linear sub-buckets per power of two) ---- */

#define HIST_SUB     64
#define HIST_BUCKETS (2 * HIST_SUB + 40 * HIST_SUB)

typedef struct hist {
    uint64_t counts[HIST_BUCKETS];
    uint64_t total, max;
} hist;

/* Bucket index of v: exact below 128, else ~1.6% wide (top 7 significant bits kept). */
static int hist_index(uint64_t v)
{
    if (v < 2 * HIST_SUB)
        return (int)v;
    int msb = 63 - __builtin_clzll(v);
    int shift = msb - 6;
    int idx = 2 * HIST_SUB + (shift - 1) * HIST_SUB + (int)((v >> shift) - HIST_SUB);
    return idx < HIST_BUCKETS ? idx : HIST_BUCKETS - 1;
}

/* Highest value that falls in bucket idx (quantiles report the bucket's upper edge). */
static uint64_t hist_upper(int idx)
{
    if (idx < 2 * HIST_SUB)
        return (uint64_t)idx;
    int shift = (idx - 2 * HIST_SUB) / HIST_SUB + 1;
    uint64_t sub = (uint64_t)((idx - 2 * HIST_SUB) % HIST_SUB + HIST_SUB);
    return ((sub + 1) << shift) - 1;
}

static void hist_record(hist *h, uint64_t v)
{
    h->counts[hist_index(v)]++;
    h->total++;
    if (v > h->max)
        h->max = v;
}

static void hist_merge(hist *dst, const hist *src)
{
    for (int i = 0; i < HIST_BUCKETS; i++)
        dst->counts[i] += src->counts[i];
    dst->total += src->total;
    if (src->max > dst->max)
        dst->max = src->max;
}

/* Value at quantile q (0..1): the upper edge of the bucket holding it, capped at the max. */
static uint64_t hist_quantile(const hist *h, double q)
{
    if (!h->total)
        return 0;
    uint64_t want = (uint64_t)(q * (double)h->total + 0.5);
    if (want < 1)
        want = 1;
    uint64_t seen = 0;
    for (int i = 0; i < HIST_BUCKETS; i++) {
        seen += h->counts[i];
        if (seen >= want) {
            uint64_t u = hist_upper(i);
            return u < h->max ? u : h->max;
        }
    }
    return h->max;
}

/* ---- Options -------------------------------------------------------------------------------- */

typedef struct endpoint {
    char host[64];
    int port;
} endpoint;

typedef struct bench_opts {
    endpoint eps[BENCH_MAX_LIST];
    int n_eps;
    char binds[BENCH_MAX_LIST][64];
    int n_binds;
    long conns; /* total connections; docs * per_doc unless --conns */
    long docs;
    int per_doc, senders;
    double rate; /* ops/s per sender */
    int payload;
    double warmup_s, duration_s, drain_s, ramp, connect_timeout_s, hold_s;
    bool idle, binary, json;
    int threads;
    int max_inflight;
    const char *secret, *token, *doc_prefix, *ready_file, *query;
    int pids[BENCH_MAX_PIDS];
    int n_pids;
} bench_opts;

/* ---- Per-connection and per-thread state ---------------------------------------------------- */

typedef enum { BC_WAIT = 0, BC_CONNECTING, BC_AUTH, BC_JOINING, BC_JOINED, BC_DEAD } bc_state;

/* Error counters by kind; "other" collects codes this table does not name. */
static const char *const bench_err_names[] = {
    "connect_failed", "closed",       "auth_failed",     "bad_request", "rate_limited",
    "unavailable",    "not_joined",   "forbidden",       "busy",        "internal",
    "too_large",      "unknown_type", "unauthenticated", "send_failed", "other"};
#define BENCH_N_ERRS (int)(sizeof(bench_err_names) / sizeof(bench_err_names[0]))

typedef struct bthread bthread;

typedef struct bconn {
    bthread *t;
    wsc_conn *ws;
    long idx, doc;
    int member, sender; /* sender: index in the document, -1 for a pure receiver */
    bc_state state;
    int64_t t_start;
    /* Sender side. */
    int64_t next_send;
    uint32_t next_seq, inflight;
    uint32_t win_first, win_last; /* seq range sent inside the measured window */
    /* Receiver side: last seq seen from each sender of the document. */
    uint32_t *last_seq;
    int join_retries;
} bconn;

/* Counters written by one thread and read by the main thread for progress (relaxed). */
typedef struct bcounters {
    _Atomic uint64_t up, joined, failed, settled, sent, acked, delivered;
    _Atomic uint64_t sent_win, acked_win, delivered_win;
} bcounters;

struct bthread {
    int id;
    pthread_t th;
    const bench_opts *o;
    wsc_loop *loop;
    bconn *conns;
    long n, next_connect;
    bcounters c;
    hist lat, connect;
    uint64_t errors[BENCH_N_ERRS];
    uint64_t lagged, missed, gaps, reorders, skipped, throttled, presence, join_retried, batches;
    char *token;
    int close_codes[BENCH_MAX_CODES][2]; /* {close code, count} */
    char first_error[128];               /* text of the first connect failure */
    /* Connections whose join_document got `unavailable`/`busy`, retried after 100 ms. */
    long *retry;
    long n_retry;
    int64_t retry_at;
};

typedef enum { PH_RAMP = 0, PH_LOAD, PH_DRAIN, PH_STOP } bench_phase;

static _Atomic int g_phase = PH_RAMP;
static _Atomic int g_interrupted;
/* Set by main before PH_LOAD, read-only afterwards. */
static int64_t g_load_start, g_measure_start, g_measure_end;

#define CNT_ADD(x, n)                                                                              \
    atomic_store_explicit(&(x), atomic_load_explicit(&(x), memory_order_relaxed) + (n),            \
                          memory_order_relaxed)
#define CNT_GET(x) atomic_load_explicit(&(x), memory_order_relaxed)

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

static void bench_count_error(bthread *t, const char *code)
{
    for (int i = 0; i < BENCH_N_ERRS - 1; i++)
        if (strcmp(bench_err_names[i], code) == 0) {
            t->errors[i]++;
            return;
        }
    t->errors[BENCH_N_ERRS - 1]++;
}

/* ---- Minimal msgpack reading (broadcasts) ---------------------------------------------------- */

typedef struct mp_rd {
    const uint8_t *p, *end;
} mp_rd;

static int mp_need(mp_rd *r, size_t n)
{
    return (size_t)(r->end - r->p) >= n ? 0 : -1;
}

static uint64_t mp_be(const uint8_t *p, int n)
{
    uint64_t v = 0;
    for (int i = 0; i < n; i++)
        v = v << 8 | p[i];
    return v;
}

/* Reads a str or bin header; sets *s and *len. Returns 0, or -1 if the next value is neither. */
static int mp_read_bytes(mp_rd *r, const uint8_t **s, size_t *len)
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
static int mp_skip(mp_rd *r, int depth)
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

/* Reads one broadcast map from r, finding its "type" and "payload". Returns 0 or -1 (not a
 * map, truncated). */
static int mp_broadcast(mp_rd *rd, const uint8_t **type, size_t *type_len, const uint8_t **payload,
                        size_t *payload_len)
{
    mp_rd r = *rd;
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

/* ---- Payloads and requests ------------------------------------------------------------------ */

static const char hexdig[] = "0123456789abcdef";

static void put_hex(char *out, uint64_t v, int digits)
{
    for (int i = digits - 1; i >= 0; i--, v >>= 4)
        out[i] = hexdig[v & 15];
}

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

/* Builds one operation request into buf (room for B + 64 bytes). Returns its length. */
static size_t bench_build_op(const bench_opts *o, char *buf, int64_t ts, uint32_t sender_id,
                             uint32_t seq)
{
    char *p;
    size_t n = 0;
    if (o->binary) {
        uint8_t *u = (uint8_t *)buf;
        u[n++] = 0x83;
        u[n++] = 0xa4;
        memcpy(u + n, "type", 4), n += 4;
        u[n++] = 0xa9;
        memcpy(u + n, "operation", 9), n += 9;
        u[n++] = 0xa7;
        memcpy(u + n, "payload", 7), n += 7;
        if (o->payload < 256) {
            u[n++] = 0xd9;
            u[n++] = (uint8_t)o->payload;
        } else {
            u[n++] = 0xda;
            u[n++] = (uint8_t)(o->payload >> 8);
            u[n++] = (uint8_t)o->payload;
        }
        p = buf + n;
    } else {
        n = (size_t)sprintf(buf, "{\"type\":\"operation\",\"payload\":\"");
        p = buf + n;
    }
    put_hex(p, (uint64_t)ts, 16);
    put_hex(p + 16, sender_id, 8);
    put_hex(p + 24, seq, 8);
    memset(p + 32, 'x', (size_t)o->payload - 32);
    n += (size_t)o->payload;
    if (o->binary) {
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

/* ---- Connection callbacks (loop thread) ----------------------------------------------------- */

static void conn_dead(bconn *bc, const char *kind)
{
    bthread *t = bc->t;
    if (bc->state == BC_DEAD)
        return;
    if (bc->state < BC_JOINED) {
        CNT_ADD(t->c.failed, 1);
        CNT_ADD(t->c.settled, 1);
    } else
        CNT_ADD(t->c.joined, (uint64_t)-1);
    if (bc->state >= BC_AUTH)
        CNT_ADD(t->c.up, (uint64_t)-1);
    bc->state = BC_DEAD;
    bench_count_error(t, kind);
}

static void cb_open(wsc_conn *c, void *user)
{
    bconn *bc = user;
    bthread *t = bc->t;
    CNT_ADD(t->c.up, 1);
    bc->state = BC_AUTH;
    char buf[4096];
    int n = snprintf(buf, sizeof(buf), "{\"type\":\"authenticate\",\"token\":\"%s\"}", t->token);
    if (n <= 0 || (size_t)n >= sizeof(buf) || wsc_conn_send(c, WSC_TEXT, buf, (size_t)n))
        conn_dead(bc, "send_failed");
}

/* A direct reply (Text JSON): auth_result, joined_document, ack, error, lagged, ... */
static void on_text(bconn *bc, const uint8_t *data, size_t len)
{
    bthread *t = bc->t;
    json_t *m = json_loadb((const char *)data, len, 0, NULL);
    const char *type = m ? json_string_value(json_object_get(m, "type")) : NULL;
    if (!type) {
        bench_count_error(t, "other");
    } else if (strcmp(type, "ack") == 0) {
        json_int_t ref = json_integer_value(json_object_get(m, "ref"));
        if (bc->inflight)
            bc->inflight--;
        CNT_ADD(t->c.acked, 1);
        if (bc->win_first && ref >= bc->win_first && ref <= bc->win_last)
            CNT_ADD(t->c.acked_win, 1);
    } else if (strcmp(type, "auth_result") == 0) {
        if (json_is_true(json_object_get(m, "success"))) {
            static const char join[] = "{\"type\":\"join_document\"}";
            bc->state = BC_JOINING;
            if (wsc_conn_send(bc->ws, WSC_TEXT, join, sizeof(join) - 1))
                conn_dead(bc, "send_failed");
        } else {
            conn_dead(bc, "auth_failed");
        }
    } else if (strcmp(type, "joined_document") == 0) {
        if (bc->state == BC_JOINING) {
            bc->state = BC_JOINED;
            CNT_ADD(t->c.joined, 1);
            CNT_ADD(t->c.settled, 1);
            hist_record(&t->connect, (uint64_t)(now_ns() - bc->t_start));
        }
    } else if (strcmp(type, "lagged") == 0) {
        t->lagged++;
        t->missed += (uint64_t)json_integer_value(json_object_get(m, "missed"));
    } else if (strcmp(type, "error") == 0) {
        const char *code = json_string_value(json_object_get(m, "code"));
        code = code ? code : "other";
        if (bc->state == BC_JOINING) {
            /* A node whose Redis link is still coming up refuses joins; retry a few times. */
            bool transient = !strcmp(code, "unavailable") || !strcmp(code, "busy");
            if (transient && bc->join_retries++ < 100) {
                t->retry[t->n_retry++] = bc - t->conns;
                t->retry_at = now_ns() + 100 * 1000000LL;
                t->join_retried++;
            } else {
                conn_dead(bc, code);
            }
            json_decref(m);
            return;
        }
        bench_count_error(t, code);
        if (json_is_integer(json_object_get(m, "ref")) && bc->inflight)
            bc->inflight--;
    }
    json_decref(m);
}

/* One broadcast map: operations are timed and sequence-checked. Returns 0, or -1 when the
 * message is malformed. */
static int on_broadcast(bconn *bc, mp_rd *r, int64_t now)
{
    bthread *t = bc->t;
    const uint8_t *type, *pl;
    size_t type_len, pl_len;
    if (mp_broadcast(r, &type, &type_len, &pl, &pl_len))
        return -1;
    if (type_len != 9 || memcmp(type, "operation", 9) != 0) {
        t->presence++;
        return 0;
    }
    uint64_t ts, sid, seq;
    if (!pl || pl_len < 32 || get_hex(pl, 16, &ts) || get_hex(pl + 16, 8, &sid) ||
        get_hex(pl + 24, 8, &seq))
        return -1;
    CNT_ADD(t->c.delivered, 1);
    int s = (int)(sid % (uint64_t)t->o->senders);
    if (bc->last_seq) {
        if (seq > bc->last_seq[s] + 1u)
            t->gaps += seq - bc->last_seq[s] - 1;
        else if (seq <= bc->last_seq[s])
            t->reorders++;
        if (seq > bc->last_seq[s])
            bc->last_seq[s] = (uint32_t)seq;
    }
    if ((int64_t)ts >= g_measure_start && (int64_t)ts < g_measure_end) {
        CNT_ADD(t->c.delivered_win, 1);
        hist_record(&t->lat, (uint64_t)(now - (int64_t)ts));
    }
    return 0;
}

/* A Binary message: one broadcast map, or (batched broadcast frames, when the node was asked
 * for them with --query) an array of broadcast maps. */
static void on_binary(bconn *bc, const uint8_t *data, size_t len)
{
    mp_rd r = {data, data + len};
    int64_t now = now_ns();
    uint64_t n = 1;
    if (len && ((data[0] & 0xf0) == 0x90 || data[0] == 0xdc || data[0] == 0xdd)) {
        int hl = data[0] == 0xdc ? 2 : data[0] == 0xdd ? 4 : 0;
        n = hl ? (len > (size_t)hl ? mp_be(data + 1, hl) : 0) : (uint64_t)(data[0] & 0x0f);
        r.p += 1 + hl;
        bc->t->batches++;
    }
    for (uint64_t i = 0; i < n; i++)
        if (on_broadcast(bc, &r, now)) {
            bench_count_error(bc->t, "other");
            return;
        }
}

static void cb_message(wsc_conn *c, void *user, wsc_kind kind, const uint8_t *data, size_t len)
{
    (void)c;
    if (kind == WSC_TEXT)
        on_text(user, data, len);
    else
        on_binary(user, data, len);
}

static void cb_close(wsc_conn *c, void *user, int code, const char *reason, size_t reason_len)
{
    (void)c, (void)reason, (void)reason_len;
    bthread *t = ((bconn *)user)->t;
    for (int i = 0; i < BENCH_MAX_CODES; i++)
        if (t->close_codes[i][0] == code || !t->close_codes[i][1]) {
            t->close_codes[i][0] = code;
            t->close_codes[i][1]++;
            break;
        }
    conn_dead(user, "closed");
}

static void cb_error(wsc_conn *c, void *user, const char *text)
{
    (void)c;
    bthread *t = ((bconn *)user)->t;
    if (!t->first_error[0])
        snprintf(t->first_error, sizeof(t->first_error), "%s", text);
    conn_dead(user, "connect_failed");
}

static const wsc_callbacks bench_cb = {cb_open, cb_message, cb_close, cb_error};

/* ---- Thread ---------------------------------------------------------------------------------- */

/* Starts connections whose ramp time has come, keeping at most 256 handshakes in flight. */
static void thread_ramp(bthread *t, int64_t now, int64_t ramp_start)
{
    static const char join[] = "{\"type\":\"join_document\"}";
    if (t->n_retry && now >= t->retry_at) {
        for (long i = 0; i < t->n_retry; i++) {
            bconn *rc = &t->conns[t->retry[i]];
            if (rc->state == BC_JOINING && wsc_conn_send(rc->ws, WSC_TEXT, join, sizeof(join) - 1))
                conn_dead(rc, "send_failed");
        }
        t->n_retry = 0;
    }
    const bench_opts *o = t->o;
    double per_thread = o->ramp / o->threads;
    long in_flight = t->next_connect - (long)CNT_GET(t->c.settled);
    while (t->next_connect < t->n && in_flight < 256) {
        int64_t due = ramp_start + (int64_t)((double)t->next_connect / per_thread * 1e9);
        if (due > now)
            break;
        bconn *bc = &t->conns[t->next_connect++];
        char path[256];
        snprintf(path, sizeof(path), "/ws/documents/%s%ld", o->doc_prefix, bc->doc);
        const endpoint *ep = &o->eps[bc->idx % o->n_eps];
        wsc_conn_opts co = {.host = ep->host, .port = ep->port, .path = path, .query = o->query};
        if (o->n_binds)
            co.bind_addr = o->binds[bc->idx % o->n_binds];
        bc->t_start = now_ns();
        bc->state = BC_CONNECTING;
        bc->ws = wsc_connect(t->loop, &co, &bench_cb, bc);
        if (!bc->ws)
            conn_dead(bc, "connect_failed");
        in_flight++;
    }
}

/* Sends every operation that is due. Returns the earliest next send time (or INT64_MAX). */
static int64_t thread_send(bthread *t, int64_t now)
{
    const bench_opts *o = t->o;
    int64_t interval = (int64_t)(1e9 / o->rate);
    int64_t earliest = INT64_MAX;
    char buf[BENCH_MAX_PAYLOAD + 128];
    for (long i = 0; i < t->n; i++) {
        bconn *bc = &t->conns[i];
        if (bc->sender < 0 || bc->state != BC_JOINED)
            continue;
        /* Senders' phases are spread evenly over one interval, as independent users would be;
         * aligned phases would measure the burst, not the relay. */
        if (!bc->next_send)
            bc->next_send = g_load_start + (int64_t)((double)interval *
                                                     (double)(bc->doc * o->senders + bc->sender) /
                                                     (double)(o->docs * o->senders));
        /* Catch up at most one second; further behind counts as skipped (bench overloaded). */
        if (now - bc->next_send > NS_PER_S) {
            int64_t behind = (now - bc->next_send) / interval;
            t->skipped += (uint64_t)behind;
            bc->next_send += behind * interval;
        }
        int burst = 0;
        while (bc->next_send <= now && bc->next_send < g_measure_end && burst++ < 64) {
            int64_t ts = now_ns();
            bc->next_send += interval;
            if (bc->inflight >= (uint32_t)o->max_inflight) {
                t->throttled++;
                continue;
            }
            uint32_t seq = ++bc->next_seq;
            uint32_t sid = (uint32_t)(bc->doc * o->senders + bc->sender);
            size_t n = bench_build_op(o, buf, ts, sid, seq);
            if (wsc_conn_send(bc->ws, o->binary ? WSC_BINARY : WSC_TEXT, buf, n)) {
                bench_count_error(t, "send_failed");
                continue;
            }
            bc->inflight++;
            CNT_ADD(t->c.sent, 1);
            if (ts >= g_measure_start && ts < g_measure_end) {
                if (!bc->win_first)
                    bc->win_first = seq;
                bc->win_last = seq;
                CNT_ADD(t->c.sent_win, 1);
            }
        }
        if (bc->next_send < g_measure_end && bc->next_send < earliest)
            earliest = bc->next_send;
    }
    return earliest;
}

static void *thread_main(void *arg)
{
    bthread *t = arg;
    int64_t ramp_start = now_ns();
    for (;;) {
        int phase = atomic_load(&g_phase);
        if (phase == PH_STOP)
            break;
        int64_t now = now_ns();
        int64_t wake = now + 50 * 1000000LL;
        if (phase == PH_RAMP) {
            thread_ramp(t, now, ramp_start);
            if (t->next_connect < t->n)
                wake = now + 2 * 1000000LL;
        } else if (phase == PH_LOAD && !t->o->idle) {
            int64_t next = thread_send(t, now);
            if (next < wake)
                wake = next;
        }
        int64_t wait_ms = (wake - now_ns() + 999999) / 1000000;
        if (wsc_loop_run(t->loop, wait_ms < 1 ? 1 : (int)wait_ms) < 0)
            break;
    }
    for (long i = 0; i < t->n; i++)
        wsc_conn_destroy(t->conns[i].ws);
    return NULL;
}

/* ---- Setup, progress and report ------------------------------------------------------------- */

static void usage(FILE *f)
{
    fprintf(f,
            "Usage: relay-bench [options]\n"
            "  --endpoints H:P[,H:P...]  node endpoints, round-robin (default 127.0.0.1:8080)\n"
            "  --bind-addrs A[,A...]     local source addresses, round-robin\n"
            "  --docs D                  documents (default 1)\n"
            "  --clients C               clients per document (default 10)\n"
            "  --conns N                 total connections (default D*C; sets D = ceil(N/C))\n"
            "  --senders S               senders per document (default 1)\n"
            "  --rate R                  operations/s per sender (default 10)\n"
            "  --payload B               payload bytes, >= 32 (default 100)\n"
            "  --warmup S / --duration S warm-up and measured window, seconds (default 2 / 10)\n"
            "  --drain S                 wait for late deliveries after the window (default 3)\n"
            "  --ramp N                  connections opened per second (default 2000)\n"
            "  --connect-timeout S       give up waiting for joins (default 60)\n"
            "  --max-inflight N          unacked operations per sender (default 32, the node's "
            "reply queue)\n"
            "  --idle S                  idle mode: open, join and hold for S seconds\n"
            "  --ready-file PATH         write connection counts there once all are joined\n"
            "  --threads T               event-loop threads (default 2)\n"
            "  --secret S | --token T    HS256 secret to mint a token, or the token itself\n"
            "  --doc-prefix P            document name prefix (default bench-)\n"
            "  --node-pids P[,P...]      node processes whose CPU time is measured\n"
            "  --query Q                 query string of the upgrade (e.g. to ask for batching)\n"
            "  --binary                  msgpack requests (default JSON)\n"
            "  --json                    final report as JSON on stdout\n");
}

/* Splits a comma list into at most max items of at most itemlen bytes. Returns the count, -1. */
static int split_list(const char *s, char (*items)[64], int max)
{
    int n = 0;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t l = e ? (size_t)(e - s) : strlen(s);
        if (n >= max || l == 0 || l >= 64)
            return -1;
        memcpy(items[n], s, l);
        items[n++][l] = 0;
        s += l + (e ? 1 : 0);
    }
    return n;
}

/* Parses argv into o. Returns 0, 1 for --help, -1 with a message on stderr. */
static int parse_opts(int argc, char **argv, bench_opts *o)
{
    static const struct option lo[] = {{"endpoints", 1, 0, 'e'},    {"bind-addrs", 1, 0, 'b'},
                                       {"docs", 1, 0, 'd'},         {"clients", 1, 0, 'c'},
                                       {"conns", 1, 0, 'n'},        {"senders", 1, 0, 's'},
                                       {"rate", 1, 0, 'r'},         {"payload", 1, 0, 'p'},
                                       {"warmup", 1, 0, 'w'},       {"duration", 1, 0, 'D'},
                                       {"drain", 1, 0, 'R'},        {"ramp", 1, 0, 'a'},
                                       {"idle", 1, 0, 'i'},         {"threads", 1, 0, 't'},
                                       {"secret", 1, 0, 'S'},       {"token", 1, 0, 'T'},
                                       {"binary", 0, 0, 'B'},       {"json", 0, 0, 'j'},
                                       {"doc-prefix", 1, 0, 'P'},   {"ready-file", 1, 0, 'f'},
                                       {"node-pids", 1, 0, 'N'},    {"connect-timeout", 1, 0, 'C'},
                                       {"max-inflight", 1, 0, 'm'}, {"query", 1, 0, 'q'},
                                       {"help", 0, 0, 'h'},         {0, 0, 0, 0}};
    *o = (bench_opts){.docs = 1,
                      .per_doc = 10,
                      .senders = 1,
                      .rate = 10,
                      .payload = 100,
                      .warmup_s = 2,
                      .duration_s = 10,
                      .drain_s = 3,
                      .ramp = 2000,
                      .connect_timeout_s = 60,
                      .threads = 2,
                      .max_inflight = 32,
                      .doc_prefix = "bench-"};
    char items[BENCH_MAX_LIST][64];
    int opt;
    while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (opt) {
        case 'e':
            o->n_eps = split_list(optarg, items, BENCH_MAX_LIST);
            for (int i = 0; i < o->n_eps; i++) {
                char *colon = strrchr(items[i], ':');
                if (!colon || (o->eps[i].port = atoi(colon + 1)) <= 0)
                    return fprintf(stderr, "bad endpoint %s\n", items[i]), -1;
                *colon = 0;
                snprintf(o->eps[i].host, sizeof(o->eps[i].host), "%s", items[i]);
            }
            if (o->n_eps <= 0)
                return fprintf(stderr, "bad --endpoints\n"), -1;
            break;
        case 'b':
            if ((o->n_binds = split_list(optarg, o->binds, BENCH_MAX_LIST)) <= 0)
                return fprintf(stderr, "bad --bind-addrs\n"), -1;
            break;
        case 'N': {
            int n = split_list(optarg, items, BENCH_MAX_PIDS);
            if (n <= 0)
                return fprintf(stderr, "bad --node-pids\n"), -1;
            for (int i = 0; i < n; i++)
                o->pids[i] = atoi(items[i]);
            o->n_pids = n;
            break;
        }
        case 'd':
            o->docs = atol(optarg);
            break;
        case 'c':
            o->per_doc = atoi(optarg);
            break;
        case 'n':
            o->conns = atol(optarg);
            break;
        case 's':
            o->senders = atoi(optarg);
            break;
        case 'r':
            o->rate = atof(optarg);
            break;
        case 'p':
            o->payload = atoi(optarg);
            break;
        case 'w':
            o->warmup_s = atof(optarg);
            break;
        case 'D':
            o->duration_s = atof(optarg);
            break;
        case 'R':
            o->drain_s = atof(optarg);
            break;
        case 'a':
            o->ramp = atof(optarg);
            break;
        case 'i':
            o->idle = true, o->hold_s = atof(optarg);
            break;
        case 't':
            o->threads = atoi(optarg);
            break;
        case 'S':
            o->secret = optarg;
            break;
        case 'T':
            o->token = optarg;
            break;
        case 'B':
            o->binary = true;
            break;
        case 'j':
            o->json = true;
            break;
        case 'P':
            o->doc_prefix = optarg;
            break;
        case 'f':
            o->ready_file = optarg;
            break;
        case 'C':
            o->connect_timeout_s = atof(optarg);
            break;
        case 'm':
            o->max_inflight = atoi(optarg);
            break;
        case 'q':
            o->query = optarg;
            break;
        case 'h':
            usage(stdout);
            return 1;
        default:
            usage(stderr);
            return -1;
        }
    }
    if (!o->n_eps) {
        snprintf(o->eps[0].host, sizeof(o->eps[0].host), "127.0.0.1");
        o->eps[0].port = 8080;
        o->n_eps = 1;
    }
    if (o->idle)
        o->senders = 1; /* unused: nobody sends in idle mode */
    if (o->per_doc < 1 || o->senders < 1 || o->senders > o->per_doc || o->rate <= 0 ||
        o->payload < BENCH_MIN_PAYLOAD || o->payload > BENCH_MAX_PAYLOAD || o->threads < 1 ||
        o->threads > BENCH_MAX_THREADS || o->ramp <= 0 || o->docs < 1 || o->max_inflight < 1 ||
        o->duration_s <= 0 || o->warmup_s < 0 || (!o->secret && !o->token))
        return fprintf(stderr, "invalid options (see --help; --secret or --token needed)\n"), -1;
    if (o->conns > 0)
        o->docs = (o->conns + o->per_doc - 1) / o->per_doc;
    else
        o->conns = o->docs * o->per_doc;
    return 0;
}

typedef struct totals {
    uint64_t up, joined, failed, settled, sent, acked, delivered, sent_win, acked_win,
        delivered_win;
} totals;

static totals sum_counters(bthread *ts, int n)
{
    totals s = {0};
    for (int i = 0; i < n; i++) {
        bcounters *c = &ts[i].c;
        s.up += CNT_GET(c->up), s.joined += CNT_GET(c->joined), s.failed += CNT_GET(c->failed);
        s.settled += CNT_GET(c->settled);
        s.sent += CNT_GET(c->sent), s.acked += CNT_GET(c->acked);
        s.delivered += CNT_GET(c->delivered), s.sent_win += CNT_GET(c->sent_win);
        s.acked_win += CNT_GET(c->acked_win), s.delivered_win += CNT_GET(c->delivered_win);
    }
    return s;
}

/* utime+stime of pid in seconds from /proc/PID/stat, -1 if unreadable. */
static double proc_cpu_s(int pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    unsigned long ut, st;
    if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
        return -1;
    return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
}

static double self_cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec +
           ru.ru_stime.tv_usec / 1e6;
}

/* Sleeps until the monotonic time deadline, printing progress once a second. */
static void wait_until(bthread *ts, const bench_opts *o, int64_t deadline, totals *last,
                       int64_t *last_t, bool (*done)(const totals *, const bench_opts *))
{
    for (int guard = 0; guard < 1000000 && !atomic_load(&g_interrupted); guard++) {
        int64_t now = now_ns();
        totals s = sum_counters(ts, o->threads);
        if (now - *last_t >= NS_PER_S) {
            double dt = (double)(now - *last_t) / 1e9;
            fprintf(stderr,
                    "[bench] up %" PRIu64 " joined %" PRIu64 " failed %" PRIu64 " sent %" PRIu64
                    " delivered %" PRIu64 " rate %.0f msg/s\n",
                    s.up, s.joined, s.failed, s.sent, s.delivered,
                    (double)(s.delivered - last->delivered) / dt);
            *last = s;
            *last_t = now;
        }
        if (now >= deadline || (done && done(&s, o)))
            return;
        int64_t nap = deadline - now;
        if (nap > 50 * 1000000LL)
            nap = 50 * 1000000LL;
        struct timespec req = {0, (long)nap};
        nanosleep(&req, NULL);
    }
}

static bool all_settled(const totals *s, const bench_opts *o)
{
    return (long)s->settled >= o->conns;
}

static bool all_delivered(const totals *s, const bench_opts *o)
{
    return s->acked_win >= s->sent_win &&
           s->delivered_win >= s->acked_win * (uint64_t)(o->per_doc - 1);
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_interrupted, 1);
}

typedef struct report {
    totals s;
    hist lat, connect;
    uint64_t errors[BENCH_N_ERRS];
    uint64_t lagged, missed, gaps, reorders, skipped, throttled, join_retried, batches;
    double window_s, bench_cpu_s, node_cpu_s[BENCH_MAX_PIDS], node_cpu_total;
    long node_rss_kb[BENCH_MAX_PIDS];
    int close_codes[BENCH_MAX_CODES][2];
} report;

static long proc_rss_kb(int pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static void print_report(const bench_opts *o, const report *r)
{
    double expected = (double)r->s.acked_win * (o->per_doc - 1);
    double ratio = expected > 0 ? (double)r->s.delivered_win / expected : 0;
    double rate = r->window_s > 0 ? (double)r->s.delivered_win / r->window_s : 0;
    double us_per_msg =
        r->s.delivered_win ? r->node_cpu_total * 1e6 / (double)r->s.delivered_win : 0;
    static const double qs[] = {0.5, 0.9, 0.99, 0.999};
    static const char *const qn[] = {"p50", "p90", "p99", "p99.9"};
    json_t *j =
        json_pack("{s:s,s:I,s:I,s:I,s:I,s:I,s:I,s:I,s:f,s:f,s:f}", "mode",
                  o->idle ? "idle" : "load", "connections", (json_int_t)o->conns, "joined",
                  (json_int_t)r->s.joined, "failed", (json_int_t)r->s.failed, "offered",
                  (json_int_t)r->s.sent_win, "acked", (json_int_t)r->s.acked_win, "delivered",
                  (json_int_t)r->s.delivered_win, "expected", (json_int_t)expected,
                  "delivery_ratio", ratio, "delivered_per_s", rate, "window_s", r->window_s);
    json_t *lat = json_object(), *con = json_object(), *err = json_object();
    for (int i = 0; i < 4; i++) {
        json_object_set_new(lat, qn[i], json_real((double)hist_quantile(&r->lat, qs[i]) / 1e3));
        json_object_set_new(con, qn[i], json_real((double)hist_quantile(&r->connect, qs[i]) / 1e6));
    }
    json_object_set_new(lat, "max", json_real((double)r->lat.max / 1e3));
    json_object_set_new(lat, "count", json_integer((json_int_t)r->lat.total));
    json_object_set_new(con, "max", json_real((double)r->connect.max / 1e6));
    for (int i = 0; i < BENCH_N_ERRS; i++)
        if (r->errors[i])
            json_object_set_new(err, bench_err_names[i], json_integer((json_int_t)r->errors[i]));
    json_object_set_new(j, "latency_us", lat);
    json_object_set_new(con, "join_retries", json_integer((json_int_t)r->join_retried));
    json_object_set_new(j, "connect_ms", con);
    for (int i = 0; i < BENCH_MAX_CODES && r->close_codes[i][1]; i++) {
        char key[32];
        snprintf(key, sizeof(key), "close_%d", r->close_codes[i][0]);
        json_object_set_new(err, key, json_integer(r->close_codes[i][1]));
    }
    json_object_set_new(j, "errors", err);
    json_object_set_new(
        j, "lagged",
        json_pack("{s:I,s:I}", "messages", (json_int_t)r->lagged, "missed", (json_int_t)r->missed));
    json_object_set_new(
        j, "sequence",
        json_pack("{s:I,s:I}", "gaps", (json_int_t)r->gaps, "reorders", (json_int_t)r->reorders));
    json_object_set_new(j, "bench",
                        json_pack("{s:f,s:f,s:I,s:I}", "cpu_s", r->bench_cpu_s, "cpu_pct",
                                  r->window_s > 0 ? 100 * r->bench_cpu_s / r->window_s : 0,
                                  "skipped", (json_int_t)r->skipped, "throttled",
                                  (json_int_t)r->throttled));
    json_t *nodes = json_array();
    for (int i = 0; i < o->n_pids; i++)
        json_array_append_new(nodes,
                              json_pack("{s:i,s:f,s:I}", "pid", o->pids[i], "cpu_s",
                                        r->node_cpu_s[i], "rss_kb", (json_int_t)r->node_rss_kb[i]));
    json_object_set_new(j, "nodes", nodes);
    json_object_set_new(j, "acked_per_s",
                        json_real(r->window_s > 0 ? (double)r->s.acked_win / r->window_s : 0));
    json_object_set_new(j, "node_cpu_s", json_real(r->node_cpu_total));
    json_object_set_new(j, "node_us_per_msg", json_real(us_per_msg));
    if (o->json) {
        json_dumpf(j, stdout, JSON_COMPACT);
        fputc('\n', stdout);
    } else {
        printf("connections %ld joined %" PRIu64 " failed %" PRIu64 "\n", o->conns, r->s.joined,
               r->s.failed);
        if (!o->idle) {
            printf("window %.1f s: offered %" PRIu64 " acked %" PRIu64 " delivered %" PRIu64
                   " expected %.0f ratio %.6f rate %.0f msg/s\n",
                   r->window_s, r->s.sent_win, r->s.acked_win, r->s.delivered_win, expected, ratio,
                   rate);
            printf("latency us: p50 %.1f p90 %.1f p99 %.1f p99.9 %.1f max %.1f\n",
                   hist_quantile(&r->lat, 0.5) / 1e3, hist_quantile(&r->lat, 0.9) / 1e3,
                   hist_quantile(&r->lat, 0.99) / 1e3, hist_quantile(&r->lat, 0.999) / 1e3,
                   r->lat.max / 1e3);
        }
        printf("connect ms: p50 %.1f p99 %.1f max %.1f (join retries %" PRIu64 ")\n",
               hist_quantile(&r->connect, 0.5) / 1e6, hist_quantile(&r->connect, 0.99) / 1e6,
               r->connect.max / 1e6, r->join_retried);
        printf("errors:");
        for (int i = 0; i < BENCH_N_ERRS; i++)
            if (r->errors[i])
                printf(" %s=%" PRIu64, bench_err_names[i], r->errors[i]);
        for (int i = 0; i < BENCH_MAX_CODES && r->close_codes[i][1]; i++)
            printf(" close_%d=%d", r->close_codes[i][0], r->close_codes[i][1]);
        printf("\nlagged %" PRIu64 " (missed %" PRIu64 ") gaps %" PRIu64 " reorders %" PRIu64
               " skipped %" PRIu64 " throttled %" PRIu64 "\n",
               r->lagged, r->missed, r->gaps, r->reorders, r->skipped, r->throttled);
        printf("bench cpu %.2f s (%.0f%% of the window)\n", r->bench_cpu_s,
               r->window_s > 0 ? 100 * r->bench_cpu_s / r->window_s : 0);
        for (int i = 0; i < o->n_pids; i++)
            printf("node %d: cpu %.2f s rss %ld kB\n", o->pids[i], r->node_cpu_s[i],
                   r->node_rss_kb[i]);
        if (o->n_pids)
            printf("node cpu per delivered message: %.3f us\n", us_per_msg);
    }
    json_decref(j);
}

/* Creates the threads' state and connections. Returns 0 or -1 (message on stderr). */
static int setup_threads(const bench_opts *o, bthread *ts, char *token)
{
    for (int k = 0; k < o->threads; k++) {
        bthread *t = &ts[k];
        t->id = k;
        t->o = o;
        t->token = token;
        t->n = o->conns / o->threads + (k < o->conns % o->threads ? 1 : 0);
        t->conns = calloc((size_t)t->n + 1, sizeof(bconn));
        t->retry = calloc((size_t)t->n + 1, sizeof(long));
        char err[128];
        t->loop = wsc_loop_create(err, sizeof(err));
        if (!t->conns || !t->retry || !t->loop)
            return fprintf(stderr, "thread setup: %s\n", t->loop ? "out of memory" : err), -1;
        for (long j = 0; j < t->n; j++) {
            bconn *bc = &t->conns[j];
            bc->t = t;
            bc->idx = j * o->threads + k;
            bc->doc = bc->idx / o->per_doc;
            bc->member = (int)(bc->idx % o->per_doc);
            bc->sender = !o->idle && bc->member < o->senders ? bc->member : -1;
            if (!o->idle && !(bc->last_seq = calloc((size_t)o->senders, sizeof(uint32_t))))
                return fprintf(stderr, "out of memory\n"), -1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    bench_opts o;
    int rc = parse_opts(argc, argv, &o);
    if (rc)
        return rc > 0 ? 0 : 2;
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    signal(SIGPIPE, SIG_IGN);
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);
    char *token = o.token ? strdup(o.token)
                          : token_mint_hs256(o.secret, NULL, "bench", "bench",
                                             (int64_t)time(NULL) + 86400, 0, NULL, 0);
    if (!token)
        return fprintf(stderr, "cannot mint token\n"), 2;
    wsc_set_lws_log_level(0);
    bthread *ts = calloc((size_t)o.threads, sizeof(bthread));
    if (!ts || setup_threads(&o, ts, token))
        return 2;
    g_measure_start = g_measure_end = INT64_MAX;
    for (int k = 0; k < o.threads; k++)
        if (pthread_create(&ts[k].th, NULL, thread_main, &ts[k]))
            return fprintf(stderr, "pthread_create failed\n"), 2;

    totals last = {0};
    int64_t last_t = now_ns();
    wait_until(ts, &o, now_ns() + (int64_t)(o.connect_timeout_s * 1e9), &last, &last_t,
               all_settled);
    totals s = sum_counters(ts, o.threads);
    fprintf(stderr, "[bench] %" PRIu64 " of %ld joined, %" PRIu64 " failed\n", s.joined, o.conns,
            s.failed);
    if (o.ready_file) {
        FILE *f = fopen(o.ready_file, "w");
        if (f) {
            fprintf(f, "joined %" PRIu64 " failed %" PRIu64 "\n", s.joined, s.failed);
            fclose(f);
        }
    }
    report r = {0};
    double cpu0[BENCH_MAX_PIDS] = {0};
    double self0;
    if (o.idle) {
        g_load_start = now_ns();
        atomic_store(&g_phase, PH_LOAD);
        for (int i = 0; i < o.n_pids; i++)
            cpu0[i] = proc_cpu_s(o.pids[i]);
        self0 = self_cpu_s();
        wait_until(ts, &o, g_load_start + (int64_t)(o.hold_s * 1e9), &last, &last_t, NULL);
        r.window_s = (double)(now_ns() - g_load_start) / 1e9;
    } else {
        g_load_start = now_ns() + 20 * 1000000LL;
        g_measure_start = g_load_start + (int64_t)(o.warmup_s * 1e9);
        g_measure_end = g_measure_start + (int64_t)(o.duration_s * 1e9);
        atomic_store(&g_phase, PH_LOAD);
        wait_until(ts, &o, g_measure_start, &last, &last_t, NULL);
        for (int i = 0; i < o.n_pids; i++)
            cpu0[i] = proc_cpu_s(o.pids[i]);
        self0 = self_cpu_s();
        wait_until(ts, &o, g_measure_end, &last, &last_t, NULL);
        /* Deliveries of in-window operations that arrive during the drain are counted, but the
         * CPU window ends here so the drain's idle time does not dilute the figures. */
        for (int i = 0; i < o.n_pids; i++)
            r.node_cpu_s[i] = proc_cpu_s(o.pids[i]) - cpu0[i];
        r.bench_cpu_s = self_cpu_s() - self0;
        r.window_s = o.duration_s;
        atomic_store(&g_phase, PH_DRAIN);
        wait_until(ts, &o, g_measure_end + (int64_t)(o.drain_s * 1e9), &last, &last_t,
                   all_delivered);
    }
    if (o.idle) {
        for (int i = 0; i < o.n_pids; i++)
            r.node_cpu_s[i] = proc_cpu_s(o.pids[i]) - cpu0[i];
        r.bench_cpu_s = self_cpu_s() - self0;
    }
    for (int i = 0; i < o.n_pids; i++) {
        r.node_cpu_total += r.node_cpu_s[i];
        r.node_rss_kb[i] = proc_rss_kb(o.pids[i]);
    }
    atomic_store(&g_phase, PH_STOP);
    for (int k = 0; k < o.threads; k++) {
        wsc_loop_wake(ts[k].loop);
        pthread_join(ts[k].th, NULL);
    }
    r.s = sum_counters(ts, o.threads);
    for (int k = 0; k < o.threads; k++) {
        bthread *t = &ts[k];
        hist_merge(&r.lat, &t->lat);
        hist_merge(&r.connect, &t->connect);
        for (int i = 0; i < BENCH_N_ERRS; i++)
            r.errors[i] += t->errors[i];
        r.lagged += t->lagged, r.missed += t->missed, r.gaps += t->gaps;
        r.reorders += t->reorders, r.skipped += t->skipped, r.throttled += t->throttled;
        r.join_retried += t->join_retried, r.batches += t->batches;
        for (int i = 0; i < BENCH_MAX_CODES && t->close_codes[i][1]; i++)
            for (int q = 0; q < BENCH_MAX_CODES; q++)
                if (r.close_codes[q][0] == t->close_codes[i][0] || !r.close_codes[q][1]) {
                    r.close_codes[q][0] = t->close_codes[i][0];
                    r.close_codes[q][1] += t->close_codes[i][1];
                    break;
                }
    }
    for (int k = 0; k < o.threads; k++)
        if (ts[k].first_error[0])
            fprintf(stderr, "[bench] thread %d first connect error: %s\n", k, ts[k].first_error);
    print_report(&o, &r);
    for (int k = 0; k < o.threads; k++) {
        for (long j = 0; j < ts[k].n; j++)
            free(ts[k].conns[j].last_seq);
        free(ts[k].conns);
        free(ts[k].retry);
        wsc_loop_destroy(ts[k].loop);
    }
    free(ts);
    free(token);
    return 0;
}
