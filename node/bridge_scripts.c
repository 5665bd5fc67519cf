#include "bridge_scripts.h"

/* KEYS: epoch seq hist dedup presence owners cursors. ARGV: prefix suffix hist_len ttl channel
 * new_epoch dedup_ttl has_ref. Returns {seq, epoch, duplicate}. Every write refreshes the idle
 * TTL of all the document's keys, presence included, so a long-lived session keeps them. */
static const char script_op[] =
    "local ttl = tonumber(ARGV[4])\n"
    "local epoch = redis.call('GET', KEYS[1])\n"
    "if ARGV[8] == '1' and epoch then\n"
    "  local d = redis.call('GET', KEYS[4])\n"
    "  if d then\n"
    "    local sep = string.find(d, ':', 1, true)\n"
    "    if sep and string.sub(d, 1, sep - 1) == epoch then\n"
    "      return {tonumber(string.sub(d, sep + 1)), epoch, 1}\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if not epoch then\n"
    "  epoch = ARGV[6]\n"
    "  redis.call('DEL', KEYS[2], KEYS[3])\n"
    "end\n"
    "redis.call('SET', KEYS[1], epoch, 'EX', ttl)\n"
    "local seq = redis.call('INCR', KEYS[2])\n"
    "redis.call('EXPIRE', KEYS[2], ttl)\n"
    "local msg = ARGV[1] .. cmsgpack.pack(seq) .. cmsgpack.pack(epoch) .. ARGV[2]\n"
    "redis.call('RPUSH', KEYS[3], msg)\n"
    "redis.call('LTRIM', KEYS[3], -tonumber(ARGV[3]), -1)\n"
    "redis.call('EXPIRE', KEYS[3], ttl)\n"
    "for i = 5, 7 do redis.call('EXPIRE', KEYS[i], ttl) end\n"
    "redis.call('PUBLISH', ARGV[5], msg)\n"
    "if ARGV[8] == '1' then\n"
    "  redis.call('SET', KEYS[4], epoch .. ':' .. seq, 'EX', tonumber(ARGV[7]))\n"
    "end\n"
    "return {seq, epoch, 0}\n";

/* KEYS: epoch seq hist. ARGV: since limit new_epoch ttl.
 * Returns {epoch, seq, complete, first_returned_seq, {messages...}}. */
static const char script_sync[] =
    "local epoch = redis.call('GET', KEYS[1])\n"
    "if not epoch then\n"
    "  epoch = ARGV[3]\n"
    "  redis.call('DEL', KEYS[2], KEYS[3])\n"
    "  redis.call('SET', KEYS[1], epoch, 'EX', tonumber(ARGV[4]))\n"
    "end\n"
    "local seq = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "local len = redis.call('LLEN', KEYS[3])\n"
    "local first = seq - len + 1\n"
    "local since = tonumber(ARGV[1])\n"
    "local from = math.max(since + 1, first)\n"
    "local to = math.min(seq, from + tonumber(ARGV[2]) - 1)\n"
    "local items = {}\n"
    "if to >= from then items = redis.call('LRANGE', KEYS[3], from - first, to - first) end\n"
    "local complete = 0\n"
    "if since + 1 >= first or since >= seq then complete = 1 end\n"
    "return {epoch, seq, complete, from, items}\n";

/* KEYS: epoch seq hist presence owners cursors node_members. ARGV: session_id member owner
 * new_epoch ttl announce channel message member_entry.
 * Returns {epoch, seq, presence (flat hash), cursors (flat hash)}. */
static const char script_join[] =
    "local ttl = tonumber(ARGV[5])\n"
    "local epoch = redis.call('GET', KEYS[1])\n"
    "if not epoch then\n"
    "  epoch = ARGV[4]\n"
    "  redis.call('DEL', KEYS[2], KEYS[3])\n"
    "end\n"
    "redis.call('SET', KEYS[1], epoch, 'EX', ttl)\n"
    "redis.call('HSET', KEYS[4], ARGV[1], ARGV[2])\n"
    "redis.call('HSET', KEYS[5], ARGV[1], ARGV[3])\n"
    "for i = 2, 6 do redis.call('EXPIRE', KEYS[i], ttl) end\n"
    "redis.call('SADD', KEYS[7], ARGV[9])\n"
    "redis.call('EXPIRE', KEYS[7], 86400)\n"
    "if ARGV[6] == '1' then redis.call('PUBLISH', ARGV[7], ARGV[8]) end\n"
    "local seq = tonumber(redis.call('GET', KEYS[2]) or '0')\n"
    "return {epoch, seq, redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[6])}\n";

/* KEYS: presence owners cursors node_members. ARGV: session_id owner channel message
 * member_entry. Returns 1 when the entry was ours and is gone. */
static const char script_leave[] =
    "redis.call('SREM', KEYS[4], ARGV[5])\n"
    "if redis.call('HGET', KEYS[2], ARGV[1]) ~= ARGV[2] then return 0 end\n"
    "redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "redis.call('HDEL', KEYS[2], ARGV[1])\n"
    "redis.call('HDEL', KEYS[3], ARGV[1])\n"
    "redis.call('PUBLISH', ARGV[3], ARGV[4])\n"
    "return 1\n";

