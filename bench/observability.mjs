// What do logging and metrics cost on the request path? (The target: at most 5% of proxy throughput
// at the default log level.)
//
// Against the fast upstream responder (bench/lib/fast-upstream.mjs, so the proxy is what is measured),
// each repetition starts two proxies (child processes, the built CLI):
//   a. defaults: metrics on, log level info (no flags at all)
//   b. --metrics false --log-level silent (request-path instrumentation off, nothing logged)
// and loads them with point reads by _id and single inserts at concurrency 16, from the real Node
// driver in separate worker processes. Medians over the repetitions are reported, and the cost of a
// relative to b as the median of the per-repetition ratios.
// Two ways to pair a and b (--mode):
//   side-by-side (default): a and b are loaded at the same time, each with its own load processes and
//     the full concurrency, so whatever else the machine does during a window happens to both alike;
//     which one starts and is forked first flips every repetition.
//   alternate: a then b (the order flipping every run). On a machine shared with other work, runs a few
//     seconds apart see different neighbours: measured on the 2-core development machine, alternate
//     pairs scattered 0.63-1.42, side-by-side pairs 0.96-1.14 (and 0.89-1.11 for a build against itself).
// The headline is the proxy's CPU time per operation, read from /proc over the measured window: on a
// machine where the load generator and the proxy share the cores, end-to-end ops/s dilutes the proxy's
// own cost by everything else that runs; CPU per operation is what bounds the proxy's throughput
// (ops/s per core = 1e6 / µs per op). End-to-end ops/s and latencies are reported beside it.
//
// npm run bench:observability -- [--reps 10] [--duration 8] [--warmup 2] [--concurrency 16]
//   [--workers 2] [--workloads point_read,insert] [--mode side-by-side|alternate] [--rate OPS]
//   [--a-args '...'] [--b-args '...'] [--profile] [--out FILE] [--smoke] [--no-snapshot]
// --rate: each proxy gets a fixed rate of operations per second (open loop) instead of as many as it
// sustains, so both are compared at the same throughput.
// --smoke: one short repetition at low concurrency (a few seconds), for the test suite.
// --profile: afterwards, one run per configuration and workload under `node --cpu-prof`, summarised.
import fs from 'node:fs';
import path from 'node:path';
import { prepare, runLoads } from './lib/load.mjs';
import { CLI, ROOT } from '../dist/testing/processes.js';
import {
  BENCH_APP,
  commandLine,
  gitState,
  machine,
  makeConfigDir,
  serveSupportsFlag,
  snapshotBuild,
  startFastUpstreamProcess,
  startProxy,
} from './lib/processes.mjs';
import { printSummary, summarize } from './lib/profile-summary.mjs';
import { median, round } from './lib/stats.mjs';

// ---- Options.
const { has, opt } = commandLine();
const smoke = has('--smoke');
const settings = {
  repetitions: Number(opt('--reps', smoke ? '1' : '10')),
  warmup_s: Number(opt('--warmup', smoke ? '0.5' : '2')),
  duration_s: Number(opt('--duration', smoke ? '1.5' : '8')),
  concurrency: Number(opt('--concurrency', smoke ? '4' : '16')),
  workers: Number(opt('--workers', smoke ? '1' : '2')),
  workloads: opt('--workloads', 'point_read,insert').split(',').filter(Boolean),
  mode: opt('--mode', 'side-by-side'),
  rate: Number(opt('--rate', '0')),
  smoke,
};
if (!['alternate', 'side-by-side'].includes(settings.mode)) throw new Error(`--mode is alternate or side-by-side, not ${settings.mode}`);
const profile = has('--profile');
const started = new Date();
const stamp = started.toISOString().replace(/[:.]/g, '-');
const resultsDir = path.join(ROOT, 'bench/results');
const outFile = opt('--out', path.join(resultsDir, `${stamp}-observability${smoke ? '-smoke' : ''}.json`));
const log = (line) => process.stderr.write(`${line}\n`);
/** Frames counted as the cost of logging and metrics in the profiles (see profile-summary.mjs). */
const OBSERVABILITY_FRAMES = [
  '/observability/', // metrics cells, histograms, the logger
  '/session/steps/observe.', // counting and logging a finished request
  '/pino/',
  '/prom-client/',
  'now', // performance.now(): request timing
];

