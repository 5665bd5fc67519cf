/* relay-node: configuration, signals, and the node's lifetime. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node.h"
#include "relay/config.h"
#include "relay/log.h"

extern char **environ;

static relay_node *main_node;

static void main_on_signal(int sig)
{
    (void)sig;
    if (main_node)
        node_request_stop(main_node);
}

static void main_install_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = main_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
}

int main(int argc, char **argv)
{
    relay_config cfg;
    char err[512];
    if (config_load(&cfg, argc, argv, environ, err, sizeof err) < 0) {
        fprintf(stderr, "relay-node: %s\n", err);
        config_free(&cfg);
        return 2;
    }
    if (cfg.help || cfg.help_markdown) {
        if (cfg.help)
            config_print_help(stdout, "relay-node");
        else
            config_print_markdown(stdout);
        config_free(&cfg);
        return 0;
    }
    log_set_level(cfg.log_level);
    if (cfg.check_config) {
        token_config tc = {cfg.jwt_secret, cfg.jwt_keys, cfg.jwt_audience, cfg.jwt_issuer,
                           cfg.jwt_leeway};
        token_verifier *v = token_verifier_create(&tc, err, sizeof err);
        token_verifier_destroy(v);
        if (!v)
            fprintf(stderr, "relay-node: %s\n", err);
        else
            printf("configuration ok\n");
        config_free(&cfg);
        return v ? 0 : 2;
    }
    main_node = node_create(&cfg, err, sizeof err);
    if (!main_node) {
        log_error("cannot start: %s", err);
        config_free(&cfg);
        return 1;
    }
    main_install_signals();
    int rc = node_run(main_node);
    relay_node *n = main_node;
    main_node = NULL;
    node_destroy(n);
    config_free(&cfg);
    return rc;
}
