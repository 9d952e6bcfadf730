import { MongoServerError, type Document } from 'mongodb';
import { describe, expect, it } from 'vitest';
import type { ManagedIndex } from '../../src/apps/manifest-types.js';
import { describeError } from '../../src/indexes/apply.js';
import { planIndexes, type EffectivePolicy } from '../../src/indexes/plan.js';
import {
  acceptedDetail,
  markUnsupported,
  refusedDetail,
  specFingerprint,
  unsupportedRefusal,
  verdictKey,
  type Verdict,
} from '../../src/indexes/unsupported.js';
import { idx } from './helpers.js';

/**
 * Pure tests of what counts as "the upstream cannot build this index" and of the `unsupported` state in
 * a plan. The error documents are the replies FerretDB v1.24.2 and MongoDB send (the reconciler and CLI
 * suites check the same classification against the real FerretDB).
 */

function serverError(reply: Document): MongoServerError {
  return new MongoServerError({ ok: 0, ...reply });
}

const TTL_SPEC = { key: { last_seen: 1 }, name: 'last_seen_1', expireAfterSeconds: 86400 };

describe('unsupportedRefusal: which build failures are upstream limits', () => {
  const limits: [string, Document, Document][] = [
    [
      'NotImplemented for an option (FerretDB: TTL)',
      { errmsg: 'Index option "expireAfterSeconds" is not implemented yet', code: 238, codeName: 'NotImplemented' },
      TTL_SPEC,
    ],
    [
      'NotImplemented for a partial filter (FerretDB)',
      { errmsg: 'Index option "partialFilterExpression" is not implemented yet', code: 238, codeName: 'NotImplemented' },
      { key: { due: 1 }, name: 'open', partialFilterExpression: { status: 'open', app_id: 'a' } },
    ],
    [
      'IndexNotFound for a text key (FerretDB)',
      { errmsg: `can't find index with key: { title: "text" }`, code: 27, codeName: 'IndexNotFound' },
      { key: { title: 'text' }, name: 'search' },
    ],
    [
      'IndexNotFound for a 2dsphere key sent as a Map (integer-like fields keep their order)',
      { errmsg: `can't find index with key: { 0: "2dsphere" }`, code: 27, codeName: 'IndexNotFound' },
      { key: new Map([['0', '2dsphere']]), name: 'loc' },
    ],
    ['CommandNotSupported', { errmsg: 'createIndexes with this option is not supported', code: 115, codeName: 'CommandNotSupported' }, TTL_SPEC],
    [
      "InternalError 'bad JSON path' for a whole-document wildcard (FerretDB's SQLite backend)",
      { errmsg: "[msg_createindexes.go:155 ...] SQL logic error: bad JSON path: '$**' (1)", code: 1, codeName: 'InternalError' },
      { key: { '$**': 1 }, name: 'wild' },
    ],
  ];
  it.each(limits)('%s', (_what, reply, spec) => {
    const refusal = unsupportedRefusal(serverError(reply), spec);
    expect(refusal).toEqual({ code: reply.code, codeName: reply.codeName, errmsg: reply.errmsg });
    expect(refusedDetail(refusal!)).toBe(`the upstream cannot build this index: ${String(reply.codeName)} (${String(reply.code)}): ${String(reply.errmsg)}`);
  });

  const failures: [string, Document, Document][] = [
    [
      'DuplicateKey (MongoDB: a unique index over duplicates)',
      { errmsg: 'Index build failed: E11000 duplicate key error collection: db.t index: e_1 dup key: { e: 1 }', code: 11000, codeName: 'DuplicateKey' },
      { key: { e: 1 }, name: 'e_1', unique: true },
    ],
    [
      "FerretDB's InternalError for duplicates (UNIQUE constraint failed)",
      { errmsg: "constraint failed: UNIQUE constraint failed: index 'd_e10c2473_e' (2067)", code: 1, codeName: 'InternalError' },
      { key: { e: 1 }, name: 'e', unique: true },
    ],
    [
      "InternalError 'bad JSON path' without a wildcard key",
      { errmsg: "SQL logic error: bad JSON path: 'a' (1)", code: 1, codeName: 'InternalError' },
      { key: { a: 1 }, name: 'a' },
    ],
    [
      'IndexNotFound for an ascending key (not a kind the upstream lacks)',
      { errmsg: "can't find index with key: { a: 1 }", code: 27, codeName: 'IndexNotFound' },
      { key: { a: 1 }, name: 'a' },
    ],
    [
      'IndexOptionsConflict',
      { errmsg: 'An existing index has the same name as the requested index', code: 85, codeName: 'IndexOptionsConflict' },
      { key: { a: 1 }, name: 'a' },
    ],
    ['Unauthorized', { errmsg: 'not authorized on db to execute command', code: 13, codeName: 'Unauthorized' }, TTL_SPEC],
  ];
  it.each(failures)('%s stays an error', (_what, reply, spec) => {
    expect(unsupportedRefusal(serverError(reply), spec)).toBeUndefined();
  });

  it('an error without a code (a network error) stays an error', () => {
    expect(unsupportedRefusal(new Error('connection reset'), TTL_SPEC)).toBeUndefined();
    expect(unsupportedRefusal(undefined, TTL_SPEC)).toBeUndefined();
  });

  it('the duplicate hint of a real failure is unchanged', () => {
    const err = serverError({ errmsg: 'E11000 duplicate key error', code: 11000, codeName: 'DuplicateKey' });
    expect(describeError(err)).toMatch(/^the collection holds documents with the same values for this unique index; .*DuplicateKey \(11000\): E11000/);
  });
});

