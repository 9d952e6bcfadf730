import { afterEach, describe, expect, it, vi } from 'vitest';
import fc from 'fast-check';
import {
  Binary,
  BSONRegExp,
  BSONSymbol,
  Code,
  Decimal128,
  Double,
  Int32,
  Long,
  MaxKey,
  MinKey,
  ObjectId,
  Timestamp,
  deserialize,
  serialize,
  type Document,
} from 'bson';
import { BsonType, checkDocumentBounds, forEachElement } from '../../src/wire/bson-bytes.js';
import { rewriteCursorReply, rewriteDocumentField, stampAll, stampField, stripField } from '../../src/wire/bson-edit.js';
import { FieldConflictError, WireError } from '../../src/wire/errors.js';
import { encodeOpMsg, parseOpMsg } from '../../src/wire/opmsg.js';

const TAG = 'app_id';
const SLUG = 'task_manager';

// ---------------------------------------------------------------------------------------------------------
// Raw BSON builders: documents are concatenations of elements, so duplicate keys can be built, and the
// expected result of an edit is the same construction with the edit applied to the inputs.

type Entry = readonly [string, unknown];

/** One element, as bson encodes `{[name]: value}`. */
function elem(name: string, value: unknown): Buffer {
  const doc = Buffer.from(serialize(new Map([[name, value]])));
  return doc.subarray(4, doc.length - 1);
}

/** One element from raw parts. */
function rawElem(type: number, name: string | Buffer, value: Uint8Array): Buffer {
  const key = typeof name === 'string' ? Buffer.from(name, 'utf8') : name;
  return Buffer.concat([Buffer.from([type]), key, Buffer.from([0]), Buffer.from(value)]);
}

function docOf(elements: readonly Buffer[]): Buffer {
  const size = 4 + elements.reduce((n, e) => n + e.length, 0) + 1;
  const head = Buffer.alloc(4);
  head.writeInt32LE(size);
  return Buffer.concat([head, ...elements, Buffer.from([0])]);
}

const docOfEntries = (entries: readonly Entry[]): Buffer => docOf(entries.map(([k, v]) => elem(k, v)));
const embedded = (name: string, doc: Buffer): Buffer => rawElem(BsonType.DOCUMENT, name, doc);
const arrayOf = (name: string, docs: readonly Buffer[]): Buffer =>
  rawElem(BsonType.ARRAY, name, docOf(docs.map((d, i) => embedded(String(i), d))));

const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
};

const strValue = (s: string): Buffer => Buffer.concat([int32(Buffer.byteLength(s) + 1), Buffer.from(s), Buffer.from([0])]);

const decode = (buf: Buffer): Document => deserialize(buf, { promoteValues: false, bsonRegExp: true });

function caught(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  throw new Error('expected an error, nothing was thrown');
}

function expectInvalidBson(fn: () => unknown): void {
  const err = caught(fn);
  if (!(err instanceof WireError)) throw new Error(`expected WireError, got ${String(err)}`);
  expect({ code: err.code, codeName: err.codeName, disposition: err.disposition }).toEqual({
    code: 22,
    codeName: 'InvalidBSON',
    disposition: 'reply',
  });
}

/** Runs `fn`: it may return, or throw a WireError InvalidBSON; anything else fails. */
function returnsOrInvalidBson<T>(fn: () => T): T | undefined {
  try {
    return fn();
  } catch (err) {
    if (!(err instanceof WireError) || err.code !== 22) {
      throw new Error(`expected InvalidBSON, got ${(err as Error).name}: ${(err as Error).message}`);
    }
    return undefined;
  }
}

function conflictOf(fn: () => unknown): FieldConflictError {
  const err = caught(fn);
  if (!(err instanceof FieldConflictError)) throw new Error(`expected FieldConflictError, got ${String(err)}`);
  return err;
}

// ---------------------------------------------------------------------------------------------------------
// Arbitraries: documents of every BSON type a modern encoder writes, nested.

const key = fc
  .oneof(
    fc.string({ maxLength: 6 }),
    fc.string({ unit: 'grapheme', maxLength: 3 }),
    fc.constantFrom('_id', 'a', '0', '1', 'app', 'app_i', 'app_id_', 'App_id', '$set', 'a.b', 'ns', 'cursor'),
  )
  .filter((k) => !k.includes('\0') && k !== TAG && k !== '__proto__');

const tagValue = fc.oneof(fc.constant(SLUG), fc.string({ maxLength: 12 }), fc.string({ unit: 'grapheme', maxLength: 4 }));

const leaf: fc.Arbitrary<unknown> = fc.oneof(
  fc.string({ maxLength: 10 }),
  fc.string({ unit: 'grapheme', maxLength: 4 }),
  fc.double().map((d) => new Double(d)),
  fc.integer().map((n) => new Int32(n)),
  fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }).map((n) => Long.fromBigInt(n)),
  fc.bigInt({ min: -(10n ** 30n), max: 10n ** 30n }).map((n) => Decimal128.fromString(`${n}E-3`)),
  fc.tuple(fc.uint8Array({ maxLength: 12 }), fc.constantFrom(0, 1, 5, 0x80)).map(([b, t]) => new Binary(b, t)),
  fc.uint8Array({ minLength: 12, maxLength: 12 }).map((b) => new ObjectId(b)),
  fc.integer({ min: -8.64e15, max: 8.64e15 }).map((ms) => new Date(ms)),
  fc
    .tuple(fc.string({ maxLength: 6 }).filter((s) => !s.includes('\0')), fc.subarray(['i', 'm', 's', 'u', 'x']))
    .map(([p, o]) => new BSONRegExp(p, o.join(''))),
  fc.constant(null),
  fc.boolean(),
  fc.tuple(fc.nat(), fc.nat()).map(([t, i]) => new Timestamp({ t, i })),
  fc.constant(new MinKey()),
  fc.constant(new MaxKey()),
  fc.string({ maxLength: 8 }).map((s) => new Code(s)),
  fc.string({ maxLength: 5 }).map((s) => new BSONSymbol(s)),
);

