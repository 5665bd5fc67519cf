/**
 * @file bench_msg.h
 * relay-bench's side of wire protocol v1: builds the requests it sends (operations with a
 * timestamped payload, authenticate) and reads what comes back (JSON direct replies, msgpack
 * broadcasts and batches of them). No I/O and no allocation that outlives a call; every
 * function may be called from any thread.
 *
 * An operation payload is a str of B bytes: 16 hex digits of CLOCK_MONOTONIC ns at send, 8 of
 * the global sender id, 8 of the sender's sequence, then 'x' padding.
 */
#ifndef RELAY_BENCH_MSG_H
#define RELAY_BENCH_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Bytes of an operation payload taken by the stamp (timestamp, sender id, sequence). */
#define BENCH_MSG_STAMP_LEN 32

/* Builds one operation request with a payload of `payload` bytes (>= BENCH_MSG_STAMP_LEN) into
 * buf, which must have room for payload + 64 bytes: msgpack when binary, else JSON. Its "ref"
 * is seq. Returns the request's length. */
size_t bench_msg_build_op(char *buf, bool binary, int payload, int64_t ts, uint32_t sender_id,
                          uint32_t seq);

/* Builds the JSON authenticate request carrying token into buf of cap bytes. Returns its
 * length, or -1 if it does not fit. */
int bench_msg_build_auth(char *buf, size_t cap, const char *token);

/* What relay-bench reads from a JSON direct reply. */
typedef enum bench_msg_reply_type {
    BENCH_MSG_REPLY_INVALID = 0, /* not JSON, or no string "type" */
    BENCH_MSG_REPLY_ACK,
    BENCH_MSG_REPLY_AUTH_RESULT,
    BENCH_MSG_REPLY_JOINED, /* joined_document */
    BENCH_MSG_REPLY_LAGGED,
    BENCH_MSG_REPLY_ERROR,
    BENCH_MSG_REPLY_OTHER /* a type relay-bench does not act on */
} bench_msg_reply_type;

typedef struct bench_msg_reply {
    bench_msg_reply_type type;
    int64_t ref;    /* ack: "ref" (0 unless an integer) */
    bool has_ref;   /* error: whether "ref" is an integer */
    bool success;   /* auth_result: "success" is true */
    int64_t missed; /* lagged: "missed" (0 unless an integer) */
    char code[64];  /* error: "code", or "other" when it is not a string */
} bench_msg_reply;

/* Parses the Text message data[0..len) into *out. Never fails: unparseable input gives
 * BENCH_MSG_REPLY_INVALID. */
void bench_msg_parse_reply(const uint8_t *data, size_t len, bench_msg_reply *out);

/* Read position inside one Binary message; the bytes belong to the caller and must outlive it. */
typedef struct bench_msg_reader {
    const uint8_t *p, *end;
} bench_msg_reader;

/* The stamp of one operation broadcast. */
typedef struct bench_msg_op {
    uint64_t ts, sender_id, seq;
} bench_msg_op;

/* Starts reading the Binary message data[0..len): either one broadcast map or (batched
 * broadcast frames) an array of them. Returns how many broadcasts to read with
 * bench_msg_next_broadcast(); *batched tells whether the message was an array. */
uint64_t bench_msg_open(bench_msg_reader *r, const uint8_t *data, size_t len, bool *batched);

/* Reads the next broadcast map. Sets *is_op, and for an operation fills *op from the stamp at
 * the front of its payload. Returns 0, or -1 when the map is malformed or truncated or an
 * operation's payload has no valid stamp (the reader is then unusable). */
int bench_msg_next_broadcast(bench_msg_reader *r, bool *is_op, bench_msg_op *op);

#endif
