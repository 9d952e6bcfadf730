import { isDoc } from './scope.js';

/**
 * BSON values as the server orders and names them, for the proxy's own evaluator (match.ts). Values
 * are js-bson's, decoded without promotion (Int32, Double, Long, Decimal128 wrappers), or plain
 * JavaScript values (tests, and results the evaluator computes). `undefined` is a missing field.
 */

/** Anything that pays for work: the evaluator's step budget. */
export interface Meter {
  charge(steps: number): void;
}

/** One step per this many characters of a string an operation reads. */
export const CHARS_PER_STEP = 16;

/** The steps for reading a string of `length` characters. */
export const stringSteps = (length: number): number => 1 + Math.floor(length / CHARS_PER_STEP);

interface Tagged {
  readonly _bsontype: string;
}

/**
 * The js-bson class of a value; undefined for a plain document, even one with a `_bsontype` key (a
 * document is told from a BSON value by its prototype, never by its keys: docs/security.md).
 */
function bsonTypeOf(v: object): string | undefined {
  return !isDoc(v) && '_bsontype' in v ? String((v as Tagged)._bsontype) : undefined;
}

/** The server's name for a value's type (`$type`), 'missing' for an absent field. */
export function typeName(v: unknown): string {
  if (v === undefined) return 'missing';
  if (v === null) return 'null';
  switch (typeof v) {
    case 'string':
      return 'string';
    case 'boolean':
      return 'bool';
    case 'number':
      return Number.isInteger(v) && v >= -(2 ** 31) && v < 2 ** 31 ? 'int' : 'double';
    case 'bigint':
      return 'long';
    case 'object':
      break;
    default:
      return 'javascript';
  }
  if (Array.isArray(v)) return 'array';
  if (v instanceof Date) return 'date';
  if (v instanceof RegExp) return 'regex';
  if (v instanceof Uint8Array) return 'binData';
  switch (bsonTypeOf(v)) {
    case undefined:
      return 'object';
    case 'Int32':
      return 'int';
    case 'Double':
      return 'double';
    case 'Long':
      return 'long';
    case 'Decimal128':
      return 'decimal';
    case 'Binary':
      return 'binData';
    case 'ObjectId':
    case 'ObjectID':
      return 'objectId';
    case 'Timestamp':
      return 'timestamp';
    case 'BSONRegExp':
      return 'regex';
    case 'BSONSymbol':
      return 'symbol';
    case 'MinKey':
      return 'minKey';
    case 'MaxKey':
      return 'maxKey';
    case 'DBRef':
      return 'dbPointer';
    case 'Code':
      return 'javascript';
    default:
      return 'object';
  }
}

/** The server's type codes (`$type: <number>`) by name. */
export const TYPE_CODES: Readonly<Record<string, number>> = {
  double: 1, string: 2, object: 3, array: 4, binData: 5, undefined: 6, objectId: 7, bool: 8, date: 9, null: 10,
  regex: 11, dbPointer: 12, javascript: 13, symbol: 14, javascriptWithScope: 15, int: 16, timestamp: 17, long: 18,
  decimal: 19, minKey: -1, maxKey: 127,
};

const NUMERIC = new Set(['int', 'long', 'double', 'decimal']);

export const isNumeric = (v: unknown): boolean => NUMERIC.has(typeName(v));

/** A numeric value as a JavaScript number (Long and Decimal128 may lose precision), else undefined. */
export function numberOf(v: unknown): number | undefined {
  if (typeof v === 'number') return v;
  if (typeof v === 'bigint') return Number(v);
  if (v === null || typeof v !== 'object') return undefined;
  switch (bsonTypeOf(v)) {
    case 'Int32':
    case 'Double':
      return Number((v as { value: number }).value);
    case 'Long':
      return (v as { toNumber(): number }).toNumber();
    case 'Decimal128':
      return Number.parseFloat(String(v));
    default:
      return undefined;
  }
}

/** The canonical rank of a type: values of different ranks never compare equal (the server's order). */
export function rank(v: unknown): number {
  switch (typeName(v)) {
    case 'missing':
      return -2;
    case 'minKey':
      return -1;
    case 'null':
    case 'undefined':
      return 5;
    case 'int':
    case 'long':
    case 'double':
    case 'decimal':
      return 10;
    case 'string':
    case 'symbol':
      return 15;
    case 'object':
      return 20;
    case 'array':
      return 25;
    case 'binData':
      return 30;
    case 'objectId':
      return 35;
    case 'bool':
      return 40;
    case 'date':
      return 45;
    case 'timestamp':
      return 47;
    case 'regex':
      return 50;
    case 'dbPointer':
      return 55;
    case 'javascript':
      return 60;
    default:
      return 127; // maxKey
  }
}

/** A string value (string or symbol), else undefined. */
export function stringOf(v: unknown): string | undefined {
  if (typeof v === 'string') return v;
  if (v !== null && typeof v === 'object' && bsonTypeOf(v) === 'BSONSymbol') return String((v as { value: unknown }).value);
  return undefined;
}

