/*
 * token_keys.c: the key set of a token verifier: the kid-less HS256 secret and the JSON key file,
 * each key pinned to one algorithm and checked at load so that a bad key stops the node at start
 * instead of failing every token later.
 */
#include "token_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay/log.h"

#define TOKEN_MAX_KEY_FILE  (64 * 1024)
#define TOKEN_MIN_HS_SECRET 32

static const token_alg_info token_algs[] = {
    {"HS256", JWT_ALG_HS256, FAMILY_HMAC, NULL},  {"HS384", JWT_ALG_HS384, FAMILY_HMAC, NULL},
    {"HS512", JWT_ALG_HS512, FAMILY_HMAC, NULL},  {"RS256", JWT_ALG_RS256, FAMILY_RSA, NULL},
    {"RS384", JWT_ALG_RS384, FAMILY_RSA, NULL},   {"RS512", JWT_ALG_RS512, FAMILY_RSA, NULL},
    {"ES256", JWT_ALG_ES256, FAMILY_EC, "P-256"}, {"ES384", JWT_ALG_ES384, FAMILY_EC, "P-384"},
    {"ES512", JWT_ALG_ES512, FAMILY_EC, "P-521"},
};

int token_fail(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

const token_alg_info *token_alg_find(const char *name)
{
    for (size_t i = 0; i < sizeof(token_algs) / sizeof(token_algs[0]); i++)
        if (strcmp(token_algs[i].name, name) == 0)
            return &token_algs[i];
    return NULL;
}

static int token_b64_value(unsigned char c, bool url)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == (url ? '-' : '+'))
        return 62;
    if (c == (url ? '_' : '/'))
        return 63;
    return -1;
}

unsigned char *token_b64_decode(const char *src, size_t n, bool url, size_t *out_len)
{
    unsigned char *out = malloc(n / 4 * 3 + 4);
    uint32_t acc = 0;
    size_t bits = 0, len = 0, pad = 0;

    if (!out)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)src[i];
        int v;

        if (!url && (c == ' ' || c == '\t' || c == '\r' || c == '\n'))
            continue;
        if (!url && c == '=') {
            pad++;
            continue;
        }
        v = token_b64_value(c, url);
        if (v < 0 || pad > 0)
            goto bad;
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[len++] = (unsigned char)(acc >> bits);
        }
    }
    /* Six leftover bits cannot be a byte: the input was cut in the middle of a quantum. */
    if (bits >= 6 || pad > 2)
        goto bad;
    out[len] = '\0';
    *out_len = len;
    return out;
bad:
    free(out);
    return NULL;
}

const char *token_json_cstr(const json_t *js)
{
    const char *s = json_string_value(js);

    if (!s || strlen(s) != json_string_length(js))
        return NULL;
    return s;
}

static void token_key_clear(token_key *k)
{
    if (k->material) {
        explicit_bzero(k->material, k->len);
        free(k->material);
    }
    free(k->kid);
    memset(k, 0, sizeof(*k));
}

/* Reads a whole (small) file into a NUL-terminated buffer. Returns 0 or -1 with the reason. */
static int token_read_file(const char *path, unsigned char **out, size_t *out_len, char *err,
                           size_t errlen)
{
    FILE *f = fopen(path, "rb");
    unsigned char *buf;
    size_t n;

    if (!f)
        return token_fail(err, errlen, "cannot open %s: %s", path, strerror(errno));
    buf = malloc(TOKEN_MAX_KEY_FILE + 1);
    if (!buf) {
        fclose(f);
        return token_fail(err, errlen, "out of memory reading %s", path);
    }
    n = fread(buf, 1, TOKEN_MAX_KEY_FILE + 1, f);
    if (ferror(f) || n > TOKEN_MAX_KEY_FILE) {
        fclose(f);
        free(buf);
        return token_fail(err, errlen, "cannot read %s: %s", path,
                          n > TOKEN_MAX_KEY_FILE ? "larger than 64 KiB" : "read error");
    }
    fclose(f);
    buf[n] = '\0';
    *out = buf;
    *out_len = n;
    return 0;
}

