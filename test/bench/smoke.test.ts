import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ROOT, assertBuilt } from '../cli/cli-process.js';

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
});
