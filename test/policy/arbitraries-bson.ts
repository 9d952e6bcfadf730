/**
 * fast-check arbitraries for the fail-closed property tests (invariants.property.test.ts): commands
 * built as an exact model of BSON bytes, so that every BSON type can sit at every position, keys may
 * repeat, and documents may take any shape a hand-built frame can have — DBRef-shaped documents
 * (`$ref`, `$id`, `$db` and extra fields in any order), keys named like the tag at every level, a
 * field named `_bsontype` or `__proto__` — none of which a JS object given to js-bson's encoder can
 * express. The model is encoded here, by hand, into the bytes a client would send.
 *
 * The structured parts (filters, pipelines, updates) start from test/semantic/arbitraries.ts, whose
 * values are converted to the model and then mutated at random positions.
 */
import { Binary, BSONRegExp, Decimal128, Double, Int32, Long, ObjectId } from 'bson';
import fc from 'fast-check';
import * as semantic from '../semantic/arbitraries.js';

// ---- the model ----------------------------------------------------------------------------------

export type B =
  | { t: 'doc'; e: [string, B][] }
  | { t: 'arr'; v: B[] }
  | { t: 'double'; v: number }
  | { t: 'str'; v: string }
  | { t: 'bin'; sub: number; v: number[] }
  | { t: 'undef' }
  | { t: 'oid'; v: string }
  | { t: 'bool'; v: boolean }
  | { t: 'date'; v: number }
  | { t: 'null' }
  | { t: 'regex'; p: string; o: string }
  | { t: 'dbptr'; ns: string; oid: string }
  | { t: 'code'; v: string }
  | { t: 'sym'; v: string }
  | { t: 'codews'; v: string; scope: Extract<B, { t: 'doc' }> }
  | { t: 'i32'; v: number }
  | { t: 'ts'; v: bigint }
  | { t: 'i64'; v: bigint }
  | { t: 'dec'; v: number[] }
  | { t: 'min' }
  | { t: 'max' };

export type BDoc = Extract<B, { t: 'doc' }>;

export const doc = (...e: [string, B][]): BDoc => ({ t: 'doc', e });
export const arr = (...v: B[]): B => ({ t: 'arr', v });
export const str = (v: string): B => ({ t: 'str', v });
export const i32 = (v: number): B => ({ t: 'i32', v });
export const bool = (v: boolean): B => ({ t: 'bool', v });

/** A JS value as test/semantic/arbitraries.ts makes them (and as js-bson would encode it) in the model. */
export function fromJs(v: unknown): B {
  if (v === null) return { t: 'null' };
  if (v === undefined) return { t: 'undef' };
  if (typeof v === 'string') return str(v);
  if (typeof v === 'boolean') return bool(v);
  if (typeof v === 'number') return Number.isInteger(v) && Math.abs(v) < 2 ** 31 ? i32(v) : { t: 'double', v };
  if (typeof v === 'bigint') return { t: 'i64', v };
  if (Array.isArray(v)) return { t: 'arr', v: v.map(fromJs) };
  if (v instanceof Date) return { t: 'date', v: v.getTime() };
  if (v instanceof ObjectId) return { t: 'oid', v: v.toHexString() };
  if (v instanceof Int32) return i32(v.value);
  if (v instanceof Double) return { t: 'double', v: v.value };
  if (v instanceof Long) return { t: 'i64', v: v.toBigInt() };
  if (v instanceof BSONRegExp) return { t: 'regex', p: v.pattern, o: v.options };
  if (v instanceof Binary) return { t: 'bin', sub: v.sub_type, v: [...v.buffer] };
  if (typeof v === 'object') return { t: 'doc', e: Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, fromJs(x)]) };
  throw new Error(`fromJs: unsupported ${typeof v}`);
}

// ---- the encoder ----------------------------------------------------------------------------------

const TYPE: Record<B['t'], number> = {
  double: 0x01, str: 0x02, doc: 0x03, arr: 0x04, bin: 0x05, undef: 0x06, oid: 0x07, bool: 0x08, date: 0x09, null: 0x0a,
  regex: 0x0b, dbptr: 0x0c, code: 0x0d, sym: 0x0e, codews: 0x0f, i32: 0x10, ts: 0x11, i64: 0x12, dec: 0x13, min: 0xff, max: 0x7f,
};

