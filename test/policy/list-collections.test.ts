import { BSONRegExp, EJSON, Long, deserialize, serialize, type Document } from 'bson';
import { Query } from 'mingo';
import { describe, expect, it } from 'vitest';
import { lookupCommand } from '../../src/policy/commands.js';
import { decodeDocument } from '../../src/policy/decode.js';
import { CommandError } from '../../src/policy/errors.js';
import type { ReplyPlan, RewrittenCommand } from '../../src/policy/handler.js';
import { LIST_COLLECTIONS_STEPS } from '../../src/policy/handlers/collections.js';
import { rewriteReply } from '../../src/policy/reply.js';
import { rewriteCommand } from '../../src/policy/rewrite.js';
import { makeScope, type Doc } from '../../src/policy/scope.js';

/**
 * listCollections: the upstream gets the app's prefix and nothing else of the app's filter, and the
 * proxy evaluates the whole filter over the app's own entries (as the app sees them) with a bounded
 * evaluator: RE2 for regular expressions, an operator allow-list, a step budget (docs/security.md,
 * "App input evaluated by the proxy" and "The shared catalogue as an oracle"). Commands go through the
 * same decoding as on the wire (js-bson, no promotion, BSON regexes), replies through the reply rewrite.
 */

const scope = makeScope('app1', 'mdb_runtime', 'app_id');
const PREFIX = { name: new BSONRegExp('^app1_') };

/**
 * A command as the proxy decodes it from the wire. Keys spelled `Xbsontype` go out as `_bsontype`
 * (js-bson refuses to encode that key, but any byte may come on the wire).
 */
const wire = (doc: Document): Doc => {
  const bytes = Buffer.from(serialize(doc));
  for (let at = bytes.indexOf('Xbsontype'); at >= 0; at = bytes.indexOf('Xbsontype', at)) bytes.write('_bsontype', at);
  return decodeDocument(bytes);
};

function rw(body: Document): RewrittenCommand {
  const cmd = wire({ ...body, $db: body.$db ?? 'mine' });
  const name = Object.keys(cmd)[0]!;
  return rewriteCommand(scope, lookupCommand(name)!, name, cmd, []);
}

function refusal(fn: () => unknown): CommandError {
  try {
    fn();
  } catch (err) {
    if (err instanceof CommandError) return err;
    throw err;
  }
  throw new Error('expected a refusal');
}

/** The app's collections as it sees them (a dedicated database would list exactly these). */
const OWN: Document[] = [
  {
    name: 'tasks',
    type: 'collection',
    options: { capped: true, size: 4096, max: 100 },
    info: { readOnly: false },
    idIndex: { v: 2, key: { _id: 1 }, name: '_id_', ns: 'mine.tasks' },
  },
  { name: 'notes', type: 'collection', options: { validator: { $jsonSchema: { required: ['title', 'body'] } } }, info: { readOnly: false } },
  { name: 'archive_2024', type: 'collection', options: {}, info: { readOnly: false } },
  { name: 'open_tasks', type: 'view', options: { viewOn: 'tasks', pipeline: [{ $match: { done: false } }] }, info: { readOnly: true } },
  { name: 'Tags', type: 'collection', options: { collation: { locale: 'en', strength: 2 } }, info: { readOnly: false } },
];

/** The same entries as the upstream holds them: physical names, and (views) the stored scoped pipeline. */
function physical(entry: Document, slug = 'app1'): Document {
  const out: Document = { ...entry, name: `${slug}_${entry.name}` };
  if (entry.options?.viewOn) {
    const view = rw({ create: entry.name, viewOn: entry.options.viewOn, pipeline: entry.options.pipeline }).body;
    out.options = { ...entry.options, viewOn: view.viewOn, pipeline: view.pipeline };
  }
  if (entry.idIndex) out.idIndex = { ...entry.idIndex, ns: `mdb_runtime.${slug}_${entry.name}` };
  return out;
}

/** Another app's collections, as a shared catalogue would also hold them. */
const FOREIGN: Document[] = [
  { name: 'app2_secret', type: 'collection', options: {}, info: { readOnly: false } },
  { name: 'app2_tasks', type: 'collection', options: { capped: true, size: 1 }, info: { readOnly: false } },
];

const batch = (entries: Document[], key = 'firstBatch', id: Long | number = 0): Buffer =>
  Buffer.from(serialize({ cursor: { [key]: entries, id, ns: 'mdb_runtime.$cmd.listCollections' }, ok: 1 }));

