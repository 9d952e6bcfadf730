// npm run bench -- [suite ...] [--smoke] [options passed to each suite]
// Runs the benchmark suites one after the other (default: all of them). Suites:
//   e2e            direct / plain TCP relay / proxy on FerretDB and on the fast responder (bench/e2e.mjs)
//   observability  the cost of logging + metrics on the request path (bench/observability.mjs)
//   policy         the policy layer's rewrite functions, no I/O (bench/policy.mjs)
//   scale          idle connections, the connect + authenticate rate, --workers 1 vs 2 (bench/scale.mjs)
// Options after the suite names go to every suite run (e.g. `npm run bench -- e2e --reps 1`).
// --smoke runs every suite in its few-seconds mode (what the test suite checks, so the benchmarks cannot
// rot); it never judges the numbers.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const SUITES = {
  e2e: (smoke, rest) => ({ script: 'e2e.mjs', args: [...(smoke ? ['--smoke'] : []), ...rest], env: {} }),
  observability: (smoke, rest) => ({ script: 'observability.mjs', args: [...(smoke ? ['--smoke'] : []), ...rest], env: {} }),
  policy: (smoke) => ({ script: 'policy.mjs', args: [], env: smoke ? { BENCH_SECONDS: '0.2' } : {} }),
  scale: (smoke, rest) => ({ script: 'scale.mjs', args: [...(smoke ? ['--smoke'] : []), ...rest], env: {} }),
};

const argv = process.argv.slice(2);
const smoke = argv.includes('--smoke');
const names = argv.filter((a) => Object.hasOwn(SUITES, a));
const rest = argv.filter((a) => a !== '--smoke' && !Object.hasOwn(SUITES, a));
if (argv.includes('--help')) {
  process.stdout.write(`usage: npm run bench -- [${Object.keys(SUITES).join('|')} ...] [--smoke] [suite options]\n`);
  process.exit(0);
}
let failed = 0;
for (const name of names.length > 0 ? names : Object.keys(SUITES)) {
  const { script, args, env } = SUITES[name](smoke, rest);
  process.stderr.write(`\n### bench: ${name}${smoke ? ' (smoke)' : ''}\n`);
  const r = spawnSync(process.execPath, [path.join(here, script), ...args], { stdio: 'inherit', env: { ...process.env, ...env } });
  if (r.status !== 0) {
    failed++;
    process.stderr.write(`### bench: ${name} failed (exit ${r.status ?? r.signal})\n`);
  }
}
process.exit(failed > 0 ? 1 : 0);
