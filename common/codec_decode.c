/* Decoding client requests (codec_decode_text, codec_decode_binary) and the small lookups that go
 * with them.
 *
 * Both decoders reduce a message to the same thing: for each known key, the msgpack encoding of
 * its value (JSON values are converted; msgpack values are spans of the input). One function,
 * decode_fields(), then applies every field rule, so a Text and a Binary frame with the same
 * content decode identically. */
#include "codec_internal.h"
#include "relay/codec.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const codec_limits codec_default_limits = {
    .max_depth = 32,
    .max_cursor = 4096,
    .max_ref = 256,
    .max_token = 8192,
};

/* The keys the codec reads; any other key is ignored. */
enum {
    F_TYPE,
    F_REF,
    F_TOKEN,
    F_SESSION_ID,
    F_RESUME_TOKEN,
    F_PAYLOAD,
    F_CURSOR,
    F_SINCE,
    F_LIMIT,
    F_COUNT
};

static const char *const field_names[F_COUNT] = {
    "type", "ref", "token", "session_id", "resume_token", "payload", "cursor", "since", "limit",
};

static const char *const type_names[CODEC_TYPE_UNKNOWN] = {
    "authenticate", "join_document", "leave_document", "operation",
    "cursor",       "sync_request",  "ping",
};

/* A message reduced to its known fields. strict[k] is MPW_OK, or why v[k] (when it is a value
 * the relay passes through) cannot be shown to a JSON client. */
typedef struct codec_fields {
    codec_blob v[F_COUNT];
    mpw_status strict[F_COUNT];
} codec_fields;

/* Writes a formatted message into err (if any) and returns st. */
__attribute__((format(printf, 4, 5))) static codec_status fail(codec_status st, char *err,
                                                               size_t errlen, const char *fmt, ...)
{
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return st;
}

static void request_init(codec_request *req)
{
    memset(req, 0, sizeof *req);
    req->type = CODEC_TYPE_UNKNOWN;
}

void codec_request_free(codec_request *req)
{
    if (!req)
        return;
    codec_owned *owned = req->owned;
    if (owned) {
        msgbuf_unref(owned->blobs);
        free(owned);
    }
    request_init(req);
}

const char *codec_type_name(codec_type type)
{
    return (type >= CODEC_AUTHENTICATE && type < CODEC_TYPE_UNKNOWN) ? type_names[type] : "unknown";
}

