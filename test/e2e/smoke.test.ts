import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { startTestProxy, uniqueDb, connect, type TestProxy } from '../helpers/proxy.js';
import { RawClient } from '../../src/testing/wire-client.js';

let proxy: TestProxy;
beforeAll(async () => {
  proxy = await startTestProxy();
});
afterAll(async () => {
  await proxy.stop();
});

describe('proxy smoke', () => {
  it('answers hello as a mongos and forwards an insert/find round trip', async () => {
    const raw = await RawClient.connect(proxy.port);
    const hello = await raw.command({ hello: 1, $db: 'admin' });
    // A mongos before a replica set or a cluster; a standalone before a standalone upstream.
    expect(hello.msg).toBe(inject('upstreamIsStandalone') ? undefined : 'isdbgrid');
    raw.destroy();
    const client = await connect(proxy.uri('playground'));
    const col = client.db(uniqueDb('smoke')).collection('t');
    await col.insertOne({ a: 1 });
    expect(await col.findOne({}, { projection: { _id: 0 } })).toEqual({ a: 1 });
    await col.drop();
    await client.close();
  });
});
