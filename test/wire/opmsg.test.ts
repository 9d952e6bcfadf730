import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { deserialize, serialize, type Document } from 'bson';
import { crc32c } from '../../src/wire/crc32c.js';
import { encodeOpMsg, parseOpMsg, readdressOpMsg } from '../../src/wire/opmsg.js';
import { WireError, type WireErrorDisposition } from '../../src/wire/errors.js';
import { MsgFlag, OpCode } from '../../src/wire/constants.js';
import { readHeader } from '../../src/wire/header.js';
import { commandMsg, rawOpMsg, type Section } from './frames.js';

function wireErrorOf(fn: () => unknown): WireError {
  try {
    fn();
  } catch (err) {
    if (err instanceof WireError) return err;
    throw new Error(`expected a WireError, got ${String(err)}`);
  }
  throw new Error('expected a WireError, nothing was thrown');
}

function expectWireError(fn: () => unknown, code: number, disposition: WireErrorDisposition, message?: RegExp): void {
  const err = wireErrorOf(fn);
  expect({ code: err.code, disposition: err.disposition }).toEqual({ code, disposition });
  if (message) expect(err.message).toMatch(message);
}

const docs = (bufs: Buffer[]): Document[] => bufs.map((b) => deserialize(b));

describe('CRC-32C', () => {
  it('matches the standard check value for "123456789"', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  });

  it('is 0 for no bytes and honours a start/end range', () => {
    expect(crc32c(Buffer.alloc(0))).toBe(0);
    const framed = Buffer.from('xx123456789yy');
    expect(crc32c(framed, 2, 11)).toBe(0xe3069283);
  });

  it('matches the RFC 3720 test vectors (32 zero bytes, 32 0xff bytes)', () => {
    expect(crc32c(Buffer.alloc(32, 0))).toBe(0x8a9136aa);
    expect(crc32c(Buffer.alloc(32, 0xff))).toBe(0x62a8ab43);
  });
});