/** What the app gets for `entries` from the upstream: the shown entries, or the error it is answered. */
function shown(plan: ReplyPlan, entries: Document[], key = 'firstBatch'): Document[] | CommandError {
  try {
    return deserialize(rewriteReply(scope, plan, batch(entries, key))).cursor[key] as Document[];
  } catch (err) {
    if (err instanceof CommandError) return err;
    throw err;
  }
}

function names(filter: Document, entries = OWN.map((e) => physical(e)), extra: Document = {}): string[] | CommandError {
  const out = shown(rw({ listCollections: 1, filter, ...extra }).reply, entries);
  return out instanceof CommandError ? out : out.map((e) => e.name as string);
}

/** The probe of the oracle attack: it raises exactly when `$name` matches `pattern`. */
const probe = (pattern: string): Document => ({
  $expr: { $cond: [{ $regexMatch: { input: '$name', regex: pattern } }, { $divide: [1, 0] }, true] },
});

describe('the command sent upstream', () => {
  const filters: [string, Document][] = [
    ['a name', { name: 'tasks' }],
    ['the $expr oracle probe of another app', probe('^app2_')],
    ['a timing probe (a catastrophic regex)', { name: { $regex: '^(a+)+$' } }],
    ['nested name conditions', { $or: [{ name: 'app2_secret' }, { $and: [{ name: /^t/ }, { type: 'collection' }] }] }],
    ['conditions on options', { 'options.capped': true, 'options.pipeline': { $size: 2 } }],
    ['a $nor over the catalogue', { $nor: [{ name: { $exists: true } }] }],
  ];

  it.each(filters)('carries only the prefix condition for %s', (_what, filter) => {
    const out = rw({ listCollections: 1, filter, authorizedCollections: true, cursor: { batchSize: 5 }, comment: 'c' });
    expect(out.body).toEqual(wire({ listCollections: 1, filter: PREFIX, authorizedCollections: true, cursor: { batchSize: 5 }, comment: 'c', $db: 'mdb_runtime' }));
    expect(out.access).toEqual([]);
    // With nameOnly, the proxy asks for full entries (it reduces them itself: see below); authorizedCollections
    // goes with it.
    expect(rw({ listCollections: 1, filter, nameOnly: true, authorizedCollections: true }).body).toEqual(
      wire({ listCollections: 1, filter: PREFIX, $db: 'mdb_runtime' }),
    );
  });

  it('without a filter, or an empty one: the same prefix, nameOnly as the app sent it, and nothing to evaluate', () => {
    for (const input of [{ listCollections: 1, nameOnly: true }, { listCollections: 1, filter: {}, nameOnly: true }]) {
      const out = rw(input);
      expect(out.body).toEqual(wire({ listCollections: 1, nameOnly: true, filter: PREFIX, $db: 'mdb_runtime' }));
      expect(out.reply).toMatchObject({ kind: 'cursor', view: { kind: 'collections', appDb: 'mine' } });
      expect((out.reply as { view: { entries?: unknown } }).view.entries).toBeUndefined();
    }
  });

  it('refuses a filter that is not a document, as the server does', () => {
    expect(refusal(() => rw({ listCollections: 1, filter: 'tasks' }))).toMatchObject({ code: 14, codeName: 'TypeMismatch' });
  });
});

