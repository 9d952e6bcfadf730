/**
 * fast-check arbitraries for test/semantic: worlds of several apps, documents of several BSON types
 * (nested documents, arrays, fields named like the tag), filters, projections, expressions, pipelines
 * (with sub-pipelines), updates and arrayFilters.
 *
 * Generated CRUD filters put no condition on the top-level tag: there the proxy documents that such a
 * condition is ANDed with its own and can only narrow (docs/security.md, "Logical scoping, reads"), which
 * is not what a database of the app's own would do with a field it never holds. Pipelines may: their
 * leading $match runs on documents as the app sees them. Both are checked by hand in cases.test.ts.
 */
import { ObjectId } from 'bson';
import fc from 'fast-check';
import type { OracleCase, World } from '../helpers/mingo-oracle.js';
import { PLANTED_ID, TAG } from '../helpers/mingo-oracle.js';
import type { Doc } from '../helpers/mingo-server.js';

/** Three apps: a look-alike pair (`app`, `app2`) and a prefix of one (`ap`). */
export const SLUGS = ['app', 'app2', 'ap'] as const;
export const COLLECTIONS = ['c1', 'c2', 'c3'] as const;

const DATES = [new Date('2024-01-01T00:00:00Z'), new Date('2025-06-30T12:00:00Z')];
const OIDS = [new ObjectId('65a1b2c3d4e5f60718293a4b'), new ObjectId('65a1b2c3d4e5f60718293a4c')];

/** Scalars of several BSON types; strings include the slugs, so tag-like values appear as data. */
export const scalar: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: fc.integer({ min: -2, max: 4 }) },
  { weight: 1, arbitrary: fc.constantFrom(1.5, -2.25) },
  { weight: 3, arbitrary: fc.constantFrom('a', 'b', 'A', 'x', 'app', 'app2') },
  { weight: 1, arbitrary: fc.boolean() },
  { weight: 1, arbitrary: fc.constant(null) },
  { weight: 1, arbitrary: fc.constantFrom(...DATES) },
  { weight: 1, arbitrary: fc.constantFrom(...OIDS) },
);

const smallDoc: fc.Arbitrary<Doc> = fc.record(
  { q: scalar, app_id: scalar, x: scalar },
  { requiredKeys: [] },
);

/** A field value: a scalar, an array of scalars or small documents, or an embedded document. */
export const value: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 5, arbitrary: scalar },
  { weight: 1, arbitrary: fc.array(scalar, { maxLength: 3 }) },
  { weight: 1, arbitrary: smallDoc },
);

/** An app's document: `_id` from a small space (so filters and upserts meet them), several fields. */
export function document(ids: fc.Arbitrary<unknown> = fc.integer({ min: 1, max: 6 })): fc.Arbitrary<Doc> {
  return fc.record(
    {
      _id: ids,
      a: value,
      b: scalar,
      k: fc.integer({ min: 0, max: 3 }),
      c: smallDoc,
      arr: fc.array(smallDoc, { maxLength: 3 }),
      s: fc.constantFrom('a', 'B', 'b', 'é', 'A'),
    },
    { requiredKeys: ['_id'] },
  );
}

/** Documents of one collection with distinct `_id`s. */
const documents = fc.uniqueArray(document(), { maxLength: 5, selector: (d) => d._id });

/**
 * A tag value that is not the subject's: none, another app's, a look-alike string, another BSON type.
 * Not an array holding the subject's slug: MongoDB's equality matches such an array, so a document
 * planted with one is the app's for every server-side filter (only point reads check the exact string).
 */
function foreignTag(subject: string): fc.Arbitrary<unknown> {
  const others = SLUGS.filter((s) => s !== subject);
  return fc.constantFrom(undefined, ...others, 'App', `${subject} `, 5, null, true, { x: subject }, [others[0]], DATES[0]);
}

export function world(subject: string): fc.Arbitrary<World> {
  const perApp = fc.record(Object.fromEntries(COLLECTIONS.map((c) => [c, documents])) as Record<string, typeof documents>);
  const planted = fc.record(
    Object.fromEntries(
      COLLECTIONS.map((c) => [
        c,
        fc.array(fc.tuple(document(), foreignTag(subject)), { maxLength: 3 }).map((list) =>
          list.map(([d, tag], i) => {
            const doc: Doc = { ...d, _id: `${PLANTED_ID}${c}-${i}` };
            delete doc[TAG];
            if (tag !== undefined) doc[TAG] = tag;
            return doc;
          }),
        ),
      ]),
    ) as Record<string, fc.Arbitrary<Doc[]>>,
  );
  return fc.record({
    apps: fc.record(Object.fromEntries(SLUGS.map((s) => [s, perApp])) as Record<string, typeof perApp>),
    planted,
  });
}

