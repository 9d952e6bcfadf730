import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import fc from 'fast-check';
import { Long, deserialize, serialize, type Document } from 'bson';
import { MongoClient } from 'mongodb';
import { connect, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { MessageFramer } from '../../src/wire/framer.js';
import { parseOpMsg } from '../../src/wire/opmsg.js';
import { MsgFlag, OpCode } from '../../src/wire/constants.js';
import { COMPRESSOR, commandMsg, compress, frame, header, opQuery, rawOpMsg, type Section } from '../wire/frames.js';
import { expectProxyServes } from './raw-helpers.js';

/**
 * Thousands of random and mutated frames at a running proxy, each on its own connection followed by a
 * half-close, so the proxy must answer what it can and then close every one of them. Afterwards the
 * proxy must still serve a real driver, hold no connection, leak no upstream connection and have
 * logged no internal error.
 */

const RUNS = Number(process.env.MDB_FUZZ_RUNS ?? 10_000);
const CONCURRENCY = 16;
/** Only turns a hang into a failure; every wait is on the close event. */
const PER_CONNECTION_GUARD_MS = 15_000;
const SEED = Number(process.env.MDB_FUZZ_SEED ?? Math.floor(Math.random() * 0x7fffffff));

let proxy: TestProxy;
const db = uniqueDb('fuzz');

beforeAll(async () => {
  // warn level: one line per refused frame at most, so nothing is trimmed from proxy.logs.
  proxy = await startTestProxy({ logLevel: 'warn' });
});

afterAll(async () => {
  await proxy?.stop();
  // Mutated frames may have written to databases whose name is a few flipped bytes from ours.
  const direct = new MongoClient(inject('upstreamUri'), { serverSelectionTimeoutMS: 10_000 });
  try {
    const { databases } = await direct.db('admin').admin().listDatabases({ nameOnly: true });
    for (const { name } of databases) {
      if (name.length === db.length && [...name].filter((ch, i) => ch !== db[i]).length <= 3) await direct.db(name).dropDatabase();
    }
  } finally {
    await direct.close();
  }
});

// ---------------------------------------------------------------------------------------------------
// Frames

/** Valid messages of every kind the proxy handles; mutations start from these. */
function templates(): Buffer[] {
  const cursorId = Long.fromString('1234567890123');
  const docs = [{ _id: 1, a: 'x' }, { _id: 2, a: { b: [1, 2] } }];
  const ping = commandMsg({ ping: 1, $db: 'admin' });
  const find = commandMsg({ find: 'c', filter: { a: { $gt: 1 } }, batchSize: 2, $db: db });
  const isMaster = opQuery('admin.$cmd', { isMaster: 1, client: { application: { name: 'fuzz' } } });
  return [
    ping,
    commandMsg({ hello: 1, helloOk: true, $db: 'admin' }),
    commandMsg({ ping: 1, $db: 'admin' }, { checksum: true }),
    commandMsg({ ping: 1, $db: 'admin' }, { flags: MsgFlag.MORE_TO_COME }),
    find,
    commandMsg({ find: 'c', filter: {}, $db: db }, { checksum: true, flags: MsgFlag.EXHAUST_ALLOWED }),
    commandMsg({ insert: 'c', $db: db }, { sequences: [{ identifier: 'documents', documents: docs }] }),
    commandMsg({ insert: 'c', ordered: false, writeConcern: { w: 0 }, $db: db }, { flags: MsgFlag.MORE_TO_COME, sequences: [{ identifier: 'documents', documents: docs }] }),
    commandMsg({ update: 'c', $db: db }, { sequences: [{ identifier: 'updates', documents: [{ q: { _id: 1 }, u: { $set: { z: 1 } } }] }] }),
    commandMsg({ count: 'c', query: { a: 'x' }, $db: db }),
    commandMsg({ getMore: cursorId, collection: 'c', $db: db }),
    commandMsg({ killCursors: 'c', cursors: [cursorId], $db: db }),
    commandMsg({ buildInfo: 1, $db: 'admin' }),
    isMaster,
    opQuery('admin.$cmd', { $query: { ismaster: true } }),
    compress(ping, COMPRESSOR.zlib),
    compress(find, COMPRESSOR.noop),
    compress(isMaster, COMPRESSOR.zlib),
    compress(ping, COMPRESSOR.snappy),
  ];
}

const TEMPLATES = templates();
const OPCODES = [OpCode.REPLY, OpCode.UPDATE, OpCode.INSERT, OpCode.QUERY, OpCode.GET_MORE, OpCode.DELETE, OpCode.KILL_CURSORS, OpCode.COMPRESSED, OpCode.MSG, 0, -1, 9999];
const INTERESTING_INT32 = [0, 1, 4, 5, 15, 16, 17, 20, 21, -1, 0x7fffffff, -0x80000000, 48_000_000, 48_000_001, 65_536];

const int32Arb = fc.oneof(fc.constantFrom(...INTERESTING_INT32), fc.integer({ min: -0x80000000, max: 0x7fffffff }));

type Mutation =
  | { kind: 'length'; value: number }
  | { kind: 'lengthDelta'; delta: number }
  | { kind: 'opcode'; value: number }
  | { kind: 'flags'; value: number }
  | { kind: 'flagBit'; bit: number }
  | { kind: 'sectionKind'; at: number; value: number }
  | { kind: 'bitFlip'; at: number; bit: number }
  | { kind: 'byte'; at: number; value: number }
  | { kind: 'int32'; at: number; value: number }
  | { kind: 'truncate'; at: number; fixLength: boolean }
  | { kind: 'extend'; bytes: Uint8Array; fixLength: boolean };

const mutationArb: fc.Arbitrary<Mutation> = fc.oneof(
  fc.record({ kind: fc.constant('length' as const), value: int32Arb }),
  fc.record({ kind: fc.constant('lengthDelta' as const), delta: fc.integer({ min: -8, max: 8 }) }),
  fc.record({ kind: fc.constant('opcode' as const), value: fc.oneof(fc.constantFrom(...OPCODES), int32Arb) }),
  fc.record({ kind: fc.constant('flags' as const), value: fc.oneof(int32Arb, fc.constantFrom(1, 2, 3, 1 << 16, 1 << 2)) }),
  fc.record({ kind: fc.constant('flagBit' as const), bit: fc.integer({ min: 0, max: 31 }) }),
  fc.record({ kind: fc.constant('sectionKind' as const), at: fc.nat(), value: fc.oneof(fc.constantFrom(0, 1, 2, 0xff), fc.integer({ min: 0, max: 255 })) }),
  fc.record({ kind: fc.constant('bitFlip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }),
  fc.record({ kind: fc.constant('byte' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
  fc.record({ kind: fc.constant('int32' as const), at: fc.nat(), value: int32Arb }),
  fc.record({ kind: fc.constant('truncate' as const), at: fc.nat(), fixLength: fc.boolean() }),
  fc.record({ kind: fc.constant('extend' as const), bytes: fc.uint8Array({ minLength: 1, maxLength: 40 }), fixLength: fc.boolean() }),
);

/** Offsets of the section kind bytes of an OP_MSG (walking declared sizes as far as they make sense). */
function sectionKindOffsets(msg: Buffer): number[] {
  const out: number[] = [];
  if (msg.length < 21 || msg.readInt32LE(12) !== OpCode.MSG) return out;
  let p = 20;
  while (p < msg.length - 4 && out.length < 4) {
    out.push(p);
    const size = msg.readInt32LE(p + 1);
    if (size < 5) break;
    p += 1 + size;
  }
  return out;
}

/** Writes an int32 if it fits (earlier mutations may have truncated the message). */
function put32(m: Buffer, at: number, value: number): void {
  if (at + 4 <= m.length) m.writeInt32LE(value | 0, at);
}

function mutate(original: Buffer, mutations: Mutation[]): Buffer {
  let m = Buffer.from(original);
  for (const mu of mutations) {
    if (m.length === 0) break;
    switch (mu.kind) {
      case 'length':
        put32(m, 0, mu.value);
        break;
      case 'lengthDelta':
        if (m.length >= 4) put32(m, 0, m.readInt32LE(0) + mu.delta);
        break;
      case 'opcode':
        put32(m, 12, mu.value);
        break;
      case 'flags':
        put32(m, 16, mu.value);
        break;
      case 'flagBit':
        if (m.length >= 20) put32(m, 16, m.readInt32LE(16) ^ (1 << mu.bit));
        break;
      case 'sectionKind': {
        const offsets = sectionKindOffsets(m);
        if (offsets.length > 0) m[offsets[mu.at % offsets.length]!] = mu.value;
        break;
      }
      case 'bitFlip':
        m[mu.at % m.length]! ^= 1 << mu.bit;
        break;
      case 'byte':
        m[mu.at % m.length] = mu.value;
        break;
      case 'int32':
        if (m.length >= 4) put32(m, mu.at % (m.length - 3), mu.value);
        break;
      case 'truncate':
        m = Buffer.from(m.subarray(0, mu.at % (m.length + 1)));
        if (mu.fixLength) put32(m, 0, m.length);
        break;
      case 'extend':
        m = Buffer.concat([m, mu.bytes]);
        if (mu.fixLength) put32(m, 0, m.length);
        break;
    }
  }
  return m;
}

const mutatedArb = fc
  .tuple(fc.nat(TEMPLATES.length - 1), fc.array(mutationArb, { minLength: 1, maxLength: 3 }))
  .map(([i, mutations]) => mutate(TEMPLATES[i]!, mutations));

/** Random bytes behind a header whose length is right, so they get past the framer. */
const framedRandomArb = fc
  .tuple(fc.oneof(fc.constantFrom(...OPCODES), int32Arb), fc.uint8Array({ maxLength: 120 }), fc.option(fc.constantFrom(0, 1, 2, 0xffff)))
  .map(([opCode, payload, flags]) => {
    const body = Buffer.from(payload);
    if (flags !== null && body.length >= 4) body.writeUInt32LE(flags, 0);
    return frame(opCode, body);
  });

/** An OP_MSG with random sections: kinds, sizes and contents. */
const randomSectionsArb = fc
  .tuple(
    fc.integer({ min: 0, max: 3 }),
    fc.array(fc.tuple(fc.constantFrom(0, 1, 1, 0, 2), fc.uint8Array({ maxLength: 40 }), fc.boolean()), { maxLength: 4 }),
  )
  .map(([flags, sections]) => {
    const parts: Buffer[] = [Buffer.alloc(4)];
    parts[0]!.writeUInt32LE(flags);
    for (const [kind, bytes, sized] of sections) {
      const payload = Buffer.concat([Buffer.alloc(4), Buffer.from(bytes), Buffer.from([0])]);
      if (sized) payload.writeInt32LE(payload.length, 0);
      else payload.set(bytes.subarray(0, 4));
      parts.push(Buffer.from([kind]), payload);
    }
    return frame(OpCode.MSG, Buffer.concat(parts));
  });

/** Command bodies for BSON-level mutations (the message and section framing around them stay right). */
const BODY_TEMPLATES: { body: Document; sequence?: { identifier: string; documents: Document[] } }[] = [
  { body: { insert: 'c', ordered: true, $db: db }, sequence: { identifier: 'documents', documents: [{ _id: 'b1', s: 'str' }] } },
  { body: { find: 'c', filter: { a: { $in: [1, 'x', null] } }, projection: { a: 1 }, limit: 3, $db: db } },
  { body: { update: 'c', ordered: false, $db: db }, sequence: { identifier: 'updates', documents: [{ q: { _id: 'b1' }, u: { $inc: { n: 1 } } }] } },
  { body: { delete: 'c', $db: db }, sequence: { identifier: 'deletes', documents: [{ q: { _id: 'none' }, limit: 1 }] } },
  { body: { count: 'c', query: { a: { $gte: 3 } }, $db: db } },
  { body: { hello: 1, client: { application: { name: 'fuzz' }, driver: { name: 'x', version: '1' } }, $db: 'admin' } },
];

/** A body document mutated at the BSON level: truncated (and re-terminated), bytes and int32s overwritten. */
const bodyMutatedArb = fc
  .tuple(
    fc.nat(BODY_TEMPLATES.length - 1),
    fc.array(
      fc.oneof(
        fc.record({ kind: fc.constant('cut' as const), at: fc.nat() }),
        fc.record({ kind: fc.constant('byte' as const), at: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }),
        fc.record({ kind: fc.constant('int32' as const), at: fc.nat(), value: int32Arb }),
      ),
      { minLength: 1, maxLength: 2 },
    ),
    fc.boolean(),
  )
  .map(([i, mutations, keepSequence]) => {
    const t = BODY_TEMPLATES[i]!;
    let body = Buffer.from(serialize(t.body));
    for (const mu of mutations) {
      if (mu.kind === 'cut') {
        // Cut anywhere after the size, re-terminate and fix the size: values now straddle the end.
        body = Buffer.concat([body.subarray(0, 4 + (mu.at % (body.length - 4))), Buffer.from([0])]);
        body.writeInt32LE(body.length, 0);
      } else if (mu.kind === 'byte') body[4 + (mu.at % (body.length - 4))] = mu.value;
      else if (body.length >= 8) put32(body, 4 + (mu.at % (body.length - 7)), mu.value);
    }
    const sections: Section[] = [{ kind: 0, raw: body }];
    if (t.sequence && keepSequence) sections.push({ kind: 1, identifier: t.sequence.identifier, documents: t.sequence.documents });
    return rawOpMsg(sections);
  });

const fullyRandomArb = fc.uint8Array({ minLength: 0, maxLength: 200 }).map((b) => Buffer.from(b));

const singleFrameArb = fc.oneof(
  { arbitrary: fullyRandomArb, weight: 2 },
  { arbitrary: framedRandomArb, weight: 2 },
  { arbitrary: randomSectionsArb, weight: 2 },
  { arbitrary: mutatedArb, weight: 8 },
  { arbitrary: bodyMutatedArb, weight: 3 },
  { arbitrary: fc.constantFrom(...TEMPLATES), weight: 1 },
);

/** What one connection sends: one or a few frames, cut into 1-3 writes. */
interface FuzzCase {
  frames: Buffer[];
  cuts: number[];
}

const caseArb: fc.Arbitrary<FuzzCase> = fc.record({
  frames: fc.oneof({ arbitrary: fc.tuple(singleFrameArb), weight: 6 }, { arbitrary: fc.array(singleFrameArb, { minLength: 2, maxLength: 3 }), weight: 1 }),
  cuts: fc.array(fc.nat(), { maxLength: 2 }),
});

// ---------------------------------------------------------------------------------------------------
// Running a case

interface Outcome {
  replies: number;
  /** Error codes of the replies (0 for ok). */
  codes: number[];
  /** What went wrong, if anything: a hang, or a reply that is not a well-formed message. */
  problem?: string;
}

/**
 * Replies must be well-formed messages with well-formed BSON. UTF-8 is not checked: documents stored
 * through kind-1 sequences are forwarded as bytes (a server accepts invalid UTF-8 in them too), so a
 * later find may legitimately return what a mutated insert stored.
 */
const REPLY_DECODE = { validation: { utf8: false } } as const;

function checkReply(msg: Buffer): number {
  const opCode = msg.readInt32LE(12);
  let doc: Document;
  if (opCode === OpCode.MSG) {
    const parsed = parseOpMsg(msg);
    if (parsed.flags & MsgFlag.MORE_TO_COME) throw new Error('reply with moreToCome (exhaust was not cleared)');
    doc = deserialize(parsed.body, REPLY_DECODE);
  } else if (opCode === OpCode.REPLY) {
    if (msg.readInt32LE(32) !== 1) throw new Error(`OP_REPLY with ${msg.readInt32LE(32)} documents`);
    doc = deserialize(msg.subarray(36), REPLY_DECODE);
  } else {
    throw new Error(`reply with opcode ${opCode}`);
  }
  if (doc.ok === 1) return 0;
  if (typeof doc.code !== 'number' || typeof doc.errmsg !== 'string') throw new Error(`error reply without code/errmsg: ${JSON.stringify(doc)}`);
  return doc.code;
}

function runCase(port: number, c: FuzzCase): Promise<Outcome> {
  const bytes = Buffer.concat(c.frames);
  const cuts = [...new Set(c.cuts.map((x) => x % (bytes.length + 1)))].sort((a, b) => a - b);
  return new Promise((resolve) => {
    const outcome: Outcome = { replies: 0, codes: [] };
    const framer = new MessageFramer(64 * 1024 * 1024);
    const socket = net.connect({ host: '127.0.0.1', port });
    const guard = setTimeout(() => {
      outcome.problem ??= `the proxy did not close the connection within ${PER_CONNECTION_GUARD_MS} ms`;
      socket.destroy();
    }, PER_CONNECTION_GUARD_MS);
    socket.on('error', () => undefined); // a reset is a close too
    socket.on('data', (chunk: Buffer) => {
      try {
        for (const m of framer.push(chunk)) {
          outcome.replies++;
          outcome.codes.push(checkReply(m));
        }
      } catch (err) {
        outcome.problem ??= `malformed reply: ${(err as Error).message}`;
      }
    });
    socket.on('close', () => {
      clearTimeout(guard);
      resolve(outcome);
    });
    socket.on('connect', () => {
      let prev = 0;
      for (const cut of [...cuts, bytes.length]) {
        if (cut > prev) socket.write(bytes.subarray(prev, cut));
        prev = cut;
      }
      socket.end();
    });
  });
}

async function runAll<T, R>(items: T[], concurrency: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i]!);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return results;
}

const internalErrors = () => proxy.logs.filter((l) => /internal error/i.test(String(l.msg)) || Number(l.level) >= 60);

describe('fuzzing the proxy over raw sockets', () => {
  it(`survives ${RUNS} random and mutated frames, closing every connection (seed ${SEED})`, { timeout: 180_000 }, async () => {
    // Some data, so that mutated finds and getMores have something to read.
    const seedClient = await connect(proxy.uri('playground'));
    await seedClient.db(db).collection<{ _id: number; a: number }>('c').insertMany(Array.from({ length: 20 }, (_, i) => ({ _id: 100 + i, a: i })));
    await seedClient.close();

    const cases = fc.sample(caseArb, { numRuns: RUNS, seed: SEED });
    expect(cases.length).toBe(RUNS);
    const started = Date.now();
    const outcomes = await runAll(cases, CONCURRENCY, (c) => runCase(proxy.port, c));
    const elapsed = Date.now() - started;

    const problems = outcomes
      .map((o, i) => ({ problem: o.problem, frames: cases[i]!.frames.map((f) => f.subarray(0, 200).toString('hex')) }))
      .filter((p) => p.problem !== undefined);
    expect(problems.slice(0, 5), `seed ${SEED}`).toEqual([]);

    const codes = new Map<number, number>();
    for (const o of outcomes) for (const code of o.codes) codes.set(code, (codes.get(code) ?? 0) + 1);
    const answered = outcomes.filter((o) => o.replies > 0).length;
    console.log(
      `fuzz: ${RUNS} connections in ${elapsed} ms (seed ${SEED}); ${answered} got at least one reply; reply codes ${JSON.stringify(
        Object.fromEntries([...codes].sort((a, b) => b[1] - a[1])),
      )}`,
    );
    // The mix must reach past the framer: some frames answered, some ok, some refused with errors.
    expect(answered).toBeGreaterThan(RUNS / 10);
    expect(codes.get(0) ?? 0).toBeGreaterThan(0);
    expect([...codes.keys()].filter((c) => c !== 0).length).toBeGreaterThan(3);

    expect(internalErrors(), `seed ${SEED}`).toEqual([]);
    // Every client connection is gone and no upstream connection is left checked out.
    expect(proxy.runtime.proxy.connectionCount).toBe(0);
    for (const pool of proxy.runtime.upstream.pools.values()) expect([pool.address, pool.inUse, pool.waiting]).toEqual([pool.address, 0, 0]);
  });

  it('still serves a normal driver correctly afterwards', async () => {
    await expectProxyServes(proxy.port);
    const client = await connect(proxy.uri('playground'));
    try {
      const col = client.db(db).collection<{ _id: number; name: string; tags: string[]; n: { v: number } }>('after_fuzz');
      const docs = Array.from({ length: 50 }, (_, i) => ({ _id: i, name: `doc ${i}`, tags: ['a', i % 2 ? 'odd' : 'even'], n: { v: i * 1.5 } }));
      const result = await col.insertMany(docs);
      expect(result.insertedCount).toBe(50);
      expect(await col.find({}).sort({ _id: 1 }).batchSize(7).toArray()).toEqual(docs);
      expect(await col.countDocuments({ tags: 'odd' })).toBe(25);
    } finally {
      await client.close();
    }
    expect(internalErrors()).toEqual([]);
  });

  it('handles a header declaring the maximum length, then a half-close, without buffering forever', async () => {
    // A promise of 48 MB that never comes: the half-close must still end the connection.
    const outcome = await runCase(proxy.port, { frames: [header(48_000_000, 1, 0, OpCode.MSG)], cuts: [] });
    expect(outcome).toEqual({ replies: 0, codes: [] });
  });
});
