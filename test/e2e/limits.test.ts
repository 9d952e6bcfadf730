import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient, MongoServerError, type MongoClientOptions } from 'mongodb';
import { startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { physicalCollection, sandboxOf } from '../helpers/physical.js';
import { afterEdit, httpJson, writeManifest } from '../helpers/reload.js';
import type { AppsDocument } from '../../src/observability/apps-view.js';

/**
 * The manifest's `limits` and `data_access` enforced per app, with the Node driver (and
 * PyMongo for the error shapes): each limit on its own app, so each test sees only its own rule.
 */

const dev = (slug: string, extra: string) => `slug: ${slug}\nauth_required: false\n${extra}`;

let proxy: TestProxy;
let direct: MongoClient;
const clients: MongoClient[] = [];
const db = uniqueDb('e2e_limits');

beforeAll(async () => {
  proxy = await startTestProxy({
    apps: {
      'conns.yaml': dev('conns', 'limits: { connections: 2 }\n'),
      'rate.yaml': dev('rate', 'limits: { operations_per_second: 5 }\n'),
      'paced.yaml': dev('paced', 'limits: { operations_per_second: 5 }\n'),
      'sized.yaml': dev('sized', 'limits: { max_document_bytes: 1024 }\n'),
      'counted.yaml': dev('counted', 'limits: { max_documents_per_collection: 5 }\n'),
      'readonly.yaml': dev('readonly', 'data_access: { read_only: true }\n'),
      'narrow.yaml': dev('narrow', 'data_access: { collections: [orders] }\n'),
    },
    runtime: { documentCountRefreshMS: 200 },
  });
  direct = new MongoClient(inject('upstreamUri'), { serverSelectionTimeoutMS: 10_000 });
  await direct.connect();
});

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await direct?.close();
  await proxy?.stop();
});

async function client(slug: string, options: MongoClientOptions = {}): Promise<MongoClient> {
  const c = new MongoClient(proxy.uri(slug), { serverSelectionTimeoutMS: 5000, maxPoolSize: 1, ...options });
  clients.push(c);
  await c.connect();
  return c;
}

/** The server error `op` fails with. */
async function failure(op: Promise<unknown>): Promise<MongoServerError & { errorLabels?: string[] }> {
  try {
    await op;
  } catch (err) {
    expect((err as { code?: unknown }).code).toBeTypeOf('number');
    return err as MongoServerError;
  }
  throw new Error('the operation succeeded');
}

const appEntry = async (slug: string) => (await httpJson<AppsDocument>(proxy.httpPort, '/apps')).body.apps.find((a) => a.slug === slug)!;

