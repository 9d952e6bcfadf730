// Reads a V8 .cpuprofile (node --cpu-prof) and says where the time went: top functions by self time,
// self time by module (a package, a file of dist/, node internals, GC), and the inclusive time of the
// frames matching a pattern (e.g. everything under the observability code).
//
// node bench/lib/profile-summary.mjs <file.cpuprofile> [--top 25] [--match /observability/,/pino/,account]
// (a pattern with '/' or '.' matches script URLs, a bare word a function name).
import fs from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The module a frame belongs to: "pkg:<name>", "mdb-runtime:<dir/file>", "node", or a V8 pseudo-frame. */
export function moduleOf(url, functionName) {
  if (!url) {
    if (functionName.startsWith('(')) return functionName; // (garbage collector), (program), (idle), (root)
    return 'native';
  }
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return `pkg:${rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0]}`;
  }
  const dist = url.indexOf('/dist/');
  if (dist >= 0) return `mdb-runtime:${url.slice(dist + '/dist/'.length)}`;
  if (url.startsWith('node:')) return 'node';
  return url.replace(/^file:\/\//, '');
}

/**
 * Parses a profile into per-node self times (ms) and parent links. `window`: [startUs, endUs] on the
 * monotonic clock (process.hrtime, what V8 stamps samples with): only samples inside it count.
 */
export function loadProfile(file, window) {
  const profile = JSON.parse(fs.readFileSync(file, 'utf8'));
  const nodes = new Map(profile.nodes.map((n) => [n.id, { ...n, self: 0, parent: undefined }]));
  for (const n of nodes.values()) for (const c of n.children ?? []) nodes.get(c).parent = n.id;
  const { samples, timeDeltas } = profile;
  let t = profile.startTime;
  for (let i = 0; i < samples.length; i++) {
    t += timeDeltas[i];
    if (window && (t < window[0] || t > window[1])) continue;
    const dt = (timeDeltas[i + 1] ?? 0) / 1000; // µs → ms: each sample lasts until the next one
    nodes.get(samples[i]).self += dt;
  }
  const total = [...nodes.values()].reduce((s, n) => s + n.self, 0);
  return { nodes, total };
}

function label(n) {
  const cf = n.callFrame;
  const where = cf.url ? `${moduleOf(cf.url, cf.functionName)}:${cf.lineNumber + 1}` : '';
  return `${cf.functionName || '(anonymous)'} ${where}`.trim();
}

/** The summary as data: total (ms), busy (ms, without idle), top functions, modules, matches. */
export function summarize(file, { top = 25, match = [], groups = {}, window } = {}) {
  const { nodes, total } = loadProfile(file, window);
  const idle = [...nodes.values()].filter((n) => n.callFrame.functionName === '(idle)').reduce((s, n) => s + n.self, 0);
  const busy = total - idle;
  const byFunction = new Map();
  const byModule = new Map();
  for (const n of nodes.values()) {
    if (n.self === 0 || n.callFrame.functionName === '(idle)') continue;
    const l = label(n);
    byFunction.set(l, (byFunction.get(l) ?? 0) + n.self);
    const m = moduleOf(n.callFrame.url, n.callFrame.functionName);
    byModule.set(m, (byModule.get(m) ?? 0) + n.self);
  }
  const pct = (ms) => Math.round((ms / busy) * 1000) / 10;
  const sorted = (map) => [...map.entries()].sort((a, b) => b[1] - a[1]);
  // Inclusive time under frames whose url or function name matches a pattern: each pattern alone, and
  // each group of patterns as a union (a sample counts once if any frame above it matches any pattern).
  // A pattern with a '/' or a '.' matches script URLs; a bare word matches a function name exactly.
  const matcher = (pattern) =>
    /[/.]/.test(pattern) ? (n) => (n.callFrame.url ?? '').includes(pattern) : (n) => n.callFrame.functionName === pattern;
  const inclusiveOf = (patterns) => {
    const hits = patterns.map(matcher);
    let ms = 0;
    for (const n of nodes.values()) {
      if (n.self === 0) continue;
      for (let p = n; p; p = p.parent === undefined ? undefined : nodes.get(p.parent)) {
        if (hits.some((h) => h(p))) {
          ms += n.self;
          break;
        }
      }
    }
    return { ms: Math.round(ms * 10) / 10, percent_of_busy: pct(ms) };
  };
  const matches = {};
  for (const pattern of match) matches[pattern] = inclusiveOf([pattern]);
  for (const [name, patterns] of Object.entries(groups)) matches[name] = { ...inclusiveOf(patterns), patterns };
  return {
    file,
    ...(window ? { window_monotonic_us: window } : {}),
    total_ms: Math.round(total),
    busy_ms: Math.round(busy),
    top_functions: sorted(byFunction)
      .slice(0, top)
      .map(([name, ms]) => ({ name, self_ms: Math.round(ms), percent: pct(ms) })),
    modules: sorted(byModule)
      .slice(0, top)
      .map(([name, ms]) => ({ name, self_ms: Math.round(ms), percent: pct(ms) })),
    inclusive: matches,
  };
}

export function printSummary(s, out = process.stdout) {
  out.write(`${s.file}\n  busy ${s.busy_ms} ms of ${s.total_ms} ms sampled\n  top functions (self time, % of busy):\n`);
  for (const f of s.top_functions) out.write(`    ${String(f.percent).padStart(5)}%  ${f.name}\n`);
  out.write('  by module (self time):\n');
  for (const m of s.modules) out.write(`    ${String(m.percent).padStart(5)}%  ${m.name}\n`);
  if (Object.keys(s.inclusive).length > 0) {
    out.write('  inclusive time under frames matching:\n');
    for (const [p, v] of Object.entries(s.inclusive)) out.write(`    ${String(v.percent_of_busy).padStart(5)}%  ${p}\n`);
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const opt = (name, fallback) => {
    const i = args.indexOf(name);
    if (i < 0) return fallback;
    const v = args[i + 1];
    args.splice(i, 2);
    return v;
  };
  const top = Number(opt('--top', '25'));
  const match = opt('--match', '')
    .split(',')
    .filter(Boolean);
  if (args.length === 0) {
    process.stderr.write('usage: node bench/lib/profile-summary.mjs <file.cpuprofile>... [--top N] [--match a,b]\n');
    process.exit(2);
  }
  for (const file of args) printSummary(summarize(file, { top, match }));
}
