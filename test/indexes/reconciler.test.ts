import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient, type Document } from 'mongodb';
import { IndexReconciler, LEASE_COLLECTION, LeaseManager, type IndexDefaults, type LeaseDocument } from '../../src/indexes/index.js';
import type { AppManifest } from '../../src/apps/manifests.js';
import { uniqueDb } from '../helpers/proxy.js';
import { WireRelay } from '../helpers/relay.js';
import { ConnectionHoldingRelay, appWith, captureLogger, idx, upstreamIndexes, waitFor, type CapturedLogger } from './helpers.js';

/**
 * The background reconciler on the real upstream (issue 4 items 4 and 5): indexes built on the physical
 * collections, drift reported or replaced, prune, per-index failures, leases between reconcilers.
 * Every outcome is checked with listIndexes directly on the upstream.
 */

const upstreamUri = inject('upstreamUri');
const ferret = inject('upstreamIsFerretDB');
const TAG = 'app_id';
let direct: MongoClient;
let database: string;
const cleanup: (() => Promise<unknown> | unknown)[] = [];

beforeAll(async () => {
  direct = new MongoClient(upstreamUri, { serverSelectionTimeoutMS: 10_000 });
  await direct.connect();
  database = uniqueDb('indexes');
});
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});
afterAll(async () => {
  await direct.db(database).dropDatabase().catch(() => undefined);
  await direct.close();
});

const DEFAULTS: IndexDefaults = { reconcile: 'report', prune: false, intervalMS: 60_000, leaseTtlMS: 10_000 };

interface Started {
  reconciler: IndexReconciler;
  log: CapturedLogger;
}

function start(options: { client?: MongoClient; holderId?: string; defaults?: Partial<IndexDefaults>; db?: string } = {}): Started {
  const log = captureLogger();
  const reconciler = new IndexReconciler({
    client: options.client ?? direct,
    database: options.db ?? database,
    tagField: TAG,
    logger: log.logger,
    defaults: { ...DEFAULTS, ...options.defaults },
    holderId: options.holderId ?? 'proxy-a',
  });
  cleanup.push(() => reconciler.stop());
  return { reconciler, log };
}

/** Runs one pass for `apps` and waits for it. */
async function reconcile(r: IndexReconciler, apps: AppManifest[]): Promise<void> {
  r.update(apps);
  await r.idle();
}

async function relayedClient(): Promise<{ relay: WireRelay; client: MongoClient }> {
  const relay = await WireRelay.start(WireRelay.firstHost(upstreamUri));
  const client = new MongoClient(WireRelay.uriThrough(upstreamUri, relay.port), { serverSelectionTimeoutMS: 10_000 });
  await client.connect();
  cleanup.push(async () => {
    relay.release();
    await client.close();
    await relay.close();
  });
  return { relay, client };
}

function rows(r: IndexReconciler, slug: string): [string, string, string][] {
  return r.stateOf(slug).indexes.map((i) => [i.collection, i.index, i.action]);
}

