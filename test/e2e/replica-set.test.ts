import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Binary, Long, MongoClient, type ChangeStreamInsertDocument, type Document } from 'mongodb';
import { connect, startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { physicalCollection, readPhysical, sandboxOf, type Sandbox } from '../helpers/physical.js';
import { RawClient } from '../../src/testing/wire-client.js';

/**
 * What only a replica set (or a sharded cluster) can back: multi-document transactions, change streams
 * and retryable writes, through the proxy, with two apps side by side. FerretDB v1 (the default test
 * upstream) is a standalone without any of them, so this file runs only when MDB_TEST_UPSTREAM_URI names a
 * replica set or a mongos (README, "Against a real MongoDB"); on FerretDB it reports its tests as skipped.
 */

const upstreamUri = inject('upstreamUri');

async function upstreamTopology(): Promise<'replicaSet' | 'sharded' | 'standalone'> {
  const client = new MongoClient(upstreamUri, { serverSelectionTimeoutMS: 10_000 });
  try {
    const hello = await client.db('admin').command({ hello: 1 });
    if (typeof hello.setName === 'string') return 'replicaSet';
    return hello.msg === 'isdbgrid' ? 'sharded' : 'standalone';
  } finally {
    await client.close();
  }
}

const topology = inject('upstreamIsFerretDB') ? 'standalone' : await upstreamTopology();
const APPS = {
  'alpha.yaml': 'slug: alpha\nname: Alpha\nauth_required: false\n',
  'beta.yaml': 'slug: beta\nname: Beta\nauth_required: false\n',
};

describe.runIf(topology !== 'standalone')(`only a replica set or a sharded cluster runs these (upstream: ${topology})`, () => {
  let proxy: TestProxy;
  let alpha: MongoClient;
  let beta: MongoClient;
  let direct: MongoClient;
  let alphaBox: Sandbox;
  let betaBox: Sandbox;

  beforeAll(async () => {
    proxy = await startTestProxy({ apps: APPS });
    alpha = await connect(proxy.uri('alpha'));
    beta = await connect(proxy.uri('beta'));
    direct = await connect(upstreamUri);
    alphaBox = sandboxOf(proxy, 'alpha');
    betaBox = sandboxOf(proxy, 'beta');
  });

  afterAll(async () => {
    await Promise.all([alpha?.close(), beta?.close(), direct?.close()]);
    await proxy?.stop();
  });

  describe('transactions', () => {
    it('a committed transaction writes every document tagged, in the app only; an aborted one writes nothing', async () => {
      const accounts = alpha.db('bank').collection<{ _id: string; balance: number }>('accounts');
      await accounts.insertMany([
        { _id: 'a', balance: 100 },
        { _id: 'b', balance: 0 },
      ]);
      await beta.db('bank').collection<{ _id: string; balance: number }>('accounts').insertOne({ _id: 'a', balance: 7 });

      const session = alpha.startSession();
      try {
        await session.withTransaction(async () => {
          await accounts.updateOne({ _id: 'a' }, { $inc: { balance: -40 } }, { session });
          await accounts.updateOne({ _id: 'b' }, { $inc: { balance: 40 } }, { session });
          await alpha.db('bank').collection<{ _id: string; amount: number }>('ledger').insertOne({ _id: 'move-1', amount: 40 }, { session });
        });

        session.startTransaction();
        await accounts.updateOne({ _id: 'a' }, { $inc: { balance: -1000 } }, { session });
        await alpha.db('bank').collection<{ _id: string; amount: number }>('ledger').insertOne({ _id: 'move-2', amount: 1000 }, { session });
        // Inside the transaction its own writes are visible; outside they are not.
        expect(await accounts.findOne({ _id: 'a' }, { session })).toEqual({ _id: 'a', balance: -940 });
        expect(await accounts.findOne({ _id: 'a' })).toEqual({ _id: 'a', balance: 60 });
        await session.abortTransaction();
      } finally {
        await session.endSession();
      }

      expect(await accounts.find().sort({ _id: 1 }).toArray()).toEqual([
        { _id: 'a', balance: 60 },
        { _id: 'b', balance: 40 },
      ]);
      expect(await alpha.db('bank').collection<{ _id: string; amount: number }>('ledger').find().toArray()).toEqual([{ _id: 'move-1', amount: 40 }]);
      expect(await readPhysical(direct, alphaBox, 'ledger')).toEqual([{ _id: 'move-1', amount: 40 }]);
      expect(await readPhysical(direct, betaBox, 'accounts')).toEqual([{ _id: 'a', balance: 7 }]);
      expect(await readPhysical(direct, betaBox, 'ledger')).toEqual([]);
    });

    it("a transaction on the other app's session id stays in the app's own session", async () => {
      // Both apps use the same client-side session id: the proxy maps it per app, so beta's commit cannot
      // commit (or see) alpha's transaction.
      const id = new Binary(Buffer.from(randomUUID().replace(/-/g, ''), 'hex'), Binary.SUBTYPE_UUID);
      const rawAlpha = await RawClient.connect(proxy.port);
      const rawBeta = await RawClient.connect(proxy.port);
      try {
        await rawAlpha.command({ hello: 1, client: { application: { name: 'alpha' } }, $db: 'admin' });
        await rawBeta.command({ hello: 1, client: { application: { name: 'beta' } }, $db: 'admin' });
        const txn = { lsid: { id }, txnNumber: Long.fromNumber(1), autocommit: false };
        const insert = await rawAlpha.command({ insert: 'pending', documents: [{ _id: 1 }], startTransaction: true, ...txn, $db: 'bank' });
        expect(insert).toMatchObject({ ok: 1, n: 1 });
        const betaCommit = await rawBeta.command({ commitTransaction: 1, ...txn, $db: 'admin' });
        expect(betaCommit.ok).toBe(0);
        expect(await readPhysical(direct, alphaBox, 'pending')).toEqual([]);
        const commit = await rawAlpha.command({ commitTransaction: 1, ...txn, $db: 'admin' });
        expect(commit).toMatchObject({ ok: 1 });
        expect(await readPhysical(direct, alphaBox, 'pending')).toEqual([{ _id: 1 }]);
      } finally {
        rawAlpha.socket.destroy();
        rawBeta.socket.destroy();
      }
    });
  });

  describe('change streams', () => {
    it("a collection's change stream shows the app's own events, in its own names, the tag hidden", async () => {
      const feed = alpha.db('live').collection<{ _id: string; text?: string }>('feed');
      await feed.insertOne({ _id: 'warm-up' });
      const stream = feed.watch([], { fullDocument: 'updateLookup' });
      try {
        // tryNext runs the aggregate that opens the stream upstream: later writes are in it.
        expect(await stream.tryNext()).toBeNull();
        await beta.db('live').collection<{ _id: string; secret: string }>('feed').insertOne({ _id: 'beta-1', secret: 'beta' });
        await feed.insertOne({ _id: 'alpha-1', text: 'hello' });
        await feed.updateOne({ _id: 'alpha-1' }, { $set: { text: 'hi' } });
        const first = (await stream.next()) as ChangeStreamInsertDocument<Document>;
        expect(first.operationType).toBe('insert');
        expect(first.ns).toEqual({ db: 'live', coll: 'feed' });
        expect(first.documentKey).toEqual({ _id: 'alpha-1' });
        expect(first.fullDocument).toEqual({ _id: 'alpha-1', text: 'hello' });
        const second = await stream.next();
        expect(second.operationType).toBe('update');
        if (second.operationType === 'update') {
          expect(second.fullDocument).toEqual({ _id: 'alpha-1', text: 'hi' });
          expect(second.updateDescription.updatedFields).toEqual({ text: 'hi' });
        }
        expect(JSON.stringify([first, second])).not.toContain(proxy.database);
      } finally {
        await stream.close();
      }
    });

    it('a database-wide or cluster-wide change stream is refused (it would read every app)', async () => {
      await expect(alpha.db('live').watch().next()).rejects.toMatchObject({ code: 13 });
      await expect(alpha.watch().next()).rejects.toMatchObject({ code: 13 });
    });
  });

  describe('retryable writes', () => {
    it('a retried write (same session and txnNumber) is applied once', async () => {
      const id = new Binary(Buffer.from(randomUUID().replace(/-/g, ''), 'hex'), Binary.SUBTYPE_UUID);
      const raw = await RawClient.connect(proxy.port);
      try {
        await raw.command({ hello: 1, client: { application: { name: 'alpha' } }, $db: 'admin' });
        const retryable = { lsid: { id }, txnNumber: Long.fromNumber(1) };
        const inc = { update: 'counters', updates: [{ q: { _id: 'c' }, u: { $inc: { n: 1 } }, upsert: true }], ...retryable, $db: 'app' };
        const first = await raw.command(inc);
        const retry = await raw.command(inc);
        expect(first).toMatchObject({ ok: 1, n: 1 });
        expect(retry).toMatchObject({ ok: 1, n: 1 });
        expect(await readPhysical(direct, alphaBox, 'counters')).toEqual([{ _id: 'c', n: 1 }]);

        const insert = { insert: 'once', documents: [{ _id: 'x' }], ...retryable, txnNumber: Long.fromNumber(2), $db: 'app' };
        expect(await raw.command(insert)).toMatchObject({ ok: 1, n: 1 });
        const again = await raw.command(insert);
        expect(again).toMatchObject({ ok: 1, n: 1 });
        expect(again.writeErrors).toBeUndefined();
        expect(await physicalCollection(direct, alphaBox, 'once').countDocuments()).toBe(1);
      } finally {
        raw.socket.destroy();
      }
    });

    it('the driver keeps retryable writes on and every write lands once', async () => {
      const coll = alpha.db('app').collection<{ _id: number; n: number }>('retried');
      await coll.insertOne({ _id: 1, n: 0 });
      for (let i = 0; i < 20; i++) await coll.updateOne({ _id: 1 }, { $inc: { n: 1 } });
      expect(await coll.findOne({ _id: 1 })).toEqual({ _id: 1, n: 20 });
      expect(await readPhysical(direct, alphaBox, 'retried')).toEqual([{ _id: 1, n: 20 }]);
    });
  });
});
