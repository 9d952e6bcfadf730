import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { checkManifest, indexName, loadManifests, type AppManifest } from '../../src/apps/manifests.js';
import { MANIFEST_EXAMPLE } from '../../src/apps/reference.js';
import { AppRegistry } from '../../src/apps/registry.js';
import { removeConfigDirs } from '../helpers/apps.js';

/** managed_indexes, index_policy, data_access, websockets, limits and observability. */

afterAll(() => removeConfigDirs());

const FILE = '/cfg/apps/x.yaml';
const open = 'slug: x\nauth_required: false\n';

function load(text: string, file = FILE): AppManifest {
  const { manifest, problems } = checkManifest(file, text, { env: {}, configDir: '/cfg' });
  expect(problems).toEqual([]);
  return manifest!;
}

function problems(text: string): string[] {
  const { manifest, problems } = checkManifest(FILE, text, { env: {}, configDir: '/cfg' });
  expect(manifest).toBeUndefined();
  return problems;
}

describe('managed_indexes normalized for the reconciler', () => {
  it('keeps key order (the file\'s, even for integer-like fields), generates names as the server does, passes options through', () => {
    const m = load(`${open}managed_indexes:
  tasks:
    - keys: { status: 1, created_at: -1 }
    - { keys: { "2": 1, a: -1, "1": 1 }, name: odd_fields }
    - { keys: [[owner, 1], [title, -1]], unique: true, collation: { locale: en, strength: 2 } }
    - { keys: { last_seen: 1 }, expireAfterSeconds: 3600 }
    - { keys: { sku: 1 }, unique: true, partialFilterExpression: { sku: { $exists: true } } }
    - { keys: { title: text, body: text }, weights: { title: 10 }, default_language: french, language_override: lang, textIndexVersion: 3 }
  places:
    - { keys: { loc: 2dsphere }, 2dsphereIndexVersion: 3 }
    - { keys: { grid: 2d }, bits: 20, min: -90, max: 90 }
    - { keys: { owner: hashed } }
    - { keys: { "$**": 1 }, wildcardProjection: { secret: 0 } }
    - { keys: { "attrs.$**": 1 }, sparse: true, hidden: true }
`);
    const tasks = m.managedIndexes.get('tasks')!;
    expect(tasks.map((i) => [i.name, i.keys, i.options])).toEqual([
      ['status_1_created_at_-1', [['status', 1], ['created_at', -1]], {}],
      ['odd_fields', [['2', 1], ['a', -1], ['1', 1]], {}],
      ['owner_1_title_-1', [['owner', 1], ['title', -1]], { unique: true, collation: { locale: 'en', strength: 2 } }],
      ['last_seen_1', [['last_seen', 1]], { expireAfterSeconds: 3600 }],
      ['sku_1', [['sku', 1]], { unique: true, partialFilterExpression: { sku: { $exists: true } } }],
      [
        'title_text_body_text',
        [['title', 'text'], ['body', 'text']],
        { weights: { title: 10 }, default_language: 'french', language_override: 'lang', textIndexVersion: 3 },
      ],
    ]);
    expect(m.managedIndexes.get('places')!.map((i) => [i.name, i.keys, i.options])).toEqual([
      ['loc_2dsphere', [['loc', '2dsphere']], { '2dsphereIndexVersion': 3 }],
      ['grid_2d', [['grid', '2d']], { bits: 20, min: -90, max: 90 }],
      ['owner_hashed', [['owner', 'hashed']], {}],
      ['$**_1', [['$**', 1]], { wildcardProjection: { secret: 0 } }],
      ['attrs.$**_1', [['attrs.$**', 1]], { sparse: true, hidden: true }],
    ]);
    expect([...m.managedIndexes.keys()]).toEqual(['tasks', 'places']);
  });

  it('names indexes like the server: fields and kinds joined by _', () => {
    expect(indexName([['a', 1]])).toBe('a_1');
    expect(indexName([['a.b', -1], ['c', 'hashed']])).toBe('a.b_-1_c_hashed');
  });

  it('treats an empty list as a managed collection without indexes, and defaults to no indexes', () => {
    expect([...load(`${open}managed_indexes:\n  logs: []\n  audit:\n`).managedIndexes]).toEqual([
      ['logs', []],
      ['audit', []],
    ]);
    expect(load(open).managedIndexes.size).toBe(0);
  });

  it.each([
    ['a repeated name', '- { keys: { a: 1 }, name: n }\n    - { keys: { b: 1 }, name: n }', ":6:31: managed_indexes.t[1].name: index name 'n' is also the name of managed_indexes.t[0]; index names must be unique within a collection"],
    ['a given name equal to a generated one', '- { keys: { a: 1 } }\n    - { keys: { b: 1 }, name: a_1 }', ":6:31: managed_indexes.t[1].name: index name 'a_1' is also the name of managed_indexes.t[0]"],
    ['the same keys twice', '- { keys: { a: 1, b: -1 } }\n    - { keys: [[a, 1], [b, -1]], name: other }', ':6:15: managed_indexes.t[1].keys: the same keys as managed_indexes.t[0]; a collection keeps one index per key pattern: merge the two entries'],
    ['a field twice', '- { keys: [[a, 1], [a, -1]] }', ":5:24: managed_indexes.t[0].keys[1]: field 'a' appears twice in the keys"],
    ['the _id index', '- { keys: { _id: 1 } }', ':5:15: managed_indexes.t[0].keys: MongoDB keeps an _id index (named _id_) on every collection; remove this entry'],
    ['the name _id_', '- { keys: { a: 1 }, name: _id_ }', ":5:31: managed_indexes.t[0].name: '_id_' is the name of the _id index; choose another name"],
    ['two text indexes', '- { keys: { a: text } }\n    - { keys: { b: text } }', ':6:15: managed_indexes.t[1].keys: a collection has at most one text index, and managed_indexes.t[0] is one: put all text fields in one index'],
    ['text options without text', '- { keys: { a: 1 }, weights: { a: 2 } }', ":5:25: managed_indexes.t[0].weights: applies to text indexes only (a key of kind 'text')"],
    ['2d options without 2d', '- { keys: { a: 2dsphere }, bits: 3 }', ":5:32: managed_indexes.t[0].bits: applies to 2d indexes only (a key of kind '2d')"],
    ['min above max', '- { keys: { a: 2d }, min: 5, max: 1 }', ':5:39: managed_indexes.t[0].max: must be greater than min (5)'],
    ['2dsphereIndexVersion without 2dsphere', "- { keys: { a: 1 }, '2dsphereIndexVersion': 3 }", ":5:25: managed_indexes.t[0].2dsphereIndexVersion: applies to 2dsphere indexes only (a key of kind '2dsphere')"],
    ['a unique hashed index', '- { keys: { a: hashed }, unique: true }', ':5:38: managed_indexes.t[0].unique: a hashed index cannot be unique'],
    ['two hashed fields', '- { keys: { a: hashed, b: hashed } }', ':5:15: managed_indexes.t[0].keys: an index has at most one hashed field'],
    ['a unique wildcard index', "- { keys: { '$**': 1 }, unique: true }", ':5:37: managed_indexes.t[0].unique: a wildcard index cannot be unique'],
    ['a wildcard of kind text', "- { keys: { 'a.$**': text } }", ':5:15: managed_indexes.t[0].keys: a wildcard field takes kind 1 or -1'],
    ['wildcardProjection without $**', "- { keys: { 'a.$**': 1 }, wildcardProjection: { b: 1 } }", ":5:31: managed_indexes.t[0].wildcardProjection: needs the key '$**'"],
    ['a compound TTL index', '- { keys: { a: 1, b: 1 }, expireAfterSeconds: 5 }', ':5:31: managed_indexes.t[0].expireAfterSeconds: a TTL index has one key: an ascending or descending date field'],
    ['a TTL index on _id', '- { keys: { _id: -1 }, expireAfterSeconds: 5 }', ':5:28: managed_indexes.t[0].expireAfterSeconds: a TTL index has one key'],
    ['sparse with a partial filter', '- { keys: { a: 1 }, sparse: true, partialFilterExpression: { a: 1 } }', ':5:25: managed_indexes.t[0].sparse: cannot be combined with partialFilterExpression'],
  ])('refuses %s', (_what, entries, expected) => {
    const all = problems(`${open}managed_indexes:\n  t:\n    ${entries}\n`);
    expect(all.some((p) => p.startsWith(`${FILE}${expected}`)), all.join('\n')).toBe(true);
  });

  it('reports every index problem of a file at once', () => {
    const all = problems(`${open}managed_indexes:\n  t:\n    - { keys: { a: hashed }, unique: true }\n    - { keys: { b: 1 }, weights: { b: 1 } }\n`);
    expect(all.map((p) => p.split(": ")[0])).toEqual([`${FILE}:5:38`, `${FILE}:6:25`]);
  });
});

