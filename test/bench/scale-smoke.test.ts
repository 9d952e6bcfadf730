import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { ROOT, assertBuilt } from '../../src/testing/processes.js';

/**
 * The scale benchmark (bench/scale.mjs) in its smoke mode: a few hundred idle
 * authenticated connections, a second of connection churn, a second of point reads against
 * `--workers 1` and `--workers 2`. Only checks that it runs end to end and writes sane, non-zero
 * figures; nothing here judges how fast or how small anything is.
 */
describe('bench scale smoke', () => {
  it('npm run bench -- scale --smoke completes and writes a sane result', async () => {
    assertBuilt();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-bench-scale-'));
    const out = path.join(dir, 'scale.json');
    try {
      const { stdout } = await promisify(execFile)(process.execPath, ['bench/run.mjs', 'scale', '--smoke', '--out', out], {
        cwd: ROOT,
        timeout: 150_000,
        maxBuffer: 16 * 1024 * 1024,
      });
      expect(stdout).toContain('Scale (smoke');
      const r = JSON.parse(fs.readFileSync(out, 'utf8')) as {
        benchmark: string;
        settings: { connections: number; smoke: boolean };
        idle: Record<string, number>;
        rate: Record<string, number>;
        workers: { proxy_workers: number; ops_per_second: number; errors: number; connections_per_worker?: number[] }[];
        workers_scaling: { ops_per_second_1: number; ops_per_second_2: number; ratio: number };
      };
      expect(r.benchmark).toBe('scale');
      expect(r.settings.smoke).toBe(true);
      const n = r.settings.connections;
      expect(n).toBeGreaterThan(0);
      expect(r.idle).toMatchObject({ connections_open: n, open_failed: 0, proxy_reported_connections: n, pinged_ok: n, ping_failed: 0 });
      for (const key of ['rss_before_mb', 'rss_held_mb', 'rss_after_ping_mb', 'open_per_second']) expect(r.idle[key], key).toBeGreaterThan(0);
      expect(Number.isFinite(r.idle.bytes_per_connection)).toBe(true);
      expect(r.rate.completed).toBeGreaterThan(0);
      expect(r.rate.failed).toBe(0);
      for (const key of ['connections_per_second', 'proxy_cpu_us_per_connection', 'window_ms']) expect(r.rate[key], key).toBeGreaterThan(0);
      expect(r.workers.map((w) => w.proxy_workers)).toEqual([1, 2]);
      for (const w of r.workers) {
        expect(w.ops_per_second, `--workers ${w.proxy_workers}`).toBeGreaterThan(0);
        expect(w.errors, `--workers ${w.proxy_workers}`).toBe(0);
      }
      expect(r.workers[1]!.connections_per_worker).toHaveLength(2);
      expect(r.workers_scaling.ratio).toBeGreaterThan(0);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
