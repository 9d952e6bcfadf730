import { HEADER_SIZE, OpCode, ReplyFlag } from './constants.js';
import { checkDocumentBounds, cstringEnd } from './bson-bytes.js';
import { fatalWireError } from './errors.js';
import { writeHeader } from './header.js';

/** A legacy OP_QUERY. The proxy accepts it only for the handshake on `admin.$cmd`. */
export interface OpQuery {
  requestId: number;
  flags: number;
  fullCollectionName: string;
  numberToSkip: number;
  numberToReturn: number;
  /** The query document, raw BSON. */
  query: Buffer;
}

export function parseOpQuery(msg: Buffer): OpQuery {
  const end = msg.length;
  let p = HEADER_SIZE;
  if (end - p < 4 + 1 + 8 + 5) throw fatalWireError('OP_QUERY too short');
  const flags = msg.readInt32LE(p);
  p += 4;
  const nameEnd = cstringEnd(msg, p, end);
  const fullCollectionName = msg.toString('utf8', p, nameEnd);
  p = nameEnd + 1;
  if (end - p < 8) throw fatalWireError('OP_QUERY too short');
  const numberToSkip = msg.readInt32LE(p);
  const numberToReturn = msg.readInt32LE(p + 4);
  p += 8;
  const size = checkDocumentBounds(msg, p, end, 'OP_QUERY query');
  return {
    requestId: msg.readInt32LE(4),
    flags,
    fullCollectionName,
    numberToSkip,
    numberToReturn,
    query: msg.subarray(p, p + size),
  };
}

/** Encodes an OP_REPLY carrying `documents` (raw BSON), as the legacy handshake expects. */
export function encodeOpReply(requestId: number, responseTo: number, documents: readonly Uint8Array[]): Buffer {
  let length = HEADER_SIZE + 20;
  for (const d of documents) length += d.length;
  const out = Buffer.allocUnsafe(length);
  writeHeader(out, length, requestId, responseTo, OpCode.REPLY);
  out.writeInt32LE(ReplyFlag.AWAIT_CAPABLE, HEADER_SIZE);
  out.writeBigInt64LE(0n, HEADER_SIZE + 4);
  out.writeInt32LE(0, HEADER_SIZE + 12);
  out.writeInt32LE(documents.length, HEADER_SIZE + 16);
  let p = HEADER_SIZE + 20;
  for (const d of documents) {
    out.set(d, p);
    p += d.length;
  }
  return out;
}
