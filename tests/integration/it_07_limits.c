/*
 * 07 limits: message size (1009), invalid UTF-8 (1007), protocol violations (1002), WebSocket
 * ping, the per-connection rate limit (rate_limited, then 1008 only for abuse), and flow control
 * for a client that pipelines requests faster than it reads the replies.
 */
#include "harness.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "relay/clock.h"

/* Raw connection to doc1 on n, authenticated as sub (and joined when join). */
static h_raw *raw_session(h_node *n, const char *sub, bool join, int rcvbuf)
{
    char err[512];
    h_raw *r = h_raw_connect(h_node_port(n), "/ws/documents/doc1", rcvbuf, NULL, err, sizeof(err));
    ck_assert_msg(r != NULL, "%s", err);
    char *tok = h_token(sub, NULL, 3600);
    char msg[2048];
    snprintf(msg, sizeof(msg), "{\"type\":\"authenticate\",\"token\":\"%s\"}", tok);
    free(tok);
    ck_assert_int_eq(h_raw_send_text(r, msg), 0);
    h_frame f;
    ck_assert_int_eq(h_raw_read_msg(r, H_WAIT_MS, &f), 0);
    ck_assert_msg(f.opcode == 1 && strstr((char *)f.data, "\"success\":true"), "%s", f.data);
    h_frame_free(&f);
    if (join) {
        ck_assert_int_eq(h_raw_send_text(r, "{\"type\":\"join_document\"}"), 0);
        ck_assert_int_eq(h_raw_read_msg(r, H_WAIT_MS, &f), 0);
        ck_assert_msg(f.opcode == 1 && strstr((char *)f.data, "joined_document"), "%s", f.data);
        h_frame_free(&f);
    }
    return r;
}

/* Expects the raw connection to be closed by the server with code. */
static void raw_expect_close(h_raw *r, int code, const char *what)
{
    int got = 0;
    ck_assert_msg(h_raw_wait_close(r, H_WAIT_MS, &got, NULL) == 0, "%s: not closed", what);
    ck_assert_msg(got == code, "%s: closed with %d, expected %d", what, got, code);
}

START_TEST(message_over_max_size_closes_1009)
{
    h_node *n = h_node_start(NULL);
    /* Just under 1 MiB is fine, and others receive it whole. */
    wsc_sync *a = h_joined(n, "doc1", "alice");
    wsc_sync *b = h_joined(n, "doc1", "bob");
    json_decref(h_expect(a, WSC_BINARY, "user_joined"));
    size_t len = 1024 * 1024 - 200;
    char *s = malloc(len + 1);
    memset(s, 'z', len);
    s[len] = 0;
    h_send(a, "{\"type\":\"operation\",\"payload\":\"%s\"}", s);
    json_decref(h_expect(a, WSC_TEXT, "ack"));
    json_t *op = h_expect(b, WSC_BINARY, "operation");
    ck_assert_uint_eq(strlen(json_string_value(h_field(op, "payload"))), len);
    json_decref(op);

    /* 1 MiB + 1 (sent in 64 KiB fragments by the client library): 1009. */
    char *big = malloc(1024 * 1024 + 1);
    memset(big, ' ', 1024 * 1024 + 1);
    memcpy(big, "{\"type\":\"ping\"}", 15);
    ck_assert_int_eq(wsc_sync_queue(a, WSC_TEXT, big, 1024 * 1024 + 1), 0);
    ck_assert_int_eq(h_expect_close(a), 1009);
    /* The same for Binary. */
    wsc_sync *c = h_joined(n, "doc1", "carol");
    ck_assert_int_eq(wsc_sync_queue(c, WSC_BINARY, big, 1024 * 1024 + 1), 0);
    ck_assert_int_eq(h_expect_close(c), 1009);
    free(big);
    free(s);
    wsc_sync_destroy(a);
    wsc_sync_destroy(b);
    wsc_sync_destroy(c);
    h_node_finish(n);
}
END_TEST