describe('index_policy, data_access, websockets, limits, observability', () => {
  it('reads every section into the normalized manifest', () => {
    const m = load(`${open}index_policy: { reconcile: replace, prune: true }
data_access: { read_only: true, collections: [tasks, notes] }
websockets:
  - { path: /live/tasks, collection: tasks, filter: { status: open } }
  - { path: /live/notes, collection: notes }
limits: { connections: 5, operations_per_second: 100, max_document_bytes: 4096, max_documents_per_collection: 1000 }
observability: { slow_operation_ms: 0 }
`);
    expect(m.indexPolicy).toEqual({ reconcile: 'replace', prune: true });
    expect(m.dataAccess).toEqual({ readOnly: true, collections: ['tasks', 'notes'] });
    expect(m.websockets).toEqual([
      { path: '/live/tasks', collection: 'tasks', filter: { status: 'open' } },
      { path: '/live/notes', collection: 'notes', filter: undefined },
    ]);
    expect(m.limits).toEqual({ connections: 5, operationsPerSecond: 100, maxDocumentBytes: 4096, maxDocumentsPerCollection: 1000 });
    expect(m.observability).toEqual({ slowOperationMs: 0 });
    expect(m.schemaVersion).toBe(3);
  });

  it('leaves out what the file leaves out: the runtime defaults apply (index policy), no limit, no restriction', () => {
    const m = load(`${open}index_policy: { prune: true }\nlimits: { connections: 3 }\n`);
    expect(m.indexPolicy).toEqual({ prune: true });
    expect(m.limits).toEqual({ connections: 3 });
    const bare = load(open);
    expect(bare.indexPolicy).toEqual({});
    expect(bare.limits).toEqual({});
    expect(bare.dataAccess).toEqual({ readOnly: false, collections: undefined });
    expect(bare.observability).toEqual({ slowOperationMs: undefined });
    expect(bare.websockets).toEqual([]);
  });

  it.each([
    ['an index outside data_access.collections', 'data_access: { collections: [a] }\nmanaged_indexes:\n  b: []\n', ":5:3: managed_indexes.b: collection 'b' is not in data_access.collections (a); add it there or remove its indexes"],
    ['an endpoint outside data_access.collections', 'data_access: { collections: [a] }\nwebsockets: [{ path: /w, collection: b }]\n', ":4:38: websockets[0].collection: collection 'b' is not in data_access.collections (a)"],
    ['a websocket path of the proxy', 'websockets: [{ path: /metrics, collection: a }]\n', ":3:22: websockets[0].path: '/metrics' belongs to the proxy's own HTTP endpoints"],
    ['the status page path as a websocket path', 'websockets: [{ path: /, collection: a }]\n', ":3:22: websockets[0].path: '/' belongs to the proxy's own HTTP endpoints"],
    ['a websocket path under /apps', 'websockets: [{ path: /apps/x, collection: a }]\n', ":3:22: websockets[0].path: '/apps' belongs to the proxy's own HTTP endpoints"],
    ['a repeated websocket path', 'websockets:\n  - { path: /w, collection: a }\n  - { path: /w, collection: b }\n', ":5:13: websockets[1].path: '/w' is also the path of websockets[0]; paths must be unique"],
  ])('refuses %s', (_what, body, expected) => {
    const all = problems(`${open}${body}`);
    expect(all.some((p) => p.startsWith(`${FILE}${expected}`)), all.join('\n')).toBe(true);
  });

  it("accepts '*' in data_access.collections as every collection", () => {
    expect(load(`${open}data_access: { collections: ['*'] }\nmanaged_indexes: { t: [] }\n`).dataAccess.collections).toEqual(['*']);
  });
});

