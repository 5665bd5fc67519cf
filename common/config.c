#include "relay/config.h"

#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { OPT_INT, OPT_STR, OPT_BOOL, OPT_LEVEL, OPT_FLAG } config_kind;

/* One row per option: the single source of flags, environment, bounds, defaults and help. */
typedef struct config_option {
    const char *flag; /* without the leading "--" */
    const char *env;  /* NULL: flag only */
    config_kind kind;
    size_t offset;
    long min, max;
    const char *def; /* default as text, NULL: unset */
    const char *help;
} config_option;

#define OFF(f) offsetof(relay_config, f)

static const config_option config_options[] = {
    {"port", "RELAY_PORT", OPT_INT, OFF(port), 1, 65535, "8080", "TCP port for WebSocket and HTTP"},
    {"bind", "RELAY_BIND", OPT_STR, OFF(bind), 0, 0, "0.0.0.0", "Address to listen on"},
    {"node-id", "RELAY_NODE_ID", OPT_STR, OFF(node_id), 0, 0, NULL,
     "Node name in stats and Redis (default: host name)"},
    {"jwt-secret", "RELAY_JWT_SECRET", OPT_STR, OFF(jwt_secret), 0, 0, NULL,
     "HS256 secret for tokens without a kid"},
    {"jwt-keys", "RELAY_JWT_KEYS", OPT_STR, OFF(jwt_keys), 0, 0, NULL,
     "Path of a JSON key set (kid, alg, secret or public key; see docs/SECURITY.md)"},
    {"jwt-audience", "RELAY_JWT_AUDIENCE", OPT_STR, OFF(jwt_audience), 0, 0, NULL,
     "Required token audience (aud), unchecked when unset"},
    {"jwt-issuer", "RELAY_JWT_ISSUER", OPT_STR, OFF(jwt_issuer), 0, 0, NULL,
     "Required token issuer (iss), unchecked when unset"},
    {"jwt-leeway", "RELAY_JWT_LEEWAY", OPT_INT, OFF(jwt_leeway), 0, 3600, "30",
     "Clock leeway for exp and nbf, seconds"},
    {"redis", "RELAY_REDIS_URL", OPT_STR, OFF(redis_url), 0, 0, NULL,
     "redis://[user:password@]host:port[/db]; unset runs a standalone node"},
    {"redis-prefix", "RELAY_REDIS_PREFIX", OPT_STR, OFF(redis_prefix), 0, 0,
     "relay:", "Prefix of every Redis key and channel"},
    {"max-message-size", "RELAY_MAX_MESSAGE_SIZE", OPT_INT, OFF(max_message_size), 1024,
     64 * 1024 * 1024, "1048576", "Largest client message, bytes (over it: close 1009)"},
    {"max-cursor-size", "RELAY_MAX_CURSOR_SIZE", OPT_INT, OFF(max_cursor_size), 16, 1048576, "4096",
     "Largest cursor value, encoded bytes"},
    {"max-ref-size", "RELAY_MAX_REF_SIZE", OPT_INT, OFF(max_ref_size), 8, 65536, "256",
     "Largest ref value, encoded bytes"},
    {"rate-limit", "RELAY_RATE_LIMIT", OPT_INT, OFF(rate_limit), 1, 10000000, "2000",
     "Messages per second per connection"},
    {"rate-burst", "RELAY_RATE_BURST", OPT_INT, OFF(rate_burst), 1, 100000000, "4000",
     "Burst allowance per connection, messages"},
    {"max-connections", "RELAY_MAX_CONNECTIONS", OPT_INT, OFF(max_connections), 0, 10000000, "0",
     "Connection limit per node, 0 = bounded by open files"},
    {"write-delay", "RELAY_WRITE_DELAY", OPT_INT, OFF(write_delay), 0, 1000, "5",
     "Longest wait, ms, for a busy connection's broadcasts to leave in one write (0: never)"},
    {"history-length", "RELAY_HISTORY_LENGTH", OPT_INT, OFF(history_length), 1, 10000000, "10000",
     "Operations kept per document for sync_request"},
    {"history-ttl", "RELAY_HISTORY_TTL", OPT_INT, OFF(history_ttl), 1, 31536000, "86400",
     "Idle seconds after which a document's history expires (new epoch)"},
    {"sync-limit", "RELAY_SYNC_LIMIT", OPT_INT, OFF(sync_limit), 1, 100000, "1000",
     "Most operations in one sync_response"},
    {"auth-timeout", "RELAY_AUTH_TIMEOUT", OPT_INT, OFF(auth_timeout), 1, 3600, "10",
     "Seconds a connection may stay unauthenticated (then close 4002)"},
    {"resume-ttl", "RELAY_RESUME_TTL", OPT_INT, OFF(resume_ttl), 1, 86400, "300",
     "Seconds a disconnected session can be resumed"},
    {"dedup-window", "RELAY_DEDUP_WINDOW", OPT_INT, OFF(dedup_window), 1, 86400, "300",
     "Seconds an operation ref is remembered for idempotent retries"},
    {"node-ttl", "RELAY_NODE_TTL", OPT_INT, OFF(node_ttl), 2, 300, "6",
     "Seconds without heartbeat after which a node counts as dead"},
    {"allowed-origins", "RELAY_ALLOWED_ORIGINS", OPT_STR, OFF(allowed_origins), 0, 0, NULL,
     "Comma-separated Origin allow-list (exact match); unset allows any"},
    {"log-level", "RELAY_LOG_LEVEL", OPT_LEVEL, OFF(log_level), 0, 0, "info",
     "debug, info, warn, error or off"},
    {"drain-delay", "RELAY_DRAIN_DELAY", OPT_INT, OFF(drain_delay), 0, 300, "0",
     "Seconds to keep serving after SIGTERM while /readyz fails"},
    {"drain-time", "RELAY_DRAIN_TIME", OPT_INT, OFF(drain_time), 0, 600, "2",
     "Seconds over which clients are closed with 1001 during a drain"},
    {"shed", "RELAY_SHED", OPT_BOOL, OFF(shed), 0, 0, "false",
     "Shed connections above the cluster average after a scale-out"},
    {"shed-threshold", "RELAY_SHED_THRESHOLD", OPT_INT, OFF(shed_threshold), 101, 1000, "125",
     "Shed above this percentage of the cluster's average connections"},
    {"check-config", NULL, OPT_FLAG, OFF(check_config), 0, 0, NULL,
     "Validate the configuration and exit"},
    {"help", NULL, OPT_FLAG, OFF(help), 0, 0, NULL, "Show this help and exit"},
    {"help-markdown", NULL, OPT_FLAG, OFF(help_markdown), 0, 0, NULL,
     "Print the configuration table in Markdown and exit"},
};

