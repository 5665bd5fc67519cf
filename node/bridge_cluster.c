/* The cluster side of the Redis thread: heartbeat with this node's stats, the cluster view
 * (live nodes, totals, peak), cleanup after dead nodes, the control channel, resumable
 * sessions, and leaving the cluster on shutdown. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

#include "bridge.h"
#include "metrics.h"
#include "relay/clock.h"
#include "relay/log.h"

static void cluster_key(const bridge *b, char *out, size_t len, const char *fmt, const char *id)
{
    int n = snprintf(out, len, "%s", b->prefix);
    snprintf(out + n, len - (size_t)n, fmt, id);
}

static void cluster_push_stats(bridge *b, long long peak, const redisReply *stats)
{
    json_t *nodes = json_array(), *totals = json_object();
    for (size_t i = 0; nodes && totals && i < stats->elements; i++) {
        const redisReply *s = stats->element[i];
        json_t *j = s->type == REDIS_REPLY_STRING ? json_loadb(s->str, s->len, 0, NULL) : NULL;
        if (!j)
            continue;
        metrics_sum(totals, j);
        json_array_append_new(nodes, j);
    }
    json_t *doc = json_pack("{s:o, s:o, s:I}", "nodes", nodes, "totals", totals, "peak_concurrent",
                            (json_int_t)peak);
    bevt *e = calloc(1, sizeof *e);
    if (e)
        e->text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
    json_decref(doc);
    if (!e || !e->text)
        goto fail;
    e->kind = BE_CLUSTER_STATS;
    if (bridge_push_event(b, e) == 0)
        return;
fail:
    if (e)
        free(e->text);
    free(e);
}

static void cluster_on_cleanup_members(redisAsyncContext *ac, void *r, void *privdata)
{
    bridge *b = ac->data;
    redisReply *reply = r;
    char *dead = privdata;
    if (reply && reply->type == REDIS_REPLY_ARRAY) {
        char prefix[200];
        snprintf(prefix, sizeof prefix, "%s\t", dead);
        for (size_t i = 0; i < reply->elements; i++) {
            const redisReply *e = reply->element[i];
            const char *tab = e->type == REDIS_REPLY_STRING ? memchr(e->str, '\t', e->len) : NULL;
            char doc[129];
            if (!tab || (size_t)(tab - e->str) >= sizeof doc)
                continue;
            memcpy(doc, e->str, (size_t)(tab - e->str));
            doc[tab - e->str] = '\0';
            char sid[80];
            snprintf(sid, sizeof sid, "%.*s", (int)(e->len - (size_t)(tab - e->str) - 1), tab + 1);
            doc_keys k;
            bridge_doc_keys(b, doc, &k);
            const char *argv[] = {k.presence, k.owners,  k.cursors, sid,
                                  prefix,     k.pres_ch, doc,       dead};
            bridge_evalsha(b, NULL, NULL, SCRIPT_CLEANUP, 3, 5, argv, NULL);
        }
        char members[300], stats[300], alive[300], nodes[300];
        cluster_key(b, members, sizeof members, "node:%s:members", dead);
        cluster_key(b, stats, sizeof stats, "node:%s:stats", dead);
        cluster_key(b, alive, sizeof alive, "node:%s", dead);
        cluster_key(b, nodes, sizeof nodes, "nodes%s", "");
        redisAsyncCommand(b->cmd, NULL, NULL, "DEL %s %s %s", members, stats, alive);
        redisAsyncCommand(b->cmd, NULL, NULL, "ZREM %s %s", nodes, dead);
        log_info("node %s is dead: removed %zu presence entries it still owned", dead,
                 reply->elements);
    }
    free(dead);
}

static void cluster_on_cleanup_lock(redisAsyncContext *ac, void *r, void *privdata)
{
    bridge *b = ac->data;
    redisReply *reply = r;
    char *dead = privdata;
    if (!reply || reply->type != REDIS_REPLY_STATUS || !b->cmd) {
        free(dead); /* another node is cleaning up, or the link broke */
        return;
    }
    char members[300];
    cluster_key(b, members, sizeof members, "node:%s:members", dead);
    if (redisAsyncCommand(b->cmd, cluster_on_cleanup_members, dead, "SMEMBERS %s", members) !=
        REDIS_OK)
        free(dead);
}

/* One surviving node (whoever takes the lock) removes a dead node's presence entries. */
static void cluster_cleanup(bridge *b, const char *dead)
{
    char lock[300];
    cluster_key(b, lock, sizeof lock, "cleanup:%s", dead);
    char *id = strdup(dead);
    if (id && redisAsyncCommand(b->cmd, cluster_on_cleanup_lock, id, "SET %s %s NX EX 30", lock,
                                b->node_id) != REDIS_OK)
        free(id);
}

