/**
 * @file wsframe.h
 * RFC 6455 framing and the client's opening handshake, for the client library's own
 * transport (clients/wsconn.c). libwebsockets 4.1's client role parses every received byte
 * through a per-byte state machine, which made it most of relay-bench's CPU; the client
 * therefore opens a RAW libwebsockets connection and frames messages itself. Pure functions:
 * no I/O, no allocation, any thread. Private to clients/.
 */
#ifndef RELAY_CLIENTS_WSFRAME_H
#define RELAY_CLIENTS_WSFRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Opcodes (RFC 6455 5.2). */
enum { WSF_CONT = 0, WSF_TEXT = 1, WSF_BINARY = 2, WSF_CLOSE = 8, WSF_PING = 9, WSF_PONG = 10 };

/* Longest frame header: 2 + 8 bytes of length + 4 of mask key. */
#define WSF_MAX_HEADER 14

/* One parsed frame header. */
typedef struct wsf_header {
    bool fin, masked;
    int opcode;
    uint64_t len;   /* payload bytes */
    size_t hdr_len; /* header bytes before the payload */
    uint8_t mask[4];
} wsf_header;

/* Parses the frame header at p[0..n). Returns 1 with *h filled, 0 when more bytes are needed,
 * or -1 for a frame no peer may send: reserved bits set (no extension is ever negotiated),
 * an unknown opcode, a fragmented or over-125-byte control frame, or a length with its top bit
 * set. */
int wsf_parse_header(const uint8_t *p, size_t n, wsf_header *h);

/* Writes the header of a masked frame (client to server) carrying len payload bytes into out
 * (room for WSF_MAX_HEADER). Returns its length. */
size_t wsf_build_header(uint8_t *out, int opcode, bool fin, uint64_t len, const uint8_t mask[4]);

/* XORs p[0..n) with the mask key, starting at key byte 0. */
void wsf_mask(uint8_t *p, size_t n, const uint8_t mask[4]);

/* Writes the value of Sec-WebSocket-Accept for key (24 base64 chars) into out[29]. */
void wsf_accept_value(const char *key, char out[29]);

/* Writes the upgrade request into buf of cap bytes; origin may be NULL. Returns its length, or
 * -1 if it does not fit. */
int wsf_build_request(char *buf, size_t cap, const char *host_hdr, const char *path,
                      const char *origin, const char *key);

/* Reads the server's reply to the upgrade from buf[0..n). Returns the length of the response
 * head once it is complete and a valid 101 for key; 0 when more bytes are needed (the head
 * ends with an empty line); -1 with a reason in err (and the HTTP status in *status, 0 if
 * there was none) when the upgrade was refused or the reply is not a WebSocket upgrade. */
int wsf_parse_response(const char *buf, size_t n, const char *key, unsigned *status, char *err,
                       size_t errlen);

#endif
