import { describe, expect, it } from 'vitest';
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
import { BsonType, checkDocumentBounds, checkNestingDepth, findElement, firstKey, forEachElement, type BsonElement } from '../../src/wire/bson-bytes.js';
import { ReplyView, replyFailed } from '../../src/wire/reply-status.js';
import { WireError } from '../../src/wire/errors.js';

/** One element's bytes: type, NUL-terminated name, value. */
function element(type: number, name: string, value: Uint8Array): Buffer {
  return Buffer.concat([Buffer.from([type]), Buffer.from(`${name}\0`, 'utf8'), Buffer.from(value)]);
}

function documentOf(elements: Buffer[]): Buffer {
  const size = 4 + elements.reduce((n, e) => n + e.length, 0) + 1;
  const head = Buffer.alloc(4);
  head.writeInt32LE(size);
  return Buffer.concat([head, ...elements, Buffer.from([0])]);
}

const int32 = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
};

/** Every BSON type, with the value size the walker must report. */
const typed: { name: string; type: number; value: unknown; size: number }[] = [
  { name: 'double', type: BsonType.DOUBLE, value: new Double(1.5), size: 8 },
  { name: 'string', type: BsonType.STRING, value: 'héllo', size: 4 + 6 + 1 },
  { name: 'emptyString', type: BsonType.STRING, value: '', size: 5 },
  { name: 'document', type: BsonType.DOCUMENT, value: { a: 1, b: { c: 'd' } }, size: serialize({ a: 1, b: { c: 'd' } }).length },
  { name: 'array', type: BsonType.ARRAY, value: [1, 'two', [3]], size: serialize({ 0: 1, 1: 'two', 2: [3] }).length },
  { name: 'binary', type: BsonType.BINARY, value: new Binary(Buffer.from([1, 2, 3]), 0), size: 4 + 1 + 3 },
  { name: 'uuid', type: BsonType.BINARY, value: new Binary(Buffer.alloc(16, 7), 4), size: 4 + 1 + 16 },
  { name: 'objectId', type: BsonType.OBJECT_ID, value: new ObjectId('0123456789abcdef01234567'), size: 12 },
  { name: 'bool', type: BsonType.BOOLEAN, value: true, size: 1 },
  { name: 'date', type: BsonType.DATE, value: new Date(1_700_000_000_000), size: 8 },
  { name: 'null', type: BsonType.NULL, value: null, size: 0 },
  { name: 'regex', type: BsonType.REGEX, value: new BSONRegExp('^a.*b$', 'im'), size: 7 + 3 },
  { name: 'code', type: BsonType.CODE, value: new Code('function () { return 1; }'), size: 4 + 25 + 1 },
  { name: 'symbol', type: BsonType.SYMBOL, value: new BSONSymbol('sym'), size: 4 + 4 },
  {
    name: 'codeWithScope',
    type: BsonType.CODE_W_SCOPE,
    value: new Code('x + 1', { x: 41 }),
    size: 4 + (4 + 6) + serialize({ x: 41 }).length,
  },
  { name: 'int32', type: BsonType.INT32, value: new Int32(-7), size: 4 },
  { name: 'timestamp', type: BsonType.TIMESTAMP, value: new Timestamp({ t: 100, i: 3 }), size: 8 },
  { name: 'int64', type: BsonType.INT64, value: Long.fromString('9007199254740993'), size: 8 },
  { name: 'decimal', type: BsonType.DECIMAL128, value: Decimal128.fromString('1.10'), size: 16 },
  { name: 'minKey', type: BsonType.MIN_KEY, value: new MinKey(), size: 0 },
  { name: 'maxKey', type: BsonType.MAX_KEY, value: new MaxKey(), size: 0 },
];

/** The deprecated types no modern encoder writes, built by hand. */
const handMade: { name: string; type: number; bytes: Buffer }[] = [
  { name: 'undefined', type: BsonType.UNDEFINED, bytes: Buffer.alloc(0) },
  {
    name: 'dbPointer',
    type: BsonType.DB_POINTER,
    bytes: Buffer.concat([int32(5), Buffer.from('db.c\0'), Buffer.from('0123456789ab')]),
  },
];

