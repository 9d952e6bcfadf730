import { Code, DBRef, deserialize, serialize } from 'bson';
import { BsonType, checkNestingDepth, ElementCursor } from '../wire/bson-bytes.js';
import { isDoc, type Doc } from './scope.js';

/** The deepest nesting a command may have: the server's 200, less room for the levels the proxy adds. */
export const MAX_COMMAND_DEPTH = 180;

const OPTIONS = { promoteValues: false, bsonRegExp: true } as const;

/**
 * Decodes a command body (or a statement of a kind-1 sequence) for rewriting: depth and bounds are
 * checked on the bytes first; values are not promoted, so re-encoding gives back the same types.
 *
 * Every embedded document comes back as a plain document. js-bson turns any document shaped like a
 * DBRef (`$ref` a string, `$id`, optionally `$db`, no other `$` key) into a DBRef instance, which keeps
 * its fields apart from `$ref`/`$id`/`$db`, splits a `$ref` holding a dot, and re-encodes in its own
 * order: a guard that sees an instance rather than a document would not see the keys inside it
 * (docs/security.md, "Values that are not what they seem"). Such documents are decoded again as
 * plain documents, in the order of their bytes. What remains a DBRef instance is a DBPointer (BSON
 * type 0x0C), which the request path refuses (server-js.ts).
 */
export function decodeDocument(bytes: Buffer): Doc {
  checkNestingDepth(bytes, 0, MAX_COMMAND_DEPTH);
  const doc = deserialize(bytes, OPTIONS) as unknown;
  // A DBRef-shaped document has a string element named `$ref`: without those bytes there is none.
  const first = bytes.indexOf(REF_ELEMENT);
  if (first < 0) return doc as Doc;
  return restoreDocument(doc, bytes, 0, refPositions(bytes, first)) as Doc;
}

/** js-bson returns a Buffer on Node. */
export function encodeDocument(doc: Doc): Buffer {
  const bytes = serialize(doc);
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** A string element named `$ref`: type 0x02, then the C string. */
const REF_ELEMENT = Buffer.from([BsonType.STRING, ...Buffer.from('$ref'), 0]);

/** Every offset where REF_ELEMENT's bytes occur (a superset of the `$ref` elements), ascending. */
function refPositions(bytes: Buffer, first: number): number[] {
  const out: number[] = [];
  for (let at = first; at >= 0; at = bytes.indexOf(REF_ELEMENT, at + 1)) out.push(at);
  return out;
}

/** Whether any REF_ELEMENT occurrence lies in [start, end): only such subtrees can hold a DBRef. */
function mayHoldRef(positions: number[], start: number, end: number): boolean {
  let lo = 0;
  let hi = positions.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (positions[mid]! < start) lo = mid + 1;
    else hi = mid;
  }
  return lo < positions.length && positions[lo]! < end;
}

/**
 * `value` as decoded from the document whose bytes start at `offset`, with every DBRef instance
 * inside it (and itself) replaced by the plain document its bytes hold.
 */
function restoreDocument(value: unknown, bytes: Buffer, offset: number, positions: number[]): unknown {
  const doc = value instanceof DBRef ? plainDocument(bytes, offset) : value;
  if (!isDoc(doc)) return value; // not what js-bson makes of a document: leave it to the guards
  // js-bson keeps the last of duplicate keys: only the last element of each name is the decoded one.
  const last = new Map<string, { type: number; start: number; end: number }>();
  const el = new ElementCursor(bytes, offset);
  while (el.next()) last.set(bytes.toString('utf8', el.nameStart, el.nameEnd), { type: el.type, start: el.valueStart, end: el.valueEnd });
  for (const [name, { type, start, end }] of last) {
    if (!Object.prototype.hasOwnProperty.call(doc, name) || !mayHoldRef(positions, start, end)) continue;
    doc[name] = restoreValue(doc[name], type, bytes, start, positions);
  }
  return doc;
}

function restoreValue(value: unknown, type: number, bytes: Buffer, start: number, positions: number[]): unknown {
  if (type === BsonType.DOCUMENT) return restoreDocument(value, bytes, start, positions);
  if (type === BsonType.ARRAY && Array.isArray(value)) {
    // js-bson numbers array elements in order, whatever their keys say.
    const el = new ElementCursor(bytes, start);
    for (let i = 0; el.next(); i++) {
      if (i < value.length && mayHoldRef(positions, el.valueStart, el.valueEnd)) {
        value[i] = restoreValue(value[i], el.type, bytes, el.valueStart, positions);
      }
    }
    return value;
  }
  if (type === BsonType.CODE_W_SCOPE && value instanceof Code && isDoc(value.scope)) {
    // int32 total size, the code string (int32 length and bytes), then the scope document.
    const scopeAt = start + 8 + bytes.readInt32LE(start + 4);
    value.scope = restoreDocument(value.scope, bytes, scopeAt, positions) as Doc;
  }
  return value;
}

/**
 * The document at `offset` decoded as a plain document: the same elements behind a leading null
 * element named `$_`, which no DBRef-shaped document has (any other `$` key rules the shape out),
 * so js-bson leaves this level a document; the marker is then dropped, the order of the rest kept.
 * Nested DBRef-shaped documents are restored by the caller's walk.
 */
function plainDocument(bytes: Buffer, offset: number): Doc {
  const size = bytes.readInt32LE(offset);
  const copy = Buffer.allocUnsafe(size + MARKER.length);
  copy.writeInt32LE(size + MARKER.length, 0);
  MARKER.copy(copy, 4);
  bytes.copy(copy, 4 + MARKER.length, offset + 4, offset + size);
  const doc = deserialize(copy, OPTIONS) as Doc;
  delete doc[MARKER_NAME];
  return doc;
}

const MARKER_NAME = '$_';
const MARKER = Buffer.from([BsonType.NULL, ...Buffer.from(MARKER_NAME), 0]);
