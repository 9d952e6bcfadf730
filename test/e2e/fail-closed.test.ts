import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Code, EJSON, ObjectId, serialize, type Document } from 'bson';
import type { RawClient } from '../../src/testing/wire-client.js';
import { ALPHA_DB, IsolationWorld, type Loose, command, decodeReply, el, expectError, rawDoc, rawOpMsg } from './isolation-fixture.js';

/**
 * Fail closed on every BSON value shape, end to end through the real proxy: operands shaped like a
 * DBRef (`{$ref, $id, ...}`, which js-bson decodes as a DBRef instance rather than a document) under
 * every write path that guards the tag, server-side JavaScript hidden in one, and the honest use of
 * DBRefs still stored byte for byte. After each attempt the physical collection is read directly from
 * the upstream: alpha's documents keep alpha's tag, beta's data is unchanged (docs/security.md,
 * "Values that are not what they seem").
 */

let w: IsolationWorld;
let raw: RawClient;

beforeAll(async () => {
  w = await IsolationWorld.start();
  raw = await w.raw('alpha');
});

afterAll(async () => {
  await w?.close();
});

const REF = { $ref: 'r', $id: 'i' };

function alphaPhysical(coll: string, filter: Document = {}): Promise<Document[]> {
  return w.direct.db(w.phys).collection<Loose>(`alpha_${coll}`).find(filter).toArray();
}

/** Resets alpha's document `_id` in collection `dbref` to a known state (directly on the upstream). */
async function reset(id: string, extra: Document = {}): Promise<void> {
  const c = w.direct.db(w.phys).collection<Loose>('alpha_dbref');
  await c.deleteOne({ _id: id });
  await c.insertOne({ _id: id, v: 0, zz: 'beta', ...extra, app_id: 'alpha' });
}

/** The statement's error code, whether the command failed or one write did. */
function errorCode(reply: Document): number | undefined {
  if (reply.ok !== 1) return reply.code as number;
  return (reply.writeErrors as Document[] | undefined)?.[0]?.code as number | undefined;
}

const operatorShapes: [string, Document][] = [
  ['$unset of {$ref, $id, app_id}', { $unset: { ...REF, app_id: '' } }],
  ['$rename of {$ref, $id, zz: app_id} (a field onto the tag)', { $rename: { ...REF, zz: 'app_id' } }],
  ['$rename of {$ref, $id, app_id: x} (the tag away)', { $rename: { ...REF, app_id: 'x' } }],
  ["$set of {$ref, $id, app_id: 'beta'}", { $set: { ...REF, app_id: 'beta' } }],
  ["$setOnInsert of {$ref, $id, app_id: 'beta'}", { $setOnInsert: { ...REF, app_id: 'beta' } }],
  ["$max of {$ref, $id, app_id: 'zzz'}", { $max: { ...REF, app_id: 'zzz' } }],
  ['$inc of {$ref, $id, app_id: 1}', { $inc: { ...REF, app_id: 1 } }],
  ['$currentDate of {$ref, $id, app_id: true}', { $currentDate: { ...REF, app_id: true } }],
  ["$set of {$ref, $id, $db, 'app_id.x'}", { $set: { ...REF, $db: 'd', 'app_id.x': 1 } }],
];