export const subject = fc.constantFrom(...SLUGS);
export const collection = fc.constantFrom(...COLLECTIONS);

// ---- filters ------------------------------------------------------------------------------------

/** Paths a filter may read: top-level fields, nested ones, and nested fields named like the tag. */
const path = fc.constantFrom('a', 'b', 'k', 's', '_id', 'c.q', 'c.app_id', 'arr.q', 'arr.app_id', 'c');

/** A filter on the app's fields; `tag`: may also name the top-level tag (pipelines only). */
export function filter(options: { tag?: boolean; ids?: unknown[] } = {}): fc.Arbitrary<Doc> {
  const p = options.tag ? fc.oneof(path, fc.constant(TAG)) : path;
  const v = options.ids ? fc.oneof(scalar, fc.constantFrom(...options.ids)) : scalar;
  const leaf: fc.Arbitrary<Doc> = fc.oneof(
    fc.tuple(p, v).map(([k, x]) => ({ [k]: x })),
    fc.tuple(p, fc.constantFrom('$gt', '$gte', '$lt', '$ne'), scalar).map(([k, op, x]) => ({ [k]: { [op]: x } })),
    fc.tuple(p, fc.array(v, { minLength: 1, maxLength: 3 })).map(([k, xs]) => ({ [k]: { $in: xs } })),
    fc.tuple(p, fc.boolean()).map(([k, b]) => ({ [k]: { $exists: b } })),
    fc.tuple(fc.constantFrom('number', 'string', 'object', 'array', 'null'), p).map(([t, k]) => ({ [k]: { $type: t } })),
    fc.record({ q: scalar }).map((m) => ({ arr: { $elemMatch: m } })),
    fc.tuple(fc.constantFrom('a', 'k', 'b'), fc.constantFrom('a', 'k', 'b')).map(([x, y]) => ({ $expr: { $gt: [`$${x}`, `$${y}`] } })),
    // $expr over the whole document: what the app's documents have, not what the proxy stores.
    fc.integer({ min: 1, max: 8 }).map((n) => ({ $expr: { $gte: [{ $size: { $objectToArray: '$$ROOT' } }, n] } })),
    fc.constant({}),
  );
  return fc.oneof(
    { weight: 4, arbitrary: leaf },
    { weight: 1, arbitrary: fc.tuple(leaf, leaf).map(([x, y]) => ({ ...x, ...y })) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom('$or', '$and', '$nor'), fc.array(leaf, { minLength: 1, maxLength: 3 })).map(([op, xs]) => ({ [op]: xs })) },
  );
}

// ---- projections and expressions ----------------------------------------------------------------

/** An aggregation expression: fields, the whole document, the tag's name (never the tag's value). */
export const expression: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom('$a', '$k', '$c', '$arr.q', '$c.app_id', '$$ROOT', '$$CURRENT', `$${TAG}`),
  fc.constant({ $size: { $objectToArray: '$$ROOT' } }),
  fc.constant({ $ifNull: [`$${TAG}`, 'none'] }),
  fc.constant({ $mergeObjects: ['$$ROOT', { m: 1 }] }),
  fc.constant({ $concat: [{ $toString: '$k' }, '-', { $ifNull: [{ $toString: '$b' }, ''] }] }),
  fc.constant({ $literal: 'lit' }),
  fc.constant({ $getField: TAG }),
);

export const projection: fc.Arbitrary<Doc> = fc.oneof(
  fc.constant({ a: 1, 'c.q': 1 }),
  fc.constant({ _id: 0, k: 1, arr: 1 }),
  fc.constant({ b: 0, c: 0 }),
  fc.constant({ _id: 0 }),
  fc.constant({ _id: 1 }),
  fc.constant({ [TAG]: 0 }),
  fc.constant({ [TAG]: 1, a: 1 }),
  fc.constant({ 'arr.app_id': 0 }),
  expression.map((e) => ({ k: 1, z: e })),
);

export const sort: fc.Arbitrary<Doc> = fc.constantFrom({ k: 1, _id: 1 }, { a: -1, _id: 1 }, { s: 1, _id: -1 }, { _id: -1 }, { 'c.q': 1, _id: 1 });

// ---- pipelines ----------------------------------------------------------------------------------

