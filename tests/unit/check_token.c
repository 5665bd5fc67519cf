/*
 * check_token.c: JWT verification against real libjwt-minted tokens (HS256 with token_mint_hs256,
 * RS256 and ES256 with the committed fixture private keys) and hand-crafted hostile ones.
 */
#include <check.h>
#include <jwt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay/token.h"

#define NOW    INT64_C(1700000000)
#define SECRET "unit-test-secret-0123456789abcdef0123"
/* The two HS256 secrets of fixtures/keys.json. */
#define SECRET_2024 "fixture-secret-2024-0123456789abcdef"
#define SECRET_2025 "fixture-secret-2025-0123456789abcdef"

static char err[512];

/* Returns the absolute path of fixtures/<name>: under $RELAY_SOURCE_DIR when set, else next to
 * this source file (__FILE__ is absolute under CMake, relative when compiled by hand). Absolute,
 * because key files name their PEM files relative to their own directory. */
static const char *fixture(const char *name)
{
    static char path[4096];
    const char *src = getenv("RELAY_SOURCE_DIR");
    const char *slash = strrchr(__FILE__, '/');
    char cwd[2048] = ".";

    if (src && src[0]) {
        snprintf(path, sizeof(path), "%s/tests/unit/fixtures/%s", src, name);
        return path;
    }
    if (__FILE__[0] != '/')
        ck_assert_ptr_nonnull(getcwd(cwd, sizeof(cwd)));
    snprintf(path, sizeof(path), "%s%s%.*s/fixtures/%s", __FILE__[0] == '/' ? "" : cwd,
             __FILE__[0] == '/' ? "" : "/", slash ? (int)(slash - __FILE__) : 1,
             slash ? __FILE__ : ".", name);
    return path;
}

static char *read_fixture(const char *name)
{
    FILE *f = fopen(fixture(name), "rb");
    char *buf;
    size_t n;

    ck_assert_msg(f != NULL, "cannot open fixture %s", fixture(name));
    buf = calloc(1, 65536);
    ck_assert_ptr_nonnull(buf);
    n = fread(buf, 1, 65535, f);
    fclose(f);
    ck_assert_uint_gt(n, 0);
    return buf;
}

/* Writes text to a fresh temporary file and returns its path (caller unlinks and frees). */
static char *write_temp(const char *text)
{
    const char *dir = getenv("TMPDIR");
    char *path = malloc(4096);
    int fd;

    ck_assert_ptr_nonnull(path);
    snprintf(path, 4096, "%s/relay-token-XXXXXX", dir && dir[0] ? dir : "/tmp");
    fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
    close(fd);
    return path;
}

/* Mints a token with libjwt: any algorithm and key, extra headers and claims as JSON objects. */
static char *mint(jwt_alg_t alg, const char *key, const char *headers_json, const char *grants_json)
{
    jwt_t *j = NULL;
    char *out;

    ck_assert_int_eq(jwt_new(&j), 0);
    if (headers_json)
        ck_assert_int_eq(jwt_add_headers_json(j, headers_json), 0);
    if (grants_json)
        ck_assert_int_eq(jwt_add_grants_json(j, grants_json), 0);
    ck_assert_int_eq(jwt_set_alg(j, alg, (const unsigned char *)key, (int)strlen(key)), 0);
    out = jwt_encode_str(j);
    jwt_free(j);
    ck_assert_ptr_nonnull(out);
    return out;
}

static char *b64url(const char *s)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t n = strlen(s), o = 0;
    char *out = malloc(n / 3 * 4 + 5);

    ck_assert_ptr_nonnull(out);
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned char)s[i] << 16;

        if (i + 1 < n)
            v |= (unsigned char)s[i + 1] << 8;
        if (i + 2 < n)
            v |= (unsigned char)s[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        if (i + 1 < n)
            out[o++] = tab[(v >> 6) & 63];
        if (i + 2 < n)
            out[o++] = tab[v & 63];
    }
    out[o] = '\0';
    return out;
}

