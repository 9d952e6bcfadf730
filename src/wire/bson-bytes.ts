import { fatalWireError, WireError } from './errors.js';

/**
 * Byte-level checks and walks over BSON documents, for the hot path where deserializing whole payloads
 * (kind-1 batches, reply batches) would cost more than the decision being made.
 */

/** Throws unless `buf[offset..]` starts with a plausible BSON document that fits in `end`. Returns its size. */
export function checkDocumentBounds(buf: Buffer, offset: number, end: number, what: string): number {
  if (end - offset < 5) throw invalidBson(`${what}: ${end - offset} bytes left, a BSON document needs at least 5`);
  const size = buf.readInt32LE(offset);
  if (size < 5 || size > end - offset) throw invalidBson(`${what}: document size ${size} does not fit in ${end - offset} bytes`);
  if (buf[offset + size - 1] !== 0) throw invalidBson(`${what}: document does not end with a NUL byte`);
  return size;
}

export function invalidBson(message: string): WireError {
  return new WireError(message, 22, 'InvalidBSON', 'reply');
}

/** Offset of the NUL that ends the C string starting at `offset`, or throws. */
export function cstringEnd(buf: Buffer, offset: number, end: number): number {
  const nul = buf.indexOf(0, offset);
  if (nul < 0 || nul >= end) throw fatalWireError('unterminated C string');
  return nul;
}

/** BSON element types. */
export const BsonType = {
  DOUBLE: 0x01,
  STRING: 0x02,
  DOCUMENT: 0x03,
  ARRAY: 0x04,
  BINARY: 0x05,
  UNDEFINED: 0x06,
  OBJECT_ID: 0x07,
  BOOLEAN: 0x08,
  DATE: 0x09,
  NULL: 0x0a,
  REGEX: 0x0b,
  DB_POINTER: 0x0c,
  CODE: 0x0d,
  SYMBOL: 0x0e,
  CODE_W_SCOPE: 0x0f,
  INT32: 0x10,
  TIMESTAMP: 0x11,
  INT64: 0x12,
  DECIMAL128: 0x13,
  MIN_KEY: 0xff,
  MAX_KEY: 0x7f,
} as const;

export interface BsonElement {
  type: number;
  /** Key bytes: buf[nameStart, nameEnd). */
  nameStart: number;
  nameEnd: number;
  /** Value bytes: buf[valueStart, valueEnd). */
  valueStart: number;
  valueEnd: number;
}

/**
 * The int32 length prefix of a value at `offset`, which must lie inside the document (`end` is the offset
 * of the document's final NUL) and be at least `min`.
 */
function lengthPrefix(buf: Buffer, offset: number, end: number, min: number, what: string): number {
  if (offset + 4 > end) throw invalidBson(`${what} length past end of document`);
  const n = buf.readInt32LE(offset);
  if (n < min) throw invalidBson(`${what} has invalid length ${n}`);
  return n;
}

/**
 * Size in bytes of the value of an element of `type` at `offset`; `end` is the document's final NUL.
 * Exported for closure-free walks on the hot path; throws InvalidBSON like forEachElement.
 */
export function valueSize(buf: Buffer, type: number, offset: number, end: number): number {
  switch (type) {
    case BsonType.DOUBLE:
    case BsonType.DATE:
    case BsonType.TIMESTAMP:
    case BsonType.INT64:
      return 8;
    case BsonType.STRING:
    case BsonType.CODE:
    case BsonType.SYMBOL: {
      const size = 4 + lengthPrefix(buf, offset, end, 1, 'string');
      if (offset + size <= end && buf[offset + size - 1] !== 0) throw invalidBson('string does not end with a NUL byte');
      return size;
    }
    case BsonType.DOCUMENT:
    case BsonType.ARRAY: {
      const size = lengthPrefix(buf, offset, end, 5, 'embedded document');
      if (offset + size <= end && buf[offset + size - 1] !== 0) throw invalidBson('embedded document does not end with a NUL byte');
      return size;
    }
    case BsonType.CODE_W_SCOPE:
      // int32 total, string (int32 + at least the NUL), scope document (at least 5 bytes).
      return lengthPrefix(buf, offset, end, 14, 'code with scope');
    case BsonType.BINARY:
      return 5 + lengthPrefix(buf, offset, end, 0, 'binary');
    case BsonType.UNDEFINED:
    case BsonType.NULL:
    case BsonType.MIN_KEY:
    case BsonType.MAX_KEY:
      return 0;
    case BsonType.OBJECT_ID:
      return 12;
    case BsonType.BOOLEAN:
      return 1;
    case BsonType.INT32:
      return 4;
    case BsonType.DECIMAL128:
      return 16;
    case BsonType.REGEX: {
      const a = keyEnd(buf, offset, end, 'regex pattern');
      return keyEnd(buf, a + 1, end, 'regex options') + 1 - offset;
    }
    case BsonType.DB_POINTER:
      return 4 + lengthPrefix(buf, offset, end, 1, 'DBPointer namespace') + 12;
    default:
      throw invalidBson(`unknown BSON element type 0x${type.toString(16)}`);
  }
}

/** Offset of the NUL ending the C string at `offset` inside a document, or InvalidBSON. */
export function keyEnd(buf: Buffer, offset: number, end: number, what: string): number {
  // A plain loop: keys are short, and a native indexOf call per key costs more than it scans.
  for (let i = offset; i < end; i++) if (buf[i] === 0) return i;
  throw invalidBson(`unterminated ${what}`);
}

