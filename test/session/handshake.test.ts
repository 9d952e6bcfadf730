import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { MongoClient } from 'mongodb';
import { connect, startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { WireRelay } from '../helpers/relay.js';
import { RawClient, opMsg } from '../helpers/wire-client.js';

describe('handshake answered by the proxy as a mongos', () => {
  let relay: WireRelay;
  let proxy: TestProxy;
  let upstreamWire: number;

  beforeAll(async () => {
    const uri = inject('upstreamUri');
    relay = await WireRelay.start(WireRelay.firstHost(uri));
    proxy = await startTestProxy({ upstreamUri: WireRelay.uriThrough(uri, relay.port) });
    const direct = new MongoClient(uri);
    upstreamWire = (await direct.db('admin').command({ hello: 1 })).maxWireVersion as number;
    await direct.close();
  });
  afterAll(async () => {
    await proxy.stop();
    await relay.close();
  });

  it.each([['hello'], ['isMaster'], ['ismaster']])('answers %s with the mongos fields and nothing the proxy does not do', async (name) => {
    const raw = await RawClient.connect(proxy.port);
    const reply = await raw.command({ [name]: 1, helloOk: true, compression: ['zlib', 'snappy'], $db: 'admin' });
    raw.destroy();
    expect(reply.ok).toBe(1);
    expect(reply.msg).toBe('isdbgrid');
    expect(reply[name === 'hello' ? 'isWritablePrimary' : 'ismaster']).toBe(true);
    expect(reply.helloOk).toBe(true);
    expect(reply.maxWireVersion).toBe(Math.min(upstreamWire, 21));
    expect(reply.logicalSessionTimeoutMinutes).toBe(30);
    expect(reply.maxMessageSizeBytes).toBe(48_000_000);
    expect(reply.maxBsonObjectSize).toBe(16 * 1024 * 1024);
    expect(reply.topologyVersion).toBeUndefined();
    expect(reply.compression).toBeUndefined();
    expect(reply.setName).toBeUndefined();
  });

  it('accepts true as the hello value, and gives each connection its own connectionId', async () => {
    const a = await RawClient.connect(proxy.port);
    const b = await RawClient.connect(proxy.port);
    const ra = await a.command({ hello: true, $db: 'admin' });
    const rb = await b.command({ isMaster: true, $db: 'test' });
    const ra2 = await a.command({ hello: 1, $db: 'admin' });
    a.destroy();
    b.destroy();
    expect(typeof ra.connectionId).toBe('number');
    expect(ra.connectionId).not.toBe(rb.connectionId);
    expect(ra2.connectionId).toBe(ra.connectionId);
  });

  it('never forwards the client handshake or its metadata upstream', async () => {
    const marker = 'client-metadata-marker-7f3a';
    const before = relay.messages.length;
    const client = await connect(proxy.uri('playground'), { driverInfo: { name: marker } });
    await client.db('admin').command({ ping: 1 });
    await client.db('handshake_test').collection('c').findOne({});
    await client.close();
    const raw = await RawClient.connect(proxy.port);
    raw.send(opMsg({ hello: 1, client: { application: { name: marker } }, $db: 'admin' }));
    await raw.nextReply();
    raw.destroy();
    const sent = Buffer.concat(relay.messages.slice(before).map((m) => m.raw));
    expect(sent.length).toBeGreaterThan(0); // the find did go upstream
    expect(sent.includes(Buffer.from(marker))).toBe(false);
  });

  it('tells drivers to use sessions and retryable writes, and forwards lsid and txnNumber intact', async () => {
    const client = await connect(proxy.uri('playground'), { retryWrites: true });
    const col = client.db('handshake_test').collection('sessions');
    const session = client.startSession();
    const before = relay.messages.length;
    await col.insertOne({ s: 1 }, { session });
    const sent = Buffer.concat(relay.messages.slice(before).map((m) => m.raw));
    const lsid = session.id!.id.buffer;
    await session.endSession();
    // The driver only sends txnNumber to a server that supports retryable writes (a mongos with
    // logicalSessionTimeoutMinutes); the proxy must pass it and the session id through unchanged.
    expect(sent.includes(Buffer.from('txnNumber\0'))).toBe(true);
    expect(sent.includes(Buffer.from(lsid))).toBe(true);
    expect(await col.countDocuments({ s: 1 })).toBe(1);
    await col.drop();
    await client.close();
  });
});
