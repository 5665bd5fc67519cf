/* Bounded msgpack walker and UTF-8 check (see codec_internal.h). Nothing here allocates: the
 * walker reads headers in place and every size it reports has been checked against the bytes
 * that are really there. */
#include "codec_internal.h"

#include <math.h>
#include <string.h>

static uint64_t be_read(const uint8_t *p, size_t n)
{
    uint64_t v = 0;
    for (size_t k = 0; k < n; k++)
        v = (v << 8) | p[k];
    return v;
}

/* Sets a signed value, folding non-negative ones into MPK_UINT so callers see one kind per
 * mathematical sign whatever width the encoder chose. */
static void head_set_int(mpw_head *h, int64_t v)
{
    if (v >= 0) {
        h->kind = MPK_UINT;
        h->u = (uint64_t)v;
    } else {
        h->kind = MPK_INT;
        h->i = v;
    }
}

/* Body of str/bin/ext: the size field is `width` bytes after the tag (plus a type byte for ext),
 * and the body must fit in what is left. */
static mpw_status head_body(const uint8_t *p, size_t avail, size_t width, bool ext, mpw_head *h)
{
    size_t hdr = 1 + width + (ext ? 1 : 0);
    if (avail < hdr)
        return MPW_TRUNCATED;
    uint64_t n = be_read(p + 1, width);
    if (n > avail - hdr)
        return MPW_TRUNCATED;
    if (ext)
        h->ext_type = (int8_t)p[1 + width];
    h->hdr = hdr;
    h->len = (size_t)n;
    h->data = p + hdr;
    return MPW_OK;
}

/* fixext N: tag, type byte, N bytes. */
static mpw_status head_fixext(const uint8_t *p, size_t avail, size_t n, mpw_head *h)
{
    if (avail < 2 || n > avail - 2)
        return MPW_TRUNCATED;
    h->kind = MPK_EXT;
    h->ext_type = (int8_t)p[1];
    h->hdr = 2;
    h->len = n;
    h->data = p + 2;
    return MPW_OK;
}

/* Array/map: each element needs at least one byte, so n elements need n bytes (2n for a map).
 * This is the check that refuses 0xdd ff ff ff ff before anything could be reserved. */
static mpw_status head_count(const uint8_t *p, size_t avail, size_t width, bool map, mpw_head *h)
{
    size_t hdr = 1 + width;
    if (avail < hdr)
        return MPW_TRUNCATED;
    uint64_t n = width ? be_read(p + 1, width) : (uint64_t)(p[0] & 0x0f);
    uint64_t left = avail - hdr;
    if (n > (map ? left / 2 : left))
        return MPW_TRUNCATED;
    h->kind = map ? MPK_MAP : MPK_ARRAY;
    h->hdr = hdr;
    h->len = (size_t)n;
    return MPW_OK;
}

/* Fixed-size scalars: tag plus width bytes. */
static mpw_status head_scalar(const uint8_t *p, size_t avail, mpw_head *h)
{
    static const uint8_t widths[] = {[0xca - 0xca] = 4, [0xcb - 0xca] = 8, [0xcc - 0xca] = 1,
                                     [0xcd - 0xca] = 2, [0xce - 0xca] = 4, [0xcf - 0xca] = 8,
                                     [0xd0 - 0xca] = 1, [0xd1 - 0xca] = 2, [0xd2 - 0xca] = 4,
                                     [0xd3 - 0xca] = 8};
    size_t width = widths[p[0] - 0xca];
    if (avail < 1 + width)
        return MPW_TRUNCATED;
    uint64_t raw = be_read(p + 1, width);
    h->hdr = 1 + width;
    switch (p[0]) {
    case 0xca: {
        uint32_t bits = (uint32_t)raw;
        float f;
        memcpy(&f, &bits, sizeof f);
        h->kind = MPK_FLOAT;
        h->f = f;
        break;
    }
    case 0xcb:
        h->kind = MPK_FLOAT;
        memcpy(&h->f, &raw, sizeof h->f);
        break;
    case 0xcc:
    case 0xcd:
    case 0xce:
    case 0xcf:
        h->kind = MPK_UINT;
        h->u = raw;
        break;
    case 0xd0:
        head_set_int(h, (int8_t)raw);
        break;
    case 0xd1:
        head_set_int(h, (int16_t)raw);
        break;
    case 0xd2:
        head_set_int(h, (int32_t)raw);
        break;
    default: /* 0xd3 */
        head_set_int(h, (int64_t)raw);
        break;
    }
    return MPW_OK;
}