describe('the filter, evaluated by the proxy over the app\'s own entries', () => {
  // mingo over the entries as the app sees them is the reference: what a dedicated database holding
  // only the app's collections would answer.
  const filters: [string, Document][] = [
    ['an exact name', { name: 'tasks' }],
    ['$in over own and foreign names', { name: { $in: ['tasks', 'notes', 'app2_secret', 'app1_tasks'] } }],
    ['a physical name: nothing', { name: 'app1_tasks' }],
    ['a regex', { name: /^t/ }],
    ['a case-insensitive regex', { name: { $regex: '^t', $options: 'i' } }],
    ['a name condition inside $or', { $or: [{ name: 'notes' }, { type: 'view' }] }],
    ['a name condition inside $and', { $and: [{ name: { $ne: 'tasks' } }, { 'options.capped': { $exists: false } }] }],
    ['a name condition inside $nor', { $nor: [{ name: /_/ }] }],
    ['nested $or inside $and', { $and: [{ $or: [{ name: /s$/ }, { name: 'Tags' }] }, { type: 'collection' }] }],
    ['$not of a regex', { name: { $not: /^t/ } }],
    ['a range on names', { name: { $gt: 'n', $lt: 'tz' } }],
    ['a view source, mapped back', { 'options.viewOn': 'tasks' }],
    ['a view pipeline as the app wrote it', { 'options.pipeline': { $size: 1 } }],
    ['a stage of the app pipeline', { 'options.pipeline.0.$match.done': false }],
    ['a number in the options', { 'options.size': { $gte: 4096 } }],
    ['an array member of a validator', { 'options.validator.$jsonSchema.required': 'title' }],
    ['$all over an array', { 'options.validator.$jsonSchema.required': { $all: ['body', 'title'] } }],
    ['$elemMatch on values', { 'options.validator.$jsonSchema.required': { $elemMatch: { $eq: 'body' } } }],
    ['$elemMatch with $in', { 'options.validator.$jsonSchema.required': { $elemMatch: { $in: ['body'] } } }],
    ['info', { 'info.readOnly': true }],
    ['$type', { 'options.size': { $type: 'number' } }],
    ['an index namespace, mapped back', { 'idIndex.ns': 'mine.tasks' }],
    ['$expr on names', { $expr: { $in: ['$name', ['tasks', 'notes', 'app2_secret']] } }],
    ['$expr with $and and a string length', { $expr: { $and: [{ $eq: ['$type', 'collection'] }, { $gt: [{ $strLenCP: '$name' }, 5] }] } }],
    ['$expr with $regexMatch', { $expr: { $regexMatch: { input: '$name', regex: '^ta' } } }],
    ['$expr on a view source', { $expr: { $eq: ['$options.viewOn', 'tasks'] } }],
    ['$expr with $cond and $toLower', { $expr: { $cond: [{ $eq: [{ $toLower: '$name' }, 'tags'] }, true, false] } }],
    ['$expr with $ifNull', { $expr: { $eq: [{ $ifNull: ['$options.capped', false] }, true] } }],
    ['$expr with arithmetic', { $expr: { $gt: [{ $add: ['$options.size', 1] }, 4096] } }],
    ['the oracle probe of another app\'s names', probe('^app2_')],
    ['the oracle probe of physical names', probe('^app1_')],
  ];

  it.each(filters)('%s: as mingo over the app\'s own entries', (_what, filter) => {
    const expected = new Query(filter).find(OWN).all().map((e) => (e as Document).name as string);
    expect(names(filter)).toEqual(expected);
  });

  it('the reference is not trivial: the table has filters matching some, all and none of the entries', () => {
    const sizes = filters.map(([, f]) => new Query(f).find(OWN).all().length);
    expect(sizes).toContain(0);
    expect(sizes).toContain(OWN.length);
    expect(sizes.some((n) => n > 0 && n < OWN.length)).toBe(true);
  });

  it('conditions on names never see another app\'s entries, even if the upstream returned them', () => {
    const mixed = [...OWN.map((e) => physical(e)), ...FOREIGN];
    for (const [, filter] of filters) expect(names(filter, mixed), EJSON.stringify(filter)).toEqual(names(filter));
  });

  it('$all on a single value matches it, as on the server (mingo needs an array)', () => {
    expect(names({ name: { $all: ['tasks'] } })).toEqual(['tasks']);
    expect(names({ name: { $all: [] } })).toEqual([]);
  });

  it('$not of an operator keeps entries where the field is missing', () => {
    expect(names({ 'options.size': { $not: { $gt: 100 } } })).toEqual(['notes', 'archive_2024', 'open_tasks', 'Tags']);
  });

  it('a document with a `_bsontype` key is a document, never the number it imitates', () => {
    // tasks has options.size 4096: only the number matches, not a document shaped like a bson Int32.
    expect(names({ 'options.size': 4096 })).toEqual(['tasks']);
    expect(names({ 'options.size': { Xbsontype: 'Int32', value: 4096 } })).toEqual([]);
    expect(names({ 'options.size': { $gt: { Xbsontype: 'Int32', value: 1 } } })).toEqual([]);
  });

  it('null matches a missing field; $exists: false likewise', () => {
    expect(names({ 'options.viewOn': null })).toEqual(['tasks', 'notes', 'archive_2024', 'Tags']);
    expect(names({ 'options.viewOn': { $exists: false } })).toEqual(['tasks', 'notes', 'archive_2024', 'Tags']);
  });
});

