/*
 * token.c: JWT verification and minting on libjwt 1.10.
 *
 * libjwt 1.10's jwt_decode() verifies the signature with whatever algorithm the token's header
 * names and checks no claim at all. So this module reads the header itself first (strict
 * base64url, JSON without duplicate members), picks the key by "kid", refuses any algorithm but
 * the one pinned to that key (and "none" always), and only then lets libjwt check the signature
 * with that key. The claims are read from the same strictly decoded payload and checked here.
 */
#include "relay/token.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "token_internal.h"

/* A token is a header line in a WebSocket message; 64 KiB leaves room for a long docs list while
 * bounding the work an unauthenticated peer can ask for. */
#define TOKEN_MAX_LEN    (64 * 1024)
#define TOKEN_MAX_LEEWAY 86400

struct token_verifier {
    token_keyset ks;
    char *audience; /* NULL: not checked */
    char *issuer;   /* NULL: not checked */
    int64_t leeway_s;
};

/* Parses one base64url segment of a token into a JSON object. Duplicate members are refused so
 * that no other JWT library can read a different value for a claim than this one does. */
static json_t *token_segment_json(const char *seg, size_t n)
{
    size_t len;
    unsigned char *raw = token_b64_decode(seg, n, true, &len);
    json_t *js;

    if (!raw)
        return NULL;
    js = json_loadb((const char *)raw, len, JSON_REJECT_DUPLICATES, NULL);
    free(raw);
    if (js && !json_is_object(js)) {
        json_decref(js);
        return NULL;
    }
    return js;
}

static int token_copy_opt(char **dst, const char *src, const char *what, char *err, size_t errlen)
{
    if (!src || !src[0])
        return 0;
    *dst = strdup(src);
    return *dst ? 0 : token_fail(err, errlen, "out of memory copying %s", what);
}

token_verifier *token_verifier_create(const token_config *cfg, char *err, size_t errlen)
{
    token_verifier *v;

    if (!cfg) {
        token_fail(err, errlen, "no JWT key configured (set a secret or a key file)");
        return NULL;
    }
    if (cfg->leeway_s < 0 || cfg->leeway_s > TOKEN_MAX_LEEWAY) {
        token_fail(err, errlen, "JWT leeway %d s is outside 0..%d", cfg->leeway_s,
                   TOKEN_MAX_LEEWAY);
        return NULL;
    }
    v = calloc(1, sizeof(*v));
    if (!v) {
        token_fail(err, errlen, "out of memory");
        return NULL;
    }
    v->leeway_s = cfg->leeway_s;
    if (token_keyset_load(&v->ks, cfg->hs256_secret, cfg->keys_file, err, errlen) < 0 ||
        token_copy_opt(&v->audience, cfg->audience, "audience", err, errlen) < 0 ||
        token_copy_opt(&v->issuer, cfg->issuer, "issuer", err, errlen) < 0) {
        token_verifier_destroy(v);
        return NULL;
    }
    return v;
}

void token_verifier_destroy(token_verifier *v)
{
    if (!v)
        return;
    token_keyset_free(&v->ks);
    free(v->audience);
    free(v->issuer);
    free(v);
}

/* ---- verification --------------------------------------------------------------------------- */

/* Picks the key for a token: by kid when the token names one, else the kid-less key, else the
 * only key. Returns NULL with the reason. */
static const token_key *token_select_key(const token_verifier *v, const char *kid, char *err,
                                         size_t errlen)
{
    if (kid) {
        for (size_t i = 0; i < v->ks.n_keys; i++)
            if (v->ks.keys[i].kid && strcmp(v->ks.keys[i].kid, kid) == 0)
                return &v->ks.keys[i];
        token_fail(err, errlen, "unknown kid");
        return NULL;
    }
    for (size_t i = 0; i < v->ks.n_keys; i++)
        if (!v->ks.keys[i].kid)
            return &v->ks.keys[i];
    if (v->ks.n_keys == 1)
        return &v->ks.keys[0];
    token_fail(err, errlen, "token has no kid and several keys are configured");
    return NULL;
}