// ---- The build under test (a snapshot: a rebuild during the run must not change it).
const snapshot = has('--no-snapshot') ? { cli: CLI, remove() {} } : snapshotBuild();
const metricsFlag = serveSupportsFlag('--metrics', snapshot.cli);
const CONFIGS = {
  a: { name: 'defaults (metrics on, log info)', args: [] },
  b: metricsFlag
    ? { name: '--metrics false --log-level silent', args: ['--metrics', 'false', '--log-level', 'silent'] }
    : { name: '--log-level silent (no --metrics flag in this build)', args: ['--log-level', 'silent'] },
};
// Other pairs can be compared (one observability feature at a time, or a against itself to see the
// noise of the machine): --a-args '--metrics false' --b-args '--metrics false --log-level silent'.
for (const key of ['a', 'b']) {
  const custom = opt(`--${key}-args`);
  if (custom !== undefined) CONFIGS[key] = { name: custom.trim() === '' ? 'defaults' : custom.trim(), args: custom.split(/\s+/).filter(Boolean) };
}
const notes = [];
if (!metricsFlag) {
  notes.push(
    'this build of `mdb-runtime serve` has no --metrics flag: the comparison is log level info vs silent only; ' +
      'the cost of metrics is not measured',
  );
  log(`NOTE: ${notes[0]}`);
}

const upstream = await startFastUpstreamProcess();
const configDir = makeConfigDir();
const runs = [];
const machineBefore = machine();
log(
  `observability cost (${settings.mode}): ${settings.repetitions} repetition(s) × ${settings.workloads.join(', ')} × {a, b}, ` +
    `${settings.warmup_s}s warm-up + ${settings.duration_s}s, concurrency ${settings.concurrency} over ${settings.workers} load process(es)` +
    `${settings.rate > 0 ? ` at ${settings.rate} ops/s each` : ''}; ` +
    `upstream: fast responder (pid ${upstream.pid})`,
);
log(`  a = ${CONFIGS.a.name}\n  b = ${CONFIGS.b.name}`);

/**
 * Loads the given proxies ({ a: proxy } or { b: proxy }, or both at once in side-by-side mode) with one
 * workload and records one run per proxy.
 */
async function measure(proxies, workload, rep) {
  const keys = Object.keys(proxies);
  for (const key of keys) await prepare(proxies[key].uri(BENCH_APP.slug), workload);
  const linesBefore = keys.map((key) => proxies[key].logLines());
  const results = await runLoads(
    keys.map((key) => ({ uri: proxies[key].uri(BENCH_APP.slug), probes: { proxy: proxies[key].pid, upstream: upstream.pid } })),
    {
      workload,
      concurrency: settings.concurrency,
      workers: settings.workers,
      warmupMS: settings.warmup_s * 1000,
      durationMS: settings.duration_s * 1000,
      rate: settings.rate,
    },
  );
  return keys.map((config, i) => {
    const r = results[i];
    const run = { rep, config, ...r, proxy_log_lines: proxies[config].logLines() - linesBefore[i] };
    runs.push(run);
    const p = r.processes.proxy;
    log(
      `  rep ${rep} ${workload.padEnd(10)} ${config}: ${String(Math.round(r.ops_per_second)).padStart(6)} ops/s  ` +
        `p50 ${Math.round(r.latency.p50_us)} µs  p99 ${Math.round(r.latency.p99_us)} µs  ` +
        `proxy ${p ? `${p.cpu_us_per_op} µs CPU/op, ${p.cpu_percent}% CPU, ${p.rss_mb} MB` : 'n/a'}  ` +
        `load ${r.load.cpu_percent}% CPU` +
        (r.errors ? `  ERRORS ${r.errors}: ${r.first_error}` : ''),
    );
    return run;
  });
}

