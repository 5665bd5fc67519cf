/**
 * @file config.h
 * relay-node's configuration: one table defines every option, its flag, its environment
 * variable, its bounds and its default. The same table drives parsing, validation, --help and the
 * README's configuration table (`relay-node --help-markdown`).
 *
 * Precedence: defaults < environment < command-line flags.
 */
#ifndef RELAY_CONFIG_H
#define RELAY_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#include "relay/log.h"

typedef struct relay_config {
    int port;
    char *bind;
    char *node_id;
    char *jwt_secret;
    char *jwt_keys;
    char *jwt_audience;
    char *jwt_issuer;
    int jwt_leeway;
    char *redis_url;
    char *redis_prefix;
    int max_message_size;
    int max_cursor_size;
    int max_ref_size;
    int rate_limit;
    int rate_burst;
    int max_connections;
    int write_delay;
    int history_length;
    int history_ttl;
    int sync_limit;
    int auth_timeout;
    int resume_ttl;
    int dedup_window;
    int node_ttl;
    char *allowed_origins;
    log_level log_level;
    int drain_delay;
    int drain_time;
    bool shed;
    int shed_threshold;
    /* Set by flags only. */
    bool check_config;
    bool help;
    bool help_markdown;
} relay_config;

/* Fills cfg with defaults, then the environment (envp, NULL-terminated "NAME=value" strings),
 * then argv. Returns 0, or -1 with the reason in err; cfg must be freed with config_free() either
 * way. Validation covers bounds and cross-field rules (a JWT key is required unless help was
 * asked for; rediss:// is refused). */
int config_load(relay_config *cfg, int argc, char **argv, char **envp, char *err, size_t errlen);
void config_free(relay_config *cfg);

/* Writes the option table as --help text, or as a Markdown table for the README. */
void config_print_help(FILE *out, const char *prog);
void config_print_markdown(FILE *out);

#endif
