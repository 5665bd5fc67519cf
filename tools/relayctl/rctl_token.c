/* relayctl token: development tokens signed with the cluster's HS256 secret. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rctl.h"
#include "relay/clock.h"
#include "relay/codec.h"
#include "relay/token.h"

#define TOKEN_MAX_DOCS 256

/* A docs entry is a document id, or a prefix of one followed by '*' ("*" alone: any). */
static bool token_doc_valid(const char *d)
{
    size_t len = strlen(d);
    if (len && d[len - 1] == '*')
        len--;
    return (len == 0 && d[0] == '*') || codec_document_id_valid(d, len);
}

/* Splits the comma-separated --docs list in place into docs. Returns the count, or -1 after
 * printing why. */
static int token_split_docs(char *list, char **docs)
{
    int n = 0;
    char *save = NULL;
    for (char *d = strtok_r(list, ",", &save); d; d = strtok_r(NULL, ",", &save)) {
        if (!token_doc_valid(d)) {
            fprintf(stderr, "relayctl token: '%s' in --docs is not a document id or prefix*\n", d);
            return -1;
        }
        if (n == TOKEN_MAX_DOCS) {
            fprintf(stderr, "relayctl token: more than %d entries in --docs\n", TOKEN_MAX_DOCS);
            return -1;
        }
        docs[n++] = d;
    }
    if (n == 0)
        fprintf(stderr, "relayctl token: --docs lists no document (omit it to allow all)\n");
    return n ? n : -1;
}

int rctl_cmd_token(rctl *o)
{
    if (!o->secret || !o->secret[0]) {
        fprintf(stderr, "relayctl token: no secret: pass --secret or set RELAY_JWT_SECRET\n");
        return RCTL_USAGE;
    }
    if (!o->sub || !o->sub[0]) {
        fprintf(stderr, "relayctl token: --sub (the user id) is required\n");
        return RCTL_USAGE;
    }
    char *docs[TOKEN_MAX_DOCS], *list = o->docs ? strdup(o->docs) : NULL;
    int n = 0;
    if (o->docs && (!list || (n = token_split_docs(list, docs)) < 0)) {
        free(list);
        return RCTL_USAGE;
    }
    int64_t exp = clock_wall_s() + o->ttl;
    char *jwt = token_mint_hs256(o->secret, o->kid, o->sub, o->name, exp, 0,
                                 o->docs ? (const char *const *)docs : NULL, (size_t)n);
    free(list);
    if (!jwt) {
        fprintf(stderr, "relayctl token: could not sign the token\n");
        return RCTL_FAIL;
    }
    int rc = RCTL_OK;
    if (o->json)
        rc = rctl_print_json(
            json_pack("{s:s, s:s, s:I}", "token", jwt, "sub", o->sub, "exp", (json_int_t)exp));
    else if (printf("%s\n", jwt) < 0 || fflush(stdout) != 0)
        rc = RCTL_FAIL;
    free(jwt);
    return rc;
}
