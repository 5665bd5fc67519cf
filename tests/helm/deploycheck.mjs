// deploycheck.mjs: checks on deploy/docker-compose.yml and deploy/relay.env.example, for
// tests/helm/test_helm.sh (Docker cannot run where the tests run, so the compose file is checked
// by reading it, and each node's environment is handed to `relay-node --check-config`).
//
//   node deploycheck.mjs compose  SOURCE_DIR RELAY_NODE_BIN
//   node deploycheck.mjs envfile  SOURCE_DIR RELAY_NODE_BIN
//
// Exits 0 when everything holds, 1 otherwise, printing what it checked.
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parse } from "yaml";

const [mode, src, bin] = process.argv.slice(2);
const failures = [];
const fail = (msg) => failures.push(msg);
const TEST_SECRET = "compose-test-secret-0123456789abcdef0123456789";

function knownEnvNames() {
  const r = spawnSync(bin, ["--help"], { encoding: "utf8", env: {} });
  if (r.status !== 0) throw new Error(`${bin} --help exited ${r.status}`);
  return new Set([...r.stdout.matchAll(/\bRELAY_[A-Z0-9_]+\b/g)].map((m) => m[0]));
}

// docker compose's ${VAR}, ${VAR:-default}, ${VAR:?error}, with $$ as a literal $.
function interpolate(s, vars) {
  return String(s).replace(/\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}/g, (m, name, op, arg) => {
    if (m === "$$") return "$";
    const v = vars[name];
    if (v !== undefined && v !== "") return v;
    if (op === ":-" || op === "-") return arg;
    if (op === ":?" || op === "?") throw new Error(`\${${name}} is required: ${arg}`);
    return "";
  });
}

function checkConfig(what, env) {
  const known = knownEnvNames();
  for (const k of Object.keys(env))
    if (k.startsWith("RELAY_") && !known.has(k)) fail(`${what}: ${k} is not an option of relay-node`);
  const r = spawnSync(bin, ["--check-config"], { encoding: "utf8", env, timeout: 20000 });
  if (r.status !== 0) fail(`${what}: relay-node --check-config exited ${r.status}: ${r.stderr.trim()}`);
  else console.log(`  ${what}: relay-node --check-config ok (${Object.keys(env).sort().join(" ")})`);
}

function compose() {
  const dir = join(src, "deploy");
  const doc = parse(readFileSync(join(dir, "docker-compose.yml"), "utf8"), { merge: true });
  const vars = { RELAY_JWT_SECRET: TEST_SECRET };
  try {
    interpolate(readFileSync(join(dir, "docker-compose.yml"), "utf8"), {});
    fail("compose file does not insist on RELAY_JWT_SECRET");
  } catch (e) {
    console.log(`  without RELAY_JWT_SECRET compose stops: ${e.message}`);
  }
  const svc = doc.services ?? {};
  for (const name of ["redis", "node1", "node2", "node3", "haproxy"])
    if (!svc[name]) fail(`service ${name} is missing`);
  const nodes = Object.keys(svc).filter((n) => /^node[0-9]+$/.test(n));
  const ids = new Set();
  for (const n of nodes) {
    const s = svc[n];
    const ctx = resolve(dir, s.build?.context ?? ".");
    if (!existsSync(join(ctx, "CMakeLists.txt"))) fail(`${n}: build context ${ctx} is not the source tree`);
    if (!existsSync(join(ctx, s.build?.dockerfile ?? "Dockerfile"))) fail(`${n}: Dockerfile not found`);
    const env = {};
    for (const [k, v] of Object.entries(s.environment ?? {})) env[k] = interpolate(v, vars);
    if (ids.has(env.RELAY_NODE_ID)) fail(`${n}: RELAY_NODE_ID ${env.RELAY_NODE_ID} is not unique`);
    ids.add(env.RELAY_NODE_ID);
    if (!/^redis:\/\/(:[^@]*@)?redis:6379(\/[0-9]+)?$/.test(env.RELAY_REDIS_URL ?? ""))
      fail(`${n}: RELAY_REDIS_URL ${env.RELAY_REDIS_URL} does not name the redis service`);
    if (!s.read_only || !(s.cap_drop ?? []).includes("ALL")) fail(`${n}: not read_only with cap_drop ALL`);
    if (s.depends_on?.redis?.condition !== "service_healthy") fail(`${n}: does not wait for a healthy redis`);
    checkConfig(`compose ${n}`, env);
  }
  const redisCmd = (svc.redis?.command ?? []).join(" ");
  if (!/--appendonly yes/.test(redisCmd)) fail(`redis runs without AOF: ${redisCmd}`);
  const hp = svc.haproxy ?? {};
  const mount = (hp.volumes ?? []).find((v) => String(v).includes("haproxy.cfg"));
  if (!mount || !existsSync(resolve(dir, String(mount).split(":")[0]))) fail("haproxy does not mount deploy/haproxy.cfg");
  const addrs = Object.entries(hp.environment ?? {}).filter(([k]) => /^RELAY_NODE[0-9]+_ADDR$/.test(k));
  if (addrs.length !== nodes.length) fail(`haproxy knows ${addrs.length} nodes, compose runs ${nodes.length}`);
  for (const [k, v] of addrs) {
    const [host, port] = String(v).split(":");
    if (!nodes.includes(host) || port !== "8080") fail(`haproxy ${k}=${v} is not a node service on 8080`);
  }
  for (const n of nodes)
    if (hp.depends_on?.[n]?.condition !== "service_healthy") fail(`haproxy does not wait for a healthy ${n}`);
}

function envfile() {
  const path = join(src, "deploy", "relay.env.example");
  const env = { RELAY_JWT_SECRET: TEST_SECRET };
  for (const line of readFileSync(path, "utf8").split("\n")) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) env[m[1]] = m[2];
    const c = /^#\s*([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line);
    if (c && !(c[1] in env)) env[c[1]] = c[2]; // commented examples must be valid too
  }
  if (Object.keys(env).length < 5) fail(`${path} sets almost nothing`);
  checkConfig("relay.env.example", env);
}

try {
  if (mode === "compose") compose();
  else if (mode === "envfile") envfile();
  else throw new Error(`unknown mode ${mode}`);
} catch (e) {
  fail(e.stack ?? String(e));
}
for (const f of failures) console.log(`  error: ${f}`);
process.exit(failures.length ? 1 : 0);
