// The end-to-end benchmark (bench/README.md, "End to end"): the same workloads, in one run, against
// three targets on the same upstream:
//   direct  the upstream itself;
//   relay   a plain TCP relay (bench/lib/relay.mjs): the floor for any proxy on this machine;
//   proxy   mdb-runtime (the built CLI, `serve`, started as an operator would) serving app `bench`
//           with a realistic manifest: auth_required + JWT (the driver connects with PLAIN and a token),
//           data_access.collections, a managed index, limits.
// on two upstreams:
//   ferretdb  FerretDB v1.24.2 on SQLite (the test upstream; slow: the proxy's cost is small beside it);
//   fast      the fast responder (bench/lib/fast-upstream.mjs), so that what is measured is the proxy's
//             own cost: CPU µs per operation of the proxy and of the relay.
// Load: the real Node driver in forked worker processes (bench/lib/load.mjs). Every run: warm-up, then a
// fixed measured window; several repetitions with the order of the targets rotating; medians.
//
// node bench/e2e.mjs [--upstream ferretdb|fast|both] [--targets direct,relay,proxy]
//   [--workloads point_read,insert,insert_many,scan,aggregate,ycsb_b] [--concurrency 1,16,256]
//   [--fast-concurrency 16] [--reps 3] [--duration 4] [--warmup 1.5] [--no-caps]
//   [--mode sequential|side-by-side] [--out FILE] [--proxy-log DIR] [--smoke] [--no-snapshot]
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SignJWT } from 'jose';
import { renderChart } from './lib/chart.mjs';
import { buildFerretDB, startFerretDB } from '../dist/testing/ferretdb.js';
import { CLI, ROOT } from '../dist/testing/processes.js';
import { prepare, runLoads } from './lib/load.mjs';
import {
  commandLine,
  getJSON,
  gitState,
  httpGet,
  machine,
  makeConfigDir,
  snapshotBuild,
  startFastUpstreamProcess,
  startProxy,
  sampleProcess,
  startRelayProcess,
} from './lib/processes.mjs';
import { median, round } from './lib/stats.mjs';
import { WORKLOADS } from './lib/workloads.mjs';

// ---- Options.
const { has, opt } = commandLine();
const list = (s) => s.split(',').map((x) => x.trim()).filter(Boolean);
const numbers = (s) => list(s).map(Number);
if (has('--help')) {
  const lines = fs.readFileSync(new URL(import.meta.url), 'utf8').split('\n');
  process.stdout.write(`${lines.slice(0, lines.findIndex((l) => !l.startsWith('//'))).join('\n')}\n`);
  process.exit(0);
}
const smoke = has('--smoke');
const ALL_TARGETS = ['direct', 'relay', 'proxy'];
const ALL_WORKLOADS = ['point_read', 'insert', 'insert_many', 'scan', 'aggregate', 'ycsb_b'];
const upstreamArg = opt('--upstream', 'both');
const settings = {
  upstreams: upstreamArg === 'both' ? ['ferretdb', 'fast'] : list(upstreamArg),
  targets: list(opt('--targets', ALL_TARGETS.join(','))),
  workloads: list(opt('--workloads', ALL_WORKLOADS.join(','))),
  concurrency: {
    ferretdb: numbers(opt('--concurrency', smoke ? '2' : '1,16,256')),
    fast: numbers(opt('--fast-concurrency', opt('--concurrency', smoke ? '2' : '16'))),
  },
  repetitions: Number(opt('--reps', smoke ? '1' : '3')),
  warmup_s: Number(opt('--warmup', smoke ? '0.5' : '1.5')),
  duration_s: Number(opt('--duration', smoke ? '1' : '4')),
  // Sequential: one target at a time (the upstream serves one target in a window). Side-by-side: all
  // targets at once, phases in step (only for the smoke run: they would share the upstream).
  mode: opt('--mode', smoke ? 'side-by-side' : 'sequential'),
  caps: !has('--no-caps'),
  smoke,
  // Workload sizes (bench/lib/workloads.mjs); the smoke run uses smaller ones to seed in seconds.
  workload_options: smoke
    ? { seedCount: 200, scanDocs: 1000, scanBatchSize: 100, insertManyDocs: 200, aggregateDocs: 200, ycsbRecords: 200 }
    : { seedCount: 1000, scanDocs: 10_000, scanBatchSize: 1000, insertManyDocs: 1000, aggregateDocs: 1000, ycsbRecords: 1000 },
};
for (const u of settings.upstreams) if (!['ferretdb', 'fast'].includes(u)) throw new Error(`--upstream is ferretdb, fast or both, not ${u}`);
for (const t of settings.targets) if (!ALL_TARGETS.includes(t)) throw new Error(`unknown target ${t}; known: ${ALL_TARGETS.join(', ')}`);
for (const w of settings.workloads) if (!WORKLOADS[w]) throw new Error(`unknown workload ${w}; known: ${Object.keys(WORKLOADS).join(', ')}`);
if (!['sequential', 'side-by-side'].includes(settings.mode)) throw new Error(`--mode is sequential or side-by-side, not ${settings.mode}`);