/* Builds "b64(header).b64(payload).sig" without signing anything. */
static char *craft(const char *header, const char *payload, const char *sig)
{
    char *h = b64url(header), *p = b64url(payload);
    size_t n = strlen(h) + strlen(p) + strlen(sig) + 3;
    char *out = malloc(n);

    ck_assert_ptr_nonnull(out);
    snprintf(out, n, "%s.%s.%s", h, p, sig);
    free(h);
    free(p);
    return out;
}

static token_verifier *verifier(const char *secret, const char *keys_file, const char *aud,
                                const char *iss, int leeway)
{
    token_config cfg = {secret, keys_file, aud, iss, leeway};
    token_verifier *v = token_verifier_create(&cfg, err, sizeof(err));

    ck_assert_msg(v != NULL, "create failed: %s", err);
    return v;
}

static token_verifier *fixture_verifier(void)
{
    return verifier(NULL, fixture("keys.json"), NULL, NULL, 30);
}

/* Verifies and expects success; frees the token. */
static void expect_ok(const token_verifier *v, char *jwt, token_claims *c)
{
    int rc = token_verify(v, jwt, NOW, c, err, sizeof(err));

    ck_assert_msg(rc == 0, "token refused: %s", err);
    free(jwt);
}

/* Verifies and expects failure with a reason containing want; frees the token. */
static void expect_fail(const token_verifier *v, char *jwt, const char *want)
{
    token_claims c;

    err[0] = '\0';
    ck_assert_int_eq(token_verify(v, jwt, NOW, &c, err, sizeof(err)), -1);
    ck_assert_msg(strstr(err, want) != NULL, "reason \"%s\" lacks \"%s\"", err, want);
    ck_assert_ptr_null(c.user_id);
    free(jwt);
}

static char *hs(const char *secret, const char *kid, const char *grants)
{
    char headers[128];

    snprintf(headers, sizeof(headers), "{\"kid\":\"%s\"}", kid ? kid : "");
    return mint(JWT_ALG_HS256, secret, kid ? headers : NULL, grants);
}

/* ---- valid tokens -----------------------------------------------------------------------------
 */

START_TEST(test_valid_hs256)
{
    token_verifier *v = verifier(SECRET, NULL, NULL, NULL, 30);
    token_claims c;

    expect_ok(v, token_mint_hs256(SECRET, NULL, "u1", NULL, NOW + 60, 0, NULL, 0), &c);
    ck_assert_str_eq(c.user_id, "u1");
    ck_assert_str_eq(c.user_name, "u1");
    ck_assert_int_eq(c.exp, NOW + 60);
    ck_assert(!c.has_docs);
    ck_assert(token_claims_allow(&c, "anything"));
    token_claims_free(&c);

    expect_ok(v, token_mint_hs256(SECRET, NULL, "u2", "Ada", NOW + 60, NOW - 5, NULL, 0), &c);
    ck_assert_str_eq(c.user_id, "u2");
    ck_assert_str_eq(c.user_name, "Ada");
    token_claims_free(&c);
    token_verifier_destroy(v);
}
END_TEST

START_TEST(test_valid_rs256_es256)
{
    token_verifier *v = fixture_verifier();
    char *rs_key = read_fixture("rs256.key.pem"), *es_key = read_fixture("es256.key.pem");
    const char *grants = "{\"sub\":\"alice\",\"name\":\"Alice\",\"exp\":1700000600}";
    token_claims c;

    expect_ok(v, mint(JWT_ALG_RS256, rs_key, "{\"kid\":\"rs\"}", grants), &c);
    ck_assert_str_eq(c.user_id, "alice");
    ck_assert_str_eq(c.user_name, "Alice");
    ck_assert_int_eq(c.exp, 1700000600);
    token_claims_free(&c);

    expect_ok(v, mint(JWT_ALG_ES256, es_key, "{\"kid\":\"es\"}", grants), &c);
    ck_assert_str_eq(c.user_id, "alice");
    token_claims_free(&c);

    /* The RSA public key used as HMAC secret with the RS key's kid: the classic confusion. */
    char *rs_pub = read_fixture("rs256.pub.pem");
    expect_fail(v, mint(JWT_ALG_HS256, rs_pub, "{\"kid\":\"rs\"}", grants), "wrong algorithm");
    /* An ES256 token presented under the RS256 kid, and an RS256 one under the ES256 kid. */
    expect_fail(v, mint(JWT_ALG_ES256, es_key, "{\"kid\":\"rs\"}", grants), "wrong algorithm");
    expect_fail(v, mint(JWT_ALG_RS256, rs_key, "{\"kid\":\"es\"}", grants), "wrong algorithm");
    free(rs_pub);
    free(rs_key);
    free(es_key);
    token_verifier_destroy(v);
}
END_TEST

