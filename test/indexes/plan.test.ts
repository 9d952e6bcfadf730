import { Double, Int32, Long, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import type { IndexKey, ManagedIndex } from '../../src/apps/manifest-types.js';
import { createIndexSpec, effectivePolicy, planIndexes, planScope, type EffectivePolicy, type PlanInput } from '../../src/indexes/plan.js';

/** Pure tests of the planner: what it decides from listIndexes output, and the exact createIndexes entries. */

const REPORT: EffectivePolicy = { reconcile: 'report', prune: false };
const scope = planScope('shop', 'mdb_runtime', 'app_id');

function idx(name: string, keys: IndexKey[], options: Record<string, unknown> = {}): ManagedIndex {
  return { name, keys, options };
}

function plan(managed: Record<string, ManagedIndex[]>, actual: Record<string, Document[] | null>, policy = REPORT, extra: Partial<PlanInput> = {}) {
  return planIndexes({
    slug: 'shop',
    managedIndexes: new Map(Object.entries(managed)),
    policy,
    database: 'mdb_runtime',
    tagField: 'app_id',
    actual: new Map(Object.entries(actual)),
    ...extra,
  });
}

const ID = { v: 2, key: { _id: 1 }, name: '_id_' };

describe('createIndexSpec: the exact createIndexes entry', () => {
  const cases: [string, ManagedIndex, Document][] = [
    ['single', idx('a_1', [['a', 1]]), { key: { a: 1 }, name: 'a_1' }],
    ['compound, order kept', idx('z_a', [['z', -1], ['a', 1]]), { key: { z: -1, a: 1 }, name: 'z_a' }],
    ['unique', idx('email', [['email', 1]], { unique: true }), { key: { email: 1 }, name: 'email', unique: true }],
    ['sparse', idx('s', [['s', 1]], { sparse: true }), { key: { s: 1 }, name: 's', sparse: true }],
    ['TTL', idx('ttl', [['created_at', 1]], { expireAfterSeconds: 3600 }), { key: { created_at: 1 }, name: 'ttl', expireAfterSeconds: 3600 }],
    [
      'partial: scoped with the tag',
      idx('open', [['due', 1]], { partialFilterExpression: { status: 'open' } }),
      { key: { due: 1 }, name: 'open', partialFilterExpression: { status: 'open', app_id: 'shop' } },
    ],
    [
      'partial naming the tag: kept under $and, ours added',
      idx('p', [['due', 1]], { partialFilterExpression: { app_id: 'other', x: { $gt: 1 } } }),
      { key: { due: 1 }, name: 'p', partialFilterExpression: { x: { $gt: 1 }, $and: [{ app_id: 'other' }], app_id: 'shop' } },
    ],
    [
      'collation',
      idx('name_ci', [['name', 1]], { collation: { locale: 'en', strength: 2 } }),
      { key: { name: 1 }, name: 'name_ci', collation: { locale: 'en', strength: 2 } },
    ],
    [
      'text with weights and default_language',
      idx('search', [['title', 'text'], ['body', 'text']], { weights: { title: 10 }, default_language: 'french' }),
      { key: { title: 'text', body: 'text' }, name: 'search', weights: { title: 10 }, default_language: 'french' },
    ],
    ['2dsphere', idx('loc', [['loc', '2dsphere']]), { key: { loc: '2dsphere' }, name: 'loc' }],
    ['hashed', idx('h', [['user', 'hashed']]), { key: { user: 'hashed' }, name: 'h' }],
    [
      'wildcard with projection',
      idx('w', [['$**', 1]], { wildcardProjection: { secret: 0 } }),
      { key: { '$**': 1 }, name: 'w', wildcardProjection: { secret: 0 } },
    ],
    ['wildcard on a path', idx('attrs', [['attrs.$**', 1]]), { key: { 'attrs.$**': 1 }, name: 'attrs' }],
  ];
  for (const [what, index, expected] of cases) {
    it(what, () => {
      const spec = createIndexSpec(scope, index);
      expect(spec).toEqual(expected);
      expect(Object.keys(spec.key as Document)).toEqual(Object.keys(expected.key as Document));
    });
  }

  it('keys with integer-like field names keep their order (sent as a Map)', () => {
    const spec = createIndexSpec(scope, idx('n', [['b', 1], ['10', -1], ['2', 1]]));
    expect(spec.key).toBeInstanceOf(Map);
    expect([...(spec.key as unknown as Map<string, number>).entries()]).toEqual([['b', 1], ['10', -1], ['2', 1]]);
  });

  it('the tag field follows the runtime config', () => {
    const spec = createIndexSpec(planScope('shop', 'db', 'tenant'), idx('p', [['a', 1]], { partialFilterExpression: { a: { $exists: true } } }));
    expect(spec.partialFilterExpression).toEqual({ a: { $exists: true }, tenant: 'shop' });
  });
});

describe('planIndexes', () => {
  it('creates what is missing, on the physical collection; a missing collection is said so', () => {
    const p = plan(
      { tasks: [idx('status_sort', [['status', 1], ['created_at', -1]])], notes: [idx('n', [['n', 1]])] },
      { tasks: [ID], notes: null },
    );
    expect(p.entries).toEqual([
      expect.objectContaining({ collection: 'tasks', index: 'status_sort', physicalCollection: 'shop_tasks', action: 'create', operation: 'create', spec: { key: { status: 1, created_at: -1 }, name: 'status_sort' } }),
      expect.objectContaining({ collection: 'notes', index: 'n', physicalCollection: 'shop_notes', action: 'create', detail: 'collection shop_notes does not exist yet (building the index creates it)' }),
    ]);
  });

  it('ok when the upstream lists the same keys and options (numbers of any BSON type, v/ns/background ignored)', () => {
    const p = plan(
      { t: [idx('a', [['a', 1], ['b', -1]], { unique: true, expireAfterSeconds: 60 })] },
      { t: [ID, { v: 1, ns: 'mdb_runtime.shop_t', background: true, key: { a: new Int32(1), b: new Double(-1) }, name: 'a', unique: true, expireAfterSeconds: new Long(60) }] },
    );
    expect(p.entries.map((e) => [e.index, e.action, e.detail])).toEqual([['a', 'ok', undefined]]);
  });

  it('server-added defaults are not drift: text, 2dsphere, collation, explicit false options', () => {
    const p = plan(
      {
        t: [
          idx('search', [['title', 'text'], ['body', 'text']], { weights: { title: 10 } }),
          idx('cat_search', [['cat', 1], ['title', 'text']], { default_language: 'french' }),
          idx('loc', [['loc', '2dsphere']]),
          idx('ci', [['name', 1]], { collation: { locale: 'en', strength: 2 } }),
          idx('plain', [['p', 1]], { unique: false, sparse: false }),
          idx('simple', [['q', 1]], { collation: { locale: 'simple' } }),
          idx('wild', [['$**', 1]], { wildcardProjection: { secret: 0, 'a.b': 1 } }),
        ],
      },
      {
        t: [
          ID,
          { v: 2, key: { _fts: 'text', _ftsx: 1 }, name: 'search', weights: { body: 1, title: 10 }, default_language: 'english', language_override: 'language', textIndexVersion: 3 },
          { v: 2, key: { cat: 1, _fts: 'text', _ftsx: 1 }, name: 'cat_search', weights: { title: 1 }, default_language: 'french', language_override: 'language', textIndexVersion: 3 },
          { v: 2, key: { loc: '2dsphere' }, name: 'loc', '2dsphereIndexVersion': 3 },
          {
            v: 2,
            key: { name: 1 },
            name: 'ci',
            collation: { locale: 'en', caseLevel: false, caseFirst: 'off', strength: 2, numericOrdering: false, alternate: 'non-ignorable', maxVariable: 'punct', normalization: false, backwards: false, version: '57.1' },
          },
          { v: 2, key: { p: 1 }, name: 'plain' },
          { v: 2, key: { q: 1 }, name: 'simple' },
          { v: 2, key: { '$**': 1 }, name: 'wild', wildcardProjection: { 'a.b': true, secret: false } },
        ],
      },
    );
    expect(p.entries.map((e) => [e.index, e.action, e.detail])).toEqual([
      ['search', 'ok', undefined],
      ['cat_search', 'ok', undefined],
      ['loc', 'ok', undefined],
      ['ci', 'ok', undefined],
      ['plain', 'ok', undefined],
      ['simple', 'ok', undefined],
      ['wild', 'ok', undefined],
    ]);
  });

  it('drift: other keys, other key order, missing or extra options, other weights, other collation', () => {
    const p = plan(
      {
        t: [
          idx('keys', [['a', 1], ['b', 1]]),
          idx('order', [['a', 1], ['b', 1]]),
          idx('uniq', [['u', 1]], { unique: true }),
          idx('extra', [['e', 1]]),
          idx('ttl', [['t', 1]], { expireAfterSeconds: 60 }),
          idx('search', [['title', 'text']], { weights: { title: 10 } }),
          idx('ci', [['name', 1]], { collation: { locale: 'en', strength: 2 } }),
        ],
      },
      {
        t: [
          ID,
          { v: 2, key: { a: 1 }, name: 'keys' },
          { v: 2, key: { b: 1, a: 1 }, name: 'order' },
          { v: 2, key: { u: 1 }, name: 'uniq' },
          { v: 2, key: { e: 1 }, name: 'extra', unique: true },
          { v: 2, key: { t: 1 }, name: 'ttl', expireAfterSeconds: 120 },
          { v: 2, key: { _fts: 'text', _ftsx: 1 }, name: 'search', weights: { title: 1 }, default_language: 'english', language_override: 'language', textIndexVersion: 3 },
          { v: 2, key: { name: 1 }, name: 'ci', collation: { locale: 'en', strength: 3, version: '57.1' } },
        ],
      },
    );
    expect(p.entries.map((e) => [e.index, e.action, e.operation, e.detail])).toEqual([
      ['keys', 'drift', 'none', `keys: manifest {"a":1,"b":1}, upstream {"a":1} (reported only: reconcile is 'report')`],
      ['order', 'drift', 'none', `keys: manifest {"a":1,"b":1}, upstream {"b":1,"a":1} (reported only: reconcile is 'report')`],
      ['uniq', 'drift', 'none', `unique: manifest true, upstream absent (reported only: reconcile is 'report')`],
      ['extra', 'drift', 'none', `unique: manifest absent, upstream true (reported only: reconcile is 'report')`],
      ['ttl', 'drift', 'none', `expireAfterSeconds: manifest 60, upstream 120 (reported only: reconcile is 'report')`],
      ['search', 'drift', 'none', `weights: manifest {"title":10}, upstream {"title":1} (reported only: reconcile is 'report')`],
      ['ci', 'drift', 'none', `collation: manifest {"locale":"en","strength":2}, upstream {"strength":3} (reported only: reconcile is 'report')`],
    ]);
  });

  it('drift under replace: the rebuild spec comes with it', () => {
    const p = plan({ t: [idx('uniq', [['u', 1]], { unique: true })] }, { t: [ID, { v: 2, key: { u: 1 }, name: 'uniq' }] }, { reconcile: 'replace', prune: false });
    expect(p.entries).toEqual([
      expect.objectContaining({ action: 'drift', operation: 'replace', spec: { key: { u: 1 }, name: 'uniq', unique: true }, detail: 'unique: manifest true, upstream absent (will be replaced)' }),
    ]);
  });

  it('partial filters are compared scoped: the scoped filter is ok, the app\'s bare filter is drift', () => {
    const managed = { t: [idx('open', [['due', 1]], { partialFilterExpression: { status: 'open' } })] };
    const scoped = plan(managed, { t: [ID, { v: 2, key: { due: 1 }, name: 'open', partialFilterExpression: { app_id: 'shop', status: 'open' } }] });
    expect(scoped.entries[0]).toMatchObject({ action: 'ok' });
    const bare = plan(managed, { t: [ID, { v: 2, key: { due: 1 }, name: 'open', partialFilterExpression: { status: 'open' } }] });
    expect(bare.entries[0]).toMatchObject({ action: 'drift', detail: expect.stringContaining('partialFilterExpression: manifest {"status":"open","app_id":"shop"}, upstream {"status":"open"}') });
  });

  it('prune: unmanaged indexes of managed collections only when prune is on, never _id_', () => {
    const managed = { t: [idx('a', [['a', 1]])] };
    const actual = { t: [ID, { v: 2, key: { a: 1 }, name: 'a' }, { v: 2, key: { x: 1 }, name: 'by_hand' }], other: [ID, { v: 2, key: { y: 1 }, name: 'y' }] };
    expect(plan(managed, actual).entries.map((e) => [e.index, e.action])).toEqual([['a', 'ok']]);
    expect(plan(managed, actual, { reconcile: 'report', prune: true }).entries.map((e) => [e.collection, e.index, e.action, e.operation])).toEqual([
      ['t', 'a', 'ok', 'none'],
      ['t', 'by_hand', 'prune', 'drop'],
    ]);
  });

  it('errors: _id_, duplicate names, bad collection names, non-document partial filters, a twin under another name', () => {
    const p = plan(
      {
        t: [idx('_id_', [['_id', 1]]), idx('d', [['a', 1]]), idx('d', [['b', 1]]), idx('pf', [['c', 1]], { partialFilterExpression: 'x' }), idx('same', [['k', 1]])],
        'system.users': [idx('s', [['a', 1]])],
        'a$b': [idx('s', [['a', 1]])],
      },
      { t: [ID, { v: 2, key: { k: 1 }, name: 'k_1' }] },
    );
    const rows = p.entries.map((e) => [e.collection, e.index, e.action, e.error]);
    expect(rows).toEqual([
      ['t', '_id_', 'error', expect.stringContaining('cannot be managed')],
      ['t', 'd', 'create', undefined],
      ['t', 'd', 'error', expect.stringContaining('two indexes named')],
      ['t', 'pf', 'error', expect.stringContaining("BSON field 'partialFilterExpression' is the wrong type")],
      ['t', 'same', 'error', expect.stringContaining("already indexed as 'k_1'")],
      ['system.users', 's', 'error', expect.stringContaining('system collections')],
      ['a$b', 's', 'error', expect.stringContaining("may not contain '$'")],
    ]);
    // With prune on, the twin goes first and the managed index is built.
    const pruned = plan({ t: [idx('same', [['k', 1]])] }, { t: [ID, { v: 2, key: { k: 1 }, name: 'k_1' }] }, { reconcile: 'report', prune: true });
    expect(pruned.entries.map((e) => [e.index, e.action, e.detail])).toEqual([
      ['same', 'create', "after pruning 'k_1' (same keys and options)"],
      ['k_1', 'prune', 'not managed by the manifest (prune is on)'],
    ]);
  });
});

describe('effectivePolicy', () => {
  const defaults: EffectivePolicy = { reconcile: 'replace', prune: true };
  it('a manifest value wins over the runtime default; an unset one falls back to it; an override wins over both', () => {
    expect(effectivePolicy({ reconcile: 'report', prune: false }, defaults)).toEqual({ reconcile: 'report', prune: false });
    expect(effectivePolicy({}, defaults)).toEqual({ reconcile: 'replace', prune: true });
    expect(effectivePolicy(undefined, { reconcile: 'report', prune: false })).toEqual({ reconcile: 'report', prune: false });
    expect(effectivePolicy({ reconcile: 'report', prune: false }, defaults, { reconcile: 'replace' })).toEqual({ reconcile: 'replace', prune: false });
  });
});
