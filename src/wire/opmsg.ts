import { HEADER_SIZE, MSG_KNOWN_REQUIRED_BITS, MSG_REQUIRED_BITS_MASK, MsgFlag, OpCode } from './constants.js';
import { checkDocumentBounds, cstringEnd, findElement } from './bson-bytes.js';
import { crc32c } from './crc32c.js';
import { WireError } from './errors.js';
import { writeHeader } from './header.js';

/** A kind-1 section: an identifier ("documents", "updates", ...) and the documents, as views of the message. */
export interface DocumentSequence {
  identifier: string;
  documents: Buffer[];
}

/** An OP_MSG as views into the received bytes; nothing is copied or deserialized. */
export interface OpMsg {
  requestId: number;
  responseTo: number;
  flags: number;
  /** The kind-0 body, raw BSON. */
  body: Buffer;
  sequences: DocumentSequence[];
}

const MAX_DOCUMENT_SEQUENCES = 2;

/** Parses and validates an OP_MSG (header included), verifying the checksum when one is present. */
export function parseOpMsg(msg: Buffer): OpMsg {
  // Flags are required; an OP_MSG with no section at all is answered "must have a body" (40587), as a server does.
  if (msg.length < HEADER_SIZE + 4) throw new WireError('OP_MSG too short', 17, 'ProtocolError', 'close');
  const flags = msg.readUInt32LE(HEADER_SIZE);
  if ((flags & MSG_REQUIRED_BITS_MASK & ~MSG_KNOWN_REQUIRED_BITS) !== 0) {
    throw new WireError(
      `Message contains illegal flags value: 0b${flags.toString(2).padStart(32, '0')}`,
      223,
      'IllegalOpMsgFlag',
      'replyAndClose',
    );
  }
  let end = msg.length;
  if (flags & MsgFlag.CHECKSUM_PRESENT) {
    end -= 4;
    if (end < HEADER_SIZE + 4) throw new WireError('OP_MSG too short for its checksum', 17, 'ProtocolError', 'close');
    if (msg.readUInt32LE(end) !== crc32c(msg, 0, end)) {
      throw new WireError('OP_MSG checksum does not match contents', 288, 'ChecksumMismatch', 'replyAndClose');
    }
  }
  let body: Buffer | undefined;
  const sequences: DocumentSequence[] = [];
  /** The identifiers as sent (compared with body keys byte for byte, even when not valid UTF-8). */
  const rawIdentifiers: Buffer[] = [];
  let p = HEADER_SIZE + 4;
  while (p < end) {
    const kind = msg[p++];
    if (kind === 0) {
      if (body) throw new WireError('Multiple body sections in message', 40430, 'Location40430', 'reply');
      const size = checkDocumentBounds(msg, p, end, 'OP_MSG body');
      body = msg.subarray(p, p + size);
      p += size;
    } else if (kind === 1) {
      if (sequences.length >= MAX_DOCUMENT_SEQUENCES) {
        throw new WireError('Too many document sequences in OP_MSG', 233, 'TooManyDocumentSequences', 'replyAndClose');
      }
      if (end - p < 4) throw new WireError('truncated document sequence', 17, 'ProtocolError', 'replyAndClose');
      const size = msg.readInt32LE(p);
      if (size < 5 || size > end - p) {
        throw new WireError(`document sequence size ${size} does not fit the message`, 17, 'ProtocolError', 'replyAndClose');
      }
      const seqEnd = p + size;
      const nameEnd = cstringEnd(msg, p + 4, seqEnd);
      const rawIdentifier = msg.subarray(p + 4, nameEnd);
      const identifier = rawIdentifier.toString('utf8');
      if (sequences.some((s) => s.identifier === identifier)) {
        throw new WireError(`Duplicate document sequence: ${identifier}`, 40431, 'Location40431', 'reply');
      }
      const documents: Buffer[] = [];
      let q = nameEnd + 1;
      while (q < seqEnd) {
        const docSize = checkDocumentBounds(msg, q, seqEnd, `document sequence '${identifier}'`);
        documents.push(msg.subarray(q, q + docSize));
        q += docSize;
      }
      sequences.push({ identifier, documents });
      rawIdentifiers.push(rawIdentifier);
      p = seqEnd;
    } else {
      throw new WireError(`Unknown section kind ${kind}`, 40432, 'Location40432', 'reply');
    }
  }
  if (!body) throw new WireError('OP_MSG messages must have a body', 40587, 'Location40587', 'reply');
  for (const [i, seq] of sequences.entries()) {
    if (findElement(body, 0, rawIdentifiers[i]!)) {
      throw new WireError(
        `Duplicate field between body and document sequence ${seq.identifier}`,
        40433,
        'Location40433',
        'reply',
      );
    }
  }
  return { requestId: msg.readInt32LE(4), responseTo: msg.readInt32LE(8), flags, body, sequences };
}

/** Encodes an OP_MSG with one body and optional document sequences; never adds a checksum. */
export function encodeOpMsg(
  requestId: number,
  responseTo: number,
  flags: number,
  body: Uint8Array,
  sequences: readonly DocumentSequence[] = [],
): Buffer {
  let length = HEADER_SIZE + 4 + 1 + body.length;
  const names: Buffer[] = [];
  for (const seq of sequences) {
    const name = Buffer.from(seq.identifier + '\0', 'utf8');
    names.push(name);
    length += 1 + 4 + name.length;
    for (const d of seq.documents) length += d.length;
  }
  const out = Buffer.allocUnsafe(length);
  writeHeader(out, length, requestId, responseTo, OpCode.MSG);
  out.writeUInt32LE((flags & ~MsgFlag.CHECKSUM_PRESENT) >>> 0, HEADER_SIZE);
  let p = HEADER_SIZE + 4;
  // Sequences first: servers accept sections in any order and this keeps the body last, like drivers do.
  sequences.forEach((seq, i) => {
    const name = names[i]!;
    out[p++] = 1;
    const sizeAt = p;
    p += 4;
    name.copy(out, p);
    p += name.length;
    for (const d of seq.documents) {
      out.set(d, p);
      p += d.length;
    }
    out.writeInt32LE(p - sizeAt, sizeAt);
  });
  out[p++] = 0;
  out.set(body, p);
  return out;
}

/**
 * Prepares a received OP_MSG for forwarding with new ids, in place: the checksum is dropped (the header
 * it covers changes) and exhaustAllowed cleared (the proxy never streams). Returns the bytes to send,
 * a view of `msg`.
 */
export function readdressOpMsg(msg: Buffer, requestId: number, responseTo: number): Buffer {
  let flags = msg.readUInt32LE(HEADER_SIZE);
  let length = msg.length;
  if (flags & MsgFlag.CHECKSUM_PRESENT) length -= 4;
  flags &= ~(MsgFlag.CHECKSUM_PRESENT | MsgFlag.EXHAUST_ALLOWED);
  msg.writeInt32LE(length, 0);
  msg.writeInt32LE(requestId, 4);
  msg.writeInt32LE(responseTo, 8);
  msg.writeUInt32LE(flags >>> 0, HEADER_SIZE);
  return length === msg.length ? msg : msg.subarray(0, length);
}
