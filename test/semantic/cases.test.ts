/**
 * Hand-written oracle cases, one table per feature the proxy rewrites: each runs the app's command on a
 * database of its own and, rewritten, on the shared one (three apps, a look-alike slug, planted
 * documents), and requires the same replies and effects (test/helpers/mingo-oracle.ts). Each case also
 * says what it must produce, so that an oracle agreeing on nothing (two empty results) cannot pass.
 */
import { deserialize, serialize } from 'bson';
import { describe, expect, it } from 'vitest';
import { lookupCommand } from '../../src/policy/commands.js';
import { decodeDocument, encodeDocument } from '../../src/policy/decode.js';
import { rewriteReply } from '../../src/policy/reply.js';
import { rewriteCommand } from '../../src/policy/rewrite.js';
import { makeScope } from '../../src/policy/scope.js';
import { buildServers, checkCase, DATABASE, TAG, type OracleResult } from '../helpers/mingo-oracle.js';
import type { Doc } from '../helpers/mingo-server.js';
import { SUBJECT, world } from './fixture.js';

/** What a case must give the app, beyond agreeing with the dedicated database. */
type Expect = (r: OracleResult) => void;

const batch = (r: OracleResult): Doc[] =>
  r.replies.flatMap((reply) => {
    const cursor = reply.cursor as Doc | undefined;
    return ((cursor?.firstBatch ?? cursor?.nextBatch ?? []) as Doc[]);
  });
const docs = (n: number): Expect => (r) => expect(batch(r)).toHaveLength(n);
const someDocs: Expect = (r) => expect(batch(r).length).toBeGreaterThan(0);
const ok: Expect = (r) => expect(Number(r.replies[0]?.ok)).toBe(1);
const fails = (code: number): Expect => (r) => expect(Number(r.replies[0]?.code)).toBe(code);
const writes = (n: number): Expect => (r) => expect(Number(r.replies[0]?.n)).toBe(n);
/** No document of the reply shows the tag at any depth it did not hold as data. */
const noTagValue: Expect = (r) => expect(JSON.stringify(r.replies)).not.toMatch(/"app_id":"app"/);

type Case = [title: string, command: Doc, expectation: Expect, sequences?: { identifier: string; documents: Doc[] }[]];

function table(name: string, cases: Case[]): void {
  describe(name, () => {
    it.each(cases)('%s', (_title, command, expectation, sequences) => {
      const result = checkCase({ subject: SUBJECT, world: world(), command, ...(sequences ? { sequences } : {}) });
      expect(result.refused).toBeUndefined();
      expectation(result);
    });
  });
}

const agg = (coll: string, pipeline: Doc[]): Doc => ({ aggregate: coll, pipeline, cursor: {} });

table('$lookup', [
  ['localField/foreignField', agg('tasks', [{ $lookup: { from: 'users', localField: 'owner', foreignField: '_id', as: 'u' } }]), (r) => {
    docs(5)(r);
    expect(batch(r).every((d) => (d.u as Doc[]).length === 1)).toBe(true);
  }],
  ['localField over an array', agg('tasks', [{ $lookup: { from: 'tags', localField: 'tags', foreignField: '_id', as: 't' } }]), someDocs],
  ['pipeline with let', agg('tasks', [{ $lookup: { from: 'users', let: { o: '$owner' }, pipeline: [{ $match: { $expr: { $eq: ['$_id', '$$o'] } } }, { $project: { name: 1 } }], as: 'u' } }]), someDocs],
  ['localField/foreignField and a pipeline together (the pipeline runs on the matched documents)', agg('tasks', [
    { $lookup: { from: 'users', localField: 'owner', foreignField: '_id', let: { t: '$title' }, pipeline: [{ $addFields: { t: '$$t', all: '$$ROOT' } }], as: 'u' } },
  ]), (r) => expect(batch(r).map((d) => (d.u as Doc[]).length)).toEqual([1, 1, 1, 1, 1])],
  ['nested $lookup inside a $lookup pipeline', agg('tasks', [
    { $lookup: { from: 'users', localField: 'owner', foreignField: '_id', as: 'u', pipeline: [{ $lookup: { from: 'users', localField: 'boss', foreignField: '_id', as: 'boss' } }] } },
  ]), someDocs],
  ['$lookup inside $facet', agg('tasks', [{ $facet: { withUsers: [{ $lookup: { from: 'users', pipeline: [], as: 'all' } }], n: [{ $count: 'n' }] } }]), docs(1)],
  ['a sub-pipeline over $$ROOT does not show the tag', agg('tasks', [{ $lookup: { from: 'users', pipeline: [{ $replaceWith: { r: '$$ROOT' } }], as: 'u' } }]), noTagValue],
  ['$lookup from $documents (no collection)', agg('tasks', [{ $lookup: { pipeline: [{ $documents: [{ x: 1 }] }], as: 'd' } }]), docs(5)],
]);

