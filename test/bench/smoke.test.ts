import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ROOT, assertBuilt } from '../../src/testing/processes.js';

/**
 * The benchmarks are not tests: this only checks that the observability benchmark still runs end to
 * end (fast upstream, the built proxy twice, driver load in worker processes, the results file) and
 * writes sane numbers. Nothing here judges how fast anything is.
 */
describe('bench smoke', () => {
  it('bench/observability.mjs --smoke completes and writes a sane result', async () => {
    assertBuilt();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-bench-smoke-'));
    const out = path.join(dir, 'observability.json');
    try {
      const { stdout } = await promisify(execFile)(process.execPath, ['bench/observability.mjs', '--smoke', '--out', out], {
        cwd: ROOT,
        timeout: 150_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      expect(stdout).toContain('verdict:');
      const result = JSON.parse(fs.readFileSync(out, 'utf8')) as {
        benchmark: string;
        metrics_flag: boolean;
        settings: { workloads: string[] };
        summary: Record<string, Record<'a' | 'b', Record<string, number>> & { cost: Record<string, number> }>;
        runs: { config: string; workload: string; ops: number; errors: number }[];
      };
      expect(result.benchmark).toBe('observability');
      expect(typeof result.metrics_flag).toBe('boolean');
      expect(result.settings.workloads).toEqual(['point_read', 'insert']);
      expect(result.runs).toHaveLength(4);
      for (const run of result.runs) {
        expect(run.ops, `${run.workload}/${run.config}`).toBeGreaterThan(0);
        expect(run.errors, `${run.workload}/${run.config}`).toBe(0);
      }
      for (const workload of ['point_read', 'insert']) {
        for (const config of ['a', 'b'] as const) {
          const s = result.summary[workload]![config]!;
          for (const key of ['ops_per_second', 'p50_us', 'p99_us', 'p999_us', 'proxy_cpu_us_per_op', 'proxy_rss_mb']) {
            expect(s[key], `${workload}/${config}/${key}`).toBeGreaterThan(0);
          }
        }
        expect(Number.isFinite(result.summary[workload]!.cost.proxy_capacity_percent)).toBe(true);
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);

  /**
   * The end-to-end benchmark: FerretDB and the fast responder, each behind nothing (direct),
   * a plain relay and the proxy (PLAIN + JWT), every workload, in its smoke mode. Checks that every
   * combination it ran did work without errors and that the chart was written; no timing is judged.
   */
  it('bench/e2e.mjs --smoke runs every target × workload × concurrency and writes the JSON and the SVG', async () => {
    assertBuilt();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-bench-e2e-smoke-'));
    const out = path.join(dir, 'e2e.json');
    try {
      const { stdout } = await promisify(execFile)(process.execPath, ['bench/e2e.mjs', '--smoke', '--out', out], {
        cwd: ROOT,
        timeout: 240_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      expect(stdout).toContain('verdict:');
      type Cell = Record<string, { ops: number; errors: number; ops_per_second: number; first_error?: string }>;
      const result = JSON.parse(fs.readFileSync(out, 'utf8')) as {
        benchmark: string;
        settings: { upstreams: string[]; targets: string[]; workloads: string[]; concurrency: Record<string, number[]> };
        skipped: { upstream: string; workload: string; concurrency: number }[];
        summary: Record<string, Record<string, Record<string, Cell & { ratios: Record<string, number | null> }>>>;
        verdicts: { name: string; pass: boolean | null }[];
        runs: unknown[];
        chart: string;
      };
      expect(result.benchmark).toBe('e2e');
      expect(result.settings.upstreams).toEqual(['ferretdb', 'fast']);
      expect(result.settings.targets).toEqual(['direct', 'relay', 'proxy']);
      expect(result.settings.workloads).toEqual(['point_read', 'insert', 'insert_many', 'scan', 'aggregate', 'ycsb_b']);
      let cells = 0;
      for (const upstream of result.settings.upstreams) {
        for (const workload of result.settings.workloads) {
          for (const concurrency of result.settings.concurrency[upstream]!) {
            if (result.skipped.some((s) => s.upstream === upstream && s.workload === workload && s.concurrency === concurrency)) continue;
            const cell = result.summary[upstream]?.[workload]?.[concurrency];
            expect(cell, `${upstream}/${workload}/c${concurrency}`).toBeDefined();
            for (const target of result.settings.targets) {
              const what = `${upstream}/${workload}/c${concurrency}/${target}`;
              expect(cell![target], what).toBeDefined();
              expect(cell![target]!.errors, `${what}: ${cell![target]!.first_error ?? ''}`).toBe(0);
              expect(cell![target]!.ops, what).toBeGreaterThan(0);
              cells++;
            }
            expect(Object.keys(cell!.ratios)).toContain('proxy_vs_direct_ops');
          }
        }
      }
      expect(cells).toBeGreaterThanOrEqual(2 * 6 * 3);
      expect(result.verdicts.map((v) => v.name)).toEqual(['ferretdb_proxy_vs_direct', 'fast_proxy_vs_relay', 'fast_proxy_cpu_point_read']);
      const svgFile = out.replace(/\.json$/, '.svg');
      const svg = fs.readFileSync(svgFile, 'utf8');
      expect(svg).toContain('<svg');
      expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
      for (const workload of result.settings.workloads) expect(svg).toContain(workload);
      // XML-ish: the elements nest (every one opened is closed, in order), no stray ampersand.
      const stack: string[] = [];
      for (const [, close, name, , selfClose] of svg.matchAll(/<(\/?)([a-zA-Z]+)([^>]*?)(\/?)>/g)) {
        if (close) expect(stack.pop(), `</${name}>`).toBe(name);
        else if (!selfClose) stack.push(name!);
      }
      expect(stack).toEqual([]);
      expect(svg).not.toMatch(/&(?!amp;|lt;|gt;|quot;|#39;)/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 300_000);
  it('bench/run.mjs policy --smoke measures every policy case (decode + rewrite + encode, no I/O)', async () => {
    assertBuilt();
    const { stdout } = await promisify(execFile)(process.execPath, ['bench/run.mjs', 'policy', '--smoke'], {
      cwd: ROOT,
      timeout: 60_000,
    });
    const rows = stdout.split('\n').filter((l) => / ops\/s .* µs\/op$/.test(l));
    expect(rows.map((l) => l.split(/\s{2,}/)[0])).toEqual([
      'find (decode + rewrite + encode)',
      'insert of 1000 documents, kind-1 (stamp at the byte level)',
      'aggregate with $lookup',
      'find reply of 101 documents (ns + strip tag, byte level)',
    ]);
    for (const row of rows) expect(Number(/([\d,]+) ops\/s/.exec(row)![1]!.replace(/,/g, '')), row).toBeGreaterThan(0);
  }, 90_000);
});