describe('the $expr oracle', () => {
  it('answers the same whether or not another app has a collection matching the probe', () => {
    const own = OWN.map((e) => physical(e));
    for (const foreign of [[], FOREIGN, [{ name: 'app2_probe_target', type: 'collection' }]]) {
      expect(names(probe('^app2_probe_target$'), [...own, ...foreign])).toEqual(OWN.map((e) => e.name));
    }
  });

  it('raises only for the app\'s own entries, with the server\'s error', () => {
    expect(names(probe('^notes$'))).toMatchObject({ code: 2, message: "can't $divide by zero" });
    expect(names(probe('^notes$'), OWN.filter((e) => e.name !== 'notes').map((e) => physical(e)))).toEqual(
      OWN.filter((e) => e.name !== 'notes').map((e) => e.name),
    );
  });
});

describe('regular expressions run on RE2', () => {
  const long = 'a'.repeat(40);
  const entries = [physical({ name: `${long}b`, type: 'collection' }), physical({ name: long, type: 'collection' })];

  // Backtracking engines take hours on these over 40 characters; the test would time out.
  it.each([
    ['^(a+)+$', [long]],
    ['^(a|aa)+$', [long]],
    ['^(a+)+b$', [`${long}b`]],
    ['(.*a){20}', [`${long}b`, long]],
  ])('the catastrophic pattern %s over a 40-character name', (pattern, expected) => {
    expect(names({ name: { $regex: pattern } }, entries)).toEqual(expected);
    expect(names({ name: new BSONRegExp(pattern) }, entries)).toEqual(expected);
    expect(names({ $expr: { $regexMatch: { input: '$name', regex: pattern } } }, entries)).toEqual(expected);
    expect(names({ name: { $in: [new BSONRegExp(pattern)] } }, entries)).toEqual(expected);
  });

  it.each([
    ['a backreference', '(a)\\1'],
    ['a lookahead', 'a(?=b)'],
    ['a negative lookbehind', '(?<!a)b'],
    ['a possessive quantifier', 'a++'],
    ['an atomic group', '(?>a)'],
    ['an unbalanced group', '(a'],
  ])('%s is refused with the server\'s 51091, in every form', (_what, pattern) => {
    for (const filter of [
      { name: { $regex: pattern } },
      { name: new BSONRegExp(pattern) },
      { name: { $in: ['x', new BSONRegExp(pattern)] } },
      { name: { $not: new BSONRegExp(pattern) } },
      { $expr: { $regexMatch: { input: '$name', regex: pattern } } },
      { $expr: { $regexFind: { input: '$name', regex: new BSONRegExp(pattern) } } },
    ]) {
      const err = refusal(() => rw({ listCollections: 1, filter }));
      expect(err, EJSON.stringify(filter)).toMatchObject({ code: 51091, codeName: 'Location51091' });
      expect(err.message).toMatch(/^Regular expression is invalid: /);
    }
  });

  it('a pattern computed from an entry is compiled with RE2 too, and refused when it is invalid', () => {
    const filter = { $expr: { $regexMatch: { input: 'x', regex: '$name' } } };
    expect(names(filter, [physical({ name: 'x', type: 'collection' })])).toEqual(['x']);
    expect(names(filter, [physical({ name: '(a)\\1', type: 'collection' })])).toMatchObject({ code: 51091 });
  });

  it.each([
    ['i', 'TAGS', ['Tags']],
    ['x', ' t a g s # a comment', []],
    ['ix', ' T A G S ', ['Tags']],
    ['m', '^tasks$', ['tasks']],
    ['s', 'open.tasks', ['open_tasks']],
  ])('option %s', (options, pattern, expected) => {
    expect(names({ name: { $regex: pattern, $options: options } })).toEqual(expected);
    expect(names({ name: new BSONRegExp(pattern, options) })).toEqual(expected);
  });

  it('refuses unknown options (51108), options given twice, and NUL bytes (51109)', () => {
    expect(refusal(() => rw({ listCollections: 1, filter: { name: { $regex: 'a', $options: 'q' } } }))).toMatchObject({ code: 51108 });
    expect(refusal(() => rw({ listCollections: 1, filter: { name: { $regex: new BSONRegExp('a', 'i'), $options: 'm' } } }))).toMatchObject({ code: 2 });
    expect(refusal(() => rw({ listCollections: 1, filter: { name: { $regex: 'a\0b' } } }))).toMatchObject({ code: 51109 });
    expect(refusal(() => rw({ listCollections: 1, filter: { name: { $options: 'i' } } }))).toMatchObject({ code: 2, message: '$options needs a $regex' });
  });

  it('$regexFind and $regexFindAll give the match, its code point index and the captures', () => {
    const entries = [physical({ name: '😀tasks', type: 'collection' })];
    expect(names({ $expr: { $eq: [{ $regexFind: { input: '$name', regex: '(s)(x)?' } }, { match: 's', idx: 3, captures: ['s', null] }] } }, entries)).toEqual(['😀tasks']);
    expect(
      names({ $expr: { $eq: [{ $regexFindAll: { input: '$name', regex: 's' } }, [{ match: 's', idx: 3, captures: [] }, { match: 's', idx: 5, captures: [] }]] } }, entries),
    ).toEqual(['😀tasks']);
  });
});

