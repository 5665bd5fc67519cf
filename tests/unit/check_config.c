/*
 * check_config.c: relay-node's configuration table: defaults, environment over defaults, flags
 * over environment, both flag forms, validation errors with clear messages, and --help /
 * --help-markdown listing every option the parser accepts.
 *
 * The environment is passed to config_load() as an array, never taken from the process, so the
 * tests do not depend on (or change) the real environment.
 */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "relay/config.h"

#define KEY_ENV "RELAY_JWT_SECRET=unit-test-secret"

static char err[512];
static relay_config cfg;

/* Loads from a NULL-terminated argv (without the program name) and envp. */
static int load(char **args, char **envp)
{
    char *argv[32] = {"relay-node"};
    int argc = 1;
    for (char **a = args; a && *a; a++) {
        ck_assert_int_lt(argc, 31);
        argv[argc++] = *a;
    }
    argv[argc] = NULL;
    err[0] = '\0';
    return config_load(&cfg, argc, argv, envp, err, sizeof err);
}

static void teardown(void)
{
    config_free(&cfg);
}

/* Asserts that loading fails with an error naming every given fragment. */
static void assert_fails(char **args, char **envp, const char *frag, ...)
{
    ck_assert_int_eq(load(args, envp), -1);
    ck_assert_msg(err[0] != '\0', "no error text");
    va_list ap;
    va_start(ap, frag);
    for (const char *f = frag; f; f = va_arg(ap, const char *))
        ck_assert_msg(strstr(err, f) != NULL, "error '%s' does not mention '%s'", err, f);
    va_end(ap);
    config_free(&cfg);
}

START_TEST(test_defaults)
{
    char *env[] = {KEY_ENV, NULL};
    ck_assert_int_eq(load(NULL, env), 0);
    ck_assert_int_eq(cfg.port, 8080);
    ck_assert_str_eq(cfg.bind, "0.0.0.0");
    ck_assert_str_eq(cfg.jwt_secret, "unit-test-secret");
    ck_assert_ptr_null(cfg.jwt_keys);
    ck_assert_ptr_null(cfg.jwt_audience);
    ck_assert_ptr_null(cfg.jwt_issuer);
    ck_assert_int_eq(cfg.jwt_leeway, 30);
    ck_assert_ptr_null(cfg.redis_url); /* standalone */
    ck_assert_str_eq(cfg.redis_prefix, "relay:");
    ck_assert_int_eq(cfg.max_message_size, 1048576);
    ck_assert_int_eq(cfg.max_cursor_size, 4096);
    ck_assert_int_eq(cfg.max_ref_size, 256);
    ck_assert_int_eq(cfg.rate_limit, 2000);
    ck_assert_int_eq(cfg.rate_burst, 4000);
    ck_assert_int_eq(cfg.max_connections, 0);
    ck_assert_int_eq(cfg.history_length, 10000);
    ck_assert_int_eq(cfg.history_ttl, 86400);
    ck_assert_int_eq(cfg.sync_limit, 1000);
    ck_assert_int_eq(cfg.auth_timeout, 10);
    ck_assert_int_eq(cfg.resume_ttl, 300);
    ck_assert_int_eq(cfg.dedup_window, 300);
    ck_assert_int_eq(cfg.node_ttl, 6);
    ck_assert_ptr_null(cfg.allowed_origins);
    ck_assert_int_eq(cfg.log_level, LOG_INFO);
    ck_assert_int_eq(cfg.drain_delay, 0);
    ck_assert_int_eq(cfg.drain_time, 2);
    ck_assert(!cfg.shed);
    ck_assert_int_eq(cfg.shed_threshold, 125);
    ck_assert(!cfg.check_config && !cfg.help && !cfg.help_markdown);

    /* node-id defaults to the host name. */
    char host[256];
    ck_assert_int_eq(gethostname(host, sizeof host), 0);
    host[sizeof host - 1] = '\0';
    ck_assert_ptr_nonnull(cfg.node_id);
    ck_assert_str_eq(cfg.node_id, host);
}
END_TEST