/**
 * Combinations not run on FerretDB, and why (--no-caps runs them anyway). FerretDB serves ~8 inserts
 * of 1,000 documents and ~8 aggregates per second in all: at 256 connections one operation waits
 * ~30 s in its queue, longer than any window this run can afford, so no operation would complete in
 * it. 256 scans at once: FerretDB reads ~6,000 documents/s in all, so the first batches of 1,000 arrive
 * after ~30 s, and nothing completes in a window.
 */
const CAPS = {
  ferretdb: {
    scan: {
      max: 16,
      why:
        'FerretDB reads ~6,000 documents/s in all: at 256 connections the first batches arrive after ~30 s',
    },
    insert_many: { max: 16, why: 'FerretDB serves ~8 insertMany(1,000)/s in all: at 256 connections one takes ~30 s, longer than the window' },
    aggregate: { max: 16, why: 'FerretDB serves ~8 aggregates/s (no index use in its SQLite backend): at 256 connections one takes ~30 s' },
  },
};

/** Load processes for a concurrency: 1-8 connections in one, up to 32 in two, more in four (256 = 4 × 64). */
const workersFor = (c) => (c <= 8 ? 1 : c <= 32 ? 2 : 4);

const started = new Date();
const stamp = started.toISOString().replace(/[:.]/g, '-');
const outFile = opt('--out', path.join(ROOT, 'bench/results', `${stamp}-e2e${smoke ? '-smoke' : ''}.json`));
const svgFile = outFile.replace(/\.json$/, '') + '.svg';
const log = (line) => process.stderr.write(`${line}\n`);
const notes = [];
// --proxy-log DIR keeps the proxy's JSON log (proxy-<upstream>.log) for a look afterwards.
const proxyLogDir = opt('--proxy-log');
if (proxyLogDir) fs.mkdirSync(proxyLogDir, { recursive: true });

// ---- The app the proxy serves: a realistic manifest (JWT auth, the workload collections, a managed
// index for the aggregate's $match, limits well above what this load needs).
const APP = 'bench';
const SECRET_ENV = 'BENCH_JWT_SECRET';
const secret = crypto.randomBytes(32).toString('hex');
const collections = [...new Set(Object.values(WORKLOADS).map((w) => w.collection))];
const MANIFEST = `slug: ${APP}
name: End-to-end benchmark app
auth_required: true
auth:
  jwt:
    secret_env: ${SECRET_ENV}
    algorithms: [HS256]
managed_indexes:
  ${WORKLOADS.aggregate.collection}:
    - { keys: { category: 1 }, name: category_1 }
data_access:
  collections: [${collections.join(', ')}]
limits:
  connections: 1000
  operations_per_second: 1000000
  max_document_bytes: 1048576
`;
// Each target has a database of its own on the upstream, so that targets never read each other's
// writes: direct and relay use these; the proxy's app says `e2e` and the proxy stores its collections
// as bench_<name> in its physical database (--database).
const DATABASES = { direct: 'e2e_direct', relay: 'e2e_relay', proxy: 'e2e' };
const PROXY_PHYSICAL_DATABASE = 'e2e_proxy';