/* Returns true when needle occurs in hay (memmem() is a GNU extension this build does not enable).
 */
static bool token_has_bytes(const unsigned char *hay, size_t n, const unsigned char *needle,
                            size_t m)
{
    for (size_t i = 0; m <= n && i <= n - m; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return true;
    return false;
}

/* Checks that pem holds one SubjectPublicKeyInfo ("-----BEGIN PUBLIC KEY-----", the form libjwt
 * hands to OpenSSL) whose key type, and for EC whose curve, fits alg. Catching a private key, an
 * RSA key for ES256 or a P-384 key for ES256 here turns a rejected token at run time into a
 * refusal to start. Returns 0 or -1 with the reason. */
static int token_check_pem(const char *pem, const token_alg_info *alg, char *err, size_t errlen)
{
    static const char begin[] = "-----BEGIN PUBLIC KEY-----";
    static const char end[] = "-----END PUBLIC KEY-----";
    static const unsigned char oid_rsa[] = {0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                                            0xf7, 0x0d, 0x01, 0x01, 0x01};
    static const unsigned char oid_ec[] = {0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};
    static const unsigned char oid_p256[] = {0x06, 0x08, 0x2a, 0x86, 0x48,
                                             0xce, 0x3d, 0x03, 0x01, 0x07};
    static const unsigned char oid_p384[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22};
    static const unsigned char oid_p521[] = {0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23};
    const char *b = strstr(pem, begin), *e;
    unsigned char *der;
    size_t der_len;
    bool ok;

    if (!b || !(e = strstr(b, end)))
        return token_fail(err, errlen, "%s needs a PEM public key (%s)", alg->name, begin);
    b += sizeof(begin) - 1;
    der = token_b64_decode(b, (size_t)(e - b), false, &der_len);
    if (!der || der_len == 0) {
        free(der);
        return token_fail(err, errlen, "PEM public key is not valid base64");
    }
    if (alg->family == FAMILY_RSA) {
        ok = token_has_bytes(der, der_len, oid_rsa, sizeof(oid_rsa));
    } else if (alg->alg == JWT_ALG_ES384) {
        ok = token_has_bytes(der, der_len, oid_ec, sizeof(oid_ec)) &&
             token_has_bytes(der, der_len, oid_p384, sizeof(oid_p384));
    } else if (alg->alg == JWT_ALG_ES512) {
        ok = token_has_bytes(der, der_len, oid_ec, sizeof(oid_ec)) &&
             token_has_bytes(der, der_len, oid_p521, sizeof(oid_p521));
    } else {
        ok = token_has_bytes(der, der_len, oid_ec, sizeof(oid_ec)) &&
             token_has_bytes(der, der_len, oid_p256, sizeof(oid_p256));
    }
    free(der);
    if (!ok && alg->family == FAMILY_RSA)
        return token_fail(err, errlen, "%s needs an RSA public key", alg->name);
    if (!ok)
        return token_fail(err, errlen, "%s needs an EC public key on curve %s", alg->name,
                          alg->curve);
    return 0;
}

/* Joins a key path to the directory of the key file unless it is absolute, so a key set and its
 * PEM files can move together. Returns a malloc'd path or NULL. */
static char *token_key_path(const char *keys_file, const char *path)
{
    const char *slash = strrchr(keys_file, '/');
    size_t dir_len = slash ? (size_t)(slash - keys_file) + 1 : 0;
    char *out;

    if (path[0] == '/' || dir_len == 0)
        return strdup(path);
    out = malloc(dir_len + strlen(path) + 1);
    if (!out)
        return NULL;
    memcpy(out, keys_file, dir_len);
    strcpy(out + dir_len, path);
    return out;
}

/* Fills k->material from an entry's "secret", "public_key" or "public_key_file" member, whichever
 * fits the key's algorithm family. Returns 0 or -1 with the reason. */
static int token_key_material(token_key *k, json_t *entry, const char *keys_file, char *err,
                              size_t errlen)
{
    json_t *secret = json_object_get(entry, "secret");
    json_t *pem = json_object_get(entry, "public_key");
    json_t *pem_file = json_object_get(entry, "public_key_file");
    const char *s;

    if (k->alg->family == FAMILY_HMAC) {
        if (pem || pem_file)
            return token_fail(err, errlen, "%s takes \"secret\", not a public key", k->alg->name);
        s = token_json_cstr(secret);
        if (!s || !s[0])
            return token_fail(err, errlen, "\"secret\" must be a non-empty string");
        k->material = (unsigned char *)strdup(s);
        k->len = strlen(s);
        return k->material ? 0 : token_fail(err, errlen, "out of memory");
    }
    if (secret)
        return token_fail(err, errlen, "%s takes a public key, not \"secret\"", k->alg->name);
    if (!pem == !pem_file)
        return token_fail(err, errlen,
                          "give exactly one of \"public_key\" and \"public_key_file\"");
    if (pem) {
        s = token_json_cstr(pem);
        if (!s || !s[0])
            return token_fail(err, errlen, "\"public_key\" must be a non-empty string");
        k->material = (unsigned char *)strdup(s);
        k->len = k->material ? strlen(s) : 0;
        if (!k->material)
            return token_fail(err, errlen, "out of memory");
    } else {
        char *path;
        int rc;

        s = token_json_cstr(pem_file);
        if (!s || !s[0])
            return token_fail(err, errlen, "\"public_key_file\" must be a non-empty string");
        path = token_key_path(keys_file, s);
        if (!path)
            return token_fail(err, errlen, "out of memory");
        rc = token_read_file(path, &k->material, &k->len, err, errlen);
        free(path);
        if (rc < 0)
            return -1;
    }
    return token_check_pem((const char *)k->material, k->alg, err, errlen);
}

/* Builds k from one entry of the key file. Returns 0 or -1 with the reason (k left clear). */
static int token_key_from_json(token_key *k, json_t *entry, const char *keys_file, char *err,
                               size_t errlen)
{
    static const char *const known[] = {"kid", "alg", "secret", "public_key", "public_key_file"};
    const char *name, *kid, *alg;
    char why[256];
    json_t *val;

    if (!json_is_object(entry))
        return token_fail(err, errlen, "a key must be an object");
    /* An unknown member is most likely a misspelt one; refusing it beats ignoring a key. */
    json_object_foreach(entry, name, val)
    {
        size_t i = 0;

        while (i < sizeof(known) / sizeof(known[0]) && strcmp(known[i], name) != 0)
            i++;
        if (i == sizeof(known) / sizeof(known[0]))
            return token_fail(err, errlen, "unknown member \"%s\"", name);
    }
    kid = token_json_cstr(json_object_get(entry, "kid"));
    if (!kid || !kid[0])
        return token_fail(err, errlen, "\"kid\" must be a non-empty string");
    alg = token_json_cstr(json_object_get(entry, "alg"));
    if (!alg)
        return token_fail(err, errlen, "key \"%s\": \"alg\" must be a string", kid);
    k->alg = token_alg_find(alg);
    if (!k->alg)
        return token_fail(err, errlen, "key \"%s\": unsupported alg \"%s\"", kid, alg);
    k->kid = strdup(kid);
    if (!k->kid)
        return token_fail(err, errlen, "out of memory");
    if (token_key_material(k, entry, keys_file, why, sizeof(why)) < 0) {
        token_fail(err, errlen, "key \"%s\": %s", kid, why);
        token_key_clear(k);
        return -1;
    }
    return 0;
}

/* Appends the keys of a JSON key file to v. Returns 0 or -1 with the reason. */
static int token_load_keys_file(token_keyset *ks, const char *path, char *err, size_t errlen)
{
    json_error_t jerr;
    json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    json_t *keys = json_object_get(root, "keys");
    token_key *grown;
    size_t n = json_array_size(keys);
    int rc = -1;

    if (!root) {
        token_fail(err, errlen, "key file %s: %s", path, jerr.text);
        goto out;
    }
    if (!json_is_array(keys) || n == 0) {
        token_fail(err, errlen, "key file %s: needs a non-empty \"keys\" array", path);
        goto out;
    }
    grown = realloc(ks->keys, (ks->n_keys + n) * sizeof(*ks->keys));
    if (!grown) {
        token_fail(err, errlen, "out of memory");
        goto out;
    }
    ks->keys = grown;
    for (size_t i = 0; i < n; i++) {
        token_key *k = &ks->keys[ks->n_keys];
        char reason[384];

        memset(k, 0, sizeof(*k));
        if (token_key_from_json(k, json_array_get(keys, i), path, reason, sizeof(reason)) < 0) {
            token_fail(err, errlen, "key file %s: keys[%zu]: %s", path, i, reason);
            goto out;
        }
        ks->n_keys++;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

/* Refuses two keys with the same kid: which one a token meant would be a guess. */
static int token_check_duplicates(const token_keyset *ks, char *err, size_t errlen)
{
    for (size_t i = 0; i < ks->n_keys; i++)
        for (size_t j = i + 1; j < ks->n_keys; j++)
            if (ks->keys[i].kid && ks->keys[j].kid && strcmp(ks->keys[i].kid, ks->keys[j].kid) == 0)
                return token_fail(err, errlen, "duplicate kid \"%s\"", ks->keys[i].kid);
    return 0;
}

static int token_add_secret(token_keyset *ks, const char *secret, char *err, size_t errlen)
{
    token_key *k;

    ks->keys = calloc(1, sizeof(*ks->keys));
    if (!ks->keys)
        return token_fail(err, errlen, "out of memory");
    k = &ks->keys[0];
    k->alg = token_alg_find("HS256");
    k->material = (unsigned char *)strdup(secret);
    if (!k->material)
        return token_fail(err, errlen, "out of memory");
    k->len = strlen(secret);
    ks->n_keys = 1;
    return 0;
}

/* Warns about HMAC secrets shorter than RFC 7518 asks for (the hash size); they still work. */
static void token_warn_short_secrets(const token_keyset *ks)
{
    for (size_t i = 0; i < ks->n_keys; i++) {
        const token_key *k = &ks->keys[i];

        if (k->alg->family == FAMILY_HMAC && k->len < TOKEN_MIN_HS_SECRET)
            log_warn("JWT secret%s%s is %zu bytes; use at least %d random bytes",
                     k->kid ? " for kid " : "", k->kid ? k->kid : "", k->len, TOKEN_MIN_HS_SECRET);
    }
}

int token_keyset_load(token_keyset *ks, const char *hs256_secret, const char *keys_file, char *err,
                      size_t errlen)
{
    bool have_secret = hs256_secret && hs256_secret[0];
    bool have_file = keys_file && keys_file[0];

    if (!have_secret && !have_file)
        return token_fail(err, errlen, "no JWT key configured (set a secret or a key file)");
    if ((have_secret && token_add_secret(ks, hs256_secret, err, errlen) < 0) ||
        (have_file && token_load_keys_file(ks, keys_file, err, errlen) < 0) ||
        token_check_duplicates(ks, err, errlen) < 0)
        return -1;
    token_warn_short_secrets(ks);
    return 0;
}

void token_keyset_free(token_keyset *ks)
{
    for (size_t i = 0; i < ks->n_keys; i++)
        token_key_clear(&ks->keys[i]);
    free(ks->keys);
    ks->keys = NULL;
    ks->n_keys = 0;
}
