// chartcheck.mjs: checks on the output of `helm template`, for tests/helm/test_helm.sh.
//
//   node chartcheck.mjs validate    RENDERED.yaml        every object against the Kubernetes
//                                                        (and Prometheus Operator) OpenAPI schemas
//   node chartcheck.mjs policy      RENDERED.yaml        the chart's own rules: security context,
//                                                        probes, drain timing, selectors, refs
//   node chartcheck.mjs checkconfig RENDERED.yaml BIN    runs `BIN --check-config` with exactly the
//                                                        environment and arguments the relay
//                                                        container would get
//   node chartcheck.mjs expect      RENDERED.yaml FILE   each line of FILE, a JavaScript expression
//                                                        over the render, must be true
//   node chartcheck.mjs defaults    RENDERED.yaml BIN    the ConfigMap sets every relay-node option
//                                                        that has a default, to that default
//   node chartcheck.mjs docs        CHART_DIR            every value has an @param line and a row
//                                                        in the chart README
//
// Each prints what it found and exits 0 when everything holds, 1 otherwise. The test copies it
// next to a link to the cached node_modules, so that its imports resolve.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseAllDocuments } from "yaml";

const [mode, file, bin] = process.argv.slice(2);
const failures = [];
const fail = (msg) => failures.push(msg);