try {
  for (let rep = 1; rep <= settings.repetitions; rep++) {
    // Which of the two starts first, is forked first and is listed first flips every repetition, so
    // that no position effect (accept order, scheduling) favours one configuration.
    const proxies = {};
    for (const key of rep % 2 === 1 ? ['a', 'b'] : ['b', 'a']) {
      proxies[key] = await startProxy({ upstreamUri: upstream.uri, configDir, args: CONFIGS[key].args, cli: snapshot.cli });
    }
    try {
      for (const [w, workload] of settings.workloads.entries()) {
        if (settings.mode === 'side-by-side') await measure(proxies, workload, rep);
        else {
          const order = (rep + w) % 2 === 1 ? ['a', 'b'] : ['b', 'a'];
          for (const key of order) await measure({ [key]: proxies[key] }, workload, rep);
        }
      }
    } finally {
      await Promise.all(Object.values(proxies).map((p) => p.stop()));
    }
  }

  // ---- Summary: medians per workload and configuration, and the cost of a over b.
  const summary = {};
  for (const workload of settings.workloads) {
    const of = (key) => runs.filter((r) => r.workload === workload && r.config === key);
    const stats = (key) => {
      const rs = of(key);
      return {
        config: CONFIGS[key].name,
        runs: rs.length,
        ops_per_second: round(median(rs.map((r) => r.ops_per_second))),
        p50_us: round(median(rs.map((r) => r.latency.p50_us))),
        p99_us: round(median(rs.map((r) => r.latency.p99_us))),
        p999_us: round(median(rs.map((r) => r.latency.p999_us))),
        proxy_cpu_us_per_op: round(median(rs.map((r) => r.processes.proxy?.cpu_us_per_op)), 2),
        proxy_cpu_percent: round(median(rs.map((r) => r.processes.proxy?.cpu_percent))),
        proxy_rss_mb: round(median(rs.map((r) => r.processes.proxy?.rss_mb))),
        upstream_cpu_us_per_op: round(median(rs.map((r) => r.processes.upstream?.cpu_us_per_op)), 2),
        load_cpu_us_per_op: round(median(rs.map((r) => r.load.cpu_us_per_op)), 2),
        errors: rs.reduce((n, r) => n + r.errors, 0),
        proxy_log_lines: rs.reduce((n, r) => n + r.proxy_log_lines, 0),
      };
    };
    const a = stats('a');
    const b = stats('b');
    // Paired by repetition: a and b ran back to back, so slow drifts of the machine cancel out.
    const pairs = [];
    for (let rep = 1; rep <= settings.repetitions; rep++) {
      const ra = of('a').find((r) => r.rep === rep);
      const rb = of('b').find((r) => r.rep === rep);
      if (ra && rb) pairs.push({ ra, rb });
    }
    const cpuRatios = pairs.map(({ ra, rb }) => ra.processes.proxy?.cpu_us_per_op / rb.processes.proxy?.cpu_us_per_op);
    const opsRatios = pairs.map(({ ra, rb }) => ra.ops_per_second / rb.ops_per_second);
    const cpuRatio = median(cpuRatios);
    summary[workload] = {
      a,
      b,
      cost: {
        // The proxy's throughput per core is 1/(CPU per op): this is how much of it a costs relative to b.
        proxy_capacity_percent: round((1 - 1 / cpuRatio) * 100, 2),
        proxy_cpu_per_op_percent: round((cpuRatio - 1) * 100, 2),
        proxy_cpu_per_op_percent_of_medians: round((a.proxy_cpu_us_per_op / b.proxy_cpu_us_per_op - 1) * 100, 2),
        end_to_end_throughput_percent: round((1 - median(opsRatios)) * 100, 2),
        paired_cpu_ratios: cpuRatios.map((x) => round(x, 4)),
        paired_ops_ratios: opsRatios.map((x) => round(x, 4)),
      },
    };
  }

  // ---- Optional: where the time goes, one profiled run per configuration and workload (both at once in
  // side-by-side mode). V8 inlining is
  // off in these runs (--no-turbo-inlining) so that small functions (a histogram's observe, a counter)
  // keep their own frames instead of vanishing into their callers; the profiled runs are slower and
  // are not part of the medians. Only the samples of the measured window are counted.
  let profiles;
  if (profile) {
    profiles = {};
    const profDir = outFile.replace(/\.json$/, '') + '-profiles';
    log(`profiling (node --cpu-prof --no-turbo-inlining) into ${path.relative(ROOT, profDir)}`);
    const profiled = async (keys, workload) => {
      const proxies = {};
      for (const key of keys) {
        proxies[key] = await startProxy({
          upstreamUri: upstream.uri,
          configDir,
          args: CONFIGS[key].args,
          nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${path.join(profDir, `${workload}-${key}`)}`, '--no-turbo-inlining'],
          cli: snapshot.cli,
        });
      }
      let measured;
      try {
        measured = await measure(proxies, workload, 'profile');
        runs.splice(runs.length - keys.length, keys.length); // profiled runs are not part of the medians
      } finally {
        await Promise.all(Object.values(proxies).map((p) => p.stop()));
      }
      for (const run of measured) {
        const dir = path.join(profDir, `${workload}-${run.config}`);
        const file = fs.readdirSync(dir).find((f) => f.endsWith('.cpuprofile'));
        if (!file) continue;
        const s = summarize(path.join(dir, file), {
          top: 30,
          match: OBSERVABILITY_FRAMES,
          groups: { 'observability (all of the above)': OBSERVABILITY_FRAMES },
          window: run.window_monotonic_us,
        });
        const perOp = (ms) => round((ms * 1000) / Math.max(1, run.ops), 2);
        const obs = s.inclusive['observability (all of the above)'];
        profiles[`${workload}/${run.config}`] = {
          ops_in_window: run.ops,
          proxy_cpu_us_per_op: run.processes.proxy?.cpu_us_per_op,
          busy_us_per_op: perOp(s.busy_ms),
          observability_us_per_op: perOp(obs.ms),
          ...s,
        };
      }
    };
    for (const workload of settings.workloads) {
      if (settings.mode === 'side-by-side') await profiled(['a', 'b'], workload);
      else for (const key of ['a', 'b']) await profiled([key], workload);
    }
  }

  const finished = new Date();
  const capacityCosts = settings.workloads.map((w) => summary[w].cost.proxy_capacity_percent);
  const worst = Math.max(...capacityCosts);
  const result = {
    benchmark: 'observability',
    started_at: started.toISOString(),
    finished_at: finished.toISOString(),
    machine: { ...machineBefore, loadavg_after: machine().loadavg },
    git: gitState(),
    settings,
    upstream: 'fast responder (bench/lib/fast-upstream.mjs), child process',
    metrics_flag: metricsFlag,
    configs: CONFIGS,
    summary,
    verdict: {
      target: 'logging + metrics cost <= 5% of proxy throughput at the default log level',
      worst_proxy_capacity_cost_percent: worst,
      within_target: worst <= 5,
    },
    notes,
    runs,
    ...(profiles ? { profiles } : {}),
  };
  fs.mkdirSync(path.dirname(outFile), { recursive: true });
  fs.writeFileSync(outFile, `${JSON.stringify(result, null, 2)}\n`);

  // ---- The table.
  const rows = [['workload', 'config', 'ops/s', 'p50 µs', 'p99 µs', 'p99.9 µs', 'proxy CPU µs/op', 'proxy RSS MB', 'log lines']];
  for (const w of settings.workloads) {
    for (const key of ['a', 'b']) {
      const s = summary[w][key];
      rows.push([w, `${key}: ${s.config}`, s.ops_per_second, s.p50_us, s.p99_us, s.p999_us, s.proxy_cpu_us_per_op, s.proxy_rss_mb, s.proxy_log_lines]);
    }
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => String(r[i]).length)));
  const out = [];
  out.push('');
  for (const r of rows) out.push(r.map((c, i) => (i < 2 ? String(c).padEnd(widths[i]) : String(c).padStart(widths[i]))).join('  '));
  out.push('');
  for (const w of settings.workloads) {
    const c = summary[w].cost;
    out.push(
      `${w}: a costs ${c.proxy_cpu_per_op_percent}% more proxy CPU per operation than b (paired median) → ` +
        `proxy throughput per core ${c.proxy_capacity_percent}% lower; end-to-end ops/s ${c.end_to_end_throughput_percent}% lower`,
    );
  }
  out.push(
    `verdict: worst proxy throughput cost ${worst}% (target <= 5%): ${worst <= 5 ? 'within target' : 'OVER TARGET'}` +
      (metricsFlag ? '' : ' — logging only, no --metrics flag in this build'),
  );
  out.push(`machine: ${machineBefore.cpus} × ${machineBefore.cpu_model}, ${machineBefore.node}; load average before ${machineBefore.loadavg.join(' ')}, after ${result.machine.loadavg_after.join(' ')}`);
  out.push(`results: ${path.relative(ROOT, outFile) || outFile}`);
  process.stdout.write(`${out.join('\n')}\n`);
  if (profiles) {
    for (const [k, p] of Object.entries(profiles)) {
      process.stdout.write(
        `\n=== profile ${k} (${p.ops_in_window} operations in the window): ${p.busy_us_per_op} µs sampled per operation, ` +
          `of which observability frames ${p.observability_us_per_op} µs ===\n`,
      );
      printSummary(p);
    }
  }
} finally {
  await upstream.stop();
  fs.rmSync(configDir, { recursive: true, force: true });
  snapshot.remove();
}
