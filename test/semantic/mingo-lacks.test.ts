/**
 * What mingo cannot evaluate keeps a shape test here: the rewritten command is checked for the scoping
 * the semantic tests would otherwise prove (tag condition at the top level, names mapped, options kept).
 */
import { describe, expect, it } from 'vitest';
import { lookupCommand } from '../../src/policy/commands.js';
import { rewriteCommand } from '../../src/policy/rewrite.js';
import { makeScope, type Doc } from '../../src/policy/scope.js';

const scope = makeScope('app', 'mdb_runtime', 'app_id');
const rw = (body: Doc): Doc => {
  const name = Object.keys(body)[0]!;
  return rewriteCommand(scope, lookupCommand(name)!, name, { ...body, $db: 'appdb' }, []).body;
};
const collation = { locale: 'en', strength: 2 };

describe('features mingo lacks: shape only', () => {
  it('mingo lacks collation in query matching (it has it for sorting only): shape only', () => {
    // A collation can make one _id match several documents: never the unscoped point-read path.
    expect(rw({ find: 'c', filter: { _id: 'A' }, collation })).toMatchObject({ find: 'app_c', filter: { _id: 'A', app_id: 'app' }, collation });
    expect(rw({ update: 'c', updates: [{ q: { s: 'a' }, u: { $set: { x: 1 } }, collation }] }).updates).toEqual([{ q: { s: 'a', app_id: 'app' }, u: { $set: { x: 1 } }, collation }]);
    expect(rw({ delete: 'c', deletes: [{ q: { s: 'a' }, limit: 0, collation }] }).deletes).toEqual([{ q: { s: 'a', app_id: 'app' }, limit: 0, collation }]);
    expect(rw({ aggregate: 'c', pipeline: [], cursor: {}, collation })).toMatchObject({ pipeline: [{ $match: { app_id: 'app' } }, { $unset: 'app_id' }], collation });
  });

  it('mingo lacks $text (text indexes): shape only', () => {
    expect(rw({ find: 'c', filter: { $text: { $search: 'coffee' } } }).filter).toEqual({ $text: { $search: 'coffee' }, app_id: 'app' });
    expect(rw({ aggregate: 'c', pipeline: [{ $match: { $text: { $search: 'x' } } }], cursor: {} }).pipeline).toEqual([{ $match: { $text: { $search: 'x' }, app_id: 'app' } }, { $unset: 'app_id' }]);
  });

  it('mingo lacks $jsonSchema without a validator: shape only', () => {
    const schema = { $jsonSchema: { required: ['a'] } };
    expect(rw({ find: 'c', filter: schema }).filter).toEqual({ ...schema, app_id: 'app' });
  });

  it('mingo lacks geospatial operators ($geoNear, $near): shape only', () => {
    expect(rw({ aggregate: 'c', pipeline: [{ $geoNear: { near: [0, 0], distanceField: 'd', query: { $expr: { $gt: [{ $size: { $objectToArray: '$$ROOT' } }, 1] } } } }], cursor: {} }).pipeline).toEqual([
      { $geoNear: { near: [0, 0], distanceField: 'd', query: { $expr: { $gt: [{ $size: { $objectToArray: { $unsetField: { field: 'app_id', input: '$$ROOT' } } } }, 1] }, app_id: 'app' } } },
      { $unset: 'app_id' },
    ]);
    expect(rw({ find: 'c', filter: { loc: { $near: [0, 0] } } }).filter).toEqual({ loc: { $near: [0, 0] }, app_id: 'app' });
  });

  it('mingo lacks Atlas Search ($search, $vectorSearch): shape only', () => {
    expect(rw({ aggregate: 'c', pipeline: [{ $search: { text: { query: 'q', path: 't' } } }], cursor: {} }).pipeline).toEqual([
      { $search: { text: { query: 'q', path: 't' } } },
      { $match: { app_id: 'app' } },
      { $unset: 'app_id' },
    ]);
  });

  it('mingo lacks change streams: shape only', () => {
    expect(rw({ aggregate: 'c', pipeline: [{ $changeStream: {} }], cursor: {} }).pipeline).toEqual([{ $changeStream: {} }]);
  });

  it('mingo lacks TTL and partial indexes: shape only', () => {
    const indexes = [{ key: { at: 1 }, name: 'ttl', expireAfterSeconds: 60, partialFilterExpression: { done: true } }];
    expect(rw({ createIndexes: 'c', indexes })).toMatchObject({ createIndexes: 'app_c', indexes });
  });
});
