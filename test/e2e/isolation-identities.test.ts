import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Binary, Code, Double, Long, serialize, type Document } from 'bson';
import type { MongoClient } from 'mongodb';
import type { RawClient } from '../../src/testing/wire-client.js';
import { opMsg } from '../../src/testing/wire-client.js';
import { sign, seconds } from '../helpers/apps.js';
import {
  ALPHA_DB,
  ALPHA_SECRET,
  BETA_DB,
  BETA_MARK,
  IsolationWorld,
  PyAttacker,
  command,
  exchange,
  expectClosed,
  expectError,
  firstBatch,
  legacy,
  outcome,
  token,
  unsignedToken,
  type Reply,
} from './isolation-fixture.js';

/**
 * Isolation, part 3: identities and the edges of the protocol. App `alpha` tries to use beta's cursors
 * and sessions, aliases and odd spellings of commands, server-wide and server-side-JavaScript commands,
 * internal generic arguments, legacy opcodes, OP_COMPRESSED wrapping, explain, and token tricks to act
 * as beta. After every attempt beta's data is checked directly on the upstream and through the proxy as
 * beta; cursor attempts also check that beta's cursor still works.
 */

let w: IsolationWorld;
let raw: RawClient;

beforeAll(async () => {
  w = await IsolationWorld.start();
  raw = await w.raw('alpha');
  w.py = new PyAttacker(w.plainUri('alpha', await token('alpha')), ALPHA_DB);
});

afterAll(async () => {
  await w?.close();
});

const uuid = (fill: number) => new Binary(Buffer.alloc(16, fill), Binary.SUBTYPE_UUID);
const sameId = (a: unknown, b: Binary) => Buffer.from((a as Binary).buffer).equals(Buffer.from(b.buffer));

// ---- Cursors ----

interface BetaCursor {
  beta: RawClient;
  id: Long;
}

/** Beta opens a cursor over its `shared` (one document per batch). */
async function betaCursor(): Promise<BetaCursor> {
  const beta = await w.raw('beta');
  const reply = await command(beta, { find: 'shared', filter: {}, sort: { _id: 1 }, batchSize: 1, $db: BETA_DB });
  expect(firstBatch(reply)).toEqual([{ _id: 1, secret: `${BETA_MARK}-1`, n: 1, tags: ['beta-doc'] }]);
  const id = (reply.cursor as { id: Long }).id;
  expect(id.isZero()).toBe(false);
  return { beta, id };
}

/** Beta's cursor still gives beta its next document (then beta closes it). */
async function expectBetaCursorAlive({ beta, id }: BetaCursor): Promise<void> {
  const reply = await command(beta, { getMore: id, collection: 'shared', batchSize: 1, $db: BETA_DB });
  expect(reply.ok, JSON.stringify(reply)).toBe(1);
  expect((reply.cursor as { nextBatch: Document[] }).nextBatch).toEqual([{ _id: 2, secret: `${BETA_MARK}-2`, n: 2, tags: ['beta-doc'] }]);
  expect(await command(beta, { killCursors: 'shared', cursors: [id], $db: BETA_DB })).toMatchObject({ ok: 1, cursorsKilled: [id] });
}

/** No killCursors naming `id` reached the upstream. */
function expectNoKillUpstream(id: Long): void {
  const kills = w.relay.commands('killCursors').filter((m) => ((m.body.cursors as unknown[]) ?? []).some((c) => String(c) === id.toString()));
  expect(kills).toEqual([]);
}

