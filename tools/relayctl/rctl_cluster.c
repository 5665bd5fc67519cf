/* relayctl's cluster commands: stats, nodes, documents, presence and watch, each reading the
 * keys described in docs/REDIS.md and printing a table or one line of JSON. */
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bridge_wire.h"
#include "rctl.h"
#include "relay/codec.h"
#include "relay/hmap.h"

/* ---- stats ------------------------------------------------------------------------------ */

/* The per-node table's columns: header and the field's place in a node's /stats JSON. */
static const struct {
    const char *head, *group, *key;
} stat_cols[] = {
    {"ACTIVE", "connections", "active"}, {"PEAK", "connections", "peak"},
    {"TOTAL", "connections", "total"},   {"AUTH", "connections", "authenticated"},
    {"JOINED", "connections", "joined"}, {"MSGS_IN", "messages", "in"},
    {"MSGS_OUT", "messages", "out"},     {"REJECTED", "messages", "rejected"},
    {"LAG_DROPS", NULL, "lag_drops"},    {"AUTH_FAILS", NULL, "auth_failures"},
    {"DOCS", NULL, "documents"},
};
#define STAT_COLS (sizeof stat_cols / sizeof stat_cols[0])

static json_int_t stat_get(const json_t *stats, size_t col)
{
    const json_t *g = stat_cols[col].group ? json_object_get(stats, stat_cols[col].group) : stats;
    return json_integer_value(json_object_get(g, stat_cols[col].key));
}

static void stat_row(rctl_table *t, const char *name, const json_t *stats)
{
    char num[STAT_COLS][24];
    const char *cells[STAT_COLS + 1] = {name};
    for (size_t i = 0; i < STAT_COLS; i++) {
        snprintf(num[i], sizeof num[i], "%lld", (long long)stat_get(stats, i));
        cells[i + 1] = num[i];
    }
    rctl_table_row(t, cells);
}

static size_t stat_dead(const rctl_cluster *c)
{
    size_t dead = 0;
    for (size_t i = 0; i < c->n; i++)
        dead += !c->nodes[i].live;
    return dead;
}

/* Prints the cluster's stats: one JSON line, or a summary and the per-node table. */
static int stats_print(const rctl_cluster *c, bool json)
{
    json_t *doc = rctl_cluster_stats_json(c);
    if (json || !doc)
        return rctl_print_json(doc);
    json_t *nodes = json_object_get(doc, "nodes"), *totals = json_object_get(doc, "totals");
    printf("cluster: %zu live node(s), %lld active connection(s), peak %lld\n",
           json_array_size(nodes), (long long)stat_get(totals, 0),
           (long long)json_integer_value(json_object_get(doc, "peak_concurrent")));
    if (stat_dead(c))
        printf("(%zu listed node(s) not live and not counted; see `relayctl nodes`)\n",
               stat_dead(c));
    rctl_table *t = rctl_table_create(STAT_COLS + 1);
    const char *head[STAT_COLS + 1] = {"NODE"};
    for (size_t i = 0; i < STAT_COLS; i++)
        head[i + 1] = stat_cols[i].head;
    rctl_table_row(t, head);
    size_t i;
    json_t *n;
    json_array_foreach(nodes, i, n)
    {
        stat_row(t, json_string_value(json_object_get(n, "node_id")), n);
    }
    stat_row(t, "TOTAL", totals);
    rctl_table_print(t, stdout);
    rctl_table_destroy(t);
    json_decref(doc);
    return fflush(stdout) == 0 ? RCTL_OK : RCTL_FAIL;
}

int rctl_cmd_stats(rctl *o)
{
    rctl_cluster c;
    if (rctl_cluster_load(o, &c) < 0)
        return RCTL_FAIL;
    int rc = stats_print(&c, o->json);
    rctl_cluster_free(&c);
    return rc;
}

/* ---- nodes ------------------------------------------------------------------------------ */

static const char *node_state(const rctl_node *n)
{
    if (n->live)
        return "live";
    return n->cleaning ? "dead (cleanup running)" : "dead (awaiting cleanup)";
}

