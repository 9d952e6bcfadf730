import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { Binary, Long, type Document } from 'bson';
import type { MongoClient } from 'mongodb';
import { connect, runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { freePort } from '../../src/testing/ports.js';
import { startFerretDB, type RunningFerretDB } from '../../src/testing/ferretdb.js';
import { WireRelay } from '../../src/testing/relay.js';
import { RawClient, opMsg as opMsgOf } from '../../src/testing/wire-client.js';

/**
 * Cursors must not outlive every client that could use them (the benchmark's deadlock: FerretDB v1
 * holds a SQLite connection per open cursor, and kills a connection's cursors only when that connection
 * closes, which the proxy's pooled connections never do). Each suite here runs its own FerretDB, with
 * its debug metrics on, so that what is open upstream is observable: cursors created minus cursors
 * removed (ferretdb_cursors_created_total - ferretdb_cursors_duration_seconds_count).
 */

const DOCS = 200;
const APP_DB = 'scans';

/** Open cursors in FerretDB, from its /debug/metrics. */
async function upstreamOpenCursors(debugPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${debugPort}/debug/metrics`)).text();
  let open = 0;
  for (const line of text.split('\n')) {
    const m = /^ferretdb_cursors_(created_total|duration_seconds_count)\{[^}]*\} (\S+)$/.exec(line);
    if (m) open += (m[1] === 'created_total' ? 1 : -1) * Number(m[2]);
  }
  return open;
}

/** Polls `probe` until it returns `expected` (or fails with the last value after `timeoutMS`). */
async function until<T>(probe: () => T | Promise<T>, expected: T, timeoutMS = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMS;
  let last = await probe();
  while (last !== expected) {
    if (Date.now() > deadline) expect(last, `still not ${String(expected)} after ${timeoutMS} ms`).toBe(expected);
    await new Promise((r) => setTimeout(r, 20));
    last = await probe();
  }
}

interface Harness {
  ferret: RunningFerretDB;
  debugPort: number;
  relay: WireRelay | undefined;
  proxy: TestProxy;
  physical: string;
}

async function startHarness(options: { relay: boolean; poolSize: number }): Promise<Harness> {
  const debugPort = await freePort();
  const ferret = await startFerretDB(inject('ferretdbBinary'), { debugPort });
  const relay = options.relay ? await WireRelay.start({ port: ferret.port }) : undefined;
  const physical = uniqueDb('abandon');
  const proxy = await startTestProxy({
    upstreamUri: relay ? WireRelay.uriThrough(ferret.uri, relay.port) : ferret.uri,
    runtimeYaml: runtimeYamlWithDatabase(physical, { upstream: `  pool:\n    max_size: ${options.poolSize}\n` }),
    logLevel: 'debug',
  });
  const seed = await connect(proxy.uri('playground'));
  await seed.db(APP_DB).collection('big').insertMany(Array.from({ length: DOCS }, (_, i) => ({ i, pad: 'x'.repeat(100) })));
  await seed.close();
  return { ferret, debugPort, relay, proxy, physical };
}

async function stopHarness(h: Harness | undefined): Promise<void> {
  await h?.proxy.stop();
  await h?.relay?.close();
  await h?.ferret.stop();
}

function pools(proxy: TestProxy) {
  return [...proxy.runtime.upstream.pools.values()];
}
/** Requests waiting for an upstream connection: in the pool's queue, or in their app's (limits.upstream_connections). */
const waiting = (proxy: TestProxy) =>
  pools(proxy).reduce((n, p) => n + p.waiting, 0) + [...proxy.runtime.usage.entries()].reduce((n, u) => n + u.upstreamWaiting, 0);
const inUse = (proxy: TestProxy) => pools(proxy).reduce((n, p) => n + p.inUse, 0);
const registered = (proxy: TestProxy) => proxy.runtime.upstream.cursors.size;

/**
 * A barrier after a client's FIN: a ping on another connection, answered by the proxy after the
 * loopback delivered the FIN sent before it (the FIN itself has no observable effect while the
 * connection waits for an upstream reply).
 */
async function proxySawEnd(proxy: TestProxy): Promise<void> {
  const probe = await RawClient.connect(proxy.port);
  for (let i = 0; i < 3; i++) expect((await probe.command({ ping: 1, $db: 'admin' })).ok).toBe(1);
  probe.destroy();
}

/**
 * A scan's requests (its find and its getMores) answered ClientDisconnect (279): not sent upstream
 * because their client had gone (from the debug 'command' lines).
 */
function abandonedScanRequests(proxy: TestProxy): number {
  return proxy.logs.filter((l) => l.msg === 'command' && (l.cmd === 'find' || l.cmd === 'getMore') && l.code === 279).length;
}

async function rawPlayground(port: number): Promise<RawClient> {
  const raw = await RawClient.connect(port);
  await raw.command({ hello: 1, client: { application: { name: 'playground' } }, $db: 'admin' });
  return raw;
}

const uuid = (b: number) => new Binary(Buffer.alloc(16, b), Binary.SUBTYPE_UUID);
/** A reply's cursor id, as the int64 a getMore or killCursors must send (replies are decoded with small ids as numbers). */
const cursorIdOf = (reply: Document): Long => Long.fromValue((reply.cursor as Document).id as number | Long);

describe('abandoned requests and cursors, with the upstream held (a relay keeps its replies)', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ relay: true, poolSize: 1 });
  });
  afterAll(async () => {
    h?.relay?.release();
    await stopHarness(h);
  });

  it('a request waiting for a pool connection whose client closes leaves the queue and is never sent', async () => {
    const { proxy, relay } = h;
    const busy = await rawPlayground(proxy.port);
    const queued = await Promise.all([1, 2, 3].map(() => rawPlayground(proxy.port)));
    relay!.hold();
    busy.send(opMsgOf({ find: 'big', filter: {}, batchSize: 2, comment: 'busy', $db: APP_DB }));
    await until(() => relay!.messages.some((m) => m.body.comment === 'busy'), true);
    for (const [i, raw] of queued.entries()) raw.send(opMsgOf({ find: 'big', filter: {}, batchSize: 2, comment: `queued-${i}`, $db: APP_DB }));
    await until(() => waiting(proxy), 3);
    for (const raw of queued) raw.destroy();
    // They leave the wait queue as their clients go, not when a connection frees up.
    await until(() => waiting(proxy), 0);
    relay!.release();
    const reply = (await busy.nextReply()).doc;
    expect(reply.ok).toBe(1);
    const cursorId = cursorIdOf(reply);
    expect(cursorId.isZero()).toBe(false);
    expect(registered(proxy)).toBe(1);
    // The connection went back idle; none of the abandoned finds reached the upstream.
    await until(() => inUse(proxy), 0);
    expect(relay!.messages.filter((m) => String(m.body.comment ?? '').startsWith('queued-'))).toEqual([]);
    // The busy client's cursor is its own to finish.
    const killed = await busy.command({ killCursors: 'big', cursors: [cursorId], $db: APP_DB });
    expect((killed.cursorsKilled as Long[]).map(String)).toEqual([String(cursorId)]);
    expect(registered(proxy)).toBe(0);
    busy.destroy();
    await until(() => upstreamOpenCursors(h.debugPort), 0);
  });

  it.each([
    ['reset (RST): the connection is closed', 'reset'],
    ["ended (FIN, what a driver's destroy sends): the connection waits for the reply, then closes", 'end'],
  ] as const)('a cursor opened for a client that went while its find was upstream is killed at once: %s', async (_what, how) => {
    const { proxy, relay } = h;
    const raw = await rawPlayground(proxy.port);
    const connections = proxy.runtime.proxy.connectionCount;
    const killsBefore = relay!.commands('killCursors').length;
    relay!.hold();
    const comment = `orphan-${how}`;
    raw.send(opMsgOf({ find: 'big', filter: {}, batchSize: 2, comment, $db: APP_DB }));
    await until(() => relay!.messages.some((m) => m.body.comment === comment), true);
    if (how === 'reset') {
      raw.socket.resetAndDestroy();
      // The proxy has closed the client's connection before the find's reply comes back.
      await until(() => proxy.runtime.proxy.connectionCount, connections - 1);
    } else {
      raw.destroy();
      await proxySawEnd(proxy);
    }
    relay!.release();
    // The proxy killed it upstream on its own (nobody knows its id), and never registered it.
    await until(() => relay!.commands('killCursors').length, killsBefore + 1);
    const kill = relay!.commands('killCursors').at(-1)!;
    expect(kill.body.killCursors).toBe('playground_big');
    expect(kill.body.$db).toBe(h.physical);
    expect(registered(proxy)).toBe(0);
    await until(() => upstreamOpenCursors(h.debugPort), 0);
  });

  it("a getMore's reply after its client closed leaves the cursor open (another connection may continue it)", async () => {
    const { proxy, relay } = h;
    const opener = await rawPlayground(proxy.port);
    const first = await opener.command({ find: 'big', filter: {}, batchSize: 2, $db: APP_DB });
    const id = cursorIdOf(first);
    const quitter = await rawPlayground(proxy.port);
    const connections = proxy.runtime.proxy.connectionCount;
    relay!.hold();
    quitter.send(opMsgOf({ getMore: id, collection: 'big', batchSize: 2, comment: 'getmore-then-gone', $db: APP_DB }));
    await until(() => relay!.messages.some((m) => m.body.comment === 'getmore-then-gone'), true);
    quitter.destroy();
    await proxySawEnd(proxy);
    relay!.release();
    await until(() => proxy.runtime.proxy.connectionCount, connections - 1);
    await until(() => inUse(proxy), 0);
    expect(registered(proxy)).toBe(1);
    // The opener continues it: the batch after the one the quitter never saw.
    const next = await opener.command({ getMore: id, collection: 'big', batchSize: 2, $db: APP_DB });
    expect(((next.cursor as Document).nextBatch as Document[]).map((d) => d.i)).toEqual([4, 5]);
    await opener.command({ killCursors: 'big', cursors: [id], $db: APP_DB });
    expect(registered(proxy)).toBe(0);
    opener.destroy();
    await until(() => upstreamOpenCursors(h.debugPort), 0);
  });
});

describe('cursors end with their sessions, their clients, or their idle timeout', () => {
  let h: Harness;
  beforeAll(async () => {
    h = await startHarness({ relay: false, poolSize: 4 });
  });
  afterAll(async () => {
    await stopHarness(h);
  });

  it("endSessions kills the ended sessions' cursors upstream (FerretDB v1 has no sessions) and answers ok", async () => {
    const raw = await rawPlayground(h.proxy.port);
    const open = async (session: number) => cursorIdOf(await raw.command({ find: 'big', filter: {}, batchSize: 2, lsid: { id: uuid(session) }, $db: APP_DB }));
    await open(1);
    await open(1);
    const other = await open(2);
    expect(registered(h.proxy)).toBe(3);
    await until(() => upstreamOpenCursors(h.debugPort), 3);
    const ended = await raw.command({ endSessions: [{ id: uuid(1) }], $db: 'admin' });
    expect(ended.ok).toBe(1);
    expect(registered(h.proxy)).toBe(1);
    await until(() => upstreamOpenCursors(h.debugPort), 1);
    // The other session's cursor is untouched.
    const next = await raw.command({ getMore: other, collection: 'big', batchSize: 2, lsid: { id: uuid(2) }, $db: APP_DB });
    expect(((next.cursor as Document).nextBatch as Document[]).map((d) => d.i)).toEqual([2, 3]);
    await raw.command({ killSessions: [{ id: uuid(2) }], $db: 'admin' });
    expect(registered(h.proxy)).toBe(0);
    await until(() => upstreamOpenCursors(h.debugPort), 0);
    raw.destroy();
  });

  it('Node driver: clients that each leave a cursor mid-scan and close() leave nothing open', async () => {
    const clients: MongoClient[] = [];
    for (let i = 0; i < 8; i++) clients.push(await connect(h.proxy.uri('playground'), { maxPoolSize: 1 }));
    for (const client of clients) {
      const cursor = client.db(APP_DB).collection('big').find({}).batchSize(5);
      expect((await cursor.next())?.i).toBe(0);
    }
    expect(registered(h.proxy)).toBe(8);
    await Promise.all(clients.map((c) => c.close()));
    await until(() => registered(h.proxy), 0);
    await until(() => upstreamOpenCursors(h.debugPort), 0);
  });

  it('a cursor left by a client that vanished stays (MongoDB semantics) until its idle timeout, then is killed upstream', async () => {
    const raw = await rawPlayground(h.proxy.port);
    await raw.command({ find: 'big', filter: {}, batchSize: 2, $db: APP_DB });
    raw.destroy();
    await raw.closed;
    expect(registered(h.proxy)).toBe(1);
    await until(() => upstreamOpenCursors(h.debugPort), 1);
    // The sweep as it would run 10 minutes later (mongod's cursorTimeoutMillis).
    expect(h.proxy.runtime.upstream.cursors.sweep(Date.now() + 10 * 60_000 + 1)).toHaveLength(1);
    expect(registered(h.proxy)).toBe(0);
    await until(() => upstreamOpenCursors(h.debugPort), 0);
  });

  it('regression (bench/e2e.mjs at small scale): 30 clients per round start scans through a pool of 4 and go; 5 rounds leave nothing open', async () => {
    const proxy = h.proxy;
    const abandonedBefore = abandonedScanRequests(proxy);
    let session = 0x40;
    for (let round = 0; round < 5; round++) {
      // As the benchmark's load processes: drivers scanning, closed while their finds wait or run.
      const drivers = await Promise.all(Array.from({ length: 20 }, () => connect(proxy.uri('playground'), { maxPoolSize: 1, retryReads: false })));
      // And clients that vanish without a goodbye (socket destroyed); their sessions are ended later
      // from another connection, as a driver's close() does with its pooled sessions.
      const raws = await Promise.all(Array.from({ length: 10 }, () => rawPlayground(proxy.port)));
      const sessions = raws.map(() => uuid(session++));
      raws.forEach((raw, i) => raw.send(opMsgOf({ find: 'big', filter: {}, batchSize: 2, lsid: { id: sessions[i] }, $db: APP_DB })));
      const scans = drivers.map((c) => c.db(APP_DB).collection('big').find({}).batchSize(2).toArray().catch(() => undefined));
      // A few finds are upstream, most wait for one of the 4 connections: then every client goes.
      await until(() => waiting(proxy) > 0, true);
      for (const raw of raws) raw.destroy();
      await Promise.all(drivers.map((c) => c.close()));
      await Promise.all(scans);
      const ender = await rawPlayground(proxy.port);
      expect((await ender.command({ endSessions: sessions.map((id) => ({ id })), $db: 'admin' })).ok).toBe(1);
      ender.destroy();
    }
    await until(() => waiting(proxy), 0);
    await until(() => inUse(proxy), 0);
    await until(() => registered(proxy), 0);
    await until(() => upstreamOpenCursors(h.debugPort), 0);
    // Requests whose clients had gone while they waited for a connection were dropped, not sent (which
    // of a scan's requests was waiting when its client went is the scheduler's: its find or a getMore).
    expect(abandonedScanRequests(proxy) - abandonedBefore).toBeGreaterThan(0);
    // And the upstream still answers promptly through the proxy.
    const client = await connect(proxy.uri('playground'), { serverSelectionTimeoutMS: 5000 });
    const started = Date.now();
    expect(await client.db(APP_DB).collection('big').countDocuments({ i: { $lt: 10 } })).toBe(10);
    expect(await client.db(APP_DB).collection('big').find({ i: 7 }, { projection: { _id: 0, i: 1 } }).toArray()).toEqual([{ i: 7 }]);
    expect(Date.now() - started).toBeLessThan(5000);
    await client.close();
  });
});
