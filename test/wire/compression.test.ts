import { deflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { deserialize } from 'bson';
import { decompressMessage } from '../../src/wire/compression.js';
import { WireError, type WireErrorDisposition } from '../../src/wire/errors.js';
import { MAX_MESSAGE_SIZE, OpCode } from '../../src/wire/constants.js';
import { readHeader } from '../../src/wire/header.js';
import { parseOpMsg } from '../../src/wire/opmsg.js';
import { COMPRESSOR, commandMsg, compress, frame, opQuery } from './frames.js';

async function rejection(p: Promise<unknown>): Promise<WireError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof WireError) return err;
    throw new Error(`expected a WireError, got ${String(err)}`);
  }
  throw new Error('expected a WireError, the promise resolved');
}

async function expectRefused(p: Promise<unknown>, code: number, disposition: WireErrorDisposition, message: RegExp): Promise<void> {
  const err = await rejection(p);
  expect({ code: err.code, disposition: err.disposition }).toEqual({ code, disposition });
  expect(err.message).toMatch(message);
}

describe('decompressMessage', () => {
  const inner = commandMsg({ find: 'c', filter: { s: 'abc'.repeat(100) }, $db: 'd' }, { requestId: 99 });

  it.each([
    ['zlib', COMPRESSOR.zlib],
    ['noop', COMPRESSOR.noop],
  ])('restores the original message from %s, header rebuilt with its ids and opcode', async (_name, id) => {
    const wrapped = compress(inner, id);
    if (id === COMPRESSOR.zlib) expect(wrapped.length).toBeLessThan(inner.length);
    const out = await decompressMessage(wrapped, MAX_MESSAGE_SIZE);
    expect(out.toString('hex')).toBe(inner.toString('hex'));
    expect(readHeader(out)).toEqual({ messageLength: inner.length, requestId: 99, responseTo: 0, opCode: OpCode.MSG });
    expect(deserialize(parseOpMsg(out).body).filter).toEqual({ s: 'abc'.repeat(100) });
  });

  it('restores a compressed OP_QUERY too', async () => {
    const q = opQuery('admin.$cmd', { isMaster: 1 });
    const out = await decompressMessage(compress(q, COMPRESSOR.zlib), MAX_MESSAGE_SIZE);
    expect(out.equals(q)).toBe(true);
  });

  it.each([
    ['snappy', COMPRESSOR.snappy],
    ['zstd', COMPRESSOR.zstd],
    ['unknown compressor id 9', 9],
  ])('refuses %s with BadValue, answered and then closed', async (name, id) => {
    const err = await rejection(decompressMessage(compress(inner, id), MAX_MESSAGE_SIZE));
    expect([err.code, err.codeName, err.disposition]).toEqual([2, 'BadValue', 'replyAndClose']);
    expect(err.message).toContain(name);
  });

  it('bounds the declared size by the message limit before inflating anything', async () => {
    // A zlib stream that would inflate to 60 MB; the declared size alone refuses it.
    const bomb = deflateSync(Buffer.alloc(60_000_000));
    const wrapped = compress(inner, COMPRESSOR.zlib, { payload: bomb, uncompressedSize: 60_000_000 });
    await expectRefused(decompressMessage(wrapped, MAX_MESSAGE_SIZE), 17, 'close', /over the limit/);
    // The limit counts the header: exactly max - 16 declared bytes is the largest allowed.
    const atLimit = compress(inner, COMPRESSOR.noop, { uncompressedSize: 1000 - 16, payload: Buffer.alloc(1000 - 16) });
    expect((await decompressMessage(atLimit, 1000)).length).toBe(1000);
    const overLimit = compress(inner, COMPRESSOR.noop, { uncompressedSize: 1000 - 15, payload: Buffer.alloc(1000 - 15) });
    await expectRefused(decompressMessage(overLimit, 1000), 17, 'close', /over the limit/);
    await expectRefused(decompressMessage(compress(inner, COMPRESSOR.zlib, { uncompressedSize: -1 }), MAX_MESSAGE_SIZE), 17, 'close', /-1/);
  });

  it('never inflates past the declared size (a lying zlib payload is refused)', async () => {
    const bomb = deflateSync(Buffer.alloc(20_000_000));
    const wrapped = compress(inner, COMPRESSOR.zlib, { payload: bomb, uncompressedSize: 100 });
    const err = await rejection(decompressMessage(wrapped, MAX_MESSAGE_SIZE));
    expect(err.disposition).toBe('close');
  });

  it('refuses a payload whose size differs from the declared one', async () => {
    const body = inner.subarray(16);
    await expectRefused(decompressMessage(compress(inner, COMPRESSOR.zlib, { uncompressedSize: body.length + 10 }), MAX_MESSAGE_SIZE), 17, 'close', /declared/);
    await expectRefused(decompressMessage(compress(inner, COMPRESSOR.noop, { uncompressedSize: body.length - 1 }), MAX_MESSAGE_SIZE), 17, 'close', /declared/);
    const smaller = await rejection(decompressMessage(compress(inner, COMPRESSOR.zlib, { uncompressedSize: body.length - 1 }), MAX_MESSAGE_SIZE));
    expect(smaller.disposition).toBe('close');
  });

  it('refuses corrupt zlib data', async () => {
    await expectRefused(
      decompressMessage(compress(inner, COMPRESSOR.zlib, { payload: Buffer.from('not zlib at all') }), MAX_MESSAGE_SIZE),
      147,
      'close',
      /zlib/,
    );
  });

  it('refuses OP_COMPRESSED wrapping OP_COMPRESSED', async () => {
    const twice = compress(compress(inner, COMPRESSOR.noop), COMPRESSOR.noop);
    await expectRefused(decompressMessage(twice, MAX_MESSAGE_SIZE), 17, 'close', /may not wrap/);
    const declared = compress(inner, COMPRESSOR.zlib, { originalOpCode: OpCode.COMPRESSED });
    await expectRefused(decompressMessage(declared, MAX_MESSAGE_SIZE), 17, 'close', /may not wrap/);
  });

  it('refuses a message too short for the OP_COMPRESSED fields', async () => {
    for (let n = 0; n < 9; n++) {
      await expectRefused(decompressMessage(frame(OpCode.COMPRESSED, Buffer.alloc(n)), MAX_MESSAGE_SIZE), 17, 'close', /too short/);
    }
  });
});
