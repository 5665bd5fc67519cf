/* relayctl's Redis side: the URL, the connection, and the cluster view read from the keys the
 * nodes' heartbeat writes (docs/REDIS.md). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "metrics.h"
#include "rctl.h"

/* Decodes %XX escapes in place (a password may hold '@', ':' or '/'). */
static void url_unescape(char *s)
{
    char *o = s;
    for (char *p = s; *p; p++) {
        unsigned v;
        if (*p == '%' && p[1] && p[2] && sscanf(p + 1, "%2x", &v) == 1) {
            *o++ = (char)v;
            p += 2;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
}

/* Parses a decimal in [lo, hi] filling all of s. Returns 0 or -1. */
static int url_number(const char *s, long lo, long hi, int *out)
{
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (!*s || *end || errno || v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

/* Splits "user:password" (or just "password", as relay-node reads it) into u. */
static int url_userinfo(char *info, rctl_url *u)
{
    char *colon = strchr(info, ':');
    const char *pass = info;
    if (colon) {
        *colon = '\0';
        pass = colon + 1;
        u->has_user = info[0] != '\0';
        if ((size_t)snprintf(u->user, sizeof u->user, "%s", info) >= sizeof u->user)
            return -1;
        url_unescape(u->user);
    }
    u->has_password = true;
    if ((size_t)snprintf(u->password, sizeof u->password, "%s", pass) >= sizeof u->password)
        return -1;
    url_unescape(u->password);
    return 0;
}

int rctl_url_parse(const char *url, rctl_url *u, char *err, size_t errlen)
{
    memset(u, 0, sizeof *u);
    u->port = 6379;
    if (!strncmp(url, "rediss://", 9)) {
        snprintf(err, errlen,
                 "rediss:// is not supported (hiredis 0.14 has no TLS); use redis:// on a trusted "
                 "network, or a local TLS tunnel such as stunnel");
        return -1;
    }
    if (strncmp(url, "redis://", 8) != 0) {
        snprintf(err, errlen, "Redis URL must start with redis:// (got '%s')", url);
        return -1;
    }
    char buf[1024];
    if ((size_t)snprintf(buf, sizeof buf, "%s", url + 8) >= sizeof buf)
        goto bad;
    /* The last '@' ends the user info, as relay-node reads it: a password may hold '/'. */
    char *host = buf, *at = strrchr(buf, '@');
    if (at) {
        *at = '\0';
        host = at + 1;
        if (url_userinfo(buf, u) < 0)
            goto bad;
    }
    char *slash = strchr(host, '/');
    if (slash) {
        *slash = '\0';
        if (slash[1] && url_number(slash + 1, 0, 1000000, &u->db) < 0)
            goto bad;
    }
    char *port = NULL;
    if (host[0] == '[') { /* [IPv6]:port */
        char *close = strchr(host, ']');
        if (!close || (close[1] && close[1] != ':'))
            goto bad;
        *close = '\0';
        port = close[1] ? close + 2 : NULL;
        host++;
    } else if ((port = strrchr(host, ':')) != NULL) {
        *port++ = '\0';
    }
    if (port && url_number(port, 1, 65535, &u->port) < 0)
        goto bad;
    if (!host[0] || (size_t)snprintf(u->host, sizeof u->host, "%s", host) >= sizeof u->host)
        goto bad;
    return 0;
bad:
    snprintf(err, errlen, "bad Redis URL '%s': expected redis://[user:password@]host[:port][/db]",
             url);
    return -1;
}

static struct timeval rctl_tv(long ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

/* AUTH (with an ACL user when the URL names one) and SELECT. Returns 0 or -1. */
static int rctl_login(rctl *o, const rctl_url *u)
{
    redisReply *r = NULL;
    if (u->has_password) {
        r = u->has_user ? rctl_cmd(o, "AUTH %s %s", u->user, u->password)
                        : rctl_cmd(o, "AUTH %s", u->password);
        if (!r)
            return -1;
        freeReplyObject(r);
    }
    if (u->db != 0) {
        if (!(r = rctl_cmd(o, "SELECT %d", u->db)))
            return -1;
        freeReplyObject(r);
    }
    return 0;
}

int rctl_connect(rctl *o)
{
    rctl_url u;
    char err[512];
    if (rctl_url_parse(o->redis_url, &u, err, sizeof err) < 0) {
        fprintf(stderr, "relayctl: %s\n", err);
        return -1;
    }
    rctl_disconnect(o);
    o->rc = redisConnectWithTimeout(u.host, u.port, rctl_tv(o->timeout_ms));
    if (!o->rc || o->rc->err) {
        fprintf(stderr, "relayctl: cannot connect to Redis at %s:%d: %s\n", u.host, u.port,
                o->rc ? o->rc->errstr : "out of memory");
        rctl_disconnect(o);
        return -1;
    }
    redisSetTimeout(o->rc, rctl_tv(o->timeout_ms));
    if (rctl_login(o, &u) < 0) {
        fprintf(stderr,
                "relayctl: Redis at %s:%d refused the login (check the URL's "
                "user, password and db)\n",
                u.host, u.port);
        rctl_disconnect(o);
        return -1;
    }
    return 0;
}

void rctl_disconnect(rctl *o)
{
    if (o->rc)
        redisFree(o->rc);
    o->rc = NULL;
}

static void rctl_io_error(const rctl *o)
{
    const char *why = o->rc->errstr[0] ? o->rc->errstr : "no reply";
    if (o->rc->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
        why = "timed out (raise --timeout-ms?)";
    fprintf(stderr, "relayctl: Redis: %s\n", why);
}

redisReply *rctl_cmd(rctl *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(o->rc, fmt, ap);
    va_end(ap);
    if (!r) {
        rctl_io_error(o);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        fprintf(stderr, "relayctl: Redis: %s\n", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

redisReply **rctl_pipeline(rctl *o, size_t n)
{
    redisReply **out = calloc(n + 1, sizeof *out);
    for (size_t i = 0; i < n; i++) {
        void *r = NULL;
        if (!out || redisGetReply(o->rc, &r) != REDIS_OK || !r) {
            if (out)
                rctl_io_error(o);
            rctl_replies_free(out, i);
            return NULL;
        }
        out[i] = r;
    }
    if (!out)
        fprintf(stderr, "relayctl: out of memory\n");
    return out;
}

void rctl_replies_free(redisReply **r, size_t n)
{
    for (size_t i = 0; r && i < n; i++)
        freeReplyObject(r[i]);
    free(r);
}

long long rctl_reply_ll(const redisReply *r)
{
    if (r && r->type == REDIS_REPLY_INTEGER)
        return r->integer;
    if (r && r->type == REDIS_REPLY_STRING)
        return strtoll(r->str, NULL, 10);
    return 0;
}

/* ---- The cluster view ---------------------------------------------------------------------- */

static int rctl_node_cmp(const void *a, const void *b)
{
    return strcmp(((const rctl_node *)a)->id, ((const rctl_node *)b)->id);
}

void rctl_cluster_free(rctl_cluster *c)
{
    for (size_t i = 0; c->nodes && i < c->n; i++) {
        free(c->nodes[i].id);
        json_decref(c->nodes[i].stats);
    }
    free(c->nodes);
    memset(c, 0, sizeof *c);
}

/* Liveness follows the node's own rule when --node-ttl is given (heartbeat within the TTL, by
 * Redis' clock); otherwise the liveness key, which the node writes with its own --node-ttl,
 * says it without relayctl having to know that setting. */
static void rctl_node_fill(const rctl *o, rctl_node *nd, long long now, redisReply **r)
{
    nd->ttl_ms = r[0]->type == REDIS_REPLY_INTEGER ? r[0]->integer : -2;
    nd->age_ms = now - nd->beat_ms;
    nd->live = o->node_ttl > 0 ? nd->age_ms <= o->node_ttl * 1000LL : nd->ttl_ms != -2;
    if (nd->live && r[1]->type == REDIS_REPLY_STRING)
        nd->stats = json_loadb(r[1]->str, r[1]->len, 0, NULL);
    nd->cleaning = rctl_reply_ll(r[2]) > 0;
}

/* Reads every listed node's liveness key, stats and cleanup lock in one pipeline. */
static int rctl_cluster_nodes(rctl *o, rctl_cluster *c, const redisReply *z)
{
    size_t n = z->elements / 2;
    c->nodes = calloc(n + 1, sizeof *c->nodes);
    if (!c->nodes) {
        fprintf(stderr, "relayctl: out of memory\n");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const redisReply *id = z->element[2 * i], *score = z->element[2 * i + 1];
        rctl_node *nd = &c->nodes[c->n];
        if (id->type != REDIS_REPLY_STRING || !(nd->id = strndup(id->str, id->len)))
            return -1;
        nd->beat_ms = score->type == REDIS_REPLY_STRING ? atoll(score->str) : 0;
        c->n++;
        redisAppendCommand(o->rc, "PTTL %snode:%s", o->prefix, nd->id);
        redisAppendCommand(o->rc, "HGET %snode:%s:stats json", o->prefix, nd->id);
        redisAppendCommand(o->rc, "EXISTS %scleanup:%s", o->prefix, nd->id);
    }
    redisReply **r = rctl_pipeline(o, 3 * c->n);
    if (!r)
        return -1;
    for (size_t i = 0; i < c->n; i++)
        rctl_node_fill(o, &c->nodes[i], c->now_ms, r + 3 * i);
    rctl_replies_free(r, 3 * c->n);
    qsort(c->nodes, c->n, sizeof *c->nodes, rctl_node_cmp);
    return 0;
}

int rctl_cluster_load(rctl *o, rctl_cluster *c)
{
    memset(c, 0, sizeof *c);
    if (!o->rc && rctl_connect(o) < 0)
        return -1;
    redisReply *t = rctl_cmd(o, "TIME");
    if (!t)
        return -1;
    if (t->type == REDIS_REPLY_ARRAY && t->elements == 2)
        c->now_ms = rctl_reply_ll(t->element[0]) * 1000 + rctl_reply_ll(t->element[1]) / 1000;
    freeReplyObject(t);
    redisReply *z = rctl_cmd(o, "ZRANGE %snodes 0 -1 WITHSCORES", o->prefix);
    if (!z)
        return -1;
    int rc = z->type == REDIS_REPLY_ARRAY ? rctl_cluster_nodes(o, c, z) : -1;
    freeReplyObject(z);
    redisReply *p = rc == 0 ? rctl_cmd(o, "GET %scluster:peak", o->prefix) : NULL;
    c->peak = rctl_reply_ll(p);
    freeReplyObject(p);
    if (!p) {
        rctl_cluster_free(c);
        return -1;
    }
    return 0;
}

json_t *rctl_cluster_stats_json(const rctl_cluster *c)
{
    json_t *nodes = json_array(), *totals = json_object();
    for (size_t i = 0; nodes && totals && i < c->n; i++) {
        if (!c->nodes[i].live || !c->nodes[i].stats)
            continue;
        metrics_sum(totals, c->nodes[i].stats);
        json_array_append(nodes, c->nodes[i].stats);
    }
    /* The stored peak lags the live count by up to one heartbeat. */
    json_int_t active =
        json_integer_value(json_object_get(json_object_get(totals, "connections"), "active"));
    json_int_t peak = c->peak > active ? c->peak : active;
    return json_pack("{s:o, s:o, s:I}", "nodes", nodes, "totals", totals, "peak_concurrent", peak);
}

int rctl_print_json(json_t *value)
{
    if (!value) {
        fprintf(stderr, "relayctl: out of memory\n");
        return RCTL_FAIL;
    }
    int rc = json_dumpf(value, stdout, JSON_COMPACT);
    json_decref(value);
    if (rc < 0 || fputc('\n', stdout) == EOF || fflush(stdout) != 0) {
        fprintf(stderr, "relayctl: cannot write output: %s\n", strerror(errno));
        return RCTL_FAIL;
    }
    return RCTL_OK;
}
