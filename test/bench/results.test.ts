import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from '../../src/testing/processes.js';

/**
 * bench/results/README.md: the runs bench/README.md cites are kept in git under bench/results/kept/,
 * and nothing else a benchmark writes into bench/results/ is.
 */
const KEPT = path.join(ROOT, 'bench/results/kept');
const benchReadme = fs.readFileSync(path.join(ROOT, 'bench/README.md'), 'utf8');
/** A result file's name as the benchmarks write it: <ISO timestamp with - for : and .>-<suite>[-smoke].<json|svg>. */
const RESULT_NAME = /\d{4}-\d\d-\d\dT\d\d-\d\d-\d\d-\d{3}Z-[a-z0-9-]+\.(?:json|svg)/g;

/** Whether git ignores `file` (relative to the repository) by the .gitignore rules alone, tracked or not. */
function ignored(file: string): boolean {
  const r = spawnSync('git', ['check-ignore', '--no-index', '-q', file], { cwd: ROOT, encoding: 'utf8' });
  if (r.status !== 0 && r.status !== 1) throw new Error(`git check-ignore failed (${r.status}): ${r.stderr}`);
  return r.status === 0;
}

describe('bench/results: what is kept in git', () => {
  it('every result bench/README.md names is in kept/ and is cited there as results/kept/<file>', () => {
    const named = [...benchReadme.matchAll(RESULT_NAME)];
    expect(named.length).toBeGreaterThan(0);
    for (const m of named) {
      const before = benchReadme.slice(Math.max(0, m.index - 'results/kept/'.length), m.index);
      expect(before, `${m[0]} is named without results/kept/`).toBe('results/kept/');
      expect(fs.existsSync(path.join(KEPT, m[0])), `${m[0]} is cited but not in bench/results/kept/`).toBe(true);
    }
  });

  it('every file in kept/ is cited by bench/README.md', () => {
    const files = fs.readdirSync(KEPT);
    expect(files.length).toBeGreaterThan(0);
    for (const file of files) expect(benchReadme, `bench/results/kept/${file} is not cited`).toContain(`results/kept/${file}`);
  });

  it('an e2e result in kept/ points at its chart in kept/', () => {
    for (const file of fs.readdirSync(KEPT).filter((f) => f.endsWith('-e2e.json'))) {
      const { chart } = JSON.parse(fs.readFileSync(path.join(KEPT, file), 'utf8')) as { chart: string };
      expect(chart, file).toBe(`bench/results/kept/${file.replace(/\.json$/, '.svg')}`);
      expect(fs.existsSync(path.join(ROOT, chart)), chart).toBe(true);
    }
  });

  it('.gitignore keeps kept/ and the README, and ignores what the benchmarks write beside them', () => {
    for (const file of fs.readdirSync(KEPT)) expect(ignored(`bench/results/kept/${file}`), file).toBe(false);
    expect(ignored('bench/results/kept/2030-01-01T00-00-00-000Z-e2e.json')).toBe(false);
    expect(ignored('bench/results/README.md')).toBe(false);
    for (const file of [
      'bench/results/2030-01-01T00-00-00-000Z-e2e.json',
      'bench/results/2030-01-01T00-00-00-000Z-e2e.svg',
      'bench/results/2030-01-01T00-00-00-000Z-scale-smoke.json',
      'bench/results/2030-01-01T00-00-00-000Z-observability-profiles/a.cpuprofile',
    ]) {
      expect(ignored(file), file).toBe(true);
    }
  });
});
