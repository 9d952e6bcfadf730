import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { FramingError, MessageFramer } from '../../src/wire/framer.js';
import { WireError } from '../../src/wire/errors.js';
import { MAX_MESSAGE_SIZE } from '../../src/wire/constants.js';
import { commandMsg, frame, header } from './frames.js';

/** A message of exactly `length` bytes whose payload bytes are recognisable (its request id = `tag`). */
function sized(length: number, tag: number): Buffer {
  const m = Buffer.alloc(length, tag & 0xff);
  header(length, tag, 0, 2013).copy(m);
  return m;
}

function pushAll(framer: MessageFramer, chunks: Buffer[]): Buffer[] {
  const out: Buffer[] = [];
  // Copy each message out: a view may share memory with a chunk the caller reuses.
  for (const c of chunks) for (const m of framer.push(c)) out.push(Buffer.from(m));
  return out;
}

/** Compared as hex: toEqual on Buffers is slow over thousands of cases. */
const hex = (bufs: Buffer[]): string[] => bufs.map((b) => b.toString('hex'));

function expectFatal(fn: () => unknown, pattern: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(WireError);
  const err = caught as WireError;
  expect(err.disposition).toBe('close');
  expect(err.message).toMatch(pattern);
}

describe('MessageFramer', () => {
  const messages = [commandMsg({ ping: 1, $db: 'admin' }), sized(16, 7), commandMsg({ find: 'c', filter: { a: 'x'.repeat(300) }, $db: 'd' })];
  const stream = Buffer.concat(messages);

  it('returns a message that arrives whole as a view of the chunk, without copying', () => {
    const framer = new MessageFramer();
    const chunk = Buffer.from(messages[0]!);
    const [m] = framer.push(chunk);
    expect(m!.buffer).toBe(chunk.buffer);
    expect(m!.equals(messages[0]!)).toBe(true);
    expect(framer.pendingBytes).toBe(0);
  });

  it('returns several messages that arrive in one chunk, in order', () => {
    expect(pushAll(new MessageFramer(), [stream])).toEqual(messages);
  });

  it('reassembles the stream split in two at every byte boundary', () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const framer = new MessageFramer();
      const out = pushAll(framer, [stream.subarray(0, cut), stream.subarray(cut)]);
      expect(hex(out), `cut at ${cut}`).toEqual(hex(messages));
      expect(framer.pendingBytes).toBe(0);
    }
  });

  it('reassembles the stream delivered one byte at a time', () => {
    const framer = new MessageFramer();
    const chunks = [...stream].map((b) => Buffer.from([b]));
    const out: Buffer[] = [];
    chunks.forEach((c, i) => {
      const got = framer.push(c);
      out.push(...got.map((m) => Buffer.from(m)));
      // A message comes out exactly when its last byte arrives.
      const boundaries = messages.reduce<number[]>((acc, m) => [...acc, (acc.at(-1) ?? 0) + m.length], []);
      expect(got.length).toBe(boundaries.includes(i + 1) ? 1 : 0);
    });
    expect(out).toEqual(messages);
  });

  it('reassembles any stream cut into any chunks (property)', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 16, max: 600 }), { minLength: 1, maxLength: 12 }),
        fc.array(fc.nat(), { maxLength: 30 }),
        (lengths, cutSeeds) => {
          const msgs = lengths.map((len, i) => sized(len, i + 1));
          const all = Buffer.concat(msgs);
          const cuts = [...new Set(cutSeeds.map((s) => s % (all.length + 1)))].sort((a, b) => a - b);
          const chunks: Buffer[] = [];
          let prev = 0;
          for (const c of [...cuts, all.length]) {
            chunks.push(all.subarray(prev, c));
            prev = c;
          }
          const framer = new MessageFramer();
          expect(hex(pushAll(framer, chunks))).toEqual(hex(msgs));
          expect(framer.pendingBytes).toBe(0);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('keeps a partial message pending and reports how many bytes it holds', () => {
    const framer = new MessageFramer();
    expect(framer.push(stream.subarray(0, 3))).toEqual([]);
    expect(framer.pendingBytes).toBe(3);
    expect(framer.push(stream.subarray(3, 10))).toEqual([]);
    expect(framer.pendingBytes).toBe(10);
  });

  it('accepts the smallest message: a 16-byte header alone', () => {
    const [m] = new MessageFramer().push(frame(2013, Buffer.alloc(0)));
    expect(m!.length).toBe(16);
  });

  it('refuses lengths below 16 (the header) as a fatal error', () => {
    for (const length of [15, 4, 0, -1, -2147483648]) {
      expectFatal(() => new MessageFramer().push(header(length, 1, 0, 2013)), /outside the allowed range \[16, 48000000\]/);
    }
  });

  it('accepts exactly 48,000,000 bytes and refuses 48,000,001 as soon as the length is known', () => {
    expect(MAX_MESSAGE_SIZE).toBe(48_000_000);
    const framer = new MessageFramer();
    const big = Buffer.alloc(48_000_000);
    header(48_000_000, 1, 0, 2013).copy(big);
    expect(framer.push(big.subarray(0, 1_000_000))).toEqual([]);
    const [m] = framer.push(big.subarray(1_000_000));
    expect(m!.length).toBe(48_000_000);

    // Only the 4 length bytes are needed to refuse: nothing is buffered waiting for 48 MB.
    expectFatal(() => new MessageFramer().push(header(48_000_001, 1, 0, 2013).subarray(0, 4)), /48000001/);
    expectFatal(() => new MessageFramer().push(header(0x7fffffff, 1, 0, 2013)), /2147483647/);
  });

  it('refuses a bad length split across chunks, and one that follows valid messages in a chunk', () => {
    const framer = new MessageFramer();
    const bad = header(10, 1, 0, 2013);
    expect(framer.push(bad.subarray(0, 2))).toEqual([]);
    expectFatal(() => framer.push(bad.subarray(2, 4)), /length 10 /);

    expectFatal(() => new MessageFramer().push(Buffer.concat([messages[0]!, header(100_000_000, 2, 0, 2013)])), /100000000/);
  });

  it('hands over the whole messages that preceded a bad length in the same push', () => {
    const framer = new MessageFramer();
    // The first message completes a pending part; the second arrives whole; then a bad length.
    framer.push(messages[0]!.subarray(0, 5));
    let caught: unknown;
    try {
      framer.push(Buffer.concat([messages[0]!.subarray(5), messages[1]!, header(3, 9, 0, 2013)]));
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(FramingError);
    expect(caught).toBeInstanceOf(WireError);
    expect(hex((caught as FramingError).complete)).toEqual(hex([messages[0]!, messages[1]!]));
    // Nothing before it: nothing handed over.
    try {
      new MessageFramer().push(header(3, 9, 0, 2013));
    } catch (err) {
      expect((err as FramingError).complete).toEqual([]);
    }
  });

  it('honours a configurable smaller maximum', () => {
    const framer = new MessageFramer(1000);
    expect(framer.push(sized(1000, 1)).length).toBe(1);
    expectFatal(() => new MessageFramer(1000).push(sized(1001, 1)), /outside the allowed range \[16, 1000\]/);
    // The maximum can be changed on a live framer (e.g. raised after authentication).
    const live = new MessageFramer(100);
    expectFatal(() => live.push(header(200, 1, 0, 2013)), /\[16, 100\]/);
    const raised = new MessageFramer(100);
    raised.maxMessageSize = 300;
    expect(raised.push(sized(200, 1)).length).toBe(1);
  });
});
