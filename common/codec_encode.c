/* Encoding server messages: direct replies as compact JSON (Text frames), broadcasts as msgpack
 * maps (Binary frames).
 *
 * Broadcasts are the hot path (one per operation and cursor move, shared by every subscriber), so
 * they are packed straight into a msgbuf sized up front from the field lengths: one allocation
 * per message, and payload/cursor blobs are copied in as they are, never decoded and re-encoded.
 * Direct replies go through jansson, which also renders blobs (bin as {"$base64": ...}); they are
 * serialised straight into their msgbuf, without an intermediate string. */
#include "codec_internal.h"
#include "relay/codec.h"

#include <msgpack.h>
#include <string.h>

/* ---- Direct replies (JSON) ------------------------------------------------------------------ */

static int reply_write(const char *buf, size_t size, void *data)
{
    return msgbuf_append((msgbuf **)data, buf, size);
}

/* Serialises obj (consumed; NULL means a build step ran out of memory) into a new Text msgbuf
 * with room for estimate bytes. */
static msgbuf *reply_finish(json_t *obj, size_t estimate)
{
    if (!obj)
        return NULL;
    msgbuf *mb = msgbuf_new(MSGBUF_TEXT, estimate);
    if (mb && json_dump_callback(obj, reply_write, &mb, JSON_COMPACT) != 0) {
        msgbuf_unref(mb);
        mb = NULL;
    }
    json_decref(obj);
    return mb;
}

/* A blob as JSON. Absent: NULL (so json_pack's "o*" omits the key) or null when absent_null.
 * A blob that cannot be converted was refused at decode time already; should one arrive anyway
 * (e.g. from another node), it is shown as null rather than failing the whole reply. */
static json_t *blob_json(codec_blob b, bool absent_null)
{
    if (b.len == 0)
        return absent_null ? json_null() : NULL;
    char err[80];
    json_t *v = codec_msgpack_to_json(b.data, b.len, err, sizeof err);
    return v ? v : json_null();
}

static size_t slen(const char *s)
{
    return s ? strlen(s) : 0;
}

/* Upper-bound-ish size of a blob rendered as JSON: base64 and escapes can grow it. */
static size_t blob_estimate(codec_blob b)
{
    return b.len * 2 + 8;
}

msgbuf *codec_encode_auth_ok(const codec_user *user, const char *resume_token)
{
    json_t *o =
        json_pack("{s:s, s:b, s:s?, s:s?, s:s?, s:s?, s:s*}", "type", "auth_result", "success", 1,
                  "user_id", user->user_id, "user_name", user->user_name, "session_id",
                  user->session_id, "color", user->color, "resume_token", resume_token);
    return reply_finish(o, 128 + slen(user->user_id) + slen(user->user_name) +
                               slen(user->session_id) + slen(user->color) + slen(resume_token));
}

msgbuf *codec_encode_auth_fail(const char *error)
{
    json_t *o = json_pack("{s:s, s:b, s:s?}", "type", "auth_result", "success", 0, "error", error);
    return reply_finish(o, 64 + slen(error));
}

/* One entry of joined_document.users. */
static json_t *user_json(const codec_user *u)
{
    return json_pack("{s:s?, s:s?, s:s?, s:s?, s:o}", "session_id", u->session_id, "user_id",
                     u->user_id, "user_name", u->user_name, "color", u->color, "cursor",
                     blob_json(u->cursor, true));
}

msgbuf *codec_encode_joined(const char *document_id, const char *epoch, uint64_t seq,
                            const codec_user *users, size_t n_users)
{
    json_t *arr = json_array();
    size_t estimate = 128 + slen(document_id) + slen(epoch);
    for (size_t k = 0; arr && k < n_users; k++) {
        const codec_user *u = &users[k];
        if (json_array_append_new(arr, user_json(u)) != 0) {
            json_decref(arr);
            arr = NULL;
            break;
        }
        estimate += 80 + slen(u->session_id) + slen(u->user_id) + slen(u->user_name) +
                    slen(u->color) + blob_estimate(u->cursor);
    }
    if (!arr)
        return NULL;
    json_t *o = json_pack("{s:s, s:s?, s:s?, s:o, s:o}", "type", "joined_document", "document_id",
                          document_id, "epoch", epoch, "seq", codec_u64_json(seq), "users", arr);
    return reply_finish(o, estimate);
}

