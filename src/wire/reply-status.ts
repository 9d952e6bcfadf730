import { BsonType, ElementCursor, forEachElement, type BsonElement } from './bson-bytes.js';

/**
 * What a command reply says, read from its bytes without decoding it: one walk into a ReplyView that
 * the cursor tracking, the reply rewrite and the metrics share.
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
  return new ReplyView(body).failed;
}

const CODE = Buffer.from('code');
const CURSOR = Buffer.from('cursor');
const N = Buffer.from('n');
const VALUES = Buffer.from('values');
const VALUE = Buffer.from('value');
const ID = Buffer.from('id');
const NS = Buffer.from('ns');
const FIRST_BATCH = Buffer.from('firstBatch');
const NEXT_BATCH = Buffer.from('nextBatch');

/**
 * What an upstream reply says, read in one walk of its top level (and of its `cursor` document):
 * whether it failed, its error code, the cursor it opened or continued, and how many documents it
 * returned or wrote. Cursor tracking, the reply rewrite and the metrics all read this one view.
 */
export class ReplyView {
  /** `ok` other than 1 (its first occurrence), or writeErrors / writeConcernError. */
  failed = false;
  /** The reply's int32 `code`, if any. */
  code: number | undefined = undefined;
  /** Whether the reply has a `cursor` document. */
  hasCursor = false;
  /** The cursor's id (0n: exhausted or none). */
  cursorId = 0n;
  /** The cursor's namespace as the upstream named it (undefined when absent or not a string). */
  cursorNs: string | undefined = undefined;
  /** `n` of writes and counts. */
  n: number | undefined = undefined;
  private batchStart = -1;
  private valuesStart = -1;
  /** findAndModify's `value`: -1 absent, 0 null, 1 a document. */
  private value = -1;
  private hasN = false;

  constructor(readonly body: Buffer) {
    let okSeen = false;
    let codeSeen = false;
    let cursorSeen = false;
    const el = new ElementCursor(body, 0);
    while (el.next()) {
      if (!okSeen && el.nameIs(OK)) {
        okSeen = true;
        const v = numberAt(body, el);
        if (v !== undefined && v !== 1) this.failed = true;
      } else if (el.nameIs(WRITE_ERRORS) || el.nameIs(WRITE_CONCERN_ERROR)) {
        this.failed = true;
      } else if (!codeSeen && el.nameIs(CODE)) {
        codeSeen = true;
        if (el.type === BsonType.INT32) this.code = body.readInt32LE(el.valueStart);
      } else if (!cursorSeen && el.nameIs(CURSOR)) {
        cursorSeen = true;
        if (el.type === BsonType.DOCUMENT) this.readCursor(el.valueStart);
      } else if (!this.hasN && el.nameIs(N)) {
        this.hasN = true;
        this.n = numberAt(body, el);
      } else if (this.valuesStart === -1 && el.nameIs(VALUES)) {
        this.valuesStart = el.type === BsonType.ARRAY ? el.valueStart : -2;
      } else if (this.value === -1 && el.nameIs(VALUE)) {
        this.value = el.type === BsonType.NULL ? 0 : 1;
      }
    }
  }

  /**
   * Documents the reply returned or touched: the batch of a cursor reply (firstBatch / nextBatch), `n`
   * of writes and counts, the values of distinct, 0/1 for findAndModify's value; undefined otherwise.
   * Batches are counted element by element without decoding a document, only when asked.
   */
  get documents(): number | undefined {
    if (this.hasCursor) return this.batchStart >= 0 ? countElements(this.body, this.batchStart) : undefined;
    if (this.hasN) return this.n;
    if (this.valuesStart >= 0) return countElements(this.body, this.valuesStart);
    if (this.value !== -1) return this.value;
    return undefined;
  }

  private readCursor(offset: number): void {
    const body = this.body;
    this.hasCursor = true;
    let idSeen = false;
    let nsSeen = false;
    let first = -1;
    let next = -1;
    const el = new ElementCursor(body, offset);
    while (el.next()) {
      if (!idSeen && el.nameIs(ID)) {
        idSeen = true;
        if (el.type === BsonType.INT64) this.cursorId = body.readBigInt64LE(el.valueStart);
      } else if (!nsSeen && el.nameIs(NS)) {
        nsSeen = true;
        if (el.type === BsonType.STRING) this.cursorNs = body.toString('utf8', el.valueStart + 4, el.valueStart + 3 + body.readInt32LE(el.valueStart));
      } else if (first === -1 && el.nameIs(FIRST_BATCH)) {
        first = el.type === BsonType.ARRAY ? el.valueStart : -2;
      } else if (next === -1 && el.nameIs(NEXT_BATCH)) {
        next = el.type === BsonType.ARRAY ? el.valueStart : -2;
      }
    }
    // firstBatch wins over nextBatch wherever it appears; a batch that is not an array is not counted.
    this.batchStart = first !== -1 ? first : next;
  }
}

function countElements(buf: Buffer, offset: number): number {
  let n = 0;
  forEachElement(buf, offset, () => {
    n++;
  });
  return n;
}