const cstring = (s: string): Buffer => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);
const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
};
const int64 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(BigInt.asIntN(64, n));
  return b;
};
const bsonString = (s: string): Buffer => {
  const bytes = cstring(s);
  return Buffer.concat([int32(bytes.length), bytes]);
};

/** The bytes of a document (an array's keys are "0", "1"...). */
export function encode(node: BDoc): Buffer {
  return encodeEntries(node.e);
}

function encodeEntries(entries: [string, B][]): Buffer {
  const body = Buffer.concat(entries.map(([k, v]) => Buffer.concat([Buffer.from([TYPE[v.t]]), cstring(k), encodeValue(v)])));
  return Buffer.concat([int32(body.length + 5), body, Buffer.from([0])]);
}

function encodeValue(v: B): Buffer {
  switch (v.t) {
    case 'doc':
      return encodeEntries(v.e);
    case 'arr':
      return encodeEntries(v.v.map((x, i) => [String(i), x]));
    case 'double': {
      const b = Buffer.alloc(8);
      b.writeDoubleLE(v.v);
      return b;
    }
    case 'str':
    case 'code':
    case 'sym':
      return bsonString(v.v);
    case 'bin': {
      const data = Buffer.from(v.v);
      // Subtype 2 (the old binary) holds its own length inside.
      const payload = v.sub === 2 ? Buffer.concat([int32(data.length), data]) : data;
      return Buffer.concat([int32(payload.length), Buffer.from([v.sub]), payload]);
    }
    case 'undef':
    case 'null':
    case 'min':
    case 'max':
      return Buffer.alloc(0);
    case 'oid':
      return Buffer.from(v.v, 'hex');
    case 'bool':
      return Buffer.from([v.v ? 1 : 0]);
    case 'date':
      return int64(BigInt(v.v));
    case 'regex':
      return Buffer.concat([cstring(v.p), cstring(v.o)]);
    case 'dbptr':
      return Buffer.concat([bsonString(v.ns), Buffer.from(v.oid, 'hex')]);
    case 'codews': {
      const inner = Buffer.concat([bsonString(v.v), encode(v.scope)]);
      return Buffer.concat([int32(inner.length + 4), inner]);
    }
    case 'i32':
      return int32(v.v);
    case 'ts':
    case 'i64':
      return int64(v.v);
    case 'dec':
      return Buffer.from(v.v);
  }
}

// ---- values of every type, keys of every kind ------------------------------------------------------

export const TAG = 'app_id';
/** The apps of the property tests: the subject, a look-alike and a prefix of it. */
export const SLUG = 'app';
export const OTHER_SLUGS = ['app2', 'ap'] as const;

const OID_HEX = ['65a1b2c3d4e5f60718293a4b', '000000000000000000000000', 'ffffffffffffffffffffffff'];

/** Strings that mean something to the proxy: slugs, the tag's name, paths through it, prefixes. */
const interestingString = fc.constantFrom(
  SLUG, ...OTHER_SLUGS, TAG, `${TAG}.x`, `$${TAG}`, '$$ROOT', '$$CURRENT', '', 'a', 'b', 'x', 'app_', 'app2_c1', 'r', 'c1', 'é',
  'sleep(100)', 'function() { return 1 }',
);

/** Keys of every kind: the tag and paths through it, DBRef keys, operator names, odd names. */
export const key: fc.Arbitrary<string> = fc.oneof(
  { weight: 30, arbitrary: fc.constantFrom(TAG, `${TAG}.x`, `${TAG}.$`, `${TAG}.$[]`, `${TAG}.$[e]`, `${TAG}.0`) },
  { weight: 30, arbitrary: fc.constantFrom('a', 'b', 'k', 'c.q', 'arr', 'arr.$', 'arr.$[]', 'arr.$[e].q', '_id', 'x', `x.${TAG}`, `${TAG}x`, 'é') },
  { weight: 15, arbitrary: fc.constantFrom('$ref', '$id', '$db') },
  { weight: 10, arbitrary: fc.constantFrom('_bsontype', '__proto__', '', '0', '1', 'toBSON', 'constructor') },
  { weight: 10, arbitrary: fc.constantFrom('$set', '$unset', '$rename', '$setOnInsert', '$inc', '$max', '$push', '$each', '$literal') },
  { weight: 10, arbitrary: fc.constantFrom('$expr', '$and', '$or', '$nor', '$eq', '$in', '$ne', '$exists', '$elemMatch', '$not', '$getField', '$mergeObjects') },
  { weight: 1, arbitrary: fc.constantFrom('$where', '$function', '$accumulator') },
);

