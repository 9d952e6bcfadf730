// Scale: how many idle authenticated connections the proxy holds and at what memory,
// how fast it accepts and authenticates new ones, and what a second worker process (`serve --workers 2`)
// adds to throughput.
//
// Against the fast upstream responder (bench/lib/fast-upstream.mjs: no data is needed here), with the
// built proxy started as an operator would (bench/lib/processes.mjs) and an app whose manifest says
// auth_required: true (HS256 JWT from an environment variable):
//  1. idle: `--connections` (10,000) connections, each doing what a driver's connection does when it
//     opens (hello with client metadata, then SASL PLAIN with the JWT on $external), opened from
//     `--clients` raw wire-protocol processes (bench/lib/raw-client.mjs), 64 at a time, and held open.
//     The proxy's resident memory (VmRSS from /proc) before and after, the difference per connection,
//     then a ping on every held connection (all must answer) and the proxy's own count (/apps).
//  2. connect rate: connections opened, authenticated and closed continuously, `--in-flight` (64) at a
//     time over the client processes; completed per second over the window, and the proxy's CPU time
//     per connection.
//  3. workers: point reads by _id (the real Node driver, bench/lib/load.mjs) at `--concurrency` (16)
//     against `serve --workers 1`, then `--workers 2`; ops/s and the ratio.
//
// npm run bench -- scale [--connections 10000] [--clients 4] [--in-flight 64] [--rate-duration 5]
//   [--duration 8] [--warmup 2] [--concurrency 16] [--phases idle,rate,workers] [--out FILE] [--smoke]
// --smoke: 200 connections, 1 s windows (what the test suite runs; it never judges the numbers).
import { fork } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { SignJWT } from 'jose';
import { prepare, runLoad } from './lib/load.mjs';
import { ROOT } from '../dist/testing/processes.js';
import {
  BENCH_APP,
  commandLine,
  getJSON,
  gitState,
  machine,
  makeConfigDir,
  sampleProcess,
  startFastUpstreamProcess,
  startProxy,
  waitForMessage,
} from './lib/processes.mjs';
import { round } from './lib/stats.mjs';