static int nodes_json(const rctl_cluster *c)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < c->n; i++) {
        const rctl_node *n = &c->nodes[i];
        json_t *active = json_object_get(json_object_get(n->stats, "connections"), "active");
        json_array_append_new(
            arr, json_pack("{s:s, s:b, s:I, s:I, s:I, s:O?, s:b}", "node_id", n->id, "live",
                           n->live, "last_heartbeat_ms", (json_int_t)n->beat_ms, "age_ms",
                           (json_int_t)n->age_ms, "liveness_ttl_ms", (json_int_t)n->ttl_ms,
                           "active", active, "cleanup_running", n->cleaning));
    }
    return rctl_print_json(json_pack("{s:I, s:o}", "now_ms", (json_int_t)c->now_ms, "nodes", arr));
}

int rctl_cmd_nodes(rctl *o)
{
    rctl_cluster c;
    if (rctl_cluster_load(o, &c) < 0)
        return RCTL_FAIL;
    if (o->json) {
        int rc = nodes_json(&c);
        rctl_cluster_free(&c);
        return rc;
    }
    rctl_table *t = rctl_table_create(4);
    rctl_table_row(t, (const char *const[]){"NODE", "LAST_HEARTBEAT", "ACTIVE", "STATE"});
    for (size_t i = 0; i < c.n; i++) {
        const rctl_node *n = &c.nodes[i];
        char age[32], active[24] = "-";
        snprintf(age, sizeof age, "%.1fs", (double)n->age_ms / 1000.0);
        const json_t *a = json_object_get(json_object_get(n->stats, "connections"), "active");
        if (a)
            snprintf(active, sizeof active, "%lld", (long long)json_integer_value(a));
        rctl_table_row(t, (const char *const[]){n->id, age, active, node_state(n)});
    }
    if (c.n == 0)
        printf("no nodes registered under %snodes\n", o->prefix);
    else
        rctl_table_print(t, stdout);
    rctl_table_destroy(t);
    rctl_cluster_free(&c);
    return fflush(stdout) == 0 ? RCTL_OK : RCTL_FAIL;
}

/* ---- documents -------------------------------------------------------------------------- */

typedef struct doc_row {
    char id[129];
    json_t *nodes; /* node ids holding local sessions of the document */
    long long local;
} doc_row;

typedef struct doc_list {
    hmap *map;
    doc_row **rows;
    size_t n, cap;
} doc_list;

/* Records one "doc\tsession" entry of node's members set. Returns 0 or -1 (out of memory). */
static int docs_add(doc_list *l, const char *node, const redisReply *e)
{
    const char *tab = e->type == REDIS_REPLY_STRING ? memchr(e->str, '\t', e->len) : NULL;
    size_t len = tab ? (size_t)(tab - e->str) : 0;
    if (!codec_document_id_valid(e->str, len))
        return 0; /* not an entry the node writes */
    doc_row *d = hmap_get(l->map, e->str, len);
    if (!d) {
        if (l->n == l->cap) {
            size_t cap = l->cap ? l->cap * 2 : 32;
            doc_row **grown = realloc(l->rows, cap * sizeof *grown);
            if (!grown)
                return -1;
            l->rows = grown, l->cap = cap;
        }
        if (!(d = calloc(1, sizeof *d)) || !(d->nodes = json_array())) {
            free(d);
            return -1;
        }
        memcpy(d->id, e->str, len);
        l->rows[l->n++] = d;
        if (hmap_put(l->map, e->str, len, d) < 0)
            return -1;
    }
    size_t last = json_array_size(d->nodes);
    if (!last || strcmp(json_string_value(json_array_get(d->nodes, last - 1)), node) != 0)
        json_array_append_new(d->nodes, json_string(node));
    d->local++;
    return 0;
}

static int docs_cmp(const void *a, const void *b)
{
    return strcmp((*(doc_row *const *)a)->id, (*(doc_row *const *)b)->id);
}

static void docs_free(doc_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        json_decref(l->rows[i]->nodes);
        free(l->rows[i]);
    }
    free(l->rows);
    hmap_destroy(l->map);
}

