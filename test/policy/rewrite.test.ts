import { Binary, BSONRegExp, Code, deserialize, serialize, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import { commandHelp, lookupCommand } from '../../src/policy/commands.js';
import { CommandError } from '../../src/policy/errors.js';
import { rewriteCommand } from '../../src/policy/rewrite.js';
import { makeScope, type Doc } from '../../src/policy/scope.js';
import { mapSessionId } from '../../src/policy/session-ids.js';
import type { DocumentSequence } from '../../src/wire/opmsg.js';
import type { RewrittenCommand } from '../../src/policy/handler.js';

const scope = makeScope('app1', 'mdb_runtime', 'app_id');
const other = makeScope('app2', 'mdb_runtime', 'app_id');
const TAG = { app_id: 'app1' };
/** Pipelines drop the tag where documents enter, so no stage shows it. */
const HIDE = { $unset: 'app_id' };
const DB = 'mdb_runtime';
const LSID = new Binary(Buffer.alloc(16, 9), Binary.SUBTYPE_UUID);

function rw(body: Doc, sequences: DocumentSequence[] = [], s = scope): RewrittenCommand {
  const name = Object.keys(body)[0]!;
  const spec = lookupCommand(name);
  if (!spec) throw new Error(`no spec for ${name}`);
  return rewriteCommand(s, spec, name, body, sequences);
}

function refused(body: Doc, sequences: DocumentSequence[] = []): CommandError {
  try {
    rw(body, sequences);
  } catch (err) {
    if (err instanceof CommandError) return err;
    throw err;
  }
  throw new Error(`expected ${JSON.stringify(body)} to be refused`);
}

const seq = (identifier: string, docs: Document[]): DocumentSequence => ({
  identifier,
  documents: docs.map((d) => Buffer.from(serialize(d))),
});

describe('rewritten commands (exact output)', () => {
  const cases: [string, Doc, Doc][] = [
    ['find without filter', { find: 'tasks', $db: 'mine' }, { find: 'app1_tasks', $db: DB, filter: TAG }],
    [
      'find with filter, sort, projection',
      { find: 'tasks', filter: { done: false }, sort: { at: -1 }, projection: { title: 1 }, batchSize: 7, $db: 'mine' },
      { find: 'app1_tasks', filter: { done: false, app_id: 'app1' }, sort: { at: -1 }, projection: { title: 1 }, batchSize: 7, $db: DB },
    ],
    [
      'find whose filter names the tag: wrapped, never replaced',
      { find: 'tasks', filter: { app_id: 'app2' }, $db: 'mine' },
      { find: 'app1_tasks', filter: { $and: [{ app_id: 'app2' }], app_id: 'app1' }, $db: DB },
    ],
    [
      'find whose filter names the tag next to other fields and an $and: only the tag condition moves',
      { find: 'tasks', filter: { a: 1, app_id: { $ne: 'app1' }, $and: [{ b: 2 }] }, $db: 'mine' },
      { find: 'app1_tasks', filter: { a: 1, $and: [{ b: 2 }, { app_id: { $ne: 'app1' } }], app_id: 'app1' }, $db: DB },
    ],
    [
      'find whose filter is exactly the own tag: left as it is',
      { find: 'tasks', filter: { app_id: 'app1', a: 1 }, $db: 'mine' },
      { find: 'app1_tasks', filter: { app_id: 'app1', a: 1 }, $db: DB },
    ],
    [
      // Upserts take the inserted document's fields from top-level equalities (FerretDB ignores $and):
      // with the tag inside $and, FerretDB inserted a document with no tag at all.
      'upsert whose filter names another tag: our tag stays a top-level equality',
      { update: 'c', updates: [{ q: { app_id: 'app2', k: 1 }, u: { $set: { v: 1 } }, upsert: true }], $db: 'x' },
      { update: 'app1_c', updates: [{ q: { k: 1, $and: [{ app_id: 'app2' }], app_id: 'app1' }, u: { $set: { v: 1 } }, upsert: true }], $db: DB },
    ],
    [
      'findAndModify upsert whose query names another tag: our tag stays a top-level equality',
      { findAndModify: 'c', query: { app_id: { $ne: 'app1' } }, update: { $set: { v: 1 } }, upsert: true, $db: 'x' },
      { findAndModify: 'app1_c', query: { $and: [{ app_id: { $ne: 'app1' } }], app_id: 'app1' }, update: { $set: { v: 1 } }, upsert: true, $db: DB },
    ],
    [
      'find with $or at the top',
      { find: 't', filter: { $or: [{ a: 1 }, { b: 2 }] }, $db: 'x' },
      { find: 'app1_t', filter: { $or: [{ a: 1 }, { b: 2 }], app_id: 'app1' }, $db: DB },
    ],
    [
      'insert (body documents): stamped, or kept when they carry the app\'s own tag',
      { insert: 'c', documents: [{ a: 1 }, { b: 2, app_id: 'app1' }], ordered: false, $db: 'x' },
      { insert: 'app1_c', documents: [{ a: 1, app_id: 'app1' }, { b: 2, app_id: 'app1' }], ordered: false, $db: DB },
    ],
    ['count', { count: 'c', query: { n: 1 }, $db: 'x' }, { count: 'app1_c', query: { n: 1, app_id: 'app1' }, $db: DB }],
    ['count without query', { count: 'c', $db: 'x' }, { count: 'app1_c', query: TAG, $db: DB }],
    ['distinct', { distinct: 'c', key: 'k', $db: 'x' }, { distinct: 'app1_c', key: 'k', query: TAG, $db: DB }],
    [
      'delete (body statements)',
      { delete: 'c', deletes: [{ q: { a: 1 }, limit: 1 }, { q: {}, limit: 0 }], ordered: true, $db: 'x' },
      { delete: 'app1_c', deletes: [{ q: { a: 1, app_id: 'app1' }, limit: 1 }, { q: TAG, limit: 0 }], ordered: true, $db: DB },
    ],
    [
      'update with operators, upsert',
      { update: 'c', updates: [{ q: { a: 1 }, u: { $set: { b: 2 } }, upsert: true }], $db: 'x' },
      { update: 'app1_c', updates: [{ q: { a: 1, app_id: 'app1' }, u: { $set: { b: 2 } }, upsert: true }], $db: DB },
    ],
    [
      'update with a replacement: stamped',
      { update: 'c', updates: [{ q: { _id: 1 }, u: { title: 'x' }, upsert: true }], $db: 'x' },
      { update: 'app1_c', updates: [{ q: { _id: 1, app_id: 'app1' }, u: { title: 'x', app_id: 'app1' }, upsert: true }], $db: DB },
    ],
    [
      // Its expressions see the document as the app does ($$ROOT without the tag): test/semantic checks the meaning.
      'update with a pipeline: the tag is set last, $$ROOT seen without it',
      { update: 'c', updates: [{ q: {}, u: [{ $set: { n: 1, r: '$$ROOT' } }, { $replaceWith: { a: 1 } }] }], $db: 'x' },
      {
        update: 'app1_c',
        updates: [
          {
            q: TAG,
            u: [
              { $set: { n: 1, r: { $unsetField: { field: 'app_id', input: '$$ROOT' } } } },
              { $replaceWith: { a: 1 } },
              { $set: { app_id: { $literal: 'app1' } } },
            ],
          },
        ],
        $db: DB,
      },
    ],
    [
      'update setting the tag to its own value is allowed',
      { update: 'c', updates: [{ q: {}, u: { $set: { app_id: 'app1', x: 1 } } }], $db: 'x' },
      { update: 'app1_c', updates: [{ q: TAG, u: { $set: { app_id: 'app1', x: 1 } } }], $db: DB },
    ],
    [
      'findAndModify update',
      { findAndModify: 'c', query: { a: 1 }, update: { $inc: { n: 1 } }, new: true, $db: 'x' },
      { findAndModify: 'app1_c', query: { a: 1, app_id: 'app1' }, update: { $inc: { n: 1 } }, new: true, $db: DB },
    ],
    [
      'findandmodify alias, remove',
      { findandmodify: 'c', query: { a: 1 }, remove: true, $db: 'x' },
      { findAndModify: 'app1_c', query: { a: 1, app_id: 'app1' }, remove: true, $db: DB },
    ],
    [
      'findAndModify upsert with replacement',
      { findAndModify: 'c', query: { k: 1 }, update: { k: 1, v: 2 }, upsert: true, $db: 'x' },
      { findAndModify: 'app1_c', query: { k: 1, app_id: 'app1' }, update: { k: 1, v: 2, app_id: 'app1' }, upsert: true, $db: DB },
    ],
    [
      'aggregate: a leading tag $match',
      { aggregate: 'c', pipeline: [{ $group: { _id: '$g', n: { $sum: 1 } } }], cursor: {}, $db: 'x' },
      { aggregate: 'app1_c', pipeline: [{ $match: TAG }, HIDE, { $group: { _id: '$g', n: { $sum: 1 } } }], cursor: {}, $db: DB },
    ],
    [
      "aggregate: the app's leading $match takes the tag, before the tag is hidden",
      { aggregate: 'c', pipeline: [{ $match: { category: 'a', n: { $gt: 1 } } }, { $group: { _id: '$g', n: { $sum: 1 } } }], cursor: {}, $db: 'x' },
      { aggregate: 'app1_c', pipeline: [{ $match: { category: 'a', n: { $gt: 1 }, ...TAG } }, HIDE, { $group: { _id: '$g', n: { $sum: 1 } } }], cursor: {}, $db: DB },
    ],
    [
      'aggregate: a leading $match that names the tag runs after the tag is hidden',
      { aggregate: 'c', pipeline: [{ $match: { app_id: 'app1' } }], cursor: {}, $db: 'x' },
      { aggregate: 'app1_c', pipeline: [{ $match: TAG }, HIDE, { $match: { app_id: 'app1' } }], cursor: {}, $db: DB },
    ],
    [
      'aggregate: a leading $match whose $expr reads the tag runs after the tag is hidden',
      { aggregate: 'c', pipeline: [{ $match: { $expr: { $eq: ['$app_id', 'app2'] } } }], cursor: {}, $db: 'x' },
      { aggregate: 'app1_c', pipeline: [{ $match: TAG }, HIDE, { $match: { $expr: { $eq: ['$app_id', 'app2'] } } }], cursor: {}, $db: DB },
    ],
    [
      'aggregate: a leading $match on a path under the tag runs after the tag is hidden',
      { aggregate: 'c', pipeline: [{ $match: { $or: [{ 'app_id.x': 1 }, { k: 2 }] } }], cursor: {}, $db: 'x' },
      { aggregate: 'app1_c', pipeline: [{ $match: TAG }, HIDE, { $match: { $or: [{ 'app_id.x': 1 }, { k: 2 }] } }], cursor: {}, $db: DB },
    ],
    [
      'aggregate: $lookup pipeline form',
      { aggregate: 'a', pipeline: [{ $lookup: { from: 'b', let: { x: '$x' }, pipeline: [{ $match: { y: 1 } }], as: 'j' } }], cursor: {}, $db: 'x' },
      {
        aggregate: 'app1_a',
        pipeline: [{ $match: TAG }, HIDE, { $lookup: { from: 'app1_b', let: { x: '$x' }, pipeline: [{ $match: { y: 1, ...TAG } }, HIDE], as: 'j' } }],
        cursor: {},
        $db: DB,
      },
    ],
    [
      'aggregate: $lookup equality form gets a scoped pipeline',
      { aggregate: 'a', pipeline: [{ $lookup: { from: 'b', localField: 'x', foreignField: 'y', as: 'j' } }], cursor: {}, $db: 'x' },
      {
        aggregate: 'app1_a',
        pipeline: [{ $match: TAG }, HIDE, { $lookup: { from: 'app1_b', localField: 'x', foreignField: 'y', as: 'j', pipeline: [{ $match: TAG }, HIDE] } }],
        cursor: {},
        $db: DB,
      },
    ],
    [
      'aggregate: $graphLookup',
      { aggregate: 'a', pipeline: [{ $graphLookup: { from: 'b', startWith: '$s', connectFromField: 'f', connectToField: 't', as: 'g', restrictSearchWithMatch: { k: 1 } } }], cursor: {}, $db: 'x' },
      {
        aggregate: 'app1_a',
        pipeline: [
          { $match: TAG },
          HIDE,
          { $graphLookup: { from: 'app1_b', startWith: '$s', connectFromField: 'f', connectToField: 't', as: 'g', restrictSearchWithMatch: { k: 1, app_id: 'app1' } } },
          { $unset: 'g.app_id' },
        ],
        cursor: {},
        $db: DB,
      },
    ],
    [
      'aggregate: $unionWith string form',
      { aggregate: 'a', pipeline: [{ $unionWith: 'b' }], cursor: {}, $db: 'x' },
      { aggregate: 'app1_a', pipeline: [{ $match: TAG }, HIDE, { $unionWith: { coll: 'app1_b', pipeline: [{ $match: TAG }, HIDE] } }], cursor: {}, $db: DB },
    ],
    [
      'aggregate: $facet with a $lookup inside',
      { aggregate: 'a', pipeline: [{ $facet: { f: [{ $lookup: { from: 'b', pipeline: [], as: 'j' } }], g: [{ $count: 'n' }] } }], cursor: {}, $db: 'x' },
      {
        aggregate: 'app1_a',
        pipeline: [{ $match: TAG }, HIDE, { $facet: { f: [{ $lookup: { from: 'app1_b', pipeline: [{ $match: TAG }, HIDE], as: 'j' } }], g: [{ $count: 'n' }] } }],
        cursor: {},
        $db: DB,
      },
    ],
    [
      'aggregate: $out stamps and maps',
      { aggregate: 'a', pipeline: [{ $project: { app_id: 0 } }, { $out: 'b' }], cursor: {}, $db: 'x' },
      {
        aggregate: 'app1_a',
        pipeline: [{ $match: TAG }, HIDE, { $project: { app_id: 0 } }, { $set: { app_id: { $literal: 'app1' } } }, { $out: { coll: 'app1_b', db: DB } }],
        cursor: {},
        $db: DB,
      },
    ],
    [
      'aggregate: $merge stamps and maps',
      { aggregate: 'a', pipeline: [{ $merge: { into: 'b', whenMatched: [{ $set: { n: 1 } }] } }], cursor: {}, $db: 'x' },
      {
        aggregate: 'app1_a',
        pipeline: [
          { $match: TAG },
          HIDE,
          { $set: { app_id: { $literal: 'app1' } } },
          {
            $merge: {
              into: { db: DB, coll: 'app1_b' },
              // The whenMatched pipeline sees the target and $$new without the tag.
              whenMatched: [HIDE, { $set: { n: 1 } }, { $set: { app_id: { $literal: 'app1' } } }],
              let: { new: { $unsetField: { field: 'app_id', input: '$$ROOT' } } },
            },
          },
        ],
        cursor: {},
        $db: DB,
      },
    ],
    [
      'aggregate: $geoNear gets the tag in its query',
      { aggregate: 'a', pipeline: [{ $geoNear: { near: [0, 0], distanceField: 'd', query: { k: 1 } } }], cursor: {}, $db: 'x' },
      { aggregate: 'app1_a', pipeline: [{ $geoNear: { near: [0, 0], distanceField: 'd', query: { k: 1, app_id: 'app1' } } }, HIDE], cursor: {}, $db: DB },
    ],
    [
      'aggregate: $vectorSearch gets the tag in its filter',
      { aggregate: 'a', pipeline: [{ $vectorSearch: { index: 'v', path: 'e', queryVector: [1], limit: 5 } }], cursor: {}, $db: 'x' },
      {
        aggregate: 'app1_a',
        pipeline: [{ $vectorSearch: { index: 'v', path: 'e', queryVector: [1], limit: 5, filter: TAG } }, { $match: TAG }, HIDE],
        cursor: {},
        $db: DB,
      },
    ],
    [
      'aggregate: $search is followed by the tag $match',
      { aggregate: 'a', pipeline: [{ $search: { text: { query: 'q', path: 't' } } }], cursor: {}, $db: 'x' },
      { aggregate: 'app1_a', pipeline: [{ $search: { text: { query: 'q', path: 't' } } }, { $match: TAG }, HIDE], cursor: {}, $db: DB },
    ],
    [
      'aggregate: 1 with $documents',
      { aggregate: 1, pipeline: [{ $documents: [{ a: 1 }] }], cursor: {}, $db: 'x' },
      { aggregate: 1, pipeline: [{ $documents: [{ a: 1 }] }], cursor: {}, $db: DB },
    ],
    ['getMore', { getMore: 5n, collection: 'c', batchSize: 7, $db: 'x' }, { getMore: 5n, collection: 'app1_c', batchSize: 7, $db: DB }],
    ['killCursors', { killCursors: 'c', cursors: [5n], $db: 'x' }, { killCursors: 'app1_c', cursors: [5n], $db: DB }],
    [
      'createIndexes',
      { createIndexes: 'c', indexes: [{ key: { a: 1 }, name: 'a_1', unique: true }], $db: 'x' },
      { createIndexes: 'app1_c', indexes: [{ key: { a: 1 }, name: 'a_1', unique: true }], $db: DB },
    ],
    ['listIndexes', { listIndexes: 'c', cursor: {}, $db: 'x' }, { listIndexes: 'app1_c', cursor: {}, $db: DB }],
    ['dropIndexes', { dropIndexes: 'c', index: '*', $db: 'x' }, { dropIndexes: 'app1_c', index: '*', $db: DB }],
    ['deleteIndexes alias, sent under its canonical name', { deleteIndexes: 'c', index: 'a_1', $db: 'x' }, { dropIndexes: 'app1_c', index: 'a_1', $db: DB }],
    ['create', { create: 'c', capped: true, size: 4096, $db: 'x' }, { create: 'app1_c', capped: true, size: 4096, $db: DB }],
    [
      'create a view: source mapped, pipeline scoped',
      { create: 'v', viewOn: 'c', pipeline: [{ $match: { a: 1 } }], $db: 'x' },
      { create: 'app1_v', viewOn: 'app1_c', pipeline: [{ $match: { a: 1, ...TAG } }, { $set: { app_id: { $literal: 'app1' } } }], $db: DB },
    ],
    ['drop', { drop: 'c', $db: 'x' }, { drop: 'app1_c', $db: DB }],
    [
      'renameCollection within one database, run on admin',
      { renameCollection: 'x.a', to: 'x.b', dropTarget: true, $db: 'admin' },
      { renameCollection: `${DB}.app1_a`, to: `${DB}.app1_b`, dropTarget: true, $db: 'admin' },
    ],
    [
      'listCollections: only the app prefix upstream',
      { listCollections: 1, nameOnly: true, $db: 'x' },
      { listCollections: 1, nameOnly: true, filter: { name: new BSONRegExp('^app1_') }, $db: DB },
    ],
    [
      'listCollections: the app filter stays with the proxy, which evaluates it over the app entries',
      { listCollections: 1, filter: { name: 'tasks', type: 'collection' }, $db: 'x' },
      { listCollections: 1, filter: { name: new BSONRegExp('^app1_') }, $db: DB },
    ],
    ['buildInfo', { buildInfo: 1, $db: 'admin' }, { buildInfo: 1, $db: DB }],
    [
      'commitTransaction keeps its recovery token, maps the session',
      { commitTransaction: 1, txnNumber: 2n, autocommit: false, lsid: { id: LSID }, recoveryToken: { r: 1 }, $db: 'admin' },
      { commitTransaction: 1, txnNumber: 2n, autocommit: false, lsid: { id: mapSessionId(scope, LSID) }, recoveryToken: { r: 1 }, $db: 'admin' },
    ],
    [
      'abortTransaction',
      { abortTransaction: 1, txnNumber: 2n, autocommit: false, lsid: { id: LSID }, $db: 'admin' },
      { abortTransaction: 1, txnNumber: 2n, autocommit: false, lsid: { id: mapSessionId(scope, LSID) }, $db: 'admin' },
    ],
    ['endSessions', { endSessions: [{ id: LSID }], $db: 'admin' }, { endSessions: [{ id: mapSessionId(scope, LSID) }], $db: DB }],
    ['killSessions', { killSessions: [{ id: LSID }], $db: 'admin' }, { killSessions: [{ id: mapSessionId(scope, LSID) }], $db: DB }],
    ['refreshSessions', { refreshSessions: [{ id: LSID }], $db: 'admin' }, { refreshSessions: [{ id: mapSessionId(scope, LSID) }], $db: DB }],
    [
      'explain of a find: the explained command is the scoped one',
      { explain: { find: 'c', filter: { a: 1 } }, verbosity: 'queryPlanner', $db: 'x' },
      { explain: { find: 'app1_c', filter: { a: 1, app_id: 'app1' } }, verbosity: 'queryPlanner', $db: DB },
    ],
  ];

  it.each(cases)('%s', (_title, input, expected) => {
    expect(rw(input).body).toEqual(expected);
  });

  it('covers every forwarded command of the table with at least one exact case', () => {
    const covered = new Set(cases.map(([, input]) => lookupCommand(Object.keys(input)[0]!)!.name));
    const forwarded = commandHelp().map(({ name }) => name).filter((name) => lookupCommand(name)!.handler);
    expect(forwarded.length).toBeGreaterThan(20);
    expect(forwarded.filter((name) => !covered.has(name))).toEqual([]);
  });

  it('maps the lsid per app, identically for the same id, differently across apps', () => {
    const id = new Binary(Buffer.alloc(16, 7), Binary.SUBTYPE_UUID);
    const a = rw({ find: 'c', lsid: { id }, txnNumber: 3n, $db: 'x' }).body;
    const b = rw({ find: 'c', lsid: { id }, $db: 'x' }, [], other).body;
    expect((a.lsid as Doc).id).toEqual(mapSessionId(scope, id));
    expect(a.txnNumber).toBe(3n);
    expect(Buffer.from((a.lsid as { id: Binary }).id.buffer)).not.toEqual(Buffer.from(id.buffer));
    expect(Buffer.from((a.lsid as { id: Binary }).id.buffer)).not.toEqual(Buffer.from((b.lsid as { id: Binary }).id.buffer));
    expect(rw({ endSessions: [{ id }], $db: 'admin' }).body.endSessions).toEqual([{ id: mapSessionId(scope, id) }]);
  });

  it('maps the lsid of an explained command too (it would reach the upstream as the app sent it)', () => {
    const id = new Binary(Buffer.alloc(16, 9), Binary.SUBTYPE_UUID);
    const out = rw({ explain: { find: 'c', lsid: { id } }, $db: 'x' }).body;
    expect((out.explain as Doc).lsid).toEqual({ id: mapSessionId(scope, id) });
    expect(() => rw({ explain: { find: 'c', lsid: { id, uid: id } }, $db: 'x' })).toThrow(CommandError);
  });

  it('stamps kind-1 insert documents at the byte level', () => {
    const out = rw({ insert: 'c', $db: 'x' }, [seq('documents', [{ _id: 1, a: 1 }, { _id: 2, app_id: 'app1' }])]);
    expect(out.body).toEqual({ insert: 'app1_c', $db: DB });
    expect(out.sequences[0]!.documents.map((d) => deserialize(d))).toEqual([{ _id: 1, a: 1, app_id: 'app1' }, { _id: 2, app_id: 'app1' }]);
  });

  it('stamps body insert documents', () => {
    expect(rw({ insert: 'c', documents: [{ a: 1 }], $db: 'x' }).body).toEqual({ insert: 'app1_c', documents: [{ a: 1, app_id: 'app1' }], $db: DB });
  });

  it('rewrites kind-1 update and delete statements', () => {
    const up = rw({ update: 'c', $db: 'x' }, [seq('updates', [{ q: { a: 1 }, u: { $set: { b: 1 } }, multi: true }])]);
    expect(deserialize(up.sequences[0]!.documents[0]!)).toEqual({ q: { a: 1, app_id: 'app1' }, u: { $set: { b: 1 } }, multi: true });
    const del = rw({ delete: 'c', $db: 'x' }, [seq('deletes', [{ q: {}, limit: 0 }])]);
    expect(deserialize(del.sequences[0]!.documents[0]!)).toEqual({ q: TAG, limit: 0 });
  });

  it('reports the collections each command touches, for RBAC', () => {
    expect(rw({ find: 'a', $db: 'x' }).access).toEqual([{ action: 'read', collection: 'a' }]);
    expect(rw({ insert: 'a', documents: [], $db: 'x' }).access).toEqual([{ action: 'write', collection: 'a' }]);
    expect(rw({ createIndexes: 'a', indexes: [], $db: 'x' }).access).toEqual([{ action: 'indexes', collection: 'a' }]);
    expect(
      rw({ aggregate: 'a', pipeline: [{ $lookup: { from: 'b', pipeline: [], as: 'j' } }, { $out: 'c' }], cursor: {}, $db: 'x' }).access,
    ).toEqual([
      { action: 'read', collection: 'a' },
      { action: 'read', collection: 'b' },
      { action: 'write', collection: 'c' },
    ]);
  });
});

describe('refused forms', () => {
  const cases: [string, Doc, number, DocumentSequence[]?][] = [
    ['$where in a filter', { find: 'c', filter: { $where: 'true' }, $db: 'x' }, 224],
    ['$where nested in $or', { find: 'c', filter: { $or: [{ a: 1 }, { $where: 'sleep(1)' }] }, $db: 'x' }, 224],
    ['$function in $expr', { find: 'c', filter: { $expr: { $function: { body: 'f', args: [], lang: 'js' } } }, $db: 'x' }, 224],
    ['$accumulator in $group', { aggregate: 'c', pipeline: [{ $group: { _id: 1, a: { $accumulator: {} } } }], cursor: {}, $db: 'x' }, 224],
    ['a BSON Code value', { find: 'c', filter: { a: new Code('1') }, $db: 'x' }, 224],
    ['$where in a kind-1 update statement', { update: 'c', $db: 'x' }, 224, [seq('updates', [{ q: { $where: '1' }, u: { $set: { a: 1 } } }])]],
    ['an unknown top-level field', { find: 'c', frobnicate: 1, $db: 'x' }, 40415],
    ['bypassDocumentValidation', { insert: 'c', documents: [], bypassDocumentValidation: true, $db: 'x' }, 13],
    ['collectionUUID', { find: 'c', collectionUUID: new Binary(Buffer.alloc(16), 4), $db: 'x' }, 13],
    ['a collection UUID as the target', { find: new Binary(Buffer.alloc(16), 4), $db: 'x' }, 73],
    ['an empty collection name', { find: '', $db: 'x' }, 73],
    ['a $ in the name', { find: 'a$b', $db: 'x' }, 73],
    ['a NUL in the name', { find: 'a\0b', $db: 'x' }, 73],
    ['a system collection', { find: 'system.users', $db: 'x' }, 73],
    ['a name too long after prefixing', { find: 'x'.repeat(240), $db: 'x' }, 73],
    ['a non-string collection', { find: 5, $db: 'x' }, 73],
    ['a bad $db', { find: 'c', $db: 'a.b' }, 73],
    ['a missing $db', { find: 'c' }, 73],
    ['an unknown kind-1 identifier', { insert: 'c', $db: 'x' }, 40415, [seq('updates', [{}])]],
    ['insert with another tag', { insert: 'c', documents: [{ app_id: 'app2' }], $db: 'x' }, 2],
    ['insert with a non-string tag', { insert: 'c', documents: [{ app_id: 5 }], $db: 'x' }, 2],
    ['kind-1 insert with another tag', { insert: 'c', $db: 'x' }, 2, [seq('documents', [{ a: 1 }, { app_id: 'app2' }])]],
    ['$set the tag', { update: 'c', updates: [{ q: {}, u: { $set: { app_id: 'app2' } } }], $db: 'x' }, 66],
    ['$unset the tag', { update: 'c', updates: [{ q: {}, u: { $unset: { app_id: '' } } }], $db: 'x' }, 66],
    ['$rename the tag away', { update: 'c', updates: [{ q: {}, u: { $rename: { app_id: 'x' } } }], $db: 'x' }, 66],
    ['$rename onto the tag', { update: 'c', updates: [{ q: {}, u: { $rename: { x: 'app_id' } } }], $db: 'x' }, 66],
    ['$inc the tag', { update: 'c', updates: [{ q: {}, u: { $inc: { app_id: 1 } } }], $db: 'x' }, 66],
    ['$set a subfield of the tag', { update: 'c', updates: [{ q: {}, u: { $set: { 'app_id.x': 1 } } }], $db: 'x' }, 66],
    ['$setOnInsert another tag', { update: 'c', updates: [{ q: {}, u: { $setOnInsert: { app_id: 'app2' } }, upsert: true }], $db: 'x' }, 66],
    ['a replacement with another tag', { update: 'c', updates: [{ q: {}, u: { app_id: 'app2' } }], $db: 'x' }, 66],
    ['findAndModify setting the tag', { findAndModify: 'c', query: {}, update: { $set: { app_id: 'app2' } }, $db: 'x' }, 66],
    ['an unknown update statement field', { update: 'c', updates: [{ q: {}, u: { $set: { a: 1 } }, upsertSupplied: true }], $db: 'x' }, 40415],
    ['$lookup into another database', { aggregate: 'c', pipeline: [{ $lookup: { from: { db: 'other', coll: 'c' }, pipeline: [], as: 'j' } }], cursor: {}, $db: 'x' }, 13],
    ['$out to another database', { aggregate: 'c', pipeline: [{ $out: { db: 'other', coll: 'c' } }], cursor: {}, $db: 'x' }, 13],
    ['$merge into another database', { aggregate: 'c', pipeline: [{ $merge: { into: { db: 'other', coll: 'c' } } }], cursor: {}, $db: 'x' }, 13],
    ['$unionWith another database', { aggregate: 'c', pipeline: [{ $unionWith: { db: 'other', coll: 'c' } }], cursor: {}, $db: 'x' }, 13],
    ['$lookup from a system collection', { aggregate: 'c', pipeline: [{ $lookup: { from: 'system.views', pipeline: [], as: 'j' } }], cursor: {}, $db: 'x' }, 73],
    ['$currentOp', { aggregate: 1, pipeline: [{ $currentOp: {} }], cursor: {}, $db: 'admin' }, 13],
    ['$currentOp on a collection', { aggregate: 'c', pipeline: [{ $currentOp: {} }], cursor: {}, $db: 'x' }, 13],
    ['$listSessions', { aggregate: 'c', pipeline: [{ $listSessions: {} }], cursor: {}, $db: 'x' }, 13],
    ['$collStats', { aggregate: 'c', pipeline: [{ $collStats: {} }], cursor: {}, $db: 'x' }, 13],
    ['$searchMeta', { aggregate: 'c', pipeline: [{ $searchMeta: {} }], cursor: {}, $db: 'x' }, 13],
    // A $facet sub-pipeline gets no tag filter of its own: $searchMeta is refused wherever it appears.
    ['$searchMeta inside $facet', { aggregate: 'c', pipeline: [{ $facet: { m: [{ $searchMeta: {} }] } }], cursor: {}, $db: 'x' }, 13],
    ['a cluster-wide change stream', { aggregate: 'c', pipeline: [{ $changeStream: { allChangesForCluster: true } }], cursor: {}, $db: 'x' }, 13],
    ['a database-level change stream', { aggregate: 1, pipeline: [{ $changeStream: {} }], cursor: {}, $db: 'x' }, 13],
    ['an unknown stage', { aggregate: 'c', pipeline: [{ $frobnicate: {} }], cursor: {}, $db: 'x' }, 40324],
    ['a stage with two names', { aggregate: 'c', pipeline: [{ $match: {}, $limit: 1 }], cursor: {}, $db: 'x' }, 40323],
    ['$geoNear not first', { aggregate: 'c', pipeline: [{ $limit: 1 }, { $geoNear: {} }], cursor: {}, $db: 'x' }, 40602],
    ['explain', { aggregate: 'c', pipeline: [], explain: true, $db: 'x' }, 13],
    ['explain of a refused command', { explain: { serverStatus: 1 }, $db: 'x' }, 13],
    ['explain of an unknown field', { explain: { find: 'c', frob: 1 }, $db: 'x' }, 40415],
    ['explain with $where', { explain: { find: 'c', filter: { $where: '1' } }, $db: 'x' }, 224],
    ['a view on a system collection', { create: 'v', viewOn: 'system.js', pipeline: [], $db: 'x' }, 73],
    ['renameCollection across databases', { renameCollection: 'x.a', to: 'y.b', $db: 'admin' }, 13],
    ['renameCollection to a system name', { renameCollection: 'x.a', to: 'x.system.users', $db: 'admin' }, 73],
    // The server reads an empty list as every session of its user: the proxy's one user, so every app's.
    ['killSessions with an empty list', { killSessions: [], $db: 'admin' }, 13],
    // A pattern JavaScript cannot compile is the server's 51091, not an internal error.
    ['listCollections with an invalid name regex', { listCollections: 1, filter: { name: { $regex: '(' } }, $db: 'x' }, 51091],
    ['an lsid with a uid', { find: 'c', lsid: { id: new Binary(Buffer.alloc(16), 4), uid: new Binary(Buffer.alloc(32)) }, $db: 'x' }, 13],
    ['an lsid that is not a UUID', { find: 'c', lsid: { id: 'abc' }, $db: 'x' }, 14],
    ['listCollections with a regex RE2 cannot run (a backreference)', { listCollections: 1, filter: { $or: [{ name: /(a)\1/ }] }, $db: 'x' }, 51091],
    ['listCollections with an operator the proxy does not evaluate', { listCollections: 1, filter: { name: { $foo: 1 } }, $db: 'x' }, 2],
  ];

  it.each(cases)('%s', (_title, body, code, sequences) => {
    expect(refused(body, sequences).code).toBe(code);
  });
});