table('$unionWith', [
  ['string form', agg('tasks', [{ $unionWith: 'users' }]), docs(8)],
  ['with coll and a pipeline', agg('tasks', [{ $unionWith: { coll: 'users', pipeline: [{ $match: { team: 'red' } }] } }]), docs(7)],
  ['without coll: $documents', agg('tasks', [{ $unionWith: { pipeline: [{ $documents: [{ _id: 'd', app_id: 'app2' }] }] } }]), docs(6)],
  ['a leading $match on the tag runs on documents as the app sees them', agg('tasks', [{ $unionWith: { coll: 'users', pipeline: [{ $match: { app_id: { $exists: false } } }] } }]), docs(8)],
]);

table('$graphLookup', [
  ['restrictSearchWithMatch', agg('tasks', [
    { $graphLookup: { from: 'tasks', startWith: '$parent', connectFromField: 'parent', connectToField: '_id', as: 'chain', depthField: 'd', restrictSearchWithMatch: { owner: { $gte: 1 } } } },
  ]), someDocs],
  ['without restrictSearchWithMatch, the tag hidden in the results', agg('users', [
    { $graphLookup: { from: 'users', startWith: '$boss', connectFromField: 'boss', connectToField: '_id', as: 'bosses' } },
  ]), noTagValue],
]);

table('$facet, $replaceRoot, $replaceWith, $project and $addFields over $$ROOT', [
  ['$facet', agg('tasks', [{ $facet: { done: [{ $match: { done: true } }], all: [{ $group: { _id: null, docs: { $push: '$$ROOT' } } }] } }]), noTagValue],
  ['$replaceRoot', agg('tasks', [{ $replaceRoot: { newRoot: { doc: '$$ROOT', id: '$_id' } } }]), noTagValue],
  ['$replaceWith', agg('tasks', [{ $replaceWith: { $mergeObjects: ['$$ROOT', { tag: '$app_id' }] } }]), noTagValue],
  ['$project over $$ROOT', agg('tasks', [{ $project: { r: '$$ROOT', n: { $size: { $objectToArray: '$$ROOT' } } } }]), noTagValue],
  ['$addFields over $$CURRENT', agg('tasks', [{ $addFields: { c: '$$CURRENT', t: { $ifNull: ['$app_id', 'hidden'] } } }]), noTagValue],
  ['$group pushing $$ROOT', agg('tasks', [{ $group: { _id: '$owner', all: { $push: '$$ROOT' } } }]), noTagValue],
]);