START_TEST(configured_max_size_and_single_frame_declaration)
{
    h_node *n = h_node_start("--max-message-size", "4096", NULL);
    wsc_sync *a = h_joined(n, "doc1", "alice");
    char s[5000];
    memset(s, 'q', 3000);
    s[3000] = 0;
    h_send(a, "{\"type\":\"operation\",\"payload\":\"%s\"}", s);
    json_decref(h_expect(a, WSC_TEXT, "ack"));
    memset(s, 'q', 4500);
    s[4500] = 0;
    ck_assert_int_eq(wsc_sync_queue(a, WSC_TEXT, s, 4500), 0);
    ck_assert_int_eq(h_expect_close(a), 1009);
    wsc_sync_destroy(a);

    /* One frame declaring 16 MiB: closed without the node waiting for the bytes. */
    h_raw *r = raw_session(n, "bob", true, 0);
    uint8_t hdr[14] = {0x81, 0x80 | 127, 0, 0, 0, 0, 0x01, 0, 0, 0, 1, 2, 3, 4};
    ck_assert_int_eq(h_raw_send_bytes(r, hdr, sizeof(hdr)), 0);
    ck_assert_int_eq(h_raw_send_bytes(r, "xxxx", 4), 0);
    raw_expect_close(r, 1009, "16 MiB frame header");
    h_raw_close(r);
    h_node_finish(n);
}
END_TEST

START_TEST(invalid_utf8_text_closes_1007)
{
    h_node *n = h_node_start(NULL);
    static const char *const bad[] = {
        "{\"type\":\"ping\",\"x\":\"\xff\xfe\"}", "{\"type\":\"ping\",\"x\":\"\xc3\x28\"}",
        "{\"type\":\"ping\",\"x\":\"\xed\xa0\x80\"}", /* UTF-16 surrogate */
        "{\"type\":\"ping\",\"x\":\"\xc0\xaf\"}",     /* overlong '/' */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        h_raw *r = raw_session(n, "alice", i % 2 == 0, 0);
        ck_assert_int_eq(h_raw_send_text(r, bad[i]), 0);
        raw_expect_close(r, 1007, bad[i]);
        h_raw_close(r);
    }
    /* Before authentication too, and split across fragments. */
    char err[256];
    h_raw *r = h_raw_connect(h_node_port(n), "/ws/documents/doc1", 0, NULL, err, sizeof(err));
    ck_assert_msg(r != NULL, "%s", err);
    ck_assert_int_eq(h_raw_send_frame(r, false, 1, true, "{\"type\":\"ping\",\"x\":\"\xe2\x82", 22),
                     0);
    ck_assert_int_eq(h_raw_send_frame(r, true, 0, true, "\"}", 2), 0);
    raw_expect_close(r, 1007, "truncated sequence across fragments");
    h_raw_close(r);
    /* Valid multi-byte text split inside a character is fine. */
    r = h_raw_connect(h_node_port(n), "/ws/documents/doc1", 0, NULL, err, sizeof(err));
    ck_assert_msg(r != NULL, "%s", err);
    ck_assert_int_eq(h_raw_send_frame(r, false, 1, true, "{\"type\":\"ping\",\"x\":\"\xe2\x82", 22),
                     0);
    ck_assert_int_eq(h_raw_send_frame(r, true, 0, true, "\xac\"}", 3), 0);
    h_frame f;
    ck_assert_int_eq(h_raw_read_msg(r, H_WAIT_MS, &f), 0);
    ck_assert_msg(f.opcode == 1 && strstr((char *)f.data, "pong"), "%s", f.data);
    h_frame_free(&f);
    h_raw_close(r);
    h_node_finish(n);
}
END_TEST

