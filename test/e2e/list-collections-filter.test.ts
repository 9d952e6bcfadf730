import { monitorEventLoopDelay } from 'node:perf_hooks';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BSONRegExp, EJSON, type Document } from 'bson';
import { Query } from 'mingo';
import type { Db } from 'mongodb';
import type { RawClient } from '../../src/testing/wire-client.js';
import { ALPHA_DB, IsolationWorld, command, expectError, firstBatch, type Reply } from './isolation-fixture.js';

/**
 * listCollections filters, through the real proxy against the test upstream, with two apps (alpha the
 * attacker, beta the victim: isolation-fixture.ts). The proxy sends the upstream only alpha's prefix and
 * evaluates alpha's whole filter itself over alpha's entries (docs/security.md, "App input evaluated by
 * the proxy", "The shared catalogue as an oracle"): a catastrophic regex does not stall other apps, the
 * $expr oracle answers the same whatever beta holds, and filters give what a dedicated database holding
 * only alpha's collections gives (that database, read directly, is the reference, and mingo where the
 * upstream cannot evaluate a filter).
 */

let w: IsolationWorld;
let alpha: RawClient;
let beta: RawClient;
let dedicated: Db;

const LONG = `${'a'.repeat(40)}b`;
/** Collections alpha adds to the fixture's (shared, notes, victim). */
const EXTRA = [LONG, 'a'.repeat(40), 'Tasks_2024', 'open.tasks', ...Array.from({ length: 12 }, (_, i) => `bulk_${i}`)];

let counter = 0;
/** Runs listCollections as `client` with a unique comment, so the command sent upstream can be found. */
async function list(client: RawClient, filter: Document | undefined, extra: Document = {}): Promise<{ reply: Reply; comment: string }> {
  const comment = `lcf-${++counter}`;
  const reply = await command(client, { listCollections: 1, ...(filter ? { filter } : {}), ...extra, comment, $db: ALPHA_DB });
  return { reply, comment };
}

const sorted = (reply: Reply): string[] => firstBatch(reply).map((c) => c.name as string).sort();

/** The command reached the upstream with alpha's prefix as its whole filter, and nothing else of the app's. */
function expectOnlyPrefixUpstream(comment: string, filter: Document): void {
  const sent = w.sentUpstream(comment).body;
  expect(sent.filter).toEqual({ name: /^alpha_/ });
  const text = EJSON.stringify(sent, { relaxed: true });
  for (const s of ['$expr', '$regex', '$divide', '$or', 'beta', ...Object.keys(filter).filter((k) => k !== 'name')]) expect(text).not.toContain(s);
}

beforeAll(async () => {
  w = await IsolationWorld.start();
  alpha = await w.raw('alpha');
  beta = await w.raw('beta');
  for (const name of EXTRA) await w.alphaDb.createCollection(name);
  // The reference: a database of its own holding exactly alpha's collections, read directly.
  dedicated = w.direct.db(`${w.phys}_dedicated`);
  for (const c of await w.alphaDb.listCollections({}, { nameOnly: true }).toArray()) await dedicated.createCollection(c.name);
});

afterAll(async () => {
  await dedicated?.dropDatabase().catch(() => undefined);
  await w?.close();
});