const encoded = Buffer.from(serialize(Object.fromEntries(typed.map((t) => [t.name, t.value]))));
/** The encoder's elements plus the hand-made ones, after a prefix so offsets are not 0. */
const prefix = Buffer.from('garbage!');
const elementsOnly = encoded.subarray(4, encoded.length - 1);
const allTypes = Buffer.concat([
  prefix,
  documentOf([Buffer.from(elementsOnly), ...handMade.map((h) => element(h.type, h.name, h.bytes))]),
]);
const docAt = prefix.length;

function walk(buf: Buffer, offset: number): BsonElement[] {
  const out: BsonElement[] = [];
  forEachElement(buf, offset, (el) => void out.push(el));
  return out;
}

const nameOf = (buf: Buffer, el: BsonElement): string => buf.toString('utf8', el.nameStart, el.nameEnd);

/** Throws unless `fn` either returns or throws an InvalidBSON WireError. */
function onlyInvalidBson(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof WireError)) throw new Error(`expected WireError, got ${(err as Error).name}: ${(err as Error).message}`);
    expect(err.code).toBe(22);
    expect(err.disposition).toBe('reply');
  }
}

describe('forEachElement', () => {
  it('visits every element of every BSON type with the right type, name and value bounds', () => {
    const els = walk(allTypes, docAt);
    const expected = [...typed.map((t) => ({ name: t.name, type: t.type, size: t.size })), ...handMade.map((h) => ({ name: h.name, type: h.type, size: h.bytes.length }))];
    expect(els.map((el) => ({ name: nameOf(allTypes, el), type: el.type, size: el.valueEnd - el.valueStart }))).toEqual(expected);
    // Elements tile the document exactly: each starts where the previous value ended.
    let p = docAt + 4;
    for (const el of els) {
      expect(el.nameStart).toBe(p + 1);
      expect(el.valueStart).toBe(el.nameEnd + 1);
      p = el.valueEnd;
    }
    expect(p).toBe(docAt + allTypes.readInt32LE(docAt) - 1);
  });

  it('reports value bytes that decode to the same value as the whole document', () => {
    const whole = deserialize(allTypes.subarray(docAt), { promoteValues: false, bsonRegExp: true });
    for (const el of walk(allTypes, docAt)) {
      const alone = deserialize(documentOf([allTypes.subarray(el.nameStart - 1, el.valueEnd)]), { promoteValues: false, bsonRegExp: true });
      const name = nameOf(allTypes, el);
      expect(alone[name], name).toEqual(whole[name]);
    }
  });

  it('walks the empty document without visiting anything', () => {
    expect(walk(Buffer.from(serialize({})), 0)).toEqual([]);
  });

  it('walks nested documents and arrays when given their value offset', () => {
    const buf = Buffer.from(serialize({ cursor: { id: Long.fromNumber(42), ns: 'd.c', firstBatch: [{ a: 1 }] }, ok: 1 }));
    const cursor = findElement(buf, 0, 'cursor')!;
    expect(cursor.type).toBe(BsonType.DOCUMENT);
    expect(walk(buf, cursor.valueStart).map((el) => nameOf(buf, el))).toEqual(['id', 'ns', 'firstBatch']);
    const id = findElement(buf, cursor.valueStart, 'id')!;
    expect(buf.readBigInt64LE(id.valueStart)).toBe(42n);
    const batch = findElement(buf, cursor.valueStart, 'firstBatch')!;
    expect(batch.type).toBe(BsonType.ARRAY);
    expect(walk(buf, batch.valueStart).map((el) => nameOf(buf, el))).toEqual(['0']);
  });

  it('stops when the visitor returns true', () => {
    let seen = 0;
    forEachElement(allTypes, docAt, () => ++seen === 3);
    expect(seen).toBe(3);
  });
});