/* Reads the header, selects the key and pins the algorithm. Returns the key or NULL. */
static const token_key *token_check_header(const token_verifier *v, json_t *header, char *err,
                                           size_t errlen)
{
    json_t *kid_js = json_object_get(header, "kid");
    const char *alg = token_json_cstr(json_object_get(header, "alg"));
    const char *typ = token_json_cstr(json_object_get(header, "typ"));
    const char *kid = NULL;
    const token_key *key;

    if (!alg) {
        token_fail(err, errlen, "token header has no alg");
        return NULL;
    }
    if (strcasecmp(alg, "none") == 0) {
        token_fail(err, errlen, "alg none is not accepted");
        return NULL;
    }
    /* RFC 7515 4.1.11: a recipient must refuse "crit" extensions it does not understand, and this
     * one understands none. */
    if (json_object_get(header, "crit")) {
        token_fail(err, errlen, "token header has unsupported crit parameters");
        return NULL;
    }
    if (json_object_get(header, "typ") && (!typ || strcasecmp(typ, "JWT") != 0)) {
        token_fail(err, errlen, "token typ is not JWT");
        return NULL;
    }
    if (kid_js && !(kid = token_json_cstr(kid_js))) {
        token_fail(err, errlen, "token kid is not a string");
        return NULL;
    }
    key = token_select_key(v, kid, err, errlen);
    if (!key)
        return NULL;
    if (strcmp(alg, key->alg->name) != 0) {
        token_fail(err, errlen, "wrong algorithm: %.16s token for a %s key", alg, key->alg->name);
        return NULL;
    }
    return key;
}

/* Checks the signature with libjwt, now that the key and its algorithm are fixed. */
static int token_check_signature(const token_key *key, const char *jwt, char *err, size_t errlen)
{
    jwt_t *j = NULL;
    int rc = jwt_decode(&j, jwt, key->material, (int)key->len);

    if (rc != 0 || !j) {
        jwt_free(j);
        return token_fail(err, errlen, "invalid signature");
    }
    /* Belt and braces: libjwt parsed the header on its own; it must agree on the algorithm. */
    rc = jwt_get_alg(j) == key->alg->alg ? 0 : -1;
    jwt_free(j);
    return rc == 0 ? 0 : token_fail(err, errlen, "wrong algorithm");
}

/* Reads an optional NumericDate claim. Returns 1 when present (value in out), 0 when absent or
 * null, -1 when it is not an integer. */
static int token_claim_time(json_t *payload, const char *name, int64_t *out)
{
    json_t *js = json_object_get(payload, name);

    if (!js || json_is_null(js))
        return 0;
    if (!json_is_integer(js))
        return -1;
    *out = (int64_t)json_integer_value(js);
    return 1;
}

static int token_check_times(const token_verifier *v, json_t *payload, int64_t now_s, int64_t *exp,
                             char *err, size_t errlen)
{
    int64_t nbf = 0;
    int rc = token_claim_time(payload, "exp", exp);

    if (rc == 0)
        return token_fail(err, errlen, "token has no exp");
    if (rc < 0)
        return token_fail(err, errlen, "exp is not an integer");
    /* Leeway is applied to now_s (ours, small), never to exp or nbf (the token's, anything). */
    if (now_s - v->leeway_s >= *exp)
        return token_fail(err, errlen, "token expired");
    rc = token_claim_time(payload, "nbf", &nbf);
    if (rc < 0)
        return token_fail(err, errlen, "nbf is not an integer");
    if (rc > 0 && nbf > now_s + v->leeway_s)
        return token_fail(err, errlen, "token not yet valid");
    return 0;
}

static bool token_aud_matches(json_t *aud, const char *want)
{
    const char *s = token_json_cstr(aud);
    size_t i;
    json_t *item;

    if (s)
        return strcmp(s, want) == 0;
    json_array_foreach(aud, i, item)
    {
        s = token_json_cstr(item);
        if (s && strcmp(s, want) == 0)
            return true;
    }
    return false;
}

