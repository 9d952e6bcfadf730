import { describe, expect, it } from 'vitest';
import { deserialize, serialize } from 'bson';
import { encodeOpReply, parseOpQuery } from '../../src/wire/opquery.js';
import { WireError } from '../../src/wire/errors.js';
import { OpCode, ReplyFlag } from '../../src/wire/constants.js';
import { readHeader } from '../../src/wire/header.js';
import { frame, opQuery } from './frames.js';

function thrown(fn: () => unknown): unknown {
  try {
    fn();
  } catch (err) {
    return err;
  }
  return undefined;
}

describe('parseOpQuery', () => {
  it('parses the legacy handshake on admin.$cmd', () => {
    const msg = opQuery('admin.$cmd', { isMaster: 1, client: { driver: { name: 'x' } } }, { requestId: 31, flags: 4, numberToSkip: 0, numberToReturn: -1 });
    const q = parseOpQuery(msg);
    expect(q).toMatchObject({ requestId: 31, flags: 4, fullCollectionName: 'admin.$cmd', numberToSkip: 0, numberToReturn: -1 });
    expect(deserialize(q.query)).toEqual({ isMaster: 1, client: { driver: { name: 'x' } } });
    expect(q.query.buffer).toBe(msg.buffer);
  });

  it('ignores a returnFieldsSelector after the query', () => {
    const msg = opQuery('db.coll', { $query: { a: 1 } });
    const withSelector = Buffer.concat([msg, Buffer.from(serialize({ a: 1 }))]);
    withSelector.writeInt32LE(withSelector.length, 0);
    expect(deserialize(parseOpQuery(withSelector).query)).toEqual({ $query: { a: 1 } });
  });

  it('closes on a message too short, an unterminated collection name or missing counts', () => {
    const tooShort = frame(OpCode.QUERY, Buffer.alloc(10));
    const unterminated = frame(OpCode.QUERY, Buffer.concat([Buffer.alloc(4), Buffer.from('admin.$cmd'.padEnd(30, 'x'))]));
    const noCounts = frame(OpCode.QUERY, Buffer.concat([Buffer.alloc(4), Buffer.from('a'.repeat(16) + '\0'), Buffer.alloc(2)]));
    for (const msg of [tooShort, unterminated, noCounts]) {
      const err = thrown(() => parseOpQuery(msg));
      expect(err).toBeInstanceOf(WireError);
      expect((err as WireError).disposition).toBe('close');
    }
  });

  it('answers InvalidBSON (22) for a query document that does not fit', () => {
    const msg = opQuery('admin.$cmd', { isMaster: 1 });
    msg.writeInt32LE(1000, msg.length - serialize({ isMaster: 1 }).length);
    const err = thrown(() => parseOpQuery(msg)) as WireError;
    expect([err.code, err.disposition]).toEqual([22, 'reply']);
  });

  it('never throws anything but a WireError for any truncation', () => {
    const good = opQuery('admin.$cmd', { isMaster: 1, helloOk: true });
    for (let len = 16; len < good.length; len++) {
      const m = Buffer.from(good.subarray(0, len));
      m.writeInt32LE(len, 0);
      expect(thrown(() => parseOpQuery(m)), `length ${len}`).toBeInstanceOf(WireError);
    }
  });
});

describe('encodeOpReply', () => {
  it('writes the OP_REPLY layout drivers read for the legacy handshake', () => {
    const d1 = serialize({ ismaster: true, ok: 1 });
    const d2 = serialize({ second: 1 });
    const msg = encodeOpReply(7, 31, [d1, d2]);
    expect(readHeader(msg)).toEqual({ messageLength: msg.length, requestId: 7, responseTo: 31, opCode: OpCode.REPLY });
    expect(msg.readInt32LE(16)).toBe(ReplyFlag.AWAIT_CAPABLE);
    expect(msg.readBigInt64LE(20)).toBe(0n); // cursorId
    expect(msg.readInt32LE(28)).toBe(0); // startingFrom
    expect(msg.readInt32LE(32)).toBe(2); // numberReturned
    expect(deserialize(msg.subarray(36, 36 + d1.length))).toEqual({ ismaster: true, ok: 1 });
    expect(deserialize(msg.subarray(36 + d1.length))).toEqual({ second: 1 });
    expect(msg.length).toBe(36 + d1.length + d2.length);
  });

  it('encodes an empty reply', () => {
    const msg = encodeOpReply(1, 2, []);
    expect(msg.length).toBe(36);
    expect(msg.readInt32LE(32)).toBe(0);
  });
});