describe('findElement and firstKey', () => {
  it('finds every element by name, and nothing for a missing or prefix name', () => {
    for (const t of typed) {
      const el = findElement(allTypes, docAt, t.name);
      expect(el?.type, t.name).toBe(t.type);
    }
    for (const h of handMade) expect(findElement(allTypes, docAt, h.name)?.type).toBe(h.type);
    expect(findElement(allTypes, docAt, 'missing')).toBeUndefined();
    expect(findElement(allTypes, docAt, 'str')).toBeUndefined();
    expect(findElement(allTypes, docAt, 'stringX')).toBeUndefined();
  });

  it('compares names as UTF-8 bytes', () => {
    const buf = Buffer.from(serialize({ ключ: 1, 'a\u00e9': 2, 'ae\u0301': 3 }));
    expect(buf.readInt32LE(findElement(buf, 0, 'ключ')!.valueStart)).toBe(1);
    expect(buf.readInt32LE(findElement(buf, 0, 'a\u00e9')!.valueStart)).toBe(2);
    expect(buf.readInt32LE(findElement(buf, 0, 'ae\u0301')!.valueStart)).toBe(3);
  });

  it('matches raw names byte for byte, including names that are not valid UTF-8', () => {
    const raw = documentOf([element(BsonType.INT32, 'x', int32(1)), Buffer.concat([Buffer.from([BsonType.INT32, 0xff, 0x61, 0]), int32(2)])]);
    expect(raw.readInt32LE(findElement(raw, 0, Buffer.from([0xff, 0x61]))!.valueStart)).toBe(2);
    // A different invalid byte decodes to the same replacement character but is another name.
    expect(findElement(raw, 0, Buffer.from([0xfe, 0x61]))).toBeUndefined();
    expect(findElement(raw, 0, '\ufffda')).toBeUndefined();
    expect(raw.readInt32LE(findElement(raw, 0, Buffer.from('x'))!.valueStart)).toBe(1);
  });

  it('returns the first key (the command name) without decoding the rest', () => {
    expect(firstKey(Buffer.from(serialize({ find: 'c', filter: {} })), 0)).toBe('find');
    expect(firstKey(Buffer.from(serialize({})), 0)).toBeUndefined();
    expect(firstKey(allTypes, docAt)).toBe('double');
  });
});