describe('fail closed', () => {
  it.each([
    ['an unknown field operator', { name: { $foo: 1 } }, 2, 'unknown operator: $foo'],
    ['an unknown top-level operator', { $foo: 1 }, 2, 'unknown top level operator: $foo'],
    ['a query operator left out ($mod)', { 'options.size': { $mod: [2, 0] } }, 2, '$mod is not supported'],
    ['a query operator left out ($jsonSchema)', { $jsonSchema: {} }, 2, '$jsonSchema is not supported'],
    ['a query operator left out ($text)', { $text: { $search: 'x' } }, 2, '$text is not supported'],
    ['an unknown expression', { $expr: { $foo: 1 } }, 168, "Unrecognized expression '$foo'"],
    ['$map (not linear in app-made arrays)', { $expr: { $map: { input: [1], in: 1 } } }, 168, "'$map' is not supported"],
    ['$reduce', { $expr: { $reduce: { input: [], initialValue: 0, in: 1 } } }, 168, "'$reduce' is not supported"],
    ['$range', { $expr: { $range: [0, 1000000000] } }, 168, "'$range' is not supported"],
    ['$let', { $expr: { $let: { vars: { a: 1 }, in: '$$a' } } }, 168, "'$let' is not supported"],
    ['$function (server-side JavaScript)', { $expr: { $function: { body: 'x', args: [], lang: 'js' } } }, 224, '$function is not allowed'],
    ['$where', { $where: 'true' }, 224, '$where is not allowed'],
    ['$accumulator', { $expr: { $accumulator: {} } }, 224, '$accumulator is not allowed'],
    ['an undefined variable', { $expr: { $eq: ['$$NOW', 1] } }, 17276, 'Use of undefined variable: NOW'],
    ['$expr inside $elemMatch', { 'options.pipeline': { $elemMatch: { $expr: true, a: 1 } } }, 2, '$expr can only be applied to the top-level document'],
    ['a regex as the argument of $ne', { name: { $ne: /a/ } }, 2, "Can't have regex as arg to $ne"],
    ['$in without an array', { name: { $in: 'tasks' } }, 2, '$in needs an array'],
    ['an empty $or', { $or: [] }, 2, '$or must be a nonempty array'],
    ['an unknown $type alias', { name: { $type: 'strnig' } }, 2, 'Unknown type name alias: strnig'],
    ['a negative $size', { 'options.pipeline': { $size: -1 } }, 2, '$size may not be negative'],
  ])('%s is refused before anything is sent', (_what, filter, code, message) => {
    const err = refusal(() => rw({ listCollections: 1, filter }));
    expect(err.code).toBe(code);
    expect(err.message).toContain(message);
  });

  it('expression errors that depend on the entries answer the command with the server\'s error', () => {
    expect(names({ $expr: { $gt: [{ $size: '$name' }, 1] } })).toMatchObject({ code: 17124 });
    expect(names({ $expr: { $concat: ['$name', '$options.size'] } })).toMatchObject({ code: 16702 });
    expect(names({ $expr: { $regexMatch: { input: '$options.size', regex: 'a' } } })).toMatchObject({ code: 51104 });
  });
});