describe('markUnsupported: the plan with what the upstream is known not to build', () => {
  const REPORT: EffectivePolicy = { reconcile: 'report', prune: false };
  const ttl = idx('last_seen_1', [['last_seen', 1]], { expireAfterSeconds: 86400 });
  const sparse = idx('s', [['s', 1]], { sparse: true });
  const plain = idx('p', [['p', 1]]);
  const UPSTREAM = 'FerretDB v1.24.2 (MongoDB 7.0.42 wire), standalone';
  const refusal = { code: 238, codeName: 'NotImplemented', errmsg: 'Index option "expireAfterSeconds" is not implemented yet' };

  function planFor(managed: ManagedIndex[], actual: Document[] | null, policy = REPORT) {
    return planIndexes({
      slug: 'shop',
      managedIndexes: new Map([['t', managed]]),
      policy,
      database: 'db',
      tagField: 'app_id',
      actual: new Map([['t', actual]]),
    });
  }
  const verdict = (index: ManagedIndex, detail: string, upstream = UPSTREAM, reason?: typeof refusal): Verdict => ({
    spec: specFingerprint(index),
    upstream,
    detail,
    ...(reason ? { reason } : {}),
  });

  it('turns a known refusal (create) and a known accepted-otherwise index (drift) into unsupported, with no operation', () => {
    const managed = [ttl, sparse, plain];
    const plan = planFor(managed, [{ v: 2, key: { _id: 1 }, name: '_id_' }, { v: 2, key: { s: 1 }, name: 's' }, { v: 2, key: { p: 1 }, name: 'p' }], {
      reconcile: 'replace',
      prune: false,
    });
    expect(plan.entries.map((e) => [e.index, e.action, e.operation])).toEqual([
      ['last_seen_1', 'create', 'create'],
      ['s', 'drift', 'replace'],
      ['p', 'ok', 'none'],
    ]);
    const verdicts = new Map([
      [verdictKey('t', 'last_seen_1'), verdict(ttl, refusedDetail(refusal), UPSTREAM, refusal)],
      [verdictKey('t', 's'), verdict(sparse, acceptedDetail(plan.entries[1]!.detail))],
    ]);
    const marked = markUnsupported(plan, new Map([['t', managed]]), verdicts, UPSTREAM);
    expect(marked.entries.map((e) => [e.index, e.action, e.operation, e.spec])).toEqual([
      ['last_seen_1', 'unsupported', 'none', undefined],
      ['s', 'unsupported', 'none', undefined],
      ['p', 'ok', 'none', undefined],
    ]);
    expect(marked.entries[0]).toMatchObject({
      detail: 'the upstream cannot build this index: NotImplemented (238): Index option "expireAfterSeconds" is not implemented yet',
      reason: refusal,
    });
    expect(marked.entries[1]!.detail).toBe('the upstream accepted the index but does not list it as specified (sparse: manifest true, upstream absent)');
    expect(marked.entries[1]!.reason).toBeUndefined();
    // The plan given is not changed.
    expect(plan.entries[0]!.action).toBe('create');
  });

  it('a verdict does not apply to another upstream, to a changed spec, or to an index now listed as specified', () => {
    const verdicts = new Map([[verdictKey('t', 'last_seen_1'), verdict(ttl, refusedDetail(refusal), UPSTREAM, refusal)]]);
    const plan = planFor([ttl], null);
    const actions = (p: ReturnType<typeof planFor>) => p.entries.map((e) => e.action);
    expect(actions(markUnsupported(plan, new Map([['t', [ttl]]]), verdicts, UPSTREAM))).toEqual(['unsupported']);
    expect(actions(markUnsupported(plan, new Map([['t', [ttl]]]), verdicts, 'MongoDB 8.0.4, replica set rs0'))).toEqual(['create']);
    const changed = idx('last_seen_1', [['last_seen', 1]], { expireAfterSeconds: 3600 });
    expect(actions(markUnsupported(planFor([changed], null), new Map([['t', [changed]]]), verdicts, UPSTREAM))).toEqual(['create']);
    const listed = planFor([ttl], [{ v: 2, key: { last_seen: 1 }, name: 'last_seen_1', expireAfterSeconds: 86400 }]);
    expect(actions(markUnsupported(listed, new Map([['t', [ttl]]]), verdicts, UPSTREAM))).toEqual(['ok']);
  });

  it('planning errors stay errors', () => {
    const twice = [plain, idx('p', [['q', 1]])];
    const verdicts = new Map([[verdictKey('t', 'p'), verdict(twice[1]!, 'x')]]);
    const plan = planFor(twice, null);
    expect(markUnsupported(plan, new Map([['t', twice]]), verdicts, UPSTREAM).entries.map((e) => e.action)).toEqual(['create', 'error']);
  });
});