#define N_OPTIONS (sizeof config_options / sizeof config_options[0])

static int config_parse_bool(const char *s, bool *out)
{
    if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes") || !strcmp(s, "on")) {
        *out = true;
        return 0;
    }
    if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no") || !strcmp(s, "off")) {
        *out = false;
        return 0;
    }
    return -1;
}

/* Stores value into the option's field. Returns 0, or -1 with the reason in err. */
static int config_set(relay_config *cfg, const config_option *o, const char *value,
                      const char *source, char *err, size_t errlen)
{
    char *field = (char *)cfg + o->offset;
    switch (o->kind) {
    case OPT_INT: {
        char *end;
        errno = 0;
        long v = strtol(value, &end, 10);
        if (errno || end == value || *end || v < o->min || v > o->max) {
            snprintf(err, errlen, "%s: '%s' must be an integer from %ld to %ld", source, value,
                     o->min, o->max);
            return -1;
        }
        *(int *)field = (int)v;
        return 0;
    }
    case OPT_STR: {
        char *copy = strdup(value);
        if (!copy) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        free(*(char **)field);
        *(char **)field = copy;
        return 0;
    }
    case OPT_BOOL:
        if (config_parse_bool(value, (bool *)field) == 0)
            return 0;
        snprintf(err, errlen, "%s: '%s' must be true or false", source, value);
        return -1;
    case OPT_LEVEL:
        if (log_level_parse(value, (log_level *)field) == 0)
            return 0;
        snprintf(err, errlen, "%s: '%s' must be debug, info, warn, error or off", source, value);
        return -1;
    case OPT_FLAG:
        *(bool *)field = true;
        return 0;
    }
    return -1;
}

static const config_option *config_find_flag(const char *name, size_t len)
{
    for (size_t i = 0; i < N_OPTIONS; i++)
        if (strlen(config_options[i].flag) == len && !strncmp(config_options[i].flag, name, len))
            return &config_options[i];
    return NULL;
}

static int config_load_env(relay_config *cfg, char **envp, char *err, size_t errlen)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const config_option *o = &config_options[i];
        if (!o->env)
            continue;
        size_t n = strlen(o->env);
        for (char **e = envp; e && *e; e++) {
            if (!strncmp(*e, o->env, n) && (*e)[n] == '=' &&
                config_set(cfg, o, *e + n + 1, o->env, err, errlen) < 0)
                return -1;
        }
    }
    return 0;
}