/* KEYS: owners cursors. ARGV: session_id owner cursor channel message ttl. */
static const char script_cursor[] =
    "if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end\n"
    "redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])\n"
    "redis.call('EXPIRE', KEYS[2], tonumber(ARGV[6]))\n"
    "redis.call('PUBLISH', ARGV[4], ARGV[5])\n"
    "return 1\n";

/* KEYS: presence owners cursors. ARGV: session_id dead_owner_prefix channel document_id
 * dead_node. Removes the entry only while the dead node still owns it. */
static const char script_cleanup[] =
    "local o = redis.call('HGET', KEYS[2], ARGV[1])\n"
    "if not o or string.sub(o, 1, #ARGV[2]) ~= ARGV[2] then return 0 end\n"
    "local m = redis.call('HGET', KEYS[1], ARGV[1])\n"
    "redis.call('HDEL', KEYS[1], ARGV[1])\n"
    "redis.call('HDEL', KEYS[2], ARGV[1])\n"
    "redis.call('HDEL', KEYS[3], ARGV[1])\n"
    "if m then\n"
    "  local u = cmsgpack.unpack(m)\n"
    "  local body = cmsgpack.pack({type = 'user_left', document_id = ARGV[4],\n"
    "    session_id = ARGV[1], user_id = u[1], user_name = u[2], color = u[3]})\n"
    "  redis.call('PUBLISH', ARGV[3], string.char(0x95) .. cmsgpack.pack('p') ..\n"
    "    cmsgpack.pack(ARGV[5]) .. cmsgpack.pack(0) .. cmsgpack.pack(0) .. body)\n"
    "end\n"
    "return 1\n";

/* KEYS: session. ARGV: owner resume_ttl. */
static const char script_release[] = "if redis.call('HGET', KEYS[1], 'owner') == ARGV[1] then\n"
                                     "  redis.call('HSET', KEYS[1], 'owner', '')\n"
                                     "  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))\n"
                                     "  return 1\n"
                                     "end\n"
                                     "return 0\n";

/* KEYS: session. ARGV: resume_token new_resume_token new_owner ttl.
 * Returns {0} unknown, {1} bad token, or {2, previous_owner, user_id, user_name, color, exp,
 * has_docs, docs}. */
static const char script_resume[] =
    "local r = redis.call('HMGET', KEYS[1], 'rt', 'owner', 'user_id', 'user_name', 'color',\n"
    "  'exp', 'has_docs', 'docs')\n"
    "if not r[1] then return {0} end\n"
    "if r[1] ~= ARGV[1] then return {1} end\n"
    "redis.call('HSET', KEYS[1], 'rt', ARGV[2], 'owner', ARGV[3])\n"
    "redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))\n"
    "return {2, r[2] or '', r[3], r[4], r[5], r[6], r[7], r[8] or ''}\n";

/* KEYS: nodes node stats peak node_members. ARGV: node_id ttl stats_json active prefix.
 * Returns {peak, {live nodes' stats json...}, {dead node ids...}}. Uses Redis' clock so nodes
 * with skewed clocks agree on who is alive. */
static const char script_heartbeat[] =
    "local t = redis.call('TIME')\n"
    "local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n"
    "local ttl = tonumber(ARGV[2])\n"
    "redis.call('SET', KEYS[2], now, 'EX', ttl)\n"
    "redis.call('HSET', KEYS[3], 'json', ARGV[3], 'active', ARGV[4])\n"
    "redis.call('EXPIRE', KEYS[3], ttl)\n"
    "redis.call('ZADD', KEYS[1], now, ARGV[1])\n"
    "redis.call('EXPIRE', KEYS[1], 86400)\n"
    "redis.call('EXPIRE', KEYS[5], 86400)\n"
    "local live = redis.call('ZRANGEBYSCORE', KEYS[1], now - ttl * 1000, '+inf')\n"
    "local total, stats = 0, {}\n"
    "for _, id in ipairs(live) do\n"
    "  local h = redis.call('HMGET', ARGV[5] .. 'node:' .. id .. ':stats', 'json', 'active')\n"
    "  if h[1] then\n"
    "    total = total + tonumber(h[2] or '0')\n"
    "    stats[#stats + 1] = h[1]\n"
    "  end\n"
    "end\n"
    "local peak = tonumber(redis.call('GET', KEYS[4]) or '0')\n"
    "if total > peak then peak = total end\n"
    "redis.call('SET', KEYS[4], peak, 'EX', 2592000)\n"
    "local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - ttl * 1000))\n"
    "return {peak, stats, dead}\n";

static const char *const script_sources[SCRIPT_COUNT] = {
    script_op,      script_sync,    script_join,   script_leave,    script_cursor,
    script_cleanup, script_release, script_resume, script_heartbeat};

static const char *const script_names[SCRIPT_COUNT] = {
    "op", "sync", "join", "leave", "cursor", "cleanup", "release", "resume", "heartbeat"};

const char *bridge_script_source(bridge_script s)
{
    return script_sources[s];
}

const char *bridge_script_name(bridge_script s)
{
    return script_names[s];
}