async function mintToken() {
  return new SignJWT({ app: APP, sub: 'e2e-bench' })
    .setProtectedHeader({ alg: 'HS256' })
    .setExpirationTime('24h')
    .sign(new TextEncoder().encode(secret));
}

/**
 * The proxy's open cursors and busy upstream connections from /metrics, read after a run (once its
 * load processes are gone): cursors or connections still held then belong to clients that left.
 */
async function proxyLeftovers(proxy) {
  const text = (await httpGet(proxy.httpPort, '/metrics')).body;
  const sum = (name) => {
    let total = null;
    for (const m of text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? ([0-9.e+-]+)$`, 'gm'))) total = (total ?? 0) + Number(m[1]);
    return total;
  };
  return { open_cursors: sum('mdb_open_cursors'), upstream_pool_in_use: sum('mdb_upstream_pool_in_use') };
}

/** Waits until the proxy's reconciler has finished a pass for the app (the managed index exists). */
async function waitForIndexes(proxy, timeoutMS = 60_000) {
  const deadline = Date.now() + timeoutMS;
  let last;
  while (Date.now() < deadline) {
    const apps = await getJSON(proxy.httpPort, '/apps');
    const app = (Array.isArray(apps) ? apps : apps?.apps ?? []).find((a) => a.slug === APP);
    last = app?.indexes;
    if (last && last.phase === 'done') return last;
    if (last && last.phase === 'failed') break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const note = `proxy: the managed index was not confirmed (${last ? `phase ${last.phase}${last.error ? `: ${last.error}` : ''}` : 'no index state in /apps'})`;
  notes.push(note);
  log(`NOTE: ${note}`);
  return last;
}

// ---- One upstream: start it, the relay and the proxy in front of it, seed each target, measure.
const snapshot = smoke || has('--no-snapshot') ? { cli: CLI, remove() {} } : snapshotBuild();
const token = await mintToken();
const configDir = makeConfigDir({ apps: [{ slug: APP, yaml: MANIFEST }] });
const runs = [];
const skipped = [];
const upstreamInfo = {};
const machineBefore = machine();

async function startUpstream(kind) {
  if (kind === 'ferretdb') {
    const f = await startFerretDB(buildFerretDB());
    return { ...f, description: 'FerretDB v1.24.2, SQLite backend (child process)' };
  }
  const f = await startFastUpstreamProcess({ scanSize: settings.workload_options.scanDocs });
  return { ...f, description: 'fast responder (bench/lib/fast-upstream.mjs, child process)' };
}

async function benchUpstream(kind) {
  const t0 = Date.now();
  log(`\n== upstream: ${kind}`);
  const upstream = await startUpstream(kind);
  const hostPort = new URL(upstream.uri).host;
  const relay = settings.targets.includes('relay') ? await startRelayProcess(hostPort) : undefined;
  let proxy;
  try {
    if (settings.targets.includes('proxy')) {
      proxy = await startProxy({
        upstreamUri: upstream.uri,
        configDir,
        cli: snapshot.cli,
        args: ['--database', PROXY_PHYSICAL_DATABASE],
        env: { [SECRET_ENV]: secret },
        ...(proxyLogDir ? { logFile: path.join(proxyLogDir, `proxy-${kind}.log`) } : {}),
      });
    }
    const targets = {
      direct: { uri: upstream.uri, probes: { upstream: upstream.pid }, own: undefined },
      relay: relay && { uri: `mongodb://127.0.0.1:${relay.port}/`, probes: { relay: relay.pid, upstream: upstream.pid }, own: 'relay' },
      proxy: proxy && {
        uri: `mongodb://${APP}:${token}@127.0.0.1:${proxy.port}/?authMechanism=PLAIN&authSource=%24external`,
        probes: { proxy: proxy.pid, upstream: upstream.pid },
        own: 'proxy',
      },
    };
    log(
      `upstream pid ${upstream.pid}${relay ? `, relay pid ${relay.pid}` : ''}${proxy ? `, proxy pid ${proxy.pid} (PLAIN + JWT, physical database ${PROXY_PHYSICAL_DATABASE})` : ''}`,
    );

    // Seed every target through itself, the same documents (the proxy tags and prefixes them).
    const tPrepare = Date.now();
    for (const name of settings.targets) {
      for (const workload of settings.workloads) {
        await prepare(targets[name].uri, workload, {
          db: DATABASES[name],
          options: { ...settings.workload_options, managedIndexes: name === 'proxy' },
        });
      }
    }
    const indexState = proxy && settings.workloads.includes('aggregate') ? await waitForIndexes(proxy) : undefined;
    const prepareSeconds = round((Date.now() - tPrepare) / 1000);
    log(`seeded ${settings.targets.join(', ')} in ${prepareSeconds} s`);

    for (const workload of settings.workloads) {
      for (const concurrency of settings.concurrency[kind]) {
        const cap = settings.caps ? CAPS[kind]?.[workload] : undefined;
        if (cap && concurrency > cap.max) {
          skipped.push({ upstream: kind, workload, concurrency, why: cap.why });
          log(`  skip ${workload} c${concurrency}: ${cap.why}`);
          continue;
        }
        for (let rep = 1; rep <= settings.repetitions; rep++) {
          await measure({ kind, workload, concurrency, rep, targets, proxy });
        }
      }
    }
    upstreamInfo[kind] = {
      description: upstream.description,
      prepare_seconds: prepareSeconds,
      wall_seconds: round((Date.now() - t0) / 1000),
      ...(indexState ? { proxy_index_state: indexState } : {}),
      ...(proxy ? { proxy_log_lines: proxy.logLines() } : {}),
    };
  } finally {
    await proxy?.stop();
    await relay?.stop();
    await upstream.stop();
  }
}

