import {
  Binary,
  BSONRegExp,
  Decimal128,
  Double,
  Int32,
  Long,
  MaxKey,
  MinKey,
  ObjectId,
  Timestamp,
  UUID,
  deserialize,
  serialize,
  type Document,
} from 'bson';
import { describe, expect, it } from 'vitest';
import { lookupCommand } from '../../src/policy/commands.js';
import { decodeDocument } from '../../src/policy/decode.js';
import { rewriteCommand } from '../../src/policy/rewrite.js';
import { rewriteCursorBatch, rewriteReply } from '../../src/policy/reply.js';
import { makeScope, type AppScope, type Doc } from '../../src/policy/scope.js';
import type { CursorView, RewrittenCommand } from '../../src/policy/handler.js';

/**
 * find's exact-_id fast path (src/policy/handlers/find.ts): a point read goes upstream as `{_id: X}`
 * and the tag is checked on the returned documents instead, through a cursor view flag that getMores
 * of the cursor inherit.
 */

const scope = makeScope('app1', 'mdb_runtime', 'app_id');
const exposed = makeScope('app1', 'mdb_runtime', 'app_id', true);
const DB = 'mdb_runtime';
const FAST: CursorView = { kind: 'documents', appDb: 'x', checkTag: true };
const FAST_HIDDEN: CursorView = { kind: 'documents', appDb: 'x', checkTag: true, hideTag: true };
const SCOPED: CursorView = { kind: 'documents', appDb: 'x' };

/** Rewrites `body` as the orchestrator does, after a BSON round trip (values as the proxy decodes them). */
function rw(body: Doc, s: AppScope = scope): RewrittenCommand {
  const name = Object.keys(body)[0]!;
  const decoded = decodeDocument(Buffer.from(serialize(body)));
  return rewriteCommand(s, lookupCommand(name)!, name, decoded, []);
}

/** The body as it goes upstream, decoded plainly (numbers promoted) for comparison. */
function sent(out: RewrittenCommand): Document {
  return deserialize(serialize(out.body));
}

function viewOf(out: RewrittenCommand): CursorView | undefined {
  return out.reply.kind === 'cursor' ? out.reply.view : undefined;
}

describe('find exact-_id fast path: the filter', () => {
  const oid = new ObjectId('0123456789abcdef01234567');
  const plain: [string, unknown][] = [
    ['a string', 'user42'],
    ['an ObjectId', oid],
    ['an int32', new Int32(7)],
    ['a double', new Double(1.5)],
    ['an int64', Long.fromNumber(2 ** 40)],
    ['a decimal128', Decimal128.fromString('1.10')],
    ['a date', new Date(1_700_000_000_000)],
    ['a UUID', new UUID('0123456789abcdef0123456789abcdef')],
    ['binary data', new Binary(Buffer.from('abc'))],
    ['a boolean', true],
    ['a timestamp', new Timestamp({ t: 1, i: 2 })],
  ];
  it.each(plain)('%s: sent as {_id: X}, unscoped, with the check flag', (_what, id) => {
    const out = rw({ find: 'tasks', filter: { _id: id }, $db: 'x' });
    expect(sent(out)).toEqual(deserialize(serialize({ find: 'app1_tasks', filter: { _id: id }, $db: DB })));
    expect(viewOf(out)).toEqual(FAST);
    expect(out.access).toEqual([{ action: 'read', collection: 'tasks' }]);
  });

  const notPlain: [string, Doc][] = [
    ['an operator', { _id: { $eq: 'a' } }],
    ['$in', { _id: { $in: ['a', 'b'] } }],
    ['an embedded document', { _id: { a: 1 } }],
    ['an empty document', { _id: {} }],
    ['an array', { _id: ['a'] }],
    ['a regex', { _id: new BSONRegExp('^a') }],
    ['null', { _id: null }],
    ['MinKey', { _id: new MinKey() }],
    ['MaxKey', { _id: new MaxKey() }],
    ['_id and another field', { _id: 'a', b: 1 }],
    ['_id and the own tag', { _id: 'a', app_id: 'app1' }],
    ['_id and another tag', { _id: 'a', app_id: 'app2' }],
    ['the tag only', { app_id: 'app1' }],
    ['another field only', { name: 'a' }],
    ['an empty filter', {}],
    ['$and of _id', { $and: [{ _id: 'a' }] }],
  ];
  it.each(notPlain)('%s: scoped as before', (_what, filter) => {
    const out = rw({ find: 'tasks', filter, $db: 'x' });
    expect(viewOf(out)).toEqual(SCOPED);
    const f = sent(out).filter as Document;
    expect(f.app_id).toBe('app1');
  });

  it('no filter: scoped', () => {
    const out = rw({ find: 'tasks', $db: 'x' });
    expect(sent(out).filter).toEqual({ app_id: 'app1' });
    expect(viewOf(out)).toEqual(SCOPED);
  });
});

