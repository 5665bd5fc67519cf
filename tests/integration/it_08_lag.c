/*
 * 08 lag: a joined client that stops reading while another floods the document loses the oldest
 * broadcasts and is told {"type":"lagged","channel":...,"missed":N} at the point of the gap, with
 * exact accounting (received + missed == sent); the flood's sender and a reading client are not
 * slowed down, and the slow client is still usable afterwards.
 */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

#include "relay/clock.h"

/* The slow reader: a raw socket with a tiny receive window that the test does not read. */
static h_raw *slow_session(h_node *n)
{
    char err[512];
    h_raw *r = h_raw_connect(h_node_port(n), "/ws/documents/doc1", 4096, NULL, err, sizeof(err));
    ck_assert_msg(r != NULL, "%s", err);
    char *tok = h_token("slow", NULL, 3600);
    char msg[2048];
    snprintf(msg, sizeof(msg), "{\"type\":\"authenticate\",\"token\":\"%s\"}", tok);
    free(tok);
    ck_assert_int_eq(h_raw_send_text(r, msg), 0);
    h_frame f;
    ck_assert_int_eq(h_raw_read_msg(r, H_WAIT_MS, &f), 0);
    ck_assert_msg(strstr((char *)f.data, "\"success\":true"), "%s", f.data);
    h_frame_free(&f);
    ck_assert_int_eq(h_raw_send_text(r, "{\"type\":\"join_document\"}"), 0);
    ck_assert_int_eq(h_raw_read_msg(r, H_WAIT_MS, &f), 0);
    ck_assert_msg(strstr((char *)f.data, "joined_document"), "%s", f.data);
    h_frame_free(&f);
    return r;
}

/* What one subscriber saw of one channel. */
typedef struct tally {
    long received; /* broadcasts of the channel */
    long missed;   /* sum of lagged.missed for the channel */
    long lagged;   /* lagged messages for the channel */
    long last_seq; /* document channel: seq of the last operation (0 before any) */
} tally;

/* Accounts one message for a subscriber; checks the lag gap on the document channel. */
static void tally_msg(tally *doc, tally *pres, json_t *v, bool binary)
{
    const char *type = h_str(v, "type");
    if (strcmp(type, "lagged") == 0) {
        ck_assert_msg(!binary, "lagged must be a direct (Text) reply: %s", h_dump(v));
        const char *ch = h_str(v, "channel");
        json_int_t missed = h_int(v, "missed");
        ck_assert_msg(missed > 0, "%s", h_dump(v));
        tally *t = strcmp(ch, "document") == 0 ? doc : strcmp(ch, "presence") == 0 ? pres : NULL;
        ck_assert_msg(t != NULL, "unknown channel: %s", h_dump(v));
        t->missed += missed;
        t->lagged++;
        if (t == doc)
            doc->last_seq += missed; /* the next operation must follow the gap exactly */
        return;
    }
    ck_assert_msg(binary, "broadcast %s came as Text", h_dump(v));
    if (strcmp(type, "operation") == 0) {
        json_int_t seq = h_int(v, "seq");
        ck_assert_msg(seq == doc->last_seq + 1, "operation seq %lld after %ld (lagged %ld)",
                      (long long)seq, doc->last_seq, doc->missed);
        doc->last_seq = seq;
        doc->received++;
    } else if (strcmp(type, "cursor") == 0 || strcmp(type, "user_joined") == 0 ||
               strcmp(type, "user_left") == 0) {
        pres->received++;
    } else {
        ck_abort_msg("unexpected message %s", h_dump(v));
    }
}

/* Reads the slow client until both channels account for the expected totals. */
static void drain_slow(h_raw *s, tally *doc, tally *pres, long doc_sent, long pres_sent)
{
    int64_t deadline = clock_mono_ms() + 30000;
    while ((doc->received + doc->missed < doc_sent || pres->received + pres->missed < pres_sent) &&
           clock_mono_ms() < deadline) {
        h_frame f;
        int rc = h_raw_read_msg(s, 1000, &f);
        if (rc == -1)
            continue;
        ck_assert_msg(rc == 0, "slow client lost its connection");
        ck_assert_msg(f.opcode == 1 || f.opcode == 2, "opcode %d", f.opcode);
        json_t *v = h_frame_json(&f);
        ck_assert_msg(v != NULL, "undecodable message");
        tally_msg(doc, pres, v, f.opcode == 2);
        json_decref(v);
        h_frame_free(&f);
        ck_assert_msg(doc->received + doc->missed <= doc_sent,
                      "document: %ld received + %ld missed > %ld sent", doc->received, doc->missed,
                      doc_sent);
        ck_assert_msg(pres->received + pres->missed <= pres_sent,
                      "presence: %ld received + %ld missed > %ld sent", pres->received,
                      pres->missed, pres_sent);
    }
    ck_assert_msg(doc->received + doc->missed == doc_sent,
                  "document: %ld received + %ld missed != %ld sent", doc->received, doc->missed,
                  doc_sent);
    ck_assert_msg(pres->received + pres->missed == pres_sent,
                  "presence: %ld received + %ld missed != %ld sent", pres->received, pres->missed,
                  pres_sent);
    /* Nothing more, and the slow client still works. */
    ck_assert_int_eq(h_raw_send_text(s, "{\"type\":\"ping\"}"), 0);
    h_frame f;
    ck_assert_int_eq(h_raw_read_msg(s, H_WAIT_MS, &f), 0);
    ck_assert_msg(f.opcode == 1 && strstr((char *)f.data, "\"pong\""), "after drain: %s", f.data);
    h_frame_free(&f);
}

