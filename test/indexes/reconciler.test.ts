import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient, type Document } from 'mongodb';
import {
  IndexReconciler,
  LEASE_COLLECTION,
  LeaseManager,
  UNSUPPORTED_COLLECTION,
  upstreamIdentity,
  type IndexDefaults,
  type LeaseDocument,
  type UnsupportedRecord,
} from '../../src/indexes/index.js';
import type { AppManifest } from '../../src/apps/manifests.js';
import { uniqueDb } from '../helpers/proxy.js';
import { WireRelay } from '../../src/testing/relay.js';
import { ConnectionHoldingRelay, appWith, captureLogger, idx, upstreamIndexes, waitFor, type CapturedLogger } from './helpers.js';

/**
 * The background reconciler on the real upstream: indexes built on the physical
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

function start(
  options: { client?: MongoClient; holderId?: string; defaults?: Partial<IndexDefaults>; db?: string; identifyUpstream?: () => Promise<string> } = {},
): Started {
  const log = captureLogger();
  const reconciler = new IndexReconciler({
    client: options.client ?? direct,
    database: options.db ?? database,
    tagField: TAG,
    logger: log.logger,
    defaults: { ...DEFAULTS, ...options.defaults },
    holderId: options.holderId ?? 'proxy-a',
    ...(options.identifyUpstream ? { identifyUpstream: options.identifyUpstream } : {}),
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

  it('sparse: built; on FerretDB, which drops the option, unsupported (logged once) and not rebuilt on every pass', async () => {
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
    expect(status).toMatchObject({
      action: 'unsupported',
      detail: 'the upstream accepted the index but does not list it as specified (sparse: manifest true, upstream absent)',
    });
    expect(status.error).toBeUndefined();
    const noticed = (l: Record<string, unknown>) => String(l.msg).startsWith('index built, but the upstream does not list it as specified');
    expect(log.lines.filter(noticed)).toHaveLength(1);
    const before = log.lines.length;
    reconciler.reconcileNow('sparse');
    await reconciler.idle();
    // Neither rebuilt (reconcile: replace would) nor reported again.
    expect(log.lines.slice(before).filter((l) => l.app_id === 'sparse' && Number(l.level) >= 30)).toEqual([]);
    expect(reconciler.stateOf('sparse').indexes[0]?.action).toBe('unsupported');
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
      // FerretDB refuses each of these (a wildcard it builds, but not its projection): each is unsupported
      // alone, with FerretDB's answer, and none is an error.
      const byName = Object.fromEntries(state.indexes.map((i) => [i.index, i]));
      const answers: Record<string, [number, string, string]> = {
        ttl: [238, 'NotImplemented', 'Index option "expireAfterSeconds" is not implemented yet'],
        open_due: [238, 'NotImplemented', 'Index option "partialFilterExpression" is not implemented yet'],
        name_ci: [238, 'NotImplemented', 'Index option "collation" is not implemented yet'],
        search: [27, 'IndexNotFound', `can't find index with key: { title: "text" }`],
        loc: [27, 'IndexNotFound', `can't find index with key: { loc: "2dsphere" }`],
        user_hashed: [27, 'IndexNotFound', `can't find index with key: { user: "hashed" }`],
        wild: [238, 'NotImplemented', 'Index option "wildcardProjection" is not implemented yet'],
      };
      for (const [name, [code, codeName, errmsg]] of Object.entries(answers)) {
        expect(byName[name], name).toMatchObject({ action: 'unsupported', reason: { code, codeName, errmsg } });
        expect(byName[name]!.detail, name).toBe(`the upstream cannot build this index: ${codeName} (${code}): ${errmsg}`);
        expect(byName[name]!.error, name).toBeUndefined();
      }
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

describe('indexes the upstream cannot build: unsupported, not an error', () => {
  const UNSUPPORTED = 'index not supported by the upstream; not built again until its spec, the upstream or the proxy changes';
  const TTL = idx('last_seen_1', [['last_seen', 1]], { expireAfterSeconds: 86400 });
  const PARTIAL = idx('open_due', [['due', 1]], { partialFilterExpression: { status: 'open' } });
  const PLAIN = idx('user_1', [['user', 1]]);
  /** Lines about this app at info or above (debug: the lease taken and released on every pass). */
  const said = (log: CapturedLogger, slug: string, from = 0) => log.lines.slice(from).filter((l) => l.app_id === slug && Number(l.level) >= 30);

  it('TTL and partial: unsupported with the upstream answer, logged once, not built again on the next passes; the others are built', async () => {
    const { reconciler, log } = start();
    const app = appWith('limits', { sessions: [TTL, PARTIAL, PLAIN] });
    await reconcile(reconciler, [app]);
    if (!ferret) {
      // A MongoDB builds them all.
      expect(rows(reconciler, 'limits').map(([, i, a]) => [i, a])).toEqual([
        ['last_seen_1', 'ok'],
        ['open_due', 'ok'],
        ['user_1', 'ok'],
      ]);
      return;
    }
    const state = reconciler.stateOf('limits');
    expect(state.phase).toBe('done');
    expect(state.indexes.map((i) => [i.index, i.action, i.reason?.code, i.reason?.codeName, i.reason?.errmsg])).toEqual([
      ['last_seen_1', 'unsupported', 238, 'NotImplemented', 'Index option "expireAfterSeconds" is not implemented yet'],
      ['open_due', 'unsupported', 238, 'NotImplemented', 'Index option "partialFilterExpression" is not implemented yet'],
      ['user_1', 'ok', undefined, undefined, undefined],
    ]);
    expect(state.indexes.every((i) => i.error === undefined)).toBe(true);
    expect(Object.keys(await upstreamIndexes(direct, database, 'limits_sessions')).sort()).toEqual(['_id_', 'user_1']);
    // One warning each, with the upstream's answer; never "index build failed".
    const found = log.lines.filter((l) => l.msg === UNSUPPORTED);
    expect(found.map((l) => [l.app_id, l.index, l.level, l.code, l.code_name])).toEqual([
      ['limits', 'last_seen_1', 40, 238, 'NotImplemented'],
      ['limits', 'open_due', 40, 238, 'NotImplemented'],
    ]);
    expect(found[0]!.upstream).toBe(await upstreamIdentity(direct.db(database)));
    expect(log.lines.filter((l) => l.msg === 'index build failed')).toEqual([]);
    // Kept in the upstream for the CLI and the other proxies.
    const kept = await direct.db(database).collection<UnsupportedRecord>(UNSUPPORTED_COLLECTION).find({ app: 'limits' }).sort({ index: 1 }).toArray();
    expect(kept.map((r) => [r.collection, r.index, r.reason?.code, r.foundBy])).toEqual([
      ['sessions', 'last_seen_1', 238, 'proxy-a'],
      ['sessions', 'open_due', 238, 'proxy-a'],
    ]);

    // The second and third passes build nothing and say nothing; the state stays.
    for (const pass of [2, 3]) {
      const from = log.lines.length;
      const lastRun = reconciler.stateOf('limits').lastRun!;
      reconciler.reconcileNow('limits');
      await reconciler.idle();
      expect(reconciler.stateOf('limits').lastRun, `pass ${pass} ran`).toBeGreaterThanOrEqual(lastRun);
      expect(said(log, 'limits', from), `pass ${pass}`).toEqual([]);
      expect(rows(reconciler, 'limits').map(([, i, a]) => [i, a])).toEqual([
        ['last_seen_1', 'unsupported'],
        ['open_due', 'unsupported'],
        ['user_1', 'ok'],
      ]);
    }
  });

  it("tried again when its spec changes (not when another index of the app changes), when the upstream's identity changes, and after a restart", async () => {
    let identity = 'upstream one';
    const { reconciler, log } = start({ identifyUpstream: () => Promise.resolve(identity) });
    const builds = (from: number) => log.lines.slice(from).filter((l) => l.msg === 'index build started').map((l) => l.index);
    await reconcile(reconciler, [appWith('retry', { t: [TTL, PLAIN] })]);
    if (!ferret) {
      expect(rows(reconciler, 'retry').map(([, , a]) => a)).toEqual(['ok', 'ok']);
      return;
    }
    expect(rows(reconciler, 'retry').map(([, , a]) => a)).toEqual(['unsupported', 'ok']);

    // Another index of the app added: built; the TTL index not tried again.
    let from = log.lines.length;
    const other = idx('other_1', [['other', 1]]);
    await reconcile(reconciler, [appWith('retry', { t: [TTL, PLAIN, other] })]);
    expect(builds(from)).toEqual(['other_1']);
    expect(rows(reconciler, 'retry').map(([, i, a]) => [i, a])).toEqual([
      ['last_seen_1', 'unsupported'],
      ['user_1', 'ok'],
      ['other_1', 'ok'],
    ]);

    // Its spec changed: tried again, and reported again (once).
    from = log.lines.length;
    const shorter = idx('last_seen_1', [['last_seen', 1]], { expireAfterSeconds: 3600 });
    await reconcile(reconciler, [appWith('retry', { t: [shorter, PLAIN, other] })]);
    expect(builds(from)).toEqual(['last_seen_1']);
    expect(log.lines.slice(from).filter((l) => l.msg === UNSUPPORTED).map((l) => l.index)).toEqual(['last_seen_1']);
    expect(rows(reconciler, 'retry')[0]![2]).toBe('unsupported');

    // The same upstream answers again: nothing; another one (a new version or topology): tried again.
    from = log.lines.length;
    reconciler.reconcileNow('retry');
    await reconciler.idle();
    expect(builds(from)).toEqual([]);
    identity = 'upstream two';
    reconciler.reconcileNow('retry');
    await reconciler.idle();
    expect(builds(from)).toEqual(['last_seen_1']);
    expect(log.lines.slice(from).filter((l) => l.msg === UNSUPPORTED).map((l) => l.upstream)).toEqual(['upstream two']);

    // A restarted proxy (a new reconciler) tries once, then keeps quiet like the first.
    await reconciler.stop();
    const restarted = start({ identifyUpstream: () => Promise.resolve(identity) });
    await reconcile(restarted.reconciler, [appWith('retry', { t: [shorter, PLAIN, other] })]);
    expect(restarted.log.lines.filter((l) => l.msg === 'index build started').map((l) => l.index)).toEqual(['last_seen_1']);
    expect(restarted.log.lines.filter((l) => l.msg === UNSUPPORTED)).toHaveLength(1);
    from = restarted.log.lines.length;
    restarted.reconciler.reconcileNow('retry');
    await restarted.reconciler.idle();
    expect(said(restarted.log, 'retry', from)).toEqual([]);
  });

  it('replace: a drifted index whose rebuild the upstream refuses is dropped once, then unsupported (not tried on every pass)', async () => {
    await direct.db(database).collection('rebuild_t').createIndex({ last_seen: 1 }, { name: 'last_seen_1' });
    const { reconciler, log } = start({ defaults: { reconcile: 'replace' } });
    await reconcile(reconciler, [appWith('rebuild', { t: [TTL] })]);
    const status = reconciler.stateOf('rebuild').indexes[0]!;
    if (!ferret) {
      expect(status.action).toBe('ok');
      expect(await upstreamIndexes(direct, database, 'rebuild_t')).toMatchObject({ last_seen_1: { expireAfterSeconds: 86400 } });
      return;
    }
    expect(status).toMatchObject({
      action: 'unsupported',
      detail: 'the drifted index was dropped and the upstream cannot build this index: NotImplemented (238): Index option "expireAfterSeconds" is not implemented yet',
      reason: { code: 238 },
    });
    expect(Object.keys(await upstreamIndexes(direct, database, 'rebuild_t'))).toEqual(['_id_']);
    const from = log.lines.length;
    reconciler.reconcileNow('rebuild');
    await reconciler.idle();
    expect(said(log, 'rebuild', from)).toEqual([]);
    expect(reconciler.stateOf('rebuild').indexes[0]?.action).toBe('unsupported');
  });

  it('a unique index over duplicates is still an error: tried, and reported, on every pass', async () => {
    const coll = direct.db(database).collection('dupkey_t');
    await coll.insertMany([{ e: 1, [TAG]: 'dupkey' }, { e: 1, [TAG]: 'dupkey' }]);
    const { reconciler, log } = start();
    await reconcile(reconciler, [appWith('dupkey', { t: [idx('e_1', [['e', 1]], { unique: true })] })]);
    for (const pass of [1, 2]) {
      const state = reconciler.stateOf('dupkey').indexes[0]!;
      expect(state, `pass ${pass}`).toMatchObject({ action: 'error', error: expect.stringMatching(/same values for this unique index/) });
      expect(state.reason).toBeUndefined();
      expect(log.lines.filter((l) => l.msg === 'index build failed'), `pass ${pass}`).toHaveLength(pass);
      if (pass === 1) {
        reconciler.reconcileNow('dupkey');
        await reconciler.idle();
      }
    }
    expect(log.lines.filter((l) => l.msg === UNSUPPORTED)).toEqual([]);
    expect(await direct.db(database).collection(UNSUPPORTED_COLLECTION).countDocuments({ app: 'dupkey' })).toBe(0);
  });

  it("a proxy waiting for another's lease shows the verdicts the holder kept", async () => {
    const app = appWith('shared', { t: [TTL, PLAIN] });
    const a = start({ holderId: 'proxy-a' });
    await reconcile(a.reconciler, [app]);
    // Another proxy holds the lease now: B cannot build, and shows what A found.
    const other = new LeaseManager({ db: direct.db(database), holderId: 'proxy-x', ttlMS: 10_000 });
    const held = await other.acquire('shared');
    if (!held.acquired) throw new Error('lease not acquired');
    cleanup.push(() => held.lease.release());
    const b = start({ holderId: 'proxy-b' });
    await reconcile(b.reconciler, [app]);
    expect(b.reconciler.stateOf('shared').phase).toBe('waiting-for-lease');
    expect(rows(b.reconciler, 'shared').map(([, i, act]) => [i, act])).toEqual(ferret ? [['last_seen_1', 'unsupported'], ['user_1', 'ok']] : [['last_seen_1', 'ok'], ['user_1', 'ok']]);
    if (ferret) expect(b.reconciler.stateOf('shared').indexes[0]!.reason).toMatchObject({ code: 238 });
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