bool codec_document_id_valid(const char *s, size_t len)
{
    if (!s || len == 0 || len > 128)
        return false;
    for (size_t k = 0; k < len; k++) {
        unsigned char c = (unsigned char)s[k];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '.' || c == '_' || c == ':' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* The caller's depth limit, capped so the walkers' recursion stays bounded. */
static size_t depth_limit(const codec_limits *lim)
{
    return lim->max_depth < CODEC_HARD_MAX_DEPTH ? lim->max_depth : CODEC_HARD_MAX_DEPTH;
}

static int field_index(const uint8_t *key, size_t len)
{
    for (int k = 0; k < F_COUNT; k++) {
        if (strlen(field_names[k]) == len && memcmp(field_names[k], key, len) == 0)
            return k;
    }
    return -1;
}

/* Resolves the type field. MALFORMED when it is missing or not a string. */
static codec_status resolve_type(codec_blob v, codec_type *type, char *err, size_t errlen)
{
    mpw_head h;
    if (v.len == 0)
        return fail(CODEC_MALFORMED, err, errlen, "missing field type");
    if (mpw_read_head(v.data, v.len, &h) != MPW_OK || h.kind != MPK_STR)
        return fail(CODEC_MALFORMED, err, errlen, "field type must be a string");
    for (int k = 0; k < CODEC_TYPE_UNKNOWN; k++) {
        if (strlen(type_names[k]) == h.len && memcmp(type_names[k], h.data, h.len) == 0) {
            *type = (codec_type)k;
            return CODEC_OK;
        }
    }
    return fail(CODEC_UNKNOWN_TYPE, err, errlen, "unknown message type \"%.*s\"",
                h.len > 64 ? 64 : (int)h.len, (const char *)h.data);
}

/* Checks a pass-through value (ref, payload, cursor): BAD_FIELD if JSON clients could not be
 * shown it, TOO_LARGE if its encoding exceeds max (0: no limit). */
static codec_status check_blob(const codec_fields *f, int k, size_t max, char *err, size_t errlen)
{
    if (f->strict[k] != MPW_OK)
        return fail(CODEC_BAD_FIELD, err, errlen, "field %s: %s", field_names[k],
                    mpw_strerror(f->strict[k]));
    if (max && f->v[k].len > max)
        return fail(CODEC_TOO_LARGE, err, errlen, "field %s is %zu bytes encoded, limit %zu",
                    field_names[k], f->v[k].len, max);
    return CODEC_OK;
}

/* Bytes of string storage an authenticate request needs (0 when any string field is unusable;
 * the field check reports it then). */
static size_t auth_string_bytes(const codec_fields *f)
{
    size_t total = 0;
    for (int k = F_TOKEN; k <= F_RESUME_TOKEN; k++) {
        mpw_head h;
        if (f->v[k].len && mpw_read_head(f->v[k].data, f->v[k].len, &h) == MPW_OK &&
            h.kind == MPK_STR)
            total += h.len + 1;
    }
    return total;
}

/* Copies string field k into the request's string storage at *next. */
static codec_status take_string(const codec_fields *f, int k, const codec_limits *lim, char **next,
                                const char **out, char *err, size_t errlen)
{
    mpw_head h;
    if (f->v[k].len == 0)
        return CODEC_OK;
    if (mpw_read_head(f->v[k].data, f->v[k].len, &h) != MPW_OK || h.kind != MPK_STR)
        return fail(CODEC_BAD_FIELD, err, errlen, "field %s must be a string", field_names[k]);
    if (h.len > lim->max_token)
        return fail(CODEC_BAD_FIELD, err, errlen, "field %s is longer than %zu bytes",
                    field_names[k], lim->max_token);
    if (memchr(h.data, '\0', h.len))
        return fail(CODEC_BAD_FIELD, err, errlen, "field %s contains a NUL character",
                    field_names[k]);
    memcpy(*next, h.data, h.len);
    (*next)[h.len] = '\0';
    *out = *next;
    *next += h.len + 1;
    return CODEC_OK;
}

static codec_status decode_auth(const codec_fields *f, const codec_limits *lim, codec_request *out,
                                char *err, size_t errlen)
{
    codec_owned *owned = out->owned;
    char *next = owned ? owned->strings : NULL;
    codec_status st = take_string(f, F_TOKEN, lim, &next, &out->token, err, errlen);
    if (st == CODEC_OK)
        st = take_string(f, F_SESSION_ID, lim, &next, &out->session_id, err, errlen);
    if (st == CODEC_OK)
        st = take_string(f, F_RESUME_TOKEN, lim, &next, &out->resume_token, err, errlen);
    if (st != CODEC_OK)
        return st;
    if (!out->token && !(out->session_id && out->resume_token))
        return fail(CODEC_BAD_FIELD, err, errlen,
                    "authenticate needs a token, or a session_id and a resume_token");
    return CODEC_OK;
}

static codec_status decode_sync(const codec_fields *f, codec_request *out, char *err, size_t errlen)
{
    mpw_head h;
    if (f->v[F_SINCE].len == 0)
        return fail(CODEC_BAD_FIELD, err, errlen, "missing field since");
    if (mpw_read_head(f->v[F_SINCE].data, f->v[F_SINCE].len, &h) != MPW_OK || h.kind != MPK_UINT)
        return fail(CODEC_BAD_FIELD, err, errlen, "field since must be a non-negative integer");
    out->since = h.u;
    if (f->v[F_LIMIT].len == 0)
        return CODEC_OK;
    if (mpw_read_head(f->v[F_LIMIT].data, f->v[F_LIMIT].len, &h) != MPW_OK)
        return fail(CODEC_BAD_FIELD, err, errlen, "field limit must be a positive integer");
    if (h.kind == MPK_NIL) /* an explicit null means "no limit given" */
        return CODEC_OK;
    if (h.kind != MPK_UINT || h.u == 0)
        return fail(CODEC_BAD_FIELD, err, errlen, "field limit must be a positive integer");
    /* The node caps the limit far lower; saturate rather than refuse a large request. */
    out->limit = h.u > UINT32_MAX ? UINT32_MAX : (uint32_t)h.u;
    return CODEC_OK;
}

/* A required pass-through field (payload or cursor). */
static codec_status take_blob(const codec_fields *f, int k, size_t max, codec_blob *out, char *err,
                              size_t errlen)
{
    if (f->v[k].len == 0)
        return fail(CODEC_BAD_FIELD, err, errlen, "missing field %s", field_names[k]);
    codec_status st = check_blob(f, k, max, err, errlen);
    if (st == CODEC_OK)
        *out = f->v[k];
    return st;
}

/* Applies every field rule. Takes ownership of blobs (JSON input's converted values, NULL for
 * binary input). The order matters: ref is taken before anything can fail, so error replies can
 * echo it; a bad type outranks a bad ref. */
static codec_status decode_fields(const codec_fields *f, const codec_limits *lim, msgbuf *blobs,
                                  codec_request *out, char *err, size_t errlen)
{
    codec_type type = CODEC_TYPE_UNKNOWN;
    char type_err[160] = "";
    codec_status tst = resolve_type(f->v[F_TYPE], &type, type_err, sizeof type_err);
    size_t strbytes = type == CODEC_AUTHENTICATE ? auth_string_bytes(f) : 0;
    if (blobs || strbytes) {
        codec_owned *owned = malloc(sizeof *owned + strbytes);
        if (!owned) {
            msgbuf_unref(blobs);
            return fail(CODEC_MALFORMED, err, errlen, "out of memory");
        }
        owned->blobs = blobs;
        out->owned = owned;
    }
    codec_status rst = CODEC_OK;
    if (f->v[F_REF].len) {
        rst = check_blob(f, F_REF, lim->max_ref, err, errlen);
        if (rst == CODEC_OK)
            out->ref = f->v[F_REF];
    }
    out->type = type;
    if (tst != CODEC_OK)
        return fail(tst, err, errlen, "%s", type_err);
    if (rst != CODEC_OK)
        return rst;
    switch (type) {
    case CODEC_AUTHENTICATE:
        return decode_auth(f, lim, out, err, errlen);
    case CODEC_OPERATION:
        return take_blob(f, F_PAYLOAD, 0, &out->payload, err, errlen);
    case CODEC_CURSOR:
        return take_blob(f, F_CURSOR, lim->max_cursor, &out->cursor, err, errlen);
    case CODEC_SYNC_REQUEST:
        return decode_sync(f, out, err, errlen);
    default: /* join_document, leave_document, ping: no fields */
        return CODEC_OK;
    }
}

/* True if no array/object in v nests deeper than depth levels (v itself counting as one). */
static bool json_depth_ok(const json_t *v, size_t depth)
{
    if (!json_is_object(v) && !json_is_array(v))
        return true;
    if (depth == 0)
        return false;
    if (json_is_array(v)) {
        size_t idx;
        json_t *item;
        json_array_foreach(v, idx, item)
        {
            if (!json_depth_ok(item, depth - 1))
                return false;
        }
        return true;
    }
    const char *key;
    json_t *item;
    json_object_foreach((json_t *)v, key, item)
    {
        if (!json_depth_ok(item, depth - 1))
            return false;
    }
    return true;
}

codec_status codec_decode_text(const char *text, size_t len, const codec_limits *lim,
                               codec_request *out, char *err, size_t errlen)
{
    request_init(out);
    if (err && errlen)
        err[0] = '\0';
    lim = lim ? lim : &codec_default_limits;
    json_error_t jerr;
    /* JSON_ALLOW_NUL: "\u0000" is legal JSON; refusing it in tokens is a field rule, and a
     * payload string may carry it exactly as a msgpack str can. */
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (!root)
        return fail(CODEC_MALFORMED, err, errlen, "invalid JSON: %s", jerr.text);
    if (!json_is_object(root) || !json_depth_ok(root, depth_limit(lim))) {
        codec_status st =
            fail(CODEC_MALFORMED, err, errlen, "%s",
                 json_is_object(root) ? "nested too deeply" : "message must be a JSON object");
        json_decref(root);
        return st;
    }
    msgbuf *blobs = msgbuf_new(MSGBUF_BINARY, len < 4096 ? len + 16 : 4096);
    codec_fields f = {0};
    size_t off[F_COUNT] = {0};
    int rc = blobs ? 0 : -1;
    for (int k = 0; k < F_COUNT && rc == 0; k++) {
        json_t *v = json_object_get(root, field_names[k]);
        if (!v)
            continue;
        off[k] = blobs->len;
        rc = codec_json_to_msgpack(v, &blobs);
        f.v[k].len = blobs->len - off[k];
    }
    json_decref(root);
    if (rc != 0) {
        msgbuf_unref(blobs);
        return fail(CODEC_MALFORMED, err, errlen, "out of memory");
    }
    /* Pointers only now: the buffer may have moved while it grew. */
    for (int k = 0; k < F_COUNT; k++) {
        if (f.v[k].len)
            f.v[k].data = msgbuf_data(blobs) + off[k];
    }
    return decode_fields(&f, lim, blobs, out, err, errlen);
}

static int key_cmp(const void *a, const void *b)
{
    const codec_blob *x = a, *y = b;
    size_t n = x->len < y->len ? x->len : y->len;
    int c = memcmp(x->data, y->data, n);
    return c ? c : (x->len > y->len) - (x->len < y->len);
}

/* True if two of the n keys are equal. Small maps (the normal case) are compared pairwise in
 * place; large ones are sorted, in the array the caller allocated for them. */
static bool keys_duplicate(codec_blob *keys, size_t n)
{
    if (n <= 16) {
        for (size_t a = 0; a < n; a++) {
            for (size_t b = a + 1; b < n; b++) {
                if (key_cmp(&keys[a], &keys[b]) == 0)
                    return true;
            }
        }
        return false;
    }
    qsort(keys, n, sizeof *keys, key_cmp);
    for (size_t a = 1; a < n; a++) {
        if (key_cmp(&keys[a - 1], &keys[a]) == 0)
            return true;
    }
    return false;
}

/* Walks the top-level map: every key a valid str, every value structurally valid within depth,
 * no bytes left over. Pass-through fields are also checked strictly, once, here. */
static codec_status walk_top_map(const uint8_t *data, size_t len, const mpw_head *top, size_t depth,
                                 codec_fields *f, codec_blob *keys, char *err, size_t errlen)
{
    size_t pos = top->hdr;
    for (size_t k = 0; k < top->len; k++) {
        mpw_head key;
        if (mpw_read_head(data + pos, len - pos, &key) != MPW_OK || key.kind != MPK_STR)
            return fail(CODEC_MALFORMED, err, errlen, "message keys must be strings");
        if (!codec_utf8_valid(key.data, key.len))
            return fail(CODEC_MALFORMED, err, errlen, "message key is not valid UTF-8");
        keys[k] = (codec_blob){key.data, key.len};
        pos += key.hdr + key.len;
        int idx = field_index(key.data, key.len);
        bool passthrough = idx == F_REF || idx == F_PAYLOAD || idx == F_CURSOR;
        size_t n;
        mpw_status st =
            mpw_skip(data + pos, len - pos, depth - 1, passthrough ? MPW_STRICT : 0, &n);
        if (st == MPW_EXT_VALUE || st == MPW_KEY_TYPE || st == MPW_NONFINITE) {
            /* Valid msgpack JSON cannot show: a field error, once the value is known to be
             * well formed (the strict walk stopped early, so walk it again to its end). */
            if (idx >= 0)
                f->strict[idx] = st;
            st = mpw_skip(data + pos, len - pos, depth - 1, 0, &n);
        }
        if (st != MPW_OK)
            return fail(CODEC_MALFORMED, err, errlen, "invalid msgpack: %s", mpw_strerror(st));
        if (idx >= 0)
            f->v[idx] = (codec_blob){data + pos, n};
        pos += n;
    }
    if (pos != len)
        return fail(CODEC_MALFORMED, err, errlen, "extra bytes after the msgpack map");
    if (keys_duplicate(keys, top->len))
        return fail(CODEC_MALFORMED, err, errlen, "duplicate key in message");
    return CODEC_OK;
}

codec_status codec_decode_binary(const uint8_t *data, size_t len, const codec_limits *lim,
                                 codec_request *out, char *err, size_t errlen)
{
    request_init(out);
    if (err && errlen)
        err[0] = '\0';
    lim = lim ? lim : &codec_default_limits;
    mpw_head top;
    mpw_status hst = mpw_read_head(data, len, &top);
    if (hst != MPW_OK)
        return fail(CODEC_MALFORMED, err, errlen, "invalid msgpack: %s", mpw_strerror(hst));
    if (top.kind != MPK_MAP)
        return fail(CODEC_MALFORMED, err, errlen, "message must be a msgpack map");
    size_t depth = depth_limit(lim);
    if (depth == 0)
        return fail(CODEC_MALFORMED, err, errlen, "nested too deeply");
    /* top.len <= len / 2 (checked by the walker), so this array is bounded by the input. */
    codec_blob local[16];
    codec_blob *keys = top.len <= 16 ? local : malloc(top.len * sizeof *keys);
    if (!keys)
        return fail(CODEC_MALFORMED, err, errlen, "out of memory");
    codec_fields f = {0};
    codec_status st = walk_top_map(data, len, &top, depth, &f, keys, err, errlen);
    if (keys != local)
        free(keys);
    if (st != CODEC_OK)
        return st;
    return decode_fields(&f, lim, NULL, out, err, errlen);
}
