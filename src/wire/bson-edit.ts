import { BsonType, ElementCursor, forEachElement, invalidBson, nameIs, type BsonElement } from './bson-bytes.js';
import { FieldConflictError, WireError } from './errors.js';

/**
 * Byte-level edits of BSON documents: stamp a string field on inserted documents, strip a field from
 * documents, rewrite a cursor reply's `ns` and batch, rewrite one embedded document of a reply.
 *
 * Why byte-level rather than deserialize → modify → serialize:
 * - **Hot path.** Insert batches (kind-1 sequences of up to 100,000 documents, 48 MB messages) and reply
 *   batches (16 MB) cross the proxy on every request. Decoding them allocates a JS value per BSON value
 *   and encoding them back walks everything again; here only the element headers of the top level (and,
 *   for a reply, of the cursor, the batch array and each batch document) are read, and every byte the
 *   proxy does not own is copied exactly once, by one final copy into one allocation.
 * - **No re-serialization.** A decode/encode round trip is not the identity: integer-like keys are
 *   reordered by JS objects, number types depend on promotion options, invalid UTF-8 is replaced, and
 *   deprecated types may not survive. Everything the proxy does not edit stays byte-identical.
 * - **Duplicate keys.** Raw BSON may hold the same key twice; a decoder keeps one occurrence (js-bson the
 *   last) while the server stores both, and a query may match either. Checking a decoded object would let
 *   `{app_id: "mine", app_id: "theirs"}` through. Every occurrence is checked by `stampField` and removed
 *   by `stripField`.
 *
 * Only top-level elements of the edited documents are examined: the proxy stamps and hides a top-level
 * field, and nested values are neither decoded nor validated (the top-level walk bounds-checks every
 * element's extent, which is all the edit depends on; the server validates the contents). Malformed
 * structure throws a WireError InvalidBSON (22), never a RangeError. The wire layer knows nothing about
 * apps: field names and values are parameters. Every function is pure and returns its input itself when
 * nothing changes.
 */

const MAX_INT32 = 0x7fffffff;
const INVALID_BSON = 22;

/** The UTF-8 bytes of a field name; NUL cannot appear in a BSON key. */
function fieldBytes(name: string): Buffer {
  if (name.includes('\0')) throw new TypeError('a BSON field name cannot contain a NUL character');
  return Buffer.from(name, 'utf8');
}

/** Whether a STRING element's value is exactly `value` (UTF-8 bytes, without the NUL). */
function stringIs(buf: Buffer, el: BsonElement, value: Buffer): boolean {
  const len = value.length;
  if (buf.readInt32LE(el.valueStart) !== len + 1) return false;
  const s = el.valueStart + 4;
  for (let i = 0; i < len; i++) if (buf[s + i] !== value[i]) return false;
  return true;
}

/** Size of a whole document at `offset` that must span `buf` exactly. */
function wholeDocumentSize(buf: Buffer, what: string): number {
  if (buf.length < 5) throw invalidBson(`${what}: ${buf.length} bytes, a BSON document needs at least 5`);
  const size = buf.readInt32LE(0);
  if (size !== buf.length) throw invalidBson(`${what}: document size ${size} but ${buf.length} bytes`);
  return size;
}

function checkedSize(size: number): number {
  if (size > MAX_INT32) throw invalidBson(`edited document would be ${size} bytes`);
  return size;
}

const TYPE_DESCRIPTIONS: Record<number, string> = {
  [BsonType.DOUBLE]: 'a double',
  [BsonType.DOCUMENT]: 'an embedded document',
  [BsonType.ARRAY]: 'an array',
  [BsonType.BINARY]: 'binary data',
  [BsonType.UNDEFINED]: 'undefined',
  [BsonType.OBJECT_ID]: 'an ObjectId',
  [BsonType.BOOLEAN]: 'a boolean',
  [BsonType.DATE]: 'a date',
  [BsonType.NULL]: 'null',
  [BsonType.REGEX]: 'a regular expression',
  [BsonType.DB_POINTER]: 'a DBPointer',
  [BsonType.CODE]: 'JavaScript code',
  [BsonType.SYMBOL]: 'a symbol',
  [BsonType.CODE_W_SCOPE]: 'JavaScript code with scope',
  [BsonType.INT32]: 'an int32',
  [BsonType.TIMESTAMP]: 'a timestamp',
  [BsonType.INT64]: 'an int64',
  [BsonType.DECIMAL128]: 'a decimal128',
  [BsonType.MIN_KEY]: 'MinKey',
  [BsonType.MAX_KEY]: 'MaxKey',
};

