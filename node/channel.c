#include "channel.h"

#include <stdlib.h>
#include <string.h>

#include "relay/hmap.h"

/* A document's rings exist only while they hold messages someone has yet to read: the trim
 * frees a ring every subscriber has caught up with, and the next publish makes a new one. The
 * empty slot arrays (8 KiB + 2 KiB) are what an idle document would otherwise cost, about 1 KiB
 * per connection in documents of ten (docs/BENCHMARKS.md, memory). Subscriber positions are
 * absolute: base[k] is the position of a ring's first message, so they carry on across rings. */
struct channel_doc {
    ring *rings[2];    /* NULL while empty and fully read */
    uint64_t base[2];  /* absolute position of ring position 0 */
    channel_sub *subs; /* doubly linked list of local subscribers */
    size_t n_subs;
    char document_id[];
};

struct channel_registry {
    hmap *docs;
    size_t capacity[2];
    channel_wake_fn wake;
    void *ud;
};

channel_registry *channel_registry_create(size_t document_capacity, size_t presence_capacity,
                                          channel_wake_fn wake, void *ud)
{
    channel_registry *reg = calloc(1, sizeof *reg);
    if (!reg)
        return NULL;
    reg->docs = hmap_create();
    if (!reg->docs) {
        free(reg);
        return NULL;
    }
    reg->capacity[CHAN_DOCUMENT] = document_capacity;
    reg->capacity[CHAN_PRESENCE] = presence_capacity;
    reg->wake = wake;
    reg->ud = ud;
    return reg;
}

static void channel_doc_free(channel_doc *doc)
{
    if (!doc)
        return;
    ring_destroy(doc->rings[0]);
    ring_destroy(doc->rings[1]);
    free(doc);
}

/* Absolute position the next message of kind k will get. */
static uint64_t channel_doc_head(const channel_doc *doc, int k)
{
    return doc->base[k] + (doc->rings[k] ? ring_head(doc->rings[k]) : 0);
}

static int channel_doc_free_cb(const void *key, size_t klen, void *value, void *ud)
{
    (void)key, (void)klen, (void)ud;
    channel_doc_free(value);
    return 0;
}

void channel_registry_destroy(channel_registry *reg)
{
    if (!reg)
        return;
    hmap_each(reg->docs, channel_doc_free_cb, NULL);
    hmap_destroy(reg->docs);
    free(reg);
}

static channel_doc *channel_doc_new(channel_registry *reg, const char *document_id)
{
    size_t len = strlen(document_id);
    channel_doc *doc = calloc(1, sizeof *doc + len + 1);
    if (!doc)
        return NULL;
    memcpy(doc->document_id, document_id, len + 1);
    if (hmap_put(reg->docs, document_id, len, doc) < 0) {
        channel_doc_free(doc);
        return NULL;
    }
    return doc;
}

int channel_subscribe(channel_registry *reg, const char *document_id, channel_sub *sub)
{
    channel_doc *doc = hmap_get(reg->docs, document_id, strlen(document_id));
    int created = 0;
    if (!doc) {
        doc = channel_doc_new(reg, document_id);
        if (!doc)
            return -1;
        created = 1;
    }
    sub->doc = doc;
    for (int k = 0; k < 2; k++) {
        sub->pos[k] = channel_doc_head(doc, k);
        sub->missed[k] = 0;
    }
    sub->prev = NULL;
    sub->next = doc->subs;
    if (doc->subs)
        doc->subs->prev = sub;
    doc->subs = sub;
    doc->n_subs++;
    return created;
}

int channel_unsubscribe(channel_registry *reg, channel_sub *sub)
{
    channel_doc *doc = sub->doc;
    if (!doc)
        return 0;
    if (sub->prev)
        sub->prev->next = sub->next;
    else
        doc->subs = sub->next;
    if (sub->next)
        sub->next->prev = sub->prev;
    sub->prev = sub->next = NULL;
    sub->doc = NULL;
    if (--doc->n_subs > 0)
        return 0;
    hmap_del(reg->docs, doc->document_id, strlen(doc->document_id));
    channel_doc_free(doc);
    return 1;
}