describe('parseOpMsg', () => {
  const body = { insert: 'c', $db: 'd' };
  const a = { _id: 1, x: 'a' };
  const b = { _id: 2, x: 'b' };

  it('parses a body-only message as views of the received bytes', () => {
    const msg = commandMsg({ ping: 1, $db: 'admin' }, { requestId: 77 });
    const parsed = parseOpMsg(msg);
    expect(parsed.requestId).toBe(77);
    expect(parsed.responseTo).toBe(0);
    expect(parsed.flags).toBe(0);
    expect(deserialize(parsed.body)).toEqual({ ping: 1, $db: 'admin' });
    expect(parsed.body.buffer).toBe(msg.buffer);
    expect(parsed.sequences).toEqual([]);
  });

  it.each<[string, Section[]]>([
    ['body first', [{ kind: 0, doc: body }, { kind: 1, identifier: 'documents', documents: [a, b] }]],
    ['sequence first', [{ kind: 1, identifier: 'documents', documents: [a, b] }, { kind: 0, doc: body }]],
  ])('accepts kind-0 and kind-1 sections in any order (%s)', (_name, sections) => {
    const parsed = parseOpMsg(rawOpMsg(sections));
    expect(deserialize(parsed.body)).toEqual(body);
    expect(parsed.sequences.map((s) => s.identifier)).toEqual(['documents']);
    expect(docs(parsed.sequences[0]!.documents)).toEqual([a, b]);
  });

  it('accepts the body between two sequences, and an empty sequence', () => {
    const parsed = parseOpMsg(
      rawOpMsg([
        { kind: 1, identifier: 'ops', documents: [a] },
        { kind: 0, doc: { bulkWrite: 1, $db: 'admin' } },
        { kind: 1, identifier: 'nsInfo', documents: [] },
      ]),
    );
    expect(parsed.sequences.map((s) => [s.identifier, s.documents.length])).toEqual([
      ['ops', 1],
      ['nsInfo', 0],
    ]);
  });

  it('parses any arrangement of one body and up to two sequences (property)', () => {
    const docArb = fc.dictionary(fc.string({ minLength: 1, maxLength: 6 }).filter((k) => !k.includes('\0')), fc.oneof(fc.integer(), fc.string()), {
      maxKeys: 4,
    });
    fc.assert(
      fc.property(
        docArb,
        fc.array(fc.array(docArb, { maxLength: 4 }), { maxLength: 2 }),
        fc.nat(2),
        fc.boolean(),
        (bodyDoc, seqDocs, bodyAt, checksum) => {
          const seqs: Section[] = seqDocs.map((d, i) => ({ kind: 1, identifier: `seq${i}`, documents: d }));
          const sections = [...seqs];
          sections.splice(Math.min(bodyAt, sections.length), 0, { kind: 0, doc: { cmd: 1, ...bodyDoc } });
          const parsed = parseOpMsg(rawOpMsg(sections, { checksum }));
          expect(deserialize(parsed.body)).toEqual(deserialize(serialize({ cmd: 1, ...bodyDoc })));
          expect(parsed.sequences.map((s) => s.identifier)).toEqual(seqDocs.map((_, i) => `seq${i}`));
          parsed.sequences.forEach((s, i) => expect(docs(s.documents)).toEqual(seqDocs[i]!.map((d) => deserialize(serialize(d)))));
        },
      ),
      { numRuns: 200 },
    );
  });

  describe('checksum', () => {
    it('accepts a message whose CRC-32C matches, and excludes the checksum from the sections', () => {
      const msg = commandMsg({ ping: 1, $db: 'admin' }, { checksum: true, sequences: [{ identifier: 'documents', documents: [a] }] });
      expect(msg.readUInt32LE(msg.length - 4)).toBe(crc32c(msg, 0, msg.length - 4));
      const parsed = parseOpMsg(msg);
      expect(parsed.flags & MsgFlag.CHECKSUM_PRESENT).toBe(1);
      expect(deserialize(parsed.body)).toEqual({ ping: 1, $db: 'admin' });
      expect(docs(parsed.sequences[0]!.documents)).toEqual([a]);
    });

    it('refuses a wrong checksum with ChecksumMismatch (288), then close', () => {
      const msg = commandMsg({ ping: 1, $db: 'admin' }, { checksum: true });
      msg.writeUInt32LE((msg.readUInt32LE(msg.length - 4) ^ 1) >>> 0, msg.length - 4);
      expectWireError(() => parseOpMsg(msg), 288, 'replyAndClose', /checksum/);
      const err = wireErrorOf(() => parseOpMsg(msg));
      expect(err.codeName).toBe('ChecksumMismatch');
    });

    it('detects a flipped bit anywhere in the covered bytes', () => {
      const good = commandMsg({ find: 'c', filter: { a: 1 }, $db: 'd' }, { checksum: true });
      for (let i = 0; i < good.length - 4; i++) {
        // Skip the flag byte: flipping the checksum bit there removes the checksum itself.
        if (i === 16) continue;
        const bad = Buffer.from(good);
        bad[i]! ^= 0x10;
        if (i < 4) continue; // a different length is the framer's business
        expect(() => parseOpMsg(bad), `byte ${i}`).toThrow(WireError);
      }
    });

    it('closes when the flag promises a checksum the message is too short to hold', () => {
      const msg = rawOpMsg([], { flags: MsgFlag.CHECKSUM_PRESENT });
      const padded = Buffer.concat([msg, Buffer.alloc(1)]);
      padded.writeInt32LE(padded.length, 0);
      expectWireError(() => parseOpMsg(padded), 17, 'close', /checksum/);
    });
  });

  describe('flags', () => {
    it('accepts moreToCome, exhaustAllowed and unknown optional bits (16-31)', () => {
      for (const flags of [MsgFlag.MORE_TO_COME, MsgFlag.EXHAUST_ALLOWED, 1 << 20, 0x80000000]) {
        expect(parseOpMsg(commandMsg({ ping: 1, $db: 'a' }, { flags })).flags).toBe(flags >>> 0);
      }
    });

    it('refuses every unknown required bit (2-15) with IllegalOpMsgFlag (223), then close', () => {
      for (let bit = 2; bit < 16; bit++) {
        const err = wireErrorOf(() => parseOpMsg(commandMsg({ ping: 1, $db: 'a' }, { flags: 1 << bit })));
        expect([err.code, err.codeName, err.disposition]).toEqual([223, 'IllegalOpMsgFlag', 'replyAndClose']);
      }
    });
  });

  describe('malformed sections', () => {
    it('refuses a second kind-0 section (40430), keeping the connection', () => {
      expectWireError(() => parseOpMsg(rawOpMsg([{ kind: 0, doc: body }, { kind: 0, doc: body }])), 40430, 'reply');
    });

    it('refuses a message without a body (40587)', () => {
      expectWireError(() => parseOpMsg(rawOpMsg([])), 40587, 'reply');
      expectWireError(() => parseOpMsg(rawOpMsg([{ kind: 1, identifier: 'documents', documents: [a] }])), 40587, 'reply');
    });

    it('refuses a duplicate sequence identifier (40431)', () => {
      const msg = rawOpMsg([
        { kind: 0, doc: body },
        { kind: 1, identifier: 'documents', documents: [a] },
        { kind: 1, identifier: 'documents', documents: [b] },
      ]);
      expectWireError(() => parseOpMsg(msg), 40431, 'reply', /documents/);
    });

    it('refuses a field present both in the body and as a sequence (40433)', () => {
      const msg = rawOpMsg([{ kind: 0, doc: { ...body, documents: [a] } }, { kind: 1, identifier: 'documents', documents: [b] }]);
      expectWireError(() => parseOpMsg(msg), 40433, 'reply', /documents/);
    });

    it('compares a sequence identifier with body keys as bytes (40433 even when not valid UTF-8)', () => {
      const name = Buffer.from([0x64, 0xff]);
      const bodyRaw = Buffer.concat([Buffer.from(serialize({ insert: 'c' })).subarray(0, -1), Buffer.from([0x10]), name, Buffer.from([0]), Buffer.alloc(4), Buffer.from([0])]);
      bodyRaw.writeInt32LE(bodyRaw.length, 0);
      const seq = (id: Buffer) => {
        const raw = Buffer.concat([Buffer.alloc(4), id, Buffer.from([0]), Buffer.from(serialize({ a: 1 }))]);
        raw.writeInt32LE(raw.length, 0);
        return { kind: 1, raw };
      };
      expectWireError(() => parseOpMsg(rawOpMsg([{ kind: 0, raw: bodyRaw }, seq(name)])), 40433, 'reply');
      // Another invalid byte: the same text once decoded, but not the same field.
      expect(parseOpMsg(rawOpMsg([{ kind: 0, raw: bodyRaw }, seq(Buffer.from([0x64, 0xfe]))])).sequences).toHaveLength(1);
    });

    it('refuses unknown section kinds (40432)', () => {
      for (const kind of [2, 3, 0x7f, 0xff]) {
        expectWireError(() => parseOpMsg(rawOpMsg([{ kind: 0, doc: body }, { kind, raw: Buffer.alloc(8) }])), 40432, 'reply', new RegExp(`kind ${kind}`));
      }
    });

    it('refuses more than two document sequences', () => {
      const msg = rawOpMsg([
        { kind: 0, doc: body },
        { kind: 1, identifier: 'a', documents: [] },
        { kind: 1, identifier: 'b', documents: [] },
        { kind: 1, identifier: 'c', documents: [] },
      ]);
      expectWireError(() => parseOpMsg(msg), 233, 'replyAndClose');
    });

    it('refuses a body whose declared size does not fit, or lacks its final NUL (InvalidBSON 22)', () => {
      const good = serialize(body);
      const tooBig = Buffer.from(good);
      tooBig.writeInt32LE(good.length + 1, 0);
      const noNul = Buffer.from(good);
      noNul[noNul.length - 1] = 1;
      const tiny = Buffer.from([4, 0, 0, 0]);
      for (const raw of [tooBig, noNul, tiny]) {
        const err = wireErrorOf(() => parseOpMsg(rawOpMsg([{ kind: 0, raw }])));
        expect([err.code, err.codeName, err.disposition]).toEqual([22, 'InvalidBSON', 'reply']);
      }
    });

    it('refuses a sequence with a bad size, an unterminated identifier or a bad document', () => {
      const bodySection: Section = { kind: 0, doc: body };
      const sizes = [0, 4, 1000, -5];
      for (const size of sizes) {
        const raw = Buffer.alloc(12);
        raw.writeInt32LE(size, 0);
        raw.write('ids\0', 4);
        expect(wireErrorOf(() => parseOpMsg(rawOpMsg([bodySection, { kind: 1, raw }]))).code, `size ${size}`).toBe(17);
      }
      // Identifier runs to the end of the section without a NUL.
      const unterminated = Buffer.concat([Buffer.from([8, 0, 0, 0]), Buffer.from('abcd')]);
      expect(wireErrorOf(() => parseOpMsg(rawOpMsg([{ kind: 1, raw: unterminated }, bodySection]))).disposition).toBe('close');
      // A document inside the sequence claims more bytes than the sequence has.
      const doc = Buffer.from(serialize(a));
      doc.writeInt32LE(doc.length + 3, 0);
      const seq = Buffer.concat([Buffer.alloc(4), Buffer.from('documents\0'), doc]);
      seq.writeInt32LE(seq.length, 0);
      expectWireError(() => parseOpMsg(rawOpMsg([bodySection, { kind: 1, raw: seq }])), 22, 'reply', /documents/);
      // Only 1-3 bytes left for a sequence size.
      expect(wireErrorOf(() => parseOpMsg(rawOpMsg([bodySection, { kind: 1, raw: Buffer.from([1, 2]) }]))).code).toBe(17);
    });

    it('closes on a message too short to hold its flags', () => {
      for (let len = 16; len < 20; len++) {
        const msg = rawOpMsg([]).subarray(0, len);
        msg.writeInt32LE(len, 0);
        expectWireError(() => parseOpMsg(msg), 17, 'close', /too short/);
      }
    });

    it('never throws anything but a WireError on truncated or extended messages', () => {
      const good = commandMsg(
        { insert: 'c', ordered: true, $db: 'd' },
        { checksum: false, sequences: [{ identifier: 'documents', documents: [a, b] }] },
      );
      for (let len = 0; len <= good.length + 8; len++) {
        const m = Buffer.alloc(len);
        good.copy(m, 0, 0, Math.min(len, good.length));
        if (len >= 4) m.writeInt32LE(len, 0);
        try {
          parseOpMsg(m);
        } catch (err) {
          expect(err, `length ${len}`).toBeInstanceOf(WireError);
        }
      }
    });
  });
});