describe('find exact-_id fast path: other arguments', () => {
  const taken: [string, Doc][] = [
    ['Node driver findOne (limit 1, singleBatch)', { limit: 1, singleBatch: true }],
    ['PyMongo find_one (limit -1)', { limit: -1 }],
    ['PyMongo find_one (limit 1, singleBatch)', { limit: 1, singleBatch: true, batchSize: 1 }],
    ['sort, skip, batchSize', { sort: { a: 1 }, skip: 1, batchSize: 5 }],
    ['showRecordId', { showRecordId: true }],
    ['returnKey: false', { returnKey: false }],
    ['tailable: false, awaitData: false', { tailable: false, awaitData: false }],
    ['generic arguments', { maxTimeMS: 100, comment: 'c', readConcern: { level: 'local' } }],
    ['let', { let: { v: 1 } }],
    ['noCursorTimeout, allowDiskUse, allowPartialResults', { noCursorTimeout: true, allowDiskUse: true, allowPartialResults: false }],
  ];
  it.each(taken)('%s: fast path, arguments kept', (_what, extra) => {
    const out = rw({ find: 'tasks', filter: { _id: 'a' }, ...extra, $db: 'x' });
    expect(sent(out)).toEqual(deserialize(serialize({ find: 'app1_tasks', filter: { _id: 'a' }, ...extra, $db: DB })));
    expect(viewOf(out)).toEqual(FAST);
  });

  const notTaken: [string, Doc][] = [
    ['returnKey', { returnKey: true }],
    ['collation', { collation: { locale: 'en', strength: 2 } }],
    ['hint', { hint: { _id: 1 } }],
    ['hint by name', { hint: '_id_' }],
    ['min/max', { hint: { _id: 1 }, min: { _id: 'a' }, max: { _id: 'b' } }],
    ['tailable', { tailable: true }],
    ['awaitData', { tailable: true, awaitData: true }],
  ];
  it.each(notTaken)('%s: scoped', (_what, extra) => {
    const out = rw({ find: 'tasks', filter: { _id: 'a' }, ...extra, $db: 'x' });
    expect(sent(out).filter).toEqual({ _id: 'a', app_id: 'app1' });
    expect(viewOf(out)).toEqual(SCOPED);
  });

  it('explain of an exact-_id find: the scoped command is explained', () => {
    const out = rw({ explain: { find: 'tasks', filter: { _id: 'a' }, limit: 1, singleBatch: true }, verbosity: 'queryPlanner', $db: 'x' });
    expect(sent(out)).toEqual({ explain: { find: 'app1_tasks', filter: { _id: 'a', app_id: 'app1' }, limit: 1, singleBatch: true }, verbosity: 'queryPlanner', $db: DB });
    expect(out.reply.kind).toBe('explain');
  });

  it('writes, counts and aggregations by _id keep the tag in the filter', () => {
    expect(sent(rw({ update: 'c', updates: [{ q: { _id: 'a' }, u: { $set: { v: 1 } } }], $db: 'x' })).updates[0].q).toEqual({ _id: 'a', app_id: 'app1' });
    expect(sent(rw({ delete: 'c', deletes: [{ q: { _id: 'a' }, limit: 1 }], $db: 'x' })).deletes[0].q).toEqual({ _id: 'a', app_id: 'app1' });
    expect(sent(rw({ findAndModify: 'c', query: { _id: 'a' }, remove: true, $db: 'x' })).query).toEqual({ _id: 'a', app_id: 'app1' });
    expect(sent(rw({ count: 'c', query: { _id: 'a' }, $db: 'x' })).query).toEqual({ _id: 'a', app_id: 'app1' });
    expect(sent(rw({ distinct: 'c', key: 'v', query: { _id: 'a' }, $db: 'x' })).query).toEqual({ _id: 'a', app_id: 'app1' });
    const agg = sent(rw({ aggregate: 'c', pipeline: [{ $match: { _id: 'a' } }], cursor: {}, $db: 'x' }));
    expect(agg.pipeline[0]).toEqual({ $match: { _id: 'a', app_id: 'app1' } });
  });
});

