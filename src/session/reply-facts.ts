import type { Document } from 'bson';
import { ReplyView } from '../upstream/index.js';
import { Outcome, type OutcomeCode } from '../observability/metrics.js';
import { isDoc } from '../policy/scope.js';

/**
 * What the metrics and logs need of a reply, read from its bytes: the request path reads a reply once
 * into a ReplyView (src/upstream/reply-view.ts); these answer the same questions of one body.
 */

/** ok unless the reply says `ok: 0` or carries writeErrors / writeConcernError. */
export function replyOutcome(body: Buffer): OutcomeCode {
  return new ReplyView(body).failed ? Outcome.ERROR : Outcome.OK;
}

/**
 * Documents a reply returned or touched: the batch of a cursor reply (firstBatch / nextBatch), `n` of
 * writes and counts, the values of distinct, 0/1 for findAndModify's value; undefined otherwise.
 */
export function documentsReturned(body: Buffer): number | undefined {
  return new ReplyView(body).documents;
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
  if (first === 'explain' && isDoc(value)) return collectionOf(value);
  return undefined;
}
