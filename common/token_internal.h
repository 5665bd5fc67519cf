/*
 * token_internal.h: what token.c (verification, claims, minting) and token_keys.c (the key set)
 * share. Not a public header: nothing outside common/token*.c includes it.
 */
#ifndef RELAY_TOKEN_INTERNAL_H
#define RELAY_TOKEN_INTERNAL_H

#include <jansson.h>
#include <jwt.h>
#include <stdbool.h>
#include <stddef.h>

typedef enum { FAMILY_HMAC, FAMILY_RSA, FAMILY_EC } token_family;

/* One supported JOSE algorithm. The table lives in token_keys.c; "none" is not in it. */
typedef struct token_alg_info {
    const char *name; /* exact JOSE name, e.g. "RS256" */
    jwt_alg_t alg;
    token_family family;
    const char *curve; /* EC only: the curve RFC 7518 pairs with the algorithm */
} token_alg_info;

/* A verification key, pinned to one algorithm. */
typedef struct token_key {
    char *kid; /* NULL for the hs256_secret key */
    const token_alg_info *alg;
    unsigned char *material; /* HMAC secret or PEM public key, NUL-terminated */
    size_t len;              /* bytes of material without the NUL */
} token_key;

/* The keys of a verifier. Immutable once loaded; owns every key. */
typedef struct token_keyset {
    token_key *keys;
    size_t n_keys;
} token_keyset;

/* Loads the kid-less HS256 secret (when non-empty) and the JSON key set at keys_file (when
 * non-NULL and non-empty) into ks, which must be zeroed. Refuses an empty set, empty keys,
 * unknown algorithms, keys that do not fit their algorithm and duplicate kids. Returns 0, or -1
 * with the reason in err; ks needs token_keyset_free() either way. Setup thread only. */
int token_keyset_load(token_keyset *ks, const char *hs256_secret, const char *keys_file, char *err,
                      size_t errlen);

/* Scrubs and frees every key; ks is left empty. */
void token_keyset_free(token_keyset *ks);

/* Looks an algorithm up by its exact JOSE name. Returns NULL for unknown names and for "none". */
const token_alg_info *token_alg_find(const char *name);

/* Writes a formatted reason into err (when err is non-NULL and errlen > 0) and returns -1. */
int token_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Decodes base64 (url: the unpadded base64url of JWS, strictly; otherwise standard base64 with
 * optional padding and whitespace, as in PEM). Returns a malloc'd NUL-terminated buffer and its
 * length in out_len, or NULL on a character outside the alphabet, a truncated quantum or no
 * memory. Any thread. */
unsigned char *token_b64_decode(const char *src, size_t n, bool url, size_t *out_len);

/* Returns the value of js if it is a JSON string without embedded NULs (which would make the C
 * string say less than the JSON does), else NULL. */
const char *token_json_cstr(const json_t *js);

#endif