describe('bounded', () => {
  const many = (n: number) => Array.from({ length: n }, (_, i) => physical({ name: `c${i}`, type: 'collection', options: {} }));
  // 5,000 numbers: each entry's name is compared with every one of them.
  const heavy = { name: { $in: Array.from({ length: 5000 }, (_, i) => i) } };

  it(`a filter over more entries than its budget (${LIST_COLLECTIONS_STEPS} steps) allows is refused, not run to the end`, () => {
    const err = names(heavy, many(40));
    expect(err).toMatchObject({ code: 2, codeName: 'BadValue' });
    expect((err as CommandError).message).toContain(`more than ${LIST_COLLECTIONS_STEPS} evaluation steps`);
  });

  it('the same filter over fewer entries runs', () => {
    expect(names(heavy, many(10))).toEqual([]);
    expect(names({ ...heavy, name: { $in: [...heavy.name.$in, 'c3'] } }, many(10))).toEqual(['c3']);
  });

  it('the budget is for the whole listing: its getMore batches share it', () => {
    const plan = rw({ listCollections: 1, filter: heavy, cursor: { batchSize: 10 } }).reply;
    for (let i = 0; i < 3; i++) expect(shown(plan, many(5), i === 0 ? 'firstBatch' : 'nextBatch')).toEqual([]);
    expect(shown(plan, many(10), 'nextBatch')).toMatchObject({ code: 2 });
  });

  it('long strings cost steps in proportion to their length', () => {
    const long = physical({ name: 'v', type: 'collection', options: { validator: { s: 'a'.repeat(400_000) } } });
    const scan = { 'options.validator.s': { $regex: 'b' } };
    expect(names(scan, [long])).toEqual([]);
    expect(names(scan, Array.from({ length: 5 }, () => long))).toMatchObject({ code: 2 });
  });

  it('refuses a filter nested deeper than its depth limit (100 query or expression nodes)', () => {
    let deep: Document = { $eq: ['$name', 'tasks'] };
    for (let i = 0; i < 60; i++) deep = { $not: deep };
    expect(refusal(() => rw({ listCollections: 1, filter: { $expr: deep } }))).toMatchObject({ code: 2, message: 'exceeded maximum query tree depth of 100' });
    // What the command's nesting limit lets through otherwise runs.
    let nested: Document = { name: 'tasks' };
    for (let i = 0; i < 40; i++) nested = { $and: [nested] };
    expect(names(nested)).toEqual(['tasks']);
  });

  it('refuses a filter with more nodes than it evaluates', () => {
    const filter = { name: { $in: Array.from({ length: 20_000 }, (_, i) => i) } };
    expect(refusal(() => rw({ listCollections: 1, filter })).message).toContain('the filter is too large');
  });
});

describe('nameOnly', () => {
  const full = OWN.map((e) => physical(e));

  it('a filter on type works: the proxy asks for full entries and shows {name, type}', () => {
    const out = rw({ listCollections: 1, filter: { type: 'view' }, nameOnly: true });
    expect(out.body).toEqual(wire({ listCollections: 1, filter: PREFIX, $db: 'mdb_runtime' }));
    expect(shown(out.reply, full)).toEqual([{ name: 'open_tasks', type: 'view' }]);
    expect(shown(rw({ listCollections: 1, filter: { type: 'collection' }, nameOnly: true }).reply, full)).toEqual(
      OWN.filter((e) => e.type === 'collection').map((e) => ({ name: e.name, type: 'collection' })),
    );
  });

  it('as on the server, a filter on other fields sees only name and type', () => {
    expect(names({ 'options.capped': true }, full, { nameOnly: true })).toEqual([]);
    expect(names({ options: { $exists: false } }, full, { nameOnly: true })).toEqual(OWN.map((e) => e.name));
    expect(names({ $or: [{ name: /^t/ }, { type: 'view' }] }, full, { nameOnly: true })).toEqual(['tasks', 'open_tasks']);
  });
});

