/* relayctl: the operator's tool for a relay cluster. It reads the cluster's state straight from
 * Redis (the key schema is in docs/REDIS.md), mints development tokens and probes health
 * endpoints. This file holds the command line: one table of options (flags, environment
 * variables, bounds, defaults and --help all come from it) and one table of commands; the
 * commands live in tools/relayctl/.
 *
 * Exit status: 0 success, 1 failure (Redis unreachable, health check failed, ...), 2 usage. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relayctl/rctl.h"

/* Bits naming the commands an option applies to. */
enum {
    C_STATS = 1 << 0,
    C_NODES = 1 << 1,
    C_DOCUMENTS = 1 << 2,
    C_PRESENCE = 1 << 3,
    C_WATCH = 1 << 4,
    C_TOKEN = 1 << 5,
    C_HEALTH = 1 << 6,
};
#define C_REDIS (C_STATS | C_NODES | C_DOCUMENTS | C_PRESENCE | C_WATCH)
#define C_ALL   0x7f

typedef struct rctl_command {
    const char *name;
    unsigned bit;
    int (*run)(rctl *o);
    const char *arg; /* the positional it requires, or NULL */
    const char *summary;
    const char *help;
} rctl_command;

static const rctl_command rctl_commands[] = {
    {"stats", C_STATS, rctl_cmd_stats, NULL, "cluster totals and per-node stats (live nodes)",
     "Prints the cluster's totals, peak concurrent connections and each live node's stats.\n"
     "--json prints {nodes:[...], totals:{...}, peak_concurrent}, the same document as a node's\n"
     "GET /stats?scope=cluster; totals sum every integer field of the nodes' stats.\n"},
    {"nodes", C_NODES, rctl_cmd_nodes, NULL, "nodes registered in Redis, live or dead",
     "Lists every node in <prefix>nodes with the age of its last heartbeat (Redis clock), its\n"
     "active connections and whether it is live. A dead node stays listed until a survivor has\n"
     "removed its presence entries (within seconds).\n"},
    {"documents", C_DOCUMENTS, rctl_cmd_documents, NULL, "documents with sessions on live nodes",
     "Lists the documents that sessions on live nodes have joined (the union of the nodes'\n"
     "members sets) with their cluster-wide session count, seq, epoch, history length, seconds\n"
     "until the idle TTL expires them, and the nodes holding their sessions.\n"},
    {"presence", C_PRESENCE, rctl_cmd_presence, "DOC", "sessions in one document",
     "Lists the sessions present in document DOC: session id, user id, name, color, the node\n"
     "and connection owning the entry (marked when that node is dead), and the last cursor.\n"},
    {"watch", C_WATCH, rctl_cmd_watch, NULL, "stats every interval until Ctrl-C",
     "Prints `relayctl stats` every --interval-ms (one JSON line per sample with --json) until\n"
     "Ctrl-C, or --count samples. Keeps going while Redis is unreachable; exits 1 if the last\n"
     "sample failed.\n"},
    {"token", C_TOKEN, rctl_cmd_token, NULL, "mint an HS256 development token",
     "Prints a JWT signed with HS256 that relay-node --jwt-secret accepts: sub, optional name,\n"
     "exp = now + --ttl, optional kid header and docs claim (entries ending in '*' are\n"
     "prefixes). For development and tests; production tokens come from your auth service.\n"},
    {"health", C_HEALTH, rctl_cmd_health, "URL", "HTTP GET URL, exit 0 on a 2xx status",
     "Sends one plain HTTP GET to URL (e.g. http://127.0.0.1:8080/readyz) and exits 0 when the\n"
     "status is 2xx, 1 otherwise (refused, timed out, other status). Meant for container\n"
     "health checks: the image has no curl.\n"},
};
#define N_COMMANDS (sizeof rctl_commands / sizeof rctl_commands[0])

typedef enum { OPT_STR, OPT_LONG, OPT_FLAG } opt_type;

typedef struct rctl_option {
    const char *name, *env, *meta;
    opt_type type;
    size_t off;
    long min, max;
    const char *def;
    unsigned cmds;
    const char *help;
} rctl_option;

#define OFF(f) offsetof(rctl, f)

