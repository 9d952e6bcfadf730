// Load from the real Node driver, in worker processes of their own (child_process.fork) so that the
// load generator never shares an event loop with what it measures. One call = one run: warm-up, then
// a fixed measured window; ops/s, latency percentiles, and for each probed process (the proxy, the
// upstream, ...) its CPU time per operation and resident memory, read from /proc over the same window.
import { fork } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { MongoClient } from 'mongodb';
import { sampleProcess, waitForMessage } from './processes.mjs';
import { LatencyHistogram, round } from './stats.mjs';
import { WORKLOADS } from './workloads.mjs';

const WORKER = path.join(path.dirname(fileURLToPath(import.meta.url)), 'load-worker.mjs');
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Seeds what a workload needs (e.g. the documents point reads look up), through the target itself. */
export async function prepare(uri, workload, { db = 'bench', options = {}, clientOptions = {} } = {}) {
  const w = WORKLOADS[workload];
  if (!w) throw new Error(`unknown workload ${workload}; known: ${Object.keys(WORKLOADS).join(', ')}`);
  if (!w.prepare) return;
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 15_000, ...clientOptions });
  try {
    await client.connect();
    await w.prepare(client.db(db).collection(w.collection), options);
  } finally {
    await client.close();
  }
}

/** Splits `total` connections over `workers` processes as evenly as possible. */
function split(total, workers) {
  const n = Math.max(1, Math.min(workers, total));
  return Array.from({ length: n }, (_, i) => Math.floor(total / n) + (i < total % n ? 1 : 0));
}

function waitFor(child, type, timeoutMS = 300_000) {
  return waitForMessage(child, type, timeoutMS, 'load worker');
}

/**
 * One run against one target. Options:
 *  uri, workload (a key of WORKLOADS), concurrency (client connections = operations in flight),
 *  workers (load processes, default min(2, concurrency)), warmupMS, durationMS,
 *  probes ({ name: pid }: processes whose CPU and memory are reported, e.g. { proxy: pid }),
 *  db ('bench'), options (the workload's: seedCount ...), clientOptions (MongoClient options),
 *  exitGraceMS (how long a worker lets operations in flight finish after the window before closing
 *  its client, 3,000: a slow upstream's tail must not run into the next run),
 *  rate (total operations per second, spread over the connections: an open loop at a fixed rate, so
 *  that configurations are compared at the same throughput; default 0: every connection sends its
 *  next operation as soon as the reply came, a closed loop at whatever the system sustains).
 * Returns { ops, ops_per_second, docs_per_second, errors, first_error, latency: {p50_us, p99_us, p999_us, mean_us,
 * max_us} (nulls when no operation completed in the window), window_ms, processes: { name: {
 * cpu_us_per_op, cpu_percent, rss_mb, peak_rss_mb } }, load: { cpu_percent, cpu_us_per_op } }.
 * For a progressive workload (WORKLOADS[w].progressive: the scan) `ops` is the work done in the window
 * in whole operations (documents read ÷ documents per scan, fractional), with `completed_ops` and
 * `units` beside it; CPU per op is per such operation.
 */
export async function runLoad(opts) {
  const [result] = await runLoads([opts], opts);
  return result;
}

/**
 * Several targets loaded at the same time, each by its own worker processes, with the phases
 * (warm-up, measured window) in step: what happens to the machine during the window happens to all of
 * them. `targets`: [{ uri, probes, workload?, concurrency?, workers?, db?, options? }]; `common`: the defaults of
 * runLoad's options (workload, concurrency, workers, warmupMS, durationMS, db, options,
 * clientOptions). Returns one result per target, in order.
 */
