/*
 * wsclient_sync.c - the blocking layer over the event-driven core: one connection on its own
 * loop, every wait bounded by a deadline, received messages kept in arrival order until taken.
 * See include/relay/wsclient.h for the contract.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/clock.h"
#include "relay/codec.h"
#include "relay/msgbuf.h"
#include "relay/wsclient.h"

/* How long wsc_sync_send() waits for its message to be written. */
#define SYNC_SEND_TIMEOUT_MS 10000

typedef struct sync_item {
    struct sync_item *next;
    wsc_kind kind;
    uint8_t *data; /* len bytes plus a NUL */
    size_t len;
} sync_item;

struct wsc_sync {
    wsc_loop *loop;
    wsc_conn *conn;
    sync_item *head, *tail;
    size_t n_items;
    bool opened;
    bool done;
    bool oom;
    int close_code;
    char err[256];
};

static void sync_on_open(wsc_conn *c, void *user)
{
    (void)c;
    ((wsc_sync *)user)->opened = true;
}

static void sync_on_message(wsc_conn *c, void *user, wsc_kind kind, const uint8_t *data, size_t len)
{
    (void)c;
    wsc_sync *s = user;
    sync_item *it = malloc(sizeof(*it));
    uint8_t *copy = malloc(len + 1);
    if (!it || !copy) {
        free(it);
        free(copy);
        s->oom = true;
        return;
    }
    memcpy(copy, data, len);
    copy[len] = 0;
    it->next = NULL;
    it->kind = kind;
    it->data = copy;
    it->len = len;
    if (s->tail)
        s->tail->next = it;
    else
        s->head = it;
    s->tail = it;
    s->n_items++;
}

static void sync_on_close(wsc_conn *c, void *user, int code, const char *reason, size_t reason_len)
{
    (void)c;
    (void)reason;
    (void)reason_len;
    wsc_sync *s = user;
    s->done = true;
    s->close_code = code;
}

static void sync_on_error(wsc_conn *c, void *user, const char *text)
{
    (void)c;
    wsc_sync *s = user;
    s->done = true;
    s->close_code = WSC_CLOSE_ABNORMAL;
    snprintf(s->err, sizeof(s->err), "%s", text);
}

static const wsc_callbacks sync_callbacks = {sync_on_open, sync_on_message, sync_on_close,
                                             sync_on_error};

typedef bool (*sync_cond)(const wsc_sync *s);

/* Runs the loop until cond holds or timeout_ms passes. Returns 0 when cond holds, -1 on
 * timeout, -2 when the loop failed. cond is checked first, so a satisfied condition never
 * waits; with timeout_ms <= 0 the loop still runs once without blocking. */
static int sync_run_until(wsc_sync *s, int timeout_ms, sync_cond cond)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;
    for (bool ran = false;; ran = true) {
        if (cond(s))
            return 0;
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0 && ran)
            return -1;
        if (wsc_loop_run(s->loop, left > 0 ? (int)left : 0) < 0)
            return -2;
    }
}

static bool cond_open_or_done(const wsc_sync *s)
{
    return s->opened || s->done;
}

static bool cond_done(const wsc_sync *s)
{
    return s->done;
}

static bool cond_message_or_done(const wsc_sync *s)
{
    return s->head || s->done;
}

static bool cond_flushed(const wsc_sync *s)
{
    return s->done || wsc_conn_queued_msgs(s->conn) == 0;
}

static bool cond_never(const wsc_sync *s)
{
    (void)s;
    return false;
}