describe('a catastrophic regex in a filter', () => {
  const patterns: [string, string[]][] = [
    ['^(a+)+$', ['a'.repeat(40)]],
    ['^(a|aa)+$', ['a'.repeat(40)]],
    ['^(a+)+b$', [LONG]],
    ['^(a*)*c$', []],
  ];

  it("answers alpha promptly and never stalls beta's requests (the event loop stays responsive)", async () => {
    const delay = monitorEventLoopDelay({ resolution: 10 });
    delay.enable();
    const replies: Promise<[Reply, Reply]>[] = [];
    for (let round = 0; round < 5; round++) {
      for (const [pattern] of patterns) {
        // Beta's ping goes right behind alpha's listCollections; both must be answered.
        const listing = list(alpha, { name: { $regex: pattern } }).then((r) => r.reply);
        const ping = command(beta, { ping: 1, $db: 'admin' });
        replies.push(Promise.all([listing, ping]));
        await replies[replies.length - 1];
      }
    }
    const answered = await Promise.all(replies);
    delay.disable();
    answered.forEach(([listing, ping], i) => {
      expect(sorted(listing)).toEqual(patterns[i % patterns.length]![1]);
      expect(ping).toEqual({ ok: 1 });
    });
    // Backtracking over these 40-character names takes hours; RE2 takes microseconds. The bound is loose
    // on purpose (a loaded 2-core machine), yet far below what a single backtracking run would block.
    expect(delay.max / 1e6, 'longest event-loop stall (ms)').toBeLessThan(2000);
    await w.expectBetaUnchanged();
  });

  it('the same pattern in $expr ($regexMatch) and as a BSON regex', async () => {
    for (const filter of [{ name: new BSONRegExp('^(a+)+$') }, { $expr: { $regexMatch: { input: '$name', regex: '^(a|aa)+$' } } }]) {
      const { reply, comment } = await list(alpha, filter);
      expect(sorted(reply)).toEqual(['a'.repeat(40)]);
      expectOnlyPrefixUpstream(comment, filter);
    }
  });

  it('a backreference is refused with 51091 before anything reaches the upstream', async () => {
    for (const filter of [{ name: { $regex: '^(a+)\\1$' } }, { $expr: { $regexMatch: { input: '$name', regex: '(?=a)' } } }]) {
      const { reply, comment } = await list(alpha, filter);
      expectError(reply, 51091);
      expect(reply.errmsg).toMatch(/^Regular expression is invalid: /);
      expect(w.countUpstream(comment)).toBe(0);
    }
    expect(await command(beta, { ping: 1, $db: 'admin' })).toEqual({ ok: 1 });
  });
});

describe('the $expr oracle over the shared catalogue', () => {
  const probe = (pattern: string): Document => ({
    $expr: { $cond: [{ $regexMatch: { input: '$name', regex: pattern } }, { $divide: [1, 0] }, true] },
  });

  it("gives the same answer whether or not beta has a collection matching the probe", async () => {
    const filter = probe('^beta_probe_target$');
    await w.betaDb.createCollection('probe_target');
    const present = await list(alpha, filter);
    await w.betaDb.collection('probe_target').drop();
    const absent = await list(alpha, filter);
    // What went upstream holds no condition of alpha's, both times.
    expectOnlyPrefixUpstream(present.comment, filter);
    expectOnlyPrefixUpstream(absent.comment, filter);
    // What came back is the same, and is what the filter gives over alpha's own entries (mingo).
    expect(present.reply).toEqual(absent.reply);
    const own = firstBatch((await list(alpha, undefined)).reply);
    const expected = new Query(filter).find(own).all().map((c) => (c as Document).name as string).sort();
    expect(sorted(present.reply)).toEqual(expected);
    expect(expected.length).toBe(own.length);
    w.expectNoLeak(present.reply);
    await w.expectBetaUnchanged();
  });

  it("probing beta's prefix, or the physical names, finds nothing to raise on", async () => {
    for (const pattern of ['^beta_', '^alpha_', 'beta_shared']) {
      const { reply, comment } = await list(alpha, probe(pattern));
      expect(reply.ok).toBe(1);
      expect(firstBatch(reply)).toHaveLength(3 + EXTRA.length);
      expectOnlyPrefixUpstream(comment, probe(pattern));
    }
    await w.expectBetaUnchanged();
  });

  it("the probe raises for alpha's own names only, with the server's error", async () => {
    const { reply } = await list(alpha, probe('^notes$'));
    expectError(reply, 2, 'BadValue');
    expect(reply.errmsg).toBe("can't $divide by zero");
  });
});