mpw_status mpw_read_head(const uint8_t *p, size_t avail, mpw_head *h)
{
    memset(h, 0, sizeof *h);
    if (avail == 0)
        return MPW_TRUNCATED;
    uint8_t t = p[0];
    h->hdr = 1;
    if (t <= 0x7f) {
        h->kind = MPK_UINT;
        h->u = t;
        return MPW_OK;
    }
    if (t >= 0xe0) {
        head_set_int(h, (int8_t)t);
        return MPW_OK;
    }
    if (t <= 0x8f)
        return head_count(p, avail, 0, true, h);
    if (t <= 0x9f)
        return head_count(p, avail, 0, false, h);
    if (t <= 0xbf) {
        size_t n = t & 0x1f;
        if (n > avail - 1)
            return MPW_TRUNCATED;
        h->kind = MPK_STR;
        h->len = n;
        h->data = p + 1;
        return MPW_OK;
    }
    switch (t) {
    case 0xc0:
        h->kind = MPK_NIL;
        return MPW_OK;
    case 0xc1:
        return MPW_INVALID;
    case 0xc2:
    case 0xc3:
        h->kind = MPK_BOOL;
        h->b = t == 0xc3;
        return MPW_OK;
    case 0xc4:
    case 0xc5:
    case 0xc6:
        h->kind = MPK_BIN;
        return head_body(p, avail, (size_t)1 << (t - 0xc4), false, h);
    case 0xc7:
    case 0xc8:
    case 0xc9:
        h->kind = MPK_EXT;
        return head_body(p, avail, (size_t)1 << (t - 0xc7), true, h);
    case 0xd4:
    case 0xd5:
    case 0xd6:
    case 0xd7:
    case 0xd8:
        return head_fixext(p, avail, (size_t)1 << (t - 0xd4), h);
    case 0xd9:
    case 0xda:
    case 0xdb:
        h->kind = MPK_STR;
        return head_body(p, avail, (size_t)1 << (t - 0xd9), false, h);
    case 0xdc:
        return head_count(p, avail, 2, false, h);
    case 0xdd:
        return head_count(p, avail, 4, false, h);
    case 0xde:
        return head_count(p, avail, 2, true, h);
    case 0xdf:
        return head_count(p, avail, 4, true, h);
    default: /* 0xca..0xd3 */
        return head_scalar(p, avail, h);
    }
}

/* Checks one non-container value for the rules that apply to it. */
static mpw_status check_scalar(const mpw_head *h, unsigned flags)
{
    if (h->kind == MPK_STR && !codec_utf8_valid(h->data, h->len))
        return MPW_BAD_UTF8;
    if (flags & MPW_STRICT) {
        if (h->kind == MPK_EXT)
            return MPW_EXT_VALUE;
        if (h->kind == MPK_FLOAT && !isfinite(h->f))
            return MPW_NONFINITE;
    }
    return MPW_OK;
}

mpw_status mpw_skip(const uint8_t *p, size_t avail, size_t depth, unsigned flags, size_t *used)
{
    mpw_head h;
    mpw_status st = mpw_read_head(p, avail, &h);
    if (st != MPW_OK)
        return st;
    if (h.kind != MPK_ARRAY && h.kind != MPK_MAP) {
        *used = h.hdr + ((h.kind == MPK_STR || h.kind == MPK_BIN || h.kind == MPK_EXT) ? h.len : 0);
        return check_scalar(&h, flags);
    }
    if (depth == 0)
        return MPW_TOO_DEEP;
    size_t pos = h.hdr;
    size_t items = h.kind == MPK_MAP ? h.len * 2 : h.len;
    for (size_t k = 0; k < items; k++) {
        size_t n;
        if ((flags & MPW_STRICT) && h.kind == MPK_MAP && k % 2 == 0) {
            mpw_head key; /* a key that does not even parse is reported by mpw_skip below */
            if (mpw_read_head(p + pos, avail - pos, &key) == MPW_OK && key.kind != MPK_STR)
                return MPW_KEY_TYPE;
        }
        st = mpw_skip(p + pos, avail - pos, depth - 1, flags, &n);
        if (st != MPW_OK)
            return st;
        pos += n;
    }
    *used = pos;
    return MPW_OK;
}

mpw_status mpw_check_value(const uint8_t *data, size_t len, size_t depth, unsigned flags)
{
    size_t used;
    mpw_status st = mpw_skip(data, len, depth, flags, &used);
    if (st == MPW_OK && used != len)
        return MPW_TRUNCATED;
    return st;
}

const char *mpw_strerror(mpw_status st)
{
    switch (st) {
    case MPW_OK:
        return "ok";
    case MPW_TRUNCATED:
        return "msgpack value truncated or followed by extra bytes";
    case MPW_INVALID:
        return "invalid msgpack byte 0xc1";
    case MPW_TOO_DEEP:
        return "nested too deeply";
    case MPW_BAD_UTF8:
        return "string is not valid UTF-8";
    case MPW_EXT_VALUE:
        return "msgpack ext values are not allowed";
    case MPW_KEY_TYPE:
        return "map keys must be strings";
    case MPW_NONFINITE:
        return "NaN and infinite numbers are not allowed";
    }
    return "invalid msgpack";
}

/* Length of the UTF-8 sequence starting with byte c, or 0 if c cannot start one. */
static size_t utf8_seq_len(uint8_t c)
{
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        return 2;
    if (c >= 0xe0 && c <= 0xef)
        return 3;
    if (c >= 0xf0 && c <= 0xf4)
        return 4;
    return 0;
}

bool codec_utf8_valid(const uint8_t *s, size_t len)
{
    size_t k = 0;
    while (k < len) {
        if (s[k] < 0x80) { /* fast path for ASCII, the common case */
            k++;
            continue;
        }
        size_t n = utf8_seq_len(s[k]);
        if (n == 0 || n > len - k)
            return false;
        uint32_t cp = s[k] & (0xff >> (n + 1));
        for (size_t j = 1; j < n; j++) {
            if ((s[k + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[k + j] & 0x3f);
        }
        /* Overlong forms, UTF-16 surrogates and values past U+10FFFF are not UTF-8. */
        if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
            (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        k += n;
    }
    return true;
}

int codec_msgbuf_write(void *data, const char *buf, size_t len)
{
    return msgbuf_append((msgbuf **)data, buf, len);
}