wsc_sync *wsc_sync_connect(const char *host, int port, const char *path, const wsc_sync_opts *opts,
                           int timeout_ms, char *err, size_t errlen)
{
    wsc_sync *s = calloc(1, sizeof(*s));
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    s->loop = wsc_loop_create(err, errlen);
    if (!s->loop) {
        free(s);
        return NULL;
    }
    wsc_conn_opts co;
    memset(&co, 0, sizeof(co));
    co.host = host;
    co.port = port;
    co.path = path;
    if (opts) {
        co.query = opts->query;
        co.origin = opts->origin;
        co.bind_addr = opts->bind_addr;
        co.max_message = opts->max_message;
    }
    s->conn = wsc_connect(s->loop, &co, &sync_callbacks, s);
    if (!s->conn) {
        snprintf(err, errlen, "out of memory or bad arguments");
        wsc_sync_destroy(s);
        return NULL;
    }
    int rc = sync_run_until(s, timeout_ms, cond_open_or_done);
    if (rc == 0 && s->opened)
        return s;
    if (rc == -1)
        snprintf(err, errlen, "timed out after %d ms connecting to %s:%d%s", timeout_ms, host, port,
                 path);
    else if (rc == -2)
        snprintf(err, errlen, "libwebsockets service failed");
    else
        snprintf(err, errlen, "%s", s->err[0] ? s->err : "connection failed");
    wsc_sync_destroy(s);
    return NULL;
}

static void items_free(wsc_sync *s)
{
    sync_item *it = s->head;
    while (it) {
        sync_item *next = it->next;
        free(it->data);
        free(it);
        it = next;
    }
    s->head = s->tail = NULL;
    s->n_items = 0;
}

void wsc_sync_destroy(wsc_sync *s)
{
    if (!s)
        return;
    wsc_conn_destroy(s->conn);
    wsc_loop_destroy(s->loop);
    items_free(s);
    free(s);
}

int wsc_sync_queue(wsc_sync *s, wsc_kind kind, const void *data, size_t len)
{
    if (s->done)
        return -1;
    return wsc_conn_send(s->conn, kind, data, len);
}

int wsc_sync_send(wsc_sync *s, wsc_kind kind, const void *data, size_t len)
{
    if (wsc_sync_queue(s, kind, data, len) < 0)
        return -1;
    if (sync_run_until(s, SYNC_SEND_TIMEOUT_MS, cond_flushed) < 0)
        return -1;
    /* Closed before the queue drained means the message may not have gone out. */
    return wsc_conn_queued_msgs(s->conn) == 0 ? 0 : -1;
}

int wsc_sync_sendf(wsc_sync *s, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    char *text = malloc((size_t)n + 1);
    if (!text)
        return -1;
    va_start(ap, fmt);
    vsnprintf(text, (size_t)n + 1, fmt, ap);
    va_end(ap);
    int rc = wsc_sync_send(s, WSC_TEXT, text, (size_t)n);
    free(text);
    return rc;
}

int wsc_sync_send_json(wsc_sync *s, const json_t *value)
{
    char *text = json_dumps(value, JSON_COMPACT | JSON_ENCODE_ANY);
    if (!text)
        return -1;
    int rc = wsc_sync_send(s, WSC_TEXT, text, strlen(text));
    free(text);
    return rc;
}

int wsc_sync_send_msgpack(wsc_sync *s, const json_t *value)
{
    msgbuf *mb = msgbuf_new(MSGBUF_BINARY, 256);
    if (!mb)
        return -1;
    int rc = -1;
    if (codec_json_to_msgpack(value, &mb) == 0)
        rc = wsc_sync_send(s, WSC_BINARY, msgbuf_data(mb), mb->len);
    msgbuf_unref(mb);
    return rc;
}

int wsc_sync_pump(wsc_sync *s, int timeout_ms)
{
    return sync_run_until(s, timeout_ms, cond_never) == -2 ? -1 : 0;
}

void wsc_msg_clear(wsc_msg *m)
{
    free(m->data);
    json_decref(m->json);
    memset(m, 0, sizeof(*m));
}