START_TEST(test_env_overrides)
{
    char *env[] = {
        "HOME=/nowhere", "RELAY_PORT=9001", "RELAY_BIND=127.0.0.1", "RELAY_NODE_ID=node-a",
        "RELAY_JWT_KEYS=/etc/relay/keys.json", "RELAY_JWT_AUDIENCE=aud", "RELAY_JWT_ISSUER=iss",
        "RELAY_JWT_LEEWAY=5", "RELAY_REDIS_URL=redis://127.0.0.1:6379/0",
        "RELAY_REDIS_PREFIX=t:", "RELAY_MAX_MESSAGE_SIZE=2048", "RELAY_RATE_LIMIT=50",
        "RELAY_RATE_BURST=60", "RELAY_MAX_CONNECTIONS=7", "RELAY_HISTORY_LENGTH=11",
        "RELAY_AUTH_TIMEOUT=3", "RELAY_ALLOWED_ORIGINS=https://a.example,https://b.example",
        "RELAY_LOG_LEVEL=debug", "RELAY_SHED=yes", "RELAY_SHED_THRESHOLD=150",
        /* Near misses must not match an option. */
        "RELAY_PORTX=1", "RELAY_PORT", "XRELAY_PORT=2", NULL};
    ck_assert_int_eq(load(NULL, env), 0);
    ck_assert_int_eq(cfg.port, 9001);
    ck_assert_str_eq(cfg.bind, "127.0.0.1");
    ck_assert_str_eq(cfg.node_id, "node-a");
    ck_assert_ptr_null(cfg.jwt_secret);
    ck_assert_str_eq(cfg.jwt_keys, "/etc/relay/keys.json");
    ck_assert_str_eq(cfg.jwt_audience, "aud");
    ck_assert_str_eq(cfg.jwt_issuer, "iss");
    ck_assert_int_eq(cfg.jwt_leeway, 5);
    ck_assert_str_eq(cfg.redis_url, "redis://127.0.0.1:6379/0");
    ck_assert_str_eq(cfg.redis_prefix, "t:");
    ck_assert_int_eq(cfg.max_message_size, 2048);
    ck_assert_int_eq(cfg.rate_limit, 50);
    ck_assert_int_eq(cfg.rate_burst, 60);
    ck_assert_int_eq(cfg.max_connections, 7);
    ck_assert_int_eq(cfg.history_length, 11);
    ck_assert_int_eq(cfg.auth_timeout, 3);
    ck_assert_str_eq(cfg.allowed_origins, "https://a.example,https://b.example");
    ck_assert_int_eq(cfg.log_level, LOG_DEBUG);
    ck_assert(cfg.shed);
    ck_assert_int_eq(cfg.shed_threshold, 150);
}
END_TEST

START_TEST(test_flags_override_env)
{
    char *env[] = {KEY_ENV,           "RELAY_PORT=9001",       "RELAY_NODE_ID=from-env",
                   "RELAY_SHED=true", "RELAY_LOG_LEVEL=error", NULL};
    char *args[] = {"--port",       "9002",        "--node-id=from-flag",
                    "--shed=false", "--log-level", "warn",
                    "--jwt-secret", "flag-secret", NULL};
    ck_assert_int_eq(load(args, env), 0);
    ck_assert_int_eq(cfg.port, 9002);
    ck_assert_str_eq(cfg.node_id, "from-flag");
    ck_assert(!cfg.shed);
    ck_assert_int_eq(cfg.log_level, LOG_WARN);
    ck_assert_str_eq(cfg.jwt_secret, "flag-secret");
}
END_TEST