static int token_check_aud_iss(const token_verifier *v, json_t *payload, char *err, size_t errlen)
{
    const char *iss;

    if (v->audience && !token_aud_matches(json_object_get(payload, "aud"), v->audience))
        return token_fail(err, errlen, "token audience does not match");
    if (v->issuer) {
        iss = token_json_cstr(json_object_get(payload, "iss"));
        if (!iss || strcmp(iss, v->issuer) != 0)
            return token_fail(err, errlen, "token issuer does not match");
    }
    return 0;
}

/* Copies sub, name and docs into out. Returns 0 or -1 with the reason (out left for the caller
 * to free). */
static int token_read_identity(json_t *payload, token_claims *out, char *err, size_t errlen)
{
    json_t *name_js = json_object_get(payload, "name");
    json_t *docs = json_object_get(payload, "docs");
    const char *sub = token_json_cstr(json_object_get(payload, "sub"));
    const char *name = sub;
    json_t *item;
    size_t i;

    if (!sub || !sub[0])
        return token_fail(err, errlen, "token has no sub");
    if (name_js && !json_is_null(name_js)) {
        name = token_json_cstr(name_js);
        if (!name)
            return token_fail(err, errlen, "name is not a string");
        if (!name[0])
            name = sub;
    }
    out->user_id = strdup(sub);
    out->user_name = strdup(name);
    if (!out->user_id || !out->user_name)
        return token_fail(err, errlen, "out of memory");
    if (!docs)
        return 0;
    /* A docs claim that is present but malformed must not fall back to "everything allowed". */
    if (!json_is_array(docs))
        return token_fail(err, errlen, "docs is not an array of strings");
    out->has_docs = true;
    out->docs = calloc(json_array_size(docs) + 1, sizeof(char *));
    if (!out->docs)
        return token_fail(err, errlen, "out of memory");
    json_array_foreach(docs, i, item)
    {
        const char *s = token_json_cstr(item);

        if (!s)
            return token_fail(err, errlen, "docs is not an array of strings");
        out->docs[i] = strdup(s);
        if (!out->docs[i])
            return token_fail(err, errlen, "out of memory");
        out->n_docs = i + 1;
    }
    return 0;
}

/* Splits a compact JWS into its three segments. Header and payload may not be empty; an empty
 * signature is left for the header check to refuse (it is what an alg "none" token carries). */
static int token_split(const char *jwt, size_t len, const char *seg[3], size_t seg_len[3])
{
    const char *p = jwt;

    for (int i = 0; i < 3; i++) {
        const char *dot = memchr(p, '.', len - (size_t)(p - jwt));

        if ((i < 2) != (dot != NULL))
            return -1;
        seg[i] = p;
        seg_len[i] = dot ? (size_t)(dot - p) : len - (size_t)(p - jwt);
        if (i < 2 && seg_len[i] == 0)
            return -1;
        p = dot ? dot + 1 : p;
    }
    return 0;
}

int token_verify(const token_verifier *v, const char *jwt, int64_t now_s, token_claims *out,
                 char *err, size_t errlen)
{
    const char *seg[3];
    size_t seg_len[3], len;
    json_t *header = NULL, *payload = NULL;
    const token_key *key;
    int rc = -1;

    if (out)
        memset(out, 0, sizeof(*out));
    if (!v || !jwt || !out)
        return token_fail(err, errlen, "invalid argument");
    len = strnlen(jwt, TOKEN_MAX_LEN + 1);
    if (len > TOKEN_MAX_LEN)
        return token_fail(err, errlen, "token too long");
    if (token_split(jwt, len, seg, seg_len) < 0)
        return token_fail(err, errlen, "malformed token");
    header = token_segment_json(seg[0], seg_len[0]);
    payload = token_segment_json(seg[1], seg_len[1]);
    if (!header || !payload) {
        token_fail(err, errlen, "malformed token");
        goto out;
    }
    key = token_check_header(v, header, err, errlen);
    if (!key || token_check_signature(key, jwt, err, errlen) < 0 ||
        token_check_times(v, payload, now_s, &out->exp, err, errlen) < 0 ||
        token_check_aud_iss(v, payload, err, errlen) < 0 ||
        token_read_identity(payload, out, err, errlen) < 0)
        goto out;
    rc = 0;
out:
    if (rc < 0)
        token_claims_free(out);
    json_decref(header);
    json_decref(payload);
    return rc;
}