/** How many characters of a conflicting string the error quotes. */
const QUOTED_CHARS = 40;

/** A short description of an element's value for error messages: its type, and a string's start. */
export function describeElement(buf: Buffer, el: BsonElement): string {
  if (el.type !== BsonType.STRING) return TYPE_DESCRIPTIONS[el.type] ?? `a value of BSON type 0x${el.type.toString(16)}`;
  const start = el.valueStart + 4;
  const end = el.valueEnd - 1;
  // Decode no more than the quoted characters can need (4 bytes each), whatever the string's size.
  const chars = [...buf.toString('utf8', start, Math.min(end, start + 4 * QUOTED_CHARS + 4))];
  const cut = chars.length > QUOTED_CHARS || end - start > 4 * QUOTED_CHARS + 4;
  return `a string ${JSON.stringify(chars.slice(0, QUOTED_CHARS).join(''))}${cut ? '...' : ''}`;
}

/** Copies `src[start, end)` to `target` at `at`; small spans in JS (a native call costs more than it copies). */
function copyBytes(src: Buffer, start: number, end: number, target: Buffer, at: number): number {
  if (end - start > 64) return src.copy(target, at, start, end);
  for (let i = start; i < end; i++) target[at++] = src[i]!;
  return end - start;
}

const INT32 = -1;
const LITERAL = -2;

/**
 * The output of an edit, as a list of spans of the source buffer and small new pieces, copied once into
 * one allocation by `finish`. Adjacent source spans are merged, so an unchanged stretch of any length
 * costs one copy. `mark`/`rollback` undo speculative output (a nested document that turns out unchanged).
 */
class Splicer {
  /**
   * Segment i: `starts[i]` is a source offset (>= 0) with `ends[i]` the end of the span; or INT32, with
   * `ends[i]` a 4-byte little-endian value to write; or LITERAL, with `ends[i]` an index in `literals`.
   */
  // Plain arrays of small integers: allocating two typed arrays per edit cost more than the edit of a
  // one-document reply (a typed array allocates its own backing store).
  private readonly starts: number[] = [];
  private readonly ends: number[] = [];
  private count = 0;
  private readonly literals: Buffer[] = [];
  length = 0;

  constructor(private readonly src: Buffer) {}

  private push(start: number, end: number): number {
    this.starts[this.count] = start;
    this.ends[this.count] = end;
    return this.count++;
  }

  copy(start: number, end: number): void {
    if (end <= start) return;
    const n = this.count - 1;
    if (n >= 0 && this.starts[n]! >= 0 && this.ends[n] === start) this.ends[n] = end;
    else this.push(start, end);
    this.length += end - start;
  }

  insert(bytes: Buffer): void {
    this.push(LITERAL, this.literals.length);
    this.literals.push(bytes);
    this.length += bytes.length;
  }

  /** Reserves an int32 (a document size), set later with `setInt32`; returns its handle. */
  int32Slot(): number {
    this.length += 4;
    return this.push(INT32, 0);
  }

  setInt32(slot: number, value: number): void {
    this.ends[slot] = value;
  }

  /** A point to come back to with `rollback`. */
  mark(): SplicerMark {
    const n = this.count;
    return { segments: n, length: this.length, lastEnd: n > 0 ? this.ends[n - 1]! : 0 };
  }

