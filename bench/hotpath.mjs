// The proxy's hot path against the plain TCP relay: the fast responder as upstream,
// the relay in front of it, and one or two proxy builds (the current dist/ and optionally another, e.g.
// a copy of an older build) in front of it too. Each target is loaded alone in turn (the order rotating
// each repetition), so ops/s are comparable; the headline is CPU µs per operation of each process.
//
//   node bench/hotpath.mjs [--before DIR] [--reps 3] [--duration 4] [--warmup 2] [--concurrency 16]
//                          [--workloads point_read,insert] [--args '--metrics false --log-level silent']
//                          [--profile]   (one extra run per proxy under --cpu-prof, summarised)
// DIR: a directory holding dist/ (+ package.json, node_modules linked), e.g. made by
//   mkdir /tmp/old && cp -r dist /tmp/old/dist && cp package.json /tmp/old && ln -s $PWD/node_modules /tmp/old/
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { prepare, runLoad, runLoads } from './lib/load.mjs';
import { printSummary, summarize } from './lib/profile-summary.mjs';
import { BENCH_APP, makeConfigDir, snapshotBuild, startFastUpstreamProcess, startProxy, startRelayProcess } from './lib/processes.mjs';

const { values: o } = parseArgs({
  options: {
    before: { type: 'string' },
    reps: { type: 'string', default: '3' },
    duration: { type: 'string', default: '4' },
    warmup: { type: 'string', default: '2' },
    concurrency: { type: 'string', default: '16' },
    workloads: { type: 'string', default: 'point_read,insert' },
    args: { type: 'string', default: '' },
    profile: { type: 'boolean', default: false },
    top: { type: 'string', default: '40' },
    mode: { type: 'string', default: 'alternate' },
  },
});
const median = (xs) => {
  const s = xs.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const r1 = (x) => Math.round(x * 10) / 10;
const extra = o.args.split(' ').filter(Boolean);
const snapshot = snapshotBuild();
const upstream = await startFastUpstreamProcess();
const relay = await startRelayProcess(`127.0.0.1:${upstream.port}`);
const configDir = makeConfigDir();
const targets = { relay: { uri: () => `mongodb://127.0.0.1:${relay.port}/?directConnection=true`, pid: relay.pid } };
const proxies = [];
const after = await startProxy({ upstreamUri: upstream.uri, configDir, args: extra, cli: snapshot.cli });
proxies.push(after);
targets.after = { uri: after.uri, pid: after.pid };
if (o.before) {
  const before = await startProxy({ upstreamUri: upstream.uri, configDir, args: extra, cli: path.join(o.before, 'dist/cli/main.js') });
  proxies.push(before);
  targets.before = { uri: before.uri, pid: before.pid };
}
const keys = Object.keys(targets);
const workloads = o.workloads.split(',');
const rows = {};
try {
  for (const w of workloads) for (const k of keys) await prepare(targets[k].uri(BENCH_APP.slug), w);
  for (let rep = 0; rep < Number(o.reps); rep++) {
    for (const w of workloads) {
      const common = {
        workload: w,
        concurrency: Number(o.concurrency),
        warmupMS: Number(o.warmup) * 1000,
        durationMS: Number(o.duration) * 1000,
      };
      const report = (k, r) => {
        (rows[`${w} ${k}`] ??= []).push(r);
        console.error(
          `rep ${rep} ${w.padEnd(10)} ${k.padEnd(6)} ${String(Math.round(r.ops_per_second)).padStart(6)} ops/s  ` +
            `${k} ${r.processes.target?.cpu_us_per_op} µs CPU/op  upstream ${r.processes.upstream?.cpu_us_per_op}  errors ${r.errors}`,
        );
      };
      if (o.mode === 'side-by-side') {
        // Every target loaded at once, each by its own load processes: the machine's noise hits all alike.
        const rs = await runLoads(
          keys.map((k) => ({ uri: targets[k].uri(BENCH_APP.slug), probes: { target: targets[k].pid, upstream: upstream.pid } })),
          common,
        );
        keys.forEach((k, i) => report(k, rs[i]));
        continue;
      }
      const order = keys.map((_, i) => keys[(i + rep) % keys.length]);
      for (const k of order) {
        report(k, await runLoad({ ...common, uri: targets[k].uri(BENCH_APP.slug), probes: { target: targets[k].pid, upstream: upstream.pid } }));
      }
    }
  }
  const load = os.loadavg().map((x) => x.toFixed(1)).join(' ');
  console.log(`\nmedians of ${o.reps} run(s), ${o.duration}s each, concurrency ${o.concurrency}, proxy args '${o.args}', load avg ${load}`);
  console.log('workload    target   ops/s   CPU µs/op   ops/s ÷ relay');
  for (const w of workloads) {
    const relayOps = median(rows[`${w} relay`].map((r) => r.ops_per_second));
    for (const k of keys) {
      const rs = rows[`${w} ${k}`];
      const ops = median(rs.map((r) => r.ops_per_second));
      const ratios = rs.map((r, i) => r.ops_per_second / rows[`${w} relay`][i].ops_per_second);
      console.log(
        `${w.padEnd(11)} ${k.padEnd(7)} ${String(Math.round(ops)).padStart(6)}  ${String(r1(median(rs.map((r) => r.processes.target?.cpu_us_per_op)))).padStart(9)}   ${median(ratios).toFixed(2)} (medians: ${(ops / relayOps).toFixed(2)})`,
      );
    }
  }
  if (o.profile) {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-hotpath-prof-'));
    for (const w of workloads) {
      const sub = path.join(dir, w);
      const p = await startProxy({
        upstreamUri: upstream.uri,
        configDir,
        args: extra,
        cli: snapshot.cli,
        nodeArgs: ['--cpu-prof', `--cpu-prof-dir=${sub}`],
      });
      await prepare(p.uri(BENCH_APP.slug), w);
      const r = await runLoad({ uri: p.uri(BENCH_APP.slug), workload: w, concurrency: Number(o.concurrency), warmupMS: 1000, durationMS: Number(o.duration) * 1000, probes: { target: p.pid } });
      await p.stop();
      const file = fs.readdirSync(sub).find((f) => f.endsWith('.cpuprofile'));
      console.log(`\nprofile ${w}: ${Math.round(r.ops_per_second)} ops/s, ${r.processes.target?.cpu_us_per_op} µs CPU/op, ${path.join(sub, file)}`);
      printSummary(summarize(path.join(sub, file), { top: Number(o.top), window: r.window_monotonic_us }));
    }
  }
} finally {
  for (const p of proxies) await p.stop();
  await relay.stop();
  await upstream.stop();
  snapshot.remove();
  fs.rmSync(configDir, { recursive: true, force: true });
}