describe('building indexes on the physical collections', () => {
  it('creates single, compound, unique and wildcard indexes on <slug>_<collection>, with the exact names, keys and options', async () => {
    const { reconciler, log } = start();
    const app = appWith('shop', {
      orders: [idx('by_status', [['status', 1]]), idx('status_sort', [['status', 1], ['created_at', -1]]), idx('ref', [['ref', 1]], { unique: true })],
      items: [idx('sku', [['sku', 1], ['shop', 1]], { unique: true }), idx('attrs', [['attrs.$**', 1]])],
    });
    await direct.db(database).collection('shop_items').insertOne({ sku: 'a', shop: 1, [TAG]: 'shop' });
    await reconcile(reconciler, [app]);

    expect(await upstreamIndexes(direct, database, 'shop_orders')).toEqual({
      _id_: { key: { _id: 1 } },
      by_status: { key: { status: 1 } },
      status_sort: { key: { status: 1, created_at: -1 } },
      ref: { key: { ref: 1 }, unique: true },
    });
    const items = await upstreamIndexes(direct, database, 'shop_items');
    expect(items).toEqual({ _id_: { key: { _id: 1 } }, sku: { key: { sku: 1, shop: 1 }, unique: true }, attrs: { key: { 'attrs.$**': 1 } } });
    expect(Object.keys(items.sku!.key as Document)).toEqual(['sku', 'shop']);
    // Nothing under the app's own names.
    const names = (await direct.db(database).listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name);
    expect(names.filter((n) => n === 'orders' || n === 'items')).toEqual([]);

    const state = reconciler.stateOf('shop');
    expect(state.phase).toBe('done');
    expect(state.lastRun).toBeTypeOf('number');
    expect(rows(reconciler, 'shop')).toEqual([
      ['orders', 'by_status', 'ok'],
      ['orders', 'status_sort', 'ok'],
      ['orders', 'ref', 'ok'],
      ['items', 'sku', 'ok'],
      ['items', 'attrs', 'ok'],
    ]);
    // Builds are logged with the app, start and finish.
    const builds = log.lines.filter((l) => l.msg === 'index build finished');
    expect(builds.map((l) => [l.app_id, l.physical_collection, l.index])).toEqual([
      ['shop', 'shop_orders', 'by_status'],
      ['shop', 'shop_orders', 'status_sort'],
      ['shop', 'shop_orders', 'ref'],
      ['shop', 'shop_items', 'sku'],
      ['shop', 'shop_items', 'attrs'],
    ]);
    expect(log.lines.filter((l) => l.msg === 'index build started')).toHaveLength(5);

    // A second pass finds everything in place and builds nothing.
    const before = log.lines.length;
    reconciler.reconcileNow('shop');
    await reconciler.idle();
    expect(log.lines.slice(before).filter((l) => l.msg === 'index build started')).toEqual([]);
    expect(rows(reconciler, 'shop').every(([, , action]) => action === 'ok')).toBe(true);
  });

  it('a unique index over duplicates fails alone: reported with its error, the other indexes are built, the app goes on', async () => {
    const { reconciler, log } = start();
    const coll = direct.db(database).collection('dups_people');
    await coll.insertMany([{ email: 'a@x', n: 1, [TAG]: 'dups' }, { email: 'a@x', n: 2, [TAG]: 'dups' }]);
    const app = appWith('dups', { people: [idx('email', [['email', 1]], { unique: true }), idx('n', [['n', 1]])], other: [idx('o', [['o', 1]])] });
    await reconcile(reconciler, [app]);

    expect(Object.keys(await upstreamIndexes(direct, database, 'dups_people')).sort()).toEqual(['_id_', 'n']);
    expect(Object.keys(await upstreamIndexes(direct, database, 'dups_other')).sort()).toEqual(['_id_', 'o']);
    const state = reconciler.stateOf('dups');
    expect(state.phase).toBe('done');
    const email = state.indexes.find((i) => i.index === 'email')!;
    expect(email).toMatchObject({ action: 'error', collection: 'people' });
    expect(email.error).toMatch(/same values for this unique index/);
    expect(rows(reconciler, 'dups').filter(([, i]) => i !== 'email').map(([, i, a]) => [i, a])).toEqual([
      ['n', 'ok'],
      ['o', 'ok'],
    ]);
    expect(log.lines.find((l) => l.msg === 'index build failed')).toMatchObject({ app_id: 'dups', index: 'email', level: 40 });

    // Once the duplicates are gone, the next pass builds it.
    await coll.deleteOne({ n: 2 });
    reconciler.reconcileNow('dups');
    await reconciler.idle();
    expect(await upstreamIndexes(direct, database, 'dups_people')).toMatchObject({ email: { key: { email: 1 }, unique: true } });
    expect(reconciler.stateOf('dups').indexes.find((i) => i.index === 'email')?.action).toBe('ok');
  });

  it('sparse: built; on FerretDB, which drops the option, reported as an error once and not rebuilt on every pass', async () => {
    const { reconciler, log } = start({ defaults: { reconcile: 'replace' } });
    const app = appWith('sparse', { t: [idx('s', [['s', 1]], { sparse: true })] });
    await reconcile(reconciler, [app]);
    const listed = await upstreamIndexes(direct, database, 'sparse_t');
    expect(listed.s?.key).toEqual({ s: 1 });
    const status = reconciler.stateOf('sparse').indexes[0]!;
    if (!ferret) {
      expect(listed.s).toEqual({ key: { s: 1 }, sparse: true });
      expect(status.action).toBe('ok');
      return;
    }
    expect(listed.s).toEqual({ key: { s: 1 } });
    expect(status).toMatchObject({ action: 'error', error: expect.stringContaining('sparse: manifest true, upstream absent') });
    const builds = log.lines.filter((l) => l.msg === 'index build started').length;
    reconciler.reconcileNow('sparse');
    await reconciler.idle();
    expect(log.lines.filter((l) => l.msg === 'index build started').length).toBe(builds);
    expect(reconciler.stateOf('sparse').indexes[0]?.action).toBe('error');
  });
});