/** One repetition of one workload at one concurrency: the targets one after the other (or together). */
async function measure({ kind, workload, concurrency, rep, targets, proxy }) {
  const names = settings.targets;
  // The order rotates with the repetition, so that no target always runs first after the seeding or
  // right after the heaviest one.
  const shift = (rep - 1) % names.length;
  const order = [...names.slice(shift), ...names.slice(0, shift)];
  const batches = settings.mode === 'side-by-side' ? [order] : order.map((n) => [n]);
  for (const batch of batches) {
    const linesBefore = proxy?.logLines() ?? 0;
    const results = await runLoads(
      batch.map((name) => ({ uri: targets[name].uri, probes: targets[name].probes, db: DATABASES[name] })),
      {
        workload,
        concurrency,
        workers: workersFor(concurrency),
        warmupMS: settings.warmup_s * 1000,
        durationMS: settings.duration_s * 1000,
        options: settings.workload_options,
        // After the window, operations in flight may finish for a few seconds (FerretDB's tail must not
        // run into the next target's window); the smoke run does not wait.
        exitGraceMS: smoke ? 100 : 3000,
      },
    );
    const settledMS = await settle(targets.direct.probes.upstream);
    const leftovers = batch.includes('proxy') && proxy ? await proxyLeftovers(proxy) : undefined;
    batch.forEach((name, i) => {
      const r = results[i];
      const own = targets[name].own ? r.processes[targets[name].own] : undefined;
      const run = {
        upstream: kind,
        target: name,
        rep,
        ...r,
        upstream_settle_ms: settledMS,
        ...(name === 'proxy' && batch.length === 1 ? { proxy_log_lines: (proxy?.logLines() ?? 0) - linesBefore } : {}),
        ...(name === 'proxy' && leftovers ? { proxy_after_run: leftovers } : {}),
      };
      runs.push(run);
      log(
        `  ${kind} ${workload.padEnd(11)} c${String(concurrency).padEnd(3)} rep ${rep} ${name.padEnd(6)} ` +
          `${fmt(r.ops_per_second).padStart(8)} ops/s  p50 ${fmt(ms(r.latency.p50_us))} ms  p99 ${fmt(ms(r.latency.p99_us))} ms` +
          (own ? `  ${name} ${own.cpu_us_per_op} µs CPU/op ${own.rss_mb} MB` : '') +
          (name === 'proxy' && leftovers?.open_cursors ? `  (after: ${leftovers.open_cursors} cursors open, ${leftovers.upstream_pool_in_use} upstream connections busy)` : '') +
          (r.errors ? `  ERRORS ${r.errors}: ${r.first_error}` : ''),
      );
    });
  }
}

