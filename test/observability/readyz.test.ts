import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { startFerretDB, type RunningFerretDB } from '../../src/testing/ferretdb.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { httpGet, scrape, total } from './prom-text.js';

/**
 * /readyz pings the upstream (bounded by a timeout, the result reused for a
 * second). With the proxy's own FerretDB stopped it answers 503 with a JSON reason, quickly; once the
 * server is back it answers 200 again.
 */

let ferret: RunningFerretDB;
let proxy: TestProxy;

beforeAll(async () => {
  ferret = await startFerretDB(inject('ferretdbBinary'));
  proxy = await startTestProxy({
    upstreamUri: ferret.uri,
    logLevel: 'info',
    runtime: { readiness: { timeoutMS: 1000, cacheMS: 250 }, indexReconciler: false },
  });
});

afterAll(async () => {
  await proxy?.stop();
  await ferret?.stop();
});

interface Readiness {
  status: number;
  elapsedMS: number;
  body: { status: string; reason?: string; upstream_ping?: { ok: boolean; error?: string; timeout_ms?: number; ms?: number } };
}

async function readyz(): Promise<Readiness> {
  const started = Date.now();
  const res = await httpGet(proxy.httpPort, '/readyz');
  return { status: res.status, elapsedMS: Date.now() - started, body: JSON.parse(res.body) as Readiness['body'] };
}

/** Polls /readyz (each answer is a real, bounded probe) until it answers `status`. */
async function until(status: number, timeout: number): Promise<Readiness> {
  let last: Readiness | undefined;
  await vi.waitFor(
    async () => {
      last = await readyz();
      expect(last.status).toBe(status);
    },
    { timeout, interval: 100 },
  );
  return last!;
}

describe('/readyz follows the upstream', () => {
  it('is 200 with a ping while the upstream answers', async () => {
    const r = await readyz();
    expect(r.status).toBe(200);
    expect(r.body.status).toBe('ready');
    expect(r.body.upstream_ping).toMatchObject({ ok: true });
    expect(total(await scrape(proxy.httpPort), 'mdb_upstream_up')).toBe(1);
  });

  it('turns 503 with a JSON reason within the timeout when the upstream stops, and 200 when it returns', async () => {
    await ferret.stop(true);
    const down = await until(503, 20_000);
    expect(down.body.status).toBe('not ready');
    expect(down.body.reason).toMatch(/the upstream did not answer a ping \(timeout 1000 ms\): \S/);
    expect(down.body.upstream_ping).toMatchObject({ ok: false, timeout_ms: 1000 });
    // Bounded: a probe never waits much past its timeout.
    const again = await readyz();
    expect(again.status).toBe(503);
    expect(again.elapsedMS).toBeLessThan(3000);
    expect(total(await scrape(proxy.httpPort), 'mdb_upstream_up')).toBe(0);
    expect(proxy.logs.find((l) => typeof l.msg === 'string' && l.msg.startsWith('upstream unreachable'))).toMatchObject({ level: 40 });

    await ferret.restart();
    const up = await until(200, 30_000);
    expect(up.body.upstream_ping).toMatchObject({ ok: true });
    expect(proxy.logs.find((l) => l.msg === 'upstream reachable again')).toMatchObject({ level: 30 });
  });

  it('reuses a probe result for cacheMS: concurrent probes share one ping', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, () => readyz()));
    expect(results.every((r) => r.status === 200)).toBe(true);
    const pings = new Set(results.map((r) => r.body.upstream_ping?.ms));
    expect(pings.size).toBeLessThan(10);
  });
});