  /** Drops everything output since `mark` was taken (including growth of the span that was last then). */
  rollback(mark: SplicerMark): void {
    for (let i = mark.segments; i < this.count; i++) {
      if (this.starts[i] === LITERAL) {
        this.literals.length = this.ends[i]!;
        break;
      }
    }
    this.count = mark.segments;
    if (mark.segments > 0) this.ends[mark.segments - 1] = mark.lastEnd;
    this.length = mark.length;
  }

  /** The edited document: one allocation, each span and piece copied once. */
  finish(): Buffer {
    const out = Buffer.allocUnsafe(this.length);
    const { src, starts, ends, literals, count } = this;
    let p = 0;
    for (let i = 0; i < count; i++) {
      const s = starts[i]!;
      const e = ends[i]!;
      if (s >= 0) p += copyBytes(src, s, e, out, p);
      else if (s === INT32) {
        out.writeInt32LE(e, p);
        p += 4;
      } else {
        const lit = literals[e]!;
        out.set(lit, p);
        p += lit.length;
      }
    }
    return out;
  }
}

interface SplicerMark {
  segments: number;
  length: number;
  lastEnd: number;
}

/**
 * Returns true when the visitor output a replacement for the element (nothing, to drop it); false
 * when it output nothing and the element stays as it is.
 */
type ElementEdit = (el: BsonElement) => boolean;

/**
 * Outputs the document at `offset` of `buf`, with `edit` deciding each element; returns whether anything
 * changed. An unchanged document is output as one source span (its speculative output is rolled back).
 */
function editDocument(out: Splicer, buf: Buffer, offset: number, edit: ElementEdit): boolean {
  const mark = out.mark();
  const before = out.length;
  const slot = out.int32Slot();
  let changed = false;
  forEachElement(buf, offset, (el) => {
    if (edit(el)) changed = true;
    else out.copy(el.nameStart - 1, el.valueEnd);
  });
  const end = offset + buf.readInt32LE(offset);
  if (!changed) {
    out.rollback(mark);
    out.copy(offset, end);
    return false;
  }
  out.copy(end - 1, end);
  out.setInt32(slot, checkedSize(out.length - before));
  return true;
}

/**
 * For an element whose value is a document or an array: outputs it with its value edited by `edit` and
 * returns true, or outputs nothing and returns false when the value is unchanged.
 */
function editEmbedded(out: Splicer, buf: Buffer, el: BsonElement, edit: ElementEdit): boolean {
  const mark = out.mark();
  out.copy(el.nameStart - 1, el.valueStart);
  if (editDocument(out, buf, el.valueStart, edit)) return true;
  out.rollback(mark);
  return false;
}

/**
 * Removes a top-level field from documents, for one source buffer. The document is first scanned (no
 * output); only a document that holds the field is output, as its kept spans under a new size, so an
 * unchanged document costs one walk and nothing else.
 */
class FieldStripper {
  /** Start and end offsets of the elements to drop in the document being edited. */
  private readonly hits: number[] = [];
  private count = 0;

  constructor(
    private readonly buf: Buffer,
    private readonly name: Buffer,
  ) {}

  /** Outputs the document at `offset` without the field and returns true, or outputs nothing and returns false. */
  strip(out: Splicer, offset: number): boolean {
    if (!this.scan(offset)) return false;
    this.emit(out, offset);
    return true;
  }

  /** As an element edit: an embedded document is output without the field (with its element header). */
  readonly embedded = (out: Splicer, el: BsonElement): boolean => {
    if (el.type !== BsonType.DOCUMENT || !this.scan(el.valueStart)) return false;
    out.copy(el.nameStart - 1, el.valueStart);
    this.emit(out, el.valueStart);
    return true;
  };

  /** Finds the elements to drop; returns whether there is any. A plain loop: this runs per batch document. */
  scan(offset: number): boolean {
    this.count = 0;
    const el = new ElementCursor(this.buf, offset);
    while (el.next()) {
      if (el.nameIs(this.name)) {
        this.hits[this.count++] = el.nameStart - 1;
        this.hits[this.count++] = el.valueEnd;
      }
    }
    return this.count > 0;
  }