START_TEST(protocol_violations_close_1002)
{
    h_node *n = h_node_start(NULL);
    char err[256];
    struct {
        const char *what;
        uint8_t bytes[24];
        size_t len;
    } cases[] = {
        /* Not here: an unmasked client frame. libwebsockets 4.1 does not enforce client masking
         * and exposes no way to see it (docs/PROTOCOL.md, known limitations). */
        {"reserved bit without extension", {0xc1, 0x80, 0, 0, 0, 0}, 6},
        {"reserved opcode 3", {0x83, 0x80, 0, 0, 0, 0}, 6},
        {"continuation without a start", {0x80, 0x80, 0, 0, 0, 0}, 6},
        {"fragmented ping", {0x09, 0x80, 0, 0, 0, 0}, 6},
        {"ping over 125 bytes", {0x89, 0x80 | 126, 0, 200, 0, 0, 0, 0}, 8},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        h_raw *r = h_raw_connect(h_node_port(n), "/ws/documents/doc1", 0, NULL, err, sizeof(err));
        ck_assert_msg(r != NULL, "%s", err);
        /* The oversized ping's 200 payload bytes go in the same write as its header: sent
         * after the node has already closed, they would turn its close into a reset. */
        uint8_t wire[256] = {0};
        size_t len = cases[i].len;
        memcpy(wire, cases[i].bytes, len);
        if (strcmp(cases[i].what, "ping over 125 bytes") == 0)
            len += 200;
        ck_assert_int_eq(h_raw_send_bytes(r, wire, len), 0);
        if (strcmp(cases[i].what, "ping over 125 bytes") == 0) {
            /* libwebsockets 4.1 drops such a connection without a close frame (1006 here);
             * what matters is that it is closed and the node carries on. */
            int got = 0;
            ck_assert_msg(h_raw_wait_close(r, H_WAIT_MS, &got, NULL) == 0, "%s: not closed",
                          cases[i].what);
        } else {
            raw_expect_close(r, 1002, cases[i].what);
        }
        h_raw_close(r);
    }
    /* The node is unharmed. */
    wsc_sync *c = h_ws(n, "doc1");
    h_roundtrip(c);
    wsc_sync_destroy(c);
    h_node_finish(n);
}
END_TEST

START_TEST(websocket_ping_gets_pong)
{
    h_node *n = h_node_start(NULL);
    h_raw *r = raw_session(n, "alice", false, 0);
    ck_assert_int_eq(h_raw_send_frame(r, true, 9, true, "hello", 5), 0);
    h_frame f;
    ck_assert_int_eq(h_raw_read_msg(r, H_WAIT_MS, &f), 0);
    ck_assert_int_eq(f.opcode, 10);
    ck_assert_uint_eq(f.len, 5);
    ck_assert_mem_eq(f.data, "hello", 5);
    h_frame_free(&f);
    /* A client close is answered with a close frame. */
    uint8_t code[2] = {0x03, 0xe8};
    ck_assert_int_eq(h_raw_send_frame(r, true, 8, true, code, 2), 0);
    int got = 0;
    ck_assert_int_eq(h_raw_wait_close(r, H_WAIT_MS, &got, NULL), 0);
    ck_assert_int_eq(got, 1000);
    h_raw_close(r);
    h_node_finish(n);
}
END_TEST

START_TEST(rate_limit_refuses_excess_without_closing)
{
    h_node *n = h_node_start("--rate-limit", "20", "--rate-burst", "20", NULL);
    wsc_sync *a = h_joined(n, "doc1", "alice");
    /* The join used 2 of the burst (authenticate, join_document): wait for a full bucket. */
    h_expect_quiet(a, 1100);
    const int total = 30;
    for (int i = 0; i < total; i++) {
        char msg[96];
        int len =
            snprintf(msg, sizeof(msg), "{\"type\":\"operation\",\"payload\":%d,\"ref\":%d}", i, i);
        ck_assert_int_eq(wsc_sync_queue(a, WSC_TEXT, msg, (size_t)len), 0);
    }
    int acks = 0, limited = 0;
    for (int i = 0; i < total; i++) {
        wsc_msg m;
        ck_assert_int_eq(wsc_sync_recv(a, H_WAIT_MS, &m), WSC_SYNC_OK);
        ck_assert_ptr_nonnull(m.json);
        const char *type = h_str(m.json, "type");
        ck_assert_int_eq(h_int(m.json, "ref"), i);
        if (strcmp(type, "ack") == 0) {
            ck_assert_int_eq(h_int(m.json, "seq"), acks + 1);
            acks++;
        } else {
            ck_assert_msg(strcmp(type, "error") == 0 &&
                              strcmp(h_str(m.json, "code"), "rate_limited") == 0,
                          "%s", h_dump(m.json));
            limited++;
        }
        wsc_msg_clear(&m);
    }
    ck_assert_msg(acks >= 20 && acks <= 23, "%d acks", acks);
    ck_assert_int_eq(acks + limited, total);
    ck_assert(wsc_sync_is_open(a));
    /* Refused operations were not applied. */
    h_expect_quiet(a, 1100);
    h_send(a, "{\"type\":\"sync_request\",\"since\":0}");
    json_t *sr = h_expect(a, WSC_TEXT, "sync_response");
    ck_assert_int_eq(h_int(sr, "seq"), acks);
    json_decref(sr);
    wsc_sync_destroy(a);
    h_node_finish(n);
}
END_TEST

