/**
 * @file bridge_scripts.h
 * The Lua scripts that make each multi-key Redis step atomic (docs/REDIS.md describes the keys
 * they touch). Scripts are loaded with SCRIPT LOAD after every (re)connect and invoked with
 * EVALSHA; every key a script writes gets a TTL or a cap.
 */
#ifndef RELAY_BRIDGE_SCRIPTS_H
#define RELAY_BRIDGE_SCRIPTS_H

typedef enum {
    SCRIPT_OP = 0,    /* sequence + append history + publish, idempotent by ref */
    SCRIPT_SYNC,      /* ensure epoch, read history after since */
    SCRIPT_JOIN,      /* ensure epoch, add presence, announce, snapshot */
    SCRIPT_LEAVE,     /* remove presence if still owned, announce */
    SCRIPT_CURSOR,    /* store cursor if still owned, publish */
    SCRIPT_CLEANUP,   /* remove a dead node's presence entry, publish user_left */
    SCRIPT_RELEASE,   /* make a session resumable if still owned */
    SCRIPT_RESUME,    /* check resume token, take the session over */
    SCRIPT_HEARTBEAT, /* node liveness + stats, cluster peak, list dead nodes */
    SCRIPT_COUNT
} bridge_script;

/* The Lua source of a script. */
const char *bridge_script_source(bridge_script s);
const char *bridge_script_name(bridge_script s);

#endif
