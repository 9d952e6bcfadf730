import { BSONRegExp, Long, deserialize, serialize, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import { rewriteCursorBatch, rewriteReply } from '../../src/policy/reply.js';
import { makeScope } from '../../src/policy/scope.js';
import type { ReplyPlan } from '../../src/policy/handler.js';

const scope = makeScope('app1', 'mdb_runtime', 'app_id');
const exposed = makeScope('app1', 'mdb_runtime', 'app_id', true);
const bytes = (d: Document) => Buffer.from(serialize(d));
const docs = (appDb: string): ReplyPlan => ({ kind: 'cursor', view: { kind: 'documents', appDb }, collections: ['tasks'] });

describe('reply rewriting', () => {
  it('maps cursor.ns back and strips the tag from every batch document', () => {
    const body = bytes({
      cursor: { firstBatch: [{ _id: 1, t: 'a', app_id: 'app1' }, { _id: 2, app_id: 'app1', n: { app_id: 'kept' } }], id: Long.fromNumber(9), ns: 'mdb_runtime.app1_tasks' },
      ok: 1,
    });
    const out = deserialize(rewriteReply(scope, docs('mine'), body), { promoteLongs: false });
    expect(out).toEqual({
      cursor: { firstBatch: [{ _id: 1, t: 'a' }, { _id: 2, n: { app_id: 'kept' } }], id: Long.fromNumber(9), ns: 'mine.tasks' },
      ok: 1,
    });
  });

  it('keeps the tag when the manifest exposes it', () => {
    const body = bytes({ cursor: { nextBatch: [{ _id: 1, app_id: 'app1' }], id: 0, ns: 'mdb_runtime.app1_tasks' }, ok: 1 });
    expect(deserialize(rewriteCursorBatch(exposed, { kind: 'documents', appDb: 'd' }, body))).toEqual({
      cursor: { nextBatch: [{ _id: 1, app_id: 'app1' }], id: 0, ns: 'd.tasks' },
      ok: 1,
    });
  });

  it('maps aggregate: 1 namespaces', () => {
    const body = bytes({ cursor: { firstBatch: [], id: 0, ns: 'mdb_runtime.$cmd.aggregate' }, ok: 1 });
    expect(deserialize(rewriteReply(scope, docs('d'), body)).cursor.ns).toBe('d.$cmd.aggregate');
  });

  it('strips the tag from findAndModify values, and leaves null alone', () => {
    const plan: ReplyPlan = { kind: 'findAndModify', appDb: 'd', collections: ['c'] };
    const body = bytes({ lastErrorObject: { n: 1 }, value: { _id: 1, app_id: 'app1', v: 2 }, ok: 1 });
    expect(deserialize(rewriteReply(scope, plan, body)).value).toEqual({ _id: 1, v: 2 });
    const none = bytes({ lastErrorObject: { n: 0 }, value: null, ok: 1 });
    expect(rewriteReply(scope, plan, none)).toBe(none);
  });

  it('shows only the app collections of listCollections, under their names', () => {
    const body = bytes({
      cursor: {
        firstBatch: [
          { name: 'app1_tasks', type: 'collection', options: {}, idIndex: { v: 2, key: { _id: 1 }, name: '_id_', ns: 'mdb_runtime.app1_tasks' } },
          { name: 'app1_v', type: 'view', options: { viewOn: 'app1_tasks', pipeline: [] } },
          { name: 'app2_secret', type: 'collection' },
          { name: 'app1_notes', type: 'collection' },
        ],
        id: 0,
        ns: 'mdb_runtime.$cmd.listCollections',
      },
      ok: 1,
    });
    const all = deserialize(rewriteCursorBatch(scope, { kind: 'collections', appDb: 'mine' }, body));
    expect(all.cursor.ns).toBe('mine.$cmd.listCollections');
    expect(all.cursor.firstBatch).toEqual([
      { name: 'tasks', type: 'collection', options: {}, idIndex: { v: 2, key: { _id: 1 }, name: '_id_', ns: 'mine.tasks' } },
      { name: 'v', type: 'view', options: { viewOn: 'tasks', pipeline: [] } },
      { name: 'notes', type: 'collection' },
    ]);
    const named = deserialize(rewriteCursorBatch(scope, { kind: 'collections', appDb: 'mine', names: (n) => n === 'notes' }, body));
    expect(named.cursor.firstBatch.map((c: Document) => c.name)).toEqual(['notes']);
  });

  it('maps index namespaces of listIndexes', () => {
    const body = bytes({ cursor: { firstBatch: [{ v: 2, key: { a: 1 }, name: 'a_1', ns: 'mdb_runtime.app1_tasks' }], id: 0, ns: 'mdb_runtime.app1_tasks' }, ok: 1 });
    const out = deserialize(rewriteCursorBatch(scope, { kind: 'indexes', appDb: 'mine' }, body));
    expect(out.cursor).toEqual({ firstBatch: [{ v: 2, key: { a: 1 }, name: 'a_1', ns: 'mine.tasks' }], id: 0, ns: 'mine.tasks' });
  });

  it('maps physical names in errors and write errors', () => {
    const plan: ReplyPlan = { kind: 'plain', appDb: 'mine', collections: ['tasks'] };
    const err = bytes({ ok: 0, errmsg: 'ns not found mdb_runtime.app1_tasks', code: 26, codeName: 'NamespaceNotFound' });
    expect(deserialize(rewriteReply(scope, plan, err)).errmsg).toBe('ns not found mine.tasks');
    const we = bytes({
      n: 0,
      writeErrors: [{ index: 0, code: 11000, errmsg: 'E11000 duplicate key error collection: mdb_runtime.app1_tasks index: _id_ dup key: { _id: 1 }' }],
      ok: 1,
    });
    expect(deserialize(rewriteReply(scope, plan, we)).writeErrors[0].errmsg).toBe('E11000 duplicate key error collection: mine.tasks index: _id_ dup key: { _id: 1 }');
    const bare = bytes({ ok: 0, errmsg: "collection app1_tasks already exists", code: 48 });
    expect(deserialize(rewriteReply(scope, plan, bare)).errmsg).toBe('collection tasks already exists');
  });

  it('maps change events: namespaces back, the tag out of documents', () => {
    const body = bytes({
      cursor: {
        nextBatch: [
          { _id: { _data: 'x' }, operationType: 'insert', ns: { db: 'mdb_runtime', coll: 'app1_tasks' }, documentKey: { _id: 1 }, fullDocument: { _id: 1, a: 1, app_id: 'app1' } },
          { _id: { _data: 'y' }, operationType: 'rename', ns: { db: 'mdb_runtime', coll: 'app1_tasks' }, to: { db: 'mdb_runtime', coll: 'app1_done' } },
        ],
        id: 5,
        ns: 'mdb_runtime.app1_tasks',
      },
      ok: 1,
    });
    const out = deserialize(rewriteCursorBatch(scope, { kind: 'changeEvents', appDb: 'mine' }, body));
    expect(out.cursor.ns).toBe('mine.tasks');
    expect(out.cursor.nextBatch).toEqual([
      { _id: { _data: 'x' }, operationType: 'insert', ns: { db: 'mine', coll: 'tasks' }, documentKey: { _id: 1 }, fullDocument: { _id: 1, a: 1 } },
      { _id: { _data: 'y' }, operationType: 'rename', ns: { db: 'mine', coll: 'tasks' }, to: { db: 'mine', coll: 'done' } },
    ]);
  });

  it('maps every namespace in an explain reply', () => {
    const plan: ReplyPlan = { kind: 'explain', appDb: 'mine', collections: ['tasks'] };
    const body = bytes({
      queryPlanner: { namespace: 'mdb_runtime.app1_tasks', winningPlan: { stage: 'COLLSCAN' } },
      command: { find: 'app1_tasks', filter: { app_id: 'app1' }, $db: 'mdb_runtime' },
      ok: 1,
    });
    expect(deserialize(rewriteReply(scope, plan, body))).toEqual({
      queryPlanner: { namespace: 'mine.tasks', winningPlan: { stage: 'COLLSCAN' } },
      command: { find: 'tasks', filter: { app_id: 'app1' }, $db: 'mine' },
      ok: 1,
    });
  });

  it('returns the same bytes when nothing changes', () => {
    const plain = bytes({ n: 1, ok: 1 });
    expect(rewriteReply(scope, { kind: 'plain', appDb: 'd', collections: [] }, plain)).toBe(plain);
    const regex = bytes({ cursor: { firstBatch: [{ r: new BSONRegExp('a', 'i') }], id: 0, ns: 'd.tasks' }, ok: 1 });
    expect(deserialize(rewriteCursorBatch(exposed, { kind: 'documents', appDb: 'd' }, regex), { bsonRegExp: true }).cursor.firstBatch[0].r).toEqual(new BSONRegExp('a', 'i'));
  });
});
