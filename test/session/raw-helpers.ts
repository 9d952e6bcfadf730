import { expect } from 'vitest';
import { deserialize, type Document } from 'bson';
import { RawClient } from '../../src/testing/wire-client.js';
import { parseOpMsg } from '../../src/wire/opmsg.js';
import { OpCode } from '../../src/wire/constants.js';

/** A reply decoded without promoting int64 (cursor ids go back to the server as they came). */
export interface DecodedReply {
  opCode: number;
  responseTo: number;
  /** OP_MSG flags, or OP_REPLY responseFlags. */
  flags: number;
  doc: Document;
}

export function decodeReply(msg: Buffer): DecodedReply {
  const opCode = msg.readInt32LE(12);
  const responseTo = msg.readInt32LE(8);
  if (opCode === OpCode.MSG) {
    const parsed = parseOpMsg(msg);
    return { opCode, responseTo, flags: parsed.flags, doc: deserialize(parsed.body, { promoteLongs: false }) };
  }
  if (opCode === OpCode.REPLY) {
    expect(msg.readInt32LE(32)).toBe(1); // numberReturned
    return { opCode, responseTo, flags: msg.readInt32LE(16), doc: deserialize(msg.subarray(36), { promoteLongs: false }) };
  }
  throw new Error(`unexpected reply opcode ${opCode}`);
}

export async function nextDecoded(client: RawClient): Promise<DecodedReply> {
  return decodeReply(await client.nextMessage());
}

/** The proxy closes the connection without sending anything (more). */
export async function expectClosedWithoutReply(client: RawClient): Promise<void> {
  await expect(client.nextMessage()).rejects.toThrow('connection closed before a reply');
  expect(client.isOpen).toBe(false);
}

/** The reply is the server's error shape with this code (and codeName, when given). */
export function expectErrorReply(doc: Document, code: number, codeName?: string): void {
  expect(doc).toMatchObject({ ok: 0, code });
  expect(typeof doc.errmsg).toBe('string');
  if (codeName) expect(doc.codeName).toBe(codeName);
}

/** A new connection gets a ping answered: the proxy is alive and serving. */
export async function expectProxyServes(port: number): Promise<void> {
  const fresh = await RawClient.connect(port);
  try {
    expect(await fresh.command({ ping: 1, $db: 'admin' })).toEqual({ ok: 1 });
  } finally {
    fresh.destroy();
  }
}

/** The connection still answers commands. */
export async function expectUsable(client: RawClient): Promise<void> {
  expect(await client.command({ ping: 1, $db: 'admin' })).toEqual({ ok: 1 });
}