/* --name=value and --name value mean the same; a later flag wins over an earlier one. */
START_TEST(test_flag_forms)
{
    char *env[] = {KEY_ENV, NULL};
    char *spaced[] = {"--port", "1234", "--redis", "redis://h:1", "--bind", "::1", NULL};
    ck_assert_int_eq(load(spaced, env), 0);
    ck_assert_int_eq(cfg.port, 1234);
    ck_assert_str_eq(cfg.redis_url, "redis://h:1");
    ck_assert_str_eq(cfg.bind, "::1");
    config_free(&cfg);

    char *joined[] = {"--port=1234", "--redis=redis://h:1", "--bind=::1", NULL};
    ck_assert_int_eq(load(joined, env), 0);
    ck_assert_int_eq(cfg.port, 1234);
    ck_assert_str_eq(cfg.redis_url, "redis://h:1");
    ck_assert_str_eq(cfg.bind, "::1");
    config_free(&cfg);

    /* A value may itself contain '=' and start with "--" in the spaced form. */
    char *tricky[] = {
        "--jwt-secret=a=b", "--jwt-issuer", "--not-a-flag", "--port=1", "--port", "2", NULL};
    ck_assert_int_eq(load(tricky, NULL), 0);
    ck_assert_str_eq(cfg.jwt_secret, "a=b");
    ck_assert_str_eq(cfg.jwt_issuer, "--not-a-flag");
    ck_assert_int_eq(cfg.port, 2);
}
END_TEST

START_TEST(test_bool_and_flag_options)
{
    char *env[] = {KEY_ENV, NULL};
    char *bare[] = {"--shed", "--check-config", NULL};
    ck_assert_int_eq(load(bare, env), 0);
    ck_assert(cfg.shed);
    ck_assert(cfg.check_config);
    config_free(&cfg);

    static const struct {
        const char *arg;
        bool value;
    } forms[] = {{"--shed=true", true}, {"--shed=1", true},      {"--shed=yes", true},
                 {"--shed=on", true},   {"--shed=false", false}, {"--shed=0", false},
                 {"--shed=no", false},  {"--shed=off", false}};
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        char *args[] = {(char *)forms[i].arg, NULL};
        ck_assert_int_eq(load(args, env), 0);
        ck_assert_msg(cfg.shed == forms[i].value, "%s", forms[i].arg);
        config_free(&cfg);
    }

    char *bad_bool[] = {"--shed=maybe", NULL};
    assert_fails(bad_bool, env, "maybe", "true or false", NULL);
    char *bad_env_bool[] = {KEY_ENV, "RELAY_SHED=2", NULL};
    assert_fails(NULL, bad_env_bool, "RELAY_SHED", NULL);
    char *flag_value[] = {"--check-config=yes", NULL};
    assert_fails(flag_value, env, "--check-config", "takes no value", NULL);
}
END_TEST

START_TEST(test_unknown_and_malformed_arguments)
{
    char *env[] = {KEY_ENV, NULL};
    char *unknown[] = {"--port=1", "--frobnicate", NULL};
    assert_fails(unknown, env, "unknown option", "--frobnicate", NULL);
    char *unknown_eq[] = {"--frobnicate=3", NULL};
    assert_fails(unknown_eq, env, "unknown option", NULL);
    char *prefix[] = {"--por=1", NULL}; /* no prefix matching */
    assert_fails(prefix, env, "unknown option", NULL);
    char *single_dash[] = {"-port", "1", NULL};
    assert_fails(single_dash, env, "unexpected argument", "-port", NULL);
    char *positional[] = {"serve", NULL};
    assert_fails(positional, env, "unexpected argument", "serve", NULL);
    char *missing[] = {"--port", NULL};
    assert_fails(missing, env, "--port", "needs a value", NULL);
    char *bad_level[] = {"--log-level=loud", NULL};
    assert_fails(bad_level, env, "loud", "debug, info, warn, error or off", NULL);
}
END_TEST

/* Integers outside their bounds or not integers at all: the message names the source, the
 * value and the accepted range. */
static const struct {
    const char *arg;
    const char *env;
    const char *frag1, *frag2;
} bad_ints[] = {
    {"--port=70000", NULL, "70000", "from 1 to 65535"},
    {"--port=0", NULL, "'0'", "from 1 to 65535"},
    {"--port=-1", NULL, "'-1'", "from 1 to 65535"},
    {"--port=80x", NULL, "80x", "integer"},
    {"--port=", NULL, "--port", "integer"},
    {"--port=99999999999999999999", NULL, "99999999999999999999", "from 1 to 65535"},
    {"--max-message-size=1023", NULL, "1023", "from 1024 to 67108864"},
    {"--node-ttl=1", NULL, "--node-ttl", "from 2 to 300"},
    {"--shed-threshold=100", NULL, "100", "from 101 to 1000"},
    {"--jwt-leeway=3601", NULL, "3601", "from 0 to 3600"},
    {NULL, "RELAY_PORT=65536", "RELAY_PORT", "from 1 to 65535"},
    {NULL, "RELAY_AUTH_TIMEOUT=0", "RELAY_AUTH_TIMEOUT", "from 1 to 3600"},
    {NULL, "RELAY_RATE_LIMIT=fast", "RELAY_RATE_LIMIT", "fast"},
};