function loadObjects(path) {
  const docs = parseAllDocuments(readFileSync(path, "utf8"));
  const objs = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${path}: YAML error: ${d.errors[0].message}`);
    const o = d.toJS();
    if (o !== null && o !== undefined) objs.push(o);
  }
  return objs;
}

const id = (o) => `${o.kind}/${o.metadata?.name}`;

// ---- validate ---------------------------------------------------------------------------------

// apiVersion -> the module exporting its models.
function modelModule(apiVersion) {
  if (apiVersion === "v1") return "kubernetes-models/v1";
  if (apiVersion.startsWith("monitoring.coreos.com/"))
    return `@kubernetes-models/prometheus-operator/${apiVersion}`;
  return `kubernetes-models/${apiVersion}`;
}

async function validate(objs) {
  for (const o of objs) {
    if (!o.apiVersion || !o.kind) {
      fail(`object without apiVersion/kind: ${JSON.stringify(o).slice(0, 120)}`);
      continue;
    }
    let Model;
    try {
      Model = (await import(modelModule(o.apiVersion)))[o.kind];
    } catch (e) {
      Model = undefined;
    }
    if (!Model) {
      fail(`${id(o)}: no schema for ${o.apiVersion} ${o.kind}`);
      continue;
    }
    try {
      new Model(o).validate();
      console.log(`  valid ${o.apiVersion} ${id(o)}`);
    } catch (e) {
      fail(`${id(o)}: ${e.message}`);
    }
  }
}

// ---- policy -----------------------------------------------------------------------------------

function podSpecs(objs) {
  const out = [];
  for (const o of objs) {
    if (["Deployment", "StatefulSet", "DaemonSet", "Job"].includes(o.kind))
      out.push({ owner: o, spec: o.spec?.template?.spec, labels: o.spec?.template?.metadata?.labels });
    else if (o.kind === "Pod") out.push({ owner: o, spec: o.spec, labels: o.metadata?.labels });
  }
  return out;
}

const matches = (selector, labels) =>
  selector && Object.keys(selector).length > 0 &&
  Object.entries(selector).every(([k, v]) => labels?.[k] === v);

function relayDeployment(objs) {
  const deps = objs.filter((o) => o.kind === "Deployment");
  const d = deps.find((o) => o.spec?.template?.spec?.containers?.some((c) => c.name === "relay"));
  if (!d) throw new Error("no Deployment with a container named relay");
  return { dep: d, container: d.spec.template.spec.containers.find((c) => c.name === "relay") };
}

function checkSecurity(objs) {
  for (const { owner, spec } of podSpecs(objs)) {
    const psc = spec.securityContext ?? {};
    for (const c of [...(spec.initContainers ?? []), ...spec.containers]) {
      const sc = c.securityContext ?? {};
      const where = `${id(owner)} container ${c.name}`;
      if (!(sc.runAsNonRoot ?? psc.runAsNonRoot)) fail(`${where}: runAsNonRoot is not set`);
      if ((sc.runAsUser ?? psc.runAsUser) === 0) fail(`${where}: runs as uid 0`);
      if (sc.allowPrivilegeEscalation !== false) fail(`${where}: allowPrivilegeEscalation is not false`);
      if (sc.readOnlyRootFilesystem !== true) fail(`${where}: readOnlyRootFilesystem is not true`);
      if (sc.privileged) fail(`${where}: privileged`);
      if (!(sc.capabilities?.drop ?? []).includes("ALL")) fail(`${where}: capabilities do not drop ALL`);
      if ((sc.capabilities?.add ?? []).length) fail(`${where}: adds capabilities`);
      const seccomp = sc.seccompProfile?.type ?? psc.seccompProfile?.type;
      if (seccomp !== "RuntimeDefault") fail(`${where}: seccompProfile is ${seccomp}, not RuntimeDefault`);
    }
  }
}

function envValue(container, name) {
  return container.env?.find((e) => e.name === name);
}

function checkRelayPod(objs) {
  const { dep, container } = relayDeployment(objs);
  const pod = dep.spec.template;
  const cm = configMapEnv(objs, container);
  if (!container.ports?.some((p) => p.name === "http")) fail("relay container has no port named http");
  if (String(container.ports?.find((p) => p.name === "http")?.containerPort) !== cm.RELAY_PORT)
    fail(`containerPort differs from RELAY_PORT ${cm.RELAY_PORT}`);
  if (container.readinessProbe?.httpGet?.path !== "/readyz") fail("readiness probe is not GET /readyz");
  if (container.livenessProbe?.httpGet?.path !== "/healthz") fail("liveness probe is not GET /healthz");
  if (!pod.metadata?.annotations?.["checksum/config"]) fail("pod template has no checksum/config annotation");
  // A Service named like the release injects RELAY_PORT=tcp://... and friends into the pod.
  if (pod.spec.enableServiceLinks !== false) fail("relay pods get Service link variables (RELAY_PORT=tcp://...)");
  const nodeId = envValue(container, "RELAY_NODE_ID");
  if (nodeId?.valueFrom?.fieldRef?.fieldPath !== "metadata.name")
    fail("RELAY_NODE_ID does not come from the pod name (downward API)");
  const names = (container.env ?? []).map((e) => e.name);
  const dup = names.filter((n, i) => names.indexOf(n) !== i);
  if (dup.length) fail(`duplicate env vars: ${dup.join(", ")}`);

  // The grace period must cover the whole drain: preStop sleep, the node's own delay after
  // SIGTERM and its drain window, with some margin for queues and Redis cleanup.
  const pre = container.lifecycle?.preStop;
  let preStop = 0;
  if (pre) {
    const cmd = pre.exec?.command ?? [];
    if (cmd.length !== 2 || cmd[0] !== "sleep" || !/^[0-9]+$/.test(cmd[1]))
      fail(`preStop is not ["sleep", N]: ${JSON.stringify(pre)}`);
    preStop = Number(cmd[1]);
  }
  const delay = Number(cm.RELAY_DRAIN_DELAY ?? 5), time = Number(cm.RELAY_DRAIN_TIME ?? 20);
  const grace = pod.spec.terminationGracePeriodSeconds ?? 30;
  if (!(grace > preStop + delay + time))
    fail(`terminationGracePeriodSeconds ${grace} does not exceed preStop ${preStop} + drain delay ${delay} + drain time ${time}`);
  if (preStop + delay <= 0) fail("neither a preStop sleep nor a drain delay covers endpoint removal");
  console.log(`  drain: preStop ${preStop}s + node delay ${delay}s + drain ${time}s < grace ${grace}s`);

  const spread = pod.spec.topologySpreadConstraints ?? [];
  const anti = pod.spec.affinity?.podAntiAffinity;
  if (!spread.length && !anti) fail("relay pods have neither topologySpreadConstraints nor podAntiAffinity");
  for (const t of spread)
    if (!matches(t.labelSelector?.matchLabels, pod.metadata.labels))
      fail(`topology spread on ${t.topologyKey} does not select the relay pods`);
}

// Every selector and reference in the render points at something that exists.
function checkReferences(objs) {
  const pods = podSpecs(objs);
  const byKind = (k) => objs.filter((o) => o.kind === k);
  const named = (k, n) => objs.find((o) => o.kind === k && o.metadata?.name === n);
  for (const o of [...byKind("Deployment"), ...byKind("StatefulSet")]) {
    if (!matches(o.spec.selector?.matchLabels, o.spec.template?.metadata?.labels))
      fail(`${id(o)}: selector does not match its pod template`);
    if (o.kind === "StatefulSet" && !named("Service", o.spec.serviceName))
      fail(`${id(o)}: serviceName ${o.spec.serviceName} is not rendered`);
  }
  for (const s of byKind("Service")) {
    const targets = pods.filter((p) => p.owner.kind !== "Pod" && matches(s.spec.selector, p.labels));
    if (targets.length !== 1) fail(`Service/${s.metadata.name} selects ${targets.length} workloads, not 1`);
    for (const port of s.spec.ports ?? []) {
      if (typeof port.targetPort !== "string") continue;
      if (!targets.some((t) => t.spec.containers.some((c) => c.ports?.some((p) => p.name === port.targetPort))))
        fail(`Service/${s.metadata.name}: targetPort ${port.targetPort} is not a container port name`);
    }
  }
  for (const p of byKind("PodDisruptionBudget"))
    if (!pods.some((w) => matches(p.spec.selector?.matchLabels, w.labels))) fail(`${id(p)} selects no pods`);
  for (const n of byKind("NetworkPolicy"))
    if (!pods.some((w) => matches(n.spec.podSelector?.matchLabels, w.labels))) fail(`${id(n)} selects no pods`);
  for (const m of byKind("ServiceMonitor")) {
    const svc = byKind("Service").find((s) => matches(m.spec.selector?.matchLabels, s.metadata.labels));
    if (!svc) fail(`${id(m)} selects no Service`);
    else for (const e of m.spec.endpoints ?? [])
      if (!svc.spec.ports.some((p) => p.name === e.port)) fail(`${id(m)}: port ${e.port} is not on ${id(svc)}`);
  }
  for (const h of byKind("HorizontalPodAutoscaler")) {
    const t = named(h.spec.scaleTargetRef.kind, h.spec.scaleTargetRef.name);
    if (!t) fail(`${id(h)}: scale target is not rendered`);
    else if (t.spec.replicas !== undefined) fail(`${id(h)}: ${id(t)} also sets replicas`);
  }
  for (const i of byKind("Ingress"))
    for (const r of i.spec.rules ?? [])
      for (const p of r.http?.paths ?? []) {
        const svc = named("Service", p.backend.service?.name);
        if (!svc) fail(`${id(i)}: backend ${p.backend.service?.name} is not rendered`);
        else if (!svc.spec.ports.some((sp) => sp.name === p.backend.service.port.name))
          fail(`${id(i)}: port ${p.backend.service.port.name} is not on ${id(svc)}`);
      }
  for (const { owner, spec } of pods) {
    const sa = spec.serviceAccountName;
    if (sa && sa !== "default" && !named("ServiceAccount", sa))
      fail(`${id(owner)}: ServiceAccount ${sa} is not rendered`);
    for (const c of spec.containers)
      for (const e of c.env ?? []) {
        const ref = e.valueFrom?.secretKeyRef;
        const sec = ref && named("Secret", ref.name);
        if (sec && !(ref.key in (sec.data ?? {})) && !(ref.key in (sec.stringData ?? {})))
          fail(`${id(owner)}: env ${e.name} needs key ${ref.key} that Secret/${ref.name} lacks`);
      }
  }
}

// ---- checkconfig ------------------------------------------------------------------------------

function configMapEnv(objs, container) {
  const env = {};
  for (const src of container.envFrom ?? []) {
    if (!src.configMapRef) {
      fail(`envFrom other than a ConfigMap is not checked: ${JSON.stringify(src)}`);
      continue;
    }
    const cm = objs.find((o) => o.kind === "ConfigMap" && o.metadata.name === src.configMapRef.name);
    if (!cm) {
      fail(`envFrom ConfigMap ${src.configMapRef.name} is not rendered`);
      continue;
    }
    for (const [k, v] of Object.entries(cm.data ?? {})) env[(src.prefix ?? "") + k] = String(v);
  }
  return env;
}

// Kubernetes' $(VAR) expansion: known variables are replaced, $$ escapes, the rest stays.
function expand(s, env) {
  return String(s).replace(/\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)/g, (m, name) =>
    m === "$$" ? "$" : name in env ? env[name] : m);
}

// A Secret's value: from the render, or a stand-in for a Secret the user provides.
function secretValue(objs, ref) {
  const sec = objs.find((o) => o.kind === "Secret" && o.metadata.name === ref.name);
  if (sec) {
    if (sec.stringData && ref.key in sec.stringData) return String(sec.stringData[ref.key]);
    if (sec.data && ref.key in sec.data) return Buffer.from(sec.data[ref.key], "base64").toString();
    fail(`Secret ${ref.name} has no key ${ref.key}`);
    return "";
  }
  // An existing Secret: stand in a well-formed value of the kind the key name says.
  if (ref.key.endsWith(".json"))
    return JSON.stringify({ keys: [{ kid: "stand-in", alg: "HS256", secret: "s".repeat(48) }] });
  return "existing-secret-stand-in-" + "x".repeat(24);
}

function knownEnvNames(binary) {
  const r = spawnSync(binary, ["--help"], { encoding: "utf8", env: {} });
  if (r.status !== 0) throw new Error(`${binary} --help exited ${r.status}: ${r.stderr}`);
  const names = new Set([...(r.stdout + r.stderr).matchAll(/\bRELAY_[A-Z0-9_]+\b/g)].map((m) => m[0]));
  if (names.size < 10) throw new Error(`${binary} --help names only ${names.size} RELAY_* variables`);
  return names;
}

function checkConfig(objs, binary) {
  const { dep, container } = relayDeployment(objs);
  const podSpec = dep.spec.template.spec;
  const scratch = mkdtempSync(join(tmpdir(), "relay-chartcheck-"));
  try {
    const env = configMapEnv(objs, container);
    for (const e of container.env ?? []) {
      if (e.value !== undefined) env[e.name] = expand(e.value, env);
      else if (e.valueFrom?.secretKeyRef) env[e.name] = secretValue(objs, e.valueFrom.secretKeyRef);
      else if (e.valueFrom?.configMapKeyRef) {
        const cm = objs.find((o) => o.kind === "ConfigMap" && o.metadata.name === e.valueFrom.configMapKeyRef.name);
        env[e.name] = String(cm?.data?.[e.valueFrom.configMapKeyRef.key] ?? "");
      } else if (e.valueFrom?.fieldRef?.fieldPath === "metadata.name") env[e.name] = `${dep.metadata.name}-7d4b9c8f6d-x2x4z`;
      else if (e.valueFrom?.fieldRef) env[e.name] = "10.0.0.7";
      else if (e.valueFrom?.resourceFieldRef) env[e.name] = "1";
      else env[e.name] = "";
    }
    // Files the container reads from Secret volumes are written under scratch, and paths that
    // point into a mount are rewritten to their copy.
    const rewrites = [];
    for (const m of container.volumeMounts ?? []) {
      const vol = podSpec.volumes?.find((v) => v.name === m.name);
      if (!vol?.secret) continue;
      const dir = join(scratch, m.name);
      mkdirSync(dir, { recursive: true });
      for (const item of vol.secret.items ?? []) {
        const target = join(dir, item.path);
        mkdirSync(dirname(target), { recursive: true });
        writeFileSync(target, secretValue(objs, { name: vol.secret.secretName, key: item.key }));
      }
      rewrites.push([m.mountPath.replace(/\/$/, ""), dir]);
    }
    const rewrite = (s) => {
      for (const [from, to] of rewrites) if (s === from || s.startsWith(from + "/")) return to + s.slice(from.length);
      return s;
    };
    for (const k of Object.keys(env)) env[k] = rewrite(env[k]);
    if (container.command && !/(^|\/)relay-node$/.test(container.command.at(-1)))
      fail(`container command ${JSON.stringify(container.command)} is not relay-node`);
    const args = (container.args ?? []).map((a) => rewrite(expand(a, env)));

    const known = knownEnvNames(binary);
    for (const k of Object.keys(env))
      if (k.startsWith("RELAY_") && !known.has(k)) fail(`env ${k} is not an option of relay-node (see --help)`);
    for (const [k, v] of Object.entries(env))
      if (/\$\([A-Za-z_]/.test(v)) fail(`env ${k} still holds an unexpanded reference: ${v}`);

    const shown = Object.entries(env).map(([k, v]) =>
      /SECRET|PASSWORD/.test(k) ? `${k}=<${v.length} chars>` : `${k}=${v.replace(/:[^:@/]*@/, ":<password>@")}`);
    console.log(`  env -i ${shown.join(" ")} relay-node --check-config ${args.join(" ")}`);
    const r = spawnSync(binary, ["--check-config", ...args], { encoding: "utf8", env, timeout: 20000 });
    const out = `${r.stdout}${r.stderr}`.trim();
    if (out) console.log(out.split("\n").map((l) => `  | ${l}`).join("\n"));
    if (r.status !== 0) fail(`relay-node --check-config exited ${r.status ?? r.signal} with the chart's environment`);
  } finally {
    rmSync(scratch, { recursive: true, force: true });
  }
}