describe("beta's cursors", () => {
  const getMores: [string, (id: Long) => Document][] = [
    ["alpha's getMore of beta's cursor id on the shared name", (id) => ({ getMore: id, collection: 'shared', $db: ALPHA_DB })],
    ["alpha's getMore of beta's cursor id naming beta's physical collection", (id) => ({ getMore: id, collection: 'beta_shared', $db: BETA_DB })],
    ["alpha's getMore of beta's cursor id as a double", (id) => ({ getMore: new Double(id.toNumber()), collection: 'shared', $db: BETA_DB })],
    // A database-level aggregate's cursor name goes upstream unmapped: the registry alone keeps it apart.
    ["alpha's getMore of beta's cursor id naming a database-level aggregate ($cmd.aggregate)", (id) => ({ getMore: id, collection: '$cmd.aggregate', $db: ALPHA_DB })],
  ];
  it.each(getMores)('%s: CursorNotFound (43), beta\'s cursor still works', async (_what, build) => {
    const cursor = await betaCursor();
    const reply = await command(raw, build(cursor.id));
    expectError(reply, 43, 'CursorNotFound');
    w.expectNoLeak(reply);
    await expectBetaCursorAlive(cursor);
    await w.expectBetaUnchanged();
  });

  it("alpha's killCursors of beta's cursor id: reported not found, never sent upstream, beta's cursor still works", async () => {
    const cursor = await betaCursor();
    const reply = await command(raw, { killCursors: 'shared', cursors: [cursor.id], $db: BETA_DB });
    expect(reply).toMatchObject({ ok: 1, cursorsKilled: [], cursorsNotFound: [cursor.id] });
    expectNoKillUpstream(cursor.id);
    await expectBetaCursorAlive(cursor);
    await w.expectBetaUnchanged();
  });

  it("alpha's killCursors of its own and beta's cursor ids together: only alpha's is killed", async () => {
    const cursor = await betaCursor();
    const mine = (await command(raw, { find: 'shared', filter: {}, batchSize: 1, $db: ALPHA_DB })).cursor as { id: Long };
    const reply = await command(raw, { killCursors: 'shared', cursors: [mine.id, cursor.id], $db: ALPHA_DB });
    expect(reply).toMatchObject({ ok: 1, cursorsKilled: [mine.id], cursorsNotFound: [cursor.id] });
    expectNoKillUpstream(cursor.id);
    await expectBetaCursorAlive(cursor);
    await w.expectBetaUnchanged();
  });

  it('alpha guessing cursor ids around its own and beta\'s: every other id is CursorNotFound', async () => {
    const cursor = await betaCursor();
    const mine = ((await command(raw, { find: 'shared', filter: {}, batchSize: 1, $db: ALPHA_DB })).cursor as { id: Long }).id;
    // FerretDB numbers cursors in sequence (beta's is next to alpha's); MongoDB's are random: try both neighbourhoods.
    const guesses = new Set<bigint>();
    for (const base of [mine.toBigInt(), cursor.id.toBigInt()]) for (let d = -3n; d <= 3n; d++) guesses.add(base + d);
    guesses.delete(mine.toBigInt());
    expect(guesses.has(cursor.id.toBigInt())).toBe(true);
    for (const id of guesses) {
      const reply = await command(raw, { getMore: Long.fromBigInt(id), collection: 'shared', $db: ALPHA_DB });
      expectError(reply, 43, 'CursorNotFound');
    }
    await command(raw, { killCursors: 'shared', cursors: [mine], $db: ALPHA_DB });
    await expectBetaCursorAlive(cursor);
    await w.expectBetaUnchanged();
  });

  it("Node driver db.command getMore of beta's cursor id: CursorNotFound", async () => {
    const cursor = await betaCursor();
    const reply = await outcome(w.alphaDb.command({ getMore: cursor.id, collection: 'shared' }));
    expectError(reply, 43, 'CursorNotFound');
    await expectBetaCursorAlive(cursor);
    await w.expectBetaUnchanged();
  });

  it("getMore of beta's cursor id before authenticating: Unauthorized (13)", async () => {
    const cursor = await betaCursor();
    const anon = await w.rawUnauthenticated();
    expectError(await command(anon, { getMore: cursor.id, collection: 'shared', $db: BETA_DB }), 13, 'Unauthorized');
    expectError(await command(anon, { killCursors: 'shared', cursors: [cursor.id], $db: BETA_DB }), 13, 'Unauthorized');
    await expectBetaCursorAlive(cursor);
    await w.expectBetaUnchanged();
  });
});

// ---- Sessions ----

/** The lsid the upstream saw on the command carrying `comment`. */
function upstreamLsid(comment: string): Binary {
  const sent = w.sentUpstream(comment).body;
  return (sent.lsid as { id: Binary }).id;
}