describe('views are shown with the pipeline the app wrote', () => {
  const pipelines: [string, Document[], Document[]?][] = [
    ['empty', []],
    ['a leading $match (the tag joined to it)', [{ $match: { done: false } }, { $sort: { at: -1 } }]],
    ['a leading $match naming the tag', [{ $match: { app_id: 'x' } }]],
    ['a stage that is not a $match', [{ $project: { title: 1 } }]],
    ['a $lookup, both forms', [
      { $lookup: { from: 'users', localField: 'u', foreignField: '_id', as: 'user' } },
      { $lookup: { from: 'notes', let: { t: '$_id' }, pipeline: [{ $match: { $expr: { $eq: ['$task', '$$t'] } } }], as: 'notes' } },
    ]],
    ['$unionWith, string and document forms', [{ $unionWith: 'archive' }, { $unionWith: { coll: 'notes', pipeline: [{ $project: { a: 1 } }] } }]],
    ['$graphLookup', [{ $graphLookup: { from: 'tasks', startWith: '$parent', connectFromField: 'parent', connectToField: '_id', as: 'chain' } }]],
    ['$facet', [{ $facet: { a: [{ $count: 'n' }], b: [{ $lookup: { from: 'users', localField: 'u', foreignField: '_id', as: 'x' } }] } }]],
    ['an empty leading $match (stored as the tag alone)', [{ $match: {} }], []],
  ];

  it.each(pipelines)('%s', (_what, pipeline, expected = pipeline) => {
    const entry = physical({ name: 'v', type: 'view', options: { viewOn: 'tasks', pipeline } });
    // The stored pipeline is not the app's (the proxy's stages), the shown one is.
    expect(entry.options.pipeline).not.toEqual(pipeline);
    const out = shown(rw({ listCollections: 1 }).reply, [entry]) as Document[];
    expect(out).toEqual([{ name: 'v', type: 'view', options: { viewOn: 'tasks', pipeline: expected } }]);
    // The filter sees the same.
    expect(names({ 'options.pipeline': expected }, [entry])).toEqual(['v']);
  });

  it('a view created around the proxy is shown as stored', () => {
    const stored = [{ $match: { app_id: 'app1' } }, { $project: { a: 1 } }];
    expect(shown(rw({ listCollections: 1 }).reply, [{ name: 'app1_v', type: 'view', options: { viewOn: 'app1_t', pipeline: stored } }])).toEqual([
      { name: 'v', type: 'view', options: { viewOn: 't', pipeline: stored } },
    ]);
  });
});

// ---- Other app input the proxy walks: linear in it too (docs/security.md, "App input evaluated by the
// proxy"). The sizes are what one command can carry; with a pass per name, or a list scanned per name,
// each of these took minutes, past the test timeout.

function errmsg(collections: string[], message: string): string {
  const body = Buffer.from(serialize({ ok: 0, errmsg: message, code: 2, codeName: 'BadValue' }));
  return deserialize(rewriteReply(scope, { kind: 'plain', appDb: 'mine', collections }, body)).errmsg as string;
}

describe('names in error messages are mapped back in one pass', () => {
  it.each([
    ['the namespace', 'ns mdb_runtime.app1_tasks not found', ['tasks'], 'ns mine.tasks not found'],
    ['a bare physical name', "collection 'app1_tasks' exists", ['tasks'], "collection 'tasks' exists"],
    ['the longest name that follows the prefix', 'app1_tasks2 and app1_tasks', ['tasks', 'tasks2'], 'tasks2 and tasks'],
    ['a name that itself starts like the prefix, mapped once', 'app1_app1_x', ['app1_x', 'x'], 'app1_x'],
    ['a name the command did not use: left alone', 'app1_other', ['tasks'], 'app1_other'],
    ['names outside the basic plane', 'app1_😀x, app1_😀', ['😀x', '😀'], '😀x, 😀'],
  ])('%s', (_what, message, collections, expected) => {
    expect(errmsg(collections, message)).toBe(expected);
  });

  it('with 40,000 names and a 4 MB message quoting them', () => {
    const collections = Array.from({ length: 40_000 }, (_, i) => `c${i}`);
    const message = Array.from({ length: 400_000 }, (_, i) => `app1_c${i % 40_000}`).join(' ');
    const mapped = errmsg(collections, message);
    expect(mapped.split(' ')).toHaveLength(400_000);
    expect(mapped.startsWith('c0 c1 c2 ')).toBe(true);
    expect(mapped).not.toContain('app1_');
  });
});

describe('collections named by a pipeline are listed once', () => {
  it('an aggregate with 300,000 $unionWith stages', () => {
    const pipeline: Document[] = Array.from({ length: 300_000 }, (_, i) => ({ $unionWith: `c${i % 150_000}` }));
    const out = rw({ aggregate: 'x', pipeline, cursor: {} });
    expect(out.reply.collections).toHaveLength(150_001);
    expect(new Set(out.reply.collections).size).toBe(150_001);
  });
});