/* A lone RS256 key given inline; tokens without a kid use it. */
START_TEST(test_inline_public_key_single)
{
    char *pub = read_fixture("rs256.pub.pem"), *priv = read_fixture("rs256.key.pem");
    char *text = malloc(8192), *path, *esc = malloc(4096);
    const char *grants = "{\"sub\":\"bob\",\"exp\":1700000600}";
    size_t o = 0;
    token_verifier *v;
    token_claims c;

    for (const char *p = pub; *p; p++) {
        if (*p == '\n') {
            esc[o++] = '\\';
            esc[o++] = 'n';
        } else {
            esc[o++] = *p;
        }
    }
    esc[o] = '\0';
    snprintf(text, 8192, "{\"keys\":[{\"kid\":\"only\",\"alg\":\"RS256\",\"public_key\":\"%s\"}]}",
             esc);
    path = write_temp(text);
    v = verifier(NULL, path, NULL, NULL, 0);
    expect_ok(v, mint(JWT_ALG_RS256, priv, NULL, grants), &c);
    ck_assert_str_eq(c.user_id, "bob");
    token_claims_free(&c);
    expect_ok(v, mint(JWT_ALG_RS256, priv, "{\"kid\":\"only\"}", grants), &c);
    token_claims_free(&c);
    /* HS256 signed with the PEM bytes, no kid: still the RS256 key, still refused. */
    expect_fail(v, mint(JWT_ALG_HS256, pub, NULL, grants), "wrong algorithm");
    expect_fail(v, mint(JWT_ALG_RS256, priv, "{\"kid\":\"other\"}", grants), "unknown kid");
    token_verifier_destroy(v);
    unlink(path);
    free(path);
    free(text);
    free(esc);
    free(pub);
    free(priv);
}
END_TEST

/* ---- time claims ------------------------------------------------------------------------------
 */

START_TEST(test_exp_and_nbf)
{
    token_verifier *v = verifier(SECRET, NULL, NULL, NULL, 30);
    token_verifier *strict = verifier(SECRET, NULL, NULL, NULL, 0);
    token_claims c;

    expect_fail(v, token_mint_hs256(SECRET, NULL, "u", NULL, NOW - 100, 0, NULL, 0), "expired");
    /* Expired 10 s ago but within the 30 s leeway. */
    expect_ok(v, token_mint_hs256(SECRET, NULL, "u", NULL, NOW - 10, 0, NULL, 0), &c);
    token_claims_free(&c);
    expect_fail(v, token_mint_hs256(SECRET, NULL, "u", NULL, NOW - 30, 0, NULL, 0), "expired");
    expect_fail(strict, token_mint_hs256(SECRET, NULL, "u", NULL, NOW, 0, NULL, 0), "expired");
    expect_ok(strict, token_mint_hs256(SECRET, NULL, "u", NULL, NOW + 1, 0, NULL, 0), &c);
    token_claims_free(&c);

    expect_fail(v, token_mint_hs256(SECRET, NULL, "u", NULL, NOW + 600, NOW + 100, NULL, 0),
                "not yet valid");
    expect_ok(v, token_mint_hs256(SECRET, NULL, "u", NULL, NOW + 600, NOW + 10, NULL, 0), &c);
    token_claims_free(&c);
    expect_fail(strict, token_mint_hs256(SECRET, NULL, "u", NULL, NOW + 600, NOW + 1, NULL, 0),
                "not yet valid");

    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"u\"}"), "no exp");
    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":\"1700000600\"}"), "exp");
    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":1700000600.5}"), "exp");
    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":\"x\"}"), "nbf");
    /* Extreme values must not overflow into acceptance. */
    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":-9223372036854775808}"), "expired");
    expect_fail(v,
                hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":1700000600,\"nbf\":9223372036854775807}"),
                "not yet valid");
    token_verifier_destroy(strict);
    token_verifier_destroy(v);
}
END_TEST

