#include "relay/ring.h"

#include <stdlib.h>

struct ring {
    size_t capacity;
    uint64_t head; /* position of the next message; messages [head - capacity, head) retained */
    msgbuf **slots;
};

ring *ring_create(size_t capacity)
{
    if (capacity == 0)
        return NULL;
    ring *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->slots = calloc(capacity, sizeof *r->slots);
    if (!r->slots) {
        free(r);
        return NULL;
    }
    r->capacity = capacity;
    return r;
}

void ring_destroy(ring *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->capacity; i++)
        msgbuf_unref(r->slots[i]);
    free(r->slots);
    free(r);
}

void ring_publish(ring *r, msgbuf *mb)
{
    msgbuf **slot = &r->slots[r->head % r->capacity];
    msgbuf_unref(*slot);
    *slot = mb;
    r->head++;
}

uint64_t ring_head(const ring *r)
{
    return r->head;
}

size_t ring_capacity(const ring *r)
{
    return r->capacity;
}

void ring_release_before(ring *r, uint64_t pos)
{
    uint64_t oldest = r->head > r->capacity ? r->head - r->capacity : 0;
    if (pos > r->head)
        pos = r->head;
    for (uint64_t p = oldest; p < pos; p++) {
        msgbuf **slot = &r->slots[p % r->capacity];
        msgbuf_unref(*slot);
        *slot = NULL;
    }
}

msgbuf *ring_at(const ring *r, uint64_t pos)
{
    uint64_t oldest = r->head > r->capacity ? r->head - r->capacity : 0;
    return pos >= oldest && pos < r->head ? r->slots[pos % r->capacity] : NULL;
}

msgbuf *ring_peek(const ring *r, uint64_t *pos, uint64_t *missed)
{
    if (*pos >= r->head)
        return NULL;
    uint64_t oldest = r->head > r->capacity ? r->head - r->capacity : 0;
    if (*pos < oldest) {
        *missed += oldest - *pos;
        *pos = oldest;
    }
    return r->slots[*pos % r->capacity];
}