/* Gathers the documents of every live node's members set (one pipeline). */
static int docs_collect(rctl *o, const rctl_cluster *c, doc_list *l)
{
    size_t q = 0;
    for (size_t i = 0; i < c->n; i++)
        if (c->nodes[i].live && ++q)
            redisAppendCommand(o->rc, "SMEMBERS %snode:%s:members", o->prefix, c->nodes[i].id);
    redisReply **r = rctl_pipeline(o, q);
    if (!r)
        return -1;
    int rc = 0;
    for (size_t i = 0, k = 0; i < c->n && rc == 0; i++) {
        if (!c->nodes[i].live)
            continue;
        for (size_t j = 0; r[k]->type == REDIS_REPLY_ARRAY && j < r[k]->elements && rc == 0; j++)
            rc = docs_add(l, c->nodes[i].id, r[k]->element[j]);
        k++;
    }
    rctl_replies_free(r, q);
    if (rc < 0)
        fprintf(stderr, "relayctl: out of memory\n");
    qsort(l->rows, l->n, sizeof *l->rows, docs_cmp);
    return rc;
}

/* One JSON object per document, with what Redis holds for it (one pipeline). */
static json_t *docs_describe(rctl *o, const doc_list *l)
{
    for (size_t i = 0; i < l->n; i++) {
        const char *p = o->prefix, *d = l->rows[i]->id;
        redisAppendCommand(o->rc, "HLEN %s{%s}:presence", p, d);
        redisAppendCommand(o->rc, "GET %s{%s}:seq", p, d);
        redisAppendCommand(o->rc, "GET %s{%s}:epoch", p, d);
        redisAppendCommand(o->rc, "LLEN %s{%s}:hist", p, d);
        redisAppendCommand(o->rc, "TTL %s{%s}:epoch", p, d);
    }
    redisReply **r = rctl_pipeline(o, 5 * l->n);
    json_t *arr = r ? json_array() : NULL;
    for (size_t i = 0; arr && i < l->n; i++) {
        redisReply **x = r + 5 * i;
        json_array_append_new(
            arr,
            json_pack("{s:s, s:I, s:I, s:O, s:I, s:s?, s:I, s:I}", "document_id", l->rows[i]->id,
                      "sessions", (json_int_t)rctl_reply_ll(x[0]), "local_sessions",
                      (json_int_t)l->rows[i]->local, "nodes", l->rows[i]->nodes, "seq",
                      (json_int_t)rctl_reply_ll(x[1]), "epoch",
                      x[2]->type == REDIS_REPLY_STRING ? x[2]->str : NULL, "history",
                      (json_int_t)rctl_reply_ll(x[3]), "ttl_s", (json_int_t)rctl_reply_ll(x[4])));
    }
    rctl_replies_free(r, 5 * l->n);
    return arr;
}

static void docs_table(json_t *arr)
{
    rctl_table *t = rctl_table_create(7);
    rctl_table_row(t, (const char *const[]){"DOCUMENT", "SESSIONS", "SEQ", "HISTORY", "IDLE_TTL",
                                            "EPOCH", "NODES"});
    size_t i;
    json_t *d;
    json_array_foreach(arr, i, d)
    {
        char num[4][24], *nodes = json_dumps(json_object_get(d, "nodes"), JSON_COMPACT);
        const char *keys[4] = {"sessions", "seq", "history", "ttl_s"};
        for (int k = 0; k < 4; k++)
            snprintf(num[k], sizeof num[k], "%lld",
                     (long long)json_integer_value(json_object_get(d, keys[k])));
        rctl_table_row(
            t, (const char *const[]){json_string_value(json_object_get(d, "document_id")), num[0],
                                     num[1], num[2], num[3],
                                     json_string_value(json_object_get(d, "epoch")), nodes});
        free(nodes);
    }
    rctl_table_print(t, stdout);
    rctl_table_destroy(t);
}

int rctl_cmd_documents(rctl *o)
{
    rctl_cluster c;
    if (rctl_cluster_load(o, &c) < 0)
        return RCTL_FAIL;
    doc_list l = {hmap_create(), NULL, 0, 0};
    json_t *arr = l.map && docs_collect(o, &c, &l) == 0 ? docs_describe(o, &l) : NULL;
    docs_free(&l);
    rctl_cluster_free(&c);
    if (!arr)
        return RCTL_FAIL;
    if (o->json)
        return rctl_print_json(json_pack("{s:o}", "documents", arr));
    if (json_array_size(arr) == 0)
        printf("no document has sessions on a live node\n");
    else
        docs_table(arr);
    json_decref(arr);
    return fflush(stdout) == 0 ? RCTL_OK : RCTL_FAIL;
}