function python(script: string, ...args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(inject('pythonPath'), ['-c', script, ...args], { timeout: 45_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`python failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

describe('limits.connections', () => {
  it('counts connections that run app commands; one beyond the limit is refused with the reason and closed', async () => {
    const a = await client('conns');
    const b = await client('conns');
    await a.db(db).collection('c').insertOne({ a: 1 });
    await b.db(db).collection('c').insertOne({ b: 1 });
    // Each client also holds monitoring connections (hello only): they do not count.
    expect(proxy.runtime.usage.peek('conns')!.connections).toBeGreaterThan(2);
    expect(proxy.runtime.usage.peek('conns')!.activeConnections).toBe(2);

    const third = await client('conns');
    const err = await failure(third.db(db).collection('c').countDocuments());
    expect(err.code).toBe(18);
    expect(err.message).toContain("app 'conns' has reached its limit of 2 connections (limits.connections)");
    expect(await appEntry('conns')).toMatchObject({ active_connections: 2, limits: { connections: 2 } });

    await a.close();
    await expect.poll(() => proxy.runtime.usage.peek('conns')!.activeConnections, { timeout: 5000, interval: 20 }).toBe(1);
    expect(await third.db(db).collection('c').countDocuments()).toBe(2);
  });
});

describe('limits.operations_per_second', () => {
  it('lets a burst of one second through, then answers the retryable overload error 462', async () => {
    const c = await client('rate', { maxAdaptiveRetries: 0 });
    const coll = c.db(db).collection('r');
    const results = await Promise.allSettled(Array.from({ length: 15 }, () => coll.findOne({})));
    const refused = results.filter((r) => r.status === 'rejected').map((r) => (r as PromiseRejectedResult).reason as MongoServerError);
    expect(results.filter((r) => r.status === 'fulfilled').length).toBeLessThanOrEqual(6);
    expect(refused.length).toBeGreaterThanOrEqual(9);
    expect(refused[0]).toMatchObject({ code: 462, codeName: 'IngressRequestRateLimitExceeded' });
    expect(refused[0]!.errorLabels).toEqual(expect.arrayContaining(['SystemOverloadedError', 'RetryableError']));
    expect(refused[0]!.message).toMatch(/^app 'rate' is over its limit of 5 operations per second \(limits.operations_per_second\); retry in \d+ ms$/);
    expect(typeof refused[0]!.errorResponse.baseBackoffMS).toBe('number');
    expect((await appEntry('rate')).refused).toBeGreaterThanOrEqual(9);

    // The bucket refills at the rate: a later command goes through.
    await expect.poll(async () => (await coll.findOne({}).then(() => 'ok', () => 'refused')), { timeout: 3000, interval: 100 }).toBe('ok');
  });

  it('a driver with backpressure retries (the default) rides out short bursts', async () => {
    const c = await client('paced', { monitorCommands: true });
    let overloaded = 0;
    c.on('commandFailed', (e) => {
      if ((e.failure as MongoServerError).code === 462) overloaded++;
    });
    const coll = c.db(db).collection('r2');
    // Nine sequential inserts as fast as possible: five fit the burst; for the others the driver backs
    // off (baseBackoffMS: when the next token is due) and retries, twice at most; an insert fails only
    // when both random backoffs come too early (about one in eight).
    let ok = 0;
    for (let i = 0; i < 9; i++) {
      await coll.insertOne({ i }).then(() => ok++, () => undefined);
    }
    expect(overloaded).toBeGreaterThan(0);
    expect(ok).toBeGreaterThanOrEqual(6);
  });

  it('PyMongo sees the code, the labels and the message', async () => {
    const script = [
      'import sys',
      'from pymongo import MongoClient',
      'from pymongo.errors import OperationFailure',
      'c = MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000, maxPoolSize=1, retryReads=False)',
      'coll = c[sys.argv[2]]["py"]',
      'for i in range(20):',
      '    try:',
      '        coll.find_one({})',
      '    except OperationFailure as e:',
      '        print("REFUSED", e.code, e.has_error_label("SystemOverloadedError"), e.details["codeName"])',
      '        break',
    ].join('\n');
    expect(await python(script, proxy.uri('rate'), db)).toContain('REFUSED 462 True IngressRequestRateLimitExceeded');
  });
});

describe('limits.max_document_bytes', () => {
  const big = 'x'.repeat(2000);

  it('refuses inserts and replacements of a larger document with BSONObjectTooLarge, writing nothing', async () => {
    const c = await client('sized');
    const coll = c.db(db).collection('s');
    await coll.insertOne({ _id: 'small', v: 1 } as never);
    let err = await failure(coll.insertOne({ blob: big }));
    expect(err).toMatchObject({ code: 10334, codeName: 'BSONObjectTooLarge' });
    expect(err.message).toMatch(/^object to insert too large\. size in bytes: \d+, max size: 1024 \(documents\.0; app 'sized' limits\.max_document_bytes\)/);
    // A batch with one oversize document is refused whole.
    err = await failure(coll.insertMany([{ ok: 1 }, { blob: big }]));
    expect(err.code).toBe(10334);
    err = await failure(coll.replaceOne({ _id: 'small' } as never, { blob: big }));
    expect(err.code).toBe(10334);
    err = await failure(coll.replaceOne({ _id: 'new' } as never, { blob: big }, { upsert: true }));
    expect(err.code).toBe(10334);
    err = await failure(coll.findOneAndReplace({ _id: 'small' } as never, { blob: big }));
    expect(err.code).toBe(10334);
    expect(await coll.find({}, { projection: { _id: 1 } }).toArray()).toEqual([{ _id: 'small' }]);
    // Operator updates are not measured (the server alone knows the result's size).
    await coll.updateOne({ _id: 'small' } as never, { $set: { v: 2 } });
    expect((await coll.findOne({ _id: 'small' } as never))?.v).toBe(2);
  });
});

describe('limits.max_documents_per_collection', () => {
  it('refuses inserts that would pass the limit, per collection, and follows deletes (approximately)', async () => {
    const c = await client('counted');
    const coll = c.db(db).collection('n');
    await coll.insertMany([{ i: 1 }, { i: 2 }, { i: 3 }]);
    const err = await failure(coll.insertMany([{ i: 4 }, { i: 5 }, { i: 6 }]));
    expect(err).toMatchObject({ code: 14031, codeName: 'OutOfDiskSpace' });
    expect(err.message).toContain("collection 'n' of app 'counted' holds about 3 documents and may hold at most 5 (limits.max_documents_per_collection)");
    await coll.insertMany([{ i: 4 }, { i: 5 }]);
    expect((await failure(coll.insertOne({ i: 6 }))).code).toBe(14031);
    expect(await coll.countDocuments()).toBe(5);
    // Another collection of the app has its own count.
    await c.db(db).collection('other').insertOne({ i: 1 });

    // Deleting makes room once the background count has seen it.
    await coll.deleteMany({ i: { $gt: 3 } });
    await expect.poll(async () => coll.insertOne({ i: 'after delete' }).then(() => 'ok', () => 'refused'), { timeout: 5000, interval: 100 }).toBe('ok');
    expect(await coll.countDocuments()).toBe(4);
  });
});

describe('data_access', () => {
  it('read_only: reads work, every write and index change is Unauthorized, and nothing changes', async () => {
    const seeded = physicalCollection(direct, sandboxOf(proxy, 'readonly'), 'items');
    await seeded.insertOne({ name: 'seed', [proxy.tagField]: 'readonly' });
    const c = await client('readonly');
    const coll = c.db(db).collection('items');
    expect(await coll.find({}, { projection: { _id: 0 } }).toArray()).toEqual([{ name: 'seed' }]);
    const writes: [string, () => Promise<unknown>][] = [
      ['insert', () => coll.insertOne({ name: 'x' })],
      ['update', () => coll.updateOne({}, { $set: { name: 'y' } })],
      ['delete', () => coll.deleteMany({})],
      ['findAndModify', () => coll.findOneAndDelete({})],
      ['createIndexes', () => coll.createIndex({ name: 1 })],
      ['drop', () => coll.drop()],
      ['create', () => c.db(db).createCollection('fresh')],
      ['aggregate $out', () => coll.aggregate([{ $out: 'copy' }]).toArray()],
    ];
    for (const [what, op] of writes) {
      const err = await failure(op());
      expect(err.code, what).toBe(13);
      expect(err.message, what).toContain("app 'readonly' is read-only (data_access.read_only)");
    }
    expect(await seeded.find({}, { projection: { _id: 0, name: 1 } }).toArray()).toEqual([{ name: 'seed' }]);
  });

  it('collections: the listed ones work, any other is Unauthorized wherever it is named, and listings show only the listed ones', async () => {
    await physicalCollection(direct, sandboxOf(proxy, 'narrow'), 'users').insertOne({ secret: 1, [proxy.tagField]: 'narrow' });
    const c = await client('narrow');
    const d = c.db(db);
    await d.collection('orders').insertOne({ o: 1 });
    expect(await d.collection('orders').countDocuments()).toBe(1);
    const refusals = [
      () => d.collection('users').find().toArray(),
      () => d.collection('users').insertOne({ u: 1 }),
      () => d.collection('orders').aggregate([{ $lookup: { from: 'users', localField: 'o', foreignField: 'u', as: 'x' } }]).toArray(),
      () => d.collection('orders').rename('archive'),
    ];
    for (const op of refusals) {
      const err = await failure(op());
      expect(err.code).toBe(13);
      expect(err.message).toContain("app 'narrow' may only use orders (data_access.collections)");
    }
    expect((await d.listCollections({}, { nameOnly: true }).toArray()).map((x) => x.name)).toEqual(['orders']);
  });

  it('a changed data_access applies to the next request of a connected client', async () => {
    const c = await client('narrow');
    const users = c.db(db).collection('users');
    expect((await failure(users.countDocuments())).code).toBe(13);
    await afterEdit(proxy.runtime.apps, () => writeManifest(proxy.configDir, 'narrow.yaml', dev('narrow', 'data_access: { collections: [orders, users] }\n')), (e) =>
      e.changed.includes('narrow'),
    );
    expect(await users.countDocuments()).toBe(1);
    await afterEdit(proxy.runtime.apps, () => writeManifest(proxy.configDir, 'narrow.yaml', dev('narrow', 'data_access: { read_only: true }\n')), (e) =>
      e.changed.includes('narrow'),
    );
    expect((await failure(users.insertOne({ u: 2 }))).code).toBe(13);
  });
});