describe('find exact-_id fast path: projections', () => {
  const cases: [string, Doc, Doc | undefined, CursorView][] = [
    // [what, the app's projection, the projection sent (undefined: none), the view]
    ['an inclusion: the tag added, hidden again', { title: 1 }, { title: 1, app_id: 1 }, FAST_HIDDEN],
    ['an inclusion with true and _id: 0', { title: true, _id: 0 }, { title: true, _id: 0, app_id: 1 }, FAST_HIDDEN],
    ['an inclusion with a computed field and $slice', { title: 1, x: { $literal: 1 }, arr: { $slice: 2 } }, { title: 1, x: { $literal: 1 }, arr: { $slice: 2 }, app_id: 1 }, FAST_HIDDEN],
    ['_id only (an inclusion)', { _id: 1 }, { _id: 1, app_id: 1 }, FAST_HIDDEN],
    ['an inclusion naming the tag: unchanged', { title: 1, app_id: 1 }, { title: 1, app_id: 1 }, FAST],
    ['an exclusion leaving the tag: unchanged', { body: 0 }, { body: 0 }, FAST],
    ['_id: 0 alone: unchanged', { _id: 0 }, { _id: 0 }, FAST],
    ['an empty projection: unchanged', {}, {}, FAST],
    ['an exclusion of the tag: dropped upstream, hidden again', { app_id: 0, body: 0 }, { body: 0 }, FAST_HIDDEN],
    ['the tag alone excluded: an empty projection upstream', { app_id: 0 }, {}, FAST_HIDDEN],
    ['the tag excluded with _id: 0', { _id: 0, app_id: false }, { _id: 0 }, FAST_HIDDEN],
  ];
  it.each(cases)('%s', (_what, projection, upstream, view) => {
    const out = rw({ find: 'tasks', filter: { _id: 'a' }, projection, limit: 1, singleBatch: true, $db: 'x' });
    const body = sent(out);
    expect(body.filter).toEqual({ _id: 'a' });
    expect(body.projection).toEqual(upstream);
    expect(viewOf(out)).toEqual(view);
  });

  const fallBack: [string, Doc][] = [
    ['$elemMatch alone (the mode depends on the operator)', { arr: { $elemMatch: { a: 1 } } }],
    ['$slice alone', { arr: { $slice: 1 } }],
    ['$meta alone', { s: { $meta: 'textScore' } }],
    ['a computed field alone', { x: { $add: [1, 2] } }],
    ['a string literal alone', { x: 'lit' }],
    ['a computed tag', { title: 1, app_id: 'forged' }],
    ['a dotted path under the tag', { 'app_id.x': 1 }],
    ['a dotted path under the tag, excluded', { 'app_id.x': 0 }],
    ['the tag excluded next to an inclusion (the server refuses the mix)', { title: 1, app_id: 0 }],
    ['{_id: 1, tag: 0} (dropping the exclusion would make an inclusion)', { _id: 1, app_id: 0 }],
    ['a $-key', { $natural: 1 }],
    ['an exclusion with an operator', { body: 0, arr: { $slice: 1 } }],
    // It would run on another app's document with that _id too, and could fail quoting it.
    ['an inclusion with an aggregation operator', { title: 1, n: { $toInt: '$title' } }],
  ];
  it.each(fallBack)('%s: scoped, projection unchanged', (_what, projection) => {
    const out = rw({ find: 'tasks', filter: { _id: 'a' }, projection, $db: 'x' });
    const body = sent(out);
    expect(body.filter).toEqual({ _id: 'a', app_id: 'app1' });
    expect(body.projection).toEqual(deserialize(serialize({ p: projection })).p);
    expect(viewOf(out)).toEqual(SCOPED);
  });

  it('a projection that is not a document: scoped (the server reports it)', () => {
    const out = rw({ find: 'tasks', filter: { _id: 'a' }, projection: 5, $db: 'x' });
    expect(sent(out).filter).toEqual({ _id: 'a', app_id: 'app1' });
  });

  it('works with another tag field name', () => {
    const custom = makeScope('app1', DB, 'owner');
    const out = rw({ find: 'tasks', filter: { _id: 'a' }, projection: { title: 1 }, $db: 'x' }, custom);
    expect(sent(out).projection).toEqual({ title: 1, owner: 1 });
    expect(sent(out).filter).toEqual({ _id: 'a' });
  });
});