static const rctl_option rctl_options[] = {
    {"redis", "RELAY_REDIS_URL", "URL", OPT_STR, OFF(redis_url), 0, 0, "redis://127.0.0.1:6379",
     C_REDIS, "redis://[user:password@]host[:port][/db], as given to relay-node"},
    {"prefix", "RELAY_REDIS_PREFIX", "P", OPT_STR, OFF(prefix), 0, 0, "relay:", C_REDIS,
     "key prefix, as relay-node's --redis-prefix"},
    {"node-ttl", NULL, "S", OPT_LONG, OFF(node_ttl), 0, 300, "0",
     C_STATS | C_NODES | C_DOCUMENTS | C_WATCH,
     "live = heartbeat within S s (0: while its liveness key exists)"},
    {"json", NULL, NULL, OPT_FLAG, OFF(json), 0, 0, NULL, C_ALL, "machine output: one JSON line"},
    {"timeout-ms", NULL, "MS", OPT_LONG, OFF(timeout_ms), 1, 600000, "3000", C_ALL,
     "bound on connecting and on each reply"},
    {"secret", "RELAY_JWT_SECRET", "S", OPT_STR, OFF(secret), 0, 0, NULL, C_TOKEN,
     "HS256 secret, as relay-node's --jwt-secret (required)"},
    {"sub", NULL, "USER", OPT_STR, OFF(sub), 0, 0, NULL, C_TOKEN, "user id (required)"},
    {"name", NULL, "NAME", OPT_STR, OFF(name), 0, 0, NULL, C_TOKEN, "display name"},
    {"ttl", NULL, "S", OPT_LONG, OFF(ttl), 1, 315360000, "3600", C_TOKEN, "lifetime, seconds"},
    {"docs", NULL, "LIST", OPT_STR, OFF(docs), 0, 0, NULL, C_TOKEN,
     "allowed documents, comma-separated, 'pre*' = prefix (default: all)"},
    {"kid", NULL, "KID", OPT_STR, OFF(kid), 0, 0, NULL, C_TOKEN, "key id header"},
    {"count", NULL, "N", OPT_LONG, OFF(count), 0, 1000000000, "0", C_WATCH,
     "stop after N samples (0: until Ctrl-C)"},
    {"interval-ms", NULL, "MS", OPT_LONG, OFF(interval_ms), 100, 3600000, "1000", C_WATCH,
     "time between samples"},
};
#define N_OPTIONS (sizeof rctl_options / sizeof rctl_options[0])

/* ---- help -------------------------------------------------------------------------------- */

static void help_options(FILE *out, unsigned cmds)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const rctl_option *op = &rctl_options[i];
        if (!(op->cmds & cmds))
            continue;
        char flag[64];
        snprintf(flag, sizeof flag, "--%s%s%s", op->name, op->meta ? " " : "",
                 op->meta ? op->meta : "");
        fprintf(out, "  %-20s %s\n", flag, op->help);
        if (op->env || op->def)
            fprintf(out, "  %-20s (%s%s%s%s%s)\n", "", op->env ? "env " : "",
                    op->env ? op->env : "", op->env && op->def ? ", " : "",
                    op->def ? "default " : "", op->def ? op->def : "");
    }
    fprintf(out, "  %-20s %s\n", "-h, --help", "this help");
}

static void help_main(FILE *out)
{
    fprintf(out, "usage: relayctl COMMAND [ARG] [options]\n\n"
                 "The operator's tool for a relay cluster: reads the cluster's state from Redis\n"
                 "(key schema: docs/REDIS.md), mints development tokens, probes health endpoints.\n"
                 "\ncommands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++) {
        char use[64];
        snprintf(use, sizeof use, "%s%s%s", rctl_commands[i].name, rctl_commands[i].arg ? " " : "",
                 rctl_commands[i].arg ? rctl_commands[i].arg : "");
        fprintf(out, "  %-20s %s\n", use, rctl_commands[i].summary);
    }
    fprintf(out, "\noptions of the Redis commands (stats, nodes, documents, presence, watch):\n");
    help_options(out, C_STATS);
    fprintf(out, "\nRun `relayctl COMMAND --help` for each command's options.\n"
                 "Exit status: 0 ok, 1 failure (e.g. Redis unreachable), 2 usage error.\n");
}

static void help_command(FILE *out, const rctl_command *c)
{
    fprintf(out, "usage: relayctl %s%s%s [options]\n\n%s\noptions:\n", c->name, c->arg ? " " : "",
            c->arg ? c->arg : "", c->help);
    help_options(out, c->bit);
}

/* ---- parsing ----------------------------------------------------------------------------- */

static const rctl_command *command_find(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (!strcmp(rctl_commands[i].name, name))
            return &rctl_commands[i];
    return NULL;
}

static const rctl_option *option_find(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strlen(rctl_options[i].name) == len && !strncmp(rctl_options[i].name, name, len))
            return &rctl_options[i];
    return NULL;
}

/* Stores value into the option's field. Returns 0, or -1 after printing why; from names where
 * the value came from (a flag or an environment variable). */
static int option_set(rctl *o, const rctl_option *op, const char *value, const char *from)
{
    void *field = (char *)o + op->off;
    if (op->type == OPT_STR) {
        *(const char **)field = value;
        return 0;
    }
    char *end;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (!*value || *end || errno || v < op->min || v > op->max) {
        fprintf(stderr, "relayctl: %s must be an integer in [%ld, %ld], got '%s'\n", from, op->min,
                op->max, value);
        return -1;
    }
    *(long *)field = v;
    return 0;
}

/* Defaults, then the environment. Returns 0 or -1. */
static int options_defaults(rctl *o)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const rctl_option *op = &rctl_options[i];
        const char *env = op->env ? getenv(op->env) : NULL;
        if (op->def && option_set(o, op, op->def, op->name) < 0)
            return -1;
        if (env && env[0] && option_set(o, op, env, op->env) < 0)
            return -1;
    }
    return 0;
}