describe('filters give what a dedicated database gives', () => {
  const filters: [string, Document][] = [
    ['a name', { name: 'shared' }],
    ['a physical name', { name: 'alpha_shared' }],
    ["beta's physical name", { name: 'beta_shared' }],
    ['$in over own, physical and beta names', { name: { $in: ['notes', 'alpha_notes', 'beta_victim', 'victim'] } }],
    ['a name in $or', { $or: [{ name: 'notes' }, { name: /^bulk_1/ }] }],
    ['names in $and', { $and: [{ name: /^bulk/ }, { name: { $ne: 'bulk_3' } }] }],
    ['a name in $nor', { $nor: [{ name: /^bulk/ }, { name: /^a/ }] }],
    ['nested $or in $and', { $and: [{ $or: [{ name: 'shared' }, { name: /^T/ }] }, { type: 'collection' }] }],
    ['$not of a regex', { name: { $not: /^bulk/ } }],
    ['a case-insensitive regex', { name: { $regex: '^tasks', $options: 'i' } }],
    ['a dot in a name', { name: 'open.tasks' }],
    ['a range on names', { name: { $gte: 'n', $lt: 'v' } }],
    ['type', { type: 'collection' }],
    ['type: view', { type: 'view' }],
  ];

  it.each(filters)('%s', async (_what, filter) => {
    const { reply, comment } = await list(alpha, filter);
    const viaProxy = sorted(reply);
    const direct = (await dedicated.listCollections(filter).toArray()).map((c) => c.name).sort();
    expect(viaProxy).toEqual(direct);
    expectOnlyPrefixUpstream(comment, filter);
    w.expectNoLeak(reply, ['alpha_shared', 'beta_shared', 'beta_victim']);
  });

  const expressions: [string, Document][] = [
    ['$expr on the name', { $expr: { $in: ['$name', ['shared', 'beta_shared', 'notes']] } }],
    ['$expr with $and and a string length', { $expr: { $and: [{ $eq: ['$type', 'collection'] }, { $gt: [{ $strLenCP: '$name' }, 30] }] } }],
    ['$expr with $regexMatch inside $or', { $or: [{ $expr: { $regexMatch: { input: '$name', regex: '^bulk_(1|2)$' } } }, { name: 'victim' }] }],
  ];

  // FerretDB cannot evaluate $expr in a listCollections filter: mingo over the dedicated database's
  // entries is the reference there.
  it.each(expressions)('%s (reference: mingo over the dedicated database)', async (_what, filter) => {
    const { reply } = await list(alpha, filter);
    const entries = await dedicated.listCollections().toArray();
    const expected = new Query(filter).find(entries).all().map((c) => (c as Document).name as string).sort();
    expect(sorted(reply)).toEqual(expected);
    expect(expected.length).toBeGreaterThan(0);
  });

  it('nameOnly with a filter on type lists name and type only', async () => {
    const { reply, comment } = await list(alpha, { type: 'collection', name: /^bulk_1/ }, { nameOnly: true });
    expect(firstBatch(reply).sort((a, b) => String(a.name).localeCompare(String(b.name)))).toEqual([
      { name: 'bulk_1', type: 'collection' },
      { name: 'bulk_10', type: 'collection' },
      { name: 'bulk_11', type: 'collection' },
    ]);
    // Full entries are asked for (FerretDB's name-only entries have no type) and reduced by the proxy.
    const sent = w.sentUpstream(comment).body;
    expect(sent.filter).toEqual({ name: /^alpha_/ });
    expect(sent.nameOnly).toBeUndefined();
  });

  it('nameOnly with a filter on another field sees name and type only, like the server', async () => {
    const { reply } = await list(alpha, { 'info.readOnly': false }, { nameOnly: true });
    expect(firstBatch(reply)).toEqual([]);
    const { reply: all } = await list(alpha, { info: { $exists: false } }, { nameOnly: true });
    expect(firstBatch(all)).toHaveLength(3 + EXTRA.length);
  });
});

describe('bounded evaluation', () => {
  const numbers = (n: number) => Array.from({ length: n }, (_, i) => i);

  it('a filter costing more steps than its budget over alpha\'s entries is refused, not run', async () => {
    // 9,000 comparisons per entry over alpha's 19 collections: past the 100,000-step budget.
    const { reply } = await list(alpha, { name: { $in: numbers(9000) } });
    expectError(reply, 2, 'BadValue');
    expect(reply.errmsg).toContain('evaluation steps');
    expect(await command(beta, { ping: 1, $db: 'admin' })).toEqual({ ok: 1 });
  });

  it('the same filter, smaller, runs', async () => {
    const { reply } = await list(alpha, { name: { $in: [...numbers(4000), 'notes'] } });
    expect(sorted(reply)).toEqual(['notes']);
  });

  it('operators outside the allow-list are refused, not sent upstream', async () => {
    for (const [filter, code] of [
      [{ $expr: { $range: [0, 100000000] } }, 168],
      [{ $expr: { $function: { body: 'return 1', args: [], lang: 'js' } } }, 224],
      [{ name: { $mod: [2, 0] } }, 2],
      [{ $where: 'sleep(1000)' }, 224],
    ] as [Document, number][]) {
      const { reply, comment } = await list(alpha, filter);
      expectError(reply, code);
      expect(w.countUpstream(comment)).toBe(0);
    }
  });
});