msgbuf *codec_encode_left(const char *document_id)
{
    json_t *o = json_pack("{s:s, s:s?}", "type", "left_document", "document_id", document_id);
    return reply_finish(o, 48 + slen(document_id));
}

msgbuf *codec_encode_ack(codec_blob ref, uint64_t seq)
{
    json_t *o = json_pack("{s:s, s:o, s:o}", "type", "ack", "ref", blob_json(ref, true), "seq",
                          codec_u64_json(seq));
    return reply_finish(o, 64 + blob_estimate(ref));
}

msgbuf *codec_encode_error(const char *code, const char *message, codec_blob ref)
{
    json_t *o = json_pack("{s:s, s:s?, s:s?, s:o*}", "type", "error", "code", code, "message",
                          message, "ref", blob_json(ref, false));
    return reply_finish(o, 64 + slen(code) + slen(message) + blob_estimate(ref));
}

msgbuf *codec_encode_pong(codec_blob ref)
{
    json_t *o = json_pack("{s:s, s:o*}", "type", "pong", "ref", blob_json(ref, false));
    return reply_finish(o, 32 + blob_estimate(ref));
}

/* One entry of sync_response.operations. */
static json_t *op_json(const codec_op *op)
{
    return json_pack("{s:o, s:s?, s:s?, s:o}", "seq", codec_u64_json(op->seq), "user_id",
                     op->user_id, "session_id", op->session_id, "payload",
                     blob_json(op->payload, true));
}

msgbuf *codec_encode_sync_response(const char *document_id, const char *epoch, uint64_t since,
                                   uint64_t seq, const codec_op *ops, size_t n_ops, bool complete,
                                   bool has_more, codec_blob ref)
{
    json_t *arr = json_array();
    size_t estimate = 160 + slen(document_id) + slen(epoch) + blob_estimate(ref);
    for (size_t k = 0; arr && k < n_ops; k++) {
        if (json_array_append_new(arr, op_json(&ops[k])) != 0) {
            json_decref(arr);
            arr = NULL;
            break;
        }
        estimate +=
            64 + slen(ops[k].user_id) + slen(ops[k].session_id) + blob_estimate(ops[k].payload);
    }
    if (!arr)
        return NULL;
    json_t *o =
        json_pack("{s:s, s:s?, s:s?, s:o, s:o, s:o, s:b, s:b, s:o*}", "type", "sync_response",
                  "document_id", document_id, "epoch", epoch, "since", codec_u64_json(since), "seq",
                  codec_u64_json(seq), "operations", arr, "complete", (int)complete, "has_more",
                  (int)has_more, "ref", blob_json(ref, false));
    return reply_finish(o, estimate);
}

msgbuf *codec_encode_lagged(const char *channel, uint64_t missed)
{
    json_t *o = json_pack("{s:s, s:s?, s:o}", "type", "lagged", "channel", channel, "missed",
                          codec_u64_json(missed));
    return reply_finish(o, 64 + slen(channel));
}

msgbuf *codec_encode_reset(const char *document_id, const char *epoch, uint64_t seq)
{
    json_t *o = json_pack("{s:s, s:s?, s:s?, s:o}", "type", "reset", "document_id", document_id,
                          "epoch", epoch, "seq", codec_u64_json(seq));
    return reply_finish(o, 80 + slen(document_id) + slen(epoch));
}

/* ---- Broadcasts (msgpack) ------------------------------------------------------------------- */

/* A broadcast under construction: the packer appends to mb; rc collects every packer result so
 * a failure anywhere is seen once at the end. */
typedef struct bc_writer {
    msgbuf *mb;
    msgpack_packer pk;
    int rc;
} bc_writer;

/* Encoded size bounds for the estimate: a str header is at most 5 bytes, a uint at most 9. */
#define BC_STR_MAX(n) ((n) + 5)
#define BC_UINT_MAX   9