describe('drift and prune', () => {
  it('drift (same name, other options) is reported under report and left alone; replace rebuilds it', async () => {
    const coll = direct.db(database).collection('drift_users');
    await coll.createIndex({ email: 1 }, { name: 'email' });
    await coll.createIndex({ a: 1, b: 1 }, { name: 'ab' });
    const managed = { users: [idx('email', [['email', 1]], { unique: true }), idx('ab', [['a', 1], ['b', -1]])] };
    const { reconciler, log } = start();
    await reconcile(reconciler, [appWith('drift', managed)]);
    expect(rows(reconciler, 'drift')).toEqual([
      ['users', 'email', 'drift'],
      ['users', 'ab', 'drift'],
    ]);
    const [email, ab] = reconciler.stateOf('drift').indexes;
    expect(email!.detail).toBe("unique: manifest true, upstream absent (reported only: reconcile is 'report')");
    expect(ab!.detail).toBe(`keys: manifest {"a":1,"b":-1}, upstream {"a":1,"b":1} (reported only: reconcile is 'report')`);
    expect(await upstreamIndexes(direct, database, 'drift_users')).toEqual({
      _id_: { key: { _id: 1 } },
      email: { key: { email: 1 } },
      ab: { key: { a: 1, b: 1 } },
    });
    expect(log.lines.filter((l) => l.msg === 'index drift').map((l) => [l.app_id, l.index])).toEqual([
      ['drift', 'email'],
      ['drift', 'ab'],
    ]);

    // The app's index_policy says replace (over the runtime default 'report'): rebuilt as the manifest says.
    reconciler.update([appWith('drift', managed, { reconcile: 'replace' })]);
    await reconciler.idle();
    expect(await upstreamIndexes(direct, database, 'drift_users')).toEqual({
      _id_: { key: { _id: 1 } },
      email: { key: { email: 1 }, unique: true },
      ab: { key: { a: 1, b: -1 } },
    });
    expect(rows(reconciler, 'drift')).toEqual([
      ['users', 'email', 'ok'],
      ['users', 'ab', 'ok'],
    ]);
    expect(log.lines.filter((l) => l.msg === 'index dropped').map((l) => [l.index, l.operation])).toEqual([
      ['email', 'replace'],
      ['ab', 'replace'],
    ]);
  });

  it('the runtime default applies when the manifest leaves the policy unset', async () => {
    const coll = direct.db(database).collection('dflt_t');
    await coll.createIndex({ k: 1 }, { name: 'k' });
    const { reconciler } = start({ defaults: { reconcile: 'replace' } });
    // No index_policy in the manifest: indexPolicy is {} and runtime.yaml's reconcile: replace applies.
    const app = appWith('dflt', { t: [idx('k', [['k', -1]])] });
    expect(app.indexPolicy).toEqual({});
    await reconcile(reconciler, [app]);
    expect(await upstreamIndexes(direct, database, 'dflt_t')).toMatchObject({ k: { key: { k: -1 } } });
  });

  it('an unmanaged index survives by default; prune: true drops it (never _id_)', async () => {
    const coll = direct.db(database).collection('prune_t');
    await coll.createIndex({ by_hand: 1 }, { name: 'by_hand' });
    const managed = { t: [idx('m', [['m', 1]])] };
    const { reconciler, log } = start();
    await reconcile(reconciler, [appWith('prune', managed)]);
    expect(Object.keys(await upstreamIndexes(direct, database, 'prune_t')).sort()).toEqual(['_id_', 'by_hand', 'm']);
    expect(rows(reconciler, 'prune')).toEqual([['t', 'm', 'ok']]);

    reconciler.update([appWith('prune', managed, { prune: true })]);
    await reconciler.idle();
    expect(Object.keys(await upstreamIndexes(direct, database, 'prune_t')).sort()).toEqual(['_id_', 'm']);
    expect(rows(reconciler, 'prune')).toEqual([['t', 'm', 'ok']]);
    expect(log.lines.filter((l) => l.msg === 'index dropped').map((l) => [l.app_id, l.index, l.operation])).toEqual([['prune', 'by_hand', 'drop']]);
  });
});