/** A scalar of every BSON type that is not a document, an array or code. */
export const scalar: fc.Arbitrary<B> = fc.oneof(
  { weight: 4, arbitrary: fc.double({ noNaN: false }).map((v): B => ({ t: 'double', v })) },
  { weight: 4, arbitrary: interestingString.map(str) },
  { weight: 4, arbitrary: fc.tuple(fc.constantFrom(0, 1, 2, 3, 4, 5, 6, 7, 8, 0x80), fc.array(fc.nat(255), { maxLength: 17 })).map(([sub, v]): B => ({ t: 'bin', sub, v: sub === 4 ? [...v, ...Array(16).fill(7)].slice(0, 16) : v })) },
  { weight: 1, arbitrary: fc.constant<B>({ t: 'undef' }) },
  { weight: 4, arbitrary: fc.constantFrom(...OID_HEX).map((v): B => ({ t: 'oid', v })) },
  { weight: 4, arbitrary: fc.boolean().map(bool) },
  { weight: 4, arbitrary: fc.integer({ min: -1e12, max: 1e13 }).map((v): B => ({ t: 'date', v })) },
  { weight: 4, arbitrary: fc.constant<B>({ t: 'null' }) },
  { weight: 4, arbitrary: fc.tuple(fc.constantFrom('^a', 'app', '.*', `^${SLUG}$`), fc.constantFrom('', 'i', 'ms')).map(([p, o]): B => ({ t: 'regex', p, o })) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom('db.c', 'c', 'a.b.c'), fc.constantFrom(...OID_HEX)).map(([ns, oid]): B => ({ t: 'dbptr', ns, oid })) },
  { weight: 4, arbitrary: interestingString.map((v): B => ({ t: 'sym', v })) },
  { weight: 4, arbitrary: fc.integer({ min: -3, max: 5 }).map(i32) },
  { weight: 4, arbitrary: fc.bigInt({ min: 0n, max: 2n ** 64n - 1n }).map((v): B => ({ t: 'ts', v })) },
  { weight: 4, arbitrary: fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((v): B => ({ t: 'i64', v })) },
  { weight: 4, arbitrary: fc.constantFrom('1', '-0', 'NaN', '1E+10', '0.1').map((s): B => ({ t: 'dec', v: [...Decimal128.fromString(s).bytes] })) },
  { weight: 4, arbitrary: fc.constant<B>({ t: 'min' }) },
  { weight: 4, arbitrary: fc.constant<B>({ t: 'max' }) },
);

/** Code and CodeWScope values (server-side JavaScript: always refused, wherever they are). */
export function code(depth: number): fc.Arbitrary<B> {
  const scope = depth > 0 ? document(depth - 1) : fc.array(fc.tuple(key, scalar), { maxLength: 2 }).map((e) => doc(...e));
  return fc.oneof(
    interestingString.map((v): B => ({ t: 'code', v })),
    fc.tuple(interestingString, scope).map(([v, sc]): B => ({ t: 'codews', v, scope: sc })),
  );
}

/**
 * A document shaped like a DBRef: `$ref` a string, `$id` any value, `$db` maybe, and extra fields
 * (often named like the tag), in any order. js-bson decodes such a document as a DBRef instance.
 */
export function dbrefShaped(depth: number, extras: fc.Arbitrary<[string, B]>): fc.Arbitrary<BDoc> {
  return fc
    .tuple(
      interestingString,
      depth > 0 ? value(depth - 1) : scalar,
      fc.option(interestingString, { nil: undefined }),
      fc.array(extras, { maxLength: 3 }),
      fc.nat(),
    )
    .map(([ref, id, db, more, order]) => {
      const e: [string, B][] = [['$ref', str(ref)], ['$id', id], ...(db === undefined ? [] : [['$db', str(db)] as [string, B]]), ...more];
      // A rotation of the entries: `$ref` need not come first.
      const at = e.length === 0 ? 0 : order % e.length;
      return doc(...e.slice(at), ...e.slice(0, at));
    });
}

