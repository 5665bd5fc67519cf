#include "relay/msgbuf.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

msgbuf *msgbuf_new(msgbuf_kind kind, size_t cap)
{
    msgbuf *mb = malloc(sizeof *mb + MSGBUF_HEADROOM + cap);
    if (!mb)
        return NULL;
    atomic_init(&mb->refs, 1);
    mb->kind = (uint8_t)kind;
    mb->origin = 0;
    mb->seq = 0;
    mb->coalesce = 0;
    mb->len = 0;
    mb->cap = cap;
    return mb;
}

msgbuf *msgbuf_from(msgbuf_kind kind, const void *data, size_t len)
{
    msgbuf *mb = msgbuf_new(kind, len);
    if (!mb)
        return NULL;
    memcpy(msgbuf_data(mb), data, len);
    mb->len = len;
    return mb;
}

int msgbuf_append(msgbuf **mbp, const void *data, size_t len)
{
    msgbuf *mb = *mbp;
    if (mb->len + len > mb->cap) {
        size_t cap = mb->cap ? mb->cap * 2 : 64;
        while (cap < mb->len + len)
            cap *= 2;
        msgbuf *grown = realloc(mb, sizeof *mb + MSGBUF_HEADROOM + cap);
        if (!grown)
            return -1;
        grown->cap = cap;
        *mbp = mb = grown;
    }
    memcpy(msgbuf_data(mb) + mb->len, data, len);
    mb->len += len;
    return 0;
}

msgbuf *msgbuf_ref(msgbuf *mb)
{
    atomic_fetch_add_explicit(&mb->refs, 1, memory_order_relaxed);
    return mb;
}

void msgbuf_unref(msgbuf *mb)
{
    if (mb && atomic_fetch_sub_explicit(&mb->refs, 1, memory_order_acq_rel) == 1)
        free(mb);
}
