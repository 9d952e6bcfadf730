import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { Binary, Long, deserialize, type Document } from 'bson';
import { MongoClient, type CommandStartedEvent } from 'mongodb';
import { PLAYGROUND_APP, connect, runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { physicalName, readPhysical, sandboxOf } from '../helpers/physical.js';
import { WireRelay, type RelayedMessage } from '../../src/testing/relay.js';
import { RawClient, opMsg } from '../../src/testing/wire-client.js';
import { parseOpMsg } from '../../src/wire/opmsg.js';
import { mapSessionId } from '../../src/policy/session-ids.js';
import { makeScope } from '../../src/policy/scope.js';

/** A second dev app, to show two apps using the same session id reach different upstream sessions. */
const OTHER_APP = 'slug: other\nname: Other\nauth_required: false\n';
/** A standalone upstream: the proxy presents itself as a standalone, so drivers do not retry writes. */
const standalone = inject('upstreamIsStandalone');

/** An upstream request's body decoded without promoting values (txnNumber stays an int64). */
function exactBody(m: RelayedMessage): Document {
  return deserialize(parseOpMsg(m.raw).body, { promoteValues: false });
}

/** The value of an int64 (a bson Long of either bson copy); fails on any other type. */
function int64(v: unknown): bigint {
  expect((v as { _bsontype?: unknown } | undefined)?._bsontype).toBe('Long');
  return BigInt((v as Long).toString());
}

/**
 * The bytes of a UUID Binary, for comparing session ids. The driver may carry its own copy of the bson
 * package, so its Binary is recognised by its BSON type rather than by class.
 */
function idBytes(id: unknown): Buffer {
  expect((id as { _bsontype?: unknown } | undefined)?._bsontype).toBe('Binary');
  const binary = id as Binary;
  expect(binary.sub_type).toBe(Binary.SUBTYPE_UUID);
  expect(binary.length()).toBe(16);
  return Buffer.from(binary.read(0, binary.length()));
}

describe('handshake answered by the proxy as a mongos', () => {
  let relay: WireRelay;
  let proxy: TestProxy;
  let upstreamWire: number;
  let direct: MongoClient;
  /** The proxy's own physical database (no other suite's playground data mixes in). */
  const physical = uniqueDb('handshake_physical');

  beforeAll(async () => {
    const uri = inject('upstreamUri');
    relay = await WireRelay.start(WireRelay.firstHost(uri));
    proxy = await startTestProxy({
      upstreamUri: WireRelay.uriThrough(uri, relay.port),
      runtimeYaml: runtimeYamlWithDatabase(physical),
      apps: { 'playground.yaml': PLAYGROUND_APP, 'other.yaml': OTHER_APP },
    });
    direct = new MongoClient(uri);
    upstreamWire = (await direct.db('admin').command({ hello: 1 })).maxWireVersion as number;
  });
  afterAll(async () => {
    await proxy?.stop();
    await relay?.close();
    await direct?.db(physical).dropDatabase().catch(() => undefined);
    await direct?.close();
  });

  it.each([['hello'], ['isMaster'], ['ismaster']])('answers %s with the mongos fields (a standalone before a standalone upstream) and nothing the proxy does not do', async (name) => {
    const raw = await RawClient.connect(proxy.port);
    const reply = await raw.command({ [name]: 1, helloOk: true, compression: ['zlib', 'snappy'], $db: 'admin' });
    raw.destroy();
    expect(reply.ok).toBe(1);
    expect(reply.msg).toBe(standalone ? undefined : 'isdbgrid');
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

  it('tells drivers to use sessions (and retryable writes when the upstream backs them); forwards txnNumber unchanged and the lsid mapped for the app', async () => {
    const started: CommandStartedEvent[] = [];
    const client = await connect(proxy.uri('playground'), { retryWrites: true, monitorCommands: true });
    client.on('commandStarted', (e) => started.push(e));
    const col = client.db('handshake_test').collection('sessions');
    const session = client.startSession();
    const before = relay.messages.length;
    await col.insertOne({ s: 1 }, { session });
    const sentMessages = relay.messages.slice(before);
    const clientId = idBytes(session.id!.id);
    await session.endSession();

    // The driver only sends txnNumber to a server that supports retryable writes (a mongos with
    // logicalSessionTimeoutMinutes): it does when the upstream backs them, and not before a standalone.
    const clientInsert = started.find((e) => e.commandName === 'insert')!.command;
    const txnNumber = standalone ? undefined : int64(clientInsert.txnNumber);
    if (standalone) expect(clientInsert.txnNumber).toBeUndefined();
    expect(idBytes((clientInsert.lsid as Document).id).equals(clientId)).toBe(true);

    // Upstream: the insert on the app's physical collection, with the same txnNumber (an int64 of the
    // same value) and the session id mapped for the playground app, never the client's own id.
    const upstreamInserts = sentMessages.filter((m) => m.command === 'insert').map(exactBody);
    expect(upstreamInserts).toHaveLength(1);
    const upstreamInsert = upstreamInserts[0]!;
    expect(upstreamInsert.insert).toBe(physicalName('playground', 'sessions'));
    expect(upstreamInsert.$db).toBe(physical);
    if (txnNumber === undefined) expect(upstreamInsert.txnNumber).toBeUndefined();
    else expect(int64(upstreamInsert.txnNumber)).toBe(txnNumber);
    const scope = makeScope('playground', proxy.database, proxy.tagField);
    const mapped = idBytes(mapSessionId(scope, new Binary(clientId, Binary.SUBTYPE_UUID)));
    expect(mapped.equals(clientId)).toBe(false);
    expect(idBytes((upstreamInsert.lsid as Document).id).equals(mapped)).toBe(true);
    expect(Object.keys(upstreamInsert.lsid as Document)).toEqual(['id']);
    expect(Buffer.concat(sentMessages.map((m) => m.raw)).includes(clientId)).toBe(false);

    expect(await col.countDocuments({ s: 1 })).toBe(1);
    expect(await readPhysical(direct, sandboxOf(proxy, 'playground'), 'sessions', { withoutId: true })).toEqual([{ s: 1 }]);
    await col.drop();
    await client.close();
  });

  it('maps the same lsid differently for two apps, and never forwards the client id', async () => {
    const clientId = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    const lsid = { id: new Binary(clientId, Binary.SUBTYPE_UUID) };
    const upstreamIds: Record<string, Buffer> = {};
    for (const app of ['playground', 'other']) {
      const raw = await RawClient.connect(proxy.port);
      try {
        expect((await raw.command({ hello: 1, client: { application: { name: app } }, $db: 'admin' })).ok).toBe(1);
        const before = relay.messages.length;
        const reply = await raw.command({
          insert: 'same_session',
          documents: [{ by: app }],
          lsid,
          ...(standalone ? {} : { txnNumber: Long.fromNumber(7) }),
          $db: 'handshake_test',
        });
        expect(reply).toMatchObject({ ok: 1, n: 1 });
        const sent = relay.messages.slice(before);
        const inserts = sent.filter((m) => m.command === 'insert').map(exactBody);
        expect(inserts).toHaveLength(1);
        expect(inserts[0]!.insert).toBe(physicalName(app, 'same_session'));
        if (!standalone) expect(int64(inserts[0]!.txnNumber)).toBe(7n);
        upstreamIds[app] = idBytes((inserts[0]!.lsid as Document).id);
        const expected = idBytes(mapSessionId(makeScope(app, proxy.database, proxy.tagField), lsid.id));
        expect(upstreamIds[app]!.equals(expected)).toBe(true);
        expect(Buffer.concat(sent.map((m) => m.raw)).includes(clientId)).toBe(false);
      } finally {
        raw.destroy();
      }
    }
    expect(upstreamIds.playground!.equals(upstreamIds.other!)).toBe(false);
    for (const app of ['playground', 'other']) {
      expect(await readPhysical(direct, sandboxOf(proxy, app), 'same_session', { withoutId: true })).toEqual([{ by: app }]);
    }
  });

  it.runIf(standalone)('before a standalone upstream, answers a transaction number as mongod does (IllegalOperation 20), sending nothing', async () => {
    const raw = await RawClient.connect(proxy.port);
    try {
      await raw.command({ hello: 1, client: { application: { name: 'playground' } }, $db: 'admin' });
      const before = relay.messages.length;
      const lsid = { id: new Binary(Buffer.alloc(16, 3), Binary.SUBTYPE_UUID) };
      for (const cmd of [
        { insert: 'no_txn', documents: [{ a: 1 }], lsid, txnNumber: Long.fromNumber(1), $db: 'handshake_test' },
        { find: 'no_txn', lsid, txnNumber: Long.fromNumber(2), startTransaction: true, autocommit: false, $db: 'handshake_test' },
        { update: 'no_txn', updates: [{ q: {}, u: { $inc: { n: 1 } } }], lsid, txnNumber: Long.fromNumber(3), $db: 'handshake_test' },
      ]) {
        expect(await raw.command(cmd)).toEqual({
          ok: 0,
          code: 20,
          codeName: 'IllegalOperation',
          errmsg: 'Transaction numbers are only allowed on a replica set member or mongos',
        });
      }
      expect(relay.messages.slice(before).filter((m) => ['insert', 'find', 'update'].includes(m.command))).toEqual([]);
      expect(await readPhysical(direct, sandboxOf(proxy, 'playground'), 'no_txn')).toEqual([]);
    } finally {
      raw.destroy();
    }
  });
});
