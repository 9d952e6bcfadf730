/**
 * The oracle's own server (test/helpers/mingo-server.ts) against what the MongoDB manual says, for the
 * stages and writes it implements itself or where the proxy's rewrites lean on a detail: if the oracle
 * were wrong the same way on both sides, the semantic tests would prove nothing.
 */
import { deserialize, serialize } from 'bson';
import { describe, expect, it } from 'vitest';
import { encode, MingoServer, type Doc } from '../helpers/mingo-server.js';

function server(collections: Record<string, Doc[]>): MingoServer {
  const s = new MingoServer();
  for (const [name, docs] of Object.entries(collections)) s.database('db').set(name, docs.map((d) => encode(d)));
  return s;
}

const run = (s: MingoServer, cmd: Doc): Doc => deserialize(s.run(Buffer.from(serialize({ ...cmd, $db: 'db' })))) as Doc;
const batch = (reply: Doc): Doc[] => (reply.cursor as Doc).firstBatch as Doc[];

describe('the oracle server', () => {
  it('$lookup with localField/foreignField and a pipeline runs the pipeline on the matched documents only', () => {
    const s = server({ a: [{ _id: 1, k: 1 }], b: [{ _id: 1, k: 1 }, { _id: 2, k: 2 }, { _id: 3, k: [1, 5] }] });
    const r = run(s, { aggregate: 'a', pipeline: [{ $lookup: { from: 'b', localField: 'k', foreignField: 'k', pipeline: [{ $project: { _id: 1 } }], as: 'j' } }], cursor: {} });
    expect(batch(r)[0]!.j).toEqual([{ _id: 1 }, { _id: 3 }]);
  });

  it('$lookup: a missing local value matches null and missing foreign values; let variables reach nested pipelines', () => {
    const s = server({ a: [{ _id: 1, v: 'x' }], b: [{ _id: 1 }, { _id: 2, k: null }, { _id: 3, k: 0 }] });
    const r = run(s, {
      aggregate: 'a',
      pipeline: [{ $lookup: { from: 'b', localField: 'nope', foreignField: 'k', let: { v: '$v' }, pipeline: [{ $lookup: { from: 'a', pipeline: [{ $match: { $expr: { $eq: ['$v', '$$v'] } } }], as: 'back' } }], as: 'j' } }],
      cursor: {},
    });
    expect((batch(r)[0]!.j as Doc[]).map((d) => [d._id, (d.back as Doc[]).length])).toEqual([[1, 1], [2, 1]]);
  });

  it('$out replaces the target collection; a duplicate _id leaves it as it was', () => {
    const s = server({ a: [{ _id: 1 }, { _id: 2 }], t: [{ _id: 9 }] });
    run(s, { aggregate: 'a', pipeline: [{ $out: 't' }], cursor: {} });
    expect(s.docs('db', 't')).toEqual([{ _id: 1 }, { _id: 2 }]);
    const failed = run(s, { aggregate: 'a', pipeline: [{ $project: { _id: { $literal: 1 } } }, { $out: 't' }], cursor: {} });
    expect(failed.code).toBe(11000);
    expect(s.docs('db', 't')).toEqual([{ _id: 1 }, { _id: 2 }]);
  });

  it.each([
    ['replace', 'insert', [{ _id: 1, v: 'new' }, { _id: 3, v: 'new' }]],
    ['keepExisting', 'insert', [{ _id: 1, v: 'old', w: 1 }, { _id: 3, v: 'new' }]],
    ['merge', 'insert', [{ _id: 1, v: 'new', w: 1 }, { _id: 3, v: 'new' }]],
    ['merge', 'discard', [{ _id: 1, v: 'new', w: 1 }]],
    [[{ $set: { v: { $concat: ['$v', '+', '$$new.v'] } } }], 'insert', [{ _id: 1, v: 'old+new', w: 1 }, { _id: 3, v: 'new' }]],
  ])('$merge whenMatched %j, whenNotMatched %s', (whenMatched, whenNotMatched, expected) => {
    const s = server({ a: [{ _id: 1, v: 'new' }, { _id: 3, v: 'new' }], t: [{ _id: 1, v: 'old', w: 1 }] });
    const r = run(s, { aggregate: 'a', pipeline: [{ $merge: { into: 't', whenMatched, whenNotMatched } }], cursor: {} });
    expect(r.ok).toBe(1);
    expect(s.docs('db', 't')).toEqual(expected);
  });

  it('$merge fails on a match with whenMatched fail, on a miss with whenNotMatched fail; other `on` fields', () => {
    const s = server({ a: [{ _id: 5, k: 'x' }], t: [{ _id: 1, k: 'x' }] });
    expect(run(s, { aggregate: 'a', pipeline: [{ $merge: { into: 't', on: 'k', whenMatched: 'fail' } }], cursor: {} }).code).toBe(11000);
    expect(run(s, { aggregate: 'a', pipeline: [{ $merge: { into: 't', whenNotMatched: 'fail' } }], cursor: {} }).code).toBe(13113);
    // Matched on k, the result's _id differs from the target's: MongoDB refuses to change _id.
    expect(run(s, { aggregate: 'a', pipeline: [{ $merge: { into: 't', on: 'k', whenMatched: 'replace' } }], cursor: {} }).code).toBe(66);
    expect(run(s, { aggregate: 'a', pipeline: [{ $project: { _id: 0, k: 1, n: { $literal: 2 } } }, { $merge: { into: 't', on: ['k'], whenMatched: 'merge' } }], cursor: {} }).ok).toBe(1);
    expect(s.docs('db', 't')).toEqual([{ _id: 1, k: 'x', n: 2 }]);
  });

  it('upserts start from the filter\'s equalities (operators, pipelines) or its _id only (replacements)', () => {
    const s = server({ c: [] });
    run(s, { update: 'c', updates: [{ q: { _id: 1, a: 1, $and: [{ b: 2 }], n: { $gt: 0 } }, u: { $set: { x: 1 }, $setOnInsert: { y: 1 } }, upsert: true }] });
    run(s, { update: 'c', updates: [{ q: { _id: 2, a: 1 }, u: { r: 1 }, upsert: true }] });
    run(s, { update: 'c', updates: [{ q: { _id: 3, a: { $eq: 1 } }, u: [{ $set: { size: { $size: { $objectToArray: '$$ROOT' } } } }], upsert: true }] });
    expect(s.docs('db', 'c')).toEqual([{ _id: 1, a: 1, b: 2, x: 1, y: 1 }, { _id: 2, r: 1 }, { _id: 3, a: 1, size: 2 }]);
  });

  it('update: n, nModified, arrayFilters, and no change when nothing changes', () => {
    const s = server({ c: [{ _id: 1, arr: [{ q: 1 }, { q: 5 }] }, { _id: 2, arr: [] }] });
    const r = run(s, { update: 'c', updates: [{ q: {}, u: { $set: { 'arr.$[e].q': 0 } }, arrayFilters: [{ 'e.q': { $gte: 5 } }], multi: true }] });
    expect([r.n, r.nModified]).toEqual([2, 1]);
    expect(s.docs('db', 'c')[0]).toEqual({ _id: 1, arr: [{ q: 1 }, { q: 0 }] });
  });

  it('findAndModify answers lastErrorObject and value as a server does', () => {
    const s = server({ c: [{ _id: 1, n: 1 }] });
    expect(run(s, { findAndModify: 'c', query: { _id: 1 }, update: { $inc: { n: 1 } }, new: true })).toMatchObject({ lastErrorObject: { n: 1, updatedExisting: true }, value: { _id: 1, n: 2 } });
    expect(run(s, { findAndModify: 'c', query: { _id: 7 }, update: { $set: { n: 0 } }, upsert: true })).toMatchObject({ lastErrorObject: { n: 1, updatedExisting: false, upserted: 7 }, value: null });
    expect(run(s, { findandmodify: 'c', query: { _id: 1 }, remove: true, fields: { n: 1, _id: 0 } })).toMatchObject({ lastErrorObject: { n: 1 }, value: { n: 2 } });
  });

  it('a reserved field is never stored nor returned (the dedicated model of an app)', () => {
    const s = new MingoServer({ reservedField: 'app_id', defaultBatchSize: 1 });
    run(s, { insert: 'c', documents: [{ _id: 1, app_id: 'x', a: 1 }, { _id: 2 }] });
    expect(s.docs('db', 'c')).toEqual([{ _id: 1, a: 1 }, { _id: 2 }]);
    const r = run(s, { aggregate: 'c', pipeline: [{ $set: { app_id: 1 } }], cursor: {} });
    expect(batch(r)).toEqual([{ _id: 1, a: 1 }]);
    expect(run(s, { getMore: (r.cursor as Doc).id, collection: 'c' }).cursor).toMatchObject({ nextBatch: [{ _id: 2 }] });
  });
});