table('$expr in filters', [
  ['find: fields compared', { find: 'tasks', filter: { $expr: { $gt: ['$n', '$owner'] } } }, someDocs],
  // Regression: the filter's $expr saw the stored document, tag included.
  ['find: the whole document counted', { find: 'tasks', filter: { $expr: { $eq: [{ $size: { $objectToArray: '$$ROOT' } }, 6] } } }, docs(1)],
  ['find: $getField of the tag is missing', { find: 'tasks', filter: { $expr: { $eq: [{ $getField: 'app_id' }, 'app'] } } }, docs(0)],
  ['count: the whole document counted', { count: 'tasks', query: { $expr: { $lte: [{ $size: { $objectToArray: '$$ROOT' } }, 6] } } }, writes(1)],
  ['aggregate: a leading $match over $$ROOT', agg('tasks', [{ $match: { $expr: { $eq: [{ $size: { $objectToArray: '$$ROOT' } }, 6] } } }]), docs(1)],
  ['update: the whole document counted', { update: 'tasks', updates: [{ q: { $expr: { $eq: [{ $size: { $objectToArray: '$$ROOT' } }, 6] } }, u: { $set: { hit: true } }, multi: true }] }, writes(1)],
]);

table('find: projections, sorts, collation', [
  ['inclusion', { find: 'tasks', projection: { title: 1, 'sub.k': 1 } }, docs(5)],
  ['exclusion', { find: 'tasks', projection: { items: 0, sub: 0 } }, docs(5)],
  ['the tag excluded', { find: 'tasks', projection: { app_id: 0 } }, docs(5)],
  // Regression: computed fields saw the stored document, tag included.
  ['computed over $$ROOT', { find: 'tasks', projection: { r: '$$ROOT', t: '$app_id' } }, noTagValue],
  ['exact _id with a computed field (the point-read path)', { find: 'tasks', filter: { _id: 2 }, projection: { title: 1, size: { $size: { $objectToArray: '$$ROOT' } } } }, docs(1)],
  ['exact _id of a planted document', { find: 'tasks', filter: { _id: 'planted-tasks-1' } }, docs(0)],
  // Regression: the point-read path ran the projection on the planted document, whose title $toInt
  // cannot convert: the app's read failed, quoting a document that is not its own.
  ['exact _id of a planted document, with an operator that fails on it', { find: 'tasks', filter: { _id: 'planted-tasks-4' }, projection: { title: 1, z: { $toInt: '$title' } } }, (r) => {
    ok(r);
    docs(0)(r);
  }],
  ['sort, skip, limit, batches', { find: 'tasks', sort: { owner: 1, _id: -1 }, skip: 1, limit: 3, batchSize: 1 }, docs(3)],
  ['sort with a collation (mingo has collation for sorting)', { find: 'tasks', sort: { title: 1 }, collation: { locale: 'en', strength: 2 } }, docs(5)],
]);

table('count and distinct', [
  ['count', { count: 'tasks', query: { done: false } }, writes(2)],
  ['distinct over an array field', { distinct: 'tasks', key: 'tags' }, (r) => expect(r.replies[0]?.values).toEqual(['x', 'y'])],
  ['distinct over a nested field named like the tag', { distinct: 'tasks', key: 'items.app_id' }, (r) => expect(r.replies[0]?.values).toEqual(['in-array'])],
  // Regression: the values of the hidden tag were the app's slug.
  ['distinct over the tag itself: none', { distinct: 'tasks', key: 'app_id' }, (r) => expect(r.replies[0]?.values).toEqual([])],
]);

const merge = (spec: Doc): Doc => agg('tasks', [{ $match: { owner: { $lte: 2 } } }, { $project: { title: 1, owner: 1 } }, { $merge: { into: 'archive', ...spec } }]);

