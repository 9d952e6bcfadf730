import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BSONRegExp, type Binary, type Document } from 'bson';
import type { RawClient } from '../../src/testing/wire-client.js';
import { startTestProxy } from '../helpers/proxy.js';
import {
  ALPHA_DB,
  BETA_DB,
  IsolationWorld,
  PyAttacker,
  command,
  expectError,
  firstBatch,
  outcome,
  token,
  type Loose,
  type Reply,
} from './isolation-fixture.js';

/**
 * Isolation, part 2: reads and names. App `alpha` tries to read or reach beta's data through filters on
 * the tag, physical and colliding collection names, every namespace-bearing field of every command and
 * stage, other databases, collection UUIDs, and the listings (listCollections, listIndexes) and error
 * messages that could name beta's collections. Stages FerretDB lacks ($lookup, $graphLookup,
 * $unionWith, $facet, $out, $merge, views) are checked on the exact command the proxy sends upstream,
 * and end to end when MDB_TEST_UPSTREAM_URI is a real MongoDB.
 */

let w: IsolationWorld;
let raw: RawClient;
let betaShared: Binary;

beforeAll(async () => {
  w = await IsolationWorld.start();
  raw = await w.raw('alpha');
  betaShared = await w.betaUuid('shared');
  w.py = new PyAttacker(w.plainUri('alpha', await token('alpha')), ALPHA_DB);
});

afterAll(async () => {
  await w?.close();
});

const ALPHA_SHARED = [
  { _id: 1, mine: 'alpha-1', n: 1 },
  { _id: 2, mine: 'alpha-2', n: 2 },
  { _id: 3, mine: 'alpha-3', n: 3 },
];

/** A find as alpha through the Node driver (documents in _id order). */
function nodeFind(filter: Document, coll = 'shared', db = ALPHA_DB): Promise<Document[]> {
  return w.alpha.db(db).collection<Loose>(coll).find(filter).sort({ _id: 1 }).toArray();
}

/** Runs a raw aggregate as alpha with a unique comment, so the command sent upstream can be found. */
function aggregate(pipeline: Document[], comment: string, coll = 'shared'): Promise<Reply> {
  return command(raw, { aggregate: coll, pipeline, cursor: {}, comment, $db: ALPHA_DB });
}

const TAG = { $match: { app_id: 'alpha' } };
const HIDE = { $unset: 'app_id' };
const STAMP = { $set: { app_id: { $literal: 'alpha' } } };

/** A stage FerretDB lacks: on FerretDB the upstream's error comes back; on MongoDB the result is alpha's only. */
function expectUpstreamOutcome(reply: Reply, onMongo: (reply: Reply) => void): void {
  w.expectNoLeak(reply);
  if (w.ferret) expect(reply.ok).toBe(0);
  else onMongo(reply);
}