describe('sessions', () => {
  it('the same lsid in both apps: two different upstream sessions, neither the id the clients chose', async () => {
    const id = uuid(0x11);
    const beta = await w.raw('beta');
    expect((await command(beta, { find: 'shared', filter: {}, lsid: { id }, comment: 'iso-lsid-beta', $db: BETA_DB })).ok).toBe(1);
    const reply = await command(raw, { find: 'shared', filter: {}, lsid: { id }, comment: 'iso-lsid-alpha', $db: ALPHA_DB });
    expect(firstBatch(reply).map((d) => d._id)).toEqual([1, 2, 3]);
    w.expectNoLeak(reply);
    const a = upstreamLsid('iso-lsid-alpha');
    const b = upstreamLsid('iso-lsid-beta');
    expect(sameId(a, w.mappedSession('alpha', id))).toBe(true);
    expect(sameId(b, w.mappedSession('beta', id))).toBe(true);
    expect(sameId(a, b) || sameId(a, id) || sameId(b, id)).toBe(false);
    await w.expectBetaUnchanged();
  });

  const lists: [string, 'endSessions' | 'killSessions' | 'refreshSessions', 'client' | 'upstream'][] = [
    ["endSessions with beta's session id", 'endSessions', 'client'],
    ["endSessions with the id the upstream knows beta's session by", 'endSessions', 'upstream'],
    ["killSessions with beta's session id", 'killSessions', 'client'],
    ["killSessions with the id the upstream knows beta's session by", 'killSessions', 'upstream'],
    ["refreshSessions with the id the upstream knows beta's session by", 'refreshSessions', 'upstream'],
  ];
  it.each(lists)('%s: the upstream only ever sees alpha\'s mapping of it', async (what, name, which) => {
    const clientId = uuid(0x22);
    const target = which === 'client' ? clientId : w.mappedSession('beta', clientId);
    const comment = `iso-${what}`;
    const reply = await command(raw, { [name]: [{ id: target }], comment, $db: 'admin' });
    const sent = (w.sentUpstream(comment).body[name] as { id: Binary }[]).map((s) => s.id);
    expect(sent).toHaveLength(1);
    expect(sameId(sent[0], w.mappedSession('alpha', target))).toBe(true);
    expect(sameId(sent[0], w.mappedSession('beta', clientId))).toBe(false);
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });

  it('killSessions with an empty list (every session of the upstream user, i.e. of every app): Unauthorized, nothing sent', async () => {
    const reply = await command(raw, { killSessions: [], comment: 'iso-kill-all', $db: 'admin' });
    expectError(reply, 13, 'Unauthorized');
    expect(w.countUpstream('iso-kill-all')).toBe(0);
    await w.expectBetaUnchanged();
  });

  it("an lsid carrying a uid (another user's session): Unauthorized (13)", async () => {
    const reply = await command(raw, { find: 'shared', filter: {}, lsid: { id: uuid(0x33), uid: new Binary(Buffer.alloc(32, 7)) }, $db: ALPHA_DB });
    expectError(reply, 13, 'Unauthorized');
    await w.expectBetaUnchanged();
  });

  it('an lsid id that is not a UUID: TypeMismatch (14)', async () => {
    const reply = await command(raw, { find: 'shared', filter: {}, lsid: { id: new Binary(Buffer.alloc(16, 1), 0) }, $db: ALPHA_DB });
    expectError(reply, 14, 'TypeMismatch');
    await w.expectBetaUnchanged();
  });

  it("transaction flags on beta's session id (startTransaction, then commitTransaction): alpha's own session upstream", async () => {
    const id = uuid(0x44);
    const start = await command(raw, {
      find: 'shared',
      filter: {},
      lsid: { id },
      txnNumber: Long.fromNumber(1),
      startTransaction: true,
      autocommit: false,
      comment: 'iso-txn-start',
      $db: ALPHA_DB,
    });
    w.expectNoLeak(start);
    const commit = await command(raw, { commitTransaction: 1, lsid: { id }, txnNumber: Long.fromNumber(1), autocommit: false, comment: 'iso-txn-commit', $db: 'admin' });
    w.expectNoLeak(commit);
    if (inject('upstreamIsStandalone')) {
      // A standalone upstream has no transactions: refused as mongod refuses them, nothing sent.
      expect([start.code, commit.code]).toEqual([20, 20]);
    } else {
      expect(sameId(upstreamLsid('iso-txn-start'), w.mappedSession('alpha', id))).toBe(true);
      expect(sameId(upstreamLsid('iso-txn-commit'), w.mappedSession('alpha', id))).toBe(true);
    }
    await w.expectBetaUnchanged();
  });

  it("replaying beta's retryable findAndModify (same lsid and txnNumber): alpha's own document, never beta's stored result", async () => {
    const id = uuid(0x55);
    const txnNumber = Long.fromNumber(7);
    const beta = await w.raw('beta');
    const mine = await command(beta, { findAndModify: 'shared', query: { _id: 1 }, update: { $set: { n: 1 } }, lsid: { id }, txnNumber, comment: 'iso-retry-beta', $db: BETA_DB });
    const reply = await command(raw, { findAndModify: 'shared', query: { _id: 1 }, update: { $set: { n: 1 } }, lsid: { id }, txnNumber, comment: 'iso-retry-alpha', $db: ALPHA_DB });
    if (mine.ok === 1) {
      expect(mine).toMatchObject({ value: { _id: 1, secret: `${BETA_MARK}-1` } });
      expect(reply).toMatchObject({ ok: 1, value: { _id: 1, mine: 'alpha-1', n: 1 } });
    } else {
      // A standalone MongoDB has no retryable writes (IllegalOperation): alpha is refused the same way.
      expect([mine.code, reply.code]).toEqual([20, 20]);
    }
    w.expectNoLeak(reply);
    if (mine.ok === 1) expect(sameId(upstreamLsid('iso-retry-alpha'), upstreamLsid('iso-retry-beta'))).toBe(false);
    await w.expectBetaUnchanged();
  });

  it("explain whose explained command carries beta's session id: the inner lsid is alpha's mapping", async () => {
    const id = uuid(0x66);
    const reply = await command(raw, { explain: { find: 'shared', filter: {}, lsid: { id } }, comment: 'iso-explain-lsid', $db: ALPHA_DB });
    const inner = w.sentUpstream('iso-explain-lsid').body.explain as Document;
    expect(sameId((inner.lsid as { id: Binary }).id, w.mappedSession('alpha', id))).toBe(true);
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });
});

// ---- Explain ----