/**
 * Waits until the upstream is idle (under 15% of a core over 200 ms, at most 15 s) before the next run:
 * operations cut off at the end of a window (256 scans on FerretDB) may still be running there, and
 * their tail must not be charged to the next target. Returns how long it waited (ms).
 */
async function settle(pid) {
  const t0 = performance.now();
  let a = sampleProcess(pid);
  while (a && performance.now() - t0 < 15_000) {
    await new Promise((r) => setTimeout(r, 200));
    const b = sampleProcess(pid);
    if (!b || (b.cpuMS - a.cpuMS) / (b.at - a.at) < 0.15) break;
    a = b;
  }
  return Math.round(performance.now() - t0);
}

const ms = (us) => (typeof us === 'number' ? us / 1000 : null);

function fmt(x) {
  if (x === null || x === undefined || !Number.isFinite(x)) return 'n/a';
  if (Math.abs(x) >= 100) return Math.round(x).toLocaleString('en-US');
  if (Math.abs(x) >= 10) return x.toFixed(1);
  return x.toFixed(2);
}

// ---- Summary: medians per upstream × workload × concurrency × target, ratios, verdicts.
function summarizeTarget(rs, own) {
  const m = (f, digits = 1) => round(median(rs.map(f)), digits);
  return {
    runs: rs.length,
    ops: round(rs.reduce((n, r) => n + r.ops, 0), 3),
    errors: rs.reduce((n, r) => n + r.errors, 0),
    ...(rs.some((r) => r.first_error) ? { first_error: rs.find((r) => r.first_error).first_error } : {}),
    ops_per_second: m((r) => r.ops_per_second, 3),
    docs_per_second: m((r) => r.docs_per_second),
    p50_us: m((r) => r.latency.p50_us),
    p99_us: m((r) => r.latency.p99_us),
    p999_us: m((r) => r.latency.p999_us),
    ...(rs.some((r) => r.completed_ops !== undefined) ? { completed_ops: rs.reduce((n, r) => n + (r.completed_ops ?? 0), 0) } : {}),
    ...(own
      ? {
          [`${own}_cpu_us_per_op`]: m((r) => r.processes[own]?.cpu_us_per_op, 2),
          [`${own}_cpu_percent`]: m((r) => r.processes[own]?.cpu_percent),
          [`${own}_rss_mb`]: m((r) => r.processes[own]?.rss_mb),
          [`${own}_peak_rss_mb`]: Math.max(...rs.map((r) => r.processes[own]?.peak_rss_mb ?? 0)),
        }
      : {}),
    upstream_cpu_us_per_op: m((r) => r.processes.upstream?.cpu_us_per_op, 2),
    load_cpu_us_per_op: m((r) => r.load.cpu_us_per_op, 2),
    ...(rs.some((r) => r.proxy_log_lines !== undefined) ? { proxy_log_lines: rs.reduce((n, r) => n + (r.proxy_log_lines ?? 0), 0) } : {}),
    ...(rs.some((r) => r.proxy_after_run) ? { proxy_open_cursors_after_max: Math.max(...rs.map((r) => r.proxy_after_run?.open_cursors ?? 0)) } : {}),
  };
}

const ratio = (a, b) => (Number.isFinite(a) && Number.isFinite(b) && b > 0 ? round(a / b, 3) : null);