table('$out and $merge', [
  ['$out (string)', agg('tasks', [{ $match: { done: false } }, { $out: 'archive' }]), docs(0)],
  ['$out (db and coll)', agg('tasks', [{ $project: { r: '$$ROOT' } }, { $out: { db: 'appdb', coll: 'fresh' } }]), docs(0)],
  ['$merge whenMatched replace', merge({ whenMatched: 'replace' }), ok],
  ['$merge whenMatched keepExisting', merge({ whenMatched: 'keepExisting' }), ok],
  ['$merge whenMatched merge', merge({ whenMatched: 'merge' }), ok],
  ['$merge whenMatched fail (a document matches)', merge({ whenMatched: 'fail' }), fails(11000)],
  // Regression: the target document and $$new showed the tag to the pipeline.
  ['$merge whenMatched pipeline over $$new and $$ROOT', merge({ whenMatched: [{ $set: { incoming: '$$new', before: '$$ROOT' } }] }), ok],
  ['$merge whenMatched pipeline with let', merge({ let: { t: '$title', whole: '$$ROOT' }, whenMatched: [{ $set: { t: '$$t', whole: '$$whole' } }] }), ok],
  ['$merge whenNotMatched insert', merge({ whenMatched: 'merge', whenNotMatched: 'insert' }), ok],
  ['$merge whenNotMatched discard', merge({ whenMatched: 'merge', whenNotMatched: 'discard' }), ok],
  ['$merge whenNotMatched fail', merge({ whenMatched: 'merge', whenNotMatched: 'fail' }), fails(13113)],
  ['$merge on _id (array form)', merge({ on: ['_id'], whenMatched: 'replace' }), ok],
  ['$merge into a new collection', agg('users', [{ $merge: { into: { db: 'appdb', coll: 'people' } } }]), ok],
  ['$merge from $documents (database-level aggregate)', { aggregate: 1, pipeline: [{ $documents: [{ _id: 1, x: 1 }, { _id: 'new' }] }, { $merge: { into: 'archive', whenMatched: 'merge' } }], cursor: {} }, ok],
  // Regression: getMore on a database-level aggregate's cursor ("$cmd.aggregate") was refused.
  ['database-level aggregate read in batches', { aggregate: 1, pipeline: [{ $documents: [{ a: 1 }, { a: 2 }, { a: 3 }] }], cursor: { batchSize: 1 } }, docs(3)],
]);

table('updates: pipelines, upserts, arrayFilters', [
  // Regression: the pipeline's $$ROOT held the tag and stored it nested.
  ['pipeline update over $$ROOT', { update: 'tasks', updates: [{ q: { owner: 1 }, u: [{ $set: { r: '$$ROOT', t: '$app_id' } }], multi: true }] }, writes(2)],
  ['pipeline update replacing the root', { update: 'tasks', updates: [{ q: { _id: 3 }, u: [{ $replaceWith: { $mergeObjects: ['$$ROOT', { seen: { $size: { $objectToArray: '$$ROOT' } } }] } }] }] }, writes(1)],
  ['pipeline update that changes nothing for the app changes nothing', { update: 'tasks', updates: [{ q: {}, u: [{ $set: { title: '$title' } }, { $replaceWith: '$$ROOT' }], multi: true }] }, (r) => expect(Number(r.replies[0]?.nModified)).toBe(0)],
  ['pipeline upsert', { update: 'tasks', updates: [{ q: { _id: 42, owner: 9 }, u: [{ $set: { made: '$$ROOT' } }], upsert: true }] }, writes(1)],
  ['operator upsert with $setOnInsert', { update: 'tasks', updates: [{ q: { title: 'new', 'sub.k': 2 }, u: { $set: { n: 1 }, $setOnInsert: { fresh: true } }, upsert: true }] }, writes(1)],
  ['replacement upsert', { update: 'tasks', updates: [{ q: { _id: 43 }, u: { title: 'replaced' }, upsert: true }] }, writes(1)],
  ['arrayFilters', { update: 'tasks', updates: [{ q: {}, u: { $set: { 'items.$[i].q': 0 } }, arrayFilters: [{ 'i.q': { $gte: 5 } }], multi: true }] }, writes(5)],
  ['arrayFilters on a nested field named like the tag', { update: 'tasks', updates: [{ q: {}, u: { $set: { 'items.$[i].hit': 1 } }, arrayFilters: [{ 'i.app_id': 'in-array' }], multi: true }] }, writes(5)],
  ['setting the tag to its own value', { update: 'tasks', updates: [{ q: { _id: 1 }, u: { $set: { app_id: 'app', x: 1 } } }] }, writes(1)],
  ['delete many', { delete: 'tasks', deletes: [{ q: { done: true }, limit: 0 }] }, writes(2)],
]);