/* ---- claims --------------------------------------------------------------------------------- */

void token_claims_free(token_claims *c)
{
    if (!c)
        return;
    free(c->user_id);
    free(c->user_name);
    for (size_t i = 0; i < c->n_docs; i++)
        free(c->docs[i]);
    free(c->docs);
    memset(c, 0, sizeof(*c));
}

int token_claims_copy(token_claims *dst, const token_claims *src)
{
    memset(dst, 0, sizeof(*dst));
    dst->exp = src->exp;
    dst->has_docs = src->has_docs;
    if (src->user_id && !(dst->user_id = strdup(src->user_id)))
        goto fail;
    if (src->user_name && !(dst->user_name = strdup(src->user_name)))
        goto fail;
    if (src->has_docs) {
        dst->docs = calloc(src->n_docs + 1, sizeof(char *));
        if (!dst->docs)
            goto fail;
        for (size_t i = 0; i < src->n_docs; i++) {
            dst->docs[i] = strdup(src->docs[i]);
            if (!dst->docs[i])
                goto fail;
            dst->n_docs = i + 1;
        }
    }
    return 0;
fail:
    token_claims_free(dst);
    return -1;
}

bool token_claims_allow(const token_claims *c, const char *document_id)
{
    if (!c || !document_id)
        return false;
    if (!c->has_docs)
        return true;
    for (size_t i = 0; i < c->n_docs; i++) {
        const char *d = c->docs[i];
        size_t n = strlen(d);

        if (strcmp(d, document_id) == 0)
            return true;
        if (n > 0 && d[n - 1] == '*' && strncmp(d, document_id, n - 1) == 0)
            return true;
    }
    return false;
}

/* ---- minting -------------------------------------------------------------------------------- */

/* Adds {"docs":[...]} to j through jansson, so ids are escaped correctly. Returns 0 or -1. */
static int token_mint_docs(jwt_t *j, const char *const *docs, size_t n_docs)
{
    json_t *obj = json_object(), *arr = json_array();
    char *text = NULL;
    int rc = -1;

    if (!obj || !arr)
        goto out;
    for (size_t i = 0; i < n_docs; i++)
        if (!docs[i] || json_array_append_new(arr, json_string(docs[i])) < 0)
            goto out;
    if (json_object_set(obj, "docs", arr) < 0)
        goto out;
    text = json_dumps(obj, JSON_COMPACT);
    if (text && jwt_add_grants_json(j, text) == 0)
        rc = 0;
out:
    free(text);
    json_decref(arr);
    json_decref(obj);
    return rc;
}

char *token_mint_hs256(const char *secret, const char *kid, const char *sub, const char *name,
                       int64_t exp, int64_t nbf, const char *const *docs, size_t n_docs)
{
    jwt_t *j = NULL;
    char *out = NULL;

    if (!secret || !secret[0] || !sub || jwt_new(&j) != 0)
        return NULL;
    if ((kid && jwt_add_header(j, "kid", kid) != 0) || jwt_add_grant(j, "sub", sub) != 0 ||
        (name && jwt_add_grant(j, "name", name) != 0) ||
        jwt_add_grant_int(j, "exp", (long)exp) != 0 ||
        (nbf != 0 && jwt_add_grant_int(j, "nbf", (long)nbf) != 0) ||
        (docs && token_mint_docs(j, docs, n_docs) != 0) ||
        jwt_set_alg(j, JWT_ALG_HS256, (const unsigned char *)secret, (int)strlen(secret)) != 0)
        goto out;
    out = jwt_encode_str(j);
out:
    jwt_free(j);
    return out;
}