const { has, opt } = commandLine();
const smoke = has('--smoke');
const settings = {
  connections: Number(opt('--connections', smoke ? '200' : '10000')),
  clients: Number(opt('--clients', smoke ? '1' : '4')),
  in_flight: Number(opt('--in-flight', smoke ? '16' : '64')),
  rate_warmup_s: Number(opt('--rate-warmup', smoke ? '0.3' : '1')),
  rate_duration_s: Number(opt('--rate-duration', smoke ? '1' : '5')),
  warmup_s: Number(opt('--warmup', smoke ? '0.5' : '2')),
  duration_s: Number(opt('--duration', smoke ? '1' : '8')),
  concurrency: Number(opt('--concurrency', smoke ? '4' : '16')),
  phases: opt('--phases', 'idle,rate,workers').split(',').filter(Boolean),
  smoke,
};
const started = new Date();
const stamp = started.toISOString().replace(/[:.]/g, '-');
const outFile = opt('--out', path.join(ROOT, 'bench/results', `${stamp}-scale${smoke ? '-smoke' : ''}.json`));
const log = (line) => process.stderr.write(`${line}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const RAW_CLIENT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'lib/raw-client.mjs');
const MB = 2 ** 20;

// ---- The app: auth_required, HS256 secret from the environment.
const SLUG = 'scale';
const SECRET_ENV = 'SCALE_JWT_SECRET';
const secret = 'scale-benchmark-secret-0123456789abcdef0123456789abcdef';
const SCALE_APP = {
  slug: SLUG,
  yaml: `slug: ${SLUG}\nname: Scale benchmark app\nauth_required: true\nauth:\n  jwt:\n    secret_env: ${SECRET_ENV}\n`,
};
const token = await new SignJWT({ app: SLUG, sub: 'bench' })
  .setProtectedHeader({ alg: 'HS256' })
  .setExpirationTime('6h')
  .sign(new TextEncoder().encode(secret));

// ---- Raw-client processes.
function waitFor(child, type, timeoutMS = 300_000) {
  return waitForMessage(child, type, timeoutMS, 'raw client');
}

async function startClients(n) {
  const children = Array.from({ length: n }, () => fork(RAW_CLIENT, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  await Promise.all(children.map((c) => waitFor(c, 'ready', 30_000)));
  return {
    children,
    pids: children.map((c) => c.pid),
    async ask(messages, type) {
      return Promise.all(
        children.map((c, i) => {
          const r = waitFor(c, type);
          c.send(messages[i]);
          return r;
        }),
      );
    },
    stop() {
      for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    },
  };
}

function split(total, n) {
  return Array.from({ length: n }, (_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0));
}

const results = {
  benchmark: 'scale',
  started: started.toISOString(),
  git: gitState(),
  machine: machine(),
  settings,
  upstream: 'fast responder (bench/lib/fast-upstream.mjs)',
  auth: 'SASL PLAIN with an HS256 JWT (jose), after hello with client metadata',
};

const upstream = await startFastUpstreamProcess();
const configDir = makeConfigDir({ apps: [SCALE_APP, BENCH_APP] });
const proxyEnv = { [SECRET_ENV]: secret };
const cleanups = [() => upstream.stop(), () => fs.rmSync(configDir, { recursive: true, force: true })];
try {
  // ---- 1 and 2: idle connections, then the connect rate, on one proxy.
  if (settings.phases.includes('idle') || settings.phases.includes('rate')) {
    const proxy = await startProxy({ upstreamUri: upstream.uri, configDir, env: proxyEnv });
    cleanups.unshift(() => proxy.stop());
    const target = { host: '127.0.0.1', port: proxy.port, slug: SLUG, token };
    const clients = await startClients(settings.clients);
    cleanups.unshift(() => clients.stop());
    await sleep(smoke ? 200 : 1000);

    if (settings.phases.includes('idle')) {
      const before = sampleProcess(proxy.pid);
      log(`idle: opening ${settings.connections} authenticated connections from ${settings.clients} processes (${settings.in_flight} at a time)...`);
      const counts = split(settings.connections, settings.clients);
      const perClientInFlight = Math.max(1, Math.ceil(settings.in_flight / settings.clients));
      const t0 = performance.now();
      const opened = await clients.ask(
        counts.map((count) => ({ type: 'open', ...target, count, inFlight: perClientInFlight })),
        'opened',
      );
      const openMS = performance.now() - t0;
      const openedTotal = opened.reduce((s, o) => s + o.opened, 0);
      const openFailed = opened.reduce((s, o) => s + o.failed, 0);
      await sleep(smoke ? 300 : 3000);
      const held = sampleProcess(proxy.pid);
      const apps = await getJSON(proxy.httpPort, '/apps', { timeoutMS: 30_000, required: true });
      const proxyCount = apps.apps.find((a) => a.slug === SLUG)?.connections ?? 0;
      log(`idle: ${openedTotal} open (${openFailed} failed) in ${round(openMS)} ms; pinging every one...`);
      const pinged = await clients.ask(
        counts.map(() => ({ type: 'ping', sample: 0 })),
        'pinged',
      );
      const afterPing = sampleProcess(proxy.pid);
      const pingOK = pinged.reduce((s, p) => s + p.ok, 0);
      results.idle = {
        connections_requested: settings.connections,
        connections_open: openedTotal,
        open_failed: openFailed,
        first_error: opened.find((o) => o.first_error)?.first_error,
        open_ms: round(openMS),
        open_per_second: round((openedTotal * 1000) / openMS),
        proxy_reported_connections: proxyCount,
        rss_before_mb: round(before.rssBytes / MB),
        rss_held_mb: round(held.rssBytes / MB),
        rss_after_ping_mb: round(afterPing.rssBytes / MB),
        peak_rss_mb: round(afterPing.hwmBytes / MB),
        rss_delta_mb: round((held.rssBytes - before.rssBytes) / MB),
        bytes_per_connection: openedTotal > 0 ? Math.round((held.rssBytes - before.rssBytes) / openedTotal) : null,
        bytes_per_connection_after_ping: openedTotal > 0 ? Math.round((afterPing.rssBytes - before.rssBytes) / openedTotal) : null,
        pinged_ok: pingOK,
        ping_failed: pinged.reduce((s, p) => s + p.failed, 0),
        ping_first_error: pinged.find((p) => p.first_error)?.first_error,
        target_rss_mb: 400,
      };
      await clients.ask(
        counts.map(() => ({ type: 'close' })),
        'closed',
      );
      await sleep(smoke ? 200 : 2000);
    }

    if (settings.phases.includes('rate')) {
      log(`rate: connect + hello + authenticate + close, ${settings.in_flight} in flight, ${settings.rate_duration_s} s...`);
      const lanes = split(settings.in_flight, settings.clients).map((n) => Math.max(1, n));
      const warmupMS = settings.rate_warmup_s * 1000;
      const durationMS = settings.rate_duration_s * 1000;
      const churn = clients.ask(
        lanes.map((inFlight) => ({ type: 'churn', ...target, inFlight, warmupMS, durationMS })),
        'churned',
      );
      await sleep(warmupMS);
      const a = sampleProcess(proxy.pid);
      const loadA = clients.pids.map((pid) => sampleProcess(pid));
      await sleep(durationMS);
      const b = sampleProcess(proxy.pid);
      const loadB = clients.pids.map((pid) => sampleProcess(pid));
      const out = await churn;
      const completed = out.reduce((s, o) => s + o.completed, 0);
      const windowMS = Math.max(...out.map((o) => o.window_ms));
      const proxyCpuMS = b.cpuMS - a.cpuMS;
      const loadCpuMS = loadB.reduce((s, x, i) => s + (x && loadA[i] ? x.cpuMS - loadA[i].cpuMS : 0), 0);
      results.rate = {
        in_flight: settings.in_flight,
        completed,
        failed: out.reduce((s, o) => s + o.failed, 0),
        first_error: out.find((o) => o.first_error)?.first_error,
        window_ms: round(windowMS),
        connections_per_second: round((completed * 1000) / windowMS),
        latency: { p50_us: Math.max(...out.map((o) => o.latency.p50_us)), p99_us: Math.max(...out.map((o) => o.latency.p99_us)) },
        proxy_cpu_percent: round((proxyCpuMS / (b.at - a.at)) * 100),
        proxy_cpu_us_per_connection: completed > 0 ? round((proxyCpuMS * 1000) / completed, 1) : null,
        clients_cpu_percent: round((loadCpuMS / (b.at - a.at)) * 100),
        target_per_second: 2000,
      };
    }
    clients.stop();
    cleanups.shift();
    await proxy.stop();
    cleanups.shift();
  }

  // ---- 3: workers scaling.
  if (settings.phases.includes('workers')) {
    results.workers = [];
    for (const workers of [1, 2]) {
      log(`workers: point reads at concurrency ${settings.concurrency} against --workers ${workers}...`);
      const proxy = await startProxy({ upstreamUri: upstream.uri, configDir, env: proxyEnv, args: ['--workers', String(workers)] });
      cleanups.unshift(() => proxy.stop());
      const probes = { proxy: proxy.pid };
      if (workers > 1) {
        const ready = await getJSON(proxy.httpPort, '/readyz', { timeoutMS: 30_000, required: true });
        for (const w of ready.workers ?? []) probes[`worker${w.id}`] = w.pid;
      }
      const uri = proxy.uri(BENCH_APP.slug);
      await prepare(uri, 'point_read');
      // Connections per worker, read from /readyz half way through the measured window.
      const midway = workers > 1 ? sleep((settings.warmup_s + settings.duration_s / 2) * 1000).then(() => getJSON(proxy.httpPort, '/readyz', { timeoutMS: 30_000, required: true })) : undefined;
      const r = await runLoad({
        uri,
        workload: 'point_read',
        concurrency: settings.concurrency,
        workers: 2,
        warmupMS: settings.warmup_s * 1000,
        durationMS: settings.duration_s * 1000,
        probes: { ...probes, upstream: upstream.pid },
      });
      const procs = Object.entries(r.processes).filter(([name]) => name !== 'upstream');
      const proxyCpu = procs.reduce((s, [, p]) => s + (p?.cpu_percent ?? 0), 0);
      const proxyCpuPerOp = procs.reduce((s, [, p]) => s + (p?.cpu_us_per_op ?? 0), 0);
      const worker = { ...r, proxy_workers: workers, load_processes: r.workers, proxy_cpu_percent: round(proxyCpu), proxy_cpu_us_per_op: round(proxyCpuPerOp, 2) };
      if (midway) worker.connections_per_worker = ((await midway).workers ?? []).map((w) => w.connections);
      results.workers.push(worker);
      await proxy.stop();
      cleanups.shift();
    }
    const [one, two] = results.workers;
    results.workers_scaling = {
      ops_per_second_1: one.ops_per_second,
      ops_per_second_2: two.ops_per_second,
      ratio: one.ops_per_second > 0 ? round(two.ops_per_second / one.ops_per_second, 3) : null,
    };
  }
} finally {
  for (const fn of cleanups) await fn();
}

results.finished = new Date().toISOString();
fs.mkdirSync(path.dirname(outFile), { recursive: true });
fs.writeFileSync(outFile, `${JSON.stringify(results, null, 2)}\n`);

// ---- The table.
const rows = [];
if (results.idle) {
  const i = results.idle;
  rows.push(['idle connections held', `${i.connections_open} / ${i.connections_requested} (proxy counts ${i.proxy_reported_connections})`]);
  rows.push(['proxy RSS before → held', `${i.rss_before_mb} MB → ${i.rss_held_mb} MB (target < ${i.target_rss_mb} MB)`]);
  rows.push(['RSS per connection', `${i.bytes_per_connection} bytes (${i.bytes_per_connection_after_ping} after a ping on each)`]);
  rows.push(['pings answered', `${i.pinged_ok} / ${i.connections_open}`]);
  rows.push(['opening rate (64 in flight)', `${i.open_per_second} /s`]);
}
if (results.rate) {
  const r = results.rate;
  rows.push(['connect + hello + auth rate', `${r.connections_per_second} /s (target > ${r.target_per_second}; ${r.failed} failed)`]);
  rows.push(['  latency p50 / p99', `${r.latency.p50_us} / ${r.latency.p99_us} µs`]);
  rows.push(['  proxy CPU', `${r.proxy_cpu_percent}% (${r.proxy_cpu_us_per_connection} µs per connection); clients ${r.clients_cpu_percent}%`]);
}
if (results.workers) {
  for (const w of results.workers) {
    rows.push([
      `point reads, --workers ${w.proxy_workers}`,
      `${w.ops_per_second} ops/s, p50 ${w.latency.p50_us} µs, p99 ${w.latency.p99_us} µs, proxy CPU ${w.proxy_cpu_percent}%${w.connections_per_worker ? ` (connections per worker ${w.connections_per_worker.join('/')})` : ''}`,
    ]);
  }
  rows.push(['workers 2 / 1', `${results.workers_scaling.ratio}×`]);
}
const width = Math.max(...rows.map((r) => r[0].length));
process.stdout.write(`\nScale (${smoke ? 'smoke, ' : ''}${results.machine.cpus} CPUs, load ${results.machine.loadavg.join(' ')})\n`);
for (const [k, v] of rows) process.stdout.write(`  ${k.padEnd(width)}  ${v}\n`);
process.stdout.write(`results: ${path.relative(ROOT, outFile)}\n`);