describe('update operands shaped like a DBRef: ImmutableField (66), the tag intact', () => {
  it.each(operatorShapes)('update with %s', async (_what, u) => {
    await reset('u1');
    const reply = await command(raw, { update: 'dbref', updates: [{ q: { _id: 'u1' }, u }], $db: ALPHA_DB });
    expectError(reply, 66, 'ImmutableField');
    expect(await alphaPhysical('dbref', { _id: 'u1' })).toEqual([{ _id: 'u1', v: 0, zz: 'beta', app_id: 'alpha' }]);
    await w.expectBetaUnchanged();
  });

  it.each(operatorShapes)('upsert of a new document with %s: nothing inserted', async (_what, u) => {
    const reply = await command(raw, { update: 'dbref', updates: [{ q: { _id: 'new-up' }, u, upsert: true }], $db: ALPHA_DB });
    expectError(reply, 66, 'ImmutableField');
    expect(await alphaPhysical('dbref', { _id: 'new-up' })).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it.each(operatorShapes)('kind-1 update statement with %s', async (_what, u) => {
    await reset('u2');
    const reply = await command(raw, { update: 'dbref', $db: ALPHA_DB }, [{ identifier: 'updates', documents: [{ q: { _id: 'u2' }, u, upsert: true }] }]);
    expectError(reply, 66, 'ImmutableField');
    expect(await alphaPhysical('dbref', { _id: 'u2' })).toEqual([{ _id: 'u2', v: 0, zz: 'beta', app_id: 'alpha' }]);
    await w.expectBetaUnchanged();
  });

  for (const name of ['findAndModify', 'findandmodify']) {
    it.each(operatorShapes)(`${name} (upsert) with %s`, async (_what, update) => {
      await reset('u3');
      const reply = await command(raw, { [name]: 'dbref', query: { _id: 'u3' }, update, upsert: true, $db: ALPHA_DB });
      expectError(reply, 66, 'ImmutableField');
      expect(await alphaPhysical('dbref', { _id: 'u3' })).toEqual([{ _id: 'u3', v: 0, zz: 'beta', app_id: 'alpha' }]);
      await w.expectBetaUnchanged();
    });
  }

  it('a replacement shaped like a DBRef carrying beta\'s tag: ImmutableField, the document unchanged', async () => {
    await reset('u4');
    const reply = await command(raw, { update: 'dbref', updates: [{ q: { _id: 'u4' }, u: { v: 9, ...REF, app_id: 'beta' } }], $db: ALPHA_DB });
    expectError(reply, 66, 'ImmutableField');
    expect(await alphaPhysical('dbref', { _id: 'u4' })).toEqual([{ _id: 'u4', v: 0, zz: 'beta', app_id: 'alpha' }]);
  });

  it('an operand that is not a document at all ($set: 5): FailedToParse (9), as the server answers', async () => {
    await reset('u5');
    const reply = await command(raw, { update: 'dbref', updates: [{ q: { _id: 'u5' }, u: { $set: 5 } }], $db: ALPHA_DB });
    expectError(reply, 9, 'FailedToParse');
    expect(await alphaPhysical('dbref', { _id: 'u5' })).toEqual([{ _id: 'u5', v: 0, zz: 'beta', app_id: 'alpha' }]);
  });
});

describe('server-side JavaScript inside a DBRef-shaped document: QueryFeatureNotAllowed (224)', () => {
  const shapes: [string, Document][] = [
    ['a Code value as a field of {$ref, $id}', { find: 'dbref', filter: { a: { ...REF, x: new Code('sleep(100)') } }, $db: ALPHA_DB }],
    ['a Code value as the $id', { find: 'dbref', filter: { a: { $ref: 'r', $id: new Code('sleep(100)') } }, $db: ALPHA_DB }],
    ['a $where inside {$ref, $id}', { find: 'dbref', filter: { a: { ...REF, x: { $where: 'sleep(100)' } } }, $db: ALPHA_DB }],
    ['a $function inside {$ref, $id} in a pipeline', {
      aggregate: 'dbref',
      pipeline: [{ $addFields: { f: { ...REF, x: { $function: { body: 'function() { return 1 }', args: [], lang: 'js' } } } } }],
      cursor: {},
      $db: ALPHA_DB,
    }],
    ['a Code value in an update statement', { update: 'dbref', updates: [{ q: { _id: 'u1' }, u: { $set: { v: { ...REF, c: new Code('1') } } } }], $db: ALPHA_DB }],
  ];
  it.each(shapes)('%s', async (_what, cmd) => {
    const reply = await command(raw, { ...cmd, comment: 'js-in-dbref' });
    expectError(reply, 224, 'QueryFeatureNotAllowed');
    expect(w.countUpstream('js-in-dbref')).toBe(0);
  });

  it('a Code value in a kind-1 inserted document: refused, nothing written', async () => {
    const reply = await command(raw, { insert: 'dbref', $db: ALPHA_DB }, [
      { identifier: 'documents', documents: [{ _id: 'code1', c: { ...REF, f: new Code('sleep(100)') } }] },
    ]);
    expectError(reply, 224, 'QueryFeatureNotAllowed');
    expect(await alphaPhysical('dbref', { _id: 'code1' })).toEqual([]);
  });
});

describe('a document with a field named _bsontype is still a document', () => {
  it("$set of {_bsontype, app_id: 'beta'} built by hand: ImmutableField, the tag intact", async () => {
    await reset('b1');
    // No encoder writes such a document from a JS object: built as bytes.
    const operand = rawDoc([el.str('_bsontype', 'ObjectId'), el.str('app_id', 'beta')]);
    const statement = rawDoc([el.doc('q', rawDoc([el.str('_id', 'b1')])), el.doc('u', rawDoc([el.doc('$unset', operand)]))]);
    raw.send(rawOpMsg(rawDoc([el.str('update', 'dbref'), el.arr('updates', [statement]), el.str('$db', ALPHA_DB)])));
    const reply = decodeReply(await raw.nextMessage());
    expectError(reply, 66, 'ImmutableField');
    expect(await alphaPhysical('dbref', { _id: 'b1' })).toEqual([{ _id: 'b1', v: 0, zz: 'beta', app_id: 'alpha' }]);
  });
});

describe('honest DBRefs go upstream as sent', () => {
  const oid = new ObjectId('65a1b2c3d4e5f60718293a4b');
  const values: [string, Document][] = [
    ['{$ref, $id: ObjectId}', { $ref: 'people', $id: oid }],
    ['{$ref, $id, $db}', { $ref: 'people', $id: oid, $db: 'elsewhere' }],
    ['{$ref, $id, extra fields}', { $ref: 'people', $id: 1, name: 'n', more: { $ref: 'x', $id: 2 } }],
    ['a $ref holding a dot', { $ref: 'a.b', $id: 1 }],
    ['fields before $ref', { kind: 'k', $ref: 'people', $id: 1 }],
  ];
  let n = 0;
  it.each(values)('update $set and replacement upsert of %s: the bytes forwarded as sent, stored where the upstream takes DBRefs', async (_what, ref) => {
    await reset('h1');
    const refBytes = Buffer.from(serialize(ref));
    const comment = `honest-dbref-${n++}`;
    const set = await command(raw, { update: 'dbref', updates: [{ q: { _id: 'h1' }, u: { $set: { ref, list: [ref] } } }], comment, $db: ALPHA_DB });
    const forwarded = w.sentUpstream(comment).raw;
    expect(forwarded.indexOf(refBytes)).toBeGreaterThan(0);
    expect(forwarded.lastIndexOf(refBytes)).toBeGreaterThan(forwarded.indexOf(refBytes));
    const rep = await command(raw, { update: 'dbref', updates: [{ q: { _id: 'h2' }, u: { ref }, upsert: true }], comment: `${comment}-r`, $db: ALPHA_DB });
    expect(w.sentUpstream(`${comment}-r`).raw.indexOf(refBytes)).toBeGreaterThan(0);
    const physical = w.direct.db(w.phys).collection<Loose>('alpha_dbref');
    if (w.ferret) {
      // FerretDB v1 refuses `$`-prefixed keys in updates (DBRefs among them): nothing stored, nothing changed.
      expect(errorCode(set)).toBe(2);
      expect(errorCode(rep)).toBe(2);
      expect(await alphaPhysical('dbref', { _id: 'h1' })).toEqual([{ _id: 'h1', v: 0, zz: 'beta', app_id: 'alpha' }]);
    } else {
      expect(set, EJSON.stringify(set)).toMatchObject({ ok: 1, nModified: 1 });
      const [stored] = await physical.find({ _id: 'h1' }, { raw: true }).toArray();
      const expected = serialize({ _id: 'h1', v: 0, zz: 'beta', app_id: 'alpha', ref, list: [ref] });
      expect(Buffer.from(stored as unknown as Uint8Array).equals(Buffer.from(expected))).toBe(true);
      expect(errorCode(rep)).toBeUndefined();
      const [replaced] = await physical.find({ _id: 'h2' }, { raw: true }).toArray();
      expect(Buffer.from(replaced as unknown as Uint8Array).indexOf(refBytes)).toBeGreaterThan(0);
    }
    await physical.deleteOne({ _id: 'h2' });
    await w.expectBetaUnchanged();
  });
});