describe('index types FerretDB lacks: the exact createIndexes commands', () => {
  it('TTL, partial (scoped), collation, text with weights and default_language, 2dsphere, hashed, wildcard with projection', async () => {
    const { relay, client } = await relayedClient();
    const { reconciler } = start({ client });
    const app = appWith('kinds', {
      events: [
        idx('ttl', [['created_at', 1]], { expireAfterSeconds: 3600 }),
        idx('open_due', [['due', 1]], { partialFilterExpression: { status: 'open' } }),
        idx('name_ci', [['name', 1]], { collation: { locale: 'en', strength: 2 } }),
        idx('search', [['title', 'text'], ['body', 'text']], { weights: { title: 10 }, default_language: 'french' }),
        idx('loc', [['loc', '2dsphere']]),
        idx('user_hashed', [['user', 'hashed']]),
        idx('wild', [['$**', 1]], { wildcardProjection: { secret: 0 } }),
      ],
    });
    await reconcile(reconciler, [app]);

    const sent = relay.commands('createIndexes', { db: database }).map((m) => ({ createIndexes: m.body.createIndexes, indexes: m.body.indexes as Document[] }));
    expect(sent).toEqual([
      { createIndexes: 'kinds_events', indexes: [{ key: { created_at: 1 }, name: 'ttl', expireAfterSeconds: 3600 }] },
      { createIndexes: 'kinds_events', indexes: [{ key: { due: 1 }, name: 'open_due', partialFilterExpression: { status: 'open', app_id: 'kinds' } }] },
      { createIndexes: 'kinds_events', indexes: [{ key: { name: 1 }, name: 'name_ci', collation: { locale: 'en', strength: 2 } }] },
      { createIndexes: 'kinds_events', indexes: [{ key: { title: 'text', body: 'text' }, name: 'search', weights: { title: 10 }, default_language: 'french' }] },
      { createIndexes: 'kinds_events', indexes: [{ key: { loc: '2dsphere' }, name: 'loc' }] },
      { createIndexes: 'kinds_events', indexes: [{ key: { user: 'hashed' }, name: 'user_hashed' }] },
      { createIndexes: 'kinds_events', indexes: [{ key: { '$**': 1 }, name: 'wild', wildcardProjection: { secret: 0 } }] },
    ]);
    // Key order on the wire, not just in the decoded objects.
    expect(Object.keys(sent[3]!.indexes[0]!.key as Document)).toEqual(['title', 'body']);

    const state = reconciler.stateOf('kinds');
    expect(state.phase).toBe('done');
    if (ferret) {
      // FerretDB refuses each of these (a wildcard it builds, but not its projection); each fails alone.
      const byName = Object.fromEntries(state.indexes.map((i) => [i.index, i]));
      for (const name of ['ttl', 'open_due', 'name_ci', 'search', 'loc', 'user_hashed', 'wild']) {
        expect(byName[name], name).toMatchObject({ action: 'error', error: expect.stringMatching(/NotImplemented \(238\)|IndexNotFound \(27\)/) });
      }
      expect(byName.wild!.error).toContain('wildcardProjection');
    } else {
      // A real MongoDB builds them all, and lists them so that the next pass finds them in place.
      expect(rows(reconciler, 'kinds').map(([, i, a]) => [i, a])).toEqual(
        ['ttl', 'open_due', 'name_ci', 'search', 'loc', 'user_hashed', 'wild'].map((i) => [i, 'ok']),
      );
      const listed = await upstreamIndexes(direct, database, 'kinds_events');
      expect(listed.open_due).toMatchObject({ partialFilterExpression: { status: 'open', app_id: 'kinds' } });
      expect(listed.ttl).toMatchObject({ expireAfterSeconds: 3600 });
      expect(listed.search).toMatchObject({ weights: { title: 10, body: 1 }, default_language: 'french' });
    }
  });
});

