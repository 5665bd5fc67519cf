#!/usr/bin/env bash
# tests/tools/test_relayctl.sh: relayctl against a real cluster (registered with ctest as
# tools.test_relayctl).
#
# Starts its own redis-server and two relay-node processes (nA, nB) on free loopback ports, puts
# one WebSocket client on each node (a tiny Node.js client below: authenticate, join, operation,
# cursor), and checks what relayctl prints: stats (table and the JSON of /stats?scope=cluster),
# nodes, documents, presence, watch, token, health, the Redis URL forms (ACL user, /db, rediss://
# refused), exit codes, and that a node killed with SIGKILL drops out of the stats and presence
# within 15 s. Everything it starts is stopped by the EXIT trap.
#
# Environment: RELAY_BUILD_DIR (holds relay-node and relayctl), RELAY_NODE_BIN, RELAYCTL_BIN,
# RELAY_SOURCE_DIR. Needs redis-server, redis-cli and node (Node.js; deploy/install-deps.sh).
set -u -o pipefail

SRC=${RELAY_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
BUILD=${RELAY_BUILD_DIR:-$SRC/build}
NODE_BIN=${RELAY_NODE_BIN:-$BUILD/relay-node}
CTL=${RELAYCTL_BIN:-$BUILD/relayctl}
SECRET=relayctl-test-secret-0123456789abcdef
unset RELAY_REDIS_URL RELAY_REDIS_PREFIX RELAY_JWT_SECRET

passed=0
failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
finish() {
    echo "$passed passed, $failed failed"
    ((failed == 0 && passed > 0))
    exit $?
}

for need in "$NODE_BIN" "$CTL"; do
    [[ -x $need ]] || { echo "FAIL: $need is not built (cmake --build ... --target relayctl relay-node)"; exit 1; }
done
for tool in redis-server redis-cli node; do
    command -v "$tool" >/dev/null || { echo "FAIL: $tool is not installed (deploy/install-deps.sh)"; exit 1; }
done

WORK=$(mktemp -d "${TMPDIR:-/tmp}/relayctl-test.XXXXXX")
PIDS=()
cleanup() {
    local pid
    {
        for pid in "${PIDS[@]}"; do kill -9 "$pid"; done
        for pid in "${PIDS[@]}"; do wait "$pid"; done
    } 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- helpers ----------------------------------------------------------------------------------

# Runs a check: check NAME CMD... passes when CMD exits 0; its output is shown on failure.
check() {
    local name=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    if ((rc == 0)); then
        pass "$name"
    else
        printf '%s\n' "$out" | sed 's/^/    /' | tail -n 30
        fail "$name"
    fi
}

# Retries CMD... every 0.2 s until it succeeds or SECONDS_ pass: eventually SECONDS_ CMD...
eventually() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS >= deadline)) && { "$@"; return 1; }
        sleep 0.2
    done
}

# grep for pipes: reads all its input (grep -q may exit early and, under pipefail, fail the
# pipeline through the writer's SIGPIPE).
has() {
    grep "$@" >/dev/null
}

# Exit status of a command, printed: status CMD...
status() {
    "$@" >/dev/null 2>&1
    echo $?
}

# JSON assertion: jtrue JSON JS-EXPR [ARG] is true when EXPR (over j, the parsed JSON) is truthy;
# ARG is process.argv[3] inside EXPR.
jtrue() {
    node -e '
        const j = JSON.parse(process.argv[1]);
        const ok = eval(process.argv[2]);
        if (!ok) { console.log("false: " + process.argv[2] + "\n  on " + process.argv[1]); process.exit(1); }
    ' "$@"
}

# ctl_true "ARGS" EXPR: relayctl ARGS --json succeeds and EXPR holds on its output.
ctl_true() {
    local out
    out=$("$CTL" $1 --json) || { echo "relayctl $1 failed"; return 1; }
    jtrue "$out" "$2"
}

# Prints the body of an HTTP GET (relayctl health shows only the status).
http_get() {
    node -e '
        require("http").get(process.argv[1], (r) => { let b = ""; r.on("data", (d) => b += d);
            r.on("end", () => console.log(b)); }).on("error", () => process.exit(1))' "$1"
}

# A port nothing listens on (bind races are handled by the callers retrying).
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
    done
}

