/**
 * @file hmap.h
 * A chained hash map from byte-string keys to pointers, growing as it fills.
 *
 * The map copies keys; values are borrowed (the caller owns what they point to). Not
 * thread-safe: each map has one owning thread.
 */
#ifndef RELAY_HMAP_H
#define RELAY_HMAP_H

#include <stddef.h>
#include <stdint.h>

typedef struct hmap hmap;

hmap *hmap_create(void);
/* Frees the map and its keys, not the values. hmap_destroy(NULL) is a no-op. */
void hmap_destroy(hmap *m);

/* Returns the value stored under key, or NULL. */
void *hmap_get(const hmap *m, const void *key, size_t klen);

/* Stores value under key, replacing any previous value. Returns 0, or -1 when out of memory. */
int hmap_put(hmap *m, const void *key, size_t klen, void *value);

/* Removes key; returns its value, or NULL when absent. */
void *hmap_del(hmap *m, const void *key, size_t klen);

size_t hmap_count(const hmap *m);

/* Calls fn for each entry; fn must not modify the map. Stops early when fn returns non-zero. */
void hmap_each(const hmap *m, int (*fn)(const void *key, size_t klen, void *value, void *ud),
               void *ud);

/* FNV-1a, exposed for callers that hash the same keys (e.g. colors). */
uint64_t hmap_hash(const void *key, size_t klen);

#endif