  /** Whether every element `scan` just found is the string `value` (UTF-8 bytes, without the NUL). */
  hitsAre(value: Buffer): boolean {
    const { buf } = this;
    const skip = 1 + this.name.length + 1;
    const len = value.length;
    for (let i = 0; i < this.count; i += 2) {
      const at = this.hits[i]!;
      if (buf[at] !== BsonType.STRING) return false;
      const valueStart = at + skip;
      if (buf.readInt32LE(valueStart) !== len + 1) return false;
      const s = valueStart + 4;
      for (let j = 0; j < len; j++) if (buf[s + j] !== value[j]) return false;
    }
    return true;
  }

  /** Outputs the document `scan` just looked at, without the elements it found. */
  emit(out: Splicer, offset: number): void {
    const before = out.length;
    const slot = out.int32Slot();
    let p = offset + 4;
    for (let i = 0; i < this.count; i += 2) {
      out.copy(p, this.hits[i]!);
      p = this.hits[i + 1]!;
    }
    out.copy(p, offset + this.buf.readInt32LE(offset));
    out.setInt32(slot, out.length - before);
  }
}

/**
 * Removes every top-level element named `name` from `doc` (which must be exactly one document). Returns
 * `doc` itself when there is none.
 */
export function stripField(doc: Buffer, name: string): Buffer {
  wholeDocumentSize(doc, 'stripField');
  const out = new Splicer(doc);
  return new FieldStripper(doc, fieldBytes(name)).strip(out, 0) ? out.finish() : doc;
}

/** A field to stamp, encoded once for a batch. */
interface Stamp {
  name: string;
  nameBytes: Buffer;
  valueBytes: Buffer;
  /** Bytes of the element to append: type, name, NUL, int32 length, value, NUL. */
  elementSize: number;
}

function makeStamp(name: string, value: string): Stamp {
  const nameBytes = fieldBytes(name);
  const valueBytes = Buffer.from(value, 'utf8');
  return { name, nameBytes, valueBytes, elementSize: 1 + nameBytes.length + 1 + 4 + valueBytes.length + 1 };
}

/**
 * Checks every top-level element of `doc` named like the stamp: returns true when there is none (the
 * stamp must be appended), false when all of them are strings equal to the stamped value; throws
 * FieldConflictError otherwise (after walking the whole document, so that malformed bytes anywhere
 * are InvalidBSON first).
 */
function needsStamp(doc: Buffer, stamp: Stamp, index?: number): boolean {
  wholeDocumentSize(doc, 'stamped document');
  let occurrences = 0;
  let conflict: string | undefined;
  // An element cursor (no object per element, no closure): this runs once per inserted document.
  const el = new ElementCursor(doc, 0);
  while (el.next()) {
    if (!el.nameIs(stamp.nameBytes)) continue;
    occurrences++;
    if (conflict === undefined && !(el.type === BsonType.STRING && stringIs(doc, el, stamp.valueBytes))) {
      conflict = describeElement(doc, el);
    }
  }
  if (conflict !== undefined) throw new FieldConflictError(stamp.name, conflict, occurrences, index);
  return occurrences === 0;
}

/** Writes `doc` with the stamp appended into `target` at `at`; returns the new document's size. */
function writeStamped(doc: Buffer, stamp: Stamp, target: Buffer, at: number): number {
  const size = checkedSize(doc.length + stamp.elementSize);
  target.writeInt32LE(size, at);
  let p = at + 4;
  p += copyBytes(doc, 4, doc.length - 1, target, p);
  target[p++] = BsonType.STRING;
  p += copyBytes(stamp.nameBytes, 0, stamp.nameBytes.length, target, p);
  target[p++] = 0;
  target.writeInt32LE(stamp.valueBytes.length + 1, p);
  p += 4;
  p += copyBytes(stamp.valueBytes, 0, stamp.valueBytes.length, target, p);
  target[p++] = 0;
  target[p] = 0;
  return size;
}