/** Any value: every scalar type, code, documents (DBRef-shaped ones too) and arrays, to `depth`. */
const values = new Map<number, fc.Arbitrary<B>>();
const documents = new Map<number, fc.Arbitrary<BDoc>>();

export function value(depth: number): fc.Arbitrary<B> {
  let arb = values.get(depth);
  if (arb === undefined) values.set(depth, (arb = makeValue(depth)));
  return arb;
}

function makeValue(depth: number): fc.Arbitrary<B> {
  if (depth <= 0) return fc.oneof({ weight: 60, arbitrary: scalar }, { weight: 1, arbitrary: code(0) });
  return fc.oneof(
    { weight: 40, arbitrary: scalar },
    { weight: 1, arbitrary: code(depth) },
    { weight: 20, arbitrary: document(depth - 1) },
    { weight: 10, arbitrary: fc.array(value(depth - 1), { maxLength: 3 }).map((v): B => ({ t: 'arr', v })) },
    { weight: 15, arbitrary: dbrefShaped(depth - 1, fc.tuple(key, value(depth - 1))) },
  );
}

/** A document of any keys (repeats allowed) and any values. */
export function document(depth: number): fc.Arbitrary<BDoc> {
  let arb = documents.get(depth);
  if (arb === undefined) documents.set(depth, (arb = fc.array(fc.tuple(key, value(depth)), { maxLength: 4 }).map((e) => doc(...e))));
  return arb;
}

// ---- mutation at random positions ----------------------------------------------------------------

type Mutation = { at: number; kind: 'replace' | 'dbref' | 'tag' | 'dup' | 'wrap'; payload: B; ref: string };

const mutation: fc.Arbitrary<Mutation> = fc.record({
  at: fc.nat(),
  kind: fc.constantFrom('replace', 'dbref', 'tag', 'dup', 'wrap'),
  payload: value(1),
  ref: interestingString,
});

/**
 * `node` with up to `max` mutations applied at random positions of its tree: a value replaced by any
 * other, a document made DBRef-shaped, an entry named like the tag added, an entry repeated, a value
 * wrapped in a DBRef-shaped document.
 */
export function mutated(node: fc.Arbitrary<B>, max = 3): fc.Arbitrary<B> {
  return fc.tuple(node, fc.array(mutation, { maxLength: max })).map(([n, ms]) => ms.reduce(applyMutation, n));
}

function count(n: B): number {
  if (n.t === 'doc') return 1 + n.e.reduce((s, [, v]) => s + count(v), 0);
  if (n.t === 'arr') return 1 + n.v.reduce((s, v) => s + count(v), 0);
  return 1;
}

function applyMutation(root: B, m: Mutation): B {
  const target = m.at % count(root);
  let i = 0;
  const visit = (n: B): B => {
    const here = i++;
    if (here === target) return mutate(n, m);
    if (n.t === 'doc') return { t: 'doc', e: n.e.map(([k, v]) => [k, visit(v)]) };
    if (n.t === 'arr') return { t: 'arr', v: n.v.map(visit) };
    return n;
  };
  return visit(root);
}

function mutate(n: B, m: Mutation): B {
  switch (m.kind) {
    case 'replace':
      return m.payload;
    case 'dbref':
      return n.t === 'doc' ? doc(['$ref', str(m.ref)], ['$id', m.payload], ...n.e.filter(([k]) => !k.startsWith('$') || k === '$db')) : n;
    case 'tag':
      return n.t === 'doc' ? doc(...n.e, [TAG, m.payload]) : n;
    case 'dup':
      return n.t === 'doc' && n.e.length > 0 ? doc(...n.e, [n.e[0]![0], m.payload]) : n;
    case 'wrap':
      return doc(['$ref', str(m.ref)], ['$id', str('i')], ['v', n]);
  }
}

// ---- command parts ---------------------------------------------------------------------------------

