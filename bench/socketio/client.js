// bench/socketio/client.js - the load generator of bench/compare-socketio.sh for Socket.IO.
//
// The workload and the report match relay-bench: N = docs x clients connections spread
// round-robin over the endpoints, members 0..S-1 of each document send R ops/s each with a
// payload of B bytes carrying the send time (process.hrtime, CLOCK_MONOTONIC: comparable across
// this machine's processes), the sender id and its sequence. Only operations sent inside the
// measured window count; expected = acked x (clients - 1). The connections are spread over
// --workers child processes so the client is not the bottleneck; the parent sequences the
// phases, reads the servers' CPU time (/proc/PID/stat utime+stime) over the measured window and
// prints one JSON report with the same field names as `relay-bench --json`.
'use strict';
const fs = require('fs');
const { fork } = require('child_process');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}

// Log-linear histogram like relay-bench's: exact below 128, then 64 sub-buckets per octave.
const SUB = 64, NB = 2 * SUB + 40 * SUB;
function histIndex(v) {
  v = Math.max(0, Math.floor(v));
  if (v < 2 * SUB) return v;
  const msb = Math.floor(Math.log2(v));
  const shift = msb - 6;
  const idx = 2 * SUB + (shift - 1) * SUB + (Math.floor(v / 2 ** shift) - SUB);
  return Math.min(idx, NB - 1);
}
function histUpper(idx) {
  if (idx < 2 * SUB) return idx;
  const shift = Math.floor((idx - 2 * SUB) / SUB) + 1;
  const sub = ((idx - 2 * SUB) % SUB) + SUB;
  return (sub + 1) * 2 ** shift - 1;
}
function quantile(counts, total, max, q) {
  if (!total) return 0;
  const want = Math.max(1, Math.round(q * total));
  let seen = 0;
  for (let i = 0; i < NB; i++) {
    seen += counts[i];
    if (seen >= want) return Math.min(histUpper(i), max);
  }
  return max;
}
const nowNs = () => Number(process.hrtime.bigint());

function cfgFromArgs() {
  const eps = arg('--endpoints', '127.0.0.1:3000').split(',');
  return {
    endpoints: eps,
    docs: Number(arg('--docs', '1')),
    clients: Number(arg('--clients', '10')),
    senders: Number(arg('--senders', '1')),
    rate: Number(arg('--rate', '10')),
    payload: Number(arg('--payload', '100')),
    warmup: Number(arg('--warmup', '2')),
    duration: Number(arg('--duration', '10')),
    drain: Number(arg('--drain', '3')),
    workers: Number(arg('--workers', '2')),
    pids: (arg('--pids', '') || '').split(',').filter(Boolean).map(Number),
    prefix: arg('--doc-prefix', 'sio-'),
  };
}