static void cluster_on_beat(redisAsyncContext *ac, void *r, void *privdata)
{
    bridge *b = ac->data;
    redisReply *reply = r;
    bridge_saw_reply(b, reply);
    (void)privdata;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 3 ||
        reply->element[1]->type != REDIS_REPLY_ARRAY ||
        reply->element[2]->type != REDIS_REPLY_ARRAY)
        return;
    cluster_push_stats(b, reply->element[0]->integer, reply->element[1]);
    const redisReply *dead = reply->element[2];
    for (size_t i = 0; i < dead->elements; i++)
        if (dead->element[i]->type == REDIS_REPLY_STRING &&
            strcmp(dead->element[i]->str, b->node_id) != 0)
            cluster_cleanup(b, dead->element[i]->str);
}

void bridge_cluster_heartbeat(bridge *b)
{
    if (!bridge_link_up(b))
        return;
    json_t *j = metrics_stats_json(b->node_id, &b->stats);
    char *json = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    if (!json)
        return;
    char nodes[300], alive[300], stats[300], peak[300], members[300], ttl[12], active[24];
    cluster_key(b, nodes, sizeof nodes, "nodes%s", "");
    cluster_key(b, alive, sizeof alive, "node:%s", b->node_id);
    cluster_key(b, stats, sizeof stats, "node:%s:stats", b->node_id);
    cluster_key(b, peak, sizeof peak, "cluster:peak%s", "");
    cluster_key(b, members, sizeof members, "node:%s:members", b->node_id);
    snprintf(ttl, sizeof ttl, "%d", b->node_ttl);
    snprintf(active, sizeof active, "%llu", (unsigned long long)b->stats.active);
    const char *argv[] = {nodes,      alive, stats, peak,   members,
                          b->node_id, ttl,   json,  active, b->prefix};
    bridge_evalsha(b, cluster_on_beat, NULL, SCRIPT_HEARTBEAT, 5, 5, argv, NULL);
    free(json);
}

static void cluster_push_taken_over(bridge *b, uint64_t conn_id)
{
    bevt *e = calloc(1, sizeof *e);
    if (!e)
        return;
    e->kind = BE_TAKEN_OVER;
    e->conn_id = conn_id;
    if (bridge_push_event(b, e) < 0)
        free(e);
}

void bridge_cluster_on_control(bridge *b, const char *data, size_t len)
{
    if (len == 6 && !memcmp(data, "canary", 6)) {
        b->last_canary_ms = clock_mono_ms();
        return;
    }
    char text[64];
    unsigned long long conn;
    snprintf(text, sizeof text, "%.*s", (int)(len < 63 ? len : 63), data);
    if (sscanf(text, "takeover %llu", &conn) == 1)
        cluster_push_taken_over(b, conn);
}

/* ---- Sessions ------------------------------------------------------------------------- */

static void session_key(const bridge *b, const char *sid, char *out, size_t len)
{
    cluster_key(b, out, len, "session:%s", sid);
}

void bridge_session_save(bridge *b, bcmd *c)
{
    if (!bridge_link_up(b))
        return; /* resumes fail while Redis is down anyway; the next auth_result saves again */
    char key[300], owner[200], exp[24], ttl[24];
    session_key(b, c->sid, key, sizeof key);
    bridge_owner(b, c->conn_id, owner, sizeof owner);
    int64_t left = c->exp - clock_wall_s();
    snprintf(exp, sizeof exp, "%lld", (long long)c->exp);
    snprintf(ttl, sizeof ttl, "%lld", (long long)((left > 0 ? left : 0) + b->lim.resume_ttl_s));
    const char *av[] = {"HSET",      key,
                        "user_id",   c->user_id,
                        "user_name", c->user_name,
                        "color",     c->color,
                        "exp",       exp,
                        "has_docs",  c->has_docs ? "1" : "0",
                        "docs",      (const char *)c->blob.data,
                        "rt",        c->rt,
                        "owner",     owner};
    size_t al[18];
    for (int i = 0; i < 18; i++)
        al[i] = i == 13 ? c->blob.len : strlen(av[i]);
    redisAsyncCommandArgv(b->cmd, NULL, NULL, 18, av, al);
    redisAsyncCommand(b->cmd, NULL, NULL, "EXPIRE %s %s", key, ttl);
}

void bridge_session_release(bridge *b, bcmd *c)
{
    if (!bridge_link_up(b)) {
        bridge_defer(b, c);
        return;
    }
    char key[300], owner[200], ttl[16];
    session_key(b, c->sid, key, sizeof key);
    bridge_owner(b, c->conn_id, owner, sizeof owner);
    snprintf(ttl, sizeof ttl, "%d", b->lim.resume_ttl_s);
    const char *argv[] = {key, owner, ttl};
    bridge_evalsha(b, NULL, NULL, SCRIPT_RELEASE, 1, 2, argv, NULL);
    free(c);
}

static void session_push_resumed(bridge *b, bevt *e)
{
    if (bridge_push_event(b, e) < 0)
        bridge_event_free(e);
}

static char *session_str(const redisReply *r)
{
    return r->type == REDIS_REPLY_STRING ? strndup(r->str, r->len) : strdup("");
}