describe('the examples load', () => {
  it('the reference page example (every section)', () => {
    const m = load(MANIFEST_EXAMPLE, '/cfg/apps/task_manager.yaml');
    expect([...m.managedIndexes.keys()]).toEqual(['tasks', 'sessions']);
    expect(m.managedIndexes.get('sessions')!.map((i) => i.name)).toEqual(['last_seen_1', 'user_id_1_started_at_-1']);
    expect(m.limits.connections).toBe(50);
  });

  it('config/apps: regular, compound, unique and TTL indexes, index policy, limits, observability', () => {
    const apps = AppRegistry.build(loadManifests(path.resolve('config'), { TASK_MANAGER_JWT_SECRET: 's'.repeat(32) }));
    const tm = apps.get('task_manager')!;
    expect(tm.unavailable).toBeUndefined();
    expect(tm.warnings).toEqual([]);
    const all = [...tm.managedIndexes.values()].flat();
    expect(all.some((i) => i.keys.length > 1)).toBe(true);
    expect(all.some((i) => i.options.unique === true)).toBe(true);
    expect(all.some((i) => typeof i.options.expireAfterSeconds === 'number')).toBe(true);
    expect(tm.indexPolicy).toEqual({ reconcile: 'report', prune: false });
    expect(Object.keys(tm.limits).sort()).toEqual(['connections', 'maxDocumentBytes', 'maxDocumentsPerCollection', 'operationsPerSecond']);
    expect(tm.observability.slowOperationMs).toBe(200);
    expect(apps.get('playground')!.managedIndexes.get('notes')![0]!.name).toBe('recent_first');
  });
});
