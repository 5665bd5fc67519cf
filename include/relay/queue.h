/**
 * @file queue.h
 * A bounded, mutex-protected FIFO of pointers: the only way relay's two threads hand each
 * other work (WebSocket thread <-> Redis thread, see docs/ARCHITECTURE.md).
 *
 * The queue moves ownership: whatever is pushed belongs to the consumer once popped. Waking the
 * consumer is the caller's business (lws_cancel_service() or event_active()), so the queue stays
 * free of both event libraries.
 */
#ifndef RELAY_QUEUE_H
#define RELAY_QUEUE_H

#include <stddef.h>

typedef struct queue queue;

/* Returns a queue holding at most capacity items, or NULL when out of memory. */
queue *queue_create(size_t capacity);

/* Frees the queue; items still inside are passed to free_item (if not NULL). */
void queue_destroy(queue *q, void (*free_item)(void *item));

/* Appends item. Returns 1 when the queue was empty (the consumer may be asleep: wake it), 0
 * when it was not (a wake is already on its way: the consumer drains until empty), or -1 when
 * the queue is full (the caller keeps the item). Any thread. */
int queue_push(queue *q, void *item);

/* Moves up to max items into out, oldest first; returns how many. Any thread. */
size_t queue_pop_many(queue *q, void **out, size_t max);

/* Items currently queued (a snapshot). */
size_t queue_length(queue *q);

#endif