// ---- expect -----------------------------------------------------------------------------------

// Evaluates each line of an .expect file (a JavaScript expression; # starts a comment) with
// helpers over the render; a line that is false or throws is a failure.
function expectations(objs, path) {
  const all = (kind) => objs.filter((o) => o.kind === kind);
  const get = (kind, suffix = "") => {
    const found = all(kind).filter((o) => o.metadata.name.endsWith(suffix));
    if (found.length !== 1) throw new Error(`${found.length} ${kind} objects named *${suffix}`);
    return found[0];
  };
  const has = (kind, suffix = "") => all(kind).some((o) => o.metadata.name.endsWith(suffix));
  const { dep, container: relay } = relayDeployment(objs);
  const pod = dep.spec.template.spec;
  const cm = configMapEnv(objs, relay);
  const env = (name) => relay.env?.find((e) => e.name === name);
  const secret = (name, key) => secretValue(objs, { name, key });
  const helpers = { objs, all, get, has, dep, relay, pod, cm, env, secret };
  const lines = readFileSync(path, "utf8").split("\n");
  lines.forEach((raw, n) => {
    const line = raw.replace(/^\s*#.*$/, "").trim();
    if (!line) return;
    let ok;
    try {
      ok = new Function(...Object.keys(helpers), `return (${line});`)(...Object.values(helpers));
    } catch (e) {
      ok = `threw ${e.message}`;
    }
    if (ok === true) console.log(`  ok   ${line}`);
    else fail(`${path}:${n + 1}: ${line} -> ${ok}`);
  });
}

// ---- defaults ---------------------------------------------------------------------------------

// relay-node's options that have a default must be set by the chart's ConfigMap, to the same
// value unless the chart differs on purpose (listed here with the reason).
const DELIBERATE = {
  RELAY_SHED: "the chart sheds by default (issue 4): pods added by a scale-out get connections",
  RELAY_DRAIN_DELAY: "Kubernetes waits in the preStop hook (drain.delay) instead",
  RELAY_DRAIN_TIME: "drain.time sets the drain window the grace period is sized for",
};

function defaults(objs, binary) {
  const r = spawnSync(binary, ["--help-markdown"], { encoding: "utf8", env: {} });
  if (r.status !== 0) throw new Error(`${binary} --help-markdown exited ${r.status}: ${r.stderr}`);
  const { container } = relayDeployment(objs);
  const cm = configMapEnv(objs, container);
  let rows = 0;
  for (const line of r.stdout.split("\n")) {
    const cells = line.split("|").slice(1, -1).map((c) => c.trim().replace(/^`|`$/g, ""));
    if (cells.length < 4 || !cells[1].startsWith("RELAY_")) continue;
    rows++;
    const [flag, name, def] = cells;
    if (def === "-" || def === "") continue;
    if (!(name in cm)) {
      fail(`${name} (${flag}, default ${def}) is not set by the chart: add it to config in values.yaml, values.schema.json, templates/configmap.yaml and the chart README`);
      continue;
    }
    if (name in DELIBERATE) console.log(`  ${name}: chart ${cm[name]}, relay-node ${def} (${DELIBERATE[name]})`);
    else if (cm[name] !== def) fail(`${name}: chart default ${cm[name]} differs from relay-node's ${def}`);
    else console.log(`  ${name}=${def}`);
  }
  if (rows < 10) fail(`--help-markdown listed only ${rows} options`);
}

// ---- docs -------------------------------------------------------------------------------------

// values.yaml is documented line by line: every value has a `## @param path description` (itself
// or, for free-form maps and lists, an ancestor), every @param names a real value, and the
// chart README's table lists every @param.
function docs(chartDir) {
  const text = readFileSync(join(chartDir, "values.yaml"), "utf8");
  const values = parseAllDocuments(text)[0].toJS();
  const params = new Map();
  for (const m of text.matchAll(/^\s*## @param (\S+)(.*)$/gm)) {
    if (!m[2].trim()) fail(`@param ${m[1]} has no description`);
    params.set(m[1], m[2].trim());
  }
  for (const p of params.keys()) {
    const parts = p.split(".");
    const parent = parts.slice(0, -1).reduce((o, k) => o?.[k], values);
    if (!parent || typeof parent !== "object" || !(parts.at(-1) in parent))
      fail(`@param ${p} names no value in values.yaml`);
  }
  const walk = (obj, prefix) => {
    for (const [k, v] of Object.entries(obj)) {
      const path = prefix ? `${prefix}.${k}` : k;
      if (params.has(path)) continue;
      if (v && typeof v === "object" && !Array.isArray(v) && Object.keys(v).length) walk(v, path);
      else fail(`${path} in values.yaml has no ## @param line`);
    }
  };
  walk(values, "");
  const readme = readFileSync(join(chartDir, "README.md"), "utf8");
  for (const p of params.keys())
    if (!readme.includes(`| \`${p}\` |`)) fail(`README.md's values table lacks ${p}`);
  console.log(`  ${params.size} values documented in values.yaml and README.md`);
}

// ---- main -------------------------------------------------------------------------------------

try {
  const objs = mode === "docs" ? [] : loadObjects(file);
  if (mode === "docs") docs(file);
  else if (!objs.length) fail("nothing rendered");
  else if (mode === "validate") await validate(objs);
  else if (mode === "policy") {
    checkSecurity(objs);
    checkRelayPod(objs);
    checkReferences(objs);
  } else if (mode === "checkconfig") {
    if (!bin) throw new Error("checkconfig needs the relay-node binary");
    checkConfig(objs, bin);
  } else if (mode === "expect") expectations(objs, bin);
  else if (mode === "defaults") defaults(objs, bin);
  else throw new Error(`unknown mode ${mode}`);
} catch (e) {
  fail(e.stack ?? String(e));
}
for (const f of failures) console.log(`  error: ${f}`);
process.exit(failures.length ? 1 : 0);
