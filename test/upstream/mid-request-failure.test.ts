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

  it('lets the driver retry a write that never reached the upstream: stored exactly once', async () => {
    const client = await connect(proxy.uri('playground'), { retryWrites: true, maxPoolSize: 1 });
    const col = client.db(db).collection('retry');
    await col.insertOne({ warm: true }); // the connection is established before the cut is armed
    const cut = relay.cutNext('insert');
    const result = await col.insertOne({ k: 'once' });
    await cut;
    expect(result.acknowledged).toBe(true);
    expect(await col.countDocuments({ k: 'once' })).toBe(1);
    await client.close();
    // Read directly: stored exactly once, in the app's physical collection, tagged.
    const stored = await readPhysical(direct, sandbox, 'retry', { sort: { _id: 1 }, withoutId: true });
    expect(stored).toEqual([{ warm: true }, { k: 'once' }]);
    await expectNothingUnderLogicalNames(direct, sandbox, db, ['retry']);
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