/* Reads everything a normal client has received so far (without blocking). */
static void pump_reader(wsc_sync *c, tally *doc, tally *pres)
{
    wsc_msg m;
    while (wsc_sync_recv(c, 0, &m) == WSC_SYNC_OK) {
        ck_assert_msg(m.json != NULL, "undecodable message");
        tally_msg(doc, pres, m.json, m.kind == WSC_BINARY);
        wsc_msg_clear(&m);
    }
}

static json_int_t stat_lag_drops(h_node *n)
{
    h_http r;
    ck_assert_int_eq(h_http_get(h_node_port(n), "/stats", &r), 0);
    json_t *v = json_loads(r.body, 0, NULL);
    h_http_free(&r);
    ck_assert_ptr_nonnull(v);
    json_int_t d = h_int(v, "lag_drops");
    json_decref(v);
    return d;
}

START_TEST(slow_reader_lags_on_document_channel_with_exact_accounting)
{
    h_node *n = h_node_start("--rate-limit", "1000000", "--rate-burst", "1000000", NULL);
    h_raw *slow = slow_session(n);
    wsc_sync *reader = h_joined(n, "doc1", "reader");
    wsc_sync *a = h_joined(n, "doc1", "flooder");
    json_decref(h_expect(reader, WSC_BINARY, "user_joined"));
    /* The slow client's presence channel: user_joined(reader), user_joined(flooder). */
    const long pres_sent = 2;

    const long total = 6000;
    /* 6000 x 2 KB = 12 MB: more than the document ring (1024) plus the socket buffers on both
     * sides (loopback send buffers autotune to several MB). */
    char payload[2001];
    memset(payload, 'p', 2000);
    payload[2000] = 0;
    tally rdoc = {0}, rpres = {0};
    long acked = 0;
    int64_t deadline = clock_mono_ms() + 30000;
    /* Batches of 200, each acknowledged before the next, while the reader keeps reading. */
    for (long sent = 0; sent < total;) {
        for (int i = 0; i < 200 && sent < total; i++, sent++) {
            char msg[2200];
            int len =
                snprintf(msg, sizeof(msg),
                         "{\"type\":\"operation\",\"ref\":%ld,\"payload\":\"%s\"}", sent, payload);
            ck_assert_int_eq(wsc_sync_queue(a, WSC_TEXT, msg, (size_t)len), 0);
        }
        while (acked < sent) {
            ck_assert_msg(clock_mono_ms() < deadline, "flood stalled at %ld acks", acked);
            wsc_msg m;
            wsc_sync_status st = wsc_sync_recv(a, 1, &m);
            if (st == WSC_SYNC_OK) {
                ck_assert_msg(m.json && strcmp(h_str(m.json, "type"), "ack") == 0, "%s",
                              h_dump(m.json));
                ck_assert_int_eq(h_int(m.json, "ref"), acked);
                ck_assert_int_eq(h_int(m.json, "seq"), acked + 1);
                acked++;
                wsc_msg_clear(&m);
            } else {
                ck_assert_int_eq(st, WSC_SYNC_TIMEOUT);
            }
            pump_reader(reader, &rdoc, &rpres);
        }
    }
    while (rdoc.received + rdoc.missed < total && clock_mono_ms() < deadline) {
        wsc_sync_pump(reader, 5);
        pump_reader(reader, &rdoc, &rpres);
    }
    ck_assert_int_eq(rdoc.received + rdoc.missed, total);
    if (rdoc.missed)
        fprintf(stderr, "note: the reading client lagged too (missed %ld)\n", rdoc.missed);

    tally sdoc = {0}, spres = {0};
    drain_slow(slow, &sdoc, &spres, total, pres_sent);
    ck_assert_msg(sdoc.missed > 0, "the slow client never lagged (%ld received)", sdoc.received);
    ck_assert_int_ge(sdoc.lagged, 1);
    ck_assert_int_ge(stat_lag_drops(n), sdoc.missed);

    /* The sender never got its own operations. */
    h_expect_quiet(a, 100);
    h_raw_close(slow);
    wsc_sync_destroy(reader);
    wsc_sync_destroy(a);
    h_node_finish(n);
}
END_TEST

START_TEST(slow_reader_lags_on_presence_channel_with_exact_accounting)
{
    h_node *n = h_node_start("--rate-limit", "1000000", "--rate-burst", "1000000", NULL);
    h_raw *slow = slow_session(n);
    wsc_sync *a = h_joined(n, "doc1", "mover");
    long pres_sent = 1; /* user_joined(mover) */
    const long cursors = 3000;
    for (long i = 0; i < cursors; i++) {
        /* 3000 x 3 KB = 9 MB, far more than the presence ring (256) and the socket buffers. */
        char msg[3200];
        int len =
            snprintf(msg, sizeof(msg),
                     "{\"type\":\"cursor\",\"cursor\":{\"i\":%ld,\"pad\":\"%03000d\"}}", i, 0);
        ck_assert_int_eq(wsc_sync_queue(a, WSC_TEXT, msg, (size_t)len), 0);
        if (i % 200 == 199)
            h_roundtrip(a);
    }
    h_roundtrip(a);
    pres_sent += cursors;
    tally sdoc = {0}, spres = {0};
    drain_slow(slow, &sdoc, &spres, 0, pres_sent);
    ck_assert_msg(spres.missed > 0, "the slow client never lagged (%ld received)", spres.received);
    h_raw_close(slow);
    wsc_sync_destroy(a);
    h_node_finish(n);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("08_lag");
    TCase *tc = tcase_create("lag");
    tcase_set_timeout(tc, H_TCASE_TIMEOUT);
    tcase_add_test(tc, slow_reader_lags_on_document_channel_with_exact_accounting);
    tcase_add_test(tc, slow_reader_lags_on_presence_channel_with_exact_accounting);
    suite_add_tcase(s, tc);
    return h_run_suite(s);
}