/** Code point order (the order of UTF-8 bytes), which JavaScript's UTF-16 `<` gets wrong above U+FFFF. */
function compareStrings(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x !== y) return fixup(x) - fixup(y);
  }
  return a.length - b.length;
}

/** Surrogates (U+D800–U+DFFF) stand for code points above every other UTF-16 unit. */
const fixup = (c: number): number => (c >= 0xd800 && c <= 0xdfff ? c + 0x2000 : c >= 0xe000 ? c - 0x800 : c);

function bytesOf(v: unknown): Uint8Array {
  if (v instanceof Uint8Array) return v;
  const b = v as { buffer?: Uint8Array; id?: Uint8Array };
  return b.buffer ?? b.id ?? new Uint8Array();
}

function compareBytes(a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return a.length - b.length;
  return Buffer.compare(a, b);
}

const sign = (n: number): number => (n < 0 ? -1 : n > 0 ? 1 : 0);

function compareNumbers(a: unknown, b: unknown): number {
  if (typeName(a) === 'long' && typeName(b) === 'long') {
    const x = BigInt(String(a));
    const y = BigInt(String(b));
    return x < y ? -1 : x > y ? 1 : 0;
  }
  const x = numberOf(a)!;
  const y = numberOf(b)!;
  // NaN equals NaN and sorts before every other number.
  if (Number.isNaN(x)) return Number.isNaN(y) ? 0 : -1;
  if (Number.isNaN(y)) return 1;
  return sign(x - y);
}

/**
 * The server's total order over values (sort order, aggregation comparisons): by canonical rank, then
 * within the type. Documents compare field by field in order (type, name, value), arrays element by
 * element. Charges the meter for every value and string it reads.
 */
export function compareValues(a: unknown, b: unknown, meter: Meter): number {
  meter.charge(1);
  const ra = rank(a);
  const rb = rank(b);
  if (ra !== rb) return sign(ra - rb);
  switch (ra) {
    case 10:
      return compareNumbers(a, b);
    case 15: {
      const x = stringOf(a)!;
      const y = stringOf(b)!;
      meter.charge(stringSteps(Math.min(x.length, y.length)));
      return sign(compareStrings(x, y));
    }
    case 20:
      return compareDocuments(a as Record<string, unknown>, b as Record<string, unknown>, meter);
    case 25: {
      const x = a as unknown[];
      const y = b as unknown[];
      const n = Math.min(x.length, y.length);
      for (let i = 0; i < n; i++) {
        const c = compareValues(x[i], y[i], meter);
        if (c !== 0) return c;
      }
      return sign(x.length - y.length);
    }
    case 30: {
      const x = bytesOf(a);
      const y = bytesOf(b);
      meter.charge(stringSteps(Math.min(x.length, y.length)));
      if (x.length !== y.length) return sign(x.length - y.length);
      const st = ((a as { sub_type?: number }).sub_type ?? 0) - ((b as { sub_type?: number }).sub_type ?? 0);
      return st !== 0 ? sign(st) : sign(Buffer.compare(x, y));
    }
    case 35:
      return sign(compareBytes(bytesOf(a), bytesOf(b)));
    case 40:
      return sign(Number(a) - Number(b));
    case 45:
      return sign((a as Date).getTime() - (b as Date).getTime());
    case 47: {
      const x = a as { t: number; i: number };
      const y = b as { t: number; i: number };
      return sign(x.t - y.t || x.i - y.i);
    }
    case 50: {
      const x = regexParts(a);
      const y = regexParts(b);
      meter.charge(stringSteps(Math.min(x.pattern.length, y.pattern.length)));
      return sign(compareStrings(x.pattern, y.pattern) || compareStrings(x.options, y.options));
    }
    default:
      // missing, MinKey, null, MaxKey: one value each. DBPointer and code are never compared by content.
      return 0;
  }
}

/** BSON's regular expression, or JavaScript's (in-process callers). */
function regexParts(v: unknown): { pattern: string; options: string } {
  if (v instanceof RegExp) return { pattern: v.source, options: v.flags.replace(/[^ims]/g, '') };
  return v as { pattern: string; options: string };
}

function compareDocuments(a: Record<string, unknown>, b: Record<string, unknown>, meter: Meter): number {
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  const n = Math.min(ka.length, kb.length);
  for (let i = 0; i < n; i++) {
    const x = a[ka[i]!];
    const y = b[kb[i]!];
    const r = sign(rank(x) - rank(y));
    if (r !== 0) return r;
    meter.charge(stringSteps(Math.min(ka[i]!.length, kb[i]!.length)));
    const names = sign(compareStrings(ka[i]!, kb[i]!));
    if (names !== 0) return names;
    const c = compareValues(x, y, meter);
    if (c !== 0) return c;
  }
  return sign(ka.length - kb.length);
}

/** Equality as the server sees it: same canonical rank and equal (1 equals 1.0; 'a' never equals /a/). */
export function valuesEqual(a: unknown, b: unknown, meter: Meter): boolean {
  if (rank(a) !== rank(b)) {
    meter.charge(1);
    return false;
  }
  return compareValues(a, b, meter) === 0;
}
