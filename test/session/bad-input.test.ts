import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { Long, serialize, type Document } from 'bson';
import type { MongoClient } from 'mongodb';
import { connect, runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { expectNothingUnderLogicalNames, readPhysical, sandboxOf } from '../helpers/physical.js';
import { RawClient } from '../../src/testing/wire-client.js';
import { MsgFlag, OpCode } from '../../src/wire/constants.js';
import { BsonType, findElement } from '../../src/wire/bson-bytes.js';
import { parseOpMsg } from '../../src/wire/opmsg.js';
import { COMPRESSOR, commandMsg, compress, frame, freshRequestId, header, opQuery, rawOpMsg, requestIdOf } from '../wire/frames.js';
import {
  decodeReply,
  expectClosedWithoutReply,
  expectErrorReply,
  expectProxyServes,
  expectUsable,
  nextDecoded,
} from './raw-helpers.js';

/**
 * One test per class of malformed input, against the real proxy (and upstream) over raw sockets: the
 * expected error reply or close, and after each one the proxy still serves a fresh client.
 */

let proxy: TestProxy;
/** A client straight to the upstream, to see what the proxy stored. */
let direct: MongoClient;
const db = uniqueDb('bad_input');
/** The proxy's own physical database: no other suite's playground collections (e.g. 'unacked') mix in. */
const physical = uniqueDb('bad_input_physical');
const clients: RawClient[] = [];

/** A raw connection acting as the playground app (selected by appName in the handshake). */
/** The handshake's `msg`: a mongos's before a replica set or a cluster, none before a standalone upstream. */
const HELLO_MSG = inject('upstreamIsStandalone') ? undefined : 'isdbgrid';

async function open(): Promise<RawClient> {
  const c = await RawClient.connect(proxy.port);
  clients.push(c);
  const hello = await c.command({ hello: 1, client: { application: { name: 'playground' } }, $db: 'admin' });
  expect(hello.ok).toBe(1);
  return c;
}

/** Sends one message and returns the decoded reply, checking it answers that message. */
async function exchange(c: RawClient, msg: Buffer): Promise<Document> {
  c.send(msg);
  const reply = await nextDecoded(c);
  expect(reply.responseTo).toBe(requestIdOf(msg));
  return reply.doc;
}

beforeAll(async () => {
  proxy = await startTestProxy({ runtimeYaml: runtimeYamlWithDatabase(physical) });
  direct = await connect(inject('upstreamUri'));
});

afterEach(async () => {
  for (const c of clients.splice(0)) c.destroy();
  await expectProxyServes(proxy.port);
});

afterAll(async () => {
  // Apps may not drop databases (Unauthorized): the suite's physical database is dropped directly.
  await direct?.db(physical).dropDatabase().catch(() => undefined);
  await direct?.close();
  expect(proxy.logs.filter((l) => /internal error/i.test(String(l.msg)))).toEqual([]);
  await proxy.stop();
});

describe('frame length', () => {
  it.each([15, 0, 4, -1, -2147483648])('closes the connection on a length of %i', async (length) => {
    const c = await open();
    c.send(Buffer.concat([header(length, 1, 0, OpCode.MSG), Buffer.alloc(32)]));
    await expectClosedWithoutReply(c);
  });

  it.each([48_000_001, 0x7fffffff])('closes on a length of %i as soon as the length arrives', async (length) => {
    const c = await open();
    // Only the header is sent: the proxy must not wait for 48 MB before refusing.
    c.send(header(length, 1, 0, OpCode.MSG));
    await expectClosedWithoutReply(c);
  });

  it('closes on a frame of exactly 16 bytes (an OP_MSG without flags)', async () => {
    const c = await open();
    c.send(frame(OpCode.MSG, Buffer.alloc(0)));
    await expectClosedWithoutReply(c);
  });
});

describe('opcodes', () => {
  it.each([
    ['OP_INSERT', OpCode.INSERT],
    ['OP_GET_MORE', OpCode.GET_MORE],
    ['OP_UPDATE', OpCode.UPDATE],
    ['OP_DELETE', OpCode.DELETE],
    ['OP_KILL_CURSORS', OpCode.KILL_CURSORS],
    ['OP_REPLY (from a client)', OpCode.REPLY],
    ['unknown 9999', 9999],
    ['negative -1', -1],
  ])('closes the connection on %s', async (_name, opCode) => {
    const c = await open();
    c.send(frame(opCode, Buffer.concat([Buffer.alloc(4), Buffer.from('db.c\0'), Buffer.alloc(8), serialize({ a: 1 })])));
    await expectClosedWithoutReply(c);
  });
});

describe('OP_MSG sections', () => {
  it('answers an unknown section kind with 40432 and keeps the connection', async () => {
    const c = await open();
    const doc = await exchange(c, rawOpMsg([{ kind: 0, doc: { ping: 1, $db: 'admin' } }, { kind: 2, raw: Buffer.alloc(6) }]));
    expectErrorReply(doc, 40432);
    await expectUsable(c);
  });

  it('answers a second kind-0 section with 40430 and keeps the connection', async () => {
    const c = await open();
    const doc = await exchange(
      c,
      rawOpMsg([
        { kind: 0, doc: { ping: 1, $db: 'admin' } },
        { kind: 0, doc: { ping: 1, $db: 'admin' } },
      ]),
    );
    expectErrorReply(doc, 40430);
    await expectUsable(c);
  });

  it('answers a message without a body with 40587 (flags only, or sequences only)', async () => {
    const c = await open();
    expectErrorReply(await exchange(c, rawOpMsg([])), 40587);
    expectErrorReply(await exchange(c, rawOpMsg([{ kind: 1, identifier: 'documents', documents: [{ a: 1 }] }])), 40587);
    await expectUsable(c);
  });

  it('answers a duplicate sequence identifier with 40431', async () => {
    const c = await open();
    const doc = await exchange(
      c,
      rawOpMsg([
        { kind: 0, doc: { insert: 'c', $db: db } },
        { kind: 1, identifier: 'documents', documents: [{ a: 1 }] },
        { kind: 1, identifier: 'documents', documents: [{ a: 2 }] },
      ]),
    );
    expectErrorReply(doc, 40431);
    await expectUsable(c);
  });

  it('answers a field both in the body and in a sequence with 40433', async () => {
    const c = await open();
    const doc = await exchange(
      c,
      rawOpMsg([
        { kind: 0, doc: { insert: 'c', documents: [{ a: 1 }], $db: db } },
        { kind: 1, identifier: 'documents', documents: [{ a: 2 }] },
      ]),
    );
    expectErrorReply(doc, 40433);
    await expectUsable(c);
  });

  it('closes on a sequence whose size does not fit the message', async () => {
    const c = await open();
    const seq = Buffer.concat([Buffer.from([200, 0, 0, 0]), Buffer.from('documents\0')]);
    const doc = await exchange(c, rawOpMsg([{ kind: 0, doc: { insert: 'c', $db: db } }, { kind: 1, raw: seq }]));
    expectErrorReply(doc, 17, 'ProtocolError');
    await expectClosedWithoutReply(c);
  });
});

describe('OP_MSG checksum and flags', () => {
  it('answers a checksum mismatch with ChecksumMismatch (288), then closes', async () => {
    const c = await open();
    const doc = await exchange(c, commandMsg({ ping: 1, $db: 'admin' }, { checksum: 0x12345678 }));
    expectErrorReply(doc, 288, 'ChecksumMismatch');
    await expectClosedWithoutReply(c);
  });

  it('accepts a correct checksum, locally and on a forwarded insert with a sequence', async () => {
    const c = await open();
    expect(await exchange(c, commandMsg({ ping: 1, $db: 'admin' }, { checksum: true }))).toEqual({ ok: 1 });
    const inserted = await exchange(
      c,
      commandMsg({ insert: 'checksummed', $db: db }, { checksum: true, sequences: [{ identifier: 'documents', documents: [{ _id: 1 }, { _id: 2 }] }] }),
    );
    expect(inserted).toMatchObject({ ok: 1, n: 2 });
    const found = await exchange(c, commandMsg({ find: 'checksummed', filter: {}, sort: { _id: 1 }, $db: db }, { checksum: true }));
    expect((found.cursor as Document).firstBatch).toEqual([{ _id: 1 }, { _id: 2 }]);
  });

  it.each([1 << 2, 1 << 8, 1 << 15])('answers the illegal required flag value %i with IllegalOpMsgFlag (223), then closes', async (flag) => {
    const c = await open();
    const doc = await exchange(c, commandMsg({ ping: 1, $db: 'admin' }, { flags: flag }));
    expectErrorReply(doc, 223, 'IllegalOpMsgFlag');
    await expectClosedWithoutReply(c);
  });

  it('ignores unknown optional flag bits (16-31)', async () => {
    const c = await open();
    expect(await exchange(c, commandMsg({ ping: 1, $db: 'admin' }, { flags: (1 << 20) | (1 << 31) }))).toEqual({ ok: 1 });
  });
});

describe('OP_MSG body', () => {
  it('answers a body whose size does not fit with InvalidBSON (22) and keeps the connection', async () => {
    const c = await open();
    const raw = Buffer.from(serialize({ ping: 1, $db: 'admin' }));
    raw.writeInt32LE(raw.length + 100, 0);
    expectErrorReply(await exchange(c, rawOpMsg([{ kind: 0, raw }])), 22, 'InvalidBSON');
    await expectUsable(c);
  });

  it('answers a body with bad contents (unknown element type) with InvalidBSON (22)', async () => {
    const c = await open();
    const raw = Buffer.from(serialize({ ping: 1, $db: 'admin', x: 1 }));
    raw[raw.indexOf(Buffer.from('x\0')) - 1] = 0x42;
    expectErrorReply(await exchange(c, rawOpMsg([{ kind: 0, raw }])), 22, 'InvalidBSON');
    // The same with a sequence, so the byte walker meets the bad element before the decoder does.
    const withSeq = await exchange(c, rawOpMsg([{ kind: 0, raw }, { kind: 1, identifier: 'documents', documents: [{ a: 1 }] }]));
    expectErrorReply(withSeq, 22, 'InvalidBSON');
    await expectUsable(c);
  });

  it('answers a string whose length runs past the body with InvalidBSON (22)', async () => {
    const c = await open();
    const raw = Buffer.from(serialize({ insert: 'c', $db: db }));
    raw.writeInt32LE(1000, raw.indexOf(Buffer.from('insert\0')) + 7);
    expectErrorReply(await exchange(c, rawOpMsg([{ kind: 0, raw }, { kind: 1, identifier: 'documents', documents: [{ a: 1 }] }])), 22, 'InvalidBSON');
    expectErrorReply(await exchange(c, rawOpMsg([{ kind: 0, raw }])), 22, 'InvalidBSON');
    await expectUsable(c);
  });

  it('answers a length prefix cut by the end of the body with InvalidBSON (22), not an internal error', async () => {
    const c = await open();
    const good = Buffer.from(serialize({ insert: 'c', $db: db }));
    // A last element of type string whose 4-byte length would straddle the body's final NUL.
    const elements = Buffer.concat([good.subarray(4, good.length - 1), Buffer.from([0x02, 0x7a, 0x00, 0x01, 0x00])]);
    const raw = Buffer.concat([Buffer.alloc(4), elements, Buffer.from([0])]);
    raw.writeInt32LE(raw.length, 0);
    const doc = await exchange(c, rawOpMsg([{ kind: 0, raw }, { kind: 1, identifier: 'documents', documents: [{ a: 1 }] }]));
    expectErrorReply(doc, 22, 'InvalidBSON');
    await expectUsable(c);
    expect(proxy.logs.filter((l) => /internal error/i.test(String(l.msg)))).toEqual([]);
  });

  it("answers an unknown command with CommandNotFound (59): \"no such command: 'x'\"", async () => {
    const c = await open();
    const doc = await exchange(c, commandMsg({ x: 1, $db: 'admin' }));
    expect(doc).toEqual({ ok: 0, errmsg: "no such command: 'x'", code: 59, codeName: 'CommandNotFound' });
    // Command names are case-sensitive.
    expectErrorReply(await exchange(c, commandMsg({ PING: 1, $db: 'admin' })), 59, 'CommandNotFound');
    expectErrorReply(await exchange(c, commandMsg({})), 59, 'CommandNotFound');
    await expectUsable(c);
  });

  it('answers a command without $db with 40571', async () => {
    const c = await open();
    expectErrorReply(await exchange(c, commandMsg({ ping: 1 })), 40571);
    expectErrorReply(await exchange(c, commandMsg({ find: 'c', $db: '' })), 40571);
    expectErrorReply(await exchange(c, commandMsg({ find: 'c', $db: 5 })), 40571);
    await expectUsable(c);
  });
});

describe('moreToCome and exhaustAllowed', () => {
  it('sends no reply to a moreToCome request, and the next command on the connection works', async () => {
    const c = await open();
    c.send(commandMsg({ ping: 1, $db: 'admin' }, { flags: MsgFlag.MORE_TO_COME }));
    const ping = commandMsg({ ping: 1, $db: 'admin' });
    c.send(ping);
    const reply = await nextDecoded(c);
    expect(reply.responseTo).toBe(requestIdOf(ping));
    expect(reply.doc).toEqual({ ok: 1 });
  });

  it('forwards a moreToCome insert without a reply; a find on the same connection sees it', async () => {
    const c = await open();
    c.send(
      commandMsg(
        { insert: 'unacked', writeConcern: { w: 0 }, $db: db },
        { flags: MsgFlag.MORE_TO_COME, sequences: [{ identifier: 'documents', documents: [{ _id: 'w0' }] }] },
      ),
    );
    const find = commandMsg({ find: 'unacked', filter: {}, $db: db });
    const found = await exchange(c, find);
    expect((found.cursor as Document).firstBatch).toEqual([{ _id: 'w0' }]);
    // Stored once, in the app's physical collection and tagged, nothing under the logical name.
    const sandbox = sandboxOf(proxy, 'playground');
    expect(await readPhysical(direct, sandbox, 'unacked')).toEqual([{ _id: 'w0' }]);
    await expectNothingUnderLogicalNames(direct, sandbox, db, ['unacked']);
  });

  it('sends no reply to a malformed moreToCome request (error replies are suppressed too)', async () => {
    const c = await open();
    c.send(commandMsg({ nosuch: 1, $db: 'admin' }, { flags: MsgFlag.MORE_TO_COME }));
    const ping = commandMsg({ ping: 1, $db: 'admin' });
    expect(await exchange(c, ping)).toEqual({ ok: 1 });
  });

  it('clears exhaustAllowed: a getMore with it gets exactly one reply, without moreToCome', async () => {
    const c = await open();
    const docs = Array.from({ length: 6 }, (_, i) => ({ _id: i }));
    expect(await exchange(c, commandMsg({ insert: 'exhaust', documents: docs, $db: db }))).toMatchObject({ ok: 1, n: 6 });
    const first = await exchange(c, commandMsg({ find: 'exhaust', filter: {}, sort: { _id: 1 }, batchSize: 1, $db: db }));
    const id = (first.cursor as Document).id as Long;
    expect(Long.isLong(id) && !id.isZero()).toBe(true);

    const getMore = commandMsg({ getMore: id, collection: 'exhaust', batchSize: 2, $db: db }, { flags: MsgFlag.EXHAUST_ALLOWED });
    c.send(getMore);
    const reply = await nextDecoded(c);
    expect(reply.responseTo).toBe(requestIdOf(getMore));
    expect(reply.flags & MsgFlag.MORE_TO_COME).toBe(0);
    expect((reply.doc.cursor as Document).nextBatch).toEqual([{ _id: 1 }, { _id: 2 }]);
    // Nothing else streams in: the next message on the connection answers the next request.
    const ping = commandMsg({ ping: 1, $db: 'admin' });
    c.send(ping);
    const next = await nextDecoded(c);
    expect(next.responseTo).toBe(requestIdOf(ping));
    expect(next.doc).toEqual({ ok: 1 });
    await exchange(c, commandMsg({ killCursors: 'exhaust', cursors: [id], $db: db }));
  });
});

describe("the proxy's own replies use the server's types", () => {
  it.each<[string, Document]>([
    ['ping', { ping: 1, $db: 'admin' }],
    ['hello', { hello: 1, $db: 'admin' }],
    ['whatsmyuri', { whatsmyuri: 1, $db: 'admin' }],
    ['an error (no such command)', { noSuchCommand: 1, $db: 'admin' }],
  ])('%s: ok is a double, as a server sends it', async (_what, cmd) => {
    const c = await open();
    c.send(commandMsg(cmd));
    const body = parseOpMsg(await c.nextMessage()).body;
    const ok = findElement(body, 0, 'ok');
    expect(ok?.type).toBe(BsonType.DOUBLE);
    c.destroy();
  });
});

describe('OP_QUERY', () => {
  it.each(['isMaster', 'ismaster', 'hello'])('answers %s on admin.$cmd with an OP_REPLY as a mongos', async (name) => {
    const c = await open();
    const q = opQuery('admin.$cmd', { [name]: 1, helloOk: true, client: { driver: { name: 'raw', version: '0' } } });
    c.send(q);
    const reply = await nextDecoded(c);
    expect(reply.opCode).toBe(OpCode.REPLY);
    expect(reply.responseTo).toBe(requestIdOf(q));
    expect(reply.doc).toMatchObject({ [name === 'hello' ? 'isWritablePrimary' : 'ismaster']: true, helloOk: true, ok: 1 });
    expect(reply.doc.msg).toBe(HELLO_MSG);
    expect(reply.doc.topologyVersion).toBeUndefined();
    expect(reply.doc.compression).toBeUndefined();
    await expectUsable(c);
  });

  it('answers a $query-wrapped isMaster too', async () => {
    const c = await open();
    const reply = decodeReply(await (c.send(opQuery('admin.$cmd', { $query: { isMaster: 1 } })), c.nextMessage()));
    expect(reply.opCode).toBe(OpCode.REPLY);
    expect(reply.doc).toMatchObject({ ismaster: true });
    expect(reply.doc.msg).toBe(HELLO_MSG);
  });

  it.each<[string, string, Document]>([
    ['isMaster on another namespace', 'test.$cmd', { isMaster: 1 }],
    ['a query on a collection', `${db}.coll`, { a: 1 }],
    ['another command on admin.$cmd', 'admin.$cmd', { ping: 1 }],
    ['buildInfo on admin.$cmd', 'admin.$cmd', { buildInfo: 1 }],
    ['a find command on admin.$cmd', 'admin.$cmd', { find: 'c' }],
  ])('answers %s with OP_REPLY error 352', async (_name, ns, query) => {
    const c = await open();
    const q = opQuery(ns, query);
    c.send(q);
    const reply = await nextDecoded(c);
    expect(reply.opCode).toBe(OpCode.REPLY);
    expect(reply.responseTo).toBe(requestIdOf(q));
    expectErrorReply(reply.doc, 352, 'UnsupportedOpQueryCommand');
    await expectUsable(c);
  });

  it('checks the nesting depth of an OP_QUERY handshake as of any command: an error reply, not a crash', async () => {
    let deep: Document = { leaf: 1 };
    for (let i = 0; i < 250; i++) deep = { d: deep };
    const c = await open();
    const q = opQuery('admin.$cmd', { isMaster: 1, client: { application: { name: 'x' } }, deep });
    c.send(q);
    const reply = await nextDecoded(c);
    expect(reply.opCode).toBe(OpCode.REPLY);
    expect(reply.responseTo).toBe(requestIdOf(q));
    expectErrorReply(reply.doc, 15, 'Overflow');
    await expectUsable(c);
  });

  it('closes on an OP_QUERY too short to parse', async () => {
    const c = await open();
    c.send(frame(OpCode.QUERY, Buffer.from('admin.$cmd')));
    await expectClosedWithoutReply(c);
  });
});

describe('OP_COMPRESSED', () => {
  it.each([
    ['zlib', COMPRESSOR.zlib],
    ['noop', COMPRESSOR.noop],
  ])('answers a %s-compressed ping and find normally', async (_name, id) => {
    const c = await open();
    expect(await exchange(c, compress(commandMsg({ ping: 1, $db: 'admin' }), id))).toEqual({ ok: 1 });
    await exchange(c, commandMsg({ insert: 'compressed', documents: [{ _id: `z${id}` }], $db: db }));
    const found = await exchange(c, compress(commandMsg({ find: 'compressed', filter: { _id: `z${id}` }, $db: db }), id));
    expect((found.cursor as Document).firstBatch).toEqual([{ _id: `z${id}` }]);
  });

  it('answers a zlib-compressed legacy isMaster with an OP_REPLY', async () => {
    const c = await open();
    c.send(compress(opQuery('admin.$cmd', { isMaster: 1 }), COMPRESSOR.zlib));
    const reply = await nextDecoded(c);
    expect(reply.opCode).toBe(OpCode.REPLY);
    expect(reply.doc.msg).toBe(HELLO_MSG);
  });

  it.each([
    ['snappy', COMPRESSOR.snappy],
    ['zstd', COMPRESSOR.zstd],
  ])('answers %s with BadValue, then closes', async (name, id) => {
    const c = await open();
    const doc = await exchange(c, compress(commandMsg({ ping: 1, $db: 'admin' }), id));
    expectErrorReply(doc, 2, 'BadValue');
    expect(doc.errmsg).toContain(name);
    await expectClosedWithoutReply(c);
  });

  it('closes on nested compression, an oversized declared size and corrupt zlib data', async () => {
    const ping = commandMsg({ ping: 1, $db: 'admin' });
    for (const bad of [
      compress(compress(ping, COMPRESSOR.noop), COMPRESSOR.zlib),
      compress(ping, COMPRESSOR.zlib, { uncompressedSize: 48_000_000 }),
      compress(ping, COMPRESSOR.zlib, { payload: Buffer.from('definitely not zlib') }),
    ]) {
      const c = await open();
      c.send(bad);
      await expectClosedWithoutReply(c);
    }
  });

  it('applies OP_MSG rules to the decompressed message (illegal flag → 223, then close)', async () => {
    const c = await open();
    const doc = await exchange(c, compress(commandMsg({ ping: 1, $db: 'admin' }, { flags: 1 << 3 }), COMPRESSOR.zlib));
    expectErrorReply(doc, 223, 'IllegalOpMsgFlag');
    await expectClosedWithoutReply(c);
  });
});

describe('stream handling', () => {
  it('answers several pipelined messages sent in one write, in order', async () => {
    const c = await open();
    const msgs = [
      commandMsg({ ping: 1, $db: 'admin' }),
      commandMsg({ insert: 'pipelined', documents: [{ _id: 1 }, { _id: 2 }], $db: db }),
      commandMsg({ nosuch: 1, $db: 'admin' }),
      commandMsg({ count: 'pipelined', $db: db }),
      opQuery('admin.$cmd', { isMaster: 1 }),
      compress(commandMsg({ find: 'pipelined', filter: {}, sort: { _id: -1 }, $db: db }), COMPRESSOR.zlib),
      commandMsg({ ping: 1, $db: 'admin' }),
    ];
    c.send(Buffer.concat(msgs));
    const replies = [];
    for (let i = 0; i < msgs.length; i++) replies.push(await nextDecoded(c));
    expect(replies.map((r) => r.responseTo)).toEqual(msgs.map(requestIdOf));
    expect(replies[0]!.doc).toEqual({ ok: 1 });
    expect(replies[1]!.doc).toMatchObject({ ok: 1, n: 2 });
    expectErrorReply(replies[2]!.doc, 59);
    expect(replies[3]!.doc).toMatchObject({ ok: 1, n: 2 });
    expect(replies[4]!.opCode).toBe(OpCode.REPLY);
    expect((replies[5]!.doc.cursor as Document).firstBatch).toEqual([{ _id: 2 }, { _id: 1 }]);
    expect(replies[6]!.doc).toEqual({ ok: 1 });
  });

  it('answers the whole messages before a bad length in the same write, then closes', async () => {
    const c = await open();
    const ping = commandMsg({ ping: 1, $db: 'admin' });
    const count = commandMsg({ count: 'pipelined', $db: db });
    c.send(Buffer.concat([ping, count, header(5, 1, 0, OpCode.MSG), ping]));
    const first = await nextDecoded(c);
    const second = await nextDecoded(c);
    expect([first.responseTo, second.responseTo]).toEqual([requestIdOf(ping), requestIdOf(count)]);
    expect(first.doc).toEqual({ ok: 1 });
    expect(second.doc).toMatchObject({ ok: 1 });
    await expectClosedWithoutReply(c);
  });

  it('answers a forwarded request still in flight when a bad length arrives in a later write, then closes', async () => {
    const c = await open();
    const find = commandMsg({ find: 'pipelined', filter: {}, $db: db });
    c.send(find);
    c.send(header(48_000_001, 1, 0, OpCode.MSG));
    expect((await nextDecoded(c)).responseTo).toBe(requestIdOf(find));
    await expectClosedWithoutReply(c);
  });

  it('answers a message split byte by byte', async () => {
    const c = await open();
    c.socket.setNoDelay(true);
    const msg = commandMsg({ find: 'pipelined', filter: { _id: 1 }, $db: db });
    for (const byte of msg) {
      await new Promise<void>((resolve, reject) => c.socket.write(Buffer.from([byte]), (err) => (err ? reject(err) : resolve())));
    }
    const reply = await nextDecoded(c);
    expect(reply.responseTo).toBe(requestIdOf(msg));
    expect((reply.doc.cursor as Document).firstBatch).toEqual([{ _id: 1 }]);
  });

  it('still answers a request after the client half-closes, then closes', async () => {
    const c = await open();
    const ping = commandMsg({ ping: 1, $db: 'admin' });
    c.send(ping);
    c.end();
    const reply = await nextDecoded(c);
    expect(reply.responseTo).toBe(requestIdOf(ping));
    await expectClosedWithoutReply(c);
  });

  it('delivers a large forwarded reply whole after a half-close, then closes', async () => {
    const setup = await open();
    const big = 'x'.repeat(1_000_000);
    const docs = Array.from({ length: 12 }, (_, i) => ({ _id: i, big }));
    expect(await exchange(setup, commandMsg({ insert: 'large', $db: db }, { sequences: [{ identifier: 'documents', documents: docs }] }))).toMatchObject({
      n: 12,
    });
    const c = await open();
    const find = commandMsg({ find: 'large', filter: {}, sort: { _id: 1 }, batchSize: 12, $db: db });
    c.send(find);
    c.end();
    const reply = await nextDecoded(c);
    expect(reply.responseTo).toBe(requestIdOf(find));
    const batch = (reply.doc.cursor as Document).firstBatch as Document[];
    expect(batch.map((d) => [d._id, (d.big as string).length])).toEqual(docs.map((d) => [d._id, big.length]));
    await expectClosedWithoutReply(c);
  });

  it('answers the valid requests of a pipelined write even when the client half-closes mid-message', async () => {
    const c = await open();
    const ping = commandMsg({ ping: 1, $db: 'admin' });
    const partial = commandMsg({ ping: 1, $db: 'admin' }).subarray(0, 10);
    c.send(Buffer.concat([ping, partial]));
    c.end();
    expect((await nextDecoded(c)).responseTo).toBe(requestIdOf(ping));
    await expectClosedWithoutReply(c);
  });

  it('answers with request ids echoed for any int32 request id', async () => {
    const c = await open();
    for (const requestId of [0, -1, 0x7fffffff, -0x80000000, freshRequestId()]) {
      const msg = commandMsg({ ping: 1, $db: 'admin' }, { requestId });
      expect(await exchange(c, msg)).toEqual({ ok: 1 });
    }
  });
});