function summarize() {
  const summary = {};
  for (const kind of settings.upstreams) {
    summary[kind] = {};
    for (const workload of settings.workloads) {
      for (const concurrency of settings.concurrency[kind]) {
        const of = (t) => runs.filter((r) => r.upstream === kind && r.workload === workload && r.concurrency === concurrency && r.target === t);
        if (settings.targets.every((t) => of(t).length === 0)) continue;
        const cell = {};
        for (const t of settings.targets) {
          if (of(t).length > 0) cell[t] = summarizeTarget(of(t), t === 'direct' ? undefined : t);
        }
        // The headline: the proxy's throughput relative to the upstream itself and to the relay (ratio
        // of the medians), and its p99 latency relative to theirs.
        cell.ratios = {
          proxy_vs_direct_ops: ratio(cell.proxy?.ops_per_second, cell.direct?.ops_per_second),
          proxy_vs_relay_ops: ratio(cell.proxy?.ops_per_second, cell.relay?.ops_per_second),
          relay_vs_direct_ops: ratio(cell.relay?.ops_per_second, cell.direct?.ops_per_second),
          proxy_vs_direct_p99: ratio(cell.proxy?.p99_us, cell.direct?.p99_us),
          proxy_vs_relay_p99: ratio(cell.proxy?.p99_us, cell.relay?.p99_us),
          proxy_vs_relay_cpu_per_op: ratio(cell.proxy?.proxy_cpu_us_per_op, cell.relay?.relay_cpu_us_per_op),
        };
        (summary[kind][workload] ??= {})[concurrency] = cell;
      }
    }
  }
  return summary;
}

/** The concurrency the targets are judged at: 16 when it ran, else the highest that ran. */
function judgedConcurrency(kind) {
  const cs = settings.concurrency[kind] ?? [];
  return cs.includes(16) ? 16 : Math.max(...cs);
}

function verdicts(summary) {
  const out = [];
  if (summary.ferretdb) {
    const c = judgedConcurrency('ferretdb');
    const cells = settings.workloads.map((w) => ({ w, r: summary.ferretdb[w]?.[c]?.ratios.proxy_vs_direct_ops })).filter((x) => x.r !== null && x.r !== undefined);
    const failing = cells.filter((x) => x.r < 0.9);
    out.push({
      name: 'ferretdb_proxy_vs_direct',
      target: `against FerretDB, proxy throughput >= 0.90 of direct at concurrency ${c} for every workload`,
      measured: cells.length > 0,
      values: Object.fromEntries(cells.map((x) => [x.w, x.r])),
      pass: cells.length > 0 ? failing.length === 0 : null,
      detail: cells.length === 0 ? 'not measured' : failing.length ? `below 0.90: ${failing.map((x) => `${x.w} ${x.r}`).join(', ')}` : `lowest ${Math.min(...cells.map((x) => x.r))}`,
    });
  }
  if (summary.fast) {
    const c = judgedConcurrency('fast');
    const cells = ['point_read', 'insert'].map((w) => ({ w, r: summary.fast[w]?.[c]?.ratios.proxy_vs_relay_ops })).filter((x) => x.r !== null && x.r !== undefined);
    const failing = cells.filter((x) => x.r < 0.6);
    out.push({
      name: 'fast_proxy_vs_relay',
      target: `against the fast responder, proxy throughput >= 0.60 of the relay for point reads and inserts (concurrency ${c})`,
      measured: cells.length > 0,
      values: Object.fromEntries(cells.map((x) => [x.w, x.r])),
      pass: cells.length > 0 ? failing.length === 0 : null,
      detail: cells.length === 0 ? 'not measured' : failing.length ? `below 0.60: ${failing.map((x) => `${x.w} ${x.r}`).join(', ')}` : `lowest ${Math.min(...cells.map((x) => x.r))}`,
    });
    const cpu = summary.fast.point_read?.[c]?.proxy?.proxy_cpu_us_per_op;
    out.push({
      name: 'fast_proxy_cpu_point_read',
      target: `proxy CPU per point read under 25 µs (fast responder, concurrency ${c})`,
      measured: Number.isFinite(cpu),
      values: { point_read: Number.isFinite(cpu) ? cpu : null },
      pass: Number.isFinite(cpu) ? cpu < 25 : null,
      detail: Number.isFinite(cpu) ? `${cpu} µs` : 'not measured',
    });
  }
  return out;
}