static bool bc_begin(bc_writer *w, size_t n_fields, size_t estimate)
{
    w->mb = msgbuf_new(MSGBUF_BINARY, estimate + 5);
    if (!w->mb)
        return false;
    msgpack_packer_init(&w->pk, &w->mb, codec_msgbuf_write);
    w->rc = msgpack_pack_map(&w->pk, n_fields);
    return true;
}

static void bc_key(bc_writer *w, const char *key)
{
    w->rc |= msgpack_pack_str_with_body(&w->pk, key, strlen(key));
}

/* key: string value, nil when NULL. */
static void bc_str(bc_writer *w, const char *key, const char *value)
{
    bc_key(w, key);
    w->rc |=
        value ? msgpack_pack_str_with_body(&w->pk, value, strlen(value)) : msgpack_pack_nil(&w->pk);
}

static void bc_uint(bc_writer *w, const char *key, uint64_t value)
{
    bc_key(w, key);
    w->rc |= msgpack_pack_uint64(&w->pk, value);
}

/* key: the blob's bytes copied as they are (it is already msgpack); nil when absent. */
static void bc_blob(bc_writer *w, const char *key, codec_blob value)
{
    static const uint8_t nil = 0xc0;
    bc_key(w, key);
    w->rc |=
        value.len ? msgbuf_append(&w->mb, value.data, value.len) : msgbuf_append(&w->mb, &nil, 1);
}

static msgbuf *bc_finish(bc_writer *w)
{
    if (w->rc != 0) {
        msgbuf_unref(w->mb);
        return NULL;
    }
    return w->mb;
}

msgbuf *codec_encode_bc_operation(const char *document_id, const codec_op *op)
{
    bc_writer w;
    size_t estimate = 64 + BC_STR_MAX(slen(document_id)) + BC_UINT_MAX +
                      BC_STR_MAX(slen(op->user_id)) + BC_STR_MAX(slen(op->session_id)) +
                      (op->payload.len ? op->payload.len : 1);
    if (!bc_begin(&w, 6, estimate))
        return NULL;
    bc_str(&w, "type", "operation");
    bc_str(&w, "document_id", document_id);
    bc_uint(&w, "seq", op->seq);
    bc_str(&w, "user_id", op->user_id);
    bc_str(&w, "session_id", op->session_id);
    bc_blob(&w, "payload", op->payload);
    return bc_finish(&w);
}

msgbuf *codec_encode_bc_cursor(const char *document_id, const char *session_id, const char *user_id,
                               codec_blob cursor)
{
    bc_writer w;
    size_t estimate = 56 + BC_STR_MAX(slen(document_id)) + BC_STR_MAX(slen(session_id)) +
                      BC_STR_MAX(slen(user_id)) + (cursor.len ? cursor.len : 1);
    if (!bc_begin(&w, 5, estimate))
        return NULL;
    bc_str(&w, "type", "cursor");
    bc_str(&w, "document_id", document_id);
    bc_str(&w, "session_id", session_id);
    bc_str(&w, "user_id", user_id);
    bc_blob(&w, "cursor", cursor);
    return bc_finish(&w);
}

msgbuf *codec_encode_bc_user(const char *type, const char *document_id, const codec_user *user)
{
    bc_writer w;
    size_t estimate = 64 + BC_STR_MAX(slen(type)) + BC_STR_MAX(slen(document_id)) +
                      BC_STR_MAX(slen(user->session_id)) + BC_STR_MAX(slen(user->user_id)) +
                      BC_STR_MAX(slen(user->user_name)) + BC_STR_MAX(slen(user->color));
    if (!bc_begin(&w, 6, estimate))
        return NULL;
    bc_str(&w, "type", type);
    bc_str(&w, "document_id", document_id);
    bc_str(&w, "session_id", user->session_id);
    bc_str(&w, "user_id", user->user_id);
    bc_str(&w, "user_name", user->user_name);
    bc_str(&w, "color", user->color);
    return bc_finish(&w);
}
