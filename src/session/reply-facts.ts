import type { Document } from 'bson';
import { BsonType, findElement, forEachElement } from '../wire/bson-bytes.js';
import { numberAt, replyFailed } from '../wire/reply-status.js';
import { Outcome, type OutcomeCode } from '../observability/metrics.js';

/**
 * What the metrics and logs need of a reply, read from its bytes (top-level elements only; batches
 * are counted element by element without decoding a document).
 */

/** ok unless the reply says `ok: 0` or carries writeErrors / writeConcernError. */
export function replyOutcome(body: Buffer): OutcomeCode {
  return replyFailed(body) ? Outcome.ERROR : Outcome.OK;
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