/** The fast responder's headline: the proxy's and the relay's CPU per operation, and their throughput ratios. */
function fastHeadline(summary) {
  if (!summary.fast) return undefined;
  const c = judgedConcurrency('fast');
  const cell = (w) => summary.fast[w]?.[c];
  const out = { concurrency: c };
  for (const w of ['point_read', 'insert']) {
    out[w] = {
      proxy_cpu_us_per_op: cell(w)?.proxy?.proxy_cpu_us_per_op ?? null,
      relay_cpu_us_per_op: cell(w)?.relay?.relay_cpu_us_per_op ?? null,
      proxy_vs_relay_ops: cell(w)?.ratios.proxy_vs_relay_ops ?? null,
      proxy_vs_direct_ops: cell(w)?.ratios.proxy_vs_direct_ops ?? null,
    };
  }
  return out;
}

// ---- Output: the table, the JSON, the chart.
function table(summary) {
  const lines = [];
  const head = ['workload', 'conc', 'target', 'ops/s', 'p50 ms', 'p99 ms', 'p99.9 ms', 'own CPU µs/op', 'own RSS MB', 'upstream CPU µs/op', 'errors'];
  for (const kind of Object.keys(summary)) {
    const rows = [head];
    for (const [workload, byC] of Object.entries(summary[kind])) {
      for (const [c, cell] of Object.entries(byC)) {
        for (const t of settings.targets) {
          const s = cell[t];
          if (!s) continue;
          const own = t === 'direct' ? undefined : t;
          rows.push([
            workload,
            c,
            t,
            fmt(s.ops_per_second),
            fmt(s.p50_us / 1000),
            fmt(s.p99_us / 1000),
            fmt(s.p999_us / 1000),
            own ? fmt(s[`${own}_cpu_us_per_op`]) : '',
            own ? fmt(s[`${own}_rss_mb`]) : '',
            fmt(s.upstream_cpu_us_per_op),
            String(s.errors),
          ]);
        }
      }
    }
    lines.push('', `### ${kind === 'ferretdb' ? 'FerretDB (SQLite)' : 'fast responder'}`, ...formatRows(rows));
    const ratioRows = [['workload', 'conc', 'proxy/direct ops', 'proxy/relay ops', 'relay/direct ops', 'proxy/direct p99', 'proxy/relay CPU']];
    for (const [workload, byC] of Object.entries(summary[kind])) {
      for (const [c, cell] of Object.entries(byC)) {
        const r = cell.ratios;
        ratioRows.push([workload, c, r.proxy_vs_direct_ops, r.proxy_vs_relay_ops, r.relay_vs_direct_ops, r.proxy_vs_direct_p99, r.proxy_vs_relay_cpu_per_op].map((x) => (x === null ? 'n/a' : String(x))));
      }
    }
    lines.push('', ...formatRows(ratioRows));
  }
  return lines;
}

