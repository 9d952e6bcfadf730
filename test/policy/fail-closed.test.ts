/**
 * Fail closed on every BSON value shape, deterministically: the known attack shapes (a value that
 * js-bson would decode as something other than a document, hiding keys from a guard) each refused with
 * the server's error, from the bytes a client sends (run-bytes.ts); the decoder keeping every embedded
 * document a document, byte for byte; and the invariant checker of the property tests shown to fail on
 * what the guards stop.
 */
import { Code, DBRef, deserialize, ObjectId, serialize, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import { decodeDocument, encodeDocument } from '../../src/policy/decode.js';
import type { RewrittenCommand } from '../../src/policy/handler.js';
import { isDoc, makeScope } from '../../src/policy/scope.js';
import { arr, doc, encode, i32, str, type B, type BDoc, type GeneratedCommand } from './arbitraries-bson.js';
import { parse, violations } from './invariant-check.js';
import { runBytes } from './run-bytes.js';

const scope = makeScope('app', 'mdb_runtime', 'app_id');
const $db: [string, B] = ['$db', str('appdb')];
/** The DBRef shape: `$ref` a string and `$id`, which js-bson turns into a DBRef instance. */
const REF: [string, B][] = [['$ref', str('r')], ['$id', str('i')]];
const code = (v: string): B => ({ t: 'code', v });
const codeWithScope = (v: string, scopeDoc: BDoc): B => ({ t: 'codews', v, scope: scopeDoc });
const dbPointer: B = { t: 'dbptr', ns: 'db.c', oid: '65a1b2c3d4e5f60718293a4b' };

function refusal(cmd: GeneratedCommand): { code: number; codeName: string } {
  const outcome = runBytes(scope, cmd);
  if (!outcome.refused) {
    throw new Error(`sent upstream: ${JSON.stringify(deserialize(outcome.bodyBytes, { promoteValues: false }))}`);
  }
  return { code: outcome.refused.code, codeName: outcome.refused.codeName };
}

const body = (...e: [string, B][]): GeneratedCommand => ({ body: doc(...e, $db), sequences: [] });
const updateWith = (u: B, extra: [string, B][] = []): GeneratedCommand =>
  body(['update', str('c')], ['updates', arr(doc(['q', doc(['_id', str('x')])], ['u', u], ...extra))]);

const OPERATOR_SHAPES: [string, B][] = [
  ['$unset of {$ref, $id, app_id}', doc(['$unset', doc(...REF, ['app_id', str('')])])],
  ['$rename of {$ref, $id, zz: "app_id"} (onto the tag)', doc(['$rename', doc(...REF, ['zz', str('app_id')])])],
  ['$rename of {$ref, $id, app_id: "x"} (the tag away)', doc(['$rename', doc(...REF, ['app_id', str('x')])])],
  ['$rename onto a path inside the tag', doc(['$rename', doc(...REF, ['zz', str('app_id.x')])])],
  ["$set of {$ref, $id, app_id: 'app2'}", doc(['$set', doc(...REF, ['app_id', str('app2')])])],
  ["$setOnInsert of {$ref, $id, app_id: 'app2'}", doc(['$setOnInsert', doc(...REF, ['app_id', str('app2')])])],
  ["$max of {$ref, $id, app_id: 'zzz'}", doc(['$max', doc(...REF, ['app_id', str('zzz')])])],
  ['$set of {$ref, $id, $db, "app_id.x"}', doc(['$set', doc(...REF, ['$db', str('d')], ['app_id.x', i32(1)])])],
  ['$set of {$ref, $id, "app_id.$[]"}', doc(['$set', doc(...REF, ['app_id.$[]', i32(1)])])],
  ['$inc of the tag in a DBRef shape whose $ref comes last', doc(['$inc', doc(['app_id', i32(1)], ['$id', i32(1)], ['$ref', str('r')])])],
  ['$unset of a DBRef shape whose $id is itself one', doc(['$unset', doc(['$ref', str('r')], ['$id', doc(...REF)], ['app_id', str('')])])],
  ['$currentDate, $mul, $min, $push, $addToSet, $pop, $pull, $pullAll, $bit of the tag in a DBRef shape', doc(
    ['$currentDate', doc(...REF, ['app_id', { t: 'bool', v: true }])],
  )],
  ...['$mul', '$min', '$push', '$addToSet', '$pop', '$pull', '$pullAll', '$bit'].map((op): [string, B] => [`${op} of the tag in a DBRef shape`, doc([op, doc(...REF, ['app_id', i32(1)])])]),
  ['a field named _bsontype next to the tag ($unset)', doc(['$unset', doc(['_bsontype', str('ObjectId')], ['app_id', str('')])])],
  ['a field named _bsontype next to the tag ($set)', doc(['$set', doc(['_bsontype', str('Code')], ['code', str('x')], ['app_id', str('app2')])])],
];

describe('update operands that would not decode as documents: ImmutableField (66)', () => {
  it.each(OPERATOR_SHAPES)('update with %s', (_what, u) => {
    expect(refusal(updateWith(u))).toMatchObject({ code: 66, codeName: 'ImmutableField' });
  });

  it.each(OPERATOR_SHAPES)('upsert with %s', (_what, u) => {
    expect(refusal(updateWith(u, [['upsert', { t: 'bool', v: true }]]))).toMatchObject({ code: 66 });
  });

  it.each(OPERATOR_SHAPES)('kind-1 update statement with %s', (_what, u) => {
    const cmd: GeneratedCommand = { body: doc(['update', str('c')], $db), sequences: [{ identifier: 'updates', documents: [doc(['q', doc()], ['u', u], ['upsert', { t: 'bool', v: true }])] }] };
    expect(refusal(cmd)).toMatchObject({ code: 66 });
  });

  for (const name of ['findAndModify', 'findandmodify']) {
    it.each(OPERATOR_SHAPES)(`${name} (upsert) with %s`, (_what, u) => {
      expect(refusal(body([name, str('c')], ['query', doc()], ['update', u], ['upsert', { t: 'bool', v: true }]))).toMatchObject({ code: 66 });
    });
  }

  it("a replacement shaped like a DBRef carrying another app's tag: ImmutableField", () => {
    expect(refusal(updateWith(doc(['v', i32(1)], ...REF, ['app_id', str('app2')])))).toMatchObject({ code: 66 });
  });

  it('a replacement shaped like a DBRef: a document, stamped with the tag, its fields in their order', () => {
    const outcome = runBytes(scope, updateWith(doc(['v', i32(1)], ...REF)));
    if (outcome.refused) throw new Error(outcome.refused.message);
    // Read as bytes: js-bson's decoder would make the replacement a DBRef again.
    const updates = parse(outcome.bodyBytes).entries!.find(([k]) => k === 'updates')![1];
    const u = updates.entries![0]![1].entries!.find(([k]) => k === 'u')![1];
    expect(u.entries!.map(([k]) => k)).toEqual(['v', '$ref', '$id', 'app_id']);
  });

  it('an operand that is not a document ($set: 5): FailedToParse (9), the server\'s words', () => {
    const outcome = runBytes(scope, updateWith(doc(['$set', i32(5)])));
    expect(outcome.refused).toMatchObject({ code: 9, codeName: 'FailedToParse' });
    expect(outcome.refused?.message).toContain('Modifiers operate on fields but we found type int instead');
  });

  it('a $rename target that is not a string: BadValue (2)', () => {
    expect(refusal(updateWith(doc(['$rename', doc(['a', doc(['$ref', str('app_id')], ['$id', i32(1)])])])))).toMatchObject({ code: 2 });
  });

  it('a DBPointer anywhere in a request (decoded as a DBRef instance): BadValue (2)', () => {
    expect(refusal(updateWith(doc(['$set', doc(['p', dbPointer])])))).toMatchObject({ code: 2, codeName: 'BadValue' });
    expect(refusal(body(['find', str('c')], ['filter', doc(['p', dbPointer])]))).toMatchObject({ code: 2 });
  });

  it('a DBPointer in an inserted document, forwarded as bytes: kept as it came', () => {
    const inserted = encode(doc(['p', dbPointer]));
    const outcome = runBytes(scope, { body: doc(['insert', str('c')], $db), sequences: [{ identifier: 'documents', documents: [doc(['p', dbPointer])] }] });
    if (outcome.refused) throw new Error(outcome.refused.message);
    expect(outcome.sent.sequences[0]!.documents[0]!.indexOf(inserted.subarray(4, -1))).toBe(4);
  });
});

describe('server-side JavaScript in every shape and position: QueryFeatureNotAllowed (224)', () => {
  const cases: [string, GeneratedCommand][] = [
    ['Code as a field of a DBRef shape in a filter', body(['find', str('c')], ['filter', doc(['a', doc(...REF, ['x', code('sleep(1)')])])])],
    ['Code as the $id of a DBRef shape', body(['find', str('c')], ['filter', doc(['a', doc(['$ref', str('r')], ['$id', code('sleep(1)')])])])],
    ['CodeWScope inside a DBRef shape inside an array', body(['find', str('c')], ['filter', doc(['a', doc(['$in', arr(doc(...REF, ['f', codeWithScope('x', doc())]))])])])],
    ['$where inside a DBRef shape', body(['find', str('c')], ['filter', doc(['a', doc(...REF, ['x', doc(['$where', str('sleep(1)')])])])])],
    ['$where beside a field named _bsontype', body(['find', str('c')], ['filter', doc(['a', doc(['_bsontype', str('x')], ['$where', str('sleep(1)')])])])],
    ['$function inside a DBRef shape in a pipeline', body(['aggregate', str('c')], ['pipeline', arr(doc(['$addFields', doc(['f', doc(...REF, ['x', doc(['$function', doc()])])])]))], ['cursor', doc()])],
    ['$accumulator in a DBRef-shaped $group', body(['aggregate', str('c')], ['pipeline', arr(doc(['$group', doc(['_id', { t: 'null' }], ['n', doc(...REF, ['y', doc(['$accumulator', doc()])])])]))], ['cursor', doc()])],
    ['Code in an update operand shaped like a DBRef', updateWith(doc(['$set', doc(...REF, ['v', code('1')])]))],
    ['Code in a kind-1 update statement', { body: doc(['update', str('c')], $db), sequences: [{ identifier: 'updates', documents: [doc(['q', doc()], ['u', doc(['$set', doc(['v', arr(code('1'))])])])] }] }],
    ['Code in a kind-1 delete statement', { body: doc(['delete', str('c')], $db), sequences: [{ identifier: 'deletes', documents: [doc(['q', doc(['v', doc(...REF, ['c', code('1')])])], ['limit', i32(0)])] }] }],
    ['Code deep in a kind-1 inserted document', { body: doc(['insert', str('c')], $db), sequences: [{ identifier: 'documents', documents: [doc(['a', arr(doc(...REF, ['f', code('x')]))])] }] }],
    ['CodeWScope in a kind-1 inserted document', { body: doc(['insert', str('c')], $db), sequences: [{ identifier: 'documents', documents: [doc(['f', codeWithScope('x', doc(['a', i32(1)]))])] }] }],
    ['$where as a key of a kind-1 inserted document', { body: doc(['insert', str('c')], $db), sequences: [{ identifier: 'documents', documents: [doc(['q', doc(['$where', str('1')])])] }] }],
    ['Code in a body inserted document, hoisted as the data plane does', { body: doc(['insert', str('c')], ['documents', arr(doc(['f', code('x')]))], $db), sequences: [], hoist: true }],
    ['Code in a $geoNear query shaped like a DBRef', body(['aggregate', str('c')], ['pipeline', arr(doc(['$geoNear', doc(['near', arr(i32(0), i32(0))], ['distanceField', str('d')], ['query', doc(...REF, ['c', code('1')])])]))], ['cursor', doc()])],
  ];
  it.each(cases)('%s', (_what, cmd) => {
    expect(refusal(cmd)).toMatchObject({ code: 224, codeName: 'QueryFeatureNotAllowed' });
  });
});

describe('first-stage rewrites fail closed on operands they do not expect', () => {
  const agg = (...stages: B[]): GeneratedCommand => body(['aggregate', str('c')], ['pipeline', arr(...stages)], ['cursor', doc()]);
  const near: [string, B][] = [['near', arr(i32(0), i32(0))], ['distanceField', str('d')]];
  const cases: [string, GeneratedCommand, number][] = [
    ['$geoNear shaped like a DBRef', agg(doc(['$geoNear', doc(...REF, ...near)])), 2],
    ['$geoNear with a field it does not take', agg(doc(['$geoNear', doc(...near, ['app_id', str('app2')])])), 2],
    ['$geoNear whose argument is not a document', agg(doc(['$geoNear', arr(doc(...near))])), 10065],
    ['$geoNear whose query is not a document', agg(doc(['$geoNear', doc(...near, ['query', arr(doc(['app_id', str('app2')]))])])), 14],
    ['$vectorSearch shaped like a DBRef', agg(doc(['$vectorSearch', doc(...REF, ['index', str('i')], ['path', str('v')])])), 40415],
    ['$vectorSearch whose argument is not a document', agg(doc(['$vectorSearch', str('x')])), 10065],
    ['$vectorSearch whose filter is not a document', agg(doc(['$vectorSearch', doc(['index', str('i')], ['filter', str('x')])])), 14],
    ['$search whose argument is not a document', agg(doc(['$search', arr()])), 10065],
    ['$changeStream whose argument is not a document', agg(doc(['$changeStream', i32(1)])), 10065],
    ['$changeStream with allChangesForCluster: 1 (not the boolean)', agg(doc(['$changeStream', doc(['allChangesForCluster', i32(1)])])), 13],
    ['$changeStream with an option it does not know', agg(doc(['$changeStream', doc(['allowToRunOnConfigDB', { t: 'bool', v: true }])])), 40415],
    ['$changeStream shaped like a DBRef', agg(doc(['$changeStream', doc(...REF)])), 40415],
    ['$geoNear first in a $facet (reads the collection unscoped)', agg(doc(['$facet', doc(['x', arr(doc(['$geoNear', doc(...near)]))])])), 40600],
    ['$search first in a $lookup without from', agg(doc(['$lookup', doc(['pipeline', arr(doc(['$search', doc()]))], ['as', str('j')])])), 40600],
    ['$changeStream first in a $lookup sub-pipeline', agg(doc(['$lookup', doc(['from', str('d')], ['pipeline', arr(doc(['$changeStream', doc()]))], ['as', str('j')])])), 40600],
    ['$vectorSearch in a $unionWith on $documents', agg(doc(['$unionWith', doc(['pipeline', arr(doc(['$vectorSearch', doc()]))])])), 40600],
  ];
  it.each(cases)('%s', (_what, cmd, codeNumber) => {
    expect(refusal(cmd).code).toBe(codeNumber);
  });

  it('$geoNear and $vectorSearch of the expected shape: the tag filter goes inside them', () => {
    for (const cmd of [agg(doc(['$geoNear', doc(...near, ['query', doc(['app_id', str('app2')])])])), agg(doc(['$vectorSearch', doc(['index', str('i')], ['path', str('v')], ['filter', doc(['k', i32(1)])])]))]) {
      const outcome = runBytes(scope, cmd);
      if (outcome.refused) throw new Error(outcome.refused.message);
      expect(violations(scope, outcome.canonical, outcome.sent, outcome.bodyBytes)).toEqual([]);
    }
  });
});

describe('the decoder keeps every embedded document a document', () => {
  const oid = new ObjectId('65a1b2c3d4e5f60718293a4b');
  const shapes: [string, Document][] = [
    ['a DBRef with an ObjectId', { r: { $ref: 'people', $id: oid } }],
    ['with $db', { r: { $ref: 'people', $id: oid, $db: 'other' } }],
    ['with extra fields, one a DBRef', { r: { $ref: 'people', $id: 1, name: 'n', more: { $ref: 'x', $id: 2 } } }],
    ['a $ref holding a dot (js-bson would split it into $db)', { r: { $ref: 'a.b', $id: 1 } }],
    ['fields before $ref', { r: { kind: 'k', $ref: 'people', $id: 1 } }],
    ['$id before $ref', { r: { $id: 1, $ref: 'people' } }],
    ['a DBRef whose $id is a DBRef', { r: { $ref: 'a', $id: { $ref: 'b', $id: { $ref: 'c', $id: 3 } } } }],
    ['DBRefs in arrays in arrays', { r: [[{ $ref: 'a', $id: 1 }], { x: [{ $ref: 'b', $id: 2, z: 1 }] }] }],
    ['the whole document shaped like a DBRef', { $ref: 'top', $id: 1, app_id: 'x' }],
    ['a look-alike that is not one ($ref not a string)', { r: { $ref: 1, $id: 1 } }],
    ['a string holding the bytes of a $ref element', { s: '\u0002$ref\u0000', r: { $ref: 'x', $id: 1 } }],
  ];
  it.each(shapes)('%s: re-encodes to the same bytes, plain documents all the way down', (_what, value) => {
    const bytes = Buffer.from(serialize(value));
    const decoded = decodeDocument(bytes);
    expect(encodeDocument(decoded).equals(bytes)).toBe(true);
    const walk = (v: unknown): void => {
      expect(v instanceof DBRef).toBe(false);
      if (Array.isArray(v)) v.forEach(walk);
      else if (isDoc(v)) Object.values(v).forEach(walk);
    };
    walk(decoded);
  });

  it('duplicate keys: the last one wins, as js-bson decides everywhere else', () => {
    const bytes = encode(doc(['r', doc(...REF, ['app_id', str('a')])], ['r', doc(...REF, ['app_id', str('b')], ['k', i32(1)])]));
    expect(decodeDocument(bytes)).toEqual({ r: { $ref: 'r', $id: 'i', app_id: 'b', k: expect.anything() } });
  });

  it('a field named __proto__ inside a DBRef shape stays a field, not a prototype', () => {
    const decoded = decodeDocument(encode(doc(['r', doc(...REF, ['__proto__', doc(['app_id', str('x')])])])));
    const r = decoded.r as Record<string, unknown>;
    expect(Object.getPrototypeOf(r)).toBe(Object.prototype);
    expect(Object.keys(r)).toEqual(['$ref', '$id', '__proto__']);
  });

  it('the scope of a CodeWScope is restored too (for the reply path, which decodes and re-encodes)', () => {
    const value = { c: new Code('x', { r: { a: 1, $ref: 'p', $id: 1 } }) };
    const bytes = Buffer.from(serialize(value));
    expect(encodeDocument(decodeDocument(bytes)).equals(bytes)).toBe(true);
  });

  it('a DBPointer stays a DBRef instance: the one value the request path refuses as unclassifiable', () => {
    expect(decodeDocument(encode(doc(['p', dbPointer]))).p).toBeInstanceOf(DBRef);
  });
});

describe('honest DBRefs go upstream as sent', () => {
  it('an update $set and an inserted document holding DBRefs: the same bytes', () => {
    const ref = doc(['kind', str('k')], ['$ref', str('a.b')], ['$id', i32(1)], ['$db', str('d')]);
    const outcome = runBytes(scope, updateWith(doc(['$set', doc(['r', ref], ['list', arr(ref)])])));
    if (outcome.refused) throw new Error(outcome.refused.message);
    const sent = outcome.bodyBytes;
    const refBytes = encode(ref).subarray(4, -1);
    expect(sent.indexOf(refBytes)).toBeGreaterThan(0);
    expect(sent.lastIndexOf(refBytes)).toBeGreaterThan(sent.indexOf(refBytes));
  });
});

describe('the invariant checker fails on what the guards stop', () => {
  const sent = (bodyDoc: BDoc, sequences: RewrittenCommand['sequences'] = []): [RewrittenCommand, Buffer] => [
    { body: {}, sequences, access: [], reply: { kind: 'plain', appDb: 'x', collections: [] } },
    encode(bodyDoc),
  ];
  const db: [string, B] = ['$db', str('mdb_runtime')];
  const q = doc(['app_id', str('app')]);
  const bad: [string, string, [RewrittenCommand, Buffer]][] = [
    ['$unset of the tag', 'update', sent(doc(['update', str('app_c')], ['updates', arr(doc(['q', q], ['u', doc(['$unset', doc(['app_id', str('')])])]))], db))],
    ['$rename onto the tag', 'update', sent(doc(['update', str('app_c')], ['updates', arr(doc(['q', q], ['u', doc(['$rename', doc(['zz', str('app_id.x')])])]))], db))],
    ['a filter without the tag', 'delete', sent(doc(['delete', str('app_c')], ['deletes', arr(doc(['q', doc()]))], db))],
    ['two tags in a filter', 'count', sent(doc(['count', str('app_c')], ['query', doc(['app_id', str('app')], ['app_id', str('app2')])], db))],
    ['a foreign namespace', 'find', sent(doc(['find', str('app2_c')], ['filter', q], db))],
    ['an inserted document without the tag', 'insert', sent(doc(['insert', str('app_c')], db), [{ identifier: 'documents', documents: [encode(doc(['a', i32(1)]))] }])],
    ['a Code value', 'find', sent(doc(['find', str('app_c')], ['filter', doc(['app_id', str('app')], ['f', code('1')])], db))],
    ['a pipeline update without the final stamp', 'update', sent(doc(['update', str('app_c')], ['updates', arr(doc(['q', q], ['u', arr(doc(['$set', doc(['a', i32(1)])]))]))], db))],
    ['$geoNear without the tag in its query', 'aggregate', sent(doc(['aggregate', str('app_c')], ['pipeline', arr(doc(['$geoNear', doc(['query', doc()])]))], db))],
    ['a $lookup sub-pipeline without the tag', 'aggregate', sent(doc(['aggregate', str('app_c')], ['pipeline', arr(doc(['$match', q]), doc(['$lookup', doc(['from', str('app_d')], ['pipeline', arr()])]))], db))],
  ];
  it.each(bad)('%s', (_what, canonical, [out, bytes]) => {
    expect(violations(scope, canonical, out, bytes).length).toBeGreaterThan(0);
  });
});