/** A filter: the semantic suite's (mutated), a DBRef-shaped or random document, an exact `_id`, or not a document. */
export const filter: fc.Arbitrary<B> = fc.oneof(
  { weight: 4, arbitrary: mutated(semantic.filter({ tag: true, ids: semantic.readIds }).map(fromJs)) },
  { weight: 2, arbitrary: document(2) },
  { weight: 1, arbitrary: dbrefShaped(1, fc.tuple(key, value(1))) },
  { weight: 1, arbitrary: value(0).map((v) => doc(['_id', v])) },
  { weight: 1, arbitrary: value(1) },
);

const UPDATE_OPERATORS = ['$set', '$setOnInsert', '$unset', '$inc', '$mul', '$min', '$max', '$rename', '$currentDate', '$push', '$addToSet', '$pop', '$pull', '$pullAll', '$bit'];

/** An operand of an update operator: paths (the tag's among them) to values, DBRef-shaped or not, or not a document. */
const operand: fc.Arbitrary<B> = fc.oneof(
  { weight: 4, arbitrary: document(1) },
  { weight: 3, arbitrary: dbrefShaped(1, fc.tuple(key, fc.oneof(value(1), fc.constantFrom(str(TAG), str(`${TAG}.x`), str(SLUG))))) },
  { weight: 2, arbitrary: fc.tuple(key, fc.constantFrom(str(TAG), str(`${TAG}.x`), str('z'), str(SLUG), i32(1))).map(([k, v]) => doc([k, v])) },
  { weight: 1, arbitrary: value(1) },
);

/** An operator update of every operator (and some the server does not know). */
const operatorUpdate: fc.Arbitrary<B> = fc
  .array(fc.tuple(fc.oneof({ weight: 10, arbitrary: fc.constantFrom(...UPDATE_OPERATORS) }, { weight: 1, arbitrary: fc.constantFrom('$ref', '$nope', 'a') }), operand), {
    minLength: 1,
    maxLength: 3,
  })
  .map((e) => doc(...e));

const UPDATE_STAGES = ['$addFields', '$set', '$project', '$unset', '$replaceRoot', '$replaceWith', '$match', '$lookup'];

/** An update: operator, replacement or pipeline; the semantic suite's forms too; mutated. */
export const update: fc.Arbitrary<B> = fc.oneof(
  { weight: 5, arbitrary: operatorUpdate },
  { weight: 2, arbitrary: mutated(semantic.update(SLUG).map((x) => fromJs(x.u))) },
  { weight: 2, arbitrary: document(2) },
  { weight: 2, arbitrary: fc.array(fc.tuple(fc.constantFrom(...UPDATE_STAGES), value(2)).map(([k, v]) => doc([k, v])), { minLength: 1, maxLength: 3 }).map((v): B => ({ t: 'arr', v })) },
  { weight: 1, arbitrary: value(1) },
);

/** Stage names: every kind the proxy knows (passing, rewritten, first-only, refused) and an unknown one. */
const STAGE_NAMES = [
  '$match', '$project', '$addFields', '$set', '$unset', '$group', '$sort', '$limit', '$replaceWith', '$facet', '$lookup', '$graphLookup',
  '$unionWith', '$out', '$merge', '$geoNear', '$search', '$vectorSearch', '$changeStream', '$documents', '$searchMeta', '$collStats', '$nope',
];

/** The argument of a first-stage rewrite, in the shapes the proxy expects and others. */
function firstStage(depth: number): fc.Arbitrary<B> {
  const geo = fc.tuple(fc.option(filter, { nil: undefined }), fc.array(fc.tuple(key, value(1)), { maxLength: 2 })).map(([q, extra]) =>
    doc(['near', arr(i32(0), i32(0))], ['distanceField', str('d')], ...(q ? [['query', q] as [string, B]] : []), ...extra),
  );
  const vector = fc.option(filter, { nil: undefined }).map((f) =>
    doc(['index', str('i')], ['path', str('v')], ['queryVector', arr({ t: 'double', v: 1 })], ['numCandidates', i32(5)], ['limit', i32(2)], ...(f ? [['filter', f] as [string, B]] : [])),
  );
  const anyArg = fc.oneof(value(depth), dbrefShaped(depth, fc.tuple(key, value(1))));
  return fc.oneof(
    fc.tuple(fc.constantFrom('$geoNear'), fc.oneof(geo, mutated(geo, 2), anyArg)).map(([k, v]) => doc([k, v])),
    fc.tuple(fc.constantFrom('$vectorSearch'), fc.oneof(vector, mutated(vector, 2), anyArg)).map(([k, v]) => doc([k, v])),
    fc.tuple(fc.constantFrom('$search', '$changeStream', '$searchMeta'), fc.oneof(document(1), anyArg)).map(([k, v]) => doc([k, v])),
  );
}

