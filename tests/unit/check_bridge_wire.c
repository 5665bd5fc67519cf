/*
 * check_bridge_wire.c: the messages relay nodes exchange through Redis. What one node writes
 * another must read back exactly, including the part the op script builds in Lua (seq and
 * epoch spliced between prefix and suffix with cmsgpack), and what is not ours is refused.
 */
#include <check.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "bridge_wire.h"

/* Appends what cmsgpack.pack(seq) .. cmsgpack.pack(epoch) produces between prefix and suffix. */
static void splice_seq_epoch(wire_buf *out, uint64_t seq, const char *epoch)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_uint64(&pk, seq);
    msgpack_pack_str(&pk, strlen(epoch));
    msgpack_pack_str_body(&pk, epoch, strlen(epoch));
    out->data = realloc(out->data, out->len + sb.size);
    ck_assert_ptr_nonnull(out->data);
    memcpy(out->data + out->len, sb.data, sb.size);
    out->len += sb.size;
    msgpack_sbuffer_destroy(&sb);
}

static void append(wire_buf *out, const wire_buf *more)
{
    out->data = realloc(out->data, out->len + more->len);
    ck_assert_ptr_nonnull(out->data);
    memcpy(out->data + out->len, more->data, more->len);
    out->len += more->len;
}

START_TEST(operation_round_trip)
{
    static const uint64_t seqs[] = {1, 127, 128, 65535, 65536, 4294967296ULL};
    const uint8_t payload[] = {0x82, 0xa1, 'x', 0x01, 0xa1, 'y', 0xc4, 0x02, 0xff, 0x00};
    for (size_t i = 0; i < sizeof seqs / sizeof seqs[0]; i++) {
        wire_buf msg = {0}, prefix = {0}, suffix = {0};
        ck_assert_int_eq(wire_op_prefix(&prefix, "node-a", 42), 0);
        ck_assert_int_eq(
            wire_op_suffix(&suffix, "alice", "s1", (codec_blob){payload, sizeof payload}), 0);
        append(&msg, &prefix);
        splice_seq_epoch(&msg, seqs[i], "0123456789abcdef");
        append(&msg, &suffix);
        wire_msg w;
        ck_assert_int_eq(wire_parse(msg.data, msg.len, &w), 0);
        ck_assert_int_eq(w.kind, 'o');
        ck_assert_uint_eq(w.seq, seqs[i]);
        ck_assert_uint_eq(w.conn_id, 42);
        ck_assert_uint_eq(w.node_len, 6);
        ck_assert(memcmp(w.node_id, "node-a", 6) == 0);
        ck_assert_uint_eq(w.epoch_len, 16);
        ck_assert(memcmp(w.user_id, "alice", w.user_len) == 0 && w.user_len == 5);
        ck_assert(memcmp(w.session_id, "s1", w.session_len) == 0 && w.session_len == 2);
        ck_assert_uint_eq(w.rest_len, sizeof payload);
        ck_assert(memcmp(w.rest, payload, sizeof payload) == 0);
        wire_buf_free(&msg);
        wire_buf_free(&prefix);
        wire_buf_free(&suffix);
    }
}
END_TEST

START_TEST(presence_round_trip)
{
    const uint8_t body[] = {0x81, 0xa4, 't', 'y', 'p', 'e', 0xa6, 'c', 'u', 'r', 's', 'o', 'r'};
    msgbuf *m = msgbuf_from(MSGBUF_BINARY, body, sizeof body);
    ck_assert_ptr_nonnull(m);
    m->coalesce = 0x123456789ULL;
    wire_buf out = {0};
    ck_assert_int_eq(wire_presence(&out, "n2", 7, m), 0);
    wire_msg w;
    ck_assert_int_eq(wire_parse(out.data, out.len, &w), 0);
    ck_assert_int_eq(w.kind, 'p');
    ck_assert_uint_eq(w.conn_id, 7);
    ck_assert_uint_eq(w.coalesce, 0x123456789ULL);
    ck_assert_uint_eq(w.rest_len, sizeof body);
    ck_assert(memcmp(w.rest, body, sizeof body) == 0);
    wire_buf_free(&out);
    msgbuf_unref(m);
}
END_TEST

START_TEST(truncated_and_foreign_messages_are_refused)
{
    wire_buf msg = {0}, prefix = {0}, suffix = {0};
    const uint8_t payload[] = {0xc0};
    ck_assert_int_eq(wire_op_prefix(&prefix, "n", 1), 0);
    ck_assert_int_eq(wire_op_suffix(&suffix, "u", "s", (codec_blob){payload, 1}), 0);
    append(&msg, &prefix);
    splice_seq_epoch(&msg, 9, "e");
    append(&msg, &suffix);
    wire_msg w;
    for (size_t cut = 0; cut < msg.len; cut++)
        ck_assert_int_eq(wire_parse(msg.data, cut, &w), -1);
    const uint8_t foreign[] = {0x93, 0xa1, 'x', 0xa1, 'n', 0x01};
    ck_assert_int_eq(wire_parse(foreign, sizeof foreign, &w), -1);
    const uint8_t text[] = "canary";
    ck_assert_int_eq(wire_parse(text, sizeof text - 1, &w), -1);
    wire_buf_free(&msg);
    wire_buf_free(&prefix);
    wire_buf_free(&suffix);
}
END_TEST

START_TEST(member_round_trip)
{
    wire_buf v = {0};
    ck_assert_int_eq(wire_member(&v, "u1", "User One", "#e6194b"), 0);
    char buf[64];
    const char *uid, *name, *color;
    ck_assert_int_eq(wire_parse_member(v.data, v.len, buf, sizeof buf, &uid, &name, &color), 0);
    ck_assert_str_eq(uid, "u1");
    ck_assert_str_eq(name, "User One");
    ck_assert_str_eq(color, "#e6194b");
    ck_assert_int_eq(wire_parse_member(v.data, v.len, buf, 8, &uid, &name, &color), -1);
    ck_assert_int_eq(wire_parse_member(v.data, v.len - 1, buf, sizeof buf, &uid, &name, &color),
                     -1);
    wire_buf_free(&v);
}
END_TEST

START_TEST(document_keys_and_channels)
{
    char key[300], doc[129];
    const char *suffix;
    ck_assert_int_eq(wire_doc_key(key, sizeof key, "relay:", "doc-1.a:b", "ops"), 21);
    ck_assert_str_eq(key, "relay:{doc-1.a:b}:ops");
    ck_assert_int_eq(wire_parse_doc_channel(key, strlen(key), "relay:", doc, sizeof doc, &suffix),
                     0);
    ck_assert_str_eq(doc, "doc-1.a:b");
    ck_assert_str_eq(suffix, "ops");
    ck_assert_int_eq(wire_doc_key(key, 8, "relay:", "doc", "ops"), -1);
    static const char *const bad[] = {"relay:node:a:ctl", "other:{d}:ops", "relay:{}:ops",
                                      "relay:{a b}:ops",  "relay:{d}ops",  "relay:{d"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_int_eq(
            wire_parse_doc_channel(bad[i], strlen(bad[i]), "relay:", doc, sizeof doc, &suffix), -1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("bridge_wire");
    TCase *tc = tcase_create("wire");
    tcase_add_test(tc, operation_round_trip);
    tcase_add_test(tc, presence_round_trip);
    tcase_add_test(tc, truncated_and_foreign_messages_are_refused);
    tcase_add_test(tc, member_round_trip);
    tcase_add_test(tc, document_keys_and_channels);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