/* ---- signatures and algorithms ----------------------------------------------------------------
 */

START_TEST(test_bad_signature)
{
    token_verifier *v = verifier(SECRET, NULL, NULL, NULL, 30);
    char *good = token_mint_hs256(SECRET, NULL, "u", NULL, NOW + 60, 0, NULL, 0);
    char *other = token_mint_hs256("another-secret", NULL, "u", NULL, NOW + 60, 0, NULL, 0);
    char *dot1 = strchr(good, '.'), *dot2 = strrchr(good, '.');
    char *forged_payload = b64url("{\"exp\":1700000060,\"sub\":\"admin\"}");
    char *forged = malloc(strlen(good) + strlen(forged_payload) + 1);

    expect_fail(v, other, "invalid signature");
    /* Someone else's claims under a genuine header and signature. */
    sprintf(forged, "%.*s.%s%s", (int)(dot1 - good), good, forged_payload, dot2);
    expect_fail(v, forged, "invalid signature");
    /* A flipped signature character. */
    char *flipped = strdup(good);
    size_t last = strlen(flipped) - 2;
    flipped[last] = flipped[last] == 'A' ? 'B' : 'A';
    expect_fail(v, flipped, "invalid signature");
    free(forged_payload);
    free(good);
    token_verifier_destroy(v);
}
END_TEST

START_TEST(test_alg_none_and_wrong_alg)
{
    token_verifier *v = verifier(SECRET, NULL, NULL, NULL, 30);
    token_verifier *set = fixture_verifier();
    const char *claims = "{\"sub\":\"u\",\"exp\":1700000060}";

    expect_fail(v, craft("{\"alg\":\"none\",\"typ\":\"JWT\"}", claims, ""), "alg none");
    expect_fail(v, craft("{\"alg\":\"none\"}", claims, "x"), "alg none");
    expect_fail(v, craft("{\"alg\":\"None\"}", claims, "x"), "alg none");
    expect_fail(set, craft("{\"alg\":\"none\",\"kid\":\"hs-2024\"}", claims, "x"), "alg none");
    expect_fail(v, craft("{\"typ\":\"JWT\"}", claims, "x"), "no alg");
    expect_fail(v, craft("{\"alg\":\"hs256\"}", claims, "x"), "wrong algorithm");
    /* Same secret, another HMAC algorithm: still not the pinned one. */
    expect_fail(v, mint(JWT_ALG_HS512, SECRET, NULL, claims), "wrong algorithm");
    expect_fail(v, mint(JWT_ALG_HS384, SECRET, NULL, claims), "wrong algorithm");
    expect_fail(set, mint(JWT_ALG_HS512, SECRET_2024, "{\"kid\":\"hs-2024\"}", claims),
                "wrong algorithm");
    /* An RS256 token against an HS256 key. */
    char *rs_key = read_fixture("rs256.key.pem");
    expect_fail(v, mint(JWT_ALG_RS256, rs_key, NULL, claims), "wrong algorithm");
    free(rs_key);
    /* Extension headers this verifier cannot honour, and a typ that is not JWT. */
    expect_fail(v, mint(JWT_ALG_HS256, SECRET, "{\"crit\":[\"exp\"]}", claims), "crit");
    expect_fail(v, craft("{\"alg\":\"HS256\",\"typ\":\"JOSE+JSON\"}", claims, "x"), "typ");
    expect_fail(v, craft("{\"alg\":\"HS256\",\"kid\":7}", claims, "x"), "kid");
    token_verifier_destroy(set);
    token_verifier_destroy(v);
}
END_TEST