START_TEST(test_out_of_range_ints)
{
    char *env[] = {KEY_ENV, (char *)bad_ints[_i].env, NULL};
    char *args[] = {(char *)bad_ints[_i].arg, NULL};
    assert_fails(bad_ints[_i].arg ? args : NULL, env, bad_ints[_i].frag1, bad_ints[_i].frag2, NULL);
}
END_TEST

START_TEST(test_bounds_inclusive)
{
    char *env[] = {KEY_ENV, NULL};
    char *low[] = {"--port=1", "--max-message-size=1024", "--node-ttl=2", NULL};
    ck_assert_int_eq(load(low, env), 0);
    ck_assert_int_eq(cfg.port, 1);
    ck_assert_int_eq(cfg.max_message_size, 1024);
    ck_assert_int_eq(cfg.node_ttl, 2);
    config_free(&cfg);
    char *high[] = {"--port=65535", "--max-message-size=67108864", "--node-ttl=300", NULL};
    ck_assert_int_eq(load(high, env), 0);
    ck_assert_int_eq(cfg.port, 65535);
    ck_assert_int_eq(cfg.max_message_size, 67108864);
    ck_assert_int_eq(cfg.node_ttl, 300);
}
END_TEST

START_TEST(test_token_key_required)
{
    assert_fails(NULL, NULL, "no token key", "--jwt-secret", "RELAY_JWT_SECRET", NULL);
    char *empty_env[] = {"RELAY_JWT_SECRET=", NULL};
    assert_fails(NULL, empty_env, "no token key", NULL);
    char *empty_flag[] = {"--jwt-secret", "", NULL};
    assert_fails(empty_flag, NULL, "no token key", NULL);
    /* --check-config validates, so it needs a key too. */
    char *check[] = {"--check-config", NULL};
    assert_fails(check, NULL, "no token key", NULL);

    /* A key set alone is enough. */
    char *keys[] = {"--jwt-keys=/etc/relay/keys.json", NULL};
    ck_assert_int_eq(load(keys, NULL), 0);
}
END_TEST

START_TEST(test_help_needs_no_key)
{
    char *help[] = {"--help", NULL};
    ck_assert_int_eq(load(help, NULL), 0);
    ck_assert(cfg.help);
    config_free(&cfg);
    char *md[] = {"--help-markdown", NULL};
    ck_assert_int_eq(load(md, NULL), 0);
    ck_assert(cfg.help_markdown);
    config_free(&cfg);
    /* Parse errors still count with --help: a typo is not silently ignored. */
    char *typo[] = {"--help", "--prot=1", NULL};
    assert_fails(typo, NULL, "unknown option", NULL);
}
END_TEST

START_TEST(test_redis_url_rules)
{
    char *env[] = {KEY_ENV, NULL};
    char *tls[] = {"--redis=rediss://cache.example:6380", NULL};
    assert_fails(tls, env, "rediss://", "not supported", NULL);
    char *tls_env[] = {KEY_ENV, "RELAY_REDIS_URL=rediss://cache.example:6380", NULL};
    assert_fails(NULL, tls_env, "rediss://", "not supported", NULL);
    char *http[] = {"--redis=http://cache.example", NULL};
    assert_fails(http, env, "redis://", "http://cache.example", NULL);
    char *ok[] = {"--redis=redis://user:pw@cache.example:6379/2", NULL};
    ck_assert_int_eq(load(ok, env), 0);
    ck_assert_str_eq(cfg.redis_url, "redis://user:pw@cache.example:6379/2");
    config_free(&cfg);
    /* An empty URL means standalone, as unset does. */
    char *empty[] = {"--redis=", NULL};
    ck_assert_int_eq(load(empty, env), 0);
}
END_TEST