/* Accepts --name value, --name=value and, for flags and booleans, a bare --name. */
static int config_load_args(relay_config *cfg, int argc, char **argv, char *err, size_t errlen)
{
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strncmp(arg, "--", 2) != 0) {
            snprintf(err, errlen, "unexpected argument '%s' (see --help)", arg);
            return -1;
        }
        const char *name = arg + 2, *eq = strchr(name, '=');
        size_t len = eq ? (size_t)(eq - name) : strlen(name);
        const config_option *o = config_find_flag(name, len);
        if (!o) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", arg);
            return -1;
        }
        const char *value = eq ? eq + 1 : NULL;
        if (!value && (o->kind == OPT_FLAG || o->kind == OPT_BOOL))
            value = "true";
        if (!value) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "option '--%s' needs a value", o->flag);
                return -1;
            }
            value = argv[++i];
        }
        if (o->kind == OPT_FLAG && eq) {
            snprintf(err, errlen, "option '--%s' takes no value", o->flag);
            return -1;
        }
        if (config_set(cfg, o, value, arg, err, errlen) < 0)
            return -1;
    }
    return 0;
}

static bool config_empty(const char *s)
{
    return !s || !*s;
}

/* Cross-field rules that no single option can check. */
static int config_validate(relay_config *cfg, char *err, size_t errlen)
{
    if (cfg->help || cfg->help_markdown)
        return 0;
    if (config_empty(cfg->jwt_secret) && config_empty(cfg->jwt_keys)) {
        snprintf(err, errlen,
                 "no token key: set --jwt-secret/RELAY_JWT_SECRET or --jwt-keys/RELAY_JWT_KEYS");
        return -1;
    }
    if (cfg->redis_url && !strncmp(cfg->redis_url, "rediss://", 9)) {
        snprintf(err, errlen,
                 "rediss:// is not supported (hiredis 0.14 has no TLS); use "
                 "redis:// on a trusted network");
        return -1;
    }
    if (!config_empty(cfg->redis_url) && strncmp(cfg->redis_url, "redis://", 8) != 0) {
        snprintf(err, errlen, "--redis must be a redis:// URL, got '%s'", cfg->redis_url);
        return -1;
    }
    if (cfg->rate_burst < cfg->rate_limit) {
        snprintf(err, errlen, "--rate-burst (%d) must be at least --rate-limit (%d)",
                 cfg->rate_burst, cfg->rate_limit);
        return -1;
    }
    if (config_empty(cfg->redis_prefix)) {
        snprintf(err, errlen, "--redis-prefix must not be empty");
        return -1;
    }
    for (const char *p = cfg->node_id; p && *p; p++) {
        if (!isalnum((unsigned char)*p) && !strchr("._:-", *p)) {
            snprintf(err, errlen, "--node-id '%s' may only hold [A-Za-z0-9._:-]", cfg->node_id);
            return -1;
        }
    }
    return 0;
}

static int config_default_node_id(relay_config *cfg)
{
    char host[256];
    if (gethostname(host, sizeof host) != 0)
        snprintf(host, sizeof host, "relay");
    host[sizeof host - 1] = '\0';
    cfg->node_id = strdup(host);
    return cfg->node_id ? 0 : -1;
}

int config_load(relay_config *cfg, int argc, char **argv, char **envp, char *err, size_t errlen)
{
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const config_option *o = &config_options[i];
        if (o->def && config_set(cfg, o, o->def, "default", err, errlen) < 0)
            return -1;
    }
    if (config_load_env(cfg, envp, err, errlen) < 0 ||
        config_load_args(cfg, argc, argv, err, errlen) < 0)
        return -1;
    if (config_empty(cfg->node_id) && config_default_node_id(cfg) < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    return config_validate(cfg, err, errlen);
}

void config_free(relay_config *cfg)
{
    for (size_t i = 0; i < N_OPTIONS; i++) {
        if (config_options[i].kind == OPT_STR) {
            char **field = (char **)((char *)cfg + config_options[i].offset);
            free(*field);
            *field = NULL;
        }
    }
}

void config_print_help(FILE *out, const char *prog)
{
    fprintf(out,
            "Usage: %s [options]\n\nrelay-node: WebSocket relay for collaborative documents."
            "\nEvery option can also be set by its environment variable; flags win.\n\n",
            prog);
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const config_option *o = &config_options[i];
        char left[64];
        snprintf(left, sizeof left, "--%s%s", o->flag,
                 o->kind == OPT_FLAG ? "" : (o->kind == OPT_BOOL ? "[=BOOL]" : " VALUE"));
        fprintf(out, "  %-28s %s", left, o->help);
        if (o->def)
            fprintf(out, " [default: %s]", o->def);
        if (o->env)
            fprintf(out, " (env %s)", o->env);
        fputc('\n', out);
    }
}

void config_print_markdown(FILE *out)
{
    fprintf(out, "| Flag | Environment | Default | Meaning |\n|---|---|---|---|\n");
    for (size_t i = 0; i < N_OPTIONS; i++) {
        const config_option *o = &config_options[i];
        fprintf(out, "| `--%s` | %s%s%s | %s | %s |\n", o->flag, o->env ? "`" : "",
                o->env ? o->env : "-", o->env ? "`" : "", o->def ? o->def : "-", o->help);
    }
}
