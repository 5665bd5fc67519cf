#include "channel.h"

#include <stdlib.h>
#include <string.h>

#include "relay/hmap.h"

struct channel_doc {
    char *document_id;
    ring *rings[2];
    channel_sub *subs; /* doubly linked list of local subscribers */
    size_t n_subs;
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
    free(doc->document_id);
    free(doc);
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
    channel_doc *doc = calloc(1, sizeof *doc);
    if (!doc)
        return NULL;
    doc->document_id = strdup(document_id);
    doc->rings[CHAN_DOCUMENT] = ring_create(reg->capacity[CHAN_DOCUMENT]);
    doc->rings[CHAN_PRESENCE] = ring_create(reg->capacity[CHAN_PRESENCE]);
    if (!doc->document_id || !doc->rings[0] || !doc->rings[1] ||
        hmap_put(reg->docs, document_id, strlen(document_id), doc) < 0) {
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
        sub->pos[k] = ring_head(doc->rings[k]);
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
    uint64_t at = ring_head(doc->rings[kind]);
    uint64_t origin = m->origin;
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
    if (!sub->doc)
        return NULL;
    return ring_peek(sub->doc->rings[kind], &sub->pos[kind], &sub->missed[kind]);
}

bool channel_superseded(const channel_sub *sub, chan_kind kind, const msgbuf *m)
{
    if (!m->coalesce || !sub->doc)
        return false;
    const ring *r = sub->doc->rings[kind];
    uint64_t head = ring_head(r);
    if (head - sub->pos[kind] <= ring_capacity(r) / 2)
        return false;
    for (uint64_t p = sub->pos[kind] + 1; p < head; p++) {
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
        uint64_t low = ring_head(doc->rings[k]);
        for (channel_sub *s = doc->subs; s; s = s->next)
            if (s->pos[k] < low)
                low = s->pos[k];
        ring_release_before(doc->rings[k], low);
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
        heads[k] = sub->doc ? ring_head(sub->doc->rings[k]) : 0;
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