START_TEST(test_cross_field_rules)
{
    char *env[] = {KEY_ENV, NULL};
    char *burst[] = {"--rate-limit=100", "--rate-burst=99", NULL};
    assert_fails(burst, env, "--rate-burst (99)", "--rate-limit (100)", NULL);
    char *burst_eq[] = {"--rate-limit=100", "--rate-burst=100", NULL};
    ck_assert_int_eq(load(burst_eq, env), 0);
    config_free(&cfg);
    char *prefix[] = {"--redis-prefix=", NULL};
    assert_fails(prefix, env, "--redis-prefix", NULL);
    char *node[] = {"--node-id=bad node/id", NULL};
    assert_fails(node, env, "--node-id", "bad node/id", NULL);
    char *node_nl[] = {"--node-id=a\nb", NULL}; /* would break logfmt lines and metric labels */
    assert_fails(node_nl, env, "--node-id", NULL);
    char *node_good[] = {"--node-id=relay-0.relay-headless:8080_a", NULL};
    ck_assert_int_eq(load(node_good, env), 0);
    ck_assert_str_eq(cfg.node_id, "relay-0.relay-headless:8080_a");
}
END_TEST

/* config_free is safe after a failed load and twice in a row. */
START_TEST(test_free_after_failure)
{
    char *args[] = {"--bind=x", "--redis-prefix=p", "--port=0", NULL};
    ck_assert_int_eq(load(args, NULL), -1);
    config_free(&cfg);
    config_free(&cfg);
    ck_assert_ptr_null(cfg.bind);
    ck_assert_ptr_null(cfg.redis_prefix);
}
END_TEST

/* Reads everything written to f (from the start) into a malloc'd string and closes f. */
static char *slurp(FILE *f)
{
    ck_assert_int_eq(fseek(f, 0, SEEK_END), 0);
    long len = ftell(f);
    ck_assert_int_gt(len, 0);
    rewind(f);
    char *buf = malloc((size_t)len + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(fread(buf, 1, (size_t)len, f), (size_t)len);
    buf[len] = '\0';
    fclose(f);
    return buf;
}

static char *capture_markdown(void)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    config_print_markdown(f);
    return slurp(f);
}

static char *capture_help(void)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    config_print_help(f, "relay-node");
    return slurp(f);
}

/* The options the issue and the chart rely on, with their environment variables. */
static const char *const documented[][2] = {
    {"--port", "RELAY_PORT"},
    {"--bind", "RELAY_BIND"},
    {"--node-id", "RELAY_NODE_ID"},
    {"--jwt-secret", "RELAY_JWT_SECRET"},
    {"--jwt-keys", "RELAY_JWT_KEYS"},
    {"--jwt-audience", "RELAY_JWT_AUDIENCE"},
    {"--jwt-issuer", "RELAY_JWT_ISSUER"},
    {"--jwt-leeway", "RELAY_JWT_LEEWAY"},
    {"--redis", "RELAY_REDIS_URL"},
    {"--redis-prefix", "RELAY_REDIS_PREFIX"},
    {"--max-message-size", "RELAY_MAX_MESSAGE_SIZE"},
    {"--rate-limit", "RELAY_RATE_LIMIT"},
    {"--rate-burst", "RELAY_RATE_BURST"},
    {"--max-connections", "RELAY_MAX_CONNECTIONS"},
    {"--write-delay", "RELAY_WRITE_DELAY"},
    {"--history-length", "RELAY_HISTORY_LENGTH"},
    {"--auth-timeout", "RELAY_AUTH_TIMEOUT"},
    {"--resume-ttl", "RELAY_RESUME_TTL"},
    {"--allowed-origins", "RELAY_ALLOWED_ORIGINS"},
    {"--log-level", "RELAY_LOG_LEVEL"},
    {"--check-config", NULL},
    {"--help", NULL},
};

