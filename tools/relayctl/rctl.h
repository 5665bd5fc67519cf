/**
 * @file rctl.h
 * relayctl's modules: the parsed command line (rctl), the Redis connection and the cluster view
 * read from it (rctl_redis.c), the commands that print that view (rctl_cluster.c), text tables
 * (rctl_table.c), token minting (rctl_token.c) and the HTTP health probe (rctl_health.c).
 *
 * relayctl is single-threaded; nothing here is thread-safe. Commands return an exit code:
 * RCTL_OK, RCTL_FAIL (printed why on stderr) or RCTL_USAGE.
 */
#ifndef RELAYCTL_RCTL_H
#define RELAYCTL_RCTL_H

#include <hiredis/hiredis.h>
#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

enum { RCTL_OK = 0, RCTL_FAIL = 1, RCTL_USAGE = 2 };

/* The command line after parsing (relayctl.c). Strings point into argv or the environment. */
typedef struct rctl {
    const char *redis_url; /* redis://[[user]:password@]host[:port][/db] */
    const char *prefix;    /* key prefix, "relay:" by default */
    bool json;             /* machine output */
    long timeout_ms;       /* bound on connecting and on each reply */
    long node_ttl;         /* > 0: live = heartbeat within this many s; 0: liveness key exists */
    const char *secret, *sub, *name, *docs, *kid; /* token */
    long ttl;                                     /* token lifetime, seconds */
    long count, interval_ms;                      /* watch */
    const char *arg;                              /* the positional: DOC or URL */
    redisContext *rc;                             /* open connection, owned; NULL before */
} rctl;

/* ---- rctl_redis.c ---------------------------------------------------------------------- */

/* A parsed Redis URL. */
typedef struct rctl_url {
    char host[256];
    int port, db;
    char user[256], password[512];
    bool has_user, has_password;
} rctl_url;

/* Parses redis://[[user]:password@]host[:port][/db] (user and password percent-decoded, an IPv6
 * host in brackets) the way relay-node does. rediss:// is refused: hiredis 0.14 has no TLS.
 * Returns 0, or -1 with the reason in err. */
int rctl_url_parse(const char *url, rctl_url *out, char *err, size_t errlen);

/* Connects o->rc to o->redis_url (AUTH and SELECT included), each step bounded by
 * o->timeout_ms. Returns 0, or -1 after printing why on stderr. */
int rctl_connect(rctl *o);

/* Closes o->rc; no-op when it is not open. */
void rctl_disconnect(rctl *o);

/* Sends one command (hiredis formatting: each %s is one argument, spaces included). Returns the
 * reply, which the caller frees, or NULL after printing why (I/O error, timeout, error reply);
 * after an I/O error the connection is unusable. */
redisReply *rctl_cmd(rctl *o, const char *fmt, ...);

/* Reads the replies of n commands queued with redisAppendCommand into a new array (free it
 * with rctl_replies_free). Returns NULL after printing why. */
redisReply **rctl_pipeline(rctl *o, size_t n);
void rctl_replies_free(redisReply **r, size_t n);

/* An integer from an integer or string reply; 0 for anything else (nil included). */
long long rctl_reply_ll(const redisReply *r);

/* One node listed in <prefix>nodes. */
typedef struct rctl_node {
    char *id;
    long long beat_ms; /* last heartbeat, Redis clock (the zset score) */
    long long age_ms;  /* Redis TIME minus beat_ms */
    long long ttl_ms;  /* PTTL of the liveness key: -2 gone, -1 no TTL */
    bool live;
    bool cleaning;      /* a survivor holds the cleanup lock for it */
    json_t *stats;      /* its /stats JSON when live and present, else NULL */
    long long sessions; /* entries in its members set (documents command only) */
} rctl_node;

/* The cluster as Redis sees it; nodes sorted by id. */
typedef struct rctl_cluster {
    long long now_ms; /* Redis TIME */
    rctl_node *nodes;
    size_t n;
    long long peak; /* <prefix>cluster:peak */
} rctl_cluster;

/* Reads the cluster view with a few pipelined round trips, connecting first when o->rc is not
 * open (every Redis command starts here). Returns 0 (free with rctl_cluster_free), or -1 after
 * printing why. */
int rctl_cluster_load(rctl *o, rctl_cluster *c);
void rctl_cluster_free(rctl_cluster *c);

/* {nodes:[live nodes' stats], totals:{every integer summed}, peak_concurrent}, the shape of a
 * node's GET /stats?scope=cluster. New reference, NULL when out of memory. */
json_t *rctl_cluster_stats_json(const rctl_cluster *c);

/* Prints a JSON value on one line to stdout. Returns RCTL_OK, or RCTL_FAIL when value is NULL
 * (out of memory) or stdout fails. Steals the reference. */
int rctl_print_json(json_t *value);

/* ---- rctl_table.c ------------------------------------------------------------------------ */

/* A text table: cells are copied; columns are as wide as their widest cell; cells that look like
 * numbers ("12", "-3", "0.4s") are right-aligned. rctl_table_create returns NULL for 0 or more
 * than 16 columns or when out of memory; every other function accepts NULL. */
typedef struct rctl_table rctl_table;

rctl_table *rctl_table_create(size_t cols);
/* Appends a row of exactly cols cells (NULL prints as "-"); the first row is the header.
 * Returns 0 or -1 (out of memory, or t is NULL). */
int rctl_table_row(rctl_table *t, const char *const *cells);
void rctl_table_print(const rctl_table *t, FILE *out);
void rctl_table_destroy(rctl_table *t);

/* ---- commands ---------------------------------------------------------------------------- */

int rctl_cmd_stats(rctl *o);     /* rctl_cluster.c */
int rctl_cmd_nodes(rctl *o);     /* rctl_cluster.c */
int rctl_cmd_documents(rctl *o); /* rctl_cluster.c */
int rctl_cmd_presence(rctl *o);  /* rctl_cluster.c */
int rctl_cmd_watch(rctl *o);     /* rctl_cluster.c */
int rctl_cmd_token(rctl *o);     /* rctl_token.c */
int rctl_cmd_health(rctl *o);    /* rctl_health.c */

#endif
