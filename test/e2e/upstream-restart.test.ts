import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import type { MongoClient } from 'mongodb';
import { startFerretDB, type RunningFerretDB } from '../../src/testing/ferretdb.js';
import { connect, runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { RawClient } from '../../src/testing/wire-client.js';

/**
 * The upstream goes away and comes back while clients work: during the outage requests fail within
 * upstream.server_selection_timeout_ms with an error drivers retry; once the server is back the proxy
 * serves again within 5 s (its monitoring is woken up, its pools reconnect), without being restarted.
 */

const SELECTION_TIMEOUT_MS = 2000;

let ferret: RunningFerretDB;
let proxy: TestProxy;
let client: MongoClient;

beforeAll(async () => {
  ferret = await startFerretDB(inject('ferretdbBinary'));
  proxy = await startTestProxy({
    upstreamUri: ferret.uri,
    logLevel: 'info',
    runtimeYaml: runtimeYamlWithDatabase(uniqueDb('restart'), { upstream: `  server_selection_timeout_ms: ${SELECTION_TIMEOUT_MS}\n` }),
    runtime: { indexReconciler: false },
  });
  client = await connect(proxy.uri('playground'), { serverSelectionTimeoutMS: 5000 });
});

afterAll(async () => {
  await client?.close();
  await proxy?.stop();
  await ferret?.stop();
});

async function rawPlayground(): Promise<RawClient> {
  const raw = await RawClient.connect(proxy.port);
  await raw.command({ hello: 1, client: { application: { name: 'playground' } }, $db: 'admin' });
  return raw;
}

describe('an upstream restart', () => {
  it('fails requests during the outage within a bounded time, retryably, and serves within 5 s of the return', async () => {
    const items = client.db('app').collection<{ _id: number; phase: string }>('items');
    await items.insertOne({ _id: 1, phase: 'before' });

    await ferret.stop(true);
    // Once the proxy's monitoring has seen the server go (its next heartbeat), requests wait for a
    // writable server, at most the selection timeout.
    await vi.waitFor(
      () => expect(proxy.logs.some((l) => l.msg === 'upstream topology changed' && String(l.topology).includes('no writable server'))).toBe(true),
      { timeout: 30_000, interval: 100 },
    );
    const raw = await rawPlayground();
    try {
      const started = Date.now();
      const reply = await raw.command({ insert: 'items', documents: [{ _id: 2, phase: 'outage' }], $db: 'app' }, {});
      const waited = Date.now() - started;
      expect(reply).toMatchObject({ ok: 0, code: 6, codeName: 'HostUnreachable', errorLabels: ['RetryableWriteError'] });
      expect(waited).toBeLessThan(SELECTION_TIMEOUT_MS + 3000);
    } finally {
      raw.destroy();
    }

    await ferret.restart();
    const back = Date.now();
    await vi.waitFor(async () => expect(await items.findOne({ _id: 1 }, { maxTimeMS: 1000 })).toEqual({ _id: 1, phase: 'before' }), {
      timeout: 5000,
      interval: 50,
    });
    expect(Date.now() - back).toBeLessThan(5000);
    await items.insertOne({ _id: 3, phase: 'after' });
    expect(await items.find().sort({ _id: 1 }).toArray()).toEqual([
      { _id: 1, phase: 'before' },
      { _id: 3, phase: 'after' },
    ]);
  });
});