typedef struct rctl_args {
    const rctl_command *cmd;
    bool help;
    uint32_t given; /* bit i: rctl_options[i] was on the command line */
    const char *pos[2];
    size_t n_pos;
} rctl_args;

/* Reads one "--name[=value]" at argv[*i] (taking the value from argv[*i + 1] when needed).
 * Returns 0 or -1 after printing why. */
static int args_option(rctl *o, rctl_args *a, int argc, char **argv, int *i)
{
    const char *name = argv[*i] + 2, *eq = strchr(name, '=');
    size_t len = eq ? (size_t)(eq - name) : strlen(name);
    if (len == 4 && !strncmp(name, "help", 4)) {
        a->help = true;
        return 0;
    }
    const rctl_option *op = option_find(name, len);
    if (!op) {
        fprintf(stderr, "relayctl: unknown option '--%.*s' (see relayctl --help)\n", (int)len,
                name);
        return -1;
    }
    a->given |= 1u << (op - rctl_options);
    if (op->type == OPT_FLAG) {
        if (eq) {
            fprintf(stderr, "relayctl: --%s takes no value\n", op->name);
            return -1;
        }
        *(bool *)((char *)o + op->off) = true;
        return 0;
    }
    const char *value = eq ? eq + 1 : NULL;
    if (!value && *i + 1 < argc)
        value = argv[++*i];
    if (!value) {
        fprintf(stderr, "relayctl: --%s needs a value\n", op->name);
        return -1;
    }
    char from[64];
    snprintf(from, sizeof from, "--%s", op->name);
    return option_set(o, op, value, from);
}

/* Parses argv: options may come before or after the command. Returns 0 or -1 (usage error,
 * printed). */
static int args_parse(rctl *o, rctl_args *a, int argc, char **argv)
{
    bool dashdash = false;
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!dashdash && !strcmp(s, "--")) {
            dashdash = true;
        } else if (!dashdash && (!strcmp(s, "-h") || !strcmp(s, "--help"))) {
            a->help = true;
        } else if (!dashdash && !strncmp(s, "--", 2)) {
            if (args_option(o, a, argc, argv, &i) < 0)
                return -1;
        } else if (!dashdash && s[0] == '-' && s[1]) {
            fprintf(stderr, "relayctl: unknown option '%s' (see relayctl --help)\n", s);
            return -1;
        } else if (!a->cmd && strcmp(s, "help") != 0) {
            if (!(a->cmd = command_find(s))) {
                fprintf(stderr, "relayctl: unknown command '%s' (see relayctl --help)\n", s);
                return -1;
            }
        } else if (!a->cmd) {
            a->help = true; /* "relayctl help [COMMAND]" */
        } else if (a->n_pos < 1) {
            a->pos[a->n_pos++] = s;
        } else {
            fprintf(stderr, "relayctl %s: unexpected argument '%s'\n", a->cmd->name, s);
            return -1;
        }
    }
    return 0;
}

/* Checks that every option given applies to the command and the positional is there. */
static int args_check(const rctl_args *a)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if ((a->given & (1u << i)) && !(rctl_options[i].cmds & a->cmd->bit)) {
            fprintf(stderr, "relayctl %s: --%s does not apply to this command\n", a->cmd->name,
                    rctl_options[i].name);
            return -1;
        }
    }
    if (a->cmd->arg && a->n_pos == 0) {
        fprintf(stderr, "relayctl %s: missing %s (usage: relayctl %s %s)\n", a->cmd->name,
                a->cmd->arg, a->cmd->name, a->cmd->arg);
        return -1;
    }
    if (!a->cmd->arg && a->n_pos > 0) {
        fprintf(stderr, "relayctl %s: unexpected argument '%s'\n", a->cmd->name, a->pos[0]);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    rctl o = {0};
    rctl_args a = {0};
    if (options_defaults(&o) < 0)
        return RCTL_USAGE;
    if (args_parse(&o, &a, argc, argv) < 0)
        return RCTL_USAGE;
    if (a.help) {
        if (a.cmd)
            help_command(stdout, a.cmd);
        else
            help_main(stdout);
        return RCTL_OK;
    }
    if (!a.cmd) {
        help_main(stderr);
        return RCTL_USAGE;
    }
    if (args_check(&a) < 0)
        return RCTL_USAGE;
    o.arg = a.n_pos ? a.pos[0] : NULL;
    if ((a.cmd->bit & C_REDIS) && !o.prefix[0]) {
        fprintf(stderr, "relayctl: --prefix must not be empty\n");
        return RCTL_USAGE;
    }
    if (a.cmd->bit & C_REDIS) {
        rctl_url u;
        char err[512];
        if (rctl_url_parse(o.redis_url, &u, err, sizeof err) < 0) {
            fprintf(stderr, "relayctl: %s\n", err);
            return RCTL_USAGE;
        }
    }
    int rc = a.cmd->run(&o);
    rctl_disconnect(&o);
    return rc;
}