describe('explain', () => {
  it("explain of a find on beta's physical name: the plan of alpha's own collection, no physical name in the reply", async () => {
    const reply = await command(raw, { explain: { find: 'beta_shared', filter: {} }, verbosity: 'executionStats', comment: 'iso-explain', $db: ALPHA_DB });
    expect((w.sentUpstream('iso-explain').body.explain as Document).find).toBe('alpha_beta_shared');
    w.expectNoLeak(reply, ['beta_shared']);
    await w.expectBetaUnchanged();
  });

  it("explain of an update setting beta's tag: ImmutableField (66) from the explained command's own guard", async () => {
    const reply = await command(raw, { explain: { update: 'shared', updates: [{ q: {}, u: { $set: { app_id: 'beta' } } }] }, $db: ALPHA_DB });
    expectError(reply, 66, 'ImmutableField');
    await w.expectBetaUnchanged();
  });

  it('explain of a refused command (dbStats): Unauthorized (13)', async () => {
    expectError(await command(raw, { explain: { dbStats: 1 }, $db: ALPHA_DB }), 13, 'Unauthorized');
    await w.expectBetaUnchanged();
  });
});

// ---- Aliases and case ----

describe('aliases and case', () => {
  it("findandmodify (alias) setting beta's tag: ImmutableField (66)", async () => {
    const reply = await command(raw, { findandmodify: 'shared', query: { _id: 1 }, update: { $set: { app_id: 'beta' } }, $db: ALPHA_DB });
    expectError(reply, 66, 'ImmutableField');
    await w.expectBetaUnchanged();
  });

  it("findandmodify (alias) with findAndModify naming beta's physical collection as a second field: unknown field (40415)", async () => {
    const reply = await command(raw, { findandmodify: 'shared', findAndModify: 'beta_shared', query: {}, remove: true, $db: ALPHA_DB });
    expectError(reply, 40415);
    await w.expectBetaUnchanged();
  });

  it.each(['FIND', 'Find', 'fInd', 'ISMASTER', 'Insert', 'killcursors', 'getmore'])('%s (wrong case): CommandNotFound (59), nothing sent upstream', async (name) => {
    const comment = `iso-case-${name}`;
    const reply = await command(raw, { [name]: 'beta_shared', comment, $db: BETA_DB });
    expectError(reply, 59, 'CommandNotFound');
    expect(w.countUpstream(comment)).toBe(0);
    await w.expectBetaUnchanged();
  });

  it("isMaster with saslSupportedMechs naming beta's user: the proxy's mechanisms only, nothing about beta", async () => {
    const reply = await command(raw, { isMaster: 1, saslSupportedMechs: `${BETA_DB}.beta`, $db: 'admin' });
    expect(reply).toMatchObject({ ok: 1, ismaster: true, saslSupportedMechs: ['PLAIN', 'MONGODB-OIDC'] });
    expect(reply.msg).toBe(inject('upstreamIsStandalone') ? undefined : 'isdbgrid');
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });

  it("a second handshake (OP_QUERY isMaster) naming beta as appName on alpha's connection: still alpha", async () => {
    const { doc } = await exchange(raw, legacy.query('admin.$cmd', { isMaster: 1, client: { application: { name: 'beta' } } }));
    expect(doc).toMatchObject({ ok: 1, ismaster: true });
    expect(firstBatch(await command(raw, { find: 'shared', filter: {}, $db: BETA_DB })).map((d) => d._id)).toEqual([1, 2, 3]);
    await w.expectBetaUnchanged();
  });

  it("isMaster over OP_QUERY on beta's database: UnsupportedOpQueryCommand (352)", async () => {
    const { doc } = await exchange(raw, legacy.query(`${BETA_DB}.$cmd`, { isMaster: 1 }));
    expectError(doc, 352);
    await w.expectBetaUnchanged();
  });

  it('mapreduce (lower-case alias): QueryFeatureNotAllowed (224)', async () => {
    const reply = await command(raw, { mapreduce: 'shared', map: new Code('function(){}'), reduce: new Code('function(){}'), out: { inline: 1 }, $db: BETA_DB });
    expectError(reply, 224, 'QueryFeatureNotAllowed');
    await w.expectBetaUnchanged();
  });
});

// ---- Refused commands, stages and operators ----