START_TEST(test_kid_selection_and_rotation)
{
    token_verifier *v = fixture_verifier();
    const char *claims = "{\"sub\":\"u\",\"exp\":1700000060}";
    token_claims c;

    expect_ok(v, hs(SECRET_2024, "hs-2024", claims), &c);
    token_claims_free(&c);
    expect_ok(v, hs(SECRET_2025, "hs-2025", claims), &c);
    token_claims_free(&c);
    /* The right algorithm and a genuine secret, but the other kid's. */
    expect_fail(v, hs(SECRET_2025, "hs-2024", claims), "invalid signature");
    expect_fail(v, hs(SECRET_2024, "hs-1999", claims), "unknown kid");
    /* Four keys and none without a kid: a token without one matches nothing. */
    expect_fail(v, hs(SECRET_2024, NULL, claims), "no kid");
    token_verifier_destroy(v);

    /* hs256_secret plus the key set: the secret serves tokens without a kid. */
    v = verifier(SECRET, fixture("keys.json"), NULL, NULL, 30);
    expect_ok(v, hs(SECRET, NULL, claims), &c);
    token_claims_free(&c);
    expect_ok(v, hs(SECRET_2025, "hs-2025", claims), &c);
    token_claims_free(&c);
    expect_fail(v, hs(SECRET, "hs-2025", claims), "invalid signature");
    token_verifier_destroy(v);

    /* Only the kid-less secret: a token naming a kid is refused rather than guessed at. */
    v = verifier(SECRET, NULL, NULL, NULL, 30);
    expect_fail(v, token_mint_hs256(SECRET, "k9", "u", NULL, NOW + 60, 0, NULL, 0), "unknown kid");
    token_verifier_destroy(v);
}
END_TEST

/* ---- identity and docs claims -----------------------------------------------------------------
 */

START_TEST(test_sub_and_name)
{
    token_verifier *v = verifier(SECRET, NULL, NULL, NULL, 30);
    token_claims c;

    expect_fail(v, hs(SECRET, NULL, "{\"exp\":1700000060}"), "no sub");
    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"\",\"exp\":1700000060}"), "no sub");
    expect_fail(v, hs(SECRET, NULL, "{\"sub\":42,\"exp\":1700000060}"), "no sub");
    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"name\":7,\"exp\":1700000060}"), "name");
    expect_ok(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"name\":null,\"exp\":1700000060}"), &c);
    ck_assert_str_eq(c.user_name, "u");
    token_claims_free(&c);
    expect_ok(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"name\":\"Zoë \\\"Z\\\"\",\"exp\":1700000060}"),
              &c);
    ck_assert_str_eq(c.user_name, "Zoë \"Z\"");
    token_claims_free(&c);
    token_verifier_destroy(v);
}
END_TEST

START_TEST(test_docs_claim)
{
    token_verifier *v = verifier(SECRET, NULL, NULL, NULL, 30);
    const char *docs[] = {"notes", "team:*", "x\"y"};
    token_claims c, copy;

    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":1700000060,\"docs\":\"notes\"}"),
                "docs is not an array of strings");
    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":1700000060,\"docs\":[\"a\",1]}"),
                "docs is not an array of strings");
    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":1700000060,\"docs\":null}"),
                "docs is not an array of strings");
    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":1700000060,\"docs\":{\"a\":1}}"),
                "docs is not an array of strings");

    expect_ok(v, token_mint_hs256(SECRET, NULL, "u", NULL, NOW + 60, 0, docs, 3), &c);
    ck_assert(c.has_docs);
    ck_assert_uint_eq(c.n_docs, 3);
    ck_assert_str_eq(c.docs[2], "x\"y");
    ck_assert(token_claims_allow(&c, "notes"));
    ck_assert(!token_claims_allow(&c, "notes2"));
    ck_assert(!token_claims_allow(&c, "note"));
    ck_assert(token_claims_allow(&c, "team:"));
    ck_assert(token_claims_allow(&c, "team:design"));
    ck_assert(!token_claims_allow(&c, "team"));
    ck_assert(!token_claims_allow(&c, "other"));
    ck_assert(!token_claims_allow(&c, NULL));

    ck_assert_int_eq(token_claims_copy(&copy, &c), 0);
    token_claims_free(&c);
    ck_assert_str_eq(copy.user_id, "u");
    ck_assert_uint_eq(copy.n_docs, 3);
    ck_assert(token_claims_allow(&copy, "team:x"));
    ck_assert(!token_claims_allow(&copy, "nope"));
    token_claims_free(&copy);
    token_claims_free(&copy); /* freeing an emptied claims is harmless */

    /* An empty list allows nothing; a lone "*" allows everything. */
    expect_ok(v, token_mint_hs256(SECRET, NULL, "u", NULL, NOW + 60, 0, docs, 0), &c);
    ck_assert(c.has_docs);
    ck_assert(!token_claims_allow(&c, "notes"));
    token_claims_free(&c);
    const char *star[] = {"*"};
    expect_ok(v, token_mint_hs256(SECRET, NULL, "u", NULL, NOW + 60, 0, star, 1), &c);
    ck_assert(token_claims_allow(&c, "anything"));
    token_claims_free(&c);
    token_verifier_destroy(v);
}
END_TEST

