/** Wire-protocol opcodes (https://www.mongodb.com/docs/manual/reference/mongodb-wire-protocol/). */
export const OpCode = {
  REPLY: 1,
  UPDATE: 2001,
  INSERT: 2002,
  QUERY: 2004,
  GET_MORE: 2005,
  DELETE: 2006,
  KILL_CURSORS: 2007,
  COMPRESSED: 2012,
  MSG: 2013,
} as const;

export const HEADER_SIZE = 16;
/** Smallest and largest frame the proxy accepts (the server's maxMessageSizeBytes). */
export const MIN_MESSAGE_SIZE = HEADER_SIZE;
export const MAX_MESSAGE_SIZE = 48_000_000;
export const MAX_BSON_OBJECT_SIZE = 16 * 1024 * 1024;
/** Documents in a kind-1 sequence may exceed maxBsonObjectSize by the server's 16 KiB allowance. */
export const MAX_WRITE_BATCH_SIZE = 100_000;

/** OP_MSG flag bits. Bits 0-15 are "required": an unknown one set there must be refused. */
export const MsgFlag = {
  CHECKSUM_PRESENT: 1 << 0,
  MORE_TO_COME: 1 << 1,
  EXHAUST_ALLOWED: 1 << 16,
} as const;
export const MSG_REQUIRED_BITS_MASK = 0xffff;
export const MSG_KNOWN_REQUIRED_BITS = MsgFlag.CHECKSUM_PRESENT | MsgFlag.MORE_TO_COME;

/** OP_COMPRESSED compressor ids. */
export const Compressor = { NOOP: 0, SNAPPY: 1, ZLIB: 2, ZSTD: 3 } as const;

/** OP_REPLY responseFlags. */
export const ReplyFlag = { CURSOR_NOT_FOUND: 1, QUERY_FAILURE: 2, AWAIT_CAPABLE: 8 } as const;
