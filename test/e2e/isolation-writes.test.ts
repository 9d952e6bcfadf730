import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BSONSymbol, Binary, Int32, type Document } from 'bson';
import type { RawClient } from '../../src/testing/wire-client.js';
import {
  ALPHA_DB,
  BETA_DB,
  IsolationWorld,
  type Loose,
  PyAttacker,
  command,
  decodeReply,
  el,
  expectError,
  outcome,
  rawDoc,
  rawOpMsg,
  token,
} from './isolation-fixture.js';

/**
 * Isolation, part 1: writes. App `alpha` tries to forge, change, remove or rename the tag that says a
 * document is beta's, through every write path (inserts in the body and in kind-1 sequences, hand-built
 * duplicate keys, non-string tags, operator and replacement updates, upserts, findAndModify, pipeline
 * updates), and with a read-only role tries to write at all. After every attempt, beta's data is read
 * directly from the upstream and through the proxy as beta, and must be exactly as seeded; every physical
 * document must still carry its own app's tag.
 */

let w: IsolationWorld;
let raw: RawClient;
let reader: RawClient;

beforeAll(async () => {
  w = await IsolationWorld.start();
  raw = await w.raw('alpha');
  reader = await w.raw('alpha', { roles: ['reader'] });
  w.py = new PyAttacker(w.plainUri('alpha', await token('alpha')), ALPHA_DB);
});

afterAll(async () => {
  await w?.close();
});

/** Documents of alpha's physical collection `coll` matching `filter`, read directly from the upstream. */
function alphaPhysical(coll: string, filter: Document = {}): Promise<Document[]> {
  return w.direct.db(w.phys).collection<Loose>(`alpha_${coll}`).find(filter).toArray();
}