/** Checks that a whole document starts at `offset` of `buf`; returns the offset of its final NUL. */
export function documentEnd(buf: Buffer, offset: number): number {
  if (!Number.isInteger(offset) || offset < 0 || offset + 5 > buf.length) {
    throw invalidBson(`no BSON document at offset ${offset} of ${buf.length} bytes`);
  }
  const size = buf.readInt32LE(offset);
  if (size < 5 || size > buf.length - offset) throw invalidBson(`document size ${size} does not fit in ${buf.length - offset} bytes`);
  if (buf[offset + size - 1] !== 0) throw invalidBson('document does not end with a NUL byte');
  return offset + size - 1;
}

/**
 * The top-level elements of one document, one at a time, for hot loops: no closure and no object per
 * element (the cursor's fields describe the current element and are overwritten by next()). Bounds are
 * checked as the walk goes: malformed bytes throw InvalidBSON, never a RangeError; nested documents are
 * not entered.
 */
export class ElementCursor implements BsonElement {
  type = 0;
  nameStart = 0;
  nameEnd = 0;
  valueStart = 0;
  valueEnd = 0;
  /** Offset of the document's final NUL. */
  readonly end: number;

  /** Checks the document at `offset` of `buf`; the first next() moves to its first element. */
  constructor(
    readonly buf: Buffer,
    offset: number,
  ) {
    this.end = documentEnd(buf, offset);
    this.valueEnd = offset + 4;
  }

  /** Moves to the next element; false after the last one. */
  next(): boolean {
    const { buf, end } = this;
    const p = this.valueEnd;
    if (p >= end) return false;
    this.type = buf[p]!;
    this.nameStart = p + 1;
    this.nameEnd = keyEnd(buf, p + 1, end, 'element name');
    this.valueStart = this.nameEnd + 1;
    this.valueEnd = this.valueStart + valueSize(buf, this.type, this.valueStart, end);
    if (this.valueEnd > end) throw invalidBson('element value past end of document');
    return true;
  }

  /** Whether the current element's name is exactly these bytes. */
  nameIs(name: Uint8Array): boolean {
    return nameIs(this.buf, this, name);
  }

  /** The current element as a plain object (to keep it past next()). */
  element(): BsonElement {
    return { type: this.type, nameStart: this.nameStart, nameEnd: this.nameEnd, valueStart: this.valueStart, valueEnd: this.valueEnd };
  }
}

/** Whether the element's name is exactly these bytes (a plain loop: names are short). */
export function nameIs(buf: Buffer, el: BsonElement, name: Uint8Array): boolean {
  const len = name.length;
  if (el.nameEnd - el.nameStart !== len) return false;
  const s = el.nameStart;
  for (let i = 0; i < len; i++) if (buf[s + i] !== name[i]) return false;
  return true;
}

/**
 * Calls `visit` for each top-level element of the document at `offset`, stopping early when it
 * returns true. Bounds are checked (malformed bytes throw InvalidBSON, never a RangeError); nested
 * documents are not entered.
 */
export function forEachElement(buf: Buffer, offset: number, visit: (el: BsonElement) => boolean | void): void {
  const el = new ElementCursor(buf, offset);
  while (el.next()) if (visit(el.element())) return;
}

/** UTF-8 bytes of the names looked up by findElement (a handful of fixed field names). */
const NAME_BYTES = new Map<string, Buffer>();
const NAME_BYTES_CACHED = 256;

function nameBytes(name: string): Buffer {
  let bytes = NAME_BYTES.get(name);
  if (bytes === undefined) {
    bytes = Buffer.from(name, 'utf8');
    if (NAME_BYTES.size < NAME_BYTES_CACHED) NAME_BYTES.set(name, bytes);
  }
  return bytes;
}

/**
 * The element named `name` at the top level of the document at `offset`, if any. Names are compared as
 * bytes (a string is UTF-8 encoded first), so raw names that are not valid UTF-8 match exactly. The
 * walk checks bounds like forEachElement, up to the element found.
 */
export function findElement(buf: Buffer, offset: number, name: string | Uint8Array): BsonElement | undefined {
  const bytes = typeof name === 'string' ? nameBytes(name) : name;
  const el = new ElementCursor(buf, offset);
  while (el.next()) if (el.nameIs(bytes)) return el.element();
  return undefined;
}

/** Name of the first element (a command's name), without decoding the rest. */
export function firstKey(buf: Buffer, offset: number): string | undefined {
  const end = documentEnd(buf, offset);
  if (end === offset + 4) return undefined;
  const nameEnd = keyEnd(buf, offset + 5, end, 'element name');
  return buf.toString('utf8', offset + 5, nameEnd);
}

/**
 * Walks the whole document (every nested document and array, bounds-checked) and throws once nesting
 * goes deeper than `limit` — before anything recursive (a BSON decoder) touches it. The server's own
 * limit is 200 levels.
 */
export function checkNestingDepth(buf: Buffer, offset: number, limit: number): void {
  nestedDepth(buf, offset, 1, limit);
}

function nestedDepth(buf: Buffer, offset: number, depth: number, limit: number): void {
  if (depth > limit) {
    throw new WireError(`BSONObj exceeds maximum nested object depth: ${limit}`, 15, 'Overflow', 'reply');
  }
  const end = documentEnd(buf, offset);
  let p = offset + 4;
  while (p < end) {
    const type = buf[p]!;
    const valueStart = keyEnd(buf, p + 1, end, 'element name') + 1;
    const valueEnd = valueStart + valueSize(buf, type, valueStart, end);
    if (valueEnd > end) throw invalidBson('element value past end of document');
    if (type === BsonType.DOCUMENT || type === BsonType.ARRAY) nestedDepth(buf, valueStart, depth + 1, limit);
    p = valueEnd;
  }
}