table('insert', [
  ['body documents', { insert: 'tasks', documents: [{ _id: 10, a: 1 }, { _id: 11, app_id: 'app', nested: { app_id: 'x' } }] }, writes(2)],
  ['a duplicate _id stops an ordered insert', { insert: 'tasks', documents: [{ _id: 12 }, { _id: 1 }, { _id: 13 }] }, writes(1)],
  ['kind-1 sequence', { insert: 'tasks' }, writes(2), [{ identifier: 'documents', documents: [{ _id: 20, a: [1, { app_id: 'app2' }] }, { _id: 21, app_id: 'app' }] }]],
  ['without _id', { insert: 'users', documents: [{ name: 'dee' }] }, writes(1)],
]);

const fam = (body: Doc): Doc => ({ findAndModify: 'tasks', ...body });

table('findAndModify', [
  ['update, new, fields', fam({ query: { owner: 2 }, sort: { _id: -1 }, update: { $inc: { n: 1 } }, new: true, fields: { title: 1, n: 1 } }), ok],
  ['update returning the old document', fam({ query: { _id: 1 }, update: { $set: { done: true } } }), ok],
  ['remove', fam({ query: { done: true }, sort: { n: 1 }, remove: true }), ok],
  ['upsert, new', fam({ query: { _id: 50 }, update: { $set: { t: 1 } }, upsert: true, new: true }), ok],
  ['pipeline update over $$ROOT', fam({ query: { _id: 2 }, update: [{ $set: { r: '$$ROOT' } }], new: true }), noTagValue],
  ['arrayFilters', fam({ query: { _id: 2 }, update: { $set: { 'items.$[i].q': 7 } }, arrayFilters: [{ 'i.q': 1 }], new: true }), ok],
  ['fields computed over $$ROOT', fam({ query: { _id: 3 }, update: { $set: { x: 1 } }, new: true, fields: { whole: '$$ROOT' } }), noTagValue],
  ['the lower-case spelling', { findandmodify: 'tasks', query: { _id: 4 }, update: { $set: { y: 2 } }, new: true }, ok],
]);

describe('the tag field in CRUD filters (documented: ANDed with the proxy\'s, it can only narrow)', () => {
  it.each([
    [{ find: 'tasks', filter: { app_id: 'app' }, batchSize: 100 }, 5],
    [{ find: 'tasks', filter: { app_id: 'app2' }, batchSize: 100 }, 0],
    [{ find: 'tasks', filter: { app_id: { $exists: false } }, batchSize: 100 }, 0],
  ])('%j sees only the app\'s documents', (command, n) => {
    // Not an oracle case: a database of the app's own has no such field. What holds instead: the result
    // is a subset of the app's documents, never a planted or another app's one.
    const w = world();
    const result = checkCaseLoose(command, w);
    expect(result).toHaveLength(n);
    expect(result.every((d) => typeof d._id === 'number')).toBe(true);
  });
});


/** The documents the app gets through the proxy for a find, without comparing with a dedicated database. */
function checkCaseLoose(command: Doc, w: ReturnType<typeof world>): Doc[] {
  const scope = makeScope(SUBJECT, DATABASE, TAG);
  const { physical } = buildServers({ subject: SUBJECT, world: w, command });
  const rewritten = rewriteCommand(scope, lookupCommand('find')!, 'find', decodeDocument(Buffer.from(serialize({ ...command, $db: 'appdb' }))), []);
  const reply = deserialize(rewriteReply(scope, rewritten.reply, physical.run(encodeDocument(rewritten.body)))) as Doc;
  return (reply.cursor as Doc).firstBatch as Doc[];
}