/* Decodes m->data into m->json (Text: JSON; Binary: msgpack). */
static void msg_decode(wsc_msg *m)
{
    if (m->kind == WSC_TEXT) {
        json_error_t jerr;
        m->json = json_loadb((const char *)m->data, m->len, JSON_DECODE_ANY, &jerr);
        if (!m->json)
            snprintf(m->decode_err, sizeof(m->decode_err), "bad JSON: %.100s", jerr.text);
    } else {
        m->json = codec_msgpack_to_json(m->data, m->len, m->decode_err, sizeof(m->decode_err));
    }
}

wsc_sync_status wsc_sync_recv(wsc_sync *s, int timeout_ms, wsc_msg *out)
{
    memset(out, 0, sizeof(*out));
    int rc = sync_run_until(s, timeout_ms, cond_message_or_done);
    if (rc == -2 || s->oom)
        return WSC_SYNC_ERROR;
    if (!s->head)
        return rc == -1 ? WSC_SYNC_TIMEOUT : WSC_SYNC_CLOSED;
    sync_item *it = s->head;
    s->head = it->next;
    if (!s->head)
        s->tail = NULL;
    s->n_items--;
    out->kind = it->kind;
    out->data = it->data;
    out->len = it->len;
    free(it);
    msg_decode(out);
    return WSC_SYNC_OK;
}

json_t *wsc_sync_expect(wsc_sync *s, wsc_kind kind, const char *type, int timeout_ms, char *err,
                        size_t errlen)
{
    wsc_msg m;
    wsc_sync_status st = wsc_sync_recv(s, timeout_ms, &m);
    if (st == WSC_SYNC_TIMEOUT) {
        snprintf(err, errlen, "timed out after %d ms waiting for %s", timeout_ms, type);
        return NULL;
    }
    if (st == WSC_SYNC_CLOSED) {
        snprintf(err, errlen, "connection closed (code %d%s%s) while waiting for %s", s->close_code,
                 s->err[0] ? ", " : "", s->err, type);
        return NULL;
    }
    if (st != WSC_SYNC_OK) {
        snprintf(err, errlen, "local failure while waiting for %s", type);
        return NULL;
    }
    const char *kname = m.kind == WSC_TEXT ? "Text" : "Binary";
    if (!m.json) {
        snprintf(err, errlen, "undecodable %s message (%s) while waiting for %s: %.200s", kname,
                 m.decode_err, type, m.kind == WSC_TEXT ? (const char *)m.data : "(binary)");
        wsc_msg_clear(&m);
        return NULL;
    }
    const char *got = json_string_value(json_object_get(m.json, "type"));
    if ((kind != WSC_ANY && m.kind != kind) || !got || strcmp(got, type) != 0) {
        char *dump = json_dumps(m.json, JSON_COMPACT | JSON_ENCODE_ANY);
        snprintf(err, errlen, "expected %s %s, got %s %.400s",
                 kind == WSC_ANY ? "" : (kind == WSC_TEXT ? "Text" : "Binary"), type, kname,
                 dump ? dump : "?");
        free(dump);
        wsc_msg_clear(&m);
        return NULL;
    }
    json_t *v = json_incref(m.json);
    wsc_msg_clear(&m);
    return v;
}

int wsc_sync_wait_close(wsc_sync *s, int timeout_ms, int *code)
{
    if (sync_run_until(s, timeout_ms, cond_done) < 0)
        return -1;
    if (code)
        *code = s->close_code;
    return 0;
}

int wsc_sync_close(wsc_sync *s, int code, const char *reason, int timeout_ms)
{
    if (s->done || wsc_conn_close(s->conn, code, reason) < 0)
        return -1;
    return sync_run_until(s, timeout_ms, cond_done) == 0 ? 0 : -1;
}

size_t wsc_sync_pending(const wsc_sync *s)
{
    return s->n_items;
}

bool wsc_sync_is_open(const wsc_sync *s)
{
    return !s->done;
}

const char *wsc_sync_error(const wsc_sync *s)
{
    return s->err;
}

wsc_conn *wsc_sync_conn(wsc_sync *s)
{
    return s->conn;
}