/**
 * For a document being inserted: when no top-level element is named `name`, returns a new document with
 * the string element `name: value` appended (last); when one or more exist and all are the string `value`,
 * returns `doc` itself; otherwise throws FieldConflictError (BadValue) describing the first conflicting
 * occurrence. Malformed documents throw InvalidBSON.
 */
export function stampField(doc: Buffer, name: string, value: string): Buffer {
  const stamp = makeStamp(name, value);
  if (!needsStamp(doc, stamp)) return doc;
  const out = Buffer.allocUnsafe(checkedSize(doc.length + stamp.elementSize));
  writeStamped(doc, stamp, out, 0);
  return out;
}

/**
 * `stampField` over a batch (a kind-1 `documents` sequence): returns `docs` itself when no document needed
 * the field, otherwise a new array where the stamped documents are views of ONE new allocation and the
 * others are the original buffers. A conflict throws FieldConflictError with the document's `index`; a
 * malformed document throws InvalidBSON naming its index. The result can go straight to `encodeOpMsg`,
 * which copies each document once into the message.
 */
export function stampAll(docs: Buffer[], name: string, value: string): Buffer[] {
  const stamp = makeStamp(name, value);
  let total = 0;
  let first = -1;
  const needs = new Uint8Array(docs.length);
  for (let i = 0; i < docs.length; i++) {
    const doc = docs[i]!;
    let need: boolean;
    try {
      need = needsStamp(doc, stamp, i);
    } catch (err) {
      if (err instanceof WireError && err.code === INVALID_BSON) throw invalidBson(`document ${i}: ${err.message}`);
      throw err;
    }
    needs[i] = need ? 1 : 0;
    if (need) {
      if (first < 0) first = i;
      total += doc.length + stamp.elementSize;
    }
  }
  if (first < 0) return docs;
  const target = Buffer.allocUnsafe(total);
  const result = docs.slice();
  let p = 0;
  for (let i = first; i < docs.length; i++) {
    if (needs[i] === 0) continue;
    const size = writeStamped(docs[i]!, stamp, target, p);
    result[i] = target.subarray(p, p + size);
    p += size;
  }
  return result;
}

/** How to rewrite a cursor reply. */
export interface CursorReplyEdit {
  /** The new value of `cursor.ns` (a string); left alone when absent. */
  ns?: string;
  /** A field removed from the top level of every document of `cursor.firstBatch` / `cursor.nextBatch`. */
  stripField?: string;
  /**
   * Keeps only the batch documents whose top-level `field` is present and, at every occurrence (duplicate
   * keys), the string `value` exactly; every other batch element (a document without it, with another
   * value or type, or an element that is not a document) is removed and the array renumbered. Checked
   * before `stripField` removes the field.
   */
  keepOnly?: { field: string; value: string };
}

/** Whether an element's name is the decimal array index `index`. */
function nameIsIndex(buf: Buffer, el: BsonElement, index: number): boolean {
  const digits = String(index);
  if (el.nameEnd - el.nameStart !== digits.length) return false;
  for (let i = 0; i < digits.length; i++) if (buf[el.nameStart + i] !== digits.charCodeAt(i)) return false;
  return true;
}

/** The tag check of a batch: `scanner` finds the field's occurrences, which must all be the string `value`. */
interface BatchCheck {
  scanner: FieldStripper;
  value: Buffer;
  /** The checked field is also the one to strip: the scan done for the check serves the strip. */
  strip: boolean;
}

/**
 * Outputs the batch array `el` with only the documents `check` accepts (renumbered "0", "1", ...), each
 * stripped as `check.strip` or `stripper` say; returns false (and outputs nothing) when the array is
 * unchanged. One walk of each document's top level finds, checks and (when stripping) removes the field.
 */