START_TEST(test_aud_and_iss)
{
    token_verifier *v = verifier(SECRET, NULL, "relay", "https://auth.example", 30);
    token_verifier *open = verifier(SECRET, NULL, NULL, NULL, 30);
    token_claims c;

    expect_ok(v,
              hs(SECRET, NULL,
                 "{\"sub\":\"u\",\"exp\":1700000060,\"aud\":\"relay\","
                 "\"iss\":\"https://auth.example\"}"),
              &c);
    token_claims_free(&c);
    expect_ok(v,
              hs(SECRET, NULL,
                 "{\"sub\":\"u\",\"exp\":1700000060,\"aud\":[\"api\",\"relay\"],"
                 "\"iss\":\"https://auth.example\"}"),
              &c);
    token_claims_free(&c);
    expect_fail(v,
                hs(SECRET, NULL,
                   "{\"sub\":\"u\",\"exp\":1700000060,\"aud\":\"api\","
                   "\"iss\":\"https://auth.example\"}"),
                "audience");
    expect_fail(v,
                hs(SECRET, NULL,
                   "{\"sub\":\"u\",\"exp\":1700000060,\"aud\":[\"api\",1],"
                   "\"iss\":\"https://auth.example\"}"),
                "audience");
    expect_fail(
        v, hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":1700000060,\"iss\":\"https://auth.example\"}"),
        "audience");
    expect_fail(v,
                hs(SECRET, NULL,
                   "{\"sub\":\"u\",\"exp\":1700000060,\"aud\":\"relay\",\"iss\":\"https://evil\"}"),
                "issuer");
    expect_fail(v, hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":1700000060,\"aud\":\"relay\"}"),
                "issuer");
    /* Not configured: not checked. */
    expect_ok(open, hs(SECRET, NULL, "{\"sub\":\"u\",\"exp\":1700000060,\"aud\":\"api\"}"), &c);
    token_claims_free(&c);
    token_verifier_destroy(open);
    token_verifier_destroy(v);
}
END_TEST

/* ---- malformed input --------------------------------------------------------------------------
 */

START_TEST(test_malformed_tokens)
{
    token_verifier *v = verifier(SECRET, NULL, NULL, NULL, 30);
    const char *bad[] = {"",        "abc",       "a.b",       "a.b.c.d",   "..",    "a..c",
                         "!!.??.x", "e30.e30.x", "W10.e30.x", "e30.W10.x", ".e30.x"};
    char *good = token_mint_hs256(SECRET, NULL, "u", NULL, NOW + 60, 0, NULL, 0);
    char *huge = malloc(70000);
    token_claims c;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        ck_assert_int_eq(token_verify(v, bad[i], NOW, &c, err, sizeof(err)), -1);
        ck_assert_msg(err[0] != '\0', "no reason for \"%s\"", bad[i]);
    }
    /* Padding belongs to plain base64, not to the base64url of a JWS. */
    char *padded = malloc(strlen(good) + 2);
    char *dot = strchr(good, '.');
    sprintf(padded, "%.*s=%s", (int)(dot - good), good, dot);
    expect_fail(v, padded, "malformed");
    /* Duplicate claim names: two readers could disagree about which one counts. */
    expect_fail(v, craft("{\"alg\":\"HS256\"}", "{\"sub\":\"a\",\"sub\":\"b\"}", "x"), "malformed");
    memset(huge, 'a', 69999);
    huge[69999] = '\0';
    expect_fail(v, huge, "too long");
    ck_assert_int_eq(token_verify(v, NULL, NOW, &c, err, sizeof(err)), -1);
    ck_assert_int_eq(token_verify(NULL, good, NOW, &c, err, sizeof(err)), -1);
    /* A NULL err buffer is allowed. */
    ck_assert_int_eq(token_verify(v, "x", NOW, &c, NULL, 0), -1);
    free(good);
    token_verifier_destroy(v);
}
END_TEST