/** A pipeline: the semantic suite's (with sub-pipelines), mutated; random stages; first-stage rewrites. */
export function pipeline(depth: number): fc.Arbitrary<B> {
  const randomStage = fc.tuple(fc.constantFrom(...STAGE_NAMES), value(2)).map(([k, v]) => doc([k, v]));
  const stages = fc.array(fc.oneof({ weight: 3, arbitrary: randomStage }, { weight: 1, arbitrary: firstStage(1) }), { maxLength: 3 });
  const nested =
    depth > 0
      ? fc.oneof(
          fc.tuple(fc.constantFrom('c1', 'c2'), pipeline(depth - 1)).map(([from, p]) => doc(['$lookup', doc(['from', str(from)], ['pipeline', p], ['as', str('j')])])),
          pipeline(depth - 1).map((p) => doc(['$lookup', doc(['pipeline', p], ['as', str('j')])])),
          fc.tuple(fc.constantFrom('c1', 'c2'), pipeline(depth - 1)).map(([coll, p]) => doc(['$unionWith', doc(['coll', str(coll)], ['pipeline', p])])),
          pipeline(depth - 1).map((p) => doc(['$facet', doc(['x', p])])),
        )
      : randomStage;
  return fc.oneof(
    { weight: 4, arbitrary: mutated(semantic.pipeline(Math.min(depth, 2)).map(fromJs)) },
    { weight: 2, arbitrary: fc.tuple(firstStage(1), stages).map(([f, rest]): B => ({ t: 'arr', v: [f, ...(rest as B[])] })) },
    { weight: 2, arbitrary: fc.tuple(stages, fc.array(nested, { maxLength: 2 })).map(([a, b]): B => ({ t: 'arr', v: [...a, ...b] })) },
    { weight: 1, arbitrary: fc.tuple(semantic.pipeline(1).map(fromJs), semantic.outputStage.map(fromJs)).map(([p, o]): B => ({ t: 'arr', v: [...(p as { v: B[] }).v, o] })) },
    { weight: 1, arbitrary: value(1) },
  );
}

/** A projection: the semantic suite's, mutated, or any document. */
export const projection: fc.Arbitrary<B> = fc.oneof(mutated(semantic.projection.map(fromJs), 2), document(1));

/** A document to insert: random fields (the tag among them, with any value), maybe DBRef-shaped. */
export const inserted: fc.Arbitrary<BDoc> = fc.oneof(
  { weight: 3, arbitrary: document(2) },
  { weight: 2, arbitrary: semantic.document().map((d) => fromJs(d) as BDoc) },
  { weight: 1, arbitrary: dbrefShaped(1, fc.tuple(key, value(1))) },
  { weight: 1, arbitrary: fc.tuple(document(1), fc.constantFrom(str(SLUG), str('app2'), i32(1), arr(str(SLUG)))).map(([d, tag]) => doc(...d.e, [TAG, tag])) },
);

// ---- commands --------------------------------------------------------------------------------------

export interface GeneratedCommand {
  body: BDoc;
  sequences: { identifier: string; documents: BDoc[] }[];
  /** Body documents of an insert are moved into a kind-1 sequence first, as the data plane does. */
  hoist?: boolean;
}

const collection = fc.constantFrom('c1', 'c2', 'tasks');
const $db = ['$db', str('appdb')] as [string, B];
const opt = (name: string, arb: fc.Arbitrary<B>): fc.Arbitrary<[string, B][]> => fc.option(arb, { nil: undefined }).map((v) => (v === undefined ? [] : [[name, v]]));
const flag = fc.oneof(fc.boolean().map(bool), fc.constant(i32(1)), value(0));