describe('server-wide commands, server-side JavaScript and cross-app stages', () => {
  const refused: [string, Document, number][] = [
    ['serverStatus', { serverStatus: 1, $db: 'admin' }, 13],
    ['currentOp', { currentOp: 1, $all: true, $db: 'admin' }, 13],
    ['listDatabases', { listDatabases: 1, $db: 'admin' }, 13],
    ['dropDatabase on beta\'s logical database', { dropDatabase: 1, $db: BETA_DB }, 13],
    ['dropDatabase on the physical database', { dropDatabase: 1, $db: 'PHYS' }, 13],
    ['dbStats', { dbStats: 1, $db: BETA_DB }, 13],
    ['collStats on beta\'s physical name', { collStats: 'beta_shared', $db: 'PHYS' }, 13],
    ['dataSize', { dataSize: 'PHYS.beta_shared', $db: 'PHYS' }, 13],
    ['dbHash', { dbHash: 1, $db: 'PHYS' }, 13],
    ['killOp', { killOp: 1, op: 1, $db: 'admin' }, 13],
    ['killAllSessions', { killAllSessions: [], $db: 'admin' }, 13],
    ['killAllSessionsByPattern', { killAllSessionsByPattern: [], $db: 'admin' }, 13],
    ['getLog', { getLog: 'global', $db: 'admin' }, 13],
    ['usersInfo', { usersInfo: 1, $db: 'admin' }, 13],
    ['createUser', { createUser: 'mallory', pwd: 'x', roles: ['root'], $db: 'admin' }, 13],
    ['applyOps', { applyOps: [{ op: 'd', ns: 'PHYS.beta_shared', o: { _id: 1 } }], $db: 'admin' }, 13],
    ['profile', { profile: 2, $db: 'PHYS' }, 13],
    ['validate', { validate: 'shared', $db: BETA_DB }, 13],
    ['setParameter', { setParameter: 1, javascriptEnabled: true, $db: 'admin' }, 13],
    ['fsync', { fsync: 1, lock: true, $db: 'admin' }, 13],
    ['shutdown', { shutdown: 1, force: true, $db: 'admin' }, 13],
    ['authenticate', { authenticate: 1, mechanism: 'MONGODB-X509', $db: '$external' }, 13],
    ['eval', { eval: new Code('db.getSiblingDB("x").dropDatabase()'), $db: BETA_DB }, 224],
    ['mapReduce', { mapReduce: 'shared', map: new Code('function(){}'), reduce: new Code('function(){}'), out: { inline: 1 }, $db: BETA_DB }, 224],
    ['collMod (not in the table)', { collMod: 'shared', validator: {}, $db: BETA_DB }, 59],
    ['an unknown command', { frobnicate: 'beta_shared', $db: BETA_DB }, 59],
    ['$where in a find filter', { find: 'shared', filter: { $where: 'this.app_id == "beta"' }, $db: ALPHA_DB }, 224],
    ['$function in $expr', { find: 'shared', filter: { $expr: { $function: { body: 'return true', args: [], lang: 'js' } } }, $db: ALPHA_DB }, 224],
    ['$accumulator in $group', { aggregate: 'shared', pipeline: [{ $group: { _id: 1, a: { $accumulator: { init: 'f' } } } }], cursor: {}, $db: ALPHA_DB }, 224],
    ['a BSON Code value in a filter', { find: 'shared', filter: { x: new Code('1') }, $db: ALPHA_DB }, 224],
    ['$where in a count', { count: 'shared', query: { $where: 'true' }, $db: ALPHA_DB }, 224],
    ['$currentOp (aggregate: 1 on admin)', { aggregate: 1, pipeline: [{ $currentOp: { allUsers: true } }], cursor: {}, $db: 'admin' }, 13],
    ['$listSessions', { aggregate: 'shared', pipeline: [{ $listSessions: { allUsers: true } }], cursor: {}, $db: ALPHA_DB }, 13],
    ['$listLocalSessions', { aggregate: 1, pipeline: [{ $listLocalSessions: { allUsers: true } }], cursor: {}, $db: 'admin' }, 13],
    ['$planCacheStats', { aggregate: 'shared', pipeline: [{ $planCacheStats: {} }], cursor: {}, $db: ALPHA_DB }, 13],
    ['$collStats', { aggregate: 'shared', pipeline: [{ $collStats: { storageStats: {} } }], cursor: {}, $db: ALPHA_DB }, 13],
    ['$searchMeta inside $facet', { aggregate: 'shared', pipeline: [{ $facet: { m: [{ $searchMeta: { exists: { path: 'app_id' } } }] } }], cursor: {}, $db: ALPHA_DB }, 13],
    ['a database-wide change stream', { aggregate: 1, pipeline: [{ $changeStream: {} }], cursor: {}, $db: BETA_DB }, 13],
    ['a cluster-wide change stream', { aggregate: 'shared', pipeline: [{ $changeStream: { allChangesForCluster: true } }], cursor: {}, $db: 'admin' }, 13],
    ['aggregate: 1 with a $match (database-level read)', { aggregate: 1, pipeline: [{ $match: {} }], cursor: {}, $db: BETA_DB }, 13],
    ['aggregate with explain: true', { aggregate: 'shared', pipeline: [], explain: true, $db: ALPHA_DB }, 13],
    ['an unknown stage', { aggregate: 'shared', pipeline: [{ $internalUnpackBucket: {} }], cursor: {}, $db: ALPHA_DB }, 40324],
  ];
  it.each(refused)('%s: refused, nothing sent upstream', async (what, cmd, code) => {
    const comment = `iso-refused-${what}`;
    const full: Document = {};
    for (const [k, v] of Object.entries({ ...cmd, comment })) full[k] = typeof v === 'string' ? v.replace('PHYS', w.phys) : v;
    const reply = await command(raw, full);
    expectError(reply, code);
    expect(w.countUpstream(comment)).toBe(0);
    w.expectNoLeak(reply, [w.phys, 'beta_shared']);
    await w.expectBetaUnchanged();
  });

  const python: [string, number][] = [
    ['list_database_names', 13],
    ['dbStats', 13],
    ['serverStatus', 13],
    ['database-wide watch()', 13],
    ['find with $where', 224],
  ];
  it.each(python)('PyMongo %s: refused with code %i', async (attack, code) => {
    const out = await w.py!.run(attack);
    expect(out, out.raw).toMatchObject({ ok: false, code });
    w.expectNoLeak(out.raw);
    await w.expectBetaUnchanged();
  });
});