/** A stage that transforms the documents flowing through and reads no collection. */
const simpleStage: fc.Arbitrary<Doc> = fc.oneof(
  { weight: 3, arbitrary: filter({ tag: true }).map((f) => ({ $match: f })) },
  { weight: 1, arbitrary: projection.filter((p) => !('_id' in p && Object.keys(p).length === 1 && p._id === 1)).map((p) => ({ $project: p })) },
  { weight: 2, arbitrary: expression.map((e) => ({ $addFields: { z: e } })) },
  { weight: 1, arbitrary: expression.map((e) => ({ $set: { [TAG]: e } })) },
  { weight: 1, arbitrary: fc.constantFrom('a', 'c', ['b', 'arr']).map((f) => ({ $unset: f })) },
  { weight: 2, arbitrary: sort.map((s) => ({ $sort: s })) },
  { weight: 1, arbitrary: fc.integer({ min: 1, max: 4 }).map((n) => ({ $limit: n })) },
  { weight: 1, arbitrary: fc.integer({ min: 0, max: 2 }).map((n) => ({ $skip: n })) },
  { weight: 1, arbitrary: fc.constantFrom('$k', '$b', `$${TAG}`).map((g) => ({ $group: { _id: g, n: { $sum: 1 }, all: { $push: '$$ROOT' } } })) },
  { weight: 1, arbitrary: fc.constant({ $unwind: { path: '$arr', preserveNullAndEmptyArrays: true } }) },
  { weight: 1, arbitrary: fc.constant({ $replaceRoot: { newRoot: { $mergeObjects: [{ $ifNull: ['$c', {}] }, { id: '$_id' }] } } }) },
  { weight: 1, arbitrary: expression.map((e) => ({ $replaceWith: { r: e, id: '$_id' } })) },
  { weight: 1, arbitrary: fc.constant({ $sortByCount: '$k' }) },
  { weight: 1, arbitrary: fc.constant({ $count: 'n' }) },
);

/** A pipeline over a collection, with stages that read other collections, nested to `depth`. */
export function pipeline(depth: number): fc.Arbitrary<Doc[]> {
  const stages: fc.WeightedArbitrary<Doc>[] = [{ weight: 8, arbitrary: simpleStage }];
  if (depth > 0) {
    const sub = pipeline(depth - 1);
    stages.push(
      ...[
      fc.tuple(collection, sub).map(([from, p]) => ({ $lookup: { from, pipeline: p, as: 'j' } })),
      fc.tuple(collection, fc.constantFrom('k', 'b', 'a', 'arr.q'), fc.constantFrom('k', '_id', 'b', 'arr.q')).map(([from, localField, foreignField]) => ({
        $lookup: { from, localField, foreignField, as: 'j' },
      })),
      fc.tuple(collection, sub).map(([from, p]) => ({ $lookup: { from, localField: 'k', foreignField: 'k', let: { kk: '$k', root: '$$ROOT' }, pipeline: p, as: 'j' } })),
      fc.tuple(collection, sub).map(([from, p]) => ({
        $lookup: { from, let: { kk: '$k' }, pipeline: [{ $match: { $expr: { $eq: ['$k', '$$kk'] } } }, ...p], as: 'j' },
      })),
      fc.tuple(collection, sub).map(([coll, p]) => ({ $unionWith: { coll, pipeline: p } })),
      collection.map((coll) => ({ $unionWith: coll })),
      fc.tuple(fc.array(document(fc.constantFrom(7, 8, 'd')), { maxLength: 2 }), sub).map(([docs, p]) => ({
        $unionWith: { pipeline: [{ $documents: docs }, ...p] },
      })),
      fc.tuple(collection, fc.option(filter(), { nil: undefined }), fc.option(fc.integer({ min: 0, max: 2 }), { nil: undefined })).map(([from, restrict, maxDepth]) => ({
        $graphLookup: {
          from,
          startWith: '$k',
          connectFromField: 'b',
          connectToField: 'k',
          as: 'g',
          depthField: 'd',
          ...(maxDepth === undefined ? {} : { maxDepth }),
          ...(restrict === undefined ? {} : { restrictSearchWithMatch: restrict }),
        },
      })),
      fc.tuple(sub, sub).map(([x, y]) => ({ $facet: { x, y } })),
      ].map((arbitrary) => ({ weight: 1, arbitrary })),
    );
  }
  // Half of the pipelines lead with a $match: the stage the proxy merges its own condition into.
  const leading = fc.option(filter({ tag: true }).map((f): Doc => ({ $match: f })), { freq: 2, nil: undefined });
  return fc.tuple(leading, fc.array(fc.oneof(...stages), { maxLength: 4 })).map(([m, rest]) => (m ? [m, ...rest] : rest));
}

