/*
 * relay-bench - load generator for relay nodes, on the event-driven client core
 * (include/relay/wsclient.h).
 *
 * N connections are spread round-robin over node endpoints (connection i goes to endpoint
 * i % E, source address i % A, thread i % T); connection i is member i % C of document i / C,
 * and members 0..S-1 of each document are senders. Each thread runs its own wsc_loop and owns
 * its connections; the main thread only sequences the phases (ramp, warm-up, measured window,
 * drain) through shared timestamps and an atomic phase, prints progress and reports.
 * This file holds options, the connections' callbacks and the threads' loop; the modules in
 * tools/relay-bench/ build and read messages (bench_msg), keep histograms (hist), read process
 * figures (procstat) and print the report (report).
 *
 * Every operation payload is a str of B bytes: 16 hex digits of CLOCK_MONOTONIC ns at send,
 * 8 of the global sender id, 8 of the sender's sequence, then padding. Sender and receivers
 * live in this process, so a receiver computes sender-to-receiver latency directly and checks
 * each sender's sequence. Only operations sent inside the measured window count; expected
 * deliveries are acked operations times (members - 1).
 */
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "relay/token.h"
#include "relay/wsclient.h"

#include "bench.h"
#include "bench_msg.h"
#include "hist.h"
#include "procstat.h"
#include "report.h"

#define NS_PER_S 1000000000LL

/* ---- Per-connection and per-thread state ---------------------------------------------------- */

typedef enum { BC_WAIT = 0, BC_CONNECTING, BC_AUTH, BC_JOINING, BC_JOINED, BC_DEAD } bc_state;

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
    uint64_t errors[REPORT_N_ERRS];
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

/* CLOCK_MONOTONIC in ns: the clock of payload stamps, phases and every deadline. */
static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * NS_PER_S + ts.tv_nsec;
}

/* Counts one error of kind code (a relay error code or a report_err_names entry) on t. */
static void bench_count_error(bthread *t, const char *code)
{
    t->errors[report_err_index(code)]++;
}

/* The join request, sent once authenticated and again on a transient refusal. */
static const char bench_join[] = "{\"type\":\"join_document\"}";

/* ---- Connection callbacks (loop thread) ----------------------------------------------------- */

/* Marks bc dead (once), takes it out of the progress counters and counts kind as its error. */
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
    int n = bench_msg_build_auth(buf, sizeof(buf), t->token);
    if (n < 0 || wsc_conn_send(c, WSC_TEXT, buf, (size_t)n))
        conn_dead(bc, "send_failed");
}

/* An error reply. While joining, `unavailable`/`busy` are retried: a node whose Redis link is
 * still coming up refuses joins. */
static void on_error_reply(bconn *bc, const bench_msg_reply *m)
{
    bthread *t = bc->t;
    if (bc->state == BC_JOINING) {
        bool transient = !strcmp(m->code, "unavailable") || !strcmp(m->code, "busy");
        if (transient && bc->join_retries++ < 100) {
            t->retry[t->n_retry++] = bc - t->conns;
            t->retry_at = now_ns() + 100 * 1000000LL;
            t->join_retried++;
        } else {
            conn_dead(bc, m->code);
        }
        return;
    }
    bench_count_error(t, m->code);
    if (m->has_ref && bc->inflight)
        bc->inflight--;
}

