import { deflateSync } from 'node:zlib';
import { serialize, type Document } from 'bson';
import { crc32c } from '../../src/wire/crc32c.js';
import { HEADER_SIZE, MsgFlag, OpCode } from '../../src/wire/constants.js';

/**
 * Builders for raw wire frames, including ones no driver would send (any section kind, any order,
 * wrong lengths, checksums), for the wire unit tests and the bad-input suites.
 */

export type Section =
  | { kind: 0; doc: Document | Uint8Array }
  | { kind: 1; identifier: string; documents: (Document | Uint8Array)[] }
  /** Any kind byte followed by arbitrary bytes. */
  | { kind: number; raw: Uint8Array };

let nextId = 50_000;
export const freshRequestId = (): number => nextId++;

export function bsonBytes(doc: Document | Uint8Array): Buffer {
  return doc instanceof Uint8Array ? Buffer.from(doc) : Buffer.from(serialize(doc));
}

export function header(length: number, requestId: number, responseTo: number, opCode: number): Buffer {
  const h = Buffer.alloc(HEADER_SIZE);
  h.writeInt32LE(length, 0);
  h.writeInt32LE(requestId, 4);
  h.writeInt32LE(responseTo, 8);
  h.writeInt32LE(opCode, 12);
  return h;
}

/** A frame of `opCode` carrying `payload` after the header; the length field is right unless given. */
export function frame(opCode: number, payload: Uint8Array, options: { requestId?: number; length?: number } = {}): Buffer {
  const length = options.length ?? HEADER_SIZE + payload.length;
  return Buffer.concat([header(length, options.requestId ?? freshRequestId(), 0, opCode), payload]);
}

function sectionBytes(section: Section): Buffer {
  if ('doc' in section) return Buffer.concat([Buffer.from([0]), bsonBytes(section.doc)]);
  if ('identifier' in section) {
    const name = Buffer.from(`${section.identifier}\0`, 'utf8');
    const docs = section.documents.map(bsonBytes);
    const size = Buffer.alloc(4);
    size.writeInt32LE(4 + name.length + docs.reduce((n, d) => n + d.length, 0));
    return Buffer.concat([Buffer.from([1]), size, name, ...docs]);
  }
  return Buffer.concat([Buffer.from([section.kind]), Buffer.from(section.raw)]);
}

export interface RawOpMsgOptions {
  requestId?: number;
  flags?: number;
  /** Append a CRC-32C (and set the flag): true for the right one, a number for a given value. */
  checksum?: boolean | number;
}

/** An OP_MSG with exactly these sections in this order. */
export function rawOpMsg(sections: Section[], options: RawOpMsgOptions = {}): Buffer {
  let flags = options.flags ?? 0;
  if (options.checksum !== undefined && options.checksum !== false) flags |= MsgFlag.CHECKSUM_PRESENT;
  const flagBytes = Buffer.alloc(4);
  flagBytes.writeUInt32LE(flags >>> 0);
  const body = Buffer.concat([flagBytes, ...sections.map(sectionBytes)]);
  const withChecksum = (flags & MsgFlag.CHECKSUM_PRESENT) !== 0 && options.checksum !== undefined;
  const msg = frame(OpCode.MSG, withChecksum ? Buffer.concat([body, Buffer.alloc(4)]) : body, options);
  if (withChecksum) {
    const crc = options.checksum === true ? crc32c(msg, 0, msg.length - 4) : Number(options.checksum);
    msg.writeUInt32LE(crc >>> 0, msg.length - 4);
  }
  return msg;
}

/** A command OP_MSG (kind-0 body, then optional kind-1 sequences). */
export function commandMsg(
  doc: Document,
  options: RawOpMsgOptions & { sequences?: { identifier: string; documents: Document[] }[] } = {},
): Buffer {
  const sections: Section[] = [{ kind: 0, doc }];
  for (const s of options.sequences ?? []) sections.push({ kind: 1, identifier: s.identifier, documents: s.documents });
  return rawOpMsg(sections, options);
}

/** A legacy OP_QUERY. */
export function opQuery(
  fullCollectionName: string,
  query: Document | Uint8Array,
  options: { requestId?: number; flags?: number; numberToSkip?: number; numberToReturn?: number } = {},
): Buffer {
  const fixed = Buffer.alloc(4);
  fixed.writeInt32LE(options.flags ?? 0);
  const counts = Buffer.alloc(8);
  counts.writeInt32LE(options.numberToSkip ?? 0, 0);
  counts.writeInt32LE(options.numberToReturn ?? -1, 4);
  const payload = Buffer.concat([fixed, Buffer.from(`${fullCollectionName}\0`, 'utf8'), counts, bsonBytes(query)]);
  return frame(OpCode.QUERY, payload, options);
}

export const COMPRESSOR = { noop: 0, snappy: 1, zlib: 2, zstd: 3 } as const;

/**
 * Wraps a whole message (header included) into OP_COMPRESSED with the same request id. The declared
 * size, the original opcode and the payload can be overridden to build broken ones.
 */
export function compress(
  inner: Buffer,
  compressorId: number,
  options: { uncompressedSize?: number; originalOpCode?: number; payload?: Uint8Array } = {},
): Buffer {
  const body = inner.subarray(HEADER_SIZE);
  // Other compressors get the raw body: the proxy must refuse them before looking at the payload.
  const payload = options.payload ?? (compressorId === COMPRESSOR.zlib ? deflateSync(body) : body);
  const fixed = Buffer.alloc(9);
  fixed.writeInt32LE(options.originalOpCode ?? inner.readInt32LE(12), 0);
  fixed.writeInt32LE(options.uncompressedSize ?? body.length, 4);
  fixed[8] = compressorId;
  return frame(OpCode.COMPRESSED, Buffer.concat([fixed, Buffer.from(payload)]), { requestId: inner.readInt32LE(4) });
}

/** Request id of a message. */
export const requestIdOf = (msg: Buffer): number => msg.readInt32LE(4);
