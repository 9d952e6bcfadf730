import { deserialize, serialize } from 'bson';
import { checkNestingDepth } from '../wire/bson-bytes.js';
import type { Doc } from './scope.js';

/** The deepest nesting a command may have: the server's 200, less room for the levels the proxy adds. */
export const MAX_COMMAND_DEPTH = 180;

/**
 * Decodes a command body (or a statement of a kind-1 sequence) for rewriting: depth and bounds are
 * checked on the bytes first; values are not promoted, so re-encoding gives back the same types.
 */
export function decodeDocument(bytes: Buffer): Doc {
  checkNestingDepth(bytes, 0, MAX_COMMAND_DEPTH);
  return deserialize(bytes, { promoteValues: false, bsonRegExp: true }) as Doc;
}

/** js-bson returns a Buffer on Node. */
export function encodeDocument(doc: Doc): Buffer {
  const bytes = serialize(doc);
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