describe('find exact-_id fast path: replies and getMores', () => {
  const bytes = (d: Document) => Buffer.from(serialize(d));
  const reply = (batch: Document[], key: 'firstBatch' | 'nextBatch' = 'firstBatch', id = 0) =>
    bytes({ cursor: { [key]: batch, id: Long.fromNumber(id), ns: 'mdb_runtime.app1_tasks' }, ok: 1 });
  const batchOf = (body: Buffer, key: 'firstBatch' | 'nextBatch' = 'firstBatch') => deserialize(body).cursor[key] as Document[];

  const planted = [
    { _id: 'a', title: 'mine', app_id: 'app1' },
    { _id: 'a', title: 'theirs', app_id: 'app2' },
    { _id: 'a', title: 'untagged' },
    { _id: 'a', title: 'numeric tag', app_id: 1 },
    { _id: 'a', title: 'prefix tag', app_id: 'app1x' },
    { _id: 'a', title: 'array tag', app_id: ['app1'] },
  ];

  it('the first batch keeps only the app-tagged documents, tag stripped', () => {
    const out = rw({ find: 'tasks', filter: { _id: 'a' }, limit: 1, singleBatch: true, $db: 'x' });
    const body = rewriteReply(scope, out.reply, reply(planted));
    expect(batchOf(body)).toEqual([{ _id: 'a', title: 'mine' }]);
    expect(deserialize(body).cursor.ns).toBe('x.tasks');
  });

  it('a getMore of the cursor is checked too (the view as the registry keeps it)', () => {
    const out = rw({ find: 'tasks', filter: { _id: 'a' }, batchSize: 0, $db: 'x' });
    const view = viewOf(out)!;
    // What the data plane does for a getMore: the registry's stored view, the connection's scope.
    const next = rewriteCursorBatch(scope, view, reply([...planted, { _id: 'a', title: 'mine too', app_id: 'app1' }], 'nextBatch', 5));
    expect(batchOf(next, 'nextBatch')).toEqual([{ _id: 'a', title: 'mine' }, { _id: 'a', title: 'mine too' }]);
  });

  it('a scoped cursor is not filtered (the upstream already did it)', () => {
    const out = rw({ find: 'tasks', filter: { title: 'x' }, $db: 'x' });
    const body = rewriteReply(scope, out.reply, reply(planted.slice(0, 2)));
    expect(batchOf(body)).toEqual([{ _id: 'a', title: 'mine' }, { _id: 'a', title: 'theirs' }]);
  });

  it('expose_tag: the tag stays, unless only the check asked for it', () => {
    const plain = rw({ find: 'tasks', filter: { _id: 'a' }, $db: 'x' }, exposed);
    expect(batchOf(rewriteReply(exposed, plain.reply, reply(planted)))).toEqual([{ _id: 'a', title: 'mine', app_id: 'app1' }]);
    const included = rw({ find: 'tasks', filter: { _id: 'a' }, projection: { title: 1 }, $db: 'x' }, exposed);
    expect(batchOf(rewriteReply(exposed, included.reply, reply(planted)))).toEqual([{ _id: 'a', title: 'mine' }]);
    const excluded = rw({ find: 'tasks', filter: { _id: 'a' }, projection: { app_id: 0 }, $db: 'x' }, exposed);
    expect(sent(excluded).projection).toEqual({});
    expect(batchOf(rewriteReply(exposed, excluded.reply, reply(planted)))).toEqual([{ _id: 'a', title: 'mine' }]);
    const asked = rw({ find: 'tasks', filter: { _id: 'a' }, projection: { title: 1, app_id: 1 }, $db: 'x' }, exposed);
    expect(batchOf(rewriteReply(exposed, asked.reply, reply(planted)))).toEqual([{ _id: 'a', title: 'mine', app_id: 'app1' }]);
  });

  it('another app reading the same reply through its own fast path keeps only its documents', () => {
    const other = makeScope('app2', DB, 'app_id');
    const out = rw({ find: 'tasks', filter: { _id: 'a' }, $db: 'x' }, other);
    expect(batchOf(rewriteReply(other, out.reply, reply(planted)))).toEqual([{ _id: 'a', title: 'theirs' }]);
  });

  it('an error reply passes as before', () => {
    const out = rw({ find: 'tasks', filter: { _id: 'a' }, $db: 'x' });
    const err = bytes({ ok: 0, errmsg: 'boom in mdb_runtime.app1_tasks', code: 2 });
    expect(deserialize(rewriteReply(scope, out.reply, err)).errmsg).toBe('boom in x.tasks');
  });
});