const { value: bsonValue } = fc.letrec<{ value: unknown; doc: Map<string, unknown>; arr: unknown[] }>((tie) => ({
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, leaf, tie('doc'), tie('arr')),
  doc: fc.uniqueArray(fc.tuple(key, tie('value')), { selector: (e) => e[0], maxLength: 4 }).map((es) => new Map(es)),
  arr: fc.array(tie('value'), { maxLength: 4 }),
}));

/** Top-level entries with unique keys, none of them the tag. */
const entries = fc.uniqueArray(fc.tuple(key, bsonValue), { selector: (e) => e[0], maxLength: 8 }) as fc.Arbitrary<Entry[]>;

/** Where to put extra occurrences of the tag among `n` entries: sorted positions 0..n, possibly repeated. */
const positions = (min: number, max: number): fc.Arbitrary<number[]> =>
  fc.array(fc.nat(100), { minLength: min, maxLength: max }).map((ps) => ps.sort((a, b) => a - b));

/** Entries with the tag inserted at `positions` (scaled to the length): duplicates when several. */
function withTags(es: readonly Entry[], at: readonly number[], value: unknown): Entry[] {
  const out: Entry[] = [];
  const scaled = at.map((p) => Math.round((p / 100) * es.length));
  for (let i = 0; i <= es.length; i++) {
    for (const s of scaled) if (s === i) out.push([TAG, value]);
    if (i < es.length) out.push(es[i]!);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------
// Every BSON type, for conflicts and malformed inputs.

const everyType: { type: number; what: string; element: (name: string) => Buffer }[] = [
  { type: BsonType.DOUBLE, what: 'a double', element: (n) => elem(n, new Double(1.5)) },
  { type: BsonType.STRING, what: 'a string "other"', element: (n) => elem(n, 'other') },
  { type: BsonType.DOCUMENT, what: 'an embedded document', element: (n) => elem(n, { $eq: SLUG }) },
  { type: BsonType.ARRAY, what: 'an array', element: (n) => elem(n, [SLUG]) },
  { type: BsonType.BINARY, what: 'binary data', element: (n) => elem(n, new Binary(Buffer.from(SLUG), 0)) },
  { type: BsonType.UNDEFINED, what: 'undefined', element: (n) => rawElem(BsonType.UNDEFINED, n, Buffer.alloc(0)) },
  { type: BsonType.OBJECT_ID, what: 'an ObjectId', element: (n) => elem(n, new ObjectId('0123456789abcdef01234567')) },
  { type: BsonType.BOOLEAN, what: 'a boolean', element: (n) => elem(n, true) },
  { type: BsonType.DATE, what: 'a date', element: (n) => elem(n, new Date(0)) },
  { type: BsonType.NULL, what: 'null', element: (n) => elem(n, null) },
  { type: BsonType.REGEX, what: 'a regular expression', element: (n) => elem(n, new BSONRegExp(SLUG, 'i')) },
  {
    type: BsonType.DB_POINTER,
    what: 'a DBPointer',
    element: (n) => rawElem(BsonType.DB_POINTER, n, Buffer.concat([strValue('db.c'), Buffer.from('0123456789ab')])),
  },
  { type: BsonType.CODE, what: 'JavaScript code', element: (n) => elem(n, new Code(JSON.stringify(SLUG))) },
  { type: BsonType.SYMBOL, what: 'a symbol', element: (n) => elem(n, new BSONSymbol(SLUG)) },
  { type: BsonType.CODE_W_SCOPE, what: 'JavaScript code with scope', element: (n) => elem(n, new Code('x', { x: SLUG })) },
  { type: BsonType.INT32, what: 'an int32', element: (n) => elem(n, new Int32(7)) },
  { type: BsonType.TIMESTAMP, what: 'a timestamp', element: (n) => elem(n, new Timestamp({ t: 1, i: 2 })) },
  { type: BsonType.INT64, what: 'an int64', element: (n) => elem(n, Long.fromNumber(7)) },
  { type: BsonType.DECIMAL128, what: 'a decimal128', element: (n) => elem(n, Decimal128.fromString('7')) },
  { type: BsonType.MIN_KEY, what: 'MinKey', element: (n) => elem(n, new MinKey()) },
  { type: BsonType.MAX_KEY, what: 'MaxKey', element: (n) => elem(n, new MaxKey()) },
];

/** Documents whose structure is broken in every way the walker detects. */
const malformed: [string, Buffer][] = [
  ['string length past the end', docOf([rawElem(BsonType.STRING, 'a', Buffer.from([1, 0]))])],
  ['negative string length', docOf([rawElem(BsonType.STRING, TAG, Buffer.concat([int32(-10), Buffer.from('xyz\0')]))])],
  ['zero string length', docOf([rawElem(BsonType.STRING, TAG, Buffer.concat([int32(0), Buffer.from('xyz\0')]))])],
  ['huge string length', docOf([rawElem(BsonType.STRING, TAG, Buffer.concat([int32(0x7fffffff), Buffer.from('xyz\0')]))])],
  ['string without its NUL', docOf([rawElem(BsonType.STRING, TAG, Buffer.concat([int32(3), Buffer.from('xyz')]))])],
  ['embedded document too small', docOf([rawElem(BsonType.DOCUMENT, 'a', Buffer.concat([int32(3), Buffer.alloc(4)]))])],
  ['embedded document too large', docOf([rawElem(BsonType.DOCUMENT, 'a', Buffer.concat([int32(500), Buffer.alloc(4)]))])],
  ['binary past the end', docOf([rawElem(BsonType.BINARY, 'a', Buffer.concat([int32(30), Buffer.alloc(6)]))])],
  ['int32 cut short', docOf([rawElem(BsonType.INT32, 'a', Buffer.alloc(2))])],
  ['regex unterminated', docOf([rawElem(BsonType.REGEX, 'a', Buffer.from('abc'))])],
  ['unknown type', docOf([rawElem(0x42, 'a', Buffer.alloc(4))])],
  ['type 0 inside the document', docOf([rawElem(0x00, TAG, Buffer.alloc(4))])],
  ['element name unterminated', Buffer.from([8, 0, 0, 0, 0x0a, 0x61, 0x62, 0])],
  ['document size too small', Buffer.from([4, 0, 0, 0, 0])],
  ['document size larger than the buffer', Buffer.from([50, 0, 0, 0, 0x0a, 0x61, 0, 0])],
  ['document size smaller than the buffer (trailing bytes)', Buffer.concat([docOfEntries([['a', 1]]), Buffer.from([0])])],
  ['negative document size', Buffer.from([0xff, 0xff, 0xff, 0xff, 0])],
  ['document without its final NUL', Buffer.from([6, 0, 0, 0, 0x7f, 1])],
  ['fewer than 5 bytes', Buffer.from([5, 0, 0])],
  ['empty buffer', Buffer.alloc(0)],
  ['a malformed element after the tag', docOf([elem(TAG, SLUG), rawElem(BsonType.INT32, 'a', Buffer.alloc(2))])],
];

/** Random byte mutations of `base` (overwrites, an int32 write, a cut, an optional size fix-up). */
const mutation = (base: Buffer) =>
  fc
    .tuple(
      fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
      fc.option(fc.tuple(fc.nat(base.length - 4), fc.integer({ min: -2_147_483_648, max: 2_147_483_647 }))),
      fc.option(fc.nat(base.length)),
      fc.boolean(),
    )
    .map(([bytes, int, cut, keepSize]) => {
      let buf = Buffer.from(base);
      for (const [at, v] of bytes) buf[at] = v;
      if (int) buf.writeInt32LE(int[1], int[0]);
      if (cut !== null) buf = buf.subarray(0, cut);
      if (keepSize && buf.length >= 4) buf.writeInt32LE(buf.length, 0);
      return buf;
    });

// ---------------------------------------------------------------------------------------------------------

describe('stampField', () => {
  it('appends the field last when absent, byte-equal to serializing the document with it (property)', () => {
    fc.assert(
      fc.property(entries, tagValue, (es, value) => {
        const doc = docOfEntries(es);
        expect(doc.equals(Buffer.from(serialize(new Map(es))))).toBe(true);
        const stamped = stampField(doc, TAG, value);
        expect(stamped).not.toBe(doc);
        expect(stamped.equals(Buffer.from(serialize(new Map([...es, [TAG, value]]))))).toBe(true);
        // deserialize → modify → compare: the same document plus the field, nothing else changed.
        expect(decode(stamped)).toEqual({ ...decode(doc), [TAG]: value });
        expect(doc.equals(docOfEntries(es))).toBe(true); // the input is not modified
      }),
      { numRuns: 400 },
    );
  });

  it('returns the document itself when every occurrence is the stamped string (property, duplicate keys)', () => {
    fc.assert(
      fc.property(entries, positions(1, 3), tagValue, (es, at, value) => {
        const doc = docOfEntries(withTags(es, at, value));
        const copy = Buffer.from(doc);
        expect(stampField(doc, TAG, value)).toBe(doc);
        expect(doc.equals(copy)).toBe(true);
      }),
      { numRuns: 300 },
    );
  });

  it('throws FieldConflictError when any occurrence differs (property, duplicate keys)', () => {
    fc.assert(
      fc.property(entries, positions(0, 2), fc.nat(2), fc.constantFrom(...everyType), (es, at, badAt, bad) => {
        // Good occurrences at `at`, one conflicting element of any type at a position among them.
        const withGood = withTags(es, at, SLUG);
        const insertAt = Math.min(badAt, withGood.length);
        const elements = withGood.map(([k, v]) => elem(k, v));
        elements.splice(insertAt, 0, bad.element(TAG));
        const doc = docOf(elements);
        const err = conflictOf(() => stampField(doc, TAG, SLUG));
        expect(err.field).toBe(TAG);
        expect(err.found).toBe(bad.what);
        expect(err.occurrences).toBe(at.length + 1);
        expect(err.index).toBeUndefined();
        expect(err.code).toBe(2);
        expect(err.codeName).toBe('BadValue');
        expect(err).toBeInstanceOf(WireError);
      }),
      { numRuns: 300 },
    );
  });

  it.each(everyType)('describes a conflicting $what', ({ what, element }) => {
    const doc = docOf([elem('_id', 1), element(TAG), elem('secret', 'do not echo')]);
    const err = conflictOf(() => stampField(doc, TAG, SLUG));
    expect(err.found).toBe(what);
    expect(err.message).toBe(`field '${TAG}' holds ${what}, which conflicts with the value the proxy stamps`);
    expect(err.message).not.toContain('do not echo');
  });

  it('compares string values byte for byte', () => {
    const conflicts: [string, string][] = [
      ['task_manager2', 'a string "task_manager2"'],
      ['task_manage', 'a string "task_manage"'],
      ['Task_manager', 'a string "Task_manager"'],
      ['', 'a string ""'],
      ['task_manager\0', 'a string "task_manager\\u0000"'],
      ['task_m\u00e4nager', 'a string "task_m\u00e4nager"'],
    ];
    for (const [stored, found] of conflicts) {
      expect(conflictOf(() => stampField(docOfEntries([[TAG, stored]]), TAG, SLUG)).found).toBe(found);
    }
    // The stamped value itself may be empty, or hold a NUL or any Unicode.
    for (const v of ['', 'a\0b', 'ключ', '\u{1f600}']) {
      const doc = docOfEntries([[TAG, v]]);
      expect(stampField(doc, TAG, v)).toBe(doc);
      expect(conflictOf(() => stampField(doc, TAG, v + 'x')).found).toBe(`a string ${JSON.stringify(v)}`);
    }
    // A string that is not valid UTF-8 never equals the stamped value.
    const raw = docOf([rawElem(BsonType.STRING, TAG, Buffer.from([2, 0, 0, 0, 0xff, 0]))]);
    expect(conflictOf(() => stampField(raw, TAG, '\ufffd')).found).toBe('a string "\ufffd"');
  });

  it('quotes at most 40 characters of a long conflicting string', () => {
    const long = 'x'.repeat(10_000);
    const err = conflictOf(() => stampField(docOfEntries([[TAG, long]]), TAG, SLUG));
    expect(err.found).toBe(`a string "${'x'.repeat(40)}"...`);
    expect(err.message.length).toBeLessThan(200);
    const emoji = '\u{1f600}'.repeat(100);
    expect(conflictOf(() => stampField(docOfEntries([[TAG, emoji]]), TAG, SLUG)).found).toBe(`a string "${'\u{1f600}'.repeat(40)}"...`);
  });

  it('says when the field appears several times', () => {
    const doc = docOf([elem(TAG, SLUG), elem(TAG, 'other')]);
    const err = conflictOf(() => stampField(doc, TAG, SLUG));
    expect(err.occurrences).toBe(2);
    expect(err.message).toBe(
      `field '${TAG}' holds a string "other" (the field appears 2 times), which conflicts with the value the proxy stamps`,
    );
    // The first conflicting occurrence is described, whatever comes after.
    expect(conflictOf(() => stampField(docOf([elem(TAG, new Int32(1)), elem(TAG, 'x')]), TAG, SLUG)).found).toBe('an int32');
  });

  it('matches names exactly, at the top level only', () => {
    const es: Entry[] = [
      ['App_id', 'x'],
      ['app_id ', 'x'],
      ['app_i', 'x'],
      ['app_idx', 1],
      ['nested', new Map([[TAG, 'other']])],
      ['list', [new Map([[TAG, 'other']])]],
      ['a.app_id', 'other'],
    ];
    const stamped = stampField(docOfEntries(es), TAG, SLUG);
    expect(stamped.equals(docOfEntries([...es, [TAG, SLUG]]))).toBe(true);
    // A name that is not valid UTF-8 is compared as bytes too.
    const raw = docOf([rawElem(BsonType.INT32, Buffer.from([0xff]), int32(1))]);
    const rawStamped = docOf([rawElem(BsonType.INT32, Buffer.from([0xff]), int32(1)), elem('\ufffd', 'v')]);
    expect(stampField(raw, '\ufffd', 'v').equals(rawStamped)).toBe(true);
  });

  it('stamps the empty document, and any field name', () => {
    expect(stampField(docOf([]), TAG, SLUG).equals(docOfEntries([[TAG, SLUG]]))).toBe(true);
    for (const name of ['', 'ключ', 'a.b', '$x', '0']) {
      expect(stampField(docOfEntries([['a', 1]]), name, 'v').equals(docOf([elem('a', 1), elem(name, 'v')]))).toBe(true);
    }
    expect(() => stampField(docOf([]), 'a\0b', 'v')).toThrow(TypeError);
  });

  it('accepts a document that is a view into a larger buffer', () => {
    const doc = docOfEntries([['_id', 1]]);
    const big = Buffer.concat([Buffer.from('junk'), doc, Buffer.from('more')]);
    const view = big.subarray(4, 4 + doc.length);
    expect(stampField(view, TAG, SLUG).equals(docOfEntries([['_id', 1], [TAG, SLUG]]))).toBe(true);
  });

  it.each(malformed)('throws InvalidBSON for %s', (_name, buf) => {
    expectInvalidBson(() => stampField(buf, TAG, SLUG));
  });

  it('throws only InvalidBSON or FieldConflictError for mutated documents (property)', () => {
    const base = docOf([elem('_id', new ObjectId()), elem(TAG, SLUG), ...everyType.map((t) => t.element(`f${t.type}`))]);
    fc.assert(
      fc.property(mutation(base), (buf) => {
        try {
          const out = stampField(buf, TAG, SLUG);
          expect(checkDocumentBounds(out, 0, out.length, 'out')).toBe(out.length);
        } catch (err) {
          if (!(err instanceof WireError) || (err.code !== 22 && !(err instanceof FieldConflictError))) throw err;
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('stripField', () => {
  it('removes every occurrence, byte-equal to the document built without them (property)', () => {
    fc.assert(
      fc.property(entries, positions(0, 3), fc.oneof(tagValue, bsonValue), (es, at, value) => {
        const doc = docOfEntries(withTags(es, at, value));
        const stripped = stripField(doc, TAG);
        if (at.length === 0) {
          expect(stripped).toBe(doc);
        } else {
          expect(stripped).not.toBe(doc);
          expect(stripped.equals(Buffer.from(serialize(new Map(es))))).toBe(true);
          const expected = decode(doc);
          delete expected[TAG];
          expect(decode(stripped)).toEqual(expected);
        }
      }),
      { numRuns: 400 },
    );
  });

  it('keeps nested occurrences and similar names', () => {
    const es: Entry[] = [
      ['App_id', 'x'],
      ['app_i', 'x'],
      ['nested', new Map([[TAG, 'other']])],
      ['list', [new Map([[TAG, 'other']])]],
    ];
    const doc = docOfEntries(es);
    expect(stripField(doc, TAG)).toBe(doc);
    expect(stripField(docOfEntries([[TAG, 1], ...es, [TAG, 2]]), TAG).equals(doc)).toBe(true);
    expect(stripField(docOfEntries([[TAG, 1]]), TAG).equals(docOf([]))).toBe(true);
    expect(stripField(docOf([]), TAG).equals(docOf([]))).toBe(true);
  });

  it.each(malformed)('throws InvalidBSON for %s', (_name, buf) => {
    expectInvalidBson(() => stripField(buf, TAG));
  });

  it('throws only InvalidBSON for mutated documents, and always returns a well-sized document (property)', () => {
    const base = docOf([elem(TAG, SLUG), elem('_id', 1), ...everyType.map((t) => t.element(TAG)), elem('z', 'last')]);
    fc.assert(
      fc.property(mutation(base), (buf) => {
        const out = returnsOrInvalidBson(() => stripField(buf, TAG));
        if (out) expect(checkDocumentBounds(out, 0, out.length, 'out')).toBe(out.length);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('stampAll', () => {
  it('returns the same array when every document already carries the value', () => {
    const docs = [docOfEntries([[TAG, SLUG]]), docOfEntries([['_id', 1], [TAG, SLUG], [TAG, SLUG]])];
    expect(stampAll(docs, TAG, SLUG)).toBe(docs);
    expect(stampAll([], TAG, SLUG)).toEqual([]);
  });

  it('stamps the documents that need it into one allocation and keeps the others (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(entries, fc.boolean()), { maxLength: 12 }), tagValue, (specs, value) => {
        const docs = specs.map(([es, has]) => docOfEntries(has ? [...es, [TAG, value]] : es));
        const result = stampAll(docs, TAG, value);
        if (specs.every(([, has]) => has)) {
          expect(result).toBe(docs);
          return;
        }
        expect(result).not.toBe(docs);
        expect(result).toHaveLength(docs.length);
        const arrays = new Set<ArrayBufferLike>();
        specs.forEach(([es, has], i) => {
          if (has) expect(result[i]).toBe(docs[i]);
          else {
            expect(result[i]!.equals(docOfEntries([...es, [TAG, value]]))).toBe(true);
            arrays.add(result[i]!.buffer);
          }
        });
        expect(arrays.size).toBe(1);
      }),
      { numRuns: 300 },
    );
  });

  it('names the document that conflicts or is malformed', () => {
    const good = docOfEntries([['_id', 1]]);
    const err = conflictOf(() => stampAll([good, good, docOfEntries([[TAG, 'other']])], TAG, SLUG));
    expect(err.index).toBe(2);
    expect(err.message).toBe(`document 2: field '${TAG}' holds a string "other", which conflicts with the value the proxy stamps`);
    const bad = caught(() => stampAll([good, malformed[0]![1]], TAG, SLUG)) as WireError;
    expect(bad.code).toBe(22);
    expect(bad.message).toMatch(/^document 1: /);
  });

  it('feeds encodeOpMsg: the stamped kind-1 sequence parses back with every document tagged', () => {
    const docs = Array.from({ length: 50 }, (_, i) => docOfEntries(i % 3 === 0 ? [['_id', i], [TAG, SLUG]] : [['_id', i]]));
    const stamped = stampAll(docs, TAG, SLUG);
    const body = Buffer.from(serialize({ insert: 'tasks', $db: 'db' }));
    const msg = encodeOpMsg(9, 0, 0, body, [{ identifier: 'documents', documents: stamped }]);
    const parsed = parseOpMsg(msg);
    expect(parsed.sequences[0]!.documents.map((d) => deserialize(d))).toEqual(docs.map((_, i) => ({ _id: i, [TAG]: SLUG })));
    expect(deserialize(parsed.body)).toEqual({ insert: 'tasks', $db: 'db' });
  });

  it('stamps 100,000 small documents without quadratic cost', () => {
    const docs = Array.from({ length: 100_000 }, (_, i) => docOfEntries([['_id', i], ['title', 'task']]));
    const t0 = performance.now();
    const stamped = stampAll(docs, TAG, SLUG);
    const ms = performance.now() - t0;
    expect(stamped).toHaveLength(docs.length);
    expect(stamped[99_999]!.equals(docOfEntries([['_id', 99_999], ['title', 'task'], [TAG, SLUG]]))).toBe(true);
    const t1 = performance.now();
    expect(stampAll(stamped, TAG, SLUG)).toBe(stamped);
    console.info(`stampAll: 100k docs stamped in ${ms.toFixed(1)} ms, checked in ${(performance.now() - t1).toFixed(1)} ms`);
  });
});

/** A cursor reply built from parts, so the expected result is the same construction with edited parts. */
interface ReplySpec {
  batchName: 'firstBatch' | 'nextBatch';
  batch: Buffer[];
  ns: string | undefined;
  /** Extra elements of the cursor document, before and after the batch. */
  cursorBefore: Buffer[];
  cursorAfter: Buffer[];
  /** Extra elements of the body, after `cursor`. */
  bodyAfter: Buffer[];
}

function buildReply(spec: ReplySpec): Buffer {
  const cursor = docOf([
    elem('id', Long.fromNumber(12345)),
    ...(spec.ns === undefined ? [] : [elem('ns', spec.ns)]),
    ...spec.cursorBefore,
    arrayOf(spec.batchName, spec.batch),
    ...spec.cursorAfter,
  ]);
  return docOf([embedded('cursor', cursor), ...spec.bodyAfter, elem('ok', new Double(1))]);
}

const replyExtras = fc.uniqueArray(fc.tuple(key, bsonValue), { selector: (e) => e[0], maxLength: 3 }).map((es) =>
  es.filter(([k]) => !['ns', 'firstBatch', 'nextBatch', 'id', 'cursor', 'ok'].includes(k)).map(([k, v]) => elem(k, v)),
);

describe('rewriteCursorReply', () => {
  it('rewrites ns and strips the field from every batch document, everything else byte-identical (property)', () => {
    const batchDoc = fc.tuple(entries, positions(0, 2), fc.oneof(fc.constant<unknown>(SLUG), bsonValue));
    fc.assert(
      fc.property(
        fc.array(batchDoc, { maxLength: 8 }),
        fc.constantFrom<'firstBatch' | 'nextBatch'>('firstBatch', 'nextBatch'),
        fc.option(fc.string({ maxLength: 20 }), { nil: undefined }),
        fc.option(fc.constantFrom('db.tasks', 'db.task_manager.tasks', ''), { nil: undefined }),
        fc.boolean(),
        replyExtras,
        replyExtras,
        replyExtras,
        (docs, batchName, oldNs, newNs, strip, cursorBefore, cursorAfter, bodyAfter) => {
          const input: ReplySpec = {
            batchName,
            batch: docs.map(([es, at, v]) => docOfEntries(withTags(es, at, v))),
            ns: oldNs,
            cursorBefore,
            cursorAfter,
            bodyAfter,
          };
          const body = buildReply(input);
          const out = rewriteCursorReply(body, { ns: newNs, stripField: strip ? TAG : undefined });
          const expected = buildReply({
            ...input,
            ns: oldNs !== undefined && newNs !== undefined ? newNs : oldNs,
            batch: strip ? docs.map(([es]) => docOfEntries(es)) : input.batch,
          });
          expect(out.equals(expected)).toBe(true);
          const nsSame = oldNs === undefined || newNs === undefined || oldNs === newNs;
          const unchanged = nsSame && (!strip || docs.every(([, at]) => at.length === 0));
          if (unchanged) expect(out).toBe(body);
          else expect(out).not.toBe(body);
          // deserialize → modify → compare (decoded duplicates collapse, so compare after the strip only).
          if (strip) {
            const want = decode(body);
            if (oldNs !== undefined && newNs !== undefined) want.cursor.ns = newNs;
            for (const d of want.cursor[batchName] as Document[]) delete d[TAG];
            expect(decode(out)).toEqual(want);
          }
        },
      ),
      { numRuns: 400 },
    );
  });

  it('matches what deserialize → modify → serialize gives for a driver-shaped reply', () => {
    const reply = {
      cursor: {
        firstBatch: [
          { _id: new ObjectId('0123456789abcdef01234567'), title: 'a', [TAG]: SLUG, n: Long.fromNumber(5) },
          { _id: 2, [TAG]: SLUG, sub: { [TAG]: 'kept' }, tags: [{ [TAG]: 'kept' }] },
          { _id: 3 },
        ],
        id: Long.ZERO,
        ns: 'mdb_runtime.task_manager__tasks',
      },
      ok: 1,
      $clusterTime: { clusterTime: new Timestamp({ t: 1, i: 1 }), signature: { hash: new Binary(Buffer.alloc(20)), keyId: Long.ZERO } },
      operationTime: new Timestamp({ t: 1, i: 1 }),
    };
    const body = Buffer.from(serialize(reply));
    const out = rewriteCursorReply(body, { ns: 'db.tasks', stripField: TAG });
    const want = decode(body);
    want.cursor.ns = 'db.tasks';
    for (const d of want.cursor.firstBatch as Document[]) delete d[TAG];
    expect(out.equals(Buffer.from(serialize(want)))).toBe(true);
  });

  it('returns the body itself when there is nothing to do', () => {
    const plain = { cursorBefore: [], cursorAfter: [], bodyAfter: [] };
    const body = buildReply({ batchName: 'firstBatch', batch: [docOfEntries([['_id', 1]])], ns: 'db.c', ...plain });
    expect(rewriteCursorReply(body, {})).toBe(body);
    expect(rewriteCursorReply(body, { ns: 'db.c', stripField: TAG })).toBe(body);
    const error = docOfEntries([['ok', 0], ['errmsg', 'boom'], ['code', 2]]);
    expect(rewriteCursorReply(error, { ns: 'x', stripField: TAG })).toBe(error);
    // `cursor` that is not a document is not a cursor reply.
    const odd = docOfEntries([['cursor', 5], [TAG, SLUG], ['ok', 1]]);
    expect(rewriteCursorReply(odd, { ns: 'x', stripField: TAG })).toBe(odd);
    // A cursor without ns gets none.
    const noNs = buildReply({ batchName: 'nextBatch', batch: [], ns: undefined, ...plain });
    expect(rewriteCursorReply(noNs, { ns: 'db.c' })).toBe(noNs);
  });

  it('strips only the top level of batch documents, never the cursor or the body', () => {
    const batch = [docOfEntries([['_id', 1], ['sub', new Map([[TAG, 'x']])]])];
    const body = buildReply({
      batchName: 'firstBatch',
      batch,
      ns: 'db.c',
      cursorBefore: [elem(TAG, 'c')],
      cursorAfter: [],
      bodyAfter: [elem(TAG, 'b')],
    });
    expect(rewriteCursorReply(body, { stripField: TAG })).toBe(body);
  });

  it('leaves batch elements that are not documents alone', () => {
    const cursor = docOf([
      elem('id', Long.ZERO),
      rawElem(BsonType.ARRAY, 'firstBatch', docOf([elem('0', 1), embedded('1', docOfEntries([[TAG, 'x'], ['a', 1]])), elem('2', null)])),
    ]);
    const body = docOf([embedded('cursor', cursor)]);
    const wantBatch = docOf([elem('0', 1), embedded('1', docOfEntries([['a', 1]])), elem('2', null)]);
    const want = docOf([embedded('cursor', docOf([elem('id', Long.ZERO), rawElem(BsonType.ARRAY, 'firstBatch', wantBatch)]))]);
    expect(rewriteCursorReply(body, { stripField: TAG }).equals(want)).toBe(true);
  });

  it('handles both batches and duplicate ns / batch elements (fail closed)', () => {
    const d = docOfEntries([[TAG, 'x'], ['a', 1]]);
    const cursor = (ns: string, docs: Buffer) =>
      docOf([elem('ns', ns), arrayOf('firstBatch', [docs]), elem('ns', ns), arrayOf('nextBatch', [docs, docs])]);
    const body = docOf([embedded('cursor', cursor('db.phys', d)), embedded('cursor', cursor('db.phys', d))]);
    const kept = docOfEntries([['a', 1]]);
    const want = docOf([embedded('cursor', cursor('db.c', kept)), embedded('cursor', cursor('db.c', kept))]);
    expect(rewriteCursorReply(body, { ns: 'db.c', stripField: TAG }).equals(want)).toBe(true);
  });

  it('refuses a cursor.ns that is not a string and a batch that is not an array', () => {
    for (const t of everyType.filter((e) => e.type !== BsonType.STRING)) {
      const body = docOf([embedded('cursor', docOf([t.element('ns'), arrayOf('firstBatch', [])]))]);
      expectInvalidBson(() => rewriteCursorReply(body, { ns: 'db.c' }));
      expect(rewriteCursorReply(body, { stripField: TAG })).toBe(body);
    }
    for (const t of everyType.filter((e) => e.type !== BsonType.ARRAY)) {
      const body = docOf([embedded('cursor', docOf([elem('ns', 'db.c'), t.element('nextBatch')]))]);
      expectInvalidBson(() => rewriteCursorReply(body, { stripField: TAG }));
      expect(rewriteCursorReply(body, { ns: 'db.c' })).toBe(body);
    }
  });

  it.each(malformed)('throws InvalidBSON for %s', (_name, buf) => {
    expectInvalidBson(() => rewriteCursorReply(buf, { ns: 'db.c', stripField: TAG }));
  });

  it('throws only InvalidBSON for mutated replies, and returns a well-sized document otherwise (property)', () => {
    const base = buildReply({
      batchName: 'firstBatch',
      batch: [docOfEntries([['_id', 1], [TAG, SLUG]]), docOf(everyType.map((t) => t.element(TAG))), docOfEntries([['_id', 3]])],
      ns: 'db.phys',
      cursorBefore: [],
      cursorAfter: [elem('postBatchResumeToken', { _data: 'x' })],
      bodyAfter: [],
    });
    fc.assert(
      fc.property(mutation(base), fc.boolean(), (buf, ns) => {
        const out = returnsOrInvalidBson(() => rewriteCursorReply(buf, { ns: ns ? 'db.logical' : undefined, stripField: TAG }));
        if (out) {
          expect(checkDocumentBounds(out, 0, out.length, 'out')).toBe(out.length);
          forEachElement(out, 0, () => {});
        }
      }),
      { numRuns: 3000 },
    );
  });

  describe('large batches', () => {
    afterEach(() => vi.restoreAllMocks());

    /** A 16 MB reply of `n` documents, every other one tagged, built by patching one template. */
    function bigReply(n: number): { body: Buffer; tagged: Buffer; plain: Buffer } {
      const tagged = docOfEntries([['_id', new Int32(0)], ['title', 'some task title'], [TAG, SLUG], ['done', false]]);
      const plain = docOfEntries([['_id', new Int32(0)], ['title', 'some task title'], ['done', false]]);
      const elements: Buffer[] = [];
      for (let i = 0; i < n; i++) {
        const d = Buffer.from(i % 2 === 0 ? tagged : plain);
        d.writeInt32LE(i, 4 + 1 + 4); // the _id value
        elements.push(embedded(String(i), d));
      }
      const batch = rawElem(BsonType.ARRAY, 'firstBatch', docOf(elements));
      const body = docOf([embedded('cursor', docOf([elem('id', Long.fromNumber(7)), elem('ns', 'db.phys'), batch])), elem('ok', 1)]);
      return { body, tagged, plain };
    }

    it('rewrites a 16 MB batch of 250k documents with one large allocation', () => {
      const n = 250_000;
      const { body } = bigReply(n);
      expect(body.length).toBeGreaterThan(16_000_000);
      const spy = vi.spyOn(Buffer, 'allocUnsafe');
      const t0 = performance.now();
      const out = rewriteCursorReply(body, { ns: 'db.tasks', stripField: TAG });
      const ms = performance.now() - t0;
      const large = spy.mock.calls.filter(([size]) => size > 1024);
      expect(large).toEqual([[out.length]]);
      spy.mockRestore();
      const t1 = performance.now();
      expect(rewriteCursorReply(out, { ns: 'db.tasks', stripField: TAG })).toBe(out);
      const identityMs = performance.now() - t1;
      const decoded = deserialize(out);
      expect(decoded.cursor.ns).toBe('db.tasks');
      expect(decoded.cursor.firstBatch).toHaveLength(n);
      expect(decoded.cursor.firstBatch[n - 2]).toEqual({ _id: n - 2, title: 'some task title', done: false });
      expect(decoded.cursor.firstBatch.some((d: Document) => TAG in d)).toBe(false);
      const nsShrink = Buffer.byteLength('db.phys') - Buffer.byteLength('db.tasks');
      expect(out.length).toBe(body.length - (n / 2) * elem(TAG, SLUG).length - nsShrink);
      console.info(
        `rewriteCursorReply: ${(body.length / 1e6).toFixed(1)} MB, ${n} docs: ` +
          `rewritten in ${ms.toFixed(1)} ms, unchanged pass in ${identityMs.toFixed(1)} ms`,
      );
    });

    it('strips 100,000 small documents without quadratic cost', () => {
      const { body } = bigReply(100_000);
      const out = rewriteCursorReply(body, { stripField: TAG });
      expect(out.length).toBe(body.length - 50_000 * elem(TAG, SLUG).length);
    });
  });
});

describe('rewriteDocumentField', () => {
  const strip = (v: Buffer): Buffer => stripField(v, TAG);
  const reply = (value: Buffer, extra: Buffer[] = []): Buffer =>
    docOf([embedded('lastErrorObject', docOfEntries([['n', 1], ['updatedExisting', true]])), value, ...extra, elem('ok', new Double(1))]);

  it('strips the field from a findAndModify value, byte-equal to the re-encoded reply (property)', () => {
    fc.assert(
      fc.property(entries, positions(0, 2), (es, at) => {
        const body = reply(embedded('value', docOfEntries(withTags(es, at, SLUG))));
        const out = rewriteDocumentField(body, 'value', strip);
        expect(out.equals(reply(embedded('value', docOfEntries(es))))).toBe(true);
        if (at.length === 0) expect(out).toBe(body);
        const want = decode(body);
        delete want.value[TAG];
        expect(decode(out)).toEqual(want);
      }),
      { numRuns: 300 },
    );
  });

  it('leaves a null, missing or non-document value alone', () => {
    for (const value of [elem('value', null), elem('other', { [TAG]: 1 }), elem('value', [{ [TAG]: 1 }]), elem('value', 'x')]) {
      const body = reply(value);
      expect(rewriteDocumentField(body, 'value', strip)).toBe(body);
    }
  });

  it('follows a path of names, every duplicate occurrence, and never splits names on dots', () => {
    const inner = (t: boolean) => docOfEntries(t ? [['a', 1], [TAG, SLUG]] : [['a', 1]]);
    /** `{x: {y: inner, y: inner}, 'x.y': inner}`, each inner tagged or not. */
    const build = (xy: boolean, dotted: boolean) =>
      docOf([embedded('x', docOf([embedded('y', inner(xy)), embedded('y', inner(xy))])), embedded('x.y', inner(dotted))]);
    expect(rewriteDocumentField(build(true, true), ['x', 'y'], strip).equals(build(false, true))).toBe(true);
    expect(rewriteDocumentField(build(true, true), 'x.y', strip).equals(build(true, false))).toBe(true);
    const clean = build(false, false);
    expect(rewriteDocumentField(clean, ['x', 'y'], strip)).toBe(clean);
    expect(() => rewriteDocumentField(clean, [], strip)).toThrow(TypeError);
  });

  it('passes a view of the value and honours identity', () => {
    const body = reply(embedded('value', docOfEntries([['a', 1]])));
    let seen: Buffer | undefined;
    expect(
      rewriteDocumentField(body, 'value', (v) => {
        seen = v;
        return v;
      }),
    ).toBe(body);
    expect(seen!.buffer).toBe(body.buffer);
    expect(seen!.equals(docOfEntries([['a', 1]]))).toBe(true);
    // A replacement of another size fixes every enclosing size.
    const bigger = docOfEntries([['a', 1], ['b', 'x'.repeat(300)]]);
    expect(rewriteDocumentField(body, 'value', () => bigger).equals(reply(embedded('value', bigger)))).toBe(true);
  });

  it('refuses an edit that does not return one document', () => {
    const body = reply(embedded('value', docOfEntries([['a', 1]])));
    for (const bad of [Buffer.alloc(0), Buffer.from([5, 0, 0, 0, 1]), Buffer.from([6, 0, 0, 0, 0])]) {
      expect(() => rewriteDocumentField(body, 'value', () => bad)).toThrow(TypeError);
    }
  });

  it.each(malformed)('throws InvalidBSON for %s', (_name, buf) => {
    expectInvalidBson(() => rewriteDocumentField(buf, 'value', strip));
  });

  it('throws only InvalidBSON for mutated replies (property)', () => {
    const base = reply(embedded('value', docOf([elem('_id', 1), ...everyType.map((t) => t.element(TAG))])));
    fc.assert(
      fc.property(mutation(base), (buf) => {
        const out = returnsOrInvalidBson(() => rewriteDocumentField(buf, 'value', strip));
        if (out) expect(checkDocumentBounds(out, 0, out.length, 'out')).toBe(out.length);
      }),
      { numRuns: 2000 },
    );
  });
});
