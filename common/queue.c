#include "relay/queue.h"

#include <pthread.h>
#include <stdlib.h>

struct queue {
    pthread_mutex_t lock;
    void **items;
    size_t capacity, head, len;
};

queue *queue_create(size_t capacity)
{
    queue *q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    q->items = calloc(capacity, sizeof *q->items);
    if (!q->items || pthread_mutex_init(&q->lock, NULL) != 0) {
        free(q->items);
        free(q);
        return NULL;
    }
    q->capacity = capacity;
    return q;
}

void queue_destroy(queue *q, void (*free_item)(void *item))
{
    if (!q)
        return;
    for (size_t i = 0; i < q->len; i++)
        if (free_item)
            free_item(q->items[(q->head + i) % q->capacity]);
    pthread_mutex_destroy(&q->lock);
    free(q->items);
    free(q);
}

int queue_push(queue *q, void *item)
{
    pthread_mutex_lock(&q->lock);
    int rc = -1;
    if (q->len < q->capacity) {
        q->items[(q->head + q->len) % q->capacity] = item;
        rc = q->len == 0;
        q->len++;
    }
    pthread_mutex_unlock(&q->lock);
    return rc;
}

size_t queue_pop_many(queue *q, void **out, size_t max)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->len < max ? q->len : max;
    for (size_t i = 0; i < n; i++) {
        out[i] = q->items[q->head];
        q->head = (q->head + 1) % q->capacity;
    }
    q->len -= n;
    pthread_mutex_unlock(&q->lock);
    return n;
}

size_t queue_length(queue *q)
{
    pthread_mutex_lock(&q->lock);
    size_t n = q->len;
    pthread_mutex_unlock(&q->lock);
    return n;
}