describe('forged tags on insert', () => {
  it("raw OP_MSG body insert carrying beta's tag: BadValue (2), nothing written", async () => {
    const reply = await command(raw, { insert: 'forged', documents: [{ _id: 'f1', app_id: 'beta', secret: 'forged' }], $db: ALPHA_DB });
    expectError(reply, 2, 'BadValue');
    w.expectNoLeak(reply);
    expect(await alphaPhysical('forged', { _id: 'f1' })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("raw kind-1 insert with beta's tag in one document of three: BadValue, none of the three written", async () => {
    const reply = await command(raw, { insert: 'forged', $db: ALPHA_DB }, [
      { identifier: 'documents', documents: [{ _id: 'k1' }, { _id: 'k2', app_id: 'beta' }, { _id: 'k3' }] },
    ]);
    expectError(reply, 2, 'BadValue');
    expect(await alphaPhysical('forged', { _id: { $in: ['k1', 'k2', 'k3'] } })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it('kind-1 document with hand-built duplicate tags (alpha, then beta): BadValue', async () => {
    const doc = rawDoc([el.str('_id', 'dup1'), el.str('app_id', 'alpha'), el.str('app_id', 'beta')]);
    raw.send(rawOpMsg(rawDoc([el.str('insert', 'dup'), el.str('$db', ALPHA_DB)]), [{ identifier: 'documents', documents: [doc] }]));
    const reply = await nextReply();
    expectError(reply, 2, 'BadValue');
    expect(await alphaPhysical('dup', { _id: 'dup1' })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it('kind-1 document with hand-built duplicate tags (beta, then alpha): BadValue', async () => {
    const doc = rawDoc([el.str('_id', 'dup2'), el.str('app_id', 'beta'), el.str('app_id', 'alpha')]);
    raw.send(rawOpMsg(rawDoc([el.str('insert', 'dup'), el.str('$db', ALPHA_DB)]), [{ identifier: 'documents', documents: [doc] }]));
    expectError(await nextReply(), 2, 'BadValue');
    expect(await alphaPhysical('dup', { _id: 'dup2' })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it('body document with hand-built duplicate tags (alpha, then beta): BadValue', async () => {
    const doc = rawDoc([el.str('_id', 'dup3'), el.str('app_id', 'alpha'), el.str('app_id', 'beta')]);
    raw.send(rawOpMsg(rawDoc([el.str('insert', 'dup'), el.arr('documents', [doc]), el.str('$db', ALPHA_DB)])));
    expectError(await nextReply(), 2, 'BadValue');
    expect(await alphaPhysical('dup', { _id: 'dup3' })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it('body document with hand-built duplicate tags (beta, then alpha): BadValue, as in a kind-1 sequence', async () => {
    const doc = rawDoc([el.str('_id', 'dup4'), el.str('app_id', 'beta'), el.str('app_id', 'alpha')]);
    raw.send(rawOpMsg(rawDoc([el.str('insert', 'dup'), el.arr('documents', [doc]), el.str('$db', ALPHA_DB)])));
    // An insert's body documents are checked as bytes, like kind-1 ones: every occurrence of the tag counts.
    expectError(await nextReply(), 2, 'BadValue');
    expect(await alphaPhysical('dup', { _id: 'dup4' })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it('duplicate command fields built by hand (documents twice, the second one forged): BadValue', async () => {
    const honest = rawDoc([el.str('_id', 'dup5')]);
    const forged = rawDoc([el.str('_id', 'dup6'), el.str('app_id', 'beta')]);
    raw.send(rawOpMsg(rawDoc([el.str('insert', 'dup'), el.arr('documents', [honest]), el.arr('documents', [forged]), el.str('$db', ALPHA_DB)])));
    expectError(await nextReply(), 2, 'BadValue');
    expect(await alphaPhysical('dup', { _id: { $in: ['dup5', 'dup6'] } })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  const nonStringTags: [string, unknown][] = [
    ['null', null],
    ['an int32', new Int32(1)],
    ["an array holding alpha's own slug", ['alpha']],
    ["an array holding beta's slug", ['beta']],
    ['an embedded document', { slug: 'beta' }],
    ["a BSON symbol of alpha's slug", new BSONSymbol('alpha')],
    ["binary data holding alpha's slug", new Binary(Buffer.from('alpha'))],
    ['a boolean', true],
    ["beta's slug upper-cased", 'BETA'],
    ["alpha's slug with a trailing NUL and beta", 'alpha\0beta'],
  ];
  it.each(nonStringTags)('Node driver insertOne (kind-1) with a tag that is %s: BadValue', async (_what, value) => {
    const id = `ns-${Math.random().toString(36).slice(2)}`;
    const reply = await outcome(w.alphaDb.collection<Loose>('forged').insertOne({ _id: id, app_id: value }));
    expectError(reply, 2, 'BadValue');
    expect(await alphaPhysical('forged', { _id: id })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("raw body insert with beta's tag as a BSON symbol: BadValue", async () => {
    const reply = await command(raw, { insert: 'forged', documents: [{ _id: 'sym', app_id: new BSONSymbol('beta') }], $db: ALPHA_DB });
    expectError(reply, 2, 'BadValue');
    await w.expectBetaUnchanged();
  });

  it("Node driver insertMany (unordered) with beta's tag in the middle: BadValue, nothing of the batch written", async () => {
    const docs = [{ _id: 'm1' }, { _id: 'm2', app_id: 'beta' }, { _id: 'm3' }];
    const reply = await outcome(w.alphaDb.collection<Loose>('forged').insertMany(docs, { ordered: false }));
    expectError(reply, 2, 'BadValue');
    expect(await alphaPhysical('forged', { _id: { $in: ['m1', 'm2', 'm3'] } })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("insert into beta's physical collection name with beta's tag: BadValue (and the name is alpha's anyway)", async () => {
    const reply = await command(raw, { insert: 'beta_shared', documents: [{ _id: 99, app_id: 'beta', secret: 'planted' }], $db: w.phys });
    expectError(reply, 2, 'BadValue');
    w.expectNoLeak(reply, [w.phys]);
    await w.expectBetaUnchanged();
  });

  it("insert into beta's physical collection name without a tag: lands in alpha's own space, tagged alpha", async () => {
    const reply = await command(raw, { insert: 'beta_shared', documents: [{ _id: 'planted', secret: 'planted' }], $db: BETA_DB });
    expect(reply).toMatchObject({ ok: 1, n: 1 });
    expect(await alphaPhysical('beta_shared', { _id: 'planted' })).toEqual([{ _id: 'planted', secret: 'planted', app_id: 'alpha' }]);
    await w.expectBetaUnchanged();
  });
});

describe('updates, upserts, replacements and findAndModify touching the tag', () => {
  it("Node driver updateMany $set of the tag to beta's: ImmutableField (66)", async () => {
    const reply = await outcome(w.alphaDb.collection<Loose>('shared').updateMany({}, { $set: { app_id: 'beta' } }));
    expectError(reply, 66, 'ImmutableField');
    expect((await alphaPhysical('shared')).map((d) => d.app_id)).toEqual(['alpha', 'alpha', 'alpha']);
    await w.expectBetaUnchanged();
  });

  const operatorUpdates: [string, Document][] = [
    ['$unset of the tag', { $unset: { app_id: '' } }],
    ['$rename of the tag away', { $rename: { app_id: 'was' } }],
    ['$rename of another field onto the tag', { $rename: { decoy: 'app_id' } }],
    ['$set of a path inside the tag', { $set: { 'app_id.x': 'beta' } }],
    ['$inc of the tag', { $inc: { app_id: 1 } }],
    ['$currentDate of the tag', { $currentDate: { app_id: true } }],
    ['$addToSet on the tag', { $addToSet: { app_id: 'beta' } }],
    ['$set of the tag next to an honest $set', { $set: { ok: 1 }, $max: { app_id: 'zzz' } }],
  ];
  it.each(operatorUpdates)('raw update with %s: ImmutableField (66)', async (_what, u) => {
    const reply = await command(raw, { update: 'shared', updates: [{ q: { _id: 2 }, u }], $db: ALPHA_DB });
    expectError(reply, 66, 'ImmutableField');
    expect((await alphaPhysical('shared', { _id: 2 }))[0]).toEqual({ _id: 2, mine: 'alpha-2', n: 2, app_id: 'alpha' });
    await w.expectBetaUnchanged();
  });

  it("$setOnInsert of beta's tag in an upsert: ImmutableField (66), nothing inserted", async () => {
    const reply = await command(raw, { update: 'ups', updates: [{ q: { _id: 'soi' }, u: { $setOnInsert: { app_id: 'beta' } }, upsert: true }], $db: ALPHA_DB });
    expectError(reply, 66, 'ImmutableField');
    expect(await alphaPhysical('ups', { _id: 'soi' })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it('update statements in a kind-1 sequence, the second setting the tag: ImmutableField, the first not applied', async () => {
    const reply = await command(raw, { update: 'shared', ordered: true, $db: ALPHA_DB }, [
      { identifier: 'updates', documents: [{ q: { _id: 3 }, u: { $set: { n: 30 } } }, { q: { _id: 3 }, u: { $set: { app_id: 'beta' } } }] },
    ]);
    expectError(reply, 66, 'ImmutableField');
    expect((await alphaPhysical('shared', { _id: 3 }))[0]).toMatchObject({ n: 3, app_id: 'alpha' });
    await w.expectBetaUnchanged();
  });

  it('update with arrayFilters on a path inside the tag: ImmutableField', async () => {
    const reply = await command(raw, {
      update: 'shared',
      updates: [{ q: {}, u: { $set: { 'app_id.$[e]': 'beta' } }, arrayFilters: [{ e: 'alpha' }], multi: true }],
      $db: ALPHA_DB,
    });
    expectError(reply, 66, 'ImmutableField');
    await w.expectBetaUnchanged();
  });

  it("Node driver replaceOne with beta's tag: ImmutableField", async () => {
    const reply = await outcome(w.alphaDb.collection<Loose>('shared').replaceOne({ _id: 1 }, { app_id: 'beta', mine: 'stolen' }));
    expectError(reply, 66, 'ImmutableField');
    expect((await alphaPhysical('shared', { _id: 1 }))[0]).toMatchObject({ mine: 'alpha-1', app_id: 'alpha' });
    await w.expectBetaUnchanged();
  });

  it("replacement upsert of a new document with beta's tag: ImmutableField, nothing inserted", async () => {
    const reply = await outcome(w.alphaDb.collection<Loose>('ups').replaceOne({ _id: 'rep' }, { app_id: 'beta', v: 1 }, { upsert: true }));
    expectError(reply, 66, 'ImmutableField');
    expect(await alphaPhysical('ups', { _id: 'rep' })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it('a replacement whose later field is $set of the tag: refused by the server (52), the tag intact', async () => {
    await w.alphaDb.collection<Loose>('ups').insertOne({ _id: 'mixed', v: 0 });
    const reply = await command(raw, { update: 'ups', updates: [{ q: { _id: 'mixed' }, u: { v: 1, $set: { app_id: 'beta' } } }], $db: ALPHA_DB });
    // The proxy sees a replacement (first key not an operator) and stamps it; the server refuses '$set' as a field.
    expect(reply.ok).toBe(1);
    expect((reply.writeErrors as Document[])[0]).toMatchObject({ code: 52 });
    expect(await alphaPhysical('ups', { _id: 'mixed' })).toEqual([{ _id: 'mixed', v: 0, app_id: 'alpha' }]);
    await w.expectBetaUnchanged();
  });

  const upsertFilters: [string, Document][] = [
    ["beta's tag as an equality", { app_id: 'beta', k: 'eq' }],
    ["beta's tag inside $and", { $and: [{ app_id: 'beta' }, { k: 'and' }] }],
    ['both slugs in $in', { app_id: { $in: ['alpha', 'beta'] }, k: 'in' }],
    ["beta's tag via $eq", { app_id: { $eq: 'beta' }, k: '$eq' }],
  ];
  it.each(upsertFilters)(
    'upsert ($set) whose filter names %s: never inserts a document without the tag or with beta\'s',
    async (_what, q) => {
      const reply = await command(raw, { update: 'ups', updates: [{ q, u: { $set: { v: 1 } }, upsert: true }], $db: ALPHA_DB });
      w.expectNoLeak(reply);
      if (reply.ok === 1 && reply.writeErrors === undefined) {
        // FerretDB takes the inserted fields from top-level equalities only: the proxy's tag.
        expect(reply.n).toBe(1);
        const [upserted] = reply.upserted as { _id: unknown }[];
        expect(await alphaPhysical('ups', { _id: upserted!._id })).toEqual([expect.objectContaining({ app_id: 'alpha', v: 1 })]);
      } else {
        // MongoDB: two equalities on the tag cannot make an upsert document (NotSingleValueField).
        expect(w.ferret).toBe(false);
        expect(((reply.writeErrors as Document[] | undefined)?.[0] ?? reply).code).toBe(54);
      }
      await w.expectBetaUnchanged();
    },
  );

  it("Node driver findOneAndUpdate $set of beta's tag: ImmutableField", async () => {
    const reply = await outcome(w.alphaDb.collection<Loose>('shared').findOneAndUpdate({ _id: 1 }, { $set: { app_id: 'beta' } }));
    expectError(reply, 66, 'ImmutableField');
    await w.expectBetaUnchanged();
  });

  it("Node driver findOneAndReplace with beta's tag (upsert): ImmutableField", async () => {
    const reply = await outcome(w.alphaDb.collection<Loose>('ups').findOneAndReplace({ _id: 'far' }, { app_id: 'beta' }, { upsert: true }));
    expectError(reply, 66, 'ImmutableField');
    expect(await alphaPhysical('ups', { _id: 'far' })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("findAndModify upsert whose query is beta's tag: the document it inserts is alpha's (or the server refuses)", async () => {
    const reply = await command(raw, { findAndModify: 'ups', query: { app_id: 'beta', k: 'fam' }, update: { $set: { v: 2 } }, upsert: true, new: true, $db: ALPHA_DB });
    w.expectNoLeak(reply);
    if (reply.ok === 1) {
      expect(reply.value).toEqual({ _id: expect.anything(), k: 'fam', v: 2 }); // the tag itself hidden
      expect(await alphaPhysical('ups', { k: 'fam' })).toEqual([expect.objectContaining({ app_id: 'alpha' })]);
    } else {
      expect(w.ferret).toBe(false);
      expect(reply.code).toBe(54);
    }
    await w.expectBetaUnchanged();
  });

  it("findAndModify remove with beta's tag as the query: value null, nothing removed", async () => {
    const reply = await command(raw, { findAndModify: 'shared', query: { app_id: 'beta' }, remove: true, $db: BETA_DB });
    expect(reply).toMatchObject({ ok: 1, value: null });
    expect(await alphaPhysical('shared')).toHaveLength(3);
    await w.expectBetaUnchanged();
  });

  it("updateMany {} named through beta's logical database: changes alpha's own documents only", async () => {
    const reply = await outcome(w.alpha.db(BETA_DB).collection<Loose>('victim').updateMany({}, { $set: { mine: 'changed' } }));
    expect(reply).toMatchObject({ ok: 1, result: { matchedCount: 1, modifiedCount: 1 } });
    expect(await alphaPhysical('victim')).toEqual([{ _id: 1, mine: 'changed', app_id: 'alpha' }]);
    await w.expectBetaUnchanged();
  });

  it("deleteMany {} named through beta's logical database: deletes alpha's own documents only", async () => {
    const reply = await outcome(w.alpha.db(BETA_DB).collection<Loose>('victim').deleteMany({}));
    expect(reply).toMatchObject({ ok: 1, result: { deletedCount: 1 } });
    expect(await alphaPhysical('victim')).toEqual([]);
    await w.expectBetaUnchanged();
  });
});

describe('pipeline updates (FerretDB lacks them: the command sent upstream; end to end on MongoDB)', () => {
  const pipelines: [string, Document[], boolean][] = [
    ["$set of beta's tag", [{ $set: { app_id: 'beta' } }], false],
    ['$unset of the tag', [{ $unset: 'app_id' }], false],
    ["$replaceWith a document holding beta's tag (upsert)", [{ $replaceWith: { $mergeObjects: ['$$ROOT', { app_id: 'beta', x: 1 }] } }], true],
    ['$project dropping the tag', [{ $project: { app_id: 0 } }], false],
  ];
  it.each(pipelines)('update pipeline with %s: the proxy appends the stage that sets alpha\'s tag last', async (what, u, upsert) => {
    const comment = `iso-pipe-${what}`;
    const q = upsert ? { _id: 'pipe-new' } : { _id: 1 };
    const reply = await command(raw, { update: 'shared', updates: [{ q, u, upsert }], comment, $db: ALPHA_DB });
    const sent = w.sentUpstream(comment);
    expect(sent.body.update).toBe('alpha_shared');
    expect(sent.body.updates).toEqual([{ q: { ...q, app_id: 'alpha' }, u: [...u, { $set: { app_id: { $literal: 'alpha' } } }], upsert }]);
    w.expectNoLeak(reply);
    if (!w.ferret) expect(reply).toMatchObject({ ok: 1, n: 1 });
    await w.expectBetaUnchanged();
  });

  it('findAndModify with a pipeline update setting beta\'s tag: stamped last upstream', async () => {
    const comment = 'iso-pipe-fam';
    const reply = await command(raw, { findAndModify: 'shared', query: { _id: 2 }, update: [{ $set: { app_id: 'beta' } }], comment, $db: ALPHA_DB });
    expect(w.sentUpstream(comment).body.update).toEqual([{ $set: { app_id: 'beta' } }, { $set: { app_id: { $literal: 'alpha' } } }]);
    w.expectNoLeak(reply);
    if (!w.ferret) expect(reply).toMatchObject({ ok: 1 });
    await w.expectBetaUnchanged();
  });

  it('update pipeline with a $lookup stage: InvalidOptions (72), nothing sent upstream', async () => {
    const comment = 'iso-pipe-lookup';
    const reply = await command(raw, {
      update: 'shared',
      updates: [{ q: {}, u: [{ $lookup: { from: 'beta_shared', pipeline: [], as: 'x' } }] }],
      comment,
      $db: ALPHA_DB,
    });
    expectError(reply, 72, 'InvalidOptions');
    expect(w.countUpstream(comment)).toBe(0);
    await w.expectBetaUnchanged();
  });
});

describe('RBAC: alpha with its read-only role', () => {
  const writes: [string, Document][] = [
    ['insert', { insert: 'shared', documents: [{ _id: 'r1' }] }],
    ['update', { update: 'shared', updates: [{ q: {}, u: { $set: { n: 0 } }, multi: true }] }],
    ['delete', { delete: 'shared', deletes: [{ q: {}, limit: 0 }] }],
    ['findAndModify with an update', { findAndModify: 'shared', query: {}, update: { $set: { n: 0 } } }],
    ['findAndModify with remove', { findAndModify: 'shared', query: {}, remove: true }],
    ['drop', { drop: 'shared' }],
    ['create', { create: 'reader_made' }],
    ['createIndexes', { createIndexes: 'shared', indexes: [{ key: { n: 1 }, name: 'n_1' }] }],
    ['dropIndexes', { dropIndexes: 'shared', index: '*' }],
    ['aggregate with $out', { aggregate: 'shared', pipeline: [{ $out: 'copied' }], cursor: {} }],
    ['aggregate with $merge', { aggregate: 'shared', pipeline: [{ $merge: { into: 'copied' } }], cursor: {} }],
  ];
  it.each(writes)('%s: Unauthorized (13), nothing sent upstream', async (what, cmd) => {
    const comment = `iso-rbac-${what}`;
    const before = await alphaPhysical('shared');
    const reply = await command(reader, { ...cmd, comment, $db: ALPHA_DB });
    expectError(reply, 13, 'Unauthorized');
    expect(w.countUpstream(comment)).toBe(0);
    expect(await alphaPhysical('shared')).toEqual(before);
    await w.expectBetaUnchanged();
  });

  it('renameCollection: Unauthorized (13)', async () => {
    const before = await alphaPhysical('shared');
    const reply = await command(reader, { renameCollection: `${ALPHA_DB}.shared`, to: `${ALPHA_DB}.moved`, $db: 'admin' });
    expectError(reply, 13, 'Unauthorized');
    expect(await alphaPhysical('shared')).toEqual(before);
    await w.expectBetaUnchanged();
  });

  it('the read-only role still reads alpha\'s own documents, and nothing of beta\'s', async () => {
    const reply = await command(reader, { find: 'shared', filter: {}, $db: ALPHA_DB });
    expect(reply.ok).toBe(1);
    expect((reply.cursor as { firstBatch: Document[] }).firstBatch.map((d) => d._id)).toEqual(expect.arrayContaining([1, 2, 3]));
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });
});

describe('PyMongo as alpha', () => {
  const attempts: [string, number][] = [
    ["insert_one with beta's tag", 2],
    ["insert_many (kind-1) with beta's tag in the second document", 2],
    ['update_many $set of the tag', 66],
    ["replace_one with beta's tag", 66],
    ['find_one_and_update $unset of the tag', 66],
    ['bulk_write $rename of the tag', 66],
  ];
  it.each(attempts)('%s: refused with code %i', async (attack, code) => {
    const out = await w.py!.run(attack);
    expect(out, out.raw).toMatchObject({ ok: false, code });
    w.expectNoLeak(out.raw);
    expect(await alphaPhysical('py_forged')).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("update_one upsert with beta's tag in the filter: any document inserted is tagged alpha", async () => {
    const out = await w.py!.run("update_one upsert with beta's tag in the filter");
    w.expectNoLeak(out.raw);
    if (out.ok) expect(await alphaPhysical('py_upsert', { k: 'py' })).toEqual([expect.objectContaining({ app_id: 'alpha', v: 1 })]);
    else expect(out.code).toBe(54);
    await w.expectBetaUnchanged();
  });
});

async function nextReply(): Promise<Document> {
  return decodeReply(await raw.nextMessage());
}