describe('malformed documents throw InvalidBSON, never a RangeError', () => {
  const cases: [string, Buffer][] = [
    ['string length past the end', documentOf([element(BsonType.STRING, 'a', Buffer.from([1, 0]))])],
    ['string length prefix cut short at the final NUL', Buffer.from([10, 0, 0, 0, 0x02, 0x61, 0, 1, 0, 0])],
    ['negative string length', documentOf([element(BsonType.STRING, 'a', Buffer.concat([int32(-10), Buffer.from('xyz\0')]))])],
    ['zero string length', documentOf([element(BsonType.STRING, 'a', Buffer.concat([int32(0), Buffer.from('xyz\0')]))])],
    ['string without its NUL', documentOf([element(BsonType.STRING, 'a', Buffer.concat([int32(3), Buffer.from('xyz')]))])],
    ['embedded document too small', documentOf([element(BsonType.DOCUMENT, 'a', Buffer.concat([int32(3), Buffer.alloc(4)]))])],
    ['embedded document too large', documentOf([element(BsonType.DOCUMENT, 'a', Buffer.concat([int32(500), Buffer.alloc(4)]))])],
    ['embedded document without NUL', documentOf([element(BsonType.DOCUMENT, 'a', Buffer.from([6, 0, 0, 0, 0x0a, 1]))])],
    ['negative binary length', documentOf([element(BsonType.BINARY, 'a', Buffer.concat([int32(-3), Buffer.alloc(6)]))])],
    ['binary past the end', documentOf([element(BsonType.BINARY, 'a', Buffer.concat([int32(30), Buffer.alloc(6)]))])],
    ['code with scope too small', documentOf([element(BsonType.CODE_W_SCOPE, 'a', Buffer.concat([int32(8), Buffer.alloc(8)]))])],
    ['double cut short', documentOf([element(BsonType.DOUBLE, 'a', Buffer.alloc(7))])],
    ['int32 cut short', documentOf([element(BsonType.INT32, 'a', Buffer.alloc(2))])],
    ['objectId cut short', documentOf([element(BsonType.OBJECT_ID, 'a', Buffer.alloc(11))])],
    ['decimal cut short', documentOf([element(BsonType.DECIMAL128, 'a', Buffer.alloc(15))])],
    ['regex pattern unterminated', documentOf([element(BsonType.REGEX, 'a', Buffer.from('abc'))])],
    ['regex options unterminated', documentOf([element(BsonType.REGEX, 'a', Buffer.from('abc\0im'))])],
    ['DBPointer past the end', documentOf([element(BsonType.DB_POINTER, 'a', Buffer.concat([int32(5), Buffer.from('db.c\0')]))])],
    ['unknown type', documentOf([element(0x42, 'a', Buffer.alloc(4))])],
    ['type 0 inside the document', documentOf([element(0x00, 'a', Buffer.alloc(4))])],
    ['element name unterminated', Buffer.from([8, 0, 0, 0, 0x0a, 0x61, 0x62, 0])],
    ['a type byte alone', Buffer.from([6, 0, 0, 0, 0x10, 0])],
    ['document size too small', Buffer.from([4, 0, 0, 0, 0])],
    ['document size larger than the buffer', Buffer.from([50, 0, 0, 0, 0x0a, 0x61, 0, 0])],
    ['negative document size', Buffer.from([0xff, 0xff, 0xff, 0xff, 0])],
    ['document without its final NUL', Buffer.from([6, 0, 0, 0, 0x7f, 1])],
    ['fewer than 5 bytes', Buffer.from([5, 0, 0])],
  ];

  it.each(cases)('%s', (_name, buf) => {
    let caught: unknown;
    try {
      walk(buf, 0);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(WireError);
    expect((caught as WireError).code).toBe(22);
    expect((caught as WireError).codeName).toBe('InvalidBSON');
    expect(() => findElement(buf, 0, 'zz')).toThrow(WireError);
  });

  it('refuses an offset outside the buffer', () => {
    const buf = Buffer.from(serialize({ a: 1 }));
    for (const offset of [-1, buf.length, buf.length - 4, 1.5]) expect(() => walk(buf, offset)).toThrow(WireError);
  });

  it('throws only InvalidBSON for any mutation of a document of every type (property)', () => {
    const base = allTypes.subarray(docAt);
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.option(fc.tuple(fc.nat(base.length - 4), fc.integer({ min: -2_147_483_648, max: 2_147_483_647 }))),
        fc.option(fc.nat(base.length)),
        fc.boolean(),
        (bytes, int, cut, keepSize) => {
          let buf = Buffer.from(base);
          for (const [at, v] of bytes) buf[at] = v;
          if (int) buf.writeInt32LE(int[1], int[0]);
          if (cut !== null) buf = buf.subarray(0, cut);
          if (keepSize && buf.length >= 4) buf.writeInt32LE(buf.length, 0);
          onlyInvalidBson(() => {
            for (const el of walk(buf, 0)) {
              expect(el.valueEnd).toBeLessThan(buf.readInt32LE(0));
              expect(el.valueStart).toBeGreaterThan(el.nameEnd);
            }
          });
          onlyInvalidBson(() => findElement(buf, 0, 'dbPointer'));
          onlyInvalidBson(() => firstKey(buf, 0));
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('throws only InvalidBSON for random bytes (property)', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 64 }), fc.boolean(), (bytes, fixSize) => {
        const buf = Buffer.from(bytes);
        if (fixSize && buf.length >= 5) {
          buf.writeInt32LE(buf.length, 0);
          buf[buf.length - 1] = 0;
        }
        onlyInvalidBson(() => walk(buf, 0));
        onlyInvalidBson(() => findElement(buf, 0, 'a'));
      }),
      { numRuns: 3000 },
    );
  });
});

describe('checkDocumentBounds', () => {
  it('returns the size of a document that fits, and InvalidBSON otherwise', () => {
    const doc = Buffer.from(serialize({ a: 'b' }));
    const buf = Buffer.concat([Buffer.from([9, 9]), doc, Buffer.from([9])]);
    expect(checkDocumentBounds(buf, 2, 2 + doc.length, 'x')).toBe(doc.length);
    for (const end of [2 + doc.length - 1, 2 + 4]) {
      expect(() => checkDocumentBounds(buf, 2, end, 'x')).toThrow(WireError);
    }
  });

  it('accepts what the encoder writes for any document (property)', () => {
    fc.assert(
      fc.property(fc.object({ maxDepth: 2 }), (obj) => {
        const doc: Document = JSON.parse(JSON.stringify(obj)) as Document;
        const buf = Buffer.from(serialize(doc));
        expect(checkDocumentBounds(buf, 0, buf.length, 'x')).toBe(buf.length);
        expect(walk(buf, 0).map((el) => nameOf(buf, el))).toEqual(Object.keys(deserialize(buf)));
      }),
      { numRuns: 300 },
    );
  });
});

