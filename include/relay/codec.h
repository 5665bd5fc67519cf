/**
 * @file codec.h
 * Wire protocol v1 (docs/PROTOCOL.md): decoding client requests and encoding server messages.
 *
 * The codec does no I/O and holds no state; every limit comes from the caller, so Check tests it
 * without sockets. Client requests arrive as a JSON object (Text frame) or as a msgpack map with
 * the same keys (Binary frame). Values the relay passes through unchanged (operation payloads,
 * cursors, refs) are carried as msgpack-encoded "blobs" whatever the input encoding, so both
 * encodings mean the same thing. Direct replies are encoded as JSON text, broadcasts as msgpack
 * maps, each into a fresh msgbuf the caller owns (one reference).
 *
 * Thread-safety: every function may be called from any thread.
 */
#ifndef RELAY_CODEC_H
#define RELAY_CODEC_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "relay/msgbuf.h"

/* A msgpack-encoded value. len == 0 means absent; an explicit null is the one byte 0xc0. */
typedef struct codec_blob {
    const uint8_t *data;
    size_t len;
} codec_blob;

typedef enum {
    CODEC_AUTHENTICATE = 0,
    CODEC_JOIN_DOCUMENT,
    CODEC_LEAVE_DOCUMENT,
    CODEC_OPERATION,
    CODEC_CURSOR,
    CODEC_SYNC_REQUEST,
    CODEC_PING,
    CODEC_TYPE_UNKNOWN
} codec_type;

typedef enum {
    CODEC_OK = 0,
    CODEC_MALFORMED,    /* not a JSON object / msgpack map, bad syntax, duplicate key, too deep,
                           type missing or not a string                         -> bad_request */
    CODEC_UNKNOWN_TYPE, /* well formed, but type names no request we know     -> unknown_type */
    CODEC_BAD_FIELD,    /* known type, a field missing or of the wrong type    -> bad_request */
    CODEC_TOO_LARGE     /* known type, a field over its own limit              -> too_large */
} codec_status;

typedef struct codec_limits {
    size_t max_depth;  /* nesting of arrays/maps anywhere in the message (top level = 1) */
    size_t max_cursor; /* encoded bytes of cursor */
    size_t max_ref;    /* encoded bytes of ref */
    size_t max_token;  /* bytes of token, session_id and resume_token strings */
} codec_limits;

/* Defaults from docs/PROTOCOL.md: depth 32, cursor 4096, ref 256, token 8192. */
extern const codec_limits codec_default_limits;

/* A decoded request. Blobs and strings stay valid until codec_request_free(); they may point into
 * the input buffer, so the input must also stay unchanged until then. */
typedef struct codec_request {
    codec_type type;
    codec_blob ref;           /* any value, optional; set even when status is an error */
    const char *token;        /* authenticate: NUL-terminated, NULL if absent */
    const char *session_id;   /* authenticate (resume) */
    const char *resume_token; /* authenticate (resume) */
    codec_blob payload;       /* operation: required, may be null */
    codec_blob cursor;        /* cursor: required, may be null */
    uint64_t since;           /* sync_request: required non-negative integer */
    uint32_t limit;           /* sync_request: optional positive integer, 0 if absent */
    void *owned;              /* storage owned by the request; freed by codec_request_free() */
} codec_request;

/* Decodes one client request. On any status, out->type and out->ref are filled as far as they
 * could be read (type is CODEC_TYPE_UNKNOWN when it could not be), err gets a short human
 * message for error replies, and codec_request_free() must be called. Never allocates more than
 * a small multiple of len: declared msgpack sizes are checked against the bytes present before
 * anything is reserved. Payload/cursor/ref values that JSON cannot represent are refused with
 * CODEC_BAD_FIELD (msgpack ext types, map keys that are not strings); msgpack bin is accepted. */
codec_status codec_decode_text(const char *text, size_t len, const codec_limits *lim,
                               codec_request *out, char *err, size_t errlen);
codec_status codec_decode_binary(const uint8_t *data, size_t len, const codec_limits *lim,
                                 codec_request *out, char *err, size_t errlen);
void codec_request_free(codec_request *req);

/* Protocol names of request types ("authenticate", ...); "unknown" for CODEC_TYPE_UNKNOWN. */
const char *codec_type_name(codec_type type);

/* True if s (len bytes, not necessarily NUL-terminated) is a valid document id: 1-128 bytes of
 * [A-Za-z0-9._:-]. */
bool codec_document_id_valid(const char *s, size_t len);

/* Converts a msgpack value to JSON: bin becomes {"$base64": "..."}; ext and non-string map keys
 * fail. Returns a new reference, or NULL with a message in err. */
json_t *codec_msgpack_to_json(const uint8_t *data, size_t len, char *err, size_t errlen);

/* Appends the msgpack encoding of a JSON value to *out (growing it). Returns 0 or -1 (OOM). */
int codec_json_to_msgpack(const json_t *value, msgbuf **out);

/* ---- Server messages ---------------------------------------------------------------------- */

typedef struct codec_user {
    const char *session_id;
    const char *user_id;
    const char *user_name;
    const char *color;
    codec_blob cursor; /* absent -> null */
} codec_user;

typedef struct codec_op {
    uint64_t seq;
    const char *user_id;
    const char *session_id;
    codec_blob payload;
} codec_op;

/* Direct replies: JSON text in a MSGBUF_TEXT buffer. A blob ref that is absent is written as
 * null in ack and omitted elsewhere. Each returns NULL only when out of memory. */
msgbuf *codec_encode_auth_ok(const codec_user *user, const char *resume_token);
msgbuf *codec_encode_auth_fail(const char *error);
msgbuf *codec_encode_joined(const char *document_id, const char *epoch, uint64_t seq,
                            const codec_user *users, size_t n_users);
msgbuf *codec_encode_left(const char *document_id);
msgbuf *codec_encode_ack(codec_blob ref, uint64_t seq);
msgbuf *codec_encode_error(const char *code, const char *message, codec_blob ref);
msgbuf *codec_encode_pong(codec_blob ref);
msgbuf *codec_encode_sync_response(const char *document_id, const char *epoch, uint64_t since,
                                   uint64_t seq, const codec_op *ops, size_t n_ops, bool complete,
                                   bool has_more, codec_blob ref);
msgbuf *codec_encode_lagged(const char *channel, uint64_t missed);
msgbuf *codec_encode_reset(const char *document_id, const char *epoch, uint64_t seq);

/* Broadcasts: msgpack maps in a MSGBUF_BINARY buffer, each with a "type" key. */
msgbuf *codec_encode_bc_operation(const char *document_id, const codec_op *op);
msgbuf *codec_encode_bc_cursor(const char *document_id, const char *session_id, const char *user_id,
                               codec_blob cursor);
/* type is "user_joined" or "user_left"; the map carries document_id, session_id, user_id,
 * user_name and color. */
msgbuf *codec_encode_bc_user(const char *type, const char *document_id, const codec_user *user);

#endif
