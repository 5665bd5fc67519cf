/**
 * @file token.h
 * JWT verification (and minting, for relayctl and the tests) on libjwt 1.10.
 *
 * libjwt verifies only what it is told, so this module pins the algorithm per key (a key never
 * verifies a token of another algorithm, alg "none" never verifies), selects the key by the
 * token's "kid" header when there are several, and checks exp (required), nbf, aud and iss
 * itself with a leeway. A verifier is immutable after creation and may be shared by threads.
 */
#ifndef RELAY_TOKEN_H
#define RELAY_TOKEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct token_verifier token_verifier;

typedef struct token_config {
    const char *hs256_secret; /* key without a kid, alg HS256; NULL or "" for none */
    const char *keys_file;    /* JSON key set (docs/SECURITY.md), NULL for none */
    const char *audience;     /* required "aud" (string or array member), NULL: not checked */
    const char *issuer;       /* required "iss", NULL: not checked */
    int leeway_s;             /* clock leeway for exp and nbf */
} token_config;

/* Builds a verifier. Fails (NULL, reason in err) when no key is configured, a key is empty, a
 * key file cannot be read or parsed, an algorithm is not HS256/HS384/HS512/RS256/RS384/RS512/
 * ES256/ES384/ES512, or two keys share a kid. The caller owns the verifier. */
token_verifier *token_verifier_create(const token_config *cfg, char *err, size_t errlen);
void token_verifier_destroy(token_verifier *v);

/* What a valid token grants. Strings are owned by the claims. */
typedef struct token_claims {
    char *user_id;   /* sub */
    char *user_name; /* name, or sub when absent */
    int64_t exp;     /* seconds since the epoch */
    bool has_docs;   /* false: every document is allowed */
    char **docs;     /* allowed document ids; a trailing '*' matches a prefix */
    size_t n_docs;
} token_claims;

/* Verifies jwt at time now_s (seconds since the epoch). Returns 0 and fills out, or -1 with a
 * reason in err (bad signature, expired, not yet valid, missing sub, docs not an array of
 * strings, unknown kid, wrong algorithm, ...). out needs token_claims_free() only on success. */
int token_verify(const token_verifier *v, const char *jwt, int64_t now_s, token_claims *out,
                 char *err, size_t errlen);
void token_claims_free(token_claims *c);

/* Deep copy; returns 0 or -1 (out of memory, dst left empty). */
int token_claims_copy(token_claims *dst, const token_claims *src);

/* True when the claims allow document_id (no docs claim, an exact entry, or a prefix entry). */
bool token_claims_allow(const token_claims *c, const char *document_id);

/* Mints an HS256 token. kid, name and docs may be NULL; nbf 0 means absent. Returns a malloc'd
 * string or NULL. Used by `relayctl token` and the tests. */
char *token_mint_hs256(const char *secret, const char *kid, const char *sub, const char *name,
                       int64_t exp, int64_t nbf, const char *const *docs, size_t n_docs);

#endif