function filterBatch(out: Splicer, buf: Buffer, el: BsonElement, check: BatchCheck, stripper: FieldStripper | undefined): boolean {
  const { scanner, value } = check;
  const mark = out.mark();
  out.copy(el.nameStart - 1, el.valueStart);
  const before = out.length;
  const slot = out.int32Slot();
  let changed = false;
  let index = 0;
  forEachElement(buf, el.valueStart, (item) => {
    if (item.type !== BsonType.DOCUMENT || !scanner.scan(item.valueStart) || !scanner.hitsAre(value)) {
      changed = true;
      return;
    }
    const sameName = nameIsIndex(buf, item, index);
    if (sameName) out.copy(item.nameStart - 1, item.valueStart);
    else out.insert(Buffer.from(`\x03${index}\0`, 'latin1'));
    if (check.strip) {
      scanner.emit(out, item.valueStart);
      changed = true;
    } else if (stripper && stripper.strip(out, item.valueStart)) changed = true;
    else {
      out.copy(item.valueStart, item.valueEnd);
      if (!sameName) changed = true;
    }
    index++;
  });
  if (!changed) {
    out.rollback(mark);
    return false;
  }
  const end = el.valueEnd;
  out.copy(end - 1, end);
  out.setInt32(slot, checkedSize(out.length - before));
  return true;
}

const CURSOR = Buffer.from('cursor');
const NS = Buffer.from('ns');
const FIRST_BATCH = Buffer.from('firstBatch');
const NEXT_BATCH = Buffer.from('nextBatch');

/** The value bytes of a STRING element: int32 length, the bytes, NUL. */
function stringValue(value: Buffer): Buffer {
  const out = Buffer.allocUnsafe(4 + value.length + 1);
  out.writeInt32LE(value.length + 1, 0);
  value.copy(out, 4);
  out[out.length - 1] = 0;
  return out;
}

/**
 * Rewrites a command reply `{cursor: {id, ns, firstBatch | nextBatch: [docs...], ...}, ok, ...}`: replaces
 * the string value of every `cursor.ns` (when `edit.ns` is given and differs), drops the batch elements
 * `edit.keepOnly` rejects and removes `edit.stripField` from the top level of every document of every
 * `firstBatch`/`nextBatch` array. Everything else is
 * byte-identical. Returns `body` itself when nothing changes, including replies without a `cursor`
 * document (errors). The result is built by one allocation and one copy of the unchanged spans, whatever
 * the batch size. A `cursor.ns` that is not a string, or a batch that is not an array, is InvalidBSON
 * (fail closed: a reply of an unknown shape is not passed on half-rewritten); batch elements that are not
 * documents are left alone (or dropped, with `keepOnly`).
 */
export function rewriteCursorReply(body: Buffer, edit: CursorReplyEdit): Buffer {
  wholeDocumentSize(body, 'cursor reply');
  const nsBytes = edit.ns === undefined ? undefined : Buffer.from(edit.ns, 'utf8');
  const stripName = edit.stripField === undefined ? undefined : fieldBytes(edit.stripField);
  const keep = edit.keepOnly;
  if (nsBytes === undefined && stripName === undefined && keep === undefined) return body;
  const out = new Splicer(body);
  const stripper = stripName && new FieldStripper(body, stripName);
  let batchEdit: ((el: BsonElement) => boolean) | undefined;
  if (keep) {
    const keepName = fieldBytes(keep.field);
    const strip = stripName !== undefined && stripName.equals(keepName);
    const check: BatchCheck = { scanner: strip && stripper ? stripper : new FieldStripper(body, keepName), value: Buffer.from(keep.value, 'utf8'), strip };
    const other = strip ? undefined : stripper || undefined;
    batchEdit = (el) => filterBatch(out, body, el, check, other);
  } else if (stripper) {
    batchEdit = (el) => editEmbedded(out, body, el, (item) => stripper.embedded(out, item));
  }
  const cursorEdit: ElementEdit = (el) => {
    if (nsBytes !== undefined && nameIs(body, el, NS)) {
      if (el.type !== BsonType.STRING) throw invalidBson(`cursor.ns is ${describeElement(body, el)}, not a string`);
      if (stringIs(body, el, nsBytes)) return false;
      out.copy(el.nameStart - 1, el.valueStart);
      out.insert(stringValue(nsBytes));
      return true;
    }
    if (batchEdit && (nameIs(body, el, FIRST_BATCH) || nameIs(body, el, NEXT_BATCH))) {
      if (el.type !== BsonType.ARRAY) {
        throw invalidBson(`cursor.${body.toString('utf8', el.nameStart, el.nameEnd)} is ${describeElement(body, el)}, not an array`);
      }
      return batchEdit(el);
    }
    return false;
  };
  const bodyEdit: ElementEdit = (el) =>
    el.type === BsonType.DOCUMENT && nameIs(body, el, CURSOR) && editEmbedded(out, body, el, cursorEdit);
  return editDocument(out, body, 0, bodyEdit) ? out.finish() : body;
}

