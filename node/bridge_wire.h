/**
 * @file bridge_wire.h
 * What relay nodes say to each other through Redis: the messages published on document and
 * presence channels, the presence entries stored in Redis, and their keys and channel names.
 * Pure functions, no I/O, callable from any thread.
 *
 * Document channel message (also what history stores), built partly by the op script:
 *   msgpack array ["o", node_id, conn_id, seq, epoch, user_id, session_id, payload]
 * Presence channel message: ["p", node_id, conn_id, coalesce_key, <broadcast map, raw>]
 * The variable-length value is always last, so a reader takes "the rest" without parsing it.
 */
#ifndef RELAY_BRIDGE_WIRE_H
#define RELAY_BRIDGE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "relay/codec.h"
#include "relay/msgbuf.h"

typedef struct wire_buf {
    uint8_t *data;
    size_t len, cap;
} wire_buf;

void wire_buf_free(wire_buf *w);

/* The parts of a document message the node sends to the op script, which inserts seq and epoch
 * between them. Returns 0 or -1 (out of memory). */
int wire_op_prefix(wire_buf *out, const char *node_id, uint64_t conn_id);
int wire_op_suffix(wire_buf *out, const char *user_id, const char *session_id, codec_blob payload);

/* A whole presence message around an encoded broadcast body. */
int wire_presence(wire_buf *out, const char *node_id, uint64_t conn_id, const msgbuf *body);

/* A presence entry value: [user_id, user_name, color]. */
int wire_member(wire_buf *out, const char *user_id, const char *user_name, const char *color);

/* A decoded document or presence message; strings point into the input (not NUL-terminated
 * unless noted by their lengths). */
typedef struct wire_msg {
    char kind; /* 'o' or 'p' */
    const char *node_id;
    size_t node_len;
    uint64_t conn_id;
    uint64_t seq;
    uint64_t coalesce; /* 'p' */
    const char *epoch;
    size_t epoch_len;
    const char *user_id, *session_id;
    size_t user_len, session_len;
    const uint8_t *rest; /* payload ('o') or broadcast body ('p') */
    size_t rest_len;
} wire_msg;

/* Parses a channel message. Returns 0, or -1 when it is not one of ours. */
int wire_parse(const uint8_t *data, size_t len, wire_msg *out);

/* Parses a presence entry value into NUL-terminated copies inside out (size >= len + 3).
 * Returns 0 or -1. */
int wire_parse_member(const uint8_t *data, size_t len, char *out, size_t outlen,
                      const char **user_id, const char **user_name, const char **color);

/* "<prefix>{<doc>}:<suffix>" into out; returns the length or -1 when it does not fit. */
int wire_doc_key(char *out, size_t outlen, const char *prefix, const char *doc, const char *suffix);

/* Extracts the document id and suffix from a channel name made by wire_doc_key. Returns 0 or
 * -1. */
int wire_parse_doc_channel(const char *channel, size_t len, const char *prefix, char *doc,
                           size_t doclen, const char **suffix);

#endif