START_TEST(abusive_flood_closes_1008)
{
    h_node *n = h_node_start("--rate-limit", "10", "--rate-burst", "10", NULL);
    wsc_sync *a = h_ws(n, "doc1");
    json_decref(h_auth(a, "mallory"));
    /* About 30 times the limit, for up to 5 s. */
    int64_t start = clock_mono_ms(), next = start;
    int sent = 0, limited = 0;
    while (wsc_sync_is_open(a) && clock_mono_ms() - start < 5000) {
        while (next <= clock_mono_ms()) {
            wsc_sync_queue(a, WSC_TEXT, "{\"type\":\"ping\"}", 15);
            sent++;
            next += 3;
        }
        wsc_msg m;
        while (wsc_sync_recv(a, 1, &m) == WSC_SYNC_OK) {
            if (m.json && json_object_get(m.json, "code") &&
                strcmp(json_string_value(json_object_get(m.json, "code")), "rate_limited") == 0)
                limited++;
            wsc_msg_clear(&m);
        }
    }
    int code = 0;
    ck_assert_msg(wsc_sync_wait_close(a, 100, &code) == 0, "still open after %d pings", sent);
    ck_assert_int_eq(code, 1008);
    ck_assert_int_gt(limited, 0);
    wsc_sync_destroy(a);
    h_node_finish(n);
}
END_TEST

START_TEST(moderate_overload_is_refused_but_not_closed)
{
    h_node *n = h_node_start("--rate-limit", "10", "--rate-burst", "10", NULL);
    wsc_sync *a = h_ws(n, "doc1");
    json_decref(h_auth(a, "oscar"));
    /* 25 messages/s (2.5 times the limit) for 2 s: some refused, never closed. */
    int64_t start = clock_mono_ms(), next = start;
    int sent = 0, pongs = 0, limited = 0;
    while (clock_mono_ms() - start < 2000) {
        if (next <= clock_mono_ms()) {
            h_send(a, "{\"type\":\"ping\"}");
            sent++;
            next += 40;
        }
        wsc_msg m;
        while (wsc_sync_recv(a, 1, &m) == WSC_SYNC_OK) {
            const char *type = m.json ? json_string_value(json_object_get(m.json, "type")) : "";
            if (type && strcmp(type, "pong") == 0)
                pongs++;
            else if (type && strcmp(type, "error") == 0 &&
                     strcmp(h_str(m.json, "code"), "rate_limited") == 0)
                limited++;
            else
                ck_abort_msg("unexpected %s", h_dump(m.json));
            wsc_msg_clear(&m);
        }
        ck_assert_msg(wsc_sync_is_open(a), "closed after %d messages", sent);
    }
    /* Collect the replies still in flight. */
    while (pongs + limited < sent) {
        wsc_msg m;
        ck_assert_int_eq(wsc_sync_recv(a, H_WAIT_MS, &m), WSC_SYNC_OK);
        const char *type = json_string_value(json_object_get(m.json, "type"));
        if (strcmp(type, "pong") == 0)
            pongs++;
        else
            limited++;
        wsc_msg_clear(&m);
    }
    ck_assert_int_gt(limited, 0);
    ck_assert_int_gt(pongs, 20);
    h_expect_quiet(a, 1100);
    h_roundtrip(a);
    wsc_sync_destroy(a);
    h_node_finish(n);
}
END_TEST

/* Builds one masked Text frame of text into buf; returns its length. */
static size_t frame_text(uint8_t *buf, const char *text)
{
    size_t len = strlen(text), h = 0;
    buf[h++] = 0x81;
    if (len < 126) {
        buf[h++] = (uint8_t)(0x80 | len);
    } else {
        buf[h++] = 0x80 | 126;
        buf[h++] = (uint8_t)(len >> 8);
        buf[h++] = (uint8_t)len;
    }
    memset(buf + h, 0, 4); /* zero mask: payload unchanged */
    h += 4;
    memcpy(buf + h, text, len);
    return h + len;
}

