/* Conversions between msgpack blobs and jansson values (codec_msgpack_to_json,
 * codec_json_to_msgpack). Blobs are validated by the bounded walker before any jansson value is
 * built, so a conversion never allocates for sizes the bytes do not back. */
#include "codec_internal.h"
#include "relay/codec.h"

#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Standard base64 (RFC 4648 section 4, with '=' padding) of data as a JSON string. Returns a new
 * reference or NULL when out of memory. */
static json_t *base64_json(const uint8_t *data, size_t len)
{
    size_t out_len = (len + 2) / 3 * 4;
    char *out = malloc(out_len ? out_len : 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t k = 0; k < len; k += 3) {
        uint32_t v = (uint32_t)data[k] << 16;
        if (k + 1 < len)
            v |= (uint32_t)data[k + 1] << 8;
        if (k + 2 < len)
            v |= data[k + 2];
        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = k + 1 < len ? b64_alphabet[(v >> 6) & 63] : '=';
        out[o++] = k + 2 < len ? b64_alphabet[v & 63] : '=';
    }
    json_t *s = json_stringn_nocheck(out, o);
    free(out);
    return s;
}

/* Integer-valued JSON for a uint64: a JSON integer when jansson's json_int_t can hold it, else a
 * real (JSON numbers have no width; a reader gets the nearest double). */
json_t *codec_u64_json(uint64_t v)
{
    return v <= (uint64_t)INT64_MAX ? json_integer((json_int_t)v) : json_real((double)v);
}

static json_t *mp_to_json(const uint8_t *p, size_t avail, size_t *used);

/* Fills a JSON container from h's elements, which start at p + h->hdr. */
static json_t *mp_container_to_json(const uint8_t *p, size_t avail, const mpw_head *h, size_t *used)
{
    bool map = h->kind == MPK_MAP;
    json_t *out = map ? json_object() : json_array();
    size_t pos = h->hdr;
    for (size_t k = 0; out && k < h->len; k++) {
        mpw_head key = {0};
        if (map) {
            mpw_read_head(p + pos, avail - pos, &key); /* validated: a str */
            pos += key.hdr + key.len;
        }
        size_t n = 0;
        json_t *v = mp_to_json(p + pos, avail - pos, &n);
        pos += n;
        int rc = map ? json_object_setn_new_nocheck(out, (const char *)key.data, key.len, v)
                     : json_array_append_new(out, v);
        if (!v || rc != 0) {
            json_decref(out);
            out = NULL;
        }
    }
    *used = pos;
    return out;
}

/* Converts one value already checked by mpw_skip(MPW_STRICT). Returns NULL only when out of
 * memory. */
static json_t *mp_to_json(const uint8_t *p, size_t avail, size_t *used)
{
    mpw_head h;
    mpw_read_head(p, avail, &h);
    *used = h.hdr;
    switch (h.kind) {
    case MPK_NIL:
        return json_null();
    case MPK_BOOL:
        return json_boolean(h.b);
    case MPK_UINT:
        return codec_u64_json(h.u);
    case MPK_INT:
        return json_integer((json_int_t)h.i);
    case MPK_FLOAT:
        return json_real(h.f);
    case MPK_STR:
        *used += h.len;
        return json_stringn_nocheck((const char *)h.data, h.len);
    case MPK_BIN:
        *used += h.len;
        return json_pack("{s:o}", "$base64", base64_json(h.data, h.len));
    case MPK_ARRAY:
    case MPK_MAP:
        return mp_container_to_json(p, avail, &h, used);
    case MPK_EXT:
        break;
    }
    return NULL; /* unreachable after a strict check */
}

json_t *codec_msgpack_to_json(const uint8_t *data, size_t len, char *err, size_t errlen)
{
    mpw_status st = mpw_check_value(data, len, CODEC_HARD_MAX_DEPTH, MPW_STRICT);
    if (st != MPW_OK) {
        snprintf(err, errlen, "%s", mpw_strerror(st));
        return NULL;
    }
    size_t used;
    json_t *v = mp_to_json(data, len, &used);
    if (!v)
        snprintf(err, errlen, "out of memory");
    return v;
}

static int json_pack_value(msgpack_packer *pk, const json_t *v)
{
    switch (json_typeof(v)) {
    case JSON_OBJECT: {
        const char *key;
        size_t key_len;
        json_t *item;
        int rc = msgpack_pack_map(pk, json_object_size(v));
        json_object_keylen_foreach((json_t *)v, key, key_len, item)
        {
            rc |= msgpack_pack_str_with_body(pk, key, key_len);
            rc |= json_pack_value(pk, item);
        }
        return rc;
    }
    case JSON_ARRAY: {
        size_t idx;
        json_t *item;
        int rc = msgpack_pack_array(pk, json_array_size(v));
        json_array_foreach(v, idx, item)
        {
            rc |= json_pack_value(pk, item);
        }
        return rc;
    }
    case JSON_STRING:
        return msgpack_pack_str_with_body(pk, json_string_value(v), json_string_length(v));
    case JSON_INTEGER: {
        json_int_t n = json_integer_value(v);
        return n >= 0 ? msgpack_pack_uint64(pk, (uint64_t)n) : msgpack_pack_int64(pk, n);
    }
    case JSON_REAL:
        return msgpack_pack_double(pk, json_real_value(v));
    case JSON_TRUE:
        return msgpack_pack_true(pk);
    case JSON_FALSE:
        return msgpack_pack_false(pk);
    case JSON_NULL:
        return msgpack_pack_nil(pk);
    }
    return -1;
}

int codec_json_to_msgpack(const json_t *value, msgbuf **out)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, out, codec_msgbuf_write);
    return json_pack_value(&pk, value) ? -1 : 0;
}