function formatRows(rows) {
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  return rows.map((r) => r.map((c, i) => (i < 3 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  '));
}

function chart(summary) {
  const sections = Object.keys(summary).map((kind) => ({
    title: kind === 'ferretdb' ? 'Upstream: FerretDB v1.24.2 (SQLite)' : 'Upstream: fast responder (the proxy’s own cost)',
    groups: Object.entries(summary[kind]).flatMap(([workload, byC]) =>
      Object.entries(byC).map(([c, cell]) => ({
        label: `${workload} · ${c} conn.`,
        bars: settings.targets.filter((t) => cell[t]).map((t) => ({ target: t, ops: cell[t].ops_per_second, p99_us: cell[t].p99_us })),
      })),
    ),
  }));
  return renderChart({
    title: 'mdb-runtime end to end: direct vs plain TCP relay vs proxy',
    subtitle: `${started.toISOString()} · ${machineBefore.cpus} × ${machineBefore.cpu_model} · ${settings.repetitions} rep(s) × ${settings.duration_s}s (medians) · workload × client connections`,
    sections,
    targets: settings.targets,
  });
}

try {
  log(
    `e2e: upstreams ${settings.upstreams.join(', ')}; targets ${settings.targets.join(', ')}; workloads ${settings.workloads.join(', ')}; ` +
      `concurrency ferretdb ${settings.concurrency.ferretdb.join('/')}, fast ${settings.concurrency.fast.join('/')}; ` +
      `${settings.repetitions} rep(s) × (${settings.warmup_s}s warm-up + ${settings.duration_s}s); mode ${settings.mode}`,
  );
  if (settings.upstreams.includes('ferretdb') && settings.targets.includes('proxy')) {
    notes.push(
      "FerretDB's SQLite backend uses its primary key only for a filter that is exactly {_id: <value>}. The proxy " +
        'sends exact-_id finds that way (the tag is checked on the returned document), but writes keep the tag in ' +
        'their filter ({_id, app_id}): on FerretDB the 5% updates of ycsb_b scan the collection (1,000 documents) ' +
        "while direct and relay use the key. A MongoDB server uses the _id index either way: read the ycsb_b ratio as FerretDB's planner",
    );
  }
  if (settings.mode === 'side-by-side') {
    notes.push('side-by-side mode: the targets were loaded at the same time on one upstream, so they shared it; the upstream CPU per operation counts the work of all of them');
  }
  for (const kind of settings.upstreams) await benchUpstream(kind);

  const summary = summarize();
  const verdictList = verdicts(summary);
  const finished = new Date();
  const result = {
    benchmark: 'e2e',
    started_at: started.toISOString(),
    finished_at: finished.toISOString(),
    wall_seconds: round((finished - started) / 1000),
    machine: { ...machineBefore, loadavg_after: machine().loadavg },
    git: gitState(),
    settings,
    targets: {
      direct: 'the upstream itself (database e2e_direct)',
      relay: 'plain TCP relay, no parsing (bench/lib/relay.mjs; database e2e_relay)',
      proxy: `mdb-runtime serve (app ${APP}, PLAIN + HS256 JWT; logical database e2e, physical ${PROXY_PHYSICAL_DATABASE}, collections ${APP}_<name>)`,
    },
    workloads: Object.fromEntries(settings.workloads.map((w) => [w, WORKLOADS[w].description])),
    manifest: MANIFEST,
    upstreams: upstreamInfo,
    skipped,
    summary,
    fast_upstream_headline: fastHeadline(summary),
    verdicts: verdictList,
    notes,
    chart: path.relative(ROOT, svgFile) || svgFile,
    runs,
  };
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);
  fs.writeFileSync(svgFile, chart(summary));

  const out = table(summary);
  const head = result.fast_upstream_headline;
  if (head) {
    out.push('', `fast responder, concurrency ${head.concurrency}:`);
    for (const w of ['point_read', 'insert']) {
      const h = head[w];
      out.push(
        `  ${w}: proxy ${fmt(h.proxy_cpu_us_per_op)} µs CPU/op, relay ${fmt(h.relay_cpu_us_per_op)} µs CPU/op; ` +
          `throughput proxy/relay ${h.proxy_vs_relay_ops ?? 'n/a'}, proxy/direct ${h.proxy_vs_direct_ops ?? 'n/a'}`,
      );
    }
  }
  out.push('');
  for (const s of skipped) out.push(`skipped: ${s.upstream} ${s.workload} c${s.concurrency}: ${s.why}`);
  for (const n of notes) out.push(`note: ${n}`);
  for (const v of verdictList) out.push(`verdict: ${v.target}: ${v.pass === null ? 'NOT MEASURED' : v.pass ? 'PASS' : 'FAIL'} (${v.detail})`);
  out.push(
    `machine: ${machineBefore.cpus} × ${machineBefore.cpu_model}, ${machineBefore.node}; load average before ${machineBefore.loadavg.join(' ')}, ` +
      `after ${result.machine.loadavg_after.join(' ')}; wall time ${result.wall_seconds} s`,
  );
  out.push(`results: ${path.relative(ROOT, outFile) || outFile}`, `chart: ${path.relative(ROOT, svgFile) || svgFile}`);
  process.stdout.write(`${out.join('\n')}\n`);
} finally {
  fs.rmSync(configDir, { recursive: true, force: true });
  snapshot.remove();
}