// ---- Generic arguments ----

describe('generic-argument injection', () => {
  const args: [string, Document, number][] = [
    ['bypassDocumentValidation', { insert: 'shared', documents: [{ _id: 'bdv' }], bypassDocumentValidation: true }, 13],
    ['$client (handshake metadata)', { find: 'shared', $client: { application: { name: 'beta' } } }, 13],
    ['$audit', { find: 'shared', $audit: { $impersonatedUser: { user: 'beta', db: '$external' } } }, 13],
    ['$tenant', { find: 'shared', $tenant: new Binary(Buffer.alloc(12, 1)) }, 13],
    ['mayBypassWriteBlocking', { insert: 'shared', documents: [{ _id: 'mbwb' }], mayBypassWriteBlocking: true }, 13],
    ['shardVersion', { find: 'shared', shardVersion: [Long.ZERO, new Binary(Buffer.alloc(12))] }, 13],
    ['databaseVersion', { find: 'shared', databaseVersion: { uuid: uuid(1), lastMod: 1 } }, 13],
    ['$queryOptions', { find: 'shared', $queryOptions: { $readPreference: { mode: 'secondary' } } }, 13],
    ['encryptionInformation', { find: 'shared', encryptionInformation: { schema: {} } }, 13],
    ['an unknown top-level field', { find: 'shared', frobnicate: 1 }, 40415],
    ['an unknown field in an update statement', { update: 'shared', updates: [{ q: {}, u: { $set: { a: 1 } }, $db: BETA_DB }] }, 40415],
    ['a kind-0 field named like a kind-1 identifier of another command', { find: 'shared', updates: [{ q: {}, u: {} }] }, 40415],
  ];
  it.each(args)('%s: refused, nothing sent upstream', async (what, cmd, code) => {
    const comment = `iso-arg-${what}`;
    const reply = await command(raw, { ...cmd, comment, $db: ALPHA_DB });
    expectError(reply, code);
    expect(w.countUpstream(comment)).toBe(0);
    await w.expectBetaUnchanged();
  });

  it('a kind-1 sequence on a command that takes none (find with documents): unknown field (40415)', async () => {
    const reply = await command(raw, { find: 'shared', comment: 'iso-arg-seq', $db: ALPHA_DB }, [{ identifier: 'documents', documents: [{ app_id: 'beta' }] }]);
    expectError(reply, 40415);
    expect(w.countUpstream('iso-arg-seq')).toBe(0);
    await w.expectBetaUnchanged();
  });
});

// ---- Legacy opcodes and OP_COMPRESSED ----