/* docs are stored one per line (a valid document id holds no newline). */
static int session_docs(token_claims *cl, const redisReply *has, const redisReply *docs)
{
    cl->has_docs = has->type == REDIS_REPLY_STRING && has->len == 1 && has->str[0] == '1';
    if (!cl->has_docs || docs->type != REDIS_REPLY_STRING || docs->len == 0)
        return 0;
    size_t n = 1;
    for (size_t i = 0; i < docs->len; i++)
        n += docs->str[i] == '\n';
    cl->docs = calloc(n, sizeof *cl->docs);
    if (!cl->docs)
        return -1;
    const char *p = docs->str, *end = docs->str + docs->len;
    while (p <= end && cl->n_docs < n) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
        cl->docs[cl->n_docs] = strndup(p, len);
        if (!cl->docs[cl->n_docs])
            return -1;
        cl->n_docs++;
        p += len + 1;
    }
    return 0;
}

static void session_takeover(bridge *b, const redisReply *prev, uint64_t conn_id)
{
    const char *tab = prev->type == REDIS_REPLY_STRING ? memchr(prev->str, '\t', prev->len) : NULL;
    if (!tab)
        return;
    unsigned long long old = strtoull(tab + 1, NULL, 10);
    size_t nlen = (size_t)(tab - prev->str);
    if (nlen == strlen(b->node_id) && !memcmp(prev->str, b->node_id, nlen)) {
        if (old != conn_id)
            cluster_push_taken_over(b, old);
        return;
    }
    char ctl[300], node[200];
    snprintf(node, sizeof node, "%.*s", (int)nlen, prev->str);
    cluster_key(b, ctl, sizeof ctl, "node:%s:ctl", node);
    redisAsyncCommand(b->cmd, NULL, NULL, "PUBLISH %s takeover %llu", ctl, old);
}

static void session_resume_result(bridge *b, const redisReply *reply, bcmd *c)
{
    bevt *e = calloc(1, sizeof *e);
    if (!e) {
        free(c);
        return;
    }
    e->kind = BE_RESUMED;
    e->conn_id = c->conn_id;
    if (!reply || reply->type != REDIS_REPLY_ARRAY || reply->elements < 1) {
        e->text = strdup("session store unreachable, retry");
    } else if (reply->element[0]->integer == 0) {
        e->text = strdup("unknown or expired session");
    } else if (reply->element[0]->integer == 1 || reply->elements < 8) {
        e->text = strdup("invalid resume token");
    } else {
        redisReply **el = reply->element;
        session_takeover(b, el[1], c->conn_id);
        e->sid = strdup(c->sid);
        e->rt = strdup(c->new_rt);
        e->user_id = session_str(el[2]);
        e->user_name = session_str(el[3]);
        e->color = session_str(el[4]);
        e->claims.exp = el[5]->type == REDIS_REPLY_STRING ? strtoll(el[5]->str, NULL, 10) : 0;
        e->claims.user_id = strdup(e->user_id ? e->user_id : "");
        e->claims.user_name = strdup(e->user_name ? e->user_name : "");
        if (!e->sid || !e->rt || !e->user_id || !e->user_name || !e->color || !e->claims.user_id ||
            !e->claims.user_name || session_docs(&e->claims, el[6], el[7]))
            e->text = strdup("internal error");
    }
    free(c);
    session_push_resumed(b, e);
}

static void session_on_resume(redisAsyncContext *ac, void *r, void *privdata)
{
    session_resume_result(ac->data, r, privdata);
}

void bridge_session_resume(bridge *b, bcmd *c)
{
    char key[300], owner[200], ttl[24];
    session_key(b, c->sid, key, sizeof key);
    bridge_owner(b, c->conn_id, owner, sizeof owner);
    snprintf(ttl, sizeof ttl, "%d", 86400 + b->lim.resume_ttl_s);
    const char *argv[] = {key, c->rt, c->new_rt, owner, ttl};
    if (!bridge_link_up(b) ||
        bridge_evalsha(b, session_on_resume, c, SCRIPT_RESUME, 1, 4, argv, NULL) < 0)
        session_resume_result(b, NULL, c);
}

/* ---- Leaving the cluster ---------------------------------------------------------------- */

static void cluster_on_goodbye(redisAsyncContext *ac, void *r, void *privdata)
{
    (void)r, (void)privdata;
    bridge_exit_loop(ac->data);
}

/* Removes this node from the cluster view (stats, liveness, its presence index) and stops the
 * loop once Redis has answered, or at once when Redis is unreachable. */
void bridge_cluster_leave(bridge *b)
{
    if (!bridge_link_up(b)) {
        bridge_exit_loop(b);
        return;
    }
    char nodes[300], alive[300], stats[300], members[300];
    cluster_key(b, nodes, sizeof nodes, "nodes%s", "");
    cluster_key(b, alive, sizeof alive, "node:%s", b->node_id);
    cluster_key(b, stats, sizeof stats, "node:%s:stats", b->node_id);
    cluster_key(b, members, sizeof members, "node:%s:members", b->node_id);
    redisAsyncCommand(b->cmd, NULL, NULL, "DEL %s %s %s", alive, stats, members);
    redisAsyncCommand(b->cmd, cluster_on_goodbye, NULL, "ZREM %s %s", nodes, b->node_id);
}