/** The walks written without closures (hot path) agree with forEachElement on any bytes. */
describe('closure-free walks (findElement, checkNestingDepth, replyFailed, ReplyView)', () => {
  /** findElement as forEachElement finds it: the reference. */
  function referenceFind(buf: Buffer, name: string): BsonElement | undefined {
    let found: BsonElement | undefined;
    forEachElement(buf, 0, (el) => {
      if (nameOf(buf, el) === name) {
        found = el;
        return true;
      }
      return false;
    });
    return found;
  }
  /** The outcome of a call: its value, or the class and code of what it threw. */
  function outcome(fn: () => unknown): unknown {
    try {
      return { value: fn() };
    } catch (err) {
      if (!(err instanceof WireError)) throw err;
      return { code: err.code };
    }
  }

  it('findElement returns what the forEachElement walk finds, or throws the same InvalidBSON (property)', () => {
    const base = allTypes.subarray(docAt);
    const names = typed.map((t) => t.name).concat(['missing', 'dbPointer']);
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 0, maxLength: 4 }),
        fc.option(fc.nat(base.length)),
        fc.constantFrom(...names),
        (bytes, cut, name) => {
          let buf = Buffer.from(base);
          for (const [at, v] of bytes) buf[at] = v;
          if (cut !== null) {
            buf = buf.subarray(0, cut);
            if (buf.length >= 4) buf.writeInt32LE(buf.length, 0);
          }
          expect(outcome(() => findElement(buf, 0, name))).toEqual(outcome(() => referenceFind(buf, name)));
        },
      ),
      { numRuns: 2000 },
    );
  });

  it('checkNestingDepth: Overflow (15) past the limit, InvalidBSON (22) for malformed bytes, never a RangeError', () => {
    let doc: Document = { leaf: 1 };
    for (let i = 0; i < 30; i++) doc = { d: doc, a: [doc === undefined ? 0 : 1] };
    const buf = Buffer.from(serialize(doc));
    expect(() => checkNestingDepth(buf, 0, 31)).not.toThrow();
    expect(outcome(() => checkNestingDepth(buf, 0, 30))).toEqual({ code: 15 });
    for (let cut = 0; cut < buf.length; cut += 7) {
      const bad = Buffer.from(buf.subarray(0, cut));
      if (bad.length >= 4) bad.writeInt32LE(bad.length, 0);
      onlyInvalidBson(() => checkNestingDepth(bad, 0, 100));
    }
  });

  it('replyFailed and a ReplyView read ok / writeErrors / writeConcernError, and throw only InvalidBSON (property)', () => {
    const cases: [Document, boolean][] = [
      [{ ok: 1 }, false],
      [{ ok: 1.0, n: 1 }, false],
      [{ ok: 0, errmsg: 'x' }, true],
      [{ cursor: { id: 0, ns: 'a.b', firstBatch: [] }, ok: 1 }, false],
      [{ n: 0, writeErrors: [{ index: 0, code: 11000, errmsg: 'dup' }], ok: 1 }, true],
      [{ n: 1, writeConcernError: { code: 64, errmsg: 'wc' }, ok: 1 }, true],
      [{ ok: false }, true],
      [{ ok: true }, false],
      [{ ok: 'yes' }, false],
    ];
    for (const [doc, error] of cases) {
      const buf = Buffer.from(serialize(doc));
      expect(replyFailed(buf)).toBe(error);
      expect(new ReplyView(buf).failed).toBe(error);
    }
    const base = Buffer.from(serialize({ cursor: { id: 0, ns: 'a.b', firstBatch: [{ a: 1 }] }, writeErrors: [], ok: 1 }));
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(base.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }),
        fc.option(fc.nat(base.length)),
        (bytes, cut) => {
          let buf = Buffer.from(base);
          for (const [at, v] of bytes) buf[at] = v;
          if (cut !== null) buf = buf.subarray(0, cut);
          onlyInvalidBson(() => replyFailed(buf));
          onlyInvalidBson(() => new ReplyView(buf).documents);
        },
      ),
      { numRuns: 2000 },
    );
  });
});