// ---- worker: owns connections idx % workers == w ------------------------------------------
function worker(cfg, w) {
  const conns = [];
  const st = { sentWin: 0, ackedWin: 0, deliveredWin: 0, sent: 0, delivered: 0, errors: {},
    counts: new Array(NB).fill(0), total: 0, max: 0, gaps: 0, reorders: 0 };
  const err = (k) => { st.errors[k] = (st.errors[k] || 0) + 1; };
  let joined = 0, settled = 0, mine = 0;
  let loadStart = 0, mStart = Infinity, mEnd = Infinity, cpu0 = null, cpuWin = null;
  const total = cfg.docs * cfg.clients;
  for (let idx = w; idx < total; idx += cfg.workers) mine++;
  const pad = 'x'.repeat(Math.max(0, cfg.payload - 32));
  const hex = (v, n) => v.toString(16).padStart(n, '0');

  function onOperation(c, m) {
    const p = m && m.payload;
    if (typeof p !== 'string' || p.length < 32) return err('other');
    const now = nowNs();
    const ts = parseInt(p.slice(0, 16), 16);
    const sid = parseInt(p.slice(16, 24), 16);
    const seq = parseInt(p.slice(24, 32), 16);
    st.delivered++;
    const s = sid % cfg.senders;
    if (seq > c.last[s] + 1) st.gaps += seq - c.last[s] - 1;
    else if (seq <= c.last[s]) st.reorders++;
    if (seq > c.last[s]) c.last[s] = seq;
    if (ts >= mStart && ts < mEnd) {
      st.deliveredWin++;
      const v = now - ts;
      st.counts[histIndex(v)]++;
      st.total++;
      if (v > st.max) st.max = v;
    }
  }

  // Each connection speaks the Engine.IO 4 / Socket.IO 5 wire protocol over `ws` directly:
  // socket.io-client costs ~23 us of client CPU per received message here, which would make
  // the client, not the server, the bottleneck of this comparison. The frames are exactly
  // what socket.io-client sends: "40" (namespace connect), "42<id>[event,arg]" (emit with
  // ack), "3" (pong); the server sends "0{...}" (open), "40{...}", "43<id>[...]" (ack),
  // "42[event,arg]", "2" (ping).
  const WebSocket = require('ws');
  const ready = () => { settled++; if (settled === mine) process.send({ type: 'joined', joined }); };
  for (let idx = w; idx < total; idx += cfg.workers) {
    const doc = Math.floor(idx / cfg.clients), member = idx % cfg.clients;
    const ep = cfg.endpoints[idx % cfg.endpoints.length];
    const c = { idx, doc, member, sender: member < cfg.senders ? member : -1, seq: 0, next: 0,
      winFirst: 0, winLast: 0, last: new Array(cfg.senders).fill(0), joined: false, done: false };
    const url = `ws://${ep}/socket.io/?EIO=4&transport=websocket&doc=${cfg.prefix}${doc}&user=bench`;
    c.sock = new WebSocket(url, { perMessageDeflate: false });
    c.sock.on('message', (data) => {
      const s = data.toString();
      if (s.startsWith('42["operation",')) {
        const i = s.lastIndexOf('"payload":"');
        if (i < 0) return err('other');
        return onOperation(c, { payload: s.substr(i + 11, 32) + pad });
      }
      if (s.startsWith('43')) {
        const id = parseInt(s.slice(2), 10);
        if (id === 0) {
          if (!c.joined) { c.joined = true; joined++; ready(); }
        } else if (c.winFirst && id >= c.winFirst && id <= c.winLast) {
          st.ackedWin++;
        }
      } else if (s === '2') {
        c.sock.send('3');
      } else if (s.startsWith('40')) {
        c.sock.send('420["join_document"]');
      } else if (s[0] === '0') {
        c.sock.send('40');
      } else if (s.startsWith('44')) {
        err('connect_error');
      }
    });
    c.sock.on('error', () => { err('connect_failed'); if (!c.joined && !c.done) { c.done = true; ready(); } });
    c.sock.on('close', () => { if (!stopping) err('closed'); });
    conns.push(c);
  }
  let stopping = false;
  const senders = conns.filter((c) => c.sender >= 0);
  const interval = 1e9 / cfg.rate;

  function tick() {
    if (stopping) return;
    const now = nowNs();
    let earliest = Infinity;
    for (const c of senders) {
      if (!c.joined) continue;
      if (!c.next) c.next = loadStart + interval * (c.doc * cfg.senders + c.sender) / (cfg.docs * cfg.senders);
      if (now - c.next > 1e9) c.next += Math.floor((now - c.next) / interval) * interval;
      let burst = 0;
      while (c.next <= now && c.next < mEnd && burst++ < 64) {
        c.next += interval;
        const ts = nowNs();
        const seq = ++c.seq;
        const sid = c.doc * cfg.senders + c.sender;
        const payload = hex(ts, 16) + hex(sid, 8) + hex(seq, 8) + pad;
        if (ts >= mStart && ts < mEnd) {
          st.sentWin++;
          if (!c.winFirst) c.winFirst = seq;
          c.winLast = seq;
        }
        st.sent++;
        c.sock.send(`42${seq}["operation","${payload}"]`);
      }
      if (c.next < mEnd && c.next < earliest) earliest = c.next;
    }
    if (earliest === Infinity) return;
    setTimeout(tick, Math.max(0, (earliest - nowNs()) / 1e6));
  }

  process.on('message', (m) => {
    if (m.type === 'start') {
      loadStart = m.loadStart; mStart = m.mStart; mEnd = m.mEnd;
      setTimeout(() => { cpu0 = process.cpuUsage(); }, Math.max(0, (mStart - nowNs()) / 1e6));
      setTimeout(() => { cpuWin = process.cpuUsage(cpu0); }, Math.max(0, (mEnd - nowNs()) / 1e6));
      setTimeout(tick, Math.max(0, (loadStart - nowNs()) / 1e6));
    } else if (m.type === 'report') {
      stopping = true;
      st.cpuS = cpuWin ? (cpuWin.user + cpuWin.system) / 1e6 : 0;
      process.send({ type: 'report', st }, () => {
        for (const c of conns) c.sock.terminate();
        process.exit(0);
      });
    }
  });
}

