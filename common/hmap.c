#include "relay/hmap.h"

#include <stdlib.h>
#include <string.h>

typedef struct hmap_entry {
    struct hmap_entry *next;
    uint64_t hash;
    void *value;
    size_t klen;
    unsigned char key[];
} hmap_entry;

struct hmap {
    hmap_entry **buckets;
    size_t n_buckets; /* power of two */
    size_t count;
};

uint64_t hmap_hash(const void *key, size_t klen)
{
    const unsigned char *p = key;
    uint64_t h = 14695981039346656037ULL;
    for (size_t i = 0; i < klen; i++) {
        h ^= p[i];
        h *= 1099511628211ULL;
    }
    return h;
}

hmap *hmap_create(void)
{
    hmap *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->n_buckets = 16;
    m->buckets = calloc(m->n_buckets, sizeof *m->buckets);
    if (!m->buckets) {
        free(m);
        return NULL;
    }
    return m;
}

void hmap_destroy(hmap *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_buckets; i++) {
        hmap_entry *e = m->buckets[i];
        while (e) {
            hmap_entry *next = e->next;
            free(e);
            e = next;
        }
    }
    free(m->buckets);
    free(m);
}

static hmap_entry **hmap_slot(const hmap *m, const void *key, size_t klen, uint64_t h)
{
    hmap_entry **pp = &m->buckets[h & (m->n_buckets - 1)];
    while (*pp && !((*pp)->hash == h && (*pp)->klen == klen && !memcmp((*pp)->key, key, klen)))
        pp = &(*pp)->next;
    return pp;
}

void *hmap_get(const hmap *m, const void *key, size_t klen)
{
    hmap_entry *e = *hmap_slot(m, key, klen, hmap_hash(key, klen));
    return e ? e->value : NULL;
}

/* Doubles the bucket array; on allocation failure the map keeps working, only slower. */
static void hmap_grow(hmap *m)
{
    size_t n = m->n_buckets * 2;
    hmap_entry **b = calloc(n, sizeof *b);
    if (!b)
        return;
    for (size_t i = 0; i < m->n_buckets; i++) {
        hmap_entry *e = m->buckets[i];
        while (e) {
            hmap_entry *next = e->next;
            e->next = b[e->hash & (n - 1)];
            b[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(m->buckets);
    m->buckets = b;
    m->n_buckets = n;
}

int hmap_put(hmap *m, const void *key, size_t klen, void *value)
{
    uint64_t h = hmap_hash(key, klen);
    hmap_entry **pp = hmap_slot(m, key, klen, h);
    if (*pp) {
        (*pp)->value = value;
        return 0;
    }
    hmap_entry *e = malloc(sizeof *e + klen);
    if (!e)
        return -1;
    e->next = NULL;
    e->hash = h;
    e->value = value;
    e->klen = klen;
    memcpy(e->key, key, klen);
    *pp = e;
    if (++m->count > m->n_buckets)
        hmap_grow(m);
    return 0;
}

void *hmap_del(hmap *m, const void *key, size_t klen)
{
    hmap_entry **pp = hmap_slot(m, key, klen, hmap_hash(key, klen));
    hmap_entry *e = *pp;
    if (!e)
        return NULL;
    void *value = e->value;
    *pp = e->next;
    free(e);
    m->count--;
    return value;
}

size_t hmap_count(const hmap *m)
{
    return m->count;
}

void hmap_each(const hmap *m, int (*fn)(const void *key, size_t klen, void *value, void *ud),
               void *ud)
{
    for (size_t i = 0; i < m->n_buckets; i++)
        for (hmap_entry *e = m->buckets[i]; e; e = e->next)
            if (fn(e->key, e->klen, e->value, ud))
                return;
}