void channel_publish(channel_registry *reg, const char *document_id, chan_kind kind, msgbuf *m)
{
    channel_doc *doc = hmap_get(reg->docs, document_id, strlen(document_id));
    if (!doc) {
        msgbuf_unref(m);
        return;
    }
    uint64_t at = channel_doc_head(doc, kind);
    uint64_t origin = m->origin;
    if (!doc->rings[kind])
        doc->rings[kind] = ring_create(reg->capacity[kind]);
    if (!doc->rings[kind]) {
        /* Out of memory: the message is lost to every subscriber, and counted as missed so
         * each is told it lagged (read + missed still equals published). */
        msgbuf_unref(m);
        doc->base[kind]++;
        for (channel_sub *s = doc->subs; s; s = s->next) {
            s->pos[kind]++;
            if (!(origin && s->self == origin))
                s->missed[kind]++;
        }
        return;
    }
    ring_publish(doc->rings[kind], m);
    for (channel_sub *s = doc->subs; s; s = s->next) {
        if (origin && s->self == origin && s->pos[kind] == at)
            s->pos[kind]++;
        else
            reg->wake(s, reg->ud);
    }
}

msgbuf *channel_peek(channel_sub *sub, chan_kind kind)
{
    const channel_doc *doc = sub->doc;
    if (!doc || !doc->rings[kind])
        return NULL; /* no ring: everything published has been read */
    uint64_t rel = sub->pos[kind] - doc->base[kind];
    msgbuf *m = ring_peek(doc->rings[kind], &rel, &sub->missed[kind]);
    sub->pos[kind] = doc->base[kind] + rel;
    return m;
}

bool channel_superseded(const channel_sub *sub, chan_kind kind, const msgbuf *m)
{
    if (!m->coalesce || !sub->doc || !sub->doc->rings[kind])
        return false;
    const ring *r = sub->doc->rings[kind];
    uint64_t head = ring_head(r), pos = sub->pos[kind] - sub->doc->base[kind];
    if (head - pos <= ring_capacity(r) / 2)
        return false;
    for (uint64_t p = pos + 1; p < head; p++) {
        const msgbuf *later = ring_at(r, p);
        if (later && later->coalesce == m->coalesce)
            return true;
    }
    return false;
}

static int channel_trim_doc(const void *key, size_t klen, void *value, void *ud)
{
    (void)key, (void)klen, (void)ud;
    channel_doc *doc = value;
    for (int k = 0; k < 2; k++) {
        if (!doc->rings[k])
            continue;
        uint64_t head = channel_doc_head(doc, k), low = head;
        for (channel_sub *s = doc->subs; s; s = s->next)
            if (s->pos[k] < low)
                low = s->pos[k];
        if (low == head) { /* all read: the ring goes, positions carry on from base */
            doc->base[k] = head;
            ring_destroy(doc->rings[k]);
            doc->rings[k] = NULL;
        } else {
            ring_release_before(doc->rings[k], low - doc->base[k]);
        }
    }
    return 0;
}

void channel_registry_trim(channel_registry *reg)
{
    hmap_each(reg->docs, channel_trim_doc, NULL);
}

void channel_heads(const channel_sub *sub, uint64_t heads[2])
{
    for (int k = 0; k < 2; k++)
        heads[k] = sub->doc ? channel_doc_head(sub->doc, k) : 0;
}

const char *channel_doc_id(const channel_doc *doc)
{
    return doc ? doc->document_id : NULL;
}

size_t channel_registry_count(const channel_registry *reg)
{
    return hmap_count(reg->docs);
}

void channel_each_sub(channel_registry *reg, const char *document_id,
                      void (*fn)(channel_sub *sub, void *ud), void *ud)
{
    channel_doc *doc = hmap_get(reg->docs, document_id, strlen(document_id));
    for (channel_sub *s = doc ? doc->subs : NULL, *next; s; s = next) {
        next = s->next;
        fn(s, ud);
    }
}