/* ---- presence --------------------------------------------------------------------------- */

/* The value of field in a flat HGETALL reply, or NULL. */
static const redisReply *hash_find(const redisReply *h, const char *field, size_t len)
{
    for (size_t i = 0; h->type == REDIS_REPLY_ARRAY && i + 1 < h->elements; i += 2)
        if (h->element[i]->len == len && !memcmp(h->element[i]->str, field, len))
            return h->element[i + 1];
    return NULL;
}

static bool node_is_live(const rctl_cluster *c, const char *id)
{
    for (size_t i = 0; i < c->n; i++)
        if (!strcmp(c->nodes[i].id, id))
            return c->nodes[i].live;
    return false;
}

/* One session's entry: member value [user_id, user_name, color], "node\tconn" owner, cursor. */
static json_t *presence_session(const rctl_cluster *c, const redisReply *sid,
                                const redisReply *member, const redisReply *owner,
                                const redisReply *cursor)
{
    char buf[2048], node[256] = "", err[128];
    const char *uid = "?", *name = "?", *color = "?";
    if (member->type != REDIS_REPLY_STRING || member->len + 3 > sizeof buf ||
        wire_parse_member((const uint8_t *)member->str, member->len, buf, sizeof buf, &uid, &name,
                          &color) < 0)
        uid = name = color = "?";
    long long conn = -1;
    const char *tab =
        owner && owner->type == REDIS_REPLY_STRING ? memchr(owner->str, '\t', owner->len) : NULL;
    if (tab) {
        snprintf(node, sizeof node, "%.*s", (int)(tab - owner->str), owner->str);
        conn = strtoll(tab + 1, NULL, 10);
    }
    json_t *cur =
        cursor && cursor->type == REDIS_REPLY_STRING
            ? codec_msgpack_to_json((const uint8_t *)cursor->str, cursor->len, err, sizeof err)
            : NULL;
    return json_pack("{s:s%, s:s, s:s, s:s, s:s?, s:I, s:b, s:o?}", "session_id", sid->str,
                     sid->len, "user_id", uid, "user_name", name, "color", color, "node",
                     tab ? node : NULL, "conn", (json_int_t)conn, "node_live",
                     tab && node_is_live(c, node), "cursor", cur);
}

static int sessions_cmp(const void *a, const void *b)
{
    return strcmp(json_string_value(json_object_get(*(json_t *const *)a, "session_id")),
                  json_string_value(json_object_get(*(json_t *const *)b, "session_id")));
}

/* Builds {document_id, epoch, seq, sessions:[...]} from presence, owners, cursors, epoch, seq. */
static json_t *presence_json(const rctl_cluster *c, const char *doc, redisReply **r)
{
    const redisReply *pres = r[0];
    size_t n = pres->type == REDIS_REPLY_ARRAY ? pres->elements / 2 : 0;
    json_t **list = calloc(n + 1, sizeof *list), *arr = json_array();
    for (size_t i = 0; list && i < n; i++) {
        const redisReply *sid = pres->element[2 * i];
        list[i] =
            presence_session(c, sid, pres->element[2 * i + 1], hash_find(r[1], sid->str, sid->len),
                             hash_find(r[2], sid->str, sid->len));
    }
    if (list)
        qsort(list, n, sizeof *list, sessions_cmp);
    for (size_t i = 0; list && arr && i < n; i++)
        json_array_append_new(arr, list[i]);
    free(list);
    return json_pack("{s:s, s:s?, s:I, s:o}", "document_id", doc, "epoch",
                     r[3]->type == REDIS_REPLY_STRING ? r[3]->str : NULL, "seq",
                     (json_int_t)rctl_reply_ll(r[4]), "sessions", arr);
}