/** The final stage that writes a collection, every form the manual lists. */
export const outputStage: fc.Arbitrary<Doc> = fc.oneof(
  collection.map((coll) => ({ $out: coll })),
  collection.map((coll) => ({ $out: { db: 'appdb', coll } })),
  fc
    .tuple(
      collection,
      fc.constantFrom<unknown>('replace', 'keepExisting', 'merge', 'fail', [{ $set: { merged: '$$new', seen: '$$ROOT' } }], [{ $replaceWith: '$$new' }], [{ $addFields: { tagOf: `$${TAG}`, n: { $size: { $objectToArray: '$$ROOT' } } } }]),
      fc.constantFrom('insert', 'discard', 'fail'),
      fc.constantFrom<unknown>(undefined, '_id', ['_id']),
      fc.boolean(),
    )
    .map(([into, whenMatched, whenNotMatched, on, letVars]) => ({
      $merge: {
        into,
        whenMatched,
        whenNotMatched,
        ...(on === undefined ? {} : { on }),
        ...(letVars && Array.isArray(whenMatched) ? { let: { new: '$$ROOT', kk: '$k' } } : {}),
      },
    })),
  fc.tuple(collection, fc.constantFrom('replace', 'merge')).map(([into, whenMatched]) => ({ $merge: { into: { db: 'appdb', coll: into }, whenMatched } })),
  collection.map((into) => ({ $merge: into })),
);

// ---- updates ------------------------------------------------------------------------------------

export function operatorUpdate(subjectSlug: string): fc.Arbitrary<Doc> {
  const one: fc.Arbitrary<Doc> = fc.oneof(
    fc.tuple(fc.constantFrom('a', 'b', 'c.q', 'c.app_id', 'new'), value).map(([p, v]) => ({ $set: { [p]: v } })),
    fc.integer({ min: -1, max: 2 }).map((n) => ({ $inc: { k: n } })),
    fc.constantFrom('a', 'c', 'c.app_id').map((p) => ({ $unset: { [p]: '' } })),
    smallDoc.map((d) => ({ $push: { arr: d } })),
    scalar.map((v) => ({ $addToSet: { tagsSet: v } })),
    fc.constant({ $pull: { arr: { q: { $gte: 1 } } } }),
    fc.constant({ $rename: { b: 'b2' } }),
    scalar.map((v) => ({ $max: { k: v } })),
    scalar.map((v) => ({ $setOnInsert: { ins: v } })),
    fc.constant({ $set: { [TAG]: subjectSlug } }),
    fc.constant({ $set: { 'arr.$[e].q': 'hit' } }),
    fc.constant({ $set: { 'arr.$[].x': 0 } }),
  );
  return fc.array(one, { minLength: 1, maxLength: 3 }).map((ops) => {
    const out: Doc = {};
    for (const op of ops) {
      const [name] = Object.keys(op);
      out[name!] = { ...((out[name!] as Doc | undefined) ?? {}), ...(op[name!] as Doc) };
    }
    return out;
  });
}

export const replacement: fc.Arbitrary<Doc> = fc.record({ a: value, r: scalar, c: smallDoc }, { requiredKeys: [] });

export const pipelineUpdate: fc.Arbitrary<Doc[]> = fc.array(
  fc.oneof(
    expression.map((e) => ({ $set: { z: e } })),
    fc.constant({ $set: { r: '$$ROOT' } }),
    fc.constant({ $set: { t: `$${TAG}`, size: { $size: { $objectToArray: '$$ROOT' } } } }),
    fc.constant({ $unset: ['b', 'c'] }),
    fc.constant({ $replaceWith: { $mergeObjects: ['$$ROOT', { m: '$k' }] } }),
    fc.constant({ $replaceRoot: { newRoot: { kept: '$a', _id: '$_id' } } }),
    fc.constant({ $project: { arr: 0 } }),
  ),
  { minLength: 1, maxLength: 3 },
);

export const arrayFilters: fc.Arbitrary<Doc[]> = fc.constantFrom([{ 'e.q': { $gte: 1 } }], [{ 'e.app_id': { $exists: true } }], [{ 'e.q': null }]);

export function update(subjectSlug: string): fc.Arbitrary<{ u: unknown; arrayFilters?: Doc[] }> {
  return fc.oneof(
    { weight: 3, arbitrary: fc.tuple(operatorUpdate(subjectSlug), arrayFilters).map(([u, af]) => (JSON.stringify(u).includes('$[e]') ? { u, arrayFilters: af } : { u })) },
    { weight: 1, arbitrary: replacement.map((u) => ({ u })) },
    { weight: 2, arbitrary: pipelineUpdate.map((u) => ({ u })) },
  );
}

/** A case: a subject, a world, and a command built from the subject. */
export function oracleCase(command: (subject: string) => fc.Arbitrary<Pick<OracleCase, 'command' | 'sequences'>>): fc.Arbitrary<OracleCase> {
  return subject.chain((s) => fc.tuple(world(s), command(s)).map(([w, c]) => ({ subject: s, world: w, ...c })));
}

/** `_id`s a read may name: the apps' own and the planted ones (which must never come back). */
export const readIds = [1, 2, 3, 7, `${PLANTED_ID}c1-0`, `${PLANTED_ID}c2-1`];