describe('encodeOpMsg', () => {
  it('round-trips through parseOpMsg with the sequences before the body', () => {
    const body = serialize({ insert: 'c', $db: 'd' });
    const d1 = Buffer.from(serialize({ _id: 1 }));
    const d2 = Buffer.from(serialize({ _id: 2, s: 'é' }));
    const msg = encodeOpMsg(5, 9, MsgFlag.MORE_TO_COME, body, [{ identifier: 'documents', documents: [d1, d2] }]);
    expect(readHeader(msg)).toEqual({ messageLength: msg.length, requestId: 5, responseTo: 9, opCode: OpCode.MSG });
    expect(msg[20]).toBe(1);
    const parsed = parseOpMsg(msg);
    expect(parsed.flags).toBe(MsgFlag.MORE_TO_COME);
    expect(Buffer.from(parsed.body).equals(Buffer.from(body))).toBe(true);
    expect(parsed.sequences[0]!.documents.map((d) => d.toString('hex'))).toEqual([d1.toString('hex'), d2.toString('hex')]);
  });

  it('never writes a checksum: the flag is dropped', () => {
    const msg = encodeOpMsg(1, 0, MsgFlag.CHECKSUM_PRESENT | MsgFlag.EXHAUST_ALLOWED, serialize({ ok: 1 }));
    expect(msg.readUInt32LE(16)).toBe(MsgFlag.EXHAUST_ALLOWED);
    expect(deserialize(parseOpMsg(msg).body)).toEqual({ ok: 1 });
  });
});