REDIS_PORT=
start_redis() {
    local attempt
    for attempt in 1 2 3; do
        REDIS_PORT=$(free_port)
        redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
            --daemonize no >"$WORK/redis.log" 2>&1 &
        REDIS_PID=$!
        PIDS+=("$REDIS_PID")
        local deadline=$((SECONDS + 10))
        while ((SECONDS < deadline)) && kill -0 "$REDIS_PID" 2>/dev/null; do
            [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && return 0
            sleep 0.1
        done
        kill -9 "$REDIS_PID" 2>/dev/null
    done
    cat "$WORK/redis.log"
    return 1
}

# start_node ID: starts relay-node ID on a free port, waits for /readyz, sets PORT_<ID>, PID_<ID>.
start_node() {
    local id=$1 attempt port pid
    for attempt in 1 2 3; do
        port=$(free_port)
        "$NODE_BIN" --port "$port" --bind 127.0.0.1 --jwt-secret "$SECRET" \
            --redis "redis://127.0.0.1:$REDIS_PORT" --node-id "$id" --log-level warn \
            >"$WORK/$id.log" 2>&1 &
        pid=$!
        PIDS+=("$pid")
        local deadline=$((SECONDS + 15))
        while ((SECONDS < deadline)) && kill -0 "$pid" 2>/dev/null; do
            # Ready, and really this process: its /stats names it.
            if "$CTL" health "http://127.0.0.1:$port/readyz" --timeout-ms 500 >/dev/null 2>&1 &&
                http_get "http://127.0.0.1:$port/stats" | has "\"node_id\":\"$id\""; then
                printf -v "PORT_$id" '%s' "$port"
                printf -v "PID_$id" '%s' "$pid"
                return 0
            fi
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null
    done
    cat "$WORK/$id.log"
    return 1
}

# A WebSocket client that authenticates, joins DOC, sends one operation and a cursor, prints
# "ready" and stays connected until killed (or its node goes away).
cat >"$WORK/wsc.js" <<'EOF'
const net = require('net'), crypto = require('crypto');
const [port, doc, token] = process.argv.slice(2);
const sock = net.connect(+port, '127.0.0.1');
let buf = Buffer.alloc(0), upgraded = false;
setTimeout(() => { console.log('timeout'); process.exit(1); }, 15000).unref();
function frame(op, data) {
  const mask = crypto.randomBytes(4);
  const hdr = data.length < 126 ? Buffer.from([0x80 | op, 0x80 | data.length])
    : Buffer.from([0x80 | op, 0x80 | 126, data.length >> 8, data.length & 255]);
  sock.write(Buffer.concat([hdr, mask, Buffer.from(data.map((b, i) => b ^ mask[i % 4]))]));
}
const send = (obj) => frame(1, Buffer.from(JSON.stringify(obj)));
function onMessage(m) {
  console.log(JSON.stringify(m));
  if (m.type === 'auth_result' && m.success) send({type: 'join_document'});
  else if (m.type === 'joined_document') send({type: 'operation', payload: {n: 1}, ref: 1});
  else if (m.type === 'ack') {
    send({type: 'cursor', cursor: {line: 3, ch: 7}});
    console.log('ready');
  } else if (m.type === 'error' || (m.type === 'auth_result' && !m.success)) process.exit(1);
}
sock.on('connect', () => sock.write(
  `GET /ws/documents/${doc} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\n` +
  `Connection: Upgrade\r\nSec-WebSocket-Key: ${crypto.randomBytes(16).toString('base64')}\r\n` +
  'Sec-WebSocket-Version: 13\r\n\r\n'));
sock.on('data', (d) => {
  buf = Buffer.concat([buf, d]);
  if (!upgraded) {
    const end = buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    if (!/^HTTP\/1\.1 101/.test(buf.toString('latin1', 0, end))) process.exit(1);
    upgraded = true;
    buf = buf.subarray(end + 4);
    send({type: 'authenticate', token});
  }
  while (buf.length >= 2) {
    let len = buf[1] & 127, off = 2;
    if (len === 126) { if (buf.length < 4) return; len = buf.readUInt16BE(2); off = 4; }
    else if (len === 127) { if (buf.length < 10) return; len = Number(buf.readBigUInt64BE(2)); off = 10; }
    if (buf.length < off + len) return;
    const op = buf[0] & 15, data = buf.subarray(off, off + len);
    buf = buf.subarray(off + len);
    if (op === 1) onMessage(JSON.parse(data.toString()));
    else if (op === 9) frame(10, data);
    else if (op === 8) process.exit(0);
  }
});
sock.on('close', () => process.exit(0));
sock.on('error', () => process.exit(1));
EOF

# start_client NAME PORT DOC SUB [DISPLAY-NAME]: runs wsc.js until it printed "ready".
start_client() {
    local name=$1 port=$2 doc=$3 sub=$4 display=${5:-} token
    token=$("$CTL" token --secret "$SECRET" --sub "$sub" ${display:+--name "$display"}) || return 1
    node "$WORK/wsc.js" "$port" "$doc" "$token" >"$WORK/$name.out" 2>&1 &
    PIDS+=("$!")
    eventually 15 grep -q '^ready$' "$WORK/$name.out" || { cat "$WORK/$name.out"; return 1; }
}

# ---- without a cluster: usage, tokens, unreachable Redis --------------------------------------

help_lists_commands() {
    local out c
    out=$("$CTL" --help) || return 1
    for c in stats nodes documents presence watch token health; do
        grep -q "^  $c" <<<"$out" || { echo "--help lacks $c"; return 1; }
    done
    for c in stats nodes documents presence watch token health; do
        "$CTL" "$c" --help | has "^usage: relayctl $c" || { echo "$c --help"; return 1; }
    done
}
check "--help lists every command, each command has --help" help_lists_commands
check "usage errors exit 2" test "$(status "$CTL")$(status "$CTL" bogus)$(status "$CTL" stats --bogus)$(status "$CTL" stats --count 2)$(status "$CTL" presence)$(status "$CTL" health)$(status "$CTL" presence 'bad id')" = 2222222

token_ok() {
    local t payload header
    t=$("$CTL" token --secret "$SECRET" --sub alice --name 'Alice A' --ttl 600 --docs 'doc-1,team-*' --kid k1) || return 1
    [[ $t =~ ^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$ ]] || { echo "not a JWT: $t"; return 1; }
    payload=$(node -e 'console.log(Buffer.from(process.argv[1].split(".")[1], "base64url").toString())' "$t")
    jtrue "$payload" 'j.sub === "alice" && j.name === "Alice A" && j.docs.join() === "doc-1,team-*" &&
        Math.abs(j.exp - Date.now() / 1000 - 600) < 30' || return 1
    header=$(node -e 'console.log(Buffer.from(process.argv[1].split(".")[0], "base64url").toString())' "$t")
    jtrue "$header" 'j.alg === "HS256" && j.kid === "k1"'
}
check "token: a signed HS256 JWT with sub, name, docs, exp and kid" token_ok
check "token: the secret may come from RELAY_JWT_SECRET" eval \
    'RELAY_JWT_SECRET="$SECRET" "$CTL" token --sub bob | has -E "^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$"'
check "token: without a secret, or with a bad --docs entry, exit 2" test "$(status "$CTL" token --sub a)$(status "$CTL" token --secret s)$(status "$CTL" token --secret s --sub a --docs 'a b')" = 222

DEAD_PORT=$(free_port)
unreachable() {
    local out rc
    out=$("$CTL" stats --redis "redis://127.0.0.1:$DEAD_PORT" --timeout-ms 1000 2>&1)
    rc=$?
    ((rc == 1)) && grep -q "cannot connect to Redis at 127.0.0.1:$DEAD_PORT" <<<"$out"
}
check "Redis unreachable: exit 1 with a clear message" unreachable
rediss_refused() {
    local out rc
    out=$("$CTL" nodes --redis rediss://127.0.0.1:6380 2>&1)
    rc=$?
    ((rc == 2)) && grep -q "rediss:// is not supported" <<<"$out"
}
check "rediss:// is refused with a clear message" rediss_refused
ipv6_url() {
    local out
    out=$("$CTL" nodes --redis "redis://[::1]:$DEAD_PORT" --timeout-ms 1000 2>&1)
    grep -q "Redis at ::1:$DEAD_PORT" <<<"$out" || { echo "$out"; return 1; }
}
check "an IPv6 host in brackets is parsed" ipv6_url
check "a malformed Redis URL is a usage error" test "$(status "$CTL" stats --redis redis://h:99999)$(status "$CTL" stats --redis http://h)" = 22
check "health: nothing listening -> exit 1" test "$(status "$CTL" health "http://127.0.0.1:$DEAD_PORT/readyz" --timeout-ms 1000)" = 1

# ---- a cluster of two nodes -------------------------------------------------------------------

if ! start_redis; then
    fail "redis-server did not start"
    finish
fi
export RELAY_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
if ! start_node nA || ! start_node nB; then
    fail "relay-node did not become ready"
    finish
fi
pass "redis-server and nodes nA, nB ready (relayctl health polls /readyz)"

check "health: /readyz of a live node -> exit 0" "$CTL" health "http://127.0.0.1:$PORT_nA/readyz"
check "health: a 404 -> exit 1" test "$(status "$CTL" health "http://127.0.0.1:$PORT_nA/nope")" = 1
check "health --json" ctl_true "health http://127.0.0.1:$PORT_nB/healthz" 'j.ok === true && j.status === 200'

check "stats --json lists nA and nB" eventually 10 ctl_true stats \
    'j.nodes.map(n => n.node_id).sort().join() === "nA,nB"'

check "clients join doc-ctl on nA (alice) and nB (bob)" \
    eval 'start_client alice "$PORT_nA" doc-ctl alice Alice && start_client bob "$PORT_nB" doc-ctl bob'

check "stats --json: totals sum the nodes, peak_concurrent >= active" eventually 10 ctl_true stats '
    const sum = (f) => j.nodes.reduce((a, n) => a + f(n), 0);
    j.totals.connections.active === 2 && j.totals.connections.joined === 2 &&
    j.nodes.every(n => n.connections.active === 1) &&
    j.totals.messages.in === sum(n => n.messages.in) && j.totals.bytes.out === sum(n => n.bytes.out) &&
    j.totals.documents === sum(n => n.documents) && j.peak_concurrent >= 2 &&
    Object.keys(j).join() === "nodes,totals,peak_concurrent"'

same_as_node() {
    local mine theirs
    mine=$("$CTL" stats --json) || return 1
    theirs=$(http_get "http://127.0.0.1:$PORT_nB/stats?scope=cluster") || return 1
    # The same nodes and field names; the counters move, so only connections are compared.
    jtrue "$mine" '
        const t = JSON.parse(process.argv[3]);
        const keys = (o) => JSON.stringify(o, (k, v) => typeof v === "number" ? 0 : v);
        keys(j) === keys(t) && j.totals.connections.active === t.totals.connections.active' "$theirs"
}
check "stats --json has the shape of the node's /stats?scope=cluster" eventually 10 same_as_node

stats_table() {
    local out
    out=$("$CTL" stats) || return 1
    grep -q '^cluster: 2 live node(s), 2 active connection(s)' <<<"$out" &&
        grep -Eq '^NODE +ACTIVE +PEAK +TOTAL' <<<"$out" &&
        grep -Eq '^nA +1 ' <<<"$out" && grep -Eq '^nB +1 ' <<<"$out" && grep -Eq '^TOTAL +2 ' <<<"$out" ||
        { echo "$out"; return 1; }
}
check "stats prints the summary and the per-node table" stats_table

nodes_table() {
    local out
    out=$("$CTL" nodes) || return 1
    grep -Eq '^nA +[0-9.]+s +1 +live$' <<<"$out" && grep -Eq '^nB +[0-9.]+s +1 +live$' <<<"$out" ||
        { echo "$out"; return 1; }
}
check "nodes: both live, heartbeat age and connections" nodes_table
check "nodes --json: fresh heartbeats" ctl_true nodes \
    'j.nodes.length === 2 && j.nodes.every(n => n.live && n.age_ms >= 0 && n.age_ms < 6000 && n.liveness_ttl_ms > 0)'

check "documents --json: doc-ctl with 2 sessions on nA and nB, seq and epoch" eventually 10 ctl_true documents '
    const d = j.documents.find(d => d.document_id === "doc-ctl");
    j.documents.length === 1 && d.sessions === 2 && d.nodes.join() === "nA,nB" && d.seq === 2 &&
    d.history === 2 && typeof d.epoch === "string" && d.epoch.length > 0 && d.ttl_s > 0'
check "documents: table" eval '"$CTL" documents | has -E "^doc-ctl +2 +2 +2 "'

check "presence --json: both sessions with user, node and cursor" eventually 10 ctl_true "presence doc-ctl" '
    const by = Object.fromEntries(j.sessions.map(s => [s.user_id, s]));
    j.document_id === "doc-ctl" && j.seq === 2 && j.sessions.length === 2 &&
    by.alice.user_name === "Alice" && by.alice.node === "nA" && by.bob.node === "nB" &&
    by.alice.node_live && by.bob.node_live && /^#[0-9a-f]{6}$/.test(by.bob.color) &&
    by.alice.cursor.line === 3 && by.bob.cursor.ch === 7 && by.alice.session_id.length > 0'
check "presence: table" eval '"$CTL" presence doc-ctl | has -E "^[0-9a-f]+ +alice +Alice +#[0-9a-f]{6} +nA +\{\"line\":3,\"ch\":7\}$"'
check "presence of an unknown document: no sessions" ctl_true "presence nobody-here" 'j.sessions.length === 0 && j.seq === 0'

check "--prefix: another prefix sees no nodes" ctl_true "stats --prefix other:" \
    'j.nodes.length === 0 && j.peak_concurrent === 0'
check "RELAY_REDIS_PREFIX is honoured" eval 'RELAY_REDIS_PREFIX=other: "$CTL" nodes --json | has -x "{\"now_ms\":[0-9]*,\"nodes\":\[\]}"'
check "/db in the URL selects another database" ctl_true "stats --redis redis://127.0.0.1:$REDIS_PORT/3" 'j.nodes.length === 0'

acl_user() {
    redis-cli -p "$REDIS_PORT" ACL SETUSER ops on '>ops-pass' '~*' '&*' '+@all' >/dev/null || return 1
    "$CTL" nodes --redis "redis://ops:ops-pass@127.0.0.1:$REDIS_PORT" | has '^nA' || return 1
    # Percent-encoded like relay-node reads it ("%2D" is "-").
    "$CTL" nodes --redis "redis://ops:ops%2Dpass@127.0.0.1:$REDIS_PORT/0" | has '^nA' || return 1
    local rc
    rc=$(status "$CTL" nodes --redis "redis://ops:wrong@127.0.0.1:$REDIS_PORT")
    ((rc == 1)) || { echo "wrong password: exit $rc"; return 1; }
}
check "ACL user:password@ in the URL; a wrong password fails with exit 1" acl_user

watch_count() {
    local out
    out=$("$CTL" watch --count 3 --interval-ms 100 --json) || return 1
    [[ $(wc -l <<<"$out") -eq 3 ]] || { echo "$out"; return 1; }
    jtrue "$(tail -n 1 <<<"$out")" 'j.totals.connections.active === 2'
}
check "watch --count 3 --json prints three samples" watch_count

# ---- a node dies ------------------------------------------------------------------------------

{
    kill -9 "$PID_nA"
    wait "$PID_nA" # reaped here, where the shell's "Killed" notice goes to /dev/null
} 2>/dev/null
check "health: /readyz of the killed node -> exit 1" test "$(status "$CTL" health "http://127.0.0.1:$PORT_nA/readyz" --timeout-ms 1000)" = 1
check "killed node drops out of stats --json within 15 s" eventually 15 ctl_true stats \
    'j.nodes.map(n => n.node_id).join() === "nB" && j.totals.connections.active === 1'
check "nodes: nA dead or gone, nB live" eventually 15 eval \
    '"$CTL" nodes | has -E "^nB .* live$" && ! "$CTL" nodes | has -E "^nA .* live$"'
check "presence: the dead node's session is cleaned up within 15 s" eventually 15 ctl_true "presence doc-ctl" \
    'j.sessions.map(s => s.user_id).join() === "bob"'
check "documents: only nB holds doc-ctl" eventually 15 ctl_true documents \
    'j.documents.length === 1 && j.documents[0].nodes.join() === "nB" && j.documents[0].sessions === 1'
check "health: nB still ready" "$CTL" health "http://127.0.0.1:$PORT_nB/readyz"

# ---- Redis goes away --------------------------------------------------------------------------

redis-cli -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1
redis_gone() {
    local out rc
    out=$("$CTL" stats --timeout-ms 1000 2>&1)
    rc=$?
    ((rc == 1)) && grep -q "relayctl: cannot connect to Redis" <<<"$out"
}
check "Redis stopped: stats exits 1 with a clear message" eventually 10 redis_gone
check "watch exits 1 when its last sample failed" test "$(status "$CTL" watch --count 1 --timeout-ms 500)" = 1

finish