describe("filters that try to match beta's tag", () => {
  const filters: [string, Document][] = [
    ["beta's tag", { app_id: 'beta' }],
    ['$nor of alpha\'s tag', { $nor: [{ app_id: 'alpha' }] }],
    ['$exists: false on the tag', { app_id: { $exists: false } }],
    ['$ne of alpha\'s tag', { app_id: { $ne: 'alpha' } }],
    ['$not of a regex matching alpha', { app_id: { $not: /^alpha$/ } }],
  ];
  it.each(filters)('find with %s: nothing', async (_what, filter) => {
    const docs = await nodeFind(filter);
    expect(docs).toEqual([]);
    await w.expectBetaUnchanged();
  });

  const widening: [string, Document][] = [
    ['$or of both tags', { $or: [{ app_id: 'beta' }, { app_id: 'alpha' }] }],
    ['$in with both slugs', { app_id: { $in: ['alpha', 'beta'] } }],
    ['a regex matching both slugs', { app_id: new BSONRegExp('^(alpha|beta)$') }],
    ['$gt the empty string', { app_id: { $gt: '' } }],
    ['$or with an always-true branch', { $or: [{ app_id: 'beta' }, { _id: { $exists: true } }] }],
  ];
  it("find with $expr comparing the tag with alpha's: nothing (FerretDB: its own error)", async () => {
    const reply = await command(raw, { find: 'shared', filter: { $expr: { $ne: ['$app_id', 'alpha'] } }, $db: ALPHA_DB });
    w.expectNoLeak(reply);
    if (reply.ok === 1 || !w.ferret) expect(firstBatch(reply)).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it.each(widening)("find with %s: alpha's own documents only, the tag hidden", async (_what, filter) => {
    const docs = await nodeFind(filter);
    expect(docs).toEqual(ALPHA_SHARED);
    w.expectNoLeak(docs);
    await w.expectBetaUnchanged();
  });

  it("count with beta's tag: 0; without a filter: alpha's 3", async () => {
    expect(await command(raw, { count: 'shared', query: { app_id: 'beta' }, $db: ALPHA_DB })).toMatchObject({ ok: 1, n: 0 });
    expect(await command(raw, { count: 'shared', $db: ALPHA_DB })).toMatchObject({ ok: 1, n: 3 });
    await w.expectBetaUnchanged();
  });

  it("distinct of beta's field over both tags: empty", async () => {
    const reply = await command(raw, { distinct: 'shared', key: 'secret', query: { app_id: { $in: ['alpha', 'beta'] } }, $db: ALPHA_DB });
    expect(reply).toMatchObject({ ok: 1, values: [] });
    await w.expectBetaUnchanged();
  });

  it('aggregate $match on both tags: nothing (the tag is invisible past the point documents enter)', async () => {
    const reply = await aggregate([{ $match: { $or: [{ app_id: 'beta' }, { app_id: 'alpha' }] } }], 'iso-match-tags');
    expect(firstBatch(reply)).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("aggregate grouping by the tag: one group (null) of alpha's 3", async () => {
    const reply = await aggregate([{ $group: { _id: '$app_id', n: { $sum: 1 } } }], 'iso-group');
    expect(firstBatch(reply)).toEqual([{ _id: null, n: 3 }]);
    await w.expectBetaUnchanged();
  });

  it('find projecting the tag and beta\'s field: neither comes back', async () => {
    const reply = await command(raw, { find: 'shared', filter: {}, projection: { app_id: 1, secret: 1 }, $db: ALPHA_DB });
    expect(firstBatch(reply)).toEqual([{ _id: 1 }, { _id: 2 }, { _id: 3 }]);
    await w.expectBetaUnchanged();
  });

  it("deleteMany with beta's tag: deletes nothing", async () => {
    expect(await outcome(w.alphaDb.collection('shared').deleteMany({ app_id: 'beta' }))).toMatchObject({ ok: 1, result: { deletedCount: 0 } });
    await w.expectBetaUnchanged();
  });

  it("updateMany with beta's tag in the filter: matches nothing", async () => {
    const reply = await outcome(w.alphaDb.collection('shared').updateMany({ app_id: 'beta' }, { $set: { pwned: true } }));
    expect(reply).toMatchObject({ ok: 1, result: { matchedCount: 0, modifiedCount: 0 } });
    await w.expectBetaUnchanged();
  });

  it("PyMongo find with $or on beta's tag: alpha's documents only", async () => {
    const out = await w.py!.run("find with $or on beta's tag");
    expect(out.ok).toBe(true);
    expect(out.result).toEqual(ALPHA_SHARED);
    w.expectNoLeak(out.raw);
    await w.expectBetaUnchanged();
  });

  it("PyMongo count_documents with beta's tag: 0", async () => {
    expect(await w.py!.run("count_documents with beta's tag")).toMatchObject({ ok: true, result: 0 });
    await w.expectBetaUnchanged();
  });

  it("PyMongo distinct of beta's field: empty", async () => {
    expect(await w.py!.run('distinct over the shared name')).toMatchObject({ ok: true, result: [] });
    await w.expectBetaUnchanged();
  });
});

describe('listCollections and listIndexes', () => {
  async function alphaNames(db = ALPHA_DB, filter: Document = {}): Promise<string[]> {
    return (await w.alpha.db(db).listCollections(filter, { nameOnly: true }).toArray()).map((c) => c.name).sort();
  }

  it("Node driver listCollections: alpha's names only, each one alpha's physical collection", async () => {
    const infos = await w.alpha.db(ALPHA_DB).listCollections().toArray();
    const names = infos.map((c) => c.name).sort();
    expect(names).toEqual(['notes', 'shared', 'victim']);
    const uuids = infos.map((c) => (c as Document).info?.uuid as Binary | undefined).filter((u) => u !== undefined);
    for (const u of uuids) expect(Buffer.from(u.buffer).equals(Buffer.from(betaShared.buffer))).toBe(false);
    w.expectNoLeak(infos);
    await w.expectBetaUnchanged();
  });

  it("listCollections for the name of beta's collection that looks like alpha's physical 'notes': nothing", async () => {
    expect(await alphaNames(ALPHA_DB, { name: 'alpha_notes' })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("listCollections with a regex matching beta's names: alpha's own match only", async () => {
    expect(await alphaNames(ALPHA_DB, { name: /notes|^beta|^alpha_/ })).toEqual(['notes']);
    await w.expectBetaUnchanged();
  });

  it("listCollections with $in over beta's logical and physical names: alpha's 'shared' only", async () => {
    expect(await alphaNames(ALPHA_DB, { name: { $in: ['shared', 'beta_shared', 'alpha_notes', 'beta_alpha_notes'] } })).toEqual(['shared']);
    await w.expectBetaUnchanged();
  });

  it("listCollections with $expr comparing the name to beta's physical one: nothing (the proxy evaluates it)", async () => {
    const reply = await command(raw, { listCollections: 1, filter: { $expr: { $eq: ['$name', 'beta_shared'] } }, $db: ALPHA_DB });
    w.expectNoLeak(reply, ['beta_shared']);
    expect(firstBatch(reply)).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("listCollections with name conditions nested in $or: alpha's own match only", async () => {
    const reply = await command(raw, { listCollections: 1, filter: { $or: [{ name: 'beta_shared' }, { name: 'shared' }] }, $db: ALPHA_DB });
    expect(firstBatch(reply).map((c) => c.name)).toEqual(['shared']);
    w.expectNoLeak(reply, ['beta_shared']);
    await w.expectBetaUnchanged();
  });

  it('listCollections with a name regex that does not compile: the server\'s 51091, not an internal error', async () => {
    const reply = await command(raw, { listCollections: 1, filter: { name: { $regex: '(beta' } }, $db: ALPHA_DB });
    expectError(reply, 51091);
    w.expectNoLeak(reply);
    expect(await command(raw, { ping: 1, $db: 'admin' })).toEqual({ ok: 1 });
    await w.expectBetaUnchanged();
  });

  it.each(['admin', BETA_DB, 'local'])("listCollections on $db %s: alpha's names only", async (db) => {
    expect(await alphaNames(db)).toEqual(['notes', 'shared', 'victim']);
    await w.expectBetaUnchanged();
  });

  it("PyMongo list_collection_names: alpha's names only", async () => {
    const out = await w.py!.run('list_collection_names');
    expect(out.ok).toBe(true);
    expect([...(out.result as string[])].sort()).toEqual(['notes', 'shared', 'victim']);
    await w.expectBetaUnchanged();
  });

  it("listIndexes of the shared name: alpha's indexes only, namespaces mapped back", async () => {
    const reply = await command(raw, { listIndexes: 'shared', cursor: {}, $db: ALPHA_DB });
    const indexes = firstBatch(reply);
    expect(indexes.map((i) => i.name)).toEqual(['_id_']);
    expect((reply.cursor as Document).ns).toBe(`${ALPHA_DB}.shared`);
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });

  it.each(['beta_shared', 'alpha_notes'])('listIndexes of %s (beta\'s names): NamespaceNotFound (26), no physical name', async (coll) => {
    const reply = await command(raw, { listIndexes: coll, cursor: {}, $db: ALPHA_DB });
    expectError(reply, 26);
    expect(reply.errmsg).toContain(`${ALPHA_DB}.${coll}`);
    w.expectNoLeak(reply, [coll]);
    await w.expectBetaUnchanged();
  });
});

describe('physical and colliding collection names', () => {
  const names: [string, string][] = [
    ["beta's physical name", 'beta_shared'],
    ["beta's collection named like alpha's physical 'notes'", 'alpha_notes'],
    ['alpha_../beta_shared', 'alpha_../beta_shared'],
    ['../beta_shared', '../beta_shared'],
    ['the physical database and collection', 'PHYS.beta_shared'],
  ];
  it.each(names)('find on %s: nothing of beta\'s', async (_what, name) => {
    const coll = name.replace('PHYS', w.phys);
    const reply = await command(raw, { find: coll, filter: {}, $db: ALPHA_DB });
    w.expectNoLeak(reply, [w.phys, 'beta_shared']);
    if (reply.ok === 1) expect(firstBatch(reply)).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("writing alpha's 'notes' (physical alpha_notes) leaves beta's 'alpha_notes' (physical beta_alpha_notes) alone", async () => {
    await w.alphaDb.collection<Loose>('notes').updateOne({ _id: 'a1' }, { $set: { mine: 'alpha-note-2' } });
    await w.alphaDb.collection<Loose>('alpha_notes').insertOne({ _id: 'n1', mine: 'same id as beta' });
    expect(await w.direct.db(w.phys).collection<Loose>('alpha_alpha_notes').find().toArray()).toEqual([{ _id: 'n1', mine: 'same id as beta', app_id: 'alpha' }]);
    await w.expectBetaUnchanged();
  });

  it("a third app whose slug would make prefixes collide ('alpha_notes'): the proxy refuses to start", async () => {
    const err = await startTestProxy({
      apps: { 'alpha.yaml': 'slug: alpha\nauth_required: false\n', 'alpha_notes.yaml': 'slug: alpha_notes\nauth_required: false\n' },
    }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toMatch(/slug: 'alpha(_notes)?' conflicts with/);
    await w.expectBetaUnchanged();
  });

  const invalid: [string, string][] = [
    ['system.views', 'system.views'],
    ['system.users', 'system.users'],
    ['system.js', 'system.js'],
    ['system.profile', 'system.profile'],
    ['system.buckets.shared', 'system.buckets.shared'],
    ['$cmd', '$cmd'],
    ['$cmd.sys.inprog', '$cmd.sys.inprog'],
    ['a name with a $', 'shared$beta'],
    ['a name with a NUL byte', 'shared\0beta_shared'],
    ['the empty name', ''],
    ['a 300-byte name', 'x'.repeat(300)],
  ];
  it.each(invalid)('find on %s: InvalidNamespace (73)', async (_what, coll) => {
    const reply = await command(raw, { find: coll, filter: {}, $db: ALPHA_DB });
    expectError(reply, 73, 'InvalidNamespace');
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });

  it("find naming beta's collection by its UUID: InvalidNamespace (73)", async () => {
    const reply = await command(raw, { find: betaShared, filter: {}, $db: ALPHA_DB });
    expectError(reply, 73, 'InvalidNamespace');
    await w.expectBetaUnchanged();
  });

  it("aggregate naming beta's collection by its UUID: Unauthorized (13)", async () => {
    const reply = await command(raw, { aggregate: betaShared, pipeline: [], cursor: {}, $db: ALPHA_DB });
    expectError(reply, 13, 'Unauthorized');
    await w.expectBetaUnchanged();
  });

  it("count and listIndexes naming beta's collection by its UUID: InvalidNamespace (73)", async () => {
    expectError(await command(raw, { count: betaShared, $db: ALPHA_DB }), 73);
    expectError(await command(raw, { listIndexes: betaShared, $db: ALPHA_DB }), 73);
    await w.expectBetaUnchanged();
  });

  it("find with collectionUUID set to beta's UUID: Unauthorized (13)", async () => {
    const reply = await command(raw, { find: 'shared', collectionUUID: betaShared, $db: ALPHA_DB });
    expectError(reply, 13, 'Unauthorized');
    await w.expectBetaUnchanged();
  });
});

describe('cross-database targets and $db tricks', () => {
  const refused: [string, Document, number][] = [
    ['admin.system.users', { find: 'system.users', $db: 'admin' }, 73],
    ['config.system.sessions', { find: 'system.sessions', $db: 'config' }, 73],
    ['$db $external', { find: 'shared', $db: '$external' }, 73],
    ["$db naming beta's namespace (betadb.shared)", { find: 'shared', $db: `${BETA_DB}.shared` }, 73],
    ['$db with a NUL byte', { find: 'shared', $db: `${BETA_DB}\0` }, 73],
  ];
  it.each(refused)('find on %s: refused', async (_what, cmd, code) => {
    const reply = await command(raw, { ...cmd, filter: {} });
    expectError(reply, code);
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });

  it.each(['admin', 'local', 'config', BETA_DB])("find 'shared' with $db %s: alpha's own documents", async (db) => {
    expect(await nodeFind({}, 'shared', db)).toEqual(ALPHA_SHARED);
    await w.expectBetaUnchanged();
  });

  it.each([
    ['local', 'oplog.rs'],
    ['config', 'chunks'],
    ['admin', 'users'],
  ])('find on %s.%s: an empty collection of alpha\'s', async (db, coll) => {
    const reply = await command(raw, { find: coll, filter: {}, $db: db });
    expect(firstBatch(reply)).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("find 'beta_shared' with $db set to the physical database: nothing", async () => {
    const reply = await command(raw, { find: 'beta_shared', filter: {}, $db: w.phys });
    expect(firstBatch(reply)).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it('a command without $db: 40571, nothing sent upstream', async () => {
    const reply = await command(raw, { find: 'shared', filter: {}, comment: 'iso-no-db' });
    expectError(reply, 40571);
    expect(w.countUpstream('iso-no-db')).toBe(0);
    await w.expectBetaUnchanged();
  });

  it("PyMongo find through beta's logical database: alpha's own documents", async () => {
    const out = await w.py!.run("find through beta's logical database");
    expect(out).toMatchObject({ ok: true, result: ALPHA_SHARED });
    await w.expectBetaUnchanged();
  });

  it("PyMongo find on beta's physical name: nothing", async () => {
    expect(await w.py!.run("find on beta's physical name")).toMatchObject({ ok: true, result: [] });
    await w.expectBetaUnchanged();
  });

  it('PyMongo find_one on system.users: InvalidNamespace', async () => {
    expect(await w.py!.run('find_one on system.users')).toMatchObject({ ok: false, code: 73 });
    await w.expectBetaUnchanged();
  });
});

describe('every namespace-bearing field of the aggregation stages', () => {
  it("$lookup.from beta's physical name (equality form): mapped into alpha's space, the joined side scoped", async () => {
    const reply = await aggregate([{ $lookup: { from: 'beta_shared', localField: '_id', foreignField: '_id', as: 'j' } }], 'iso-lookup-eq');
    expect(w.sentUpstream('iso-lookup-eq').body.pipeline).toEqual([
      TAG,
      HIDE,
      { $lookup: { from: 'alpha_beta_shared', localField: '_id', foreignField: '_id', as: 'j', pipeline: [TAG, HIDE] } },
    ]);
    expectUpstreamOutcome(reply, (r) => expect(firstBatch(r).map((d) => d.j)).toEqual([[], [], []]));
    await w.expectBetaUnchanged();
  });

  it("$lookup.from {db: beta's database, coll}: Unauthorized (13), nothing sent upstream", async () => {
    const reply = await aggregate([{ $lookup: { from: { db: BETA_DB, coll: 'shared' }, pipeline: [], as: 'j' } }], 'iso-lookup-db');
    expectError(reply, 13, 'Unauthorized');
    expect(w.countUpstream('iso-lookup-db')).toBe(0);
    await w.expectBetaUnchanged();
  });

  it("$lookup.from {db: alpha's database, coll: 'shared'}: alpha's own shared", async () => {
    const reply = await aggregate([{ $lookup: { from: { db: ALPHA_DB, coll: 'shared' }, pipeline: [{ $match: { app_id: 'beta' } }], as: 'j' } }], 'iso-lookup-same');
    expect(w.sentUpstream('iso-lookup-same').body.pipeline).toEqual([
      TAG,
      HIDE,
      { $lookup: { from: 'alpha_shared', pipeline: [TAG, HIDE, { $match: { app_id: 'beta' } }], as: 'j' } },
    ]);
    expectUpstreamOutcome(reply, (r) => expect(firstBatch(r).map((d) => d.j)).toEqual([[], [], []]));
    await w.expectBetaUnchanged();
  });

  it('$lookup nested inside a $lookup sub-pipeline: both levels mapped and scoped', async () => {
    const inner = { $lookup: { from: 'beta_shared', pipeline: [], as: 'k' } };
    const reply = await aggregate([{ $lookup: { from: 'notes', pipeline: [inner], as: 'j' } }], 'iso-lookup-nested');
    expect(w.sentUpstream('iso-lookup-nested').body.pipeline).toEqual([
      TAG,
      HIDE,
      { $lookup: { from: 'alpha_notes', pipeline: [TAG, HIDE, { $lookup: { from: 'alpha_beta_shared', pipeline: [TAG, HIDE], as: 'k' } }], as: 'j' } },
    ]);
    expectUpstreamOutcome(reply, (r) => expect(firstBatch(r)).toHaveLength(3));
    await w.expectBetaUnchanged();
  });

  it("$graphLookup.from beta's physical name: mapped, its search restricted to alpha's tag", async () => {
    const stage = { $graphLookup: { from: 'beta_shared', startWith: '$n', connectFromField: 'n', connectToField: 'n', as: 'g' } };
    const reply = await aggregate([stage], 'iso-graph');
    expect(w.sentUpstream('iso-graph').body.pipeline).toEqual([
      TAG,
      HIDE,
      { $graphLookup: { ...stage.$graphLookup, from: 'alpha_beta_shared', restrictSearchWithMatch: { app_id: 'alpha' } } },
      { $unset: 'g.app_id' },
    ]);
    expectUpstreamOutcome(reply, (r) => expect(firstBatch(r).map((d) => d.g)).toEqual([[], [], []]));
    await w.expectBetaUnchanged();
  });

  it("$graphLookup restricted to beta's tag: ANDed with alpha's", async () => {
    const stage = { $graphLookup: { from: 'shared', startWith: '$n', connectFromField: 'n', connectToField: 'n', as: 'g', restrictSearchWithMatch: { app_id: 'beta' } } };
    const reply = await aggregate([stage], 'iso-graph-restrict');
    const sent = w.sentUpstream('iso-graph-restrict').body.pipeline as Document[];
    expect(sent[2]).toEqual({ $graphLookup: { ...stage.$graphLookup, from: 'alpha_shared', restrictSearchWithMatch: { $and: [{ app_id: 'beta' }], app_id: 'alpha' } } });
    expectUpstreamOutcome(reply, (r) => expect(firstBatch(r).map((d) => d.g)).toEqual([[], [], []]));
    await w.expectBetaUnchanged();
  });

  it("$unionWith beta's physical name: mapped, its documents scoped", async () => {
    const reply = await aggregate([{ $unionWith: 'beta_shared' }], 'iso-union');
    expect(w.sentUpstream('iso-union').body.pipeline).toEqual([TAG, HIDE, { $unionWith: { coll: 'alpha_beta_shared', pipeline: [TAG, HIDE] } }]);
    expectUpstreamOutcome(reply, (r) => expect(firstBatch(r)).toEqual(ALPHA_SHARED));
    await w.expectBetaUnchanged();
  });

  it.each([BETA_DB, 'local'])('$unionWith {db: %s}: Unauthorized (13), nothing sent upstream', async (db) => {
    const comment = `iso-union-${db}`;
    const reply = await aggregate([{ $unionWith: { db, coll: db === 'local' ? 'oplog.rs' : 'shared', pipeline: [] } }], comment);
    expectError(reply, 13, 'Unauthorized');
    expect(w.countUpstream(comment)).toBe(0);
    await w.expectBetaUnchanged();
  });

  it('$facet with a $lookup of beta\'s physical name: scoped inside the facet', async () => {
    const reply = await aggregate([{ $facet: { a: [{ $lookup: { from: 'beta_shared', pipeline: [], as: 'j' } }], b: [{ $count: 'n' }] } }], 'iso-facet');
    expect(w.sentUpstream('iso-facet').body.pipeline).toEqual([
      TAG,
      HIDE,
      { $facet: { a: [{ $lookup: { from: 'alpha_beta_shared', pipeline: [TAG, HIDE], as: 'j' } }], b: [{ $count: 'n' }] } },
    ]);
    expectUpstreamOutcome(reply, (r) => expect(firstBatch(r)[0]!.b).toEqual([{ n: 3 }]));
    await w.expectBetaUnchanged();
  });

  it("$out to beta's physical name: mapped into alpha's space, stamped with alpha's tag", async () => {
    const reply = await aggregate([{ $addFields: { app_id: 'beta' } }, { $out: 'beta_shared' }], 'iso-out');
    expect(w.sentUpstream('iso-out').body.pipeline).toEqual([TAG, HIDE, { $addFields: { app_id: 'beta' } }, STAMP, { $out: { coll: 'alpha_beta_shared', db: w.phys } }]);
    expectUpstreamOutcome(reply, (r) => expect(r.ok).toBe(1));
    await w.expectBetaUnchanged();
  });

  const crossDb: [string, Document][] = [
    ["$out to {db: beta's database}", { $out: { db: BETA_DB, coll: 'shared' } }],
    ['$out to admin.system.users', { $out: { db: 'admin', coll: 'system.users' } }],
    ["$merge into {db: beta's database}", { $merge: { into: { db: BETA_DB, coll: 'shared' } } }],
    ['$merge into local.oplog.rs', { $merge: { into: { db: 'local', coll: 'oplog.rs' } } }],
  ];
  it.each(crossDb)('%s: Unauthorized (13), nothing sent upstream', async (what, stage) => {
    const comment = `iso-${what}`;
    const reply = await aggregate([stage], comment);
    expectError(reply, 13, 'Unauthorized');
    expect(w.countUpstream(comment)).toBe(0);
    await w.expectBetaUnchanged();
  });

  it("$merge into beta's physical name with a whenMatched pipeline setting beta's tag: mapped and stamped twice", async () => {
    const reply = await aggregate([{ $merge: { into: 'beta_shared', whenMatched: [{ $set: { app_id: 'beta' } }] } }], 'iso-merge');
    expect(w.sentUpstream('iso-merge').body.pipeline).toEqual([
      TAG,
      HIDE,
      STAMP,
      {
        $merge: {
          into: { db: w.phys, coll: 'alpha_beta_shared' },
          // The pipeline sees the target and $$new as the app does (no tag), and the tag is stamped last.
          let: { new: { $unsetField: { field: 'app_id', input: '$$ROOT' } } },
          whenMatched: [{ $unset: 'app_id' }, { $set: { app_id: 'beta' } }, STAMP],
        },
      },
    ]);
    expectUpstreamOutcome(reply, (r) => expect(r.ok).toBe(1));
    await w.expectBetaUnchanged();
  });

  it("a view on beta's physical name: the source mapped, the view's pipeline scoped and stamped", async () => {
    const reply = await command(raw, { create: 'peek', viewOn: 'beta_shared', pipeline: [{ $match: { app_id: 'beta' } }], comment: 'iso-view', $db: ALPHA_DB });
    const sent = w.sentUpstream('iso-view').body;
    expect(sent).toMatchObject({ create: 'alpha_peek', viewOn: 'alpha_beta_shared', pipeline: [TAG, { $match: { app_id: 'beta' } }, STAMP] });
    w.expectNoLeak(reply, ['beta_shared']);
    if (!w.ferret) {
      expect(reply.ok).toBe(1);
      expect(await nodeFind({}, 'peek')).toEqual([]);
    }
    await w.expectBetaUnchanged();
  });

  it("a view whose pipeline $lookups beta's physical name: the sub-pipeline scoped", async () => {
    const reply = await command(raw, {
      create: 'peek2',
      viewOn: 'shared',
      pipeline: [{ $lookup: { from: 'beta_shared', pipeline: [], as: 'j' } }],
      comment: 'iso-view-lookup',
      $db: ALPHA_DB,
    });
    expect(w.sentUpstream('iso-view-lookup').body.pipeline).toEqual([TAG, { $lookup: { from: 'alpha_beta_shared', pipeline: [TAG, HIDE], as: 'j' } }, STAMP]);
    w.expectNoLeak(reply, ['alpha_shared']);
    await w.expectBetaUnchanged();
  });

  it('a view on system.views: InvalidNamespace (73)', async () => {
    expectError(await command(raw, { create: 'peek3', viewOn: 'system.views', pipeline: [], $db: ALPHA_DB }), 73);
    await w.expectBetaUnchanged();
  });
});

describe('collection commands naming beta', () => {
  it("renameCollection from alpha's database to beta's: Unauthorized (13)", async () => {
    const reply = await command(raw, { renameCollection: `${ALPHA_DB}.victim`, to: `${BETA_DB}.shared`, dropTarget: true, $db: 'admin' });
    expectError(reply, 13, 'Unauthorized');
    await w.expectBetaUnchanged();
  });

  it("renameCollection of beta's physical namespace: maps to alpha's own space (NamespaceNotFound), no physical name", async () => {
    const reply = await command(raw, { renameCollection: `${w.phys}.beta_shared`, to: `${w.phys}.stolen`, comment: 'iso-rename-phys', $db: 'admin' });
    expect(w.sentUpstream('iso-rename-phys').body).toMatchObject({ renameCollection: `${w.phys}.alpha_beta_shared`, to: `${w.phys}.alpha_stolen` });
    expectError(reply, 26);
    w.expectNoLeak(reply, [w.phys, 'beta_shared']);
    await w.expectBetaUnchanged();
  });

  it("renameCollection within beta's logical database: alpha's own space only", async () => {
    await w.alpha.db(BETA_DB).collection<Loose>('rn_src').insertOne({ _id: 'rn' });
    const reply = await command(raw, { renameCollection: `${BETA_DB}.rn_src`, to: `${BETA_DB}.shared2`, comment: 'iso-rename-same', $db: 'admin' });
    expect(w.sentUpstream('iso-rename-same').body).toMatchObject({ renameCollection: `${w.phys}.alpha_rn_src`, to: `${w.phys}.alpha_shared2` });
    expect(reply.ok).toBe(1);
    expect(await nodeFind({}, 'shared2')).toEqual([{ _id: 'rn' }]);
    await w.expectBetaUnchanged();
  });

  it('renameCollection to a system collection: InvalidNamespace (73)', async () => {
    const reply = await command(raw, { renameCollection: `${BETA_DB}.shared`, to: `${BETA_DB}.system.users`, $db: 'admin' });
    expectError(reply, 73);
    await w.expectBetaUnchanged();
  });

  it("drop of 'victim' named through beta's database: alpha's own victim dropped, beta's intact", async () => {
    const reply = await outcome(w.alpha.db(BETA_DB).dropCollection('victim'));
    expect(reply).toMatchObject({ ok: 1, result: true });
    expect(await w.direct.db(w.phys).listCollections({ name: 'alpha_victim' }).toArray()).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("dropIndexes '*' on 'shared' named through beta's database: beta's index intact", async () => {
    const reply = await command(raw, { dropIndexes: 'shared', index: '*', $db: BETA_DB });
    expect(reply.ok).toBe(1);
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });

  it("deleteIndexes (alias) of beta's index name: IndexNotFound (27), beta's index intact", async () => {
    const reply = await command(raw, { deleteIndexes: 'shared', index: 'beta_secret_idx', $db: BETA_DB });
    // The proxy sends aliases under their canonical name (dropIndexes), which every server knows.
    expectError(reply, 27);
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });

  it("createIndexes (unique) on beta's physical name: built in alpha's space", async () => {
    const reply = await command(raw, { createIndexes: 'beta_shared', indexes: [{ key: { n: 1 }, name: 'beta_secret_idx', unique: true }], comment: 'iso-ci', $db: ALPHA_DB });
    expect(w.sentUpstream('iso-ci').body.createIndexes).toBe('alpha_beta_shared');
    expect(reply.ok).toBe(1);
    await w.expectBetaUnchanged();
  });
});

describe('index specs naming beta', () => {
  it("createIndexes whose spec names beta's physical namespace in 'ns': refused or ignored, beta's indexes unchanged", async () => {
    const reply = await command(raw, {
      createIndexes: 'shared',
      indexes: [{ key: { n: 1 }, name: 'n_unique', unique: true, ns: `${w.phys}.beta_shared` }],
      comment: 'iso-ci-ns',
      $db: ALPHA_DB,
    });
    expect(w.sentUpstream('iso-ci-ns').body.createIndexes).toBe('alpha_shared');
    if (w.ferret) expectError(reply, 2, 'BadValue');
    w.expectNoLeak(reply, [w.phys, 'beta_shared']);
    await w.expectBetaUnchanged();
  });
});

describe('error messages do not name physical collections', () => {
  it('create of an existing collection: NamespaceExists (48) naming alpha\'s own name', async () => {
    const reply = await command(raw, { create: 'shared', $db: ALPHA_DB });
    expectError(reply, 48);
    expect(reply.errmsg).toContain(`${ALPHA_DB}.shared`);
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });

  it('a duplicate key: the write error names alpha\'s namespace', async () => {
    const reply = await command(raw, { insert: 'shared', documents: [{ _id: 1 }], $db: ALPHA_DB });
    expect(reply.ok).toBe(1);
    const [error] = reply.writeErrors as Document[];
    expect(error).toMatchObject({ code: 11000 });
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });

  it('renameCollection of a missing collection: NamespaceNotFound (26) without physical names', async () => {
    const reply = await command(raw, { renameCollection: `${ALPHA_DB}.nothing`, to: `${ALPHA_DB}.still_nothing`, $db: 'admin' });
    expectError(reply, 26);
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });

  it('dropIndexes of a missing index: IndexNotFound (27) without physical names', async () => {
    const reply = await command(raw, { dropIndexes: 'shared', index: 'nope_1', $db: ALPHA_DB });
    expectError(reply, 27);
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });
});