/* ---- configuration ----------------------------------------------------------------------------
 */

/* Writes a key set, expects create() to refuse it with a reason containing want. */
static void expect_bad_keys(const char *json, const char *want)
{
    char *path = write_temp(json);
    token_config cfg = {NULL, path, NULL, NULL, 30};

    err[0] = '\0';
    ck_assert_ptr_null(token_verifier_create(&cfg, err, sizeof(err)));
    ck_assert_msg(strstr(err, want) != NULL, "reason \"%s\" lacks \"%s\"", err, want);
    unlink(path);
    free(path);
}

START_TEST(test_create_refuses)
{
    token_config none = {NULL, NULL, NULL, NULL, 30};
    token_config empty = {"", "", NULL, NULL, 30};
    token_config missing = {NULL, "/nonexistent/relay-keys.json", NULL, NULL, 30};
    token_config leeway = {SECRET, NULL, NULL, NULL, -1};
    char rs_file[4200], es384_file[4200], priv_file[4200];

    ck_assert_ptr_null(token_verifier_create(&none, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "no JWT key"));
    ck_assert_ptr_null(token_verifier_create(&empty, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "no JWT key"));
    ck_assert_ptr_null(token_verifier_create(NULL, err, sizeof(err)));
    ck_assert_ptr_null(token_verifier_create(&missing, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "/nonexistent/relay-keys.json"));
    ck_assert_ptr_null(token_verifier_create(&leeway, err, sizeof(err)));
    ck_assert_ptr_nonnull(strstr(err, "leeway"));

    expect_bad_keys("{\"keys\":[", "key file");
    expect_bad_keys("{\"keys\":[]}", "non-empty \"keys\"");
    expect_bad_keys("[]", "non-empty \"keys\"");
    expect_bad_keys("{\"keys\":[{\"kid\":\"a\",\"alg\":\"HS256\",\"secret\":\"\"}]}",
                    "non-empty string");
    expect_bad_keys("{\"keys\":[{\"kid\":\"a\",\"alg\":\"HS256\"}]}", "\"secret\"");
    expect_bad_keys("{\"keys\":[{\"kid\":\"a\",\"alg\":\"none\",\"secret\":\"s\"}]}",
                    "unsupported alg");
    expect_bad_keys("{\"keys\":[{\"kid\":\"a\",\"alg\":\"PS256\",\"secret\":\"s\"}]}",
                    "unsupported alg");
    expect_bad_keys("{\"keys\":[{\"alg\":\"HS256\",\"secret\":\"s\"}]}", "\"kid\"");
    expect_bad_keys("{\"keys\":[{\"kid\":\"a\",\"alg\":\"HS256\",\"secret\":\"s\"},"
                    "{\"kid\":\"a\",\"alg\":\"HS512\",\"secret\":\"t\"}]}",
                    "duplicate kid \"a\"");
    expect_bad_keys("{\"keys\":[{\"kid\":\"a\",\"alg\":\"HS256\",\"secert\":\"s\"}]}",
                    "unknown member \"secert\"");
    expect_bad_keys("{\"keys\":[{\"kid\":\"a\",\"alg\":\"RS256\",\"secret\":\"s\"}]}",
                    "not \"secret\"");
    expect_bad_keys("{\"keys\":[{\"kid\":\"a\",\"alg\":\"RS256\"}]}", "exactly one");
    expect_bad_keys("{\"keys\":[{\"kid\":\"a\",\"alg\":\"RS256\",\"public_key\":\"junk\"}]}",
                    "PEM public key");
    expect_bad_keys("{\"keys\":[{\"kid\":\"a\",\"alg\":\"RS256\","
                    "\"public_key_file\":\"/nonexistent/pub.pem\"}]}",
                    "/nonexistent/pub.pem");

    /* Key files that exist but do not fit the algorithm. */
    snprintf(rs_file, sizeof(rs_file),
             "{\"keys\":[{\"kid\":\"a\",\"alg\":\"ES256\",\"public_key_file\":\"%s\"}]}",
             fixture("rs256.pub.pem"));
    expect_bad_keys(rs_file, "EC public key on curve P-256");
    snprintf(es384_file, sizeof(es384_file),
             "{\"keys\":[{\"kid\":\"a\",\"alg\":\"ES256\",\"public_key_file\":\"%s\"}]}",
             fixture("es384.pub.pem"));
    expect_bad_keys(es384_file, "curve P-256");
    snprintf(es384_file, sizeof(es384_file),
             "{\"keys\":[{\"kid\":\"a\",\"alg\":\"RS256\",\"public_key_file\":\"%s\"}]}",
             fixture("es256.pub.pem"));
    expect_bad_keys(es384_file, "RSA public key");
    snprintf(priv_file, sizeof(priv_file),
             "{\"keys\":[{\"kid\":\"a\",\"alg\":\"RS256\",\"public_key_file\":\"%s\"}]}",
             fixture("rs256.key.pem"));
    expect_bad_keys(priv_file, "BEGIN PUBLIC KEY");

    /* The kid-less secret and a file can coexist; the ES384 fixture loads under ES384. */
    snprintf(es384_file, sizeof(es384_file),
             "{\"keys\":[{\"kid\":\"p384\",\"alg\":\"ES384\",\"public_key_file\":\"%s\"}]}",
             fixture("es384.pub.pem"));
    char *path = write_temp(es384_file);
    token_verifier_destroy(verifier(SECRET, path, NULL, NULL, 0));
    unlink(path);
    free(path);
    token_verifier_destroy(NULL);
}
END_TEST