/* A client with a tiny receive window writes total requests without reading, then reads:
 * every reply arrives in order, nothing else arrives, and the connection stays open. Joined
 * clients send operations (acks), others pings (pongs). */
static void pipeline_without_reading(bool joined)
{
    h_node *n = h_node_start("--rate-limit", "1000000", "--rate-burst", "1000000", NULL);
    h_raw *r = raw_session(n, "alice", joined, 4096);
    const int total = 3000;
    char ref[220];
    memset(ref, 'r', 200);
    ref[200] = 0;
    /* All requests, pre-framed. */
    size_t cap = (size_t)total * 320, len = 0;
    uint8_t *out = malloc(cap);
    for (int i = 0; i < total; i++) {
        char msg[300];
        snprintf(msg, sizeof(msg), "{\"type\":\"%s\",\"payload\":%d,\"ref\":\"%s-%d\"}",
                 joined ? "operation" : "ping", i, ref, i);
        len += frame_text(out + len, msg);
    }
    /* Phase 1: write without reading for up to a second. */
    int fd = h_raw_fd(r);
    size_t off = 0;
    int64_t t0 = clock_mono_ms();
    while (off < len && clock_mono_ms() - t0 < 1000) {
        ssize_t k = send(fd, out + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (k > 0) {
            off += (size_t)k;
            continue;
        }
        ck_assert_msg(k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK), "send failed");
        struct pollfd p = {fd, POLLOUT, 0};
        poll(&p, 1, 50);
    }
    /* Phase 2: read everything, writing the rest as the node takes it. */
    int got = 0;
    int64_t deadline = clock_mono_ms() + 30000;
    while (got < total && clock_mono_ms() < deadline) {
        if (off < len) {
            ssize_t k = send(fd, out + off, len - off, MSG_DONTWAIT | MSG_NOSIGNAL);
            if (k > 0)
                off += (size_t)k;
        }
        h_frame f;
        int rc = h_raw_read_msg(r, off < len ? 5 : 1000, &f);
        if (rc == -1)
            continue;
        ck_assert_msg(rc == 0, "connection lost after %d replies", got);
        ck_assert_msg(f.opcode == 1, "unexpected opcode %d after %d replies", f.opcode, got);
        json_t *v = h_frame_json(&f);
        ck_assert_msg(v != NULL, "%s", f.data);
        ck_assert_msg(strcmp(h_str(v, "type"), joined ? "ack" : "pong") == 0, "reply %d: %s", got,
                      f.data);
        if (joined) {
            char want[300];
            snprintf(want, sizeof(want), "%s-%d", ref, got);
            ck_assert_str_eq(h_str(v, "ref"), want);
            ck_assert_int_eq(h_int(v, "seq"), got + 1);
        }
        json_decref(v);
        h_frame_free(&f);
        got++;
    }
    ck_assert_int_eq(got, total);
    /* Still open. */
    ck_assert_int_eq(h_raw_send_text(r, "{\"type\":\"ping\"}"), 0);
    h_frame f;
    ck_assert_int_eq(h_raw_read_msg(r, H_WAIT_MS, &f), 0);
    ck_assert_msg(strstr((char *)f.data, "pong") != NULL, "%s", f.data);
    h_frame_free(&f);
    free(out);
    h_raw_close(r);
    h_node_finish(n);
}

START_TEST(pipelined_pings_without_reading_get_every_pong)
{
    pipeline_without_reading(false);
}
END_TEST

START_TEST(pipelined_operations_without_reading_get_every_ack)
{
    pipeline_without_reading(true);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("07_limits");
    TCase *tc = tcase_create("limits");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_test(tc, message_over_max_size_closes_1009);
    tcase_add_test(tc, configured_max_size_and_single_frame_declaration);
    tcase_add_test(tc, invalid_utf8_text_closes_1007);
    tcase_add_test(tc, protocol_violations_close_1002);
    tcase_add_test(tc, websocket_ping_gets_pong);
    tcase_add_test(tc, rate_limit_refuses_excess_without_closing);
    tcase_add_test(tc, abusive_flood_closes_1008);
    tcase_add_test(tc, moderate_overload_is_refused_but_not_closed);
    tcase_add_test(tc, pipelined_pings_without_reading_get_every_pong);
    tcase_add_test(tc, pipelined_operations_without_reading_get_every_ack);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
