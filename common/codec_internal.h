/**
 * @file codec_internal.h
 * Private helpers shared by the codec's source files (codec_mpwalk.c, codec_decode.c,
 * codec_convert.c, codec_encode.c). Not part of the public API.
 *
 * The heart is a bounded msgpack walker: it reads msgpack straight from the caller's bytes, never
 * allocates, and checks every declared size against the bytes actually present before trusting it.
 * msgpack-c's own unpacker reserves memory for a declared array/map/str size before the bytes
 * arrive, so a 5-byte header can make it ask for gigabytes; the walker is what lets the codec
 * promise "never allocates more than a small multiple of len".
 */
#ifndef RELAY_CODEC_INTERNAL_H
#define RELAY_CODEC_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "relay/msgbuf.h"

/* Hard cap on nesting for values whose caller gives no limit (codec_msgpack_to_json) and on any
 * caller-supplied max_depth: it bounds the walker's recursion, and it matches jansson's own
 * parser limit (JSON_PARSER_MAX_DEPTH), so both encodings refuse the same depths. */
#define CODEC_HARD_MAX_DEPTH 2048

typedef enum {
    MPK_NIL = 0,
    MPK_BOOL,
    MPK_UINT, /* non-negative integer of any msgpack width; value in u */
    MPK_INT,  /* negative integer; value in i */
    MPK_FLOAT,
    MPK_STR,
    MPK_BIN,
    MPK_ARRAY,
    MPK_MAP,
    MPK_EXT
} mpw_kind;

typedef enum {
    MPW_OK = 0,
    MPW_TRUNCATED, /* the value, or a size it declares, runs past the end of the bytes */
    MPW_INVALID,   /* the reserved byte 0xc1 */
    MPW_TOO_DEEP,  /* arrays/maps nested deeper than allowed */
    MPW_BAD_UTF8,  /* a str that is not valid UTF-8 */
    MPW_EXT_VALUE, /* strict: an ext value */
    MPW_KEY_TYPE,  /* strict: a map key that is not a str */
    MPW_NONFINITE  /* strict: a NaN or infinite float */
} mpw_status;

/* Strict mode: refuse what JSON cannot represent (ext, non-string keys, NaN/Infinity). */
#define MPW_STRICT 1u

/* One msgpack header. For str/bin/ext, data/len are the body (already checked to fit); for
 * array/map, len is the element/pair count (already checked against the bytes left); hdr is the
 * header's own size. */
typedef struct mpw_head {
    mpw_kind kind;
    size_t hdr;
    size_t len;
    const uint8_t *data;
    uint64_t u;
    int64_t i;
    double f;
    bool b;
    int8_t ext_type;
} mpw_head;

/* Reads the header at p (avail bytes). Checks that a str/bin/ext body fits in avail and that an
 * array of n elements has at least n bytes left (a map of n pairs at least 2n), so no caller ever
 * trusts a count the bytes cannot back. Does not check UTF-8. Never allocates. */
mpw_status mpw_read_head(const uint8_t *p, size_t avail, mpw_head *h);

/* Validates one complete value at p (avail bytes) and stores its encoded size in *used. depth is
 * how many levels of array/map may still be opened (0: containers are refused). Every str is
 * checked for UTF-8; with MPW_STRICT, ext, non-string map keys and non-finite floats are refused.
 * Recursion is bounded by depth, which callers keep <= CODEC_HARD_MAX_DEPTH. Never allocates. */
mpw_status mpw_skip(const uint8_t *p, size_t avail, size_t depth, unsigned flags, size_t *used);

/* Validates that data/len is exactly one strict value (no trailing bytes) nested at most depth
 * levels. Returns MPW_OK or the first problem; trailing bytes count as MPW_TRUNCATED. */
mpw_status mpw_check_value(const uint8_t *data, size_t len, size_t depth, unsigned flags);

/* A short English description of a walker status, for error replies. */
const char *mpw_strerror(mpw_status st);

/* True if s[0..len) is well-formed UTF-8 (no overlong forms, no surrogates, <= U+10FFFF): the
 * same rule jansson applies to JSON text. */
bool codec_utf8_valid(const uint8_t *s, size_t len);

/* A JSON number for v: an integer when jansson's json_int_t holds it, else the nearest real.
 * Returns a new reference, NULL when out of memory. */
json_t *codec_u64_json(uint64_t v);

/* msgpack_packer write callback appending to a msgbuf; data is a msgbuf **. */
int codec_msgbuf_write(void *data, const char *buf, size_t len);

/* Storage behind codec_request.owned: the msgpack encodings of JSON-sourced fields (NULL for
 * binary input, whose blobs point into the input) and NUL-terminated copies of token strings. */
typedef struct codec_owned {
    msgbuf *blobs;
    char strings[];
} codec_owned;

#endif
