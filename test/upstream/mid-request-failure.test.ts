import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import type { MongoClient } from 'mongodb';
import { connect, runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { expectNothingUnderLogicalNames, readPhysical, sandboxOf, type Sandbox } from '../helpers/physical.js';
import { WireRelay } from '../../src/testing/relay.js';
import { RawClient, opMsg } from '../../src/testing/wire-client.js';

describe('upstream connection failing mid-request', () => {
  let relay: WireRelay;
  let proxy: TestProxy;
  let direct: MongoClient;
  let sandbox: Sandbox;
  const db = uniqueDb('midreq');
  /** The proxy's own physical database, so that no other suite's playground data mixes in. */
  const physical = uniqueDb('midreq_physical');

  beforeAll(async () => {
    const uri = inject('upstreamUri');
    relay = await WireRelay.start(WireRelay.firstHost(uri));
    proxy = await startTestProxy({ upstreamUri: WireRelay.uriThrough(uri, relay.port), runtimeYaml: runtimeYamlWithDatabase(physical) });
    sandbox = sandboxOf(proxy, 'playground');
    direct = await connect(uri);
  });
  afterAll(async () => {
    await proxy?.stop();
    await relay?.close();
    await direct?.db(physical).dropDatabase().catch(() => undefined);
    await direct?.close();
  });

  it('closes the client connection (no reply, no hang) and keeps serving others', async () => {
    const raw = await RawClient.connect(proxy.port);
    await raw.command({ hello: 1, client: { application: { name: 'playground' } }, $db: 'admin' });
    const cut = relay.cutNext('find');
    raw.send(opMsg({ find: 'c', filter: {}, $db: db }));
    await cut;
    await raw.closed; // the proxy closed the client's connection instead of answering or hanging
    await expect(raw.nextMessage(100)).rejects.toThrow(/closed/);

    const client = await connect(proxy.uri('playground'));
    expect(await client.db(db).collection('c').countDocuments()).toBe(0);
    await client.close();
  });

  it('a write that never reached the upstream: retried and stored exactly once where retryable writes exist; on a standalone, failed as a network error and stored nowhere', async () => {
    const standalone = inject('upstreamIsStandalone');
    const client = await connect(proxy.uri('playground'), { retryWrites: true, maxPoolSize: 1 });
    const col = client.db(db).collection('retry');
    await col.insertOne({ warm: true }); // the connection is established before the cut is armed
    const cut = relay.cutNext('insert');
    const attempt = col.insertOne({ k: 'once' }).then(
      (r) => ({ ok: r.acknowledged, error: undefined }),
      (err: Error) => ({ ok: false, error: err }),
    );
    const outcome = await attempt;
    await cut;
    if (standalone) {
      // The proxy presents a standalone upstream as one: the driver does not retry writes there (as
      // directly against it), so the error is the network's, never a false duplicate key.
      expect(outcome.ok).toBe(false);
      expect(outcome.error?.name).toMatch(/MongoNetworkError|MongoServerSelectionError|PoolClearedError/);
    } else {
      expect(outcome.ok).toBe(true);
    }
    expect(await col.countDocuments({ k: 'once' })).toBe(standalone ? 0 : 1);
    await client.close();
    // Read directly: stored at most once, in the app's physical collection, tagged.
    const stored = await readPhysical(direct, sandbox, 'retry', { sort: { _id: 1 }, withoutId: true });
    expect(stored).toEqual(standalone ? [{ warm: true }] : [{ warm: true }, { k: 'once' }]);
    await expectNothingUnderLogicalNames(direct, sandbox, db, ['retry']);
  });

  it('a write whose reply is lost after the upstream applied it is never applied twice (a retried $inc counts once)', async () => {
    const standalone = inject('upstreamIsStandalone');
    const client = await connect(proxy.uri('playground'), { retryWrites: true, maxPoolSize: 1 });
    const col = client.db(db).collection<{ _id: string; n: number }>('lost_reply');
    await col.insertOne({ _id: 'counter', n: 0 });
    relay.watch('LOST-REPLY-MARK');
    relay.hold();
    const attempt = col.updateOne({ _id: 'counter' }, { $inc: { n: 1 }, $set: { mark: 'LOST-REPLY-MARK' } }).then(
      () => undefined,
      (err: Error) => err,
    );
    // The upstream has applied it and answered: the answer is dropped with every relayed connection.
    await relay.heldMarkedReply();
    relay.destroyAll();
    relay.release();
    const error = await attempt;
    if (standalone) expect(error?.name).toMatch(/MongoNetworkError|PoolClearedError/);
    else expect(error).toBeUndefined();
    // Whatever the client saw, the increment happened exactly once.
    const stored = await readPhysical(direct, sandbox, 'lost_reply');
    expect(stored).toEqual([{ _id: 'counter', n: 1, mark: 'LOST-REPLY-MARK' }]);
    await client.close();
  });

  it('retries a read the same way', async () => {
    const client = await connect(proxy.uri('playground'), { retryReads: true });
    const col = client.db(db).collection('reads');
    await col.insertMany([{ n: 1 }, { n: 2 }, { n: 3 }]);
    const cut = relay.cutNext('find');
    const docs = await col.find({}, { projection: { _id: 0 } }).sort({ n: 1 }).toArray();
    await cut;
    expect(docs).toEqual([{ n: 1 }, { n: 2 }, { n: 3 }]);
    await client.close();
  });
});