/* A direct reply (Text JSON): auth_result, joined_document, ack, error, lagged, ... */
static void on_text(bconn *bc, const uint8_t *data, size_t len)
{
    bthread *t = bc->t;
    bench_msg_reply m;
    bench_msg_parse_reply(data, len, &m);
    switch (m.type) {
    case BENCH_MSG_REPLY_INVALID:
        bench_count_error(t, "other");
        break;
    case BENCH_MSG_REPLY_ACK:
        if (bc->inflight)
            bc->inflight--;
        CNT_ADD(t->c.acked, 1);
        if (bc->win_first && m.ref >= bc->win_first && m.ref <= bc->win_last)
            CNT_ADD(t->c.acked_win, 1);
        break;
    case BENCH_MSG_REPLY_AUTH_RESULT:
        if (m.success) {
            bc->state = BC_JOINING;
            if (wsc_conn_send(bc->ws, WSC_TEXT, bench_join, sizeof(bench_join) - 1))
                conn_dead(bc, "send_failed");
        } else {
            conn_dead(bc, "auth_failed");
        }
        break;
    case BENCH_MSG_REPLY_JOINED:
        if (bc->state == BC_JOINING) {
            bc->state = BC_JOINED;
            CNT_ADD(t->c.joined, 1);
            CNT_ADD(t->c.settled, 1);
            hist_record(&t->connect, (uint64_t)(now_ns() - bc->t_start));
        }
        break;
    case BENCH_MSG_REPLY_LAGGED:
        t->lagged++;
        t->missed += (uint64_t)m.missed;
        break;
    case BENCH_MSG_REPLY_ERROR:
        on_error_reply(bc, &m);
        break;
    case BENCH_MSG_REPLY_OTHER:
        break;
    }
}

/* One delivered operation: sequence-checked against its sender, and timed when it was sent
 * inside the measured window. */
static void on_operation(bconn *bc, const bench_msg_op *op, int64_t now)
{
    bthread *t = bc->t;
    CNT_ADD(t->c.delivered, 1);
    int s = (int)(op->sender_id % (uint64_t)t->o->senders);
    if (bc->last_seq) {
        if (op->seq > bc->last_seq[s] + 1u)
            t->gaps += op->seq - bc->last_seq[s] - 1;
        else if (op->seq <= bc->last_seq[s])
            t->reorders++;
        if (op->seq > bc->last_seq[s])
            bc->last_seq[s] = (uint32_t)op->seq;
    }
    if ((int64_t)op->ts >= g_measure_start && (int64_t)op->ts < g_measure_end) {
        CNT_ADD(t->c.delivered_win, 1);
        hist_record(&t->lat, (uint64_t)(now - (int64_t)op->ts));
    }
}

/* A Binary message: one broadcast map, or an array of broadcast maps (a batched frame format
 * relay does not send: it batches frames on the wire instead, docs/PROTOCOL.md; the reader
 * accepts it so a relay build or a fork that offers one can be measured). A malformed one
 * counts as "other" and ends the message. */