export async function runLoads(targets, common = {}) {
  const { warmupMS = 3000, durationMS = 10_000, db = 'bench', options = {}, clientOptions = {}, exitGraceMS = 3000 } = common;
  const rateOf = (t) => t.rate ?? common.rate ?? 0;
  const plans = targets.map((t) => {
    const workload = t.workload ?? common.workload;
    const concurrency = t.concurrency ?? common.concurrency ?? 16;
    const workers = t.workers ?? common.workers ?? Math.min(2, concurrency);
    return {
      target: t,
      workload,
      concurrency,
      db: t.db ?? db,
      options: t.options ?? options,
      children: split(concurrency, workers).map((connections) => ({
        connections,
        child: fork(WORKER, [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }),
      })),
    };
  });
  const allChildren = plans.flatMap((p) => p.children);
  try {
    await Promise.all(
      plans.flatMap((p) =>
        p.children.map(({ child, connections }) => {
          const ready = waitFor(child, 'ready', 30_000);
          const rate = (rateOf(p.target) * connections) / p.concurrency;
          child.send({ type: 'init', uri: p.target.uri, workload: p.workload, connections, rate, db: p.db, options: p.options, clientOptions, exitGraceMS });
          return ready;
        }),
      ),
    );
    for (const { child } of allChildren) child.send({ type: 'go' });
    await sleep(warmupMS);

    const sampleAll = () =>
      plans.map((p) => ({
        probes: Object.fromEntries(Object.entries(p.target.probes ?? {}).map(([name, pid]) => [name, sampleProcess(pid)])),
        load: p.children.map(({ child }) => sampleProcess(child.pid)),
      }));
    const before = sampleAll();
    const windowStart = process.hrtime.bigint();
    for (const { child } of allChildren) child.send({ type: 'measure' });
    await sleep(durationMS);
    const results = plans.map((p) => Promise.all(p.children.map(({ child }) => waitFor(child, 'result', 60_000))));
    for (const { child } of allChildren) child.send({ type: 'stop' });
    const windowEnd = process.hrtime.bigint();
    const after = sampleAll();
    const outs = await Promise.all(results);
    // The measured window on the monotonic clock (µs), which V8's CPU profiles use too.
    const window = [Number(windowStart / 1000n), Number(windowEnd / 1000n)];
    return plans.map((p, i) => ({ ...summarizeRun(p, outs[i], before[i], after[i]), window_monotonic_us: window }));
  } finally {
    await Promise.all(
      allChildren.map(
        ({ child }) =>
          new Promise((resolve) => {
            if (child.exitCode !== null || child.signalCode !== null) return resolve();
            const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
            child.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            if (child.connected) child.send({ type: 'exit' });
            else child.kill('SIGTERM');
          }),
      ),
    );
  }
}

function summarizeRun(plan, outs, before, after) {
  const hist = new LatencyHistogram();
  let completed = 0;
  let units = 0;
  let errors = 0;
  let completedPerSecond = 0;
  let unitsPerSecond = 0;
  let firstError;
  for (const r of outs) {
    hist.merge(LatencyHistogram.fromJSON(r.histogram));
    completed += r.ops;
    units += r.units ?? 0;
    errors += r.errors;
    completedPerSecond += r.windowMS > 0 ? (r.ops * 1000) / r.windowMS : 0;
    unitsPerSecond += r.windowMS > 0 ? ((r.units ?? 0) * 1000) / r.windowMS : 0;
    firstError ??= r.firstError;
  }
  // A progressive workload (a scan) is measured by the work done in the window (documents read),
  // expressed in whole operations: a scan still running at the end counts for what it read.
  const w = WORKLOADS[plan.workload];
  const unitsPerOp = w?.progressive ? w.unitsPerOp(plan.options) : undefined;
  const ops = unitsPerOp ? units / unitsPerOp : completed;
  const opsPerSecond = unitsPerOp ? unitsPerSecond / unitsPerOp : completedPerSecond;
  const docsPerOp = w?.docsPerOp ? w.docsPerOp(plan.options) : 1;
  const processes = {};
  for (const name of Object.keys(before.probes)) {
    const a = before.probes[name];
    const b = after.probes[name];
    if (!a || !b) {
      processes[name] = null;
      continue;
    }
    const cpuMS = b.cpuMS - a.cpuMS;
    processes[name] = {
      cpu_us_per_op: ops > 0 ? round((cpuMS * 1000) / ops, 2) : null,
      cpu_percent: round((cpuMS / (b.at - a.at)) * 100),
      rss_mb: round(b.rssBytes / 2 ** 20),
      peak_rss_mb: round(b.hwmBytes / 2 ** 20),
    };
  }
  let loadCpuMS = 0;
  let loadWallMS = 0;
  before.load.forEach((a, i) => {
    const b = after.load[i];
    if (a && b) {
      loadCpuMS += b.cpuMS - a.cpuMS;
      loadWallMS = Math.max(loadWallMS, b.at - a.at);
    }
  });
  return {
    workload: plan.workload,
    concurrency: plan.concurrency,
    workers: plan.children.length,
    ops: unitsPerOp ? round(ops, 3) : ops,
    ...(unitsPerOp ? { completed_ops: completed, units } : {}),
    ops_per_second: round(opsPerSecond, opsPerSecond < 100 ? 3 : 1),
    docs_per_second: round(opsPerSecond * docsPerOp),
    errors,
    ...(firstError !== undefined ? { first_error: firstError } : {}),
    // No operation completed in the window (a long scan): no latency to report, rather than zeros.
    latency: hist.n > 0 ? hist.summary() : { p50_us: null, p99_us: null, p999_us: null, mean_us: null, max_us: null },
    window_ms: round(Math.max(...outs.map((r) => r.windowMS))),
    processes,
    load: {
      cpu_percent: loadWallMS > 0 ? round((loadCpuMS / loadWallMS) * 100) : null,
      cpu_us_per_op: ops > 0 ? round((loadCpuMS * 1000) / ops, 2) : null,
    },
  };
}