/**
 * Rewrites the embedded document at `path` of `body` (e.g. a findAndModify reply's `value`) with `edit`,
 * which receives a view of the embedded document and returns it unchanged (the same Buffer) or a new
 * document. `path` is one field name (not split on dots: names may contain them) or a list of names,
 * each but the last naming an embedded document to descend into. Every occurrence of a name (duplicate
 * keys) is followed; a missing field, or a value that is not a document (`value: null`), is left alone.
 * Returns `body` itself when nothing changes; otherwise one allocation holds the result.
 */
export function rewriteDocumentField(
  body: Buffer,
  path: string | readonly string[],
  edit: (valueDoc: Buffer) => Buffer,
): Buffer {
  wholeDocumentSize(body, 'reply');
  const names = (typeof path === 'string' ? [path] : path).map(fieldBytes);
  if (names.length === 0) throw new TypeError('rewriteDocumentField needs a non-empty path');
  const out = new Splicer(body);
  const editAt = (depth: number): ElementEdit => {
    const name = names[depth]!;
    if (depth < names.length - 1) {
      const inner = editAt(depth + 1);
      return (el) => el.type === BsonType.DOCUMENT && nameIs(body, el, name) && editEmbedded(out, body, el, inner);
    }
    return (el) => {
      if (el.type !== BsonType.DOCUMENT || !nameIs(body, el, name)) return false;
      const value = body.subarray(el.valueStart, el.valueEnd);
      const edited = edit(value);
      if (edited === value) return false;
      if (edited.length < 5 || edited.readInt32LE(0) !== edited.length || edited[edited.length - 1] !== 0) {
        throw new TypeError('rewriteDocumentField: the edit returned something that is not one BSON document');
      }
      out.copy(el.nameStart - 1, el.valueStart);
      out.insert(edited);
      return true;
    };
  };
  return editDocument(out, body, 0, editAt(0)) ? out.finish() : body;
}

/**
 * Takes the top-level array `field` out of a command body, as the documents of a kind-1 sequence of
 * the same name: OP_MSG allows either form and they mean the same, and as a sequence the documents are
 * stamped at the byte level, never decoded and encoded again (the Node driver sends inserts in the
 * body). Undefined, and the body is used as sent, when there is no such array, when the field appears
 * twice, or when the array is empty or holds anything but documents.
 */
export function hoistDocumentArray(body: Buffer, field: string): { body: Buffer; documents: Buffer[] } | undefined {
  const name = fieldBytes(field);
  let found: BsonElement | undefined;
  const el = new ElementCursor(body, 0);
  while (el.next()) {
    if (!el.nameIs(name)) continue;
    if (found) return undefined;
    found = el.element();
  }
  if (!found || found.type !== BsonType.ARRAY) return undefined;
  const documents: Buffer[] = [];
  const item = new ElementCursor(body, found.valueStart);
  while (item.next()) {
    if (item.type !== BsonType.DOCUMENT) return undefined;
    documents.push(body.subarray(item.valueStart, item.valueEnd));
  }
  if (documents.length === 0) return undefined;
  const elementStart = found.nameStart - 1;
  const out = Buffer.allocUnsafe(body.length - (found.valueEnd - elementStart));
  body.copy(out, 0, 0, elementStart);
  body.copy(out, elementStart, found.valueEnd);
  out.writeInt32LE(out.length, 0);
  return { body: out, documents };
}