/** Statements of a write command, in the body or in a kind-1 sequence (what drivers send). */
function statements(list: string, statement: fc.Arbitrary<BDoc>): fc.Arbitrary<Pick<GeneratedCommand, 'sequences'> & { entries: [string, B][] }> {
  return fc.tuple(fc.array(statement, { minLength: 1, maxLength: 3 }), fc.boolean()).map(([sts, inBody]) =>
    inBody ? { entries: [[list, { t: 'arr', v: sts }]], sequences: [] } : { entries: [], sequences: [{ identifier: list, documents: sts }] },
  );
}

export const insertCommand: fc.Arbitrary<GeneratedCommand> = fc
  .tuple(collection, fc.array(inserted, { minLength: 1, maxLength: 3 }), fc.constantFrom('body', 'hoisted', 'kind1'))
  .map(([c, docs, where]) =>
    where === 'kind1'
      ? { body: doc(['insert', str(c)], $db), sequences: [{ identifier: 'documents', documents: docs }] }
      : { body: doc(['insert', str(c)], ['documents', { t: 'arr', v: docs }], $db), sequences: [], hoist: where === 'hoisted' },
  );

const updateStatement: fc.Arbitrary<BDoc> = fc
  .tuple(filter, update, opt('upsert', flag), opt('multi', fc.boolean().map(bool)), opt('arrayFilters', fc.constant(arr(doc(['e.q', i32(1)])))))
  .map(([q, u, ...rest]) => doc(['q', q], ['u', u], ...rest.flat()));

export const updateCommand: fc.Arbitrary<GeneratedCommand> = fc
  .tuple(collection, statements('updates', updateStatement))
  .map(([c, { entries, sequences }]) => ({ body: doc(['update', str(c)], ...entries, $db), sequences }));

const deleteStatement: fc.Arbitrary<BDoc> = fc.tuple(filter, fc.constantFrom(0, 1)).map(([q, limit]) => doc(['q', q], ['limit', i32(limit)]));

export const deleteCommand: fc.Arbitrary<GeneratedCommand> = fc
  .tuple(collection, statements('deletes', deleteStatement))
  .map(([c, { entries, sequences }]) => ({ body: doc(['delete', str(c)], ...entries, $db), sequences }));

export const findAndModifyCommand: fc.Arbitrary<GeneratedCommand> = fc
  .tuple(
    fc.constantFrom('findAndModify', 'findandmodify'),
    collection,
    opt('query', filter),
    fc.oneof(opt('update', update), fc.constant<[string, B][]>([['remove', bool(true)]])),
    opt('upsert', flag),
    opt('new', fc.boolean().map(bool)),
    opt('fields', projection),
    opt('sort', fc.constant(doc(['k', i32(1)]))),
  )
  .map(([name, c, ...rest]) => ({ body: doc([name, str(c)], ...rest.flat(), $db), sequences: [] }));

export const findCommand: fc.Arbitrary<GeneratedCommand> = fc
  .tuple(collection, opt('filter', filter), opt('projection', projection), opt('sort', fc.oneof(fc.constant(doc(['k', i32(1)])), document(0))), opt('limit', fc.constant(i32(2))))
  .map(([c, ...rest]) => ({ body: doc(['find', str(c)], ...rest.flat(), $db), sequences: [] }));

export const countCommand: fc.Arbitrary<GeneratedCommand> = fc
  .tuple(collection, opt('query', filter))
  .map(([c, q]) => ({ body: doc(['count', str(c)], ...q, $db), sequences: [] }));

export const distinctCommand: fc.Arbitrary<GeneratedCommand> = fc
  .tuple(collection, fc.constantFrom('a', TAG, `${TAG}.x`, 'c.q'), opt('query', filter))
  .map(([c, k, q]) => ({ body: doc(['distinct', str(c)], ['key', str(k)], ...q, $db), sequences: [] }));

export const aggregateCommand: fc.Arbitrary<GeneratedCommand> = fc
  .tuple(collection, pipeline(2))
  .map(([c, p]) => ({ body: doc(['aggregate', str(c)], ['pipeline', p], ['cursor', doc()], $db), sequences: [] }));