describe('legacy opcodes', () => {
  const queries: [string, string, Document][] = [
    ["OP_QUERY find on beta's logical namespace", `${BETA_DB}.shared`, { app_id: 'beta' }],
    ["OP_QUERY find on beta's physical namespace", 'PHYS.beta_shared', {}],
    ["OP_QUERY find command on admin.$cmd naming beta's physical collection", 'admin.$cmd', { find: 'beta_shared', filter: {} }],
    ['OP_QUERY find command wrapped in $query with a read preference', 'admin.$cmd', { $query: { find: 'shared' }, $readPreference: { mode: 'primary' } }],
  ];
  it.each(queries)('%s: UnsupportedOpQueryCommand (352) in an OP_REPLY', async (_what, ns, query) => {
    const { opCode, doc } = await exchange(raw, legacy.query(ns.replace('PHYS', w.phys), query));
    expect(opCode).toBe(1);
    expectError(doc, 352);
    w.expectNoLeak(doc, [w.phys, 'beta_shared']); // the message echoes the namespace alpha sent
    await w.expectBetaUnchanged();
  });

  const writes: [string, (phys: string) => Buffer][] = [
    ["OP_INSERT into beta's physical collection", (p) => legacy.insert(`${p}.beta_shared`, [{ _id: 'legacy', app_id: 'beta' }])],
    ["OP_UPDATE of beta's physical collection", (p) => legacy.update(`${p}.beta_shared`, {}, { $set: { secret: 'pwned' } })],
    ["OP_DELETE on beta's physical collection", (p) => legacy.delete(`${p}.beta_shared`, {})],
  ];
  it.each(writes)('%s: the connection is closed without a reply, nothing reaches the upstream', async (_what, build) => {
    const conn = await w.raw('alpha');
    const before = w.relay.messages.length;
    conn.send(build(w.phys));
    await expectClosed(conn);
    expect(w.relay.messages.slice(before).filter((m) => m.opCode !== 2013)).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("OP_GET_MORE of beta's cursor: connection closed, beta's cursor still works", async () => {
    const cursor = await betaCursor();
    const conn = await w.raw('alpha');
    conn.send(legacy.getMore(`${w.phys}.beta_shared`, cursor.id));
    await expectClosed(conn);
    await expectBetaCursorAlive(cursor);
    await w.expectBetaUnchanged();
  });

  it("OP_KILL_CURSORS of beta's cursor: connection closed, beta's cursor still works", async () => {
    const cursor = await betaCursor();
    const conn = await w.raw('alpha');
    conn.send(legacy.killCursors([cursor.id]));
    await expectClosed(conn);
    expectNoKillUpstream(cursor.id);
    await expectBetaCursorAlive(cursor);
    await w.expectBetaUnchanged();
  });
});

describe('OP_COMPRESSED-wrapped attacks', () => {
  it("zlib-wrapped insert carrying beta's tag: BadValue (2)", async () => {
    const { doc } = await exchange(raw, legacy.compressed(opMsg({ insert: 'shared', documents: [{ _id: 'z1', app_id: 'beta' }], $db: ALPHA_DB })));
    expectError(doc, 2, 'BadValue');
    await w.expectBetaUnchanged();
  });

  it("zlib-wrapped find on beta's physical name in the physical database: alpha's empty collection", async () => {
    const { doc } = await exchange(raw, legacy.compressed(opMsg({ find: 'beta_shared', filter: {}, $db: w.phys })));
    expect(firstBatch(doc)).toEqual([]);
    await w.expectBetaUnchanged();
  });

  it("zlib-wrapped getMore of beta's cursor: CursorNotFound (43), beta's cursor still works", async () => {
    const cursor = await betaCursor();
    const { doc } = await exchange(raw, legacy.compressed(opMsg({ getMore: cursor.id, collection: 'shared', $db: BETA_DB })));
    expectError(doc, 43, 'CursorNotFound');
    await expectBetaCursorAlive(cursor);
    await w.expectBetaUnchanged();
  });

  it('zlib-wrapped killSessions with an empty list: Unauthorized (13)', async () => {
    const { doc } = await exchange(raw, legacy.compressed(opMsg({ killSessions: [], $db: 'admin' })));
    expectError(doc, 13, 'Unauthorized');
    await w.expectBetaUnchanged();
  });

  it("zlib-wrapped OP_QUERY find on beta's namespace: UnsupportedOpQueryCommand (352)", async () => {
    const { opCode, doc } = await exchange(raw, legacy.compressed(legacy.query(`${BETA_DB}.shared`, {})));
    expect(opCode).toBe(1);
    expectError(doc, 352);
    await w.expectBetaUnchanged();
  });

  it("noop-compressed OP_INSERT into beta's physical collection: connection closed", async () => {
    const conn = await w.raw('alpha');
    conn.send(legacy.compressed(legacy.insert(`${w.phys}.beta_shared`, [{ _id: 'z2', app_id: 'beta' }]), 0));
    await expectClosed(conn);
    await w.expectBetaUnchanged();
  });

  it('snappy-labelled (undecodable by the proxy) find: BadValue, then the connection closes', async () => {
    const conn = await w.raw('alpha');
    const { doc } = await exchange(conn, legacy.compressed(opMsg({ find: 'beta_shared', filter: {}, $db: w.phys }), 1));
    expectError(doc, 2, 'BadValue');
    await conn.closed;
    await w.expectBetaUnchanged();
  });
});

// ---- Token tricks ----

describe('before authentication', () => {
  it('buildInfo carrying a session id, a transaction and a kind-1 section: only {buildInfo: 1} reaches the upstream', async () => {
    const anon = await w.rawUnauthenticated();
    const before = w.relay.messages.length;
    const reply = await command(
      anon,
      { buildInfo: 1, lsid: { id: new Binary(Buffer.alloc(16, 0x77), 4) }, txnNumber: Long.fromNumber(5), autocommit: false, comment: 'pre-auth-bi', $db: BETA_DB },
      [{ identifier: 'documents', documents: [{ a: 1 }] }],
    );
    anon.destroy();
    expect(reply.ok).toBe(1);
    const sent = w.relay.messages.slice(before).filter((m) => m.command === 'buildInfo');
    expect(sent.map((m) => ({ body: m.body, sequences: m.sequences }))).toEqual([{ body: { buildInfo: 1, $db: 'admin' }, sequences: [] }]);
    expect(Buffer.concat(w.relay.messages.slice(before).map((m) => m.raw)).includes(Buffer.alloc(16, 0x77))).toBe(false);
    await w.expectBetaUnchanged();
  });
});

describe('token tricks', () => {
  async function plainFails(user: string, jwt: string): Promise<void> {
    const err = await w.client(w.plainUri(user, jwt, BETA_DB), { serverSelectionTimeoutMS: 3000 }).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 18, message: 'Authentication failed.' });
  }

  it("alpha's valid token presented with beta's PLAIN user name: AuthenticationFailed (18)", async () => {
    await plainFails('beta', await token('alpha'));
    await w.expectBetaUnchanged();
  });

  it("a token claiming beta signed with alpha's secret: AuthenticationFailed", async () => {
    await plainFails('beta', await token('beta', {}, ALPHA_SECRET));
    await w.expectBetaUnchanged();
  });

  it('an unsigned token (alg none) claiming beta: AuthenticationFailed', async () => {
    await plainFails('beta', unsignedToken({ app: 'beta', exp: seconds() + 600 }));
    await w.expectBetaUnchanged();
  });

  it("a token claiming beta signed with alpha's secret under HS512: AuthenticationFailed", async () => {
    await plainFails('beta', await sign({ app: 'beta', exp: seconds() + 600 }, 'HS512', ALPHA_SECRET));
    await w.expectBetaUnchanged();
  });

  it("an expired token of alpha's: AuthenticationFailed", async () => {
    await plainFails('alpha', await token('alpha', { exp: seconds() - 3600 }));
    await w.expectBetaUnchanged();
  });

  it('PLAIN with beta as the authorization identity and alpha as the user: AuthenticationFailed', async () => {
    const conn = await w.rawUnauthenticated();
    const payload = new Binary(Buffer.from(`beta\0alpha\0${await token('alpha')}`));
    expectError(await command(conn, { saslStart: 1, mechanism: 'PLAIN', payload, $db: '$external' }), 18, 'AuthenticationFailed');
    expectError(await command(conn, { find: 'shared', filter: {}, $db: BETA_DB }), 13, 'Unauthorized');
    await w.expectBetaUnchanged();
  });

  it("an authenticated alpha connection re-authenticating as beta (PLAIN user beta, alpha's token): refused, still alpha", async () => {
    const conn = await w.raw('alpha');
    const payload = new Binary(Buffer.from(`\0beta\0${await token('alpha')}`));
    expectError(await command(conn, { saslStart: 1, mechanism: 'PLAIN', payload, $db: '$external' }), 18);
    expect(firstBatch(await command(conn, { find: 'shared', filter: {}, $db: BETA_DB })).map((d) => d._id)).toEqual([1, 2, 3]);
    await w.expectBetaUnchanged();
  });

  it('SCRAM-SHA-256 naming an upstream user: AuthenticationFailed (never forwarded)', async () => {
    const conn = await w.rawUnauthenticated();
    const payload = new Binary(Buffer.from('n,,n=admin,r=abcdefghijklmnop'));
    const reply = await command(conn, { saslStart: 1, mechanism: 'SCRAM-SHA-256', payload, comment: 'iso-scram', $db: 'admin' });
    expectError(reply, 18, 'AuthenticationFailed');
    expect(w.relay.commands('saslStart').filter((m) => m.body.comment === 'iso-scram')).toEqual([]);
    await w.expectBetaUnchanged();
  });

  const appNames: [string, () => Promise<string>, number][] = [
    ["beta's slug (beta requires a token)", () => Promise.resolve('beta'), 13],
    ['an unsigned token claiming beta', () => Promise.resolve(unsignedToken({ app: 'beta' })), 18],
    ["alpha's expired token", () => token('alpha', { exp: seconds() - 3600 }), 18],
    ["alpha's token cut to 128 bytes by the driver", () => token('alpha', { sub: 'a-subject-long-enough-to-push-the-token-past-128-bytes@example.com' }), 18],
  ];
  it.each(appNames)('appName set to %s: every command fails (code %i), nothing of beta\'s', async (_what, make, code) => {
    const name = await make();
    const c: MongoClient = await w.client(`mongodb://127.0.0.1:${w.proxy.port}/?appName=${encodeURIComponent(name)}`);
    const reply = await outcome(c.db(BETA_DB).collection('shared').find({}).toArray());
    expectError(reply, code);
    w.expectNoLeak(reply);
    await w.expectBetaUnchanged();
  });

  it("MONGODB-OIDC speculative authentication with a token claiming beta signed by alpha's key: not authenticated", async () => {
    const conn = await w.rawUnauthenticated();
    const payload = new Binary(serialize({ jwt: await token('beta', {}, ALPHA_SECRET) }));
    const hello = await command(conn, { hello: 1, speculativeAuthenticate: { saslStart: 1, mechanism: 'MONGODB-OIDC', payload, db: '$external' }, $db: 'admin' });
    expect(hello.speculativeAuthenticate).toBeUndefined();
    expectError(await command(conn, { find: 'shared', filter: {}, $db: BETA_DB }), 13, 'Unauthorized');
    await w.expectBetaUnchanged();
  });

  const unauthenticated: [string, Document][] = [
    ['find', { find: 'shared', filter: {}, $db: BETA_DB }],
    ['insert', { insert: 'shared', documents: [{ _id: 'anon' }], $db: BETA_DB }],
    ['delete', { delete: 'shared', deletes: [{ q: {}, limit: 0 }], $db: BETA_DB }],
    ['aggregate', { aggregate: 'shared', pipeline: [], cursor: {}, $db: BETA_DB }],
    ['listCollections', { listCollections: 1, $db: BETA_DB }],
    ['drop', { drop: 'shared', $db: BETA_DB }],
  ];
  it.each(unauthenticated)('%s before authenticating: Unauthorized (13), nothing sent upstream', async (what, cmd) => {
    const conn = await w.rawUnauthenticated();
    const comment = `iso-anon-${what}`;
    const reply: Reply = await command(conn, { ...cmd, comment });
    expectError(reply, 13, 'Unauthorized');
    expect(w.countUpstream(comment)).toBe(0);
    await w.expectBetaUnchanged();
  });
});
