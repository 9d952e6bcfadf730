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

/** Size in bytes of the value of an element of `type` at `offset`. */
function valueSize(buf: Buffer, type: number, offset: number, end: number): number {
  switch (type) {
    case BsonType.DOUBLE:
    case BsonType.DATE:
    case BsonType.TIMESTAMP:
    case BsonType.INT64:
      return 8;
    case BsonType.STRING:
    case BsonType.CODE:
    case BsonType.SYMBOL:
      return 4 + buf.readInt32LE(offset);
    case BsonType.DOCUMENT:
    case BsonType.ARRAY:
    case BsonType.CODE_W_SCOPE:
      return buf.readInt32LE(offset);
    case BsonType.BINARY:
      return 5 + buf.readInt32LE(offset);
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
      const a = cstringEnd(buf, offset, end);
      return cstringEnd(buf, a + 1, end) + 1 - offset;
    }
    case BsonType.DB_POINTER:
      return 4 + buf.readInt32LE(offset) + 12;
    default:
      throw invalidBson(`unknown BSON element type 0x${type.toString(16)}`);
  }
}

/**
 * Calls `visit` for each top-level element of the document at `offset`, stopping early when it
 * returns true. Bounds are checked; nested documents are not entered.
 */
export function forEachElement(buf: Buffer, offset: number, visit: (el: BsonElement) => boolean | void): void {
  const size = buf.readInt32LE(offset);
  const end = offset + size - 1;
  let p = offset + 4;
  while (p < end) {
    const type = buf[p]!;
    const nameStart = p + 1;
    const nameEnd = cstringEnd(buf, nameStart, end);
    const valueStart = nameEnd + 1;
    if (valueStart > end) throw invalidBson('element value past end of document');
    const len = valueSize(buf, type, valueStart, end);
    const valueEnd = valueStart + len;
    if (len < 0 || valueEnd > end) throw invalidBson('element value past end of document');
    if (visit({ type, nameStart, nameEnd, valueStart, valueEnd })) return;
    p = valueEnd;
  }
}

/** The element named `name` at the top level of the document at `offset`, if any. */
export function findElement(buf: Buffer, offset: number, name: string): BsonElement | undefined {
  let found: BsonElement | undefined;
  const len = Buffer.byteLength(name);
  forEachElement(buf, offset, (el) => {
    if (el.nameEnd - el.nameStart === len && buf.toString('utf8', el.nameStart, el.nameEnd) === name) {
      found = el;
      return true;
    }
    return false;
  });
  return found;
}

/** Name of the first element (a command's name), without decoding the rest. */
export function firstKey(buf: Buffer, offset: number): string | undefined {
  const size = buf.readInt32LE(offset);
  if (size <= 5) return undefined;
  const nameEnd = cstringEnd(buf, offset + 5, offset + size);
  return buf.toString('utf8', offset + 5, nameEnd);
}