/* ---- threads ----------------------------------------------------------------------------------
 */

static void *verify_many(void *arg)
{
    const token_verifier *v = arg;
    char *jwt = token_mint_hs256(SECRET_2025, "hs-2025", "t", NULL, NOW + 60, 0, NULL, 0);
    char why[256];
    long ok = 0;

    for (int i = 0; i < 300; i++) {
        token_claims c;

        if (token_verify(v, jwt, NOW, &c, why, sizeof(why)) == 0 && strcmp(c.user_id, "t") == 0)
            ok++;
        token_claims_free(&c);
    }
    free(jwt);
    return (void *)ok;
}

/* One verifier shared by four threads: every verification succeeds. */
START_TEST(test_shared_between_threads)
{
    token_verifier *v = fixture_verifier();
    pthread_t t[4];

    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, verify_many, v), 0);
    for (int i = 0; i < 4; i++) {
        void *ok;

        ck_assert_int_eq(pthread_join(t[i], &ok), 0);
        ck_assert_int_eq((long)ok, 300);
    }
    token_verifier_destroy(v);
}
END_TEST

static Suite *token_suite(void)
{
    Suite *s = suite_create("token");
    TCase *tc = tcase_create("token");

    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_valid_hs256);
    tcase_add_test(tc, test_valid_rs256_es256);
    tcase_add_test(tc, test_inline_public_key_single);
    tcase_add_test(tc, test_exp_and_nbf);
    tcase_add_test(tc, test_bad_signature);
    tcase_add_test(tc, test_alg_none_and_wrong_alg);
    tcase_add_test(tc, test_kid_selection_and_rotation);
    tcase_add_test(tc, test_sub_and_name);
    tcase_add_test(tc, test_docs_claim);
    tcase_add_test(tc, test_aud_and_iss);
    tcase_add_test(tc, test_malformed_tokens);
    tcase_add_test(tc, test_create_refuses);
    tcase_add_test(tc, test_shared_between_threads);
    suite_add_tcase(s, tc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(token_suite());
    int failed;

    srunner_run_all(sr, CK_NORMAL);
    failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