static void presence_table(const json_t *p)
{
    const json_t *sessions = json_object_get(p, "sessions");
    printf("document %s: epoch %s, seq %lld, %zu session(s)\n",
           json_string_value(json_object_get(p, "document_id")),
           json_string_value(json_object_get(p, "epoch"))
               ? json_string_value(json_object_get(p, "epoch"))
               : "-",
           (long long)json_integer_value(json_object_get(p, "seq")), json_array_size(sessions));
    rctl_table *t = rctl_table_create(6);
    rctl_table_row(t, (const char *const[]){"SESSION", "USER", "NAME", "COLOR", "NODE", "CURSOR"});
    size_t i;
    json_t *s;
    json_array_foreach(sessions, i, s)
    {
        char node[300] = "-", cursor[64] = "-";
        const char *nd = json_string_value(json_object_get(s, "node"));
        if (nd)
            snprintf(node, sizeof node, "%s%s", nd,
                     json_is_true(json_object_get(s, "node_live")) ? "" : " (dead)");
        char *cj = json_object_get(s, "cursor")
                       ? json_dumps(json_object_get(s, "cursor"), JSON_COMPACT | JSON_ENCODE_ANY)
                       : NULL;
        if (cj)
            snprintf(cursor, sizeof cursor, "%s", cj);
        if (cj && strlen(cj) > 60)
            memcpy(cursor + 57, "...", 4); /* a table cell, not the data: --json has it all */
        free(cj);
        rctl_table_row(t, (const char *const[]){json_string_value(json_object_get(s, "session_id")),
                                                json_string_value(json_object_get(s, "user_id")),
                                                json_string_value(json_object_get(s, "user_name")),
                                                json_string_value(json_object_get(s, "color")),
                                                node, cursor});
    }
    if (json_array_size(sessions))
        rctl_table_print(t, stdout);
    rctl_table_destroy(t);
}

int rctl_cmd_presence(rctl *o)
{
    const char *doc = o->arg;
    if (!codec_document_id_valid(doc, strlen(doc))) {
        fprintf(stderr, "relayctl: '%s' is not a document id (1-128 of A-Z a-z 0-9 . _ : -)\n",
                doc);
        return RCTL_USAGE;
    }
    rctl_cluster c;
    if (rctl_cluster_load(o, &c) < 0)
        return RCTL_FAIL;
    const char *suffix[] = {"presence", "owners", "cursors"};
    for (int i = 0; i < 3; i++)
        redisAppendCommand(o->rc, "HGETALL %s{%s}:%s", o->prefix, doc, suffix[i]);
    redisAppendCommand(o->rc, "GET %s{%s}:epoch", o->prefix, doc);
    redisAppendCommand(o->rc, "GET %s{%s}:seq", o->prefix, doc);
    redisReply **r = rctl_pipeline(o, 5);
    json_t *p = r ? presence_json(&c, doc, r) : NULL;
    rctl_replies_free(r, r ? 5 : 0);
    rctl_cluster_free(&c);
    if (!r)
        return RCTL_FAIL;
    if (o->json || !p)
        return rctl_print_json(p);
    presence_table(p);
    json_decref(p);
    return fflush(stdout) == 0 ? RCTL_OK : RCTL_FAIL;
}

/* ---- watch ------------------------------------------------------------------------------ */

static volatile sig_atomic_t watch_stop;

static void watch_on_signal(int sig)
{
    (void)sig;
    watch_stop = 1;
}

/* Sleeps ms in short slices so Ctrl-C ends the watch at once. */
static void watch_sleep(long ms)
{
    while (ms > 0 && !watch_stop) {
        long slice = ms < 100 ? ms : 100;
        struct timespec ts = {0, slice * 1000000L};
        nanosleep(&ts, NULL);
        ms -= slice;
    }
}

/* One sample; reconnects when the previous one lost the link. Returns RCTL_OK or RCTL_FAIL. */
static int watch_sample(rctl *o)
{
    rctl_cluster c;
    if (rctl_cluster_load(o, &c) < 0) {
        rctl_disconnect(o);
        return RCTL_FAIL;
    }
    if (!o->json) {
        time_t now = time(NULL);
        struct tm tm;
        char when[32];
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", localtime_r(&now, &tm));
        printf("--- %s\n", when);
    }
    int rc = stats_print(&c, o->json);
    rctl_cluster_free(&c);
    return rc;
}

int rctl_cmd_watch(rctl *o)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = watch_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    int rc = RCTL_OK;
    for (long i = 0; !watch_stop && (o->count == 0 || i < o->count); i++) {
        if (i > 0)
            watch_sleep(o->interval_ms);
        if (!watch_stop)
            rc = watch_sample(o);
    }
    return rc;
}
