/*
 * harness_ws.c - assertion helpers over the blocking WebSocket client, and the common main()
 * of the scenario suites. Every helper fails the test at the caller's file:line.
 */
#define _GNU_SOURCE /* vasprintf */
#include "harness.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void h_check_at(const char *file, int line, bool cond, const char *fmt, ...)
{
    if (cond)
        return;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    ck_abort_msg("%s:%d: %s", file, line, msg);
}

const char *h_dump(const json_t *v)
{
    static char bufs[4][2048];
    static int next;
    char *b = bufs[next++ & 3];
    char *s = v ? json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY | JSON_SORT_KEYS) : NULL;
    snprintf(b, sizeof(bufs[0]), "%s", s ? s : "(null)");
    free(s);
    return b;
}

wsc_sync *h_ws_at(const char *file, int line, const h_node *n, const char *doc,
                  const wsc_sync_opts *opts)
{
    char path[512], err[512];
    snprintf(path, sizeof(path), "/ws/documents/%s", doc);
    wsc_sync *c =
        wsc_sync_connect("127.0.0.1", h_node_port(n), path, opts, H_WAIT_MS, err, sizeof(err));
    h_check_at(file, line, c != NULL, "connecting to %s: %s", path, err);
    return c;
}

void h_send_at(const char *file, int line, wsc_sync *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *text = NULL;
    int n = vasprintf(&text, fmt, ap);
    va_end(ap);
    h_check_at(file, line, n >= 0, "out of memory");
    int rc = wsc_sync_send(c, WSC_TEXT, text, (size_t)n);
    h_check_at(file, line, rc == 0, "sending %.200s failed (%s)", text, wsc_sync_error(c));
    free(text);
}

void h_send_raw_at(const char *file, int line, wsc_sync *c, wsc_kind kind, const void *data,
                   size_t len)
{
    int rc = wsc_sync_send(c, kind, data, len);
    h_check_at(file, line, rc == 0, "sending a %zu-byte message failed (%s)", len,
               wsc_sync_error(c));
}

json_t *h_expect_at(const char *file, int line, wsc_sync *c, wsc_kind kind, const char *type)
{
    char err[1024];
    json_t *v = wsc_sync_expect(c, kind, type, H_WAIT_MS, err, sizeof(err));
    h_check_at(file, line, v != NULL, "%s", err);
    return v;
}

json_t *h_expect_error_at(const char *file, int line, wsc_sync *c, const char *code)
{
    json_t *v = h_expect_at(file, line, c, WSC_TEXT, "error");
    const char *got = json_string_value(json_object_get(v, "code"));
    h_check_at(file, line, got && strcmp(got, code) == 0, "expected error %s, got %s", code,
               h_dump(v));
    h_check_at(file, line, json_is_string(json_object_get(v, "message")),
               "error without a message string: %s", h_dump(v));
    return v;
}

void h_expect_quiet_at(const char *file, int line, wsc_sync *c, int ms)
{
    wsc_msg m;
    wsc_sync_status st = wsc_sync_recv(c, ms, &m);
    if (st == WSC_SYNC_OK) {
        char text[600];
        snprintf(text, sizeof(text), "%s %s", m.kind == WSC_TEXT ? "Text" : "Binary",
                 m.json ? h_dump(m.json) : "(undecodable)");
        wsc_msg_clear(&m);
        h_check_at(file, line, false, "expected no message for %d ms, got %s", ms, text);
    }
    h_check_at(file, line, st == WSC_SYNC_TIMEOUT, "expected an open, quiet connection: %s",
               st == WSC_SYNC_CLOSED ? "it closed" : "local failure");
}

int h_expect_close_at(const char *file, int line, wsc_sync *c)
{
    int code = 0;
    int rc = wsc_sync_wait_close(c, H_WAIT_MS, &code);
    h_check_at(file, line, rc == 0, "connection still open after %d ms", H_WAIT_MS);
    if (wsc_sync_pending(c)) {
        wsc_msg m;
        wsc_sync_recv(c, 0, &m);
        char text[600];
        snprintf(text, sizeof(text), "%s", m.json ? h_dump(m.json) : "(undecodable)");
        size_t left = wsc_sync_pending(c) + 1;
        wsc_msg_clear(&m);
        h_check_at(file, line, false, "closed (%d) with %zu unread message(s), first: %s", code,
                   left, text);
    }
    return code;
}

void h_roundtrip_at(const char *file, int line, wsc_sync *c)
{
    h_send_at(file, line, c, "{\"type\":\"ping\"}");
    json_decref(h_expect_at(file, line, c, WSC_TEXT, "pong"));
}

json_t *h_auth_at(const char *file, int line, wsc_sync *c, const char *sub, const char *name)
{
    char *tok = h_token(sub, name, 3600);
    h_check_at(file, line, tok != NULL, "token_mint_hs256 failed");
    h_send_at(file, line, c, "{\"type\":\"authenticate\",\"token\":\"%s\"}", tok);
    free(tok);
    json_t *v = h_expect_at(file, line, c, WSC_TEXT, "auth_result");
    h_check_at(file, line, json_is_true(json_object_get(v, "success")), "auth failed: %s",
               h_dump(v));
    return v;
}

json_t *h_join_at(const char *file, int line, wsc_sync *c)
{
    h_send_at(file, line, c, "{\"type\":\"join_document\"}");
    return h_expect_at(file, line, c, WSC_TEXT, "joined_document");
}

wsc_sync *h_joined_at(const char *file, int line, const h_node *n, const char *doc, const char *sub)
{
    wsc_sync *c = h_ws_at(file, line, n, doc, NULL);
    json_decref(h_auth_at(file, line, c, sub, NULL));
    json_decref(h_join_at(file, line, c));
    return c;
}

json_t *h_field_at(const char *file, int line, const json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    h_check_at(file, line, v != NULL, "missing field \"%s\" in %s", key, h_dump(o));
    return v;
}

const char *h_str_at(const char *file, int line, const json_t *o, const char *key)
{
    json_t *v = h_field_at(file, line, o, key);
    h_check_at(file, line, json_is_string(v), "field \"%s\" is not a string in %s", key, h_dump(o));
    return json_string_value(v);
}

json_int_t h_int_at(const char *file, int line, const json_t *o, const char *key)
{
    json_t *v = h_field_at(file, line, o, key);
    h_check_at(file, line, json_is_integer(v), "field \"%s\" is not an integer in %s", key,
               h_dump(o));
    return json_integer_value(v);
}

bool h_bool_at(const char *file, int line, const json_t *o, const char *key)
{
    json_t *v = h_field_at(file, line, o, key);
    h_check_at(file, line, json_is_boolean(v), "field \"%s\" is not a boolean in %s", key,
               h_dump(o));
    return json_is_true(v);
}

bool h_json_equal(const json_t *a, const json_t *b)
{
    if (json_is_number(a) && json_is_number(b))
        return json_number_value(a) == json_number_value(b);
    if (json_is_array(a) && json_is_array(b)) {
        if (json_array_size(a) != json_array_size(b))
            return false;
        for (size_t i = 0; i < json_array_size(a); i++)
            if (!h_json_equal(json_array_get(a, i), json_array_get(b, i)))
                return false;
        return true;
    }
    if (json_is_object(a) && json_is_object(b)) {
        if (json_object_size(a) != json_object_size(b))
            return false;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *)a, k, v)
        {
            if (!h_json_equal(v, json_object_get(b, k)))
                return false;
        }
        return true;
    }
    return json_equal((json_t *)a, (json_t *)b);
}

int h_run_suite(Suite *s)
{
    /* Writes to a peer that already closed must fail with EPIPE, not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