START_TEST(test_markdown_and_help_list_every_option)
{
    char *md = capture_markdown();
    char *help = capture_help();
    ck_assert_ptr_nonnull(strstr(md, "| Flag | Environment | Default | Meaning |"));
    ck_assert_ptr_nonnull(strstr(help, "Usage: relay-node"));
    char needle[128];
    for (size_t i = 0; i < sizeof documented / sizeof documented[0]; i++) {
        snprintf(needle, sizeof needle, "| `%s` |", documented[i][0]);
        ck_assert_msg(strstr(md, needle), "markdown lacks %s", documented[i][0]);
        snprintf(needle, sizeof needle, "  %s", documented[i][0]);
        ck_assert_msg(strstr(help, needle), "--help lacks %s", documented[i][0]);
        if (documented[i][1]) {
            snprintf(needle, sizeof needle, "`%s`", documented[i][1]);
            ck_assert_msg(strstr(md, needle), "markdown lacks %s", documented[i][1]);
            snprintf(needle, sizeof needle, "(env %s)", documented[i][1]);
            ck_assert_msg(strstr(help, needle), "--help lacks %s", documented[i][1]);
        }
    }
    ck_assert_ptr_nonnull(strstr(md, "| `--port` | `RELAY_PORT` | 8080 |"));
    ck_assert_ptr_nonnull(
        strstr(md, "| `--max-message-size` | `RELAY_MAX_MESSAGE_SIZE` | 1048576 |"));

    /* Every row names a flag the parser accepts and --help shows: the table and the parser are
     * one. A row's flag given with no value fails for want of a value, never as unknown. */
    size_t rows = 0;
    for (char *line = strstr(md, "\n| `--"); line; line = strstr(line + 1, "\n| `--")) {
        char flag[64];
        ck_assert_int_eq(sscanf(line, "\n| `%63[^`]`", flag), 1);
        snprintf(needle, sizeof needle, "  %s", flag);
        ck_assert_msg(strstr(help, needle), "--help lacks %s", flag);
        char *args[] = {flag, NULL};
        if (load(args, NULL) < 0)
            ck_assert_msg(!strstr(err, "unknown option"), "%s: %s", flag, err);
        config_free(&cfg);
        rows++;
    }
    ck_assert_uint_ge(rows, sizeof documented / sizeof documented[0]);
    size_t help_rows = 0;
    for (char *line = strstr(help, "\n  --"); line; line = strstr(line + 1, "\n  --"))
        help_rows++;
    ck_assert_uint_eq(help_rows, rows);
    free(md);
    free(help);
}
END_TEST

static Suite *config_suite(void)
{
    Suite *s = suite_create("config");

    TCase *load_tc = tcase_create("load");
    tcase_add_checked_fixture(load_tc, NULL, teardown);
    tcase_add_test(load_tc, test_defaults);
    tcase_add_test(load_tc, test_env_overrides);
    tcase_add_test(load_tc, test_flags_override_env);
    tcase_add_test(load_tc, test_flag_forms);
    tcase_add_test(load_tc, test_bool_and_flag_options);
    suite_add_tcase(s, load_tc);

    TCase *val = tcase_create("validation");
    tcase_add_checked_fixture(val, NULL, teardown);
    tcase_add_test(val, test_unknown_and_malformed_arguments);
    tcase_add_loop_test(val, test_out_of_range_ints, 0,
                        (int)(sizeof bad_ints / sizeof bad_ints[0]));
    tcase_add_test(val, test_bounds_inclusive);
    tcase_add_test(val, test_token_key_required);
    tcase_add_test(val, test_help_needs_no_key);
    tcase_add_test(val, test_redis_url_rules);
    tcase_add_test(val, test_cross_field_rules);
    tcase_add_test(val, test_free_after_failure);
    suite_add_tcase(s, val);

    TCase *doc = tcase_create("docs");
    tcase_add_checked_fixture(doc, NULL, teardown);
    tcase_add_test(doc, test_markdown_and_help_list_every_option);
    suite_add_tcase(s, doc);
    return s;
}

int main(void)
{
    SRunner *sr = srunner_create(config_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
