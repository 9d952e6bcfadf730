import type { Document } from 'bson';
import { BsonType, documentEnd, findElement, forEachElement, keyEnd, valueSize, type BsonElement } from '../wire/bson-bytes.js';
import { Outcome, type OutcomeCode } from '../observability/metrics.js';

/**
 * What the metrics and logs need of a reply, read from its bytes (top-level elements only; batches
 * are counted element by element without decoding a document).
 */

const OK = Buffer.from('ok');
const WRITE_ERRORS = Buffer.from('writeErrors');
const WRITE_CONCERN_ERROR = Buffer.from('writeConcernError');

function named(buf: Buffer, el: BsonElement, name: Buffer): boolean {
  const len = name.length;
  if (el.nameEnd - el.nameStart !== len) return false;
  for (let i = 0; i < len; i++) if (buf[el.nameStart + i] !== name[i]) return false;
  return true;
}

function numberAt(buf: Buffer, el: BsonElement): number | undefined {
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

/** ok unless the reply says `ok: 0` or carries writeErrors / writeConcernError. One closure-free walk. */
export function replyOutcome(body: Buffer): OutcomeCode {
  let outcome: OutcomeCode = Outcome.OK;
  const end = documentEnd(body, 0);
  let p = 4;
  while (p < end) {
    const type = body[p]!;
    const nameStart = p + 1;
    const nameEnd = keyEnd(body, nameStart, end, 'element name');
    const valueStart = nameEnd + 1;
    const valueEnd = valueStart + valueSize(body, type, valueStart, end);
    if (valueEnd > end) forEachElement(body, 0, () => false); // throws InvalidBSON
    const el: BsonElement = { type, nameStart, nameEnd, valueStart, valueEnd };
    if (named(body, el, OK)) {
      if (numberAt(body, el) !== 1) outcome = Outcome.ERROR;
    } else if (named(body, el, WRITE_ERRORS) || named(body, el, WRITE_CONCERN_ERROR)) {
      outcome = Outcome.ERROR;
    }
    p = valueEnd;
  }
  return outcome;
}

/** Elements of the array (or document) whose value starts at `offset`. */
function countElements(buf: Buffer, offset: number): number {
  let n = 0;
  forEachElement(buf, offset, () => {
    n++;
  });
  return n;
}

/**
 * Documents a reply returned or touched: the batch of a cursor reply (firstBatch / nextBatch), `n` of
 * writes and counts, the values of distinct, 0/1 for findAndModify's value; undefined otherwise.
 */
export function documentsReturned(body: Buffer): number | undefined {
  const cursor = findElement(body, 0, 'cursor');
  if (cursor?.type === BsonType.DOCUMENT) {
    const batch = findElement(body, cursor.valueStart, 'firstBatch') ?? findElement(body, cursor.valueStart, 'nextBatch');
    return batch?.type === BsonType.ARRAY ? countElements(body, batch.valueStart) : undefined;
  }
  const n = findElement(body, 0, 'n');
  if (n) return numberAt(body, n);
  const values = findElement(body, 0, 'values');
  if (values?.type === BsonType.ARRAY) return countElements(body, values.valueStart);
  const value = findElement(body, 0, 'value');
  if (value) return value.type === BsonType.NULL ? 0 : 1;
  return undefined;
}

/** The collection a command names, as the app named it (the first field's value; getMore's `collection`). */
export function collectionOf(cmd: Document | undefined): string | undefined {
  if (!cmd) return undefined;
  let first: string | undefined;
  for (const key in cmd) {
    first = key;
    break;
  }
  if (first === undefined) return undefined;
  const value: unknown = cmd[first];
  if (typeof value === 'string') return value;
  if (typeof cmd.collection === 'string') return cmd.collection;
  // explain: the explained command's collection.
  if (first === 'explain' && value !== null && typeof value === 'object' && !Array.isArray(value)) return collectionOf(value as Document);
  return undefined;
}