describe('readdressOpMsg', () => {
  it('drops the checksum, clears exhaustAllowed, keeps moreToCome and rewrites the ids in place', () => {
    const msg = commandMsg(
      { getMore: 1, collection: 'c', $db: 'd' },
      { requestId: 10, checksum: true, flags: MsgFlag.EXHAUST_ALLOWED | MsgFlag.MORE_TO_COME },
    );
    const originalLength = msg.length;
    const out = readdressOpMsg(msg, 4242, 17);
    expect(out.buffer).toBe(msg.buffer);
    expect(readHeader(out)).toEqual({ messageLength: originalLength - 4, requestId: 4242, responseTo: 17, opCode: OpCode.MSG });
    expect(out.length).toBe(originalLength - 4);
    expect(out.readUInt32LE(16)).toBe(MsgFlag.MORE_TO_COME);
    const parsed = parseOpMsg(out);
    expect(deserialize(parsed.body)).toEqual({ getMore: 1, collection: 'c', $db: 'd' });
  });

  it('keeps the length of a message without checksum and clears exhaustAllowed', () => {
    const msg = commandMsg({ ping: 1, $db: 'a' }, { flags: MsgFlag.EXHAUST_ALLOWED | (1 << 20) });
    const out = readdressOpMsg(Buffer.from(msg), 1, 0);
    expect(out.length).toBe(msg.length);
    expect(out.readUInt32LE(16)).toBe(1 << 20);
    expect(out.subarray(16).equals(Buffer.concat([Buffer.from([0, 0, 0x10, 0]), msg.subarray(20)]))).toBe(true);
  });
});
