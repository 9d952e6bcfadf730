import { inflate } from 'node:zlib';
import { promisify } from 'node:util';
import { Compressor, HEADER_SIZE, OpCode } from './constants.js';
import { WireError, fatalWireError } from './errors.js';
import { writeHeader } from './header.js';

const inflateAsync = promisify(inflate);

const COMPRESSOR_NAMES: Record<number, string> = {
  [Compressor.NOOP]: 'noop',
  [Compressor.SNAPPY]: 'snappy',
  [Compressor.ZLIB]: 'zlib',
  [Compressor.ZSTD]: 'zstd',
};

/**
 * Unwraps an OP_COMPRESSED message into the message it carries (header rebuilt, ids kept).
 * The proxy never advertises compression; this is for clients that compress anyway. zlib and noop are
 * decoded; the declared size is bounded by `maxMessageSize` before anything is inflated.
 */
export async function decompressMessage(msg: Buffer, maxMessageSize: number): Promise<Buffer> {
  if (msg.length < HEADER_SIZE + 9) throw fatalWireError('OP_COMPRESSED too short');
  const originalOpcode = msg.readInt32LE(HEADER_SIZE);
  const uncompressedSize = msg.readInt32LE(HEADER_SIZE + 4);
  const compressorId = msg[HEADER_SIZE + 8]!;
  const payload = msg.subarray(HEADER_SIZE + 9);
  if (originalOpcode === OpCode.COMPRESSED) throw fatalWireError('OP_COMPRESSED may not wrap OP_COMPRESSED');
  if (uncompressedSize < 0 || uncompressedSize + HEADER_SIZE > maxMessageSize) {
    throw fatalWireError(`OP_COMPRESSED declares ${uncompressedSize} uncompressed bytes, over the limit`);
  }
  let body: Buffer;
  switch (compressorId) {
    case Compressor.NOOP:
      body = payload;
      break;
    case Compressor.ZLIB:
      try {
        body = await inflateAsync(payload, { maxOutputLength: Math.max(uncompressedSize, 1) });
      } catch (err) {
        throw new WireError(`zlib decompression failed: ${(err as Error).message}`, 147, 'ZLibError', 'close');
      }
      break;
    default: {
      const name = COMPRESSOR_NAMES[compressorId] ?? `unknown compressor id ${compressorId}`;
      throw new WireError(
        `compressor ${name} is not supported by mdb-runtime (it advertises no compression; use zlib or none)`,
        2,
        'BadValue',
        'replyAndClose',
      );
    }
  }
  if (body.length !== uncompressedSize) {
    throw fatalWireError(`OP_COMPRESSED declared ${uncompressedSize} bytes but held ${body.length}`);
  }
  const out = Buffer.allocUnsafe(HEADER_SIZE + body.length);
  writeHeader(out, out.length, msg.readInt32LE(4), msg.readInt32LE(8), originalOpcode);
  body.copy(out, HEADER_SIZE);
  return out;
}