describe('leases: one reconciler per app at a time', () => {
  it('while one reconciler builds (renewing its lease), the other waits for the lease; then it finds everything in place', async () => {
    // Only the connection carrying A's first build is held: A is mid-pass, its renewals go through.
    const relay = await ConnectionHoldingRelay.start(WireRelay.firstHost(upstreamUri), (body) => body.createIndexes === 'leased_t');
    const client = new MongoClient(WireRelay.uriThrough(upstreamUri, relay.port), { serverSelectionTimeoutMS: 10_000 });
    cleanup.push(async () => {
      relay.release();
      await client.close();
      await relay.close();
    });
    const a = start({ client, holderId: 'proxy-a', defaults: { leaseTtlMS: 1500 } });
    const b = start({ holderId: 'proxy-b', defaults: { leaseTtlMS: 1500 } });
    const app = appWith('leased', { t: [idx('one', [['one', 1]]), idx('two', [['two', 1]])] });

    a.reconciler.update([app]);
    await relay.held;
    expect(a.reconciler.stateOf('leased')).toMatchObject({ phase: 'reconciling', leaseHolder: 'proxy-a' });
    const leases = direct.db(database).collection<LeaseDocument>(LEASE_COLLECTION);
    const first = await leases.findOne({ _id: 'leased' });
    // Held for longer than the TTL: A's renewals keep it.
    await waitFor(async () => ((await leases.findOne({ _id: 'leased' }))?.renewedAt?.getTime() ?? 0) > first!.renewedAt!.getTime() + 1500, 'renewals past one TTL');

    b.reconciler.update([app]);
    await b.reconciler.idle();
    expect(b.reconciler.stateOf('leased')).toMatchObject({ phase: 'waiting-for-lease', leaseHolder: 'proxy-a' });
    expect(await direct.db(database).collection<LeaseDocument>(LEASE_COLLECTION).findOne({ _id: 'leased' })).toMatchObject({ holder: 'proxy-a' });
    expect(b.log.lines.find((l) => l.msg === 'index reconciliation: waiting for the lease held by another proxy')).toMatchObject({ app_id: 'leased', lease_holder: 'proxy-a' });

    relay.release();
    await a.reconciler.idle();
    expect(a.reconciler.stateOf('leased').phase).toBe('done');
    const lease = await direct.db(database).collection<LeaseDocument>(LEASE_COLLECTION).findOne({ _id: 'leased' });
    expect(lease).toMatchObject({ holder: 'proxy-a', expiresAt: new Date(0) }); // released

    b.reconciler.reconcileNow('leased');
    await b.reconciler.idle();
    expect(b.reconciler.stateOf('leased').phase).toBe('done');
    expect(rows(b.reconciler, 'leased').map(([, i, act]) => [i, act])).toEqual([
      ['one', 'ok'],
      ['two', 'ok'],
    ]);
    // Only A built; B took the (free) lease afterwards and found nothing to do.
    expect(a.log.lines.filter((l) => l.msg === 'index build finished').map((l) => l.index)).toEqual(['one', 'two']);
    expect(b.log.lines.filter((l) => l.msg === 'index build started')).toEqual([]);
  });

  it('a holder that died (never renews, never releases) is taken over once its lease_ttl_ms has passed', async () => {
    const ttl = 1500;
    const dead = new LeaseManager({ db: direct.db(database), holderId: 'proxy-dead', ttlMS: ttl });
    const taken = await dead.acquire('orphan');
    expect(taken.acquired).toBe(true);
    if (taken.acquired) taken.lease.abandon(); // what a killed process leaves behind
    const stored = await dead.current('orphan');

    const b = start({ holderId: 'proxy-b', defaults: { leaseTtlMS: ttl } });
    b.reconciler.update([appWith('orphan', { t: [idx('x', [['x', 1]])] })]);
    await b.reconciler.idle();
    expect(b.reconciler.stateOf('orphan')).toMatchObject({ phase: 'waiting-for-lease', leaseHolder: 'proxy-dead' });

    // Retried by itself when the dead holder's lease runs out.
    await waitFor(() => b.reconciler.stateOf('orphan').phase === 'done', 'the takeover', 10_000);
    const after = await b.reconciler.idle().then(() => dead.current('orphan'));
    expect(after).toMatchObject({ holder: 'proxy-b' });
    // Taken over only after the dead holder's expiry (upstream time of B's acquire >= that expiry).
    expect(after!.acquiredAt!.getTime()).toBeGreaterThanOrEqual(stored!.expiresAt.getTime() - 100);
    expect(await upstreamIndexes(direct, database, 'orphan_t')).toMatchObject({ x: { key: { x: 1 } } });
  });

  it('a holder that hangs mid-build loses its lease to the other; it stops, and its release does not free the new holder', async () => {
    const ttl = 1500;
    const { relay, client } = await relayedClient();
    const a = start({ client, holderId: 'proxy-a', defaults: { leaseTtlMS: ttl } });
    const b = start({ holderId: 'proxy-b', defaults: { leaseTtlMS: ttl } });
    const app = appWith('hang', { t: [idx('one', [['one', 1]]), idx('two', [['two', 1]]), idx('three', [['three', 1]])] });
    let holding = false;
    const held = new Promise<void>((resolve) =>
      relay.onMessage((m) => {
        if (!holding && m.command === 'createIndexes' && m.body.createIndexes === 'hang_t') {
          holding = true;
          relay.hold(); // A's build, and its lease renewals, get no answer: A hangs
          resolve();
        }
      }),
    );
    a.reconciler.update([app]);
    await held;
    b.reconciler.update([app]);
    await waitFor(() => b.reconciler.stateOf('hang').phase === 'done', "B's takeover", 10_000);
    expect(rows(b.reconciler, 'hang').map(([, i, act]) => [i, act])).toEqual([
      ['one', 'ok'],
      ['two', 'ok'],
      ['three', 'ok'],
    ]);

    // A wakes up: its lease is gone, so it builds nothing more and leaves B's lease record alone.
    const leaseBefore = await direct.db(database).collection<LeaseDocument>(LEASE_COLLECTION).findOne({ _id: 'hang' });
    relay.release();
    await a.reconciler.idle();
    expect(a.reconciler.stateOf('hang').phase).toBe('waiting-for-lease');
    expect(a.log.lines.filter((l) => l.msg === 'index build started').map((l) => l.index)).toEqual(['one']);
    expect(a.log.lines.find((l) => l.msg === 'index reconciliation lease lost; another proxy continues')).toMatchObject({ app_id: 'hang' });
    const leaseAfter = await direct.db(database).collection<LeaseDocument>(LEASE_COLLECTION).findOne({ _id: 'hang' });
    expect(leaseAfter).toEqual(leaseBefore);
    expect(leaseAfter).toMatchObject({ holder: 'proxy-b' });
  });

  it('stop() waits for the build in flight, starts no other, and releases the lease', async () => {
    const { relay, client } = await relayedClient();
    const a = start({ client, holderId: 'proxy-a' });
    const app = appWith('stopping', { t: [idx('one', [['one', 1]]), idx('two', [['two', 1]])] });
    let holding = false;
    const held = new Promise<void>((resolve) =>
      relay.onMessage((m) => {
        if (!holding && m.command === 'createIndexes' && m.body.createIndexes === 'stopping_t') {
          holding = true;
          relay.hold();
          resolve();
        }
      }),
    );
    a.reconciler.update([app]);
    await held;
    let stopped = false;
    const stopping = a.reconciler.stop().then(() => (stopped = true));
    // Still waiting for the held build (the reply is not back yet).
    await new Promise((r) => setImmediate(r));
    expect(stopped).toBe(false);
    relay.release();
    await stopping;
    expect(Object.keys(await upstreamIndexes(direct, database, 'stopping_t')).sort()).toEqual(['_id_', 'one']);
    expect(await direct.db(database).collection<LeaseDocument>(LEASE_COLLECTION).findOne({ _id: 'stopping' })).toMatchObject({
      holder: 'proxy-a',
      expiresAt: new Date(0),
    });
  });
});