static void on_binary(bconn *bc, const uint8_t *data, size_t len)
{
    bench_msg_reader r;
    int64_t now = now_ns();
    bool batched;
    uint64_t n = bench_msg_open(&r, data, len, &batched);
    if (batched)
        bc->t->batches++;
    for (uint64_t i = 0; i < n; i++) {
        bool is_op;
        bench_msg_op op;
        if (bench_msg_next_broadcast(&r, &is_op, &op)) {
            bench_count_error(bc->t, "other");
            return;
        }
        if (is_op)
            on_operation(bc, &op, now);
        else
            bc->t->presence++;
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
    report_close_code_add(t->close_codes, code, 1);
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
    if (t->n_retry && now >= t->retry_at) {
        for (long i = 0; i < t->n_retry; i++) {
            bconn *rc = &t->conns[t->retry[i]];
            if (rc->state == BC_JOINING &&
                wsc_conn_send(rc->ws, WSC_TEXT, bench_join, sizeof(bench_join) - 1))
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
        const bench_endpoint *ep = &o->eps[bc->idx % o->n_eps];
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
            size_t n = bench_msg_build_op(buf, o->binary, o->payload, ts, sid, seq);
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
    fprintf(f, "Usage: relay-bench [options]\n"
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
               "  --query Q                 query string of the upgrade (e.g. color=%%23ff0000)\n"
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

static bench_totals sum_counters(bthread *ts, int n)
{
    bench_totals s = {0};
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

/* Sleeps until the monotonic time deadline, printing progress once a second. */
static void wait_until(bthread *ts, const bench_opts *o, int64_t deadline, bench_totals *last,
                       int64_t *last_t, bool (*done)(const bench_totals *, const bench_opts *))
{
    for (int guard = 0; guard < 1000000 && !atomic_load(&g_interrupted); guard++) {
        int64_t now = now_ns();
        bench_totals s = sum_counters(ts, o->threads);
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

static bool all_settled(const bench_totals *s, const bench_opts *o)
{
    return (long)s->settled >= o->conns;
}

static bool all_delivered(const bench_totals *s, const bench_opts *o)
{
    return s->acked_win >= s->sent_win &&
           s->delivered_win >= s->acked_win * (uint64_t)(o->per_doc - 1);
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&g_interrupted, 1);
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

    bench_totals last = {0};
    int64_t last_t = now_ns();
    wait_until(ts, &o, now_ns() + (int64_t)(o.connect_timeout_s * 1e9), &last, &last_t,
               all_settled);
    bench_totals s = sum_counters(ts, o.threads);
    fprintf(stderr, "[bench] %" PRIu64 " of %ld joined, %" PRIu64 " failed\n", s.joined, o.conns,
            s.failed);
    if (o.ready_file) {
        FILE *f = fopen(o.ready_file, "w");
        if (f) {
            fprintf(f, "joined %" PRIu64 " failed %" PRIu64 "\n", s.joined, s.failed);
            fclose(f);
        }
    }
    report_stats r = {0};
    double cpu0[BENCH_MAX_PIDS] = {0};
    double self0;
    if (o.idle) {
        g_load_start = now_ns();
        atomic_store(&g_phase, PH_LOAD);
        for (int i = 0; i < o.n_pids; i++)
            cpu0[i] = procstat_cpu_s(o.pids[i]);
        self0 = procstat_self_cpu_s();
        wait_until(ts, &o, g_load_start + (int64_t)(o.hold_s * 1e9), &last, &last_t, NULL);
        r.window_s = (double)(now_ns() - g_load_start) / 1e9;
    } else {
        g_load_start = now_ns() + 20 * 1000000LL;
        g_measure_start = g_load_start + (int64_t)(o.warmup_s * 1e9);
        g_measure_end = g_measure_start + (int64_t)(o.duration_s * 1e9);
        atomic_store(&g_phase, PH_LOAD);
        wait_until(ts, &o, g_measure_start, &last, &last_t, NULL);
        for (int i = 0; i < o.n_pids; i++)
            cpu0[i] = procstat_cpu_s(o.pids[i]);
        self0 = procstat_self_cpu_s();
        wait_until(ts, &o, g_measure_end, &last, &last_t, NULL);
        /* Deliveries of in-window operations that arrive during the drain are counted, but the
         * CPU window ends here so the drain's idle time does not dilute the figures. */
        for (int i = 0; i < o.n_pids; i++)
            r.node_cpu_s[i] = procstat_cpu_s(o.pids[i]) - cpu0[i];
        r.bench_cpu_s = procstat_self_cpu_s() - self0;
        r.window_s = o.duration_s;
        atomic_store(&g_phase, PH_DRAIN);
        wait_until(ts, &o, g_measure_end + (int64_t)(o.drain_s * 1e9), &last, &last_t,
                   all_delivered);
    }
    if (o.idle) {
        for (int i = 0; i < o.n_pids; i++)
            r.node_cpu_s[i] = procstat_cpu_s(o.pids[i]) - cpu0[i];
        r.bench_cpu_s = procstat_self_cpu_s() - self0;
    }
    for (int i = 0; i < o.n_pids; i++) {
        r.node_cpu_total += r.node_cpu_s[i];
        r.node_rss_kb[i] = procstat_rss_kb(o.pids[i]);
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
        for (int i = 0; i < REPORT_N_ERRS; i++)
            r.errors[i] += t->errors[i];
        r.lagged += t->lagged, r.missed += t->missed, r.gaps += t->gaps;
        r.reorders += t->reorders, r.skipped += t->skipped, r.throttled += t->throttled;
        r.join_retried += t->join_retried, r.batches += t->batches;
        for (int i = 0; i < BENCH_MAX_CODES && t->close_codes[i][1]; i++)
            report_close_code_add(r.close_codes, t->close_codes[i][0], t->close_codes[i][1]);
    }
    for (int k = 0; k < o.threads; k++)
        if (ts[k].first_error[0])
            fprintf(stderr, "[bench] thread %d first connect error: %s\n", k, ts[k].first_error);
    report_print(&o, &r);
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
