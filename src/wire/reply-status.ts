import { BsonType, ElementCursor, type BsonElement } from './bson-bytes.js';

/**
 * What a command reply says of its own success, read from its top-level elements without decoding it:
 * shared by the reply rewrite (error messages to map) and the metrics (the outcome of a command).
 */

const OK = Buffer.from('ok');
const WRITE_ERRORS = Buffer.from('writeErrors');
const WRITE_CONCERN_ERROR = Buffer.from('writeConcernError');

/** A numeric element's value (double, int32, int64, boolean as 0/1); undefined for other types. */
export function numberAt(buf: Buffer, el: BsonElement): number | undefined {
  switch (el.type) {
    case BsonType.DOUBLE:
      return buf.readDoubleLE(el.valueStart);
    case BsonType.INT32:
      return buf.readInt32LE(el.valueStart);
    case BsonType.INT64:
      return Number(buf.readBigInt64LE(el.valueStart));
    case BsonType.BOOLEAN:
      return buf[el.valueStart] === 1 ? 1 : 0;
    default:
      return undefined;
  }
}

/** Whether the reply failed: `ok` other than 1 (its first occurrence), or writeErrors / writeConcernError. */
export function replyFailed(body: Buffer): boolean {
  let okSeen = false;
  const el = new ElementCursor(body, 0);
  while (el.next()) {
    if (!okSeen && el.nameIs(OK)) {
      okSeen = true;
      const v = numberAt(body, el);
      if (v !== undefined && v !== 1) return true;
    } else if (el.nameIs(WRITE_ERRORS) || el.nameIs(WRITE_CONCERN_ERROR)) {
      return true;
    }
  }
  return false;
}