// ---- parent ------------------------------------------------------------------------------
function procCpuS(pid) {
  try {
    const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) / 100; // USER_HZ is 100 on Linux
  } catch (e) { return -1; }
}
function procRssKb(pid) {
  try {
    const m = /VmRSS:\s+(\d+)/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : -1;
  } catch (e) { return -1; }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function parent(cfg) {
  const kids = [];
  const waitAll = (type, timeoutMs) => Promise.all(kids.map((k) => new Promise((res, rej) => {
    const t = setTimeout(() => rej(new Error(`worker timeout waiting for ${type}`)), timeoutMs);
    k.on('message', (m) => { if (m.type === type) { clearTimeout(t); res(m); } });
  })));
  for (let w = 0; w < cfg.workers; w++)
    kids.push(fork(__filename, ['--worker', String(w), '--cfg', JSON.stringify(cfg)]));
  const joinedMsgs = await waitAll('joined', 60000);
  const joined = joinedMsgs.reduce((a, m) => a + m.joined, 0);
  process.stderr.write(`[sio-bench] ${joined} of ${cfg.docs * cfg.clients} joined\n`);
  const loadStart = nowNs() + 50e6;
  const mStart = loadStart + cfg.warmup * 1e9, mEnd = mStart + cfg.duration * 1e9;
  for (const k of kids) k.send({ type: 'start', loadStart, mStart, mEnd });
  await sleep((mStart - nowNs()) / 1e6);
  const cpu0 = cfg.pids.map(procCpuS);
  await sleep((mEnd - nowNs()) / 1e6);
  const cpu = cfg.pids.map((p, i) => procCpuS(p) - cpu0[i]);
  const rss = cfg.pids.map(procRssKb);
  await sleep(cfg.drain * 1000);
  const reportP = waitAll('report', 30000);
  for (const k of kids) k.send({ type: 'report' });
  const reps = (await reportP).map((m) => m.st);
  const agg = { sentWin: 0, ackedWin: 0, deliveredWin: 0, total: 0, max: 0, gaps: 0, reorders: 0,
    cpuS: 0, counts: new Array(NB).fill(0), errors: {} };
  for (const r of reps) {
    for (const k of ['sentWin', 'ackedWin', 'deliveredWin', 'total', 'gaps', 'reorders', 'cpuS']) agg[k] += r[k];
    agg.max = Math.max(agg.max, r.max);
    r.counts.forEach((v, i) => { agg.counts[i] += v; });
    for (const [k, v] of Object.entries(r.errors)) agg.errors[k] = (agg.errors[k] || 0) + v;
  }
  const expected = agg.ackedWin * (cfg.clients - 1);
  const q = (x) => quantile(agg.counts, agg.total, agg.max, x) / 1e3;
  const nodeCpu = cpu.reduce((a, b) => a + b, 0);
  const out = {
    mode: 'load', server: 'socket.io', connections: cfg.docs * cfg.clients, joined,
    offered: agg.sentWin, acked: agg.ackedWin, delivered: agg.deliveredWin, expected,
    delivery_ratio: expected ? agg.deliveredWin / expected : 0,
    delivered_per_s: agg.deliveredWin / cfg.duration, window_s: cfg.duration,
    latency_us: { p50: q(0.5), p90: q(0.9), p99: q(0.99), 'p99.9': q(0.999), max: agg.max / 1e3,
      count: agg.total },
    errors: agg.errors, sequence: { gaps: agg.gaps, reorders: agg.reorders },
    bench: { cpu_s: agg.cpuS, cpu_pct: (100 * agg.cpuS) / cfg.duration },
    nodes: cfg.pids.map((pid, i) => ({ pid, cpu_s: cpu[i], rss_kb: rss[i] })),
    node_cpu_s: nodeCpu,
    node_us_per_msg: agg.deliveredWin ? (nodeCpu * 1e6) / agg.deliveredWin : 0,
  };
  process.stdout.write(JSON.stringify(out) + '\n');
  process.exit(0);
}

if (process.argv.includes('--worker')) {
  worker(JSON.parse(arg('--cfg')), Number(arg('--worker')));
} else {
  const cfg = cfgFromArgs();
  const guard = setTimeout(() => { console.error('[sio-bench] overall timeout'); process.exit(3); },
    (cfg.warmup + cfg.duration + cfg.drain + 120) * 1000);
  guard.unref();
  parent(cfg).catch((e) => { console.error(e); process.exit(1); });
}
