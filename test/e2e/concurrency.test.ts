import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import type { Document } from 'bson';
import { Long, MongoClient, type CommandSucceededEvent } from 'mongodb';
import { connect, runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import {
  expectNothingUnderLogicalNames,
  physicalCollectionsOf,
  readPhysical,
  sandboxOf,
  seedPhysical,
  type Sandbox,
} from '../helpers/physical.js';
import { WireRelay, type RelayedMessage } from '../../src/testing/relay.js';
import { RawClient } from '../../src/testing/wire-client.js';

/**
 * Many real clients at once, unacknowledged writes, clients vanishing mid-cursor and killed cursors,
 * all through the real proxy to the real upstream, as the playground app. Every result is checked
 * against what the client itself wrote, and the app's physical collections are read directly from the
 * upstream afterwards (every document tagged, nothing under the names the clients used).
 */

let proxy: TestProxy;
let tap: WireRelay;
let direct: MongoClient;
let sandbox: Sandbox;
/** The database the clients name ($db); the proxy maps every collection into `physical`. */
const db = uniqueDb('e2e_conc');
/** The suite's shared physical database (its own, so no other suite's playground data mixes in). */
const physical = uniqueDb('e2e_conc_physical');

/**
 * A small upstream pool: 200 clients (up to 400 driver connections) share 16 upstream connections, so
 * requests queue in the proxy's pool and every upstream connection serves many clients in turn.
 */
const UPSTREAM_POOL = 16;

beforeAll(async () => {
  proxy = await startTestProxy({
    logLevel: 'info',
    runtimeYaml: runtimeYamlWithDatabase(physical, { upstream: `  pool:\n    max_size: ${UPSTREAM_POOL}\n` }),
  });
  sandbox = sandboxOf(proxy, 'playground');
  expect(sandbox.database).toBe(physical);
  tap = await WireRelay.start({ port: proxy.port });
  direct = await connect(inject('upstreamUri'));
});

afterAll(async () => {
  await Promise.all([db, physical].map((name) => direct?.db(name).dropDatabase().catch(() => undefined)));
  await direct?.close();
  await tap?.close();
  await proxy?.stop();
});

/** Documents with numeric ids, as the seeded and unacknowledged-write collections hold. */
interface NumberedDoc {
  _id: number;
  i: number;
  pad?: string;
  late?: boolean;
}

/** Polls `condition` until it holds or the deadline passes (a condition, never a fixed sleep). */
async function eventually(what: string, condition: () => boolean | Promise<boolean>, timeoutMS = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMS;
  for (let delay = 5; ; delay = Math.min(delay * 2, 100)) {
    if (await condition()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMS} ms waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** Upstream connections the proxy has lent out and not yet returned, across all its pools. */
function upstreamInUse(): number {
  let n = 0;
  for (const pool of proxy.runtime.upstream.pools.values()) n += pool.inUse;
  return n;
}

function proxyClient(options: ConstructorParameters<typeof MongoClient>[1] = {}, port = proxy.port): MongoClient {
  return new MongoClient(`mongodb://127.0.0.1:${port}/?appName=playground`, { serverSelectionTimeoutMS: 10_000, ...options });
}

/**
 * Seeds the app's collection directly on the upstream with `n` documents {_id: i, i, pad}: in its
 * physical collection, tagged as the app, as if the app had written them through the proxy.
 */
async function seed(collection: string, n: number): Promise<void> {
  await seedPhysical(direct, sandbox, collection, Array.from({ length: n }, (_, i) => ({ _id: i, i, pad: 'x'.repeat(64) })));
}

/** The app's collection holds exactly ids 0..n-1, every document tagged, nothing under the logical name. */
async function expectIntact(collection: string, n: number): Promise<void> {
  const docs = await readPhysical(direct, sandbox, collection, { sort: { _id: 1 } });
  expect(docs.map((d) => d._id)).toEqual(Array.from({ length: n }, (_, i) => i));
  await expectNothingUnderLogicalNames(direct, sandbox, db, [collection]);
}

/**
 * A counting semaphore: at most `limit` holders at once; the others wait their turn in order. It
 * also records the most holders seen at once, so a test can check the bound held and was used.
 */
class Semaphore {
  private holders = 0;
  private readonly waiting: (() => void)[] = [];
  maxHolders = 0;
  constructor(private readonly limit: number) {}

  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.holders >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.holders++;
    this.maxHolders = Math.max(this.maxHolders, this.holders);
    try {
      return await fn();
    } finally {
      const next = this.waiting.shift();
      // The slot passes straight to the next waiter (holders unchanged), or is freed.
      if (next) next();
      else this.holders--;
    }
  }
}

describe('concurrency and connection lifecycle through the proxy', () => {
  /*
   * All apps share ONE physical database, and here all 200 clients are one app: each client has its own
   * collection (its own SQLite table), all in that one database. FerretDB v1's SQLite backend gives a
   * database at most 100 SQLite connections, and an open cursor keeps one until it is exhausted. With
   * more than ~100 half-read cursors open in one database, the next query waits inside FerretDB forever
   * while the getMores that would free connections wait for the proxy's (bounded) upstream pool: a
   * FerretDB-specific deadlock a real MongoDB does not have. So the cursor phase (a find and its
   * getMores, from the first batch until the cursor is exhausted) runs under a semaphore of
   * MAX_OPEN_CURSORS, well under 100 even with the UPSTREAM_POOL other requests in flight beside it;
   * everything else the 200 clients do stays fully concurrent.
   */
  it('200 concurrent clients doing mixed work each see exactly their own results', async () => {
    const CLIENTS = 200;
    const DOCS = 20;
    const MAX_OPEN_CURSORS = 40;
    const cursors = new Semaphore(MAX_OPEN_CURSORS);
    const colOf = (k: number) => `mixed_${k}`;
    let maxPoolSize = 0;
    const sampler = setInterval(() => {
      for (const pool of proxy.runtime.upstream.pools.values()) maxPoolSize = Math.max(maxPoolSize, pool.size);
    }, 10);
    const work = async (k: number): Promise<void> => {
      const client = proxyClient({ maxPoolSize: 2 });
      try {
        await client.connect();
        const c = client.db(db).collection(colOf(k));
        const mine = (j: number) => ({ owner: k, seq: j, val: k * 1000 + j });
        // The driver adds _id to the documents it is given: hand it copies.
        const docs = Array.from({ length: DOCS }, (_, j) => mine(j));
        const inserted = await c.insertMany(docs.map((d) => ({ ...d })));
        expect(inserted.insertedCount).toBe(DOCS);
        const one = await c.insertOne(mine(DOCS));
        expect(one.acknowledged).toBe(true);

        // Two operations at once on the client's two pooled connections: a cursor read with getMores
        // (batchSize 4 over 21 documents, under the cursor bound) and a count.
        const [found, count] = await Promise.all([
          cursors.run(() => c.find({ owner: k }, { projection: { _id: 0 } }).sort({ seq: 1 }).batchSize(4).toArray()),
          c.countDocuments({ owner: k }),
        ]);
        expect(found).toEqual([...docs, mine(DOCS)]);
        expect(count).toBe(DOCS + 1);

        const updated = await c.updateMany({ owner: k, seq: { $lt: 10 } }, { $inc: { val: 1 } });
        expect({ matched: updated.matchedCount, modified: updated.modifiedCount }).toEqual({ matched: 10, modified: 10 });
        expect(await c.findOne({ owner: k, seq: 5 }, { projection: { _id: 0 } })).toEqual({ owner: k, seq: 5, val: k * 1000 + 6 });
        expect((await c.deleteOne({ owner: k, seq: DOCS })).deletedCount).toBe(1);
        expect(await c.countDocuments({ owner: k, val: { $gt: k * 1000 + 9 } })).toBe(DOCS - 9);
        const seqs = (await c.distinct('seq', { owner: k })) as number[];
        expect(seqs.sort((a, b) => a - b)).toEqual(Array.from({ length: DOCS }, (_, j) => j));
      } finally {
        await client.close();
      }
    };
    let results: PromiseSettledResult<void>[];
    try {
      results = await Promise.allSettled(Array.from({ length: CLIENTS }, (_, k) => work(k)));
    } finally {
      clearInterval(sampler);
    }
    const failures = results.flatMap((r, k) => (r.status === 'rejected' ? [`client ${k}: ${String(r.reason)}`] : []));
    expect(failures).toEqual([]);
    // The clients really were multiplexed onto the bounded upstream pool, with many cursors open at
    // once but never more than the bound.
    expect(maxPoolSize).toBeGreaterThan(1);
    expect(maxPoolSize).toBeLessThanOrEqual(UPSTREAM_POOL);
    expect(cursors.maxHolders).toBeGreaterThan(1);
    expect(cursors.maxHolders).toBeLessThanOrEqual(MAX_OPEN_CURSORS);

    // What the upstream holds afterwards, read directly: the app has exactly the clients' collections,
    // each holding its client's 20 documents, updated and tagged, and nothing is stored under the names
    // the clients used.
    const names = Array.from({ length: CLIENTS }, (_, k) => colOf(k));
    expect(await physicalCollectionsOf(direct, sandbox)).toEqual([...names].sort());
    await expectNothingUnderLogicalNames(direct, sandbox, db, names);
    for (let k = 0; k < CLIENTS; k++) {
      const stored = await readPhysical(direct, sandbox, colOf(k), { sort: { seq: 1 }, withoutId: true });
      expect(stored, `${colOf(k)}`).toEqual(
        Array.from({ length: DOCS }, (_, j) => ({ owner: k, seq: j, val: k * 1000 + j + (j < 10 ? 1 : 0) })),
      );
    }
    // Every upstream connection went back to the pool.
    await eventually('upstream connections returned', () => upstreamInUse() === 0);
  });

  it('an unacknowledged (w:0) insert is followed by correct results on the same connection', async () => {
    const col = 'unacked';
    tap.messages.length = 0;
    const client = proxyClient({ maxPoolSize: 1 }, tap.port);
    try {
      await client.connect();
      const c = client.db(db).collection<NumberedDoc>(col);
      const docs = Array.from({ length: 50 }, (_, i) => ({ _id: i, i }));
      await c.insertMany(docs, { writeConcern: { w: 0 } });
      await c.insertOne({ _id: 50, i: 50 }, { writeConcern: { w: 0 } });

      // Straight after, with no wait: the next commands on the same connection see those writes.
      expect(await c.find({}).sort({ _id: 1 }).toArray()).toEqual([...docs, { _id: 50, i: 50 }]);
      expect(await c.countDocuments({})).toBe(51);
      const ack = await c.insertOne({ _id: 51, i: 51 });
      expect(ack.insertedId).toBe(51);
      const upd = await c.updateMany({ i: { $gte: 40 } }, { $set: { late: true } });
      expect(upd.modifiedCount).toBe(12);
      expect(await c.countDocuments({ late: true })).toBe(12);
      // Another unacknowledged write, then a read that must observe it.
      await c.deleteMany({ i: { $lt: 10 } }, { writeConcern: { w: 0 } });
      expect(await c.countDocuments({})).toBe(42);
      expect((await c.findOne({ _id: 51 }))?.late).toBe(true);

      // The driver really sent them as moreToCome on the connection that carried the reads after them.
      const unacked = tap.messages.filter((m) => m.moreToCome);
      expect(unacked.map((m) => m.command)).toEqual(['insert', 'insert', 'delete']);
      expect(unacked[0]!.sequences).toEqual([{ identifier: 'documents', count: 50 }]);
      const dataConnections = new Set(
        tap.messages.filter((m) => m.body.$db === db).map((m: RelayedMessage) => m.connection),
      );
      expect(dataConnections.size).toBe(1);
    } finally {
      await client.close();
    }
    // Read directly: the app's physical collection, every document tagged, nothing under the logical name.
    const left = await readPhysical(direct, sandbox, col, { sort: { _id: 1 } });
    expect(left).toEqual(Array.from({ length: 42 }, (_, n) => ({ _id: n + 10, i: n + 10, ...(n + 10 >= 40 ? { late: true } : {}) })));
    await expectNothingUnderLogicalNames(direct, sandbox, db, [col]);
  });

  it('a client that disconnects mid-cursor leaves the proxy serving others and the data intact', async () => {
    const col = 'cursored';
    await seed(col, 300);
    const baseline = proxy.runtime.proxy.connectionCount;

    // 1. A client reads one batch, then its connections are reset, as when its host crashes.
    tap.messages.length = 0;
    const quitter = proxyClient({ maxPoolSize: 1, retryReads: false }, tap.port);
    await quitter.connect();
    const cursor = quitter.db(db).collection(col).find({}).sort({ _id: 1 }).batchSize(5);
    expect((await cursor.next())?._id).toBe(0);
    expect(cursor.bufferedCount()).toBe(4);
    tap.resetAll();

    // 2. A client whose connection closes right after it sent a getMore: the proxy still runs the
    //    getMore upstream (it is already on its way), then drops the reply and closes.
    const cutter = proxyClient({ maxPoolSize: 1, retryReads: false }, tap.port);
    await cutter.connect();
    let cutConnection = -1;
    const stop = tap.onMessage((m, conn) => {
      if (m.command === 'getMore' && m.body.collection === col && m.body.$db === db) {
        cutConnection = conn.id;
        conn.destroy(); // the getMore has been forwarded to the proxy; the client is gone before its reply
      }
    });
    const reading = cutter.db(db).collection(col).find({}).batchSize(5).toArray();
    await expect(reading).rejects.toThrow();
    stop();
    expect(cutConnection).toBeGreaterThan(0);
    await Promise.all([quitter.close(true), cutter.close(true)]);
    tap.destroyAll();

    // The proxy notices both disconnects and returns every upstream connection to its pool.
    await eventually('proxy closed the vanished connections', () => proxy.runtime.proxy.connectionCount <= baseline);
    await eventually('upstream connections returned', () => upstreamInUse() === 0);

    // Others are still served, through the proxy, with complete results.
    const other = await connect(proxy.uri('playground'));
    try {
      const all = await other.db(db).collection(col).find({}).sort({ _id: 1 }).batchSize(7).toArray();
      expect(all.map((d) => d._id)).toEqual(Array.from({ length: 300 }, (_, i) => i));
      expect((await other.db(db).collection<NumberedDoc>(col).insertOne({ _id: 300, i: 300 })).insertedId).toBe(300);
    } finally {
      await other.close();
    }
    await expectIntact(col, 301);
  });

  it('killCursors through the driver ends the cursor: a later getMore is CursorNotFound (43)', async () => {
    const col = 'killed';
    await seed(col, 40);
    const killReplies: Document[] = [];
    const client = proxyClient({ maxPoolSize: 1, monitorCommands: true });
    client.on('commandSucceeded', (e: CommandSucceededEvent) => {
      if (e.commandName === 'killCursors') killReplies.push(e.reply as Document);
    });
    const raw = await RawClient.connect(proxy.port);
    // An explicit session, so the raw client can continue the cursor in it (a real server refuses a
    // getMore outside the session that opened the cursor).
    const session = client.startSession();
    try {
      await client.connect();
      const cursor = client.db(db).collection(col).find({}, { session }).sort({ _id: 1 }).batchSize(2);
      expect((await cursor.next())?._id).toBe(0);
      const id = cursor.id;
      expect(id).toBeInstanceOf(Long);
      expect(id!.isZero()).toBe(false);

      // The raw client acts as the same app, so the cursor is visible to it: getMore works while it lives.
      const hello = await raw.command({ hello: 1, client: { application: { name: 'playground' } }, $db: 'admin' });
      expect(hello.ok).toBe(1);
      const lsid = session.id;
      expect(lsid).toBeDefined();
      const live = await raw.command({ getMore: id, collection: col, batchSize: 3, lsid, $db: db });
      expect(live.ok).toBe(1);
      expect((live.cursor as Document).nextBatch.map((d: Document) => d._id)).toEqual([2, 3, 4]);

      await cursor.close();
      expect(killReplies).toHaveLength(1);
      expect((killReplies[0]!.cursorsKilled as Long[]).map((k) => k.toString())).toEqual([id!.toString()]);

      const after = await raw.command({ getMore: id, collection: col, batchSize: 3, lsid, $db: db });
      expect(after).toMatchObject({ ok: 0, code: 43, codeName: 'CursorNotFound' });
      // The proxy connection stays usable after the error.
      const again = await raw.command({ find: col, filter: { _id: { $lt: 3 } }, sort: { _id: 1 }, $db: db });
      expect((again.cursor as Document).firstBatch.map((d: Document) => d._id)).toEqual([0, 1, 2]);
    } finally {
      raw.destroy();
      await session.endSession();
      await client.close();
    }
    await expectIntact(col, 40);
  });
});
