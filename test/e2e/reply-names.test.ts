import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Binary, Long, type Document } from 'bson';
import { commandHelp, lookupCommand } from '../../src/policy/commands.js';
import { RawClient } from '../../src/testing/wire-client.js';
import { runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';

/**
 * No reply shows a physical name: every allowed command, on its success and its error paths, is answered
 * without the shared database's name and without any app's `<slug>_` prefix (docs/security.md). The
 * apps' own names are chosen so that none of them contains those strings: any occurrence is a leak.
 */

const DB = 'app';
let proxy: TestProxy;
let alpha: RawClient;
let physicalDb: string;
const SLUGS = ['alpha', 'beta'];

/** What a reply must never contain. */
function leaks(reply: Document): string[] {
  const text = JSON.stringify(reply);
  return [physicalDb, ...SLUGS.map((s) => `${s}_`)].filter((mark) => text.includes(mark));
}

/** Every reply so far, in order (later steps read cursor ids from them). */
const seen: Document[] = [];

const lsid = { id: new Binary(Buffer.alloc(16, 7), Binary.SUBTYPE_UUID) };

/**
 * Per canonical command: commands that succeed and commands that fail (run in order, on alpha's
 * connection; each may use the replies before it through `last`). Every allowed command has an entry.
 */
type Step = Document | ((last: Document[]) => Document) | { ferretGap: Document };

/** A step whose expected outcome FerretDB v1 cannot give (it lacks the feature): only checked for names there. */
const gap = (cmd: Document): Step => ({ ferretGap: cmd });
const ferret = inject('upstreamIsFerretDB');
const CASES: Record<string, { ok: Step[]; error: Step[] }> = {
  // Answered by the proxy, with no error path of their own (a server ignores their extra fields too).
  hello: { ok: [{ hello: 1 }, { isMaster: 1 }, { ismaster: 1 }], error: [] },
  ping: { ok: [{ ping: 1 }], error: [] },
  connectionStatus: { ok: [{ connectionStatus: 1 }, { connectionStatus: 1, showPrivileges: true }], error: [] },
  hostInfo: { ok: [{ hostInfo: 1 }], error: [] },
  whatsmyuri: { ok: [{ whatsmyuri: 1 }], error: [] },
  buildInfo: { ok: [{ buildInfo: 1 }, { buildinfo: 1 }], error: [] },
  endSessions: { ok: [{ endSessions: [lsid] }], error: [{ endSessions: 'x' }] },
  saslStart: { ok: [], error: [{ saslStart: 1, mechanism: 'PLAIN', payload: new Binary(Buffer.from('\0alpha\0not-a-token')) }] },
  saslContinue: { ok: [], error: [{ saslContinue: 1, conversationId: 1, payload: new Binary(Buffer.alloc(0)) }] },
  insert: {
    ok: [{ insert: 'items', documents: [{ _id: 1, name: 'one' }, { _id: 2, name: 'two' }, { _id: 3, name: 'three' }] }],
    // A duplicate key: the server's message names the collection and the index.
    error: [{ insert: 'items', documents: [{ _id: 1 }] }, { insert: 'items', documents: [{ _id: 9, app_id: 'beta' }] }, { insert: '', documents: [{}] }],
  },
  find: {
    ok: [{ find: 'items', filter: { _id: { $gte: 1 } }, batchSize: 1 }, { find: 'nothing_here' }],
    error: [{ find: 'items', filter: { $bogus: 1 } }, { find: 'items', sort: { a: 'x' } }],
  },
  getMore: {
    ok: [(last) => ({ getMore: cursorOf(last, 'find'), collection: 'items', batchSize: 1 })],
    error: [{ getMore: Long.fromNumber(123456789), collection: 'items' }, { getMore: 'x', collection: 'items' }],
  },
  killCursors: {
    ok: [(last) => ({ killCursors: 'items', cursors: [cursorOf(last, 'find')] })],
    error: [{ killCursors: 'items', cursors: 'x' }, { killCursors: 'items' }],
  },
  update: {
    ok: [{ update: 'items', updates: [{ q: { _id: 1 }, u: { $set: { name: 'uno' } } }, { q: { _id: 4 }, u: { $set: { name: 'four' } }, upsert: true }] }],
    error: [{ update: 'items', updates: [{ q: { _id: 1 }, u: { $set: { _id: 2 } } }] }, { update: 'items', updates: [{ q: {}, u: { $bogus: { a: 1 } } }] }],
  },
  delete: {
    ok: [{ delete: 'items', deletes: [{ q: { _id: 4 }, limit: 1 }] }],
    error: [{ delete: 'items', deletes: [{ q: { $bogus: 1 }, limit: 1 }] }, { delete: 'items', deletes: [{ q: {}, limit: 5 }] }],
  },
  findAndModify: {
    ok: [{ findAndModify: 'items', query: { _id: 2 }, update: { $set: { name: 'dos' } }, new: true }, { findandmodify: 'items', query: { _id: 3 }, remove: true }],
    error: [{ findAndModify: 'items', query: { _id: 1 }, update: { $set: { _id: 5 } } }, { findAndModify: 'items', query: { $bogus: 1 }, remove: true }],
  },
  count: { ok: [{ count: 'items', query: {} }, { count: 'nothing_here' }], error: [{ count: 'items', query: { $bogus: 1 } }] },
  distinct: { ok: [{ distinct: 'items', key: 'name' }], error: [{ distinct: 'items', key: 5 }, { distinct: 'items', key: 'name', query: { $bogus: 1 } }] },
  aggregate: {
    ok: [{ aggregate: 'items', pipeline: [{ $match: {} }, { $group: { _id: null, n: { $sum: 1 } } }], cursor: {} }, gap({ aggregate: 1, pipeline: [{ $documents: [{ a: 1 }] }], cursor: {} })],
    error: [{ aggregate: 'items', pipeline: [{ $bogus: {} }], cursor: {} }, { aggregate: 'items', pipeline: [{ $project: { a: { $divide: [1, 0] } } }], cursor: {} }, { aggregate: 'items', pipeline: [] }],
  },
  createIndexes: {
    ok: [{ createIndexes: 'items', indexes: [{ key: { name: 1 }, name: 'by_name' }] }],
    error: [{ createIndexes: 'items', indexes: [{ key: { name: -1 }, name: 'by_name' }] }, { createIndexes: 'items', indexes: [{ key: {}, name: 'empty' }] }],
  },
  listIndexes: { ok: [{ listIndexes: 'items', cursor: {} }], error: [{ listIndexes: 'nothing_here', cursor: {} }] },
  dropIndexes: {
    ok: [{ dropIndexes: 'items', index: 'by_name' }, { createIndexes: 'items', indexes: [{ key: { x: 1 }, name: 'x_1' }] }, { deleteIndexes: 'items', index: 'x_1' }],
    error: [{ dropIndexes: 'items', index: 'no_such_index' }, gap({ dropIndexes: 'nothing_here', index: '*' })],
  },
  create: { ok: [{ create: 'made' }, gap({ create: 'view_of_items', viewOn: 'items', pipeline: [] })], error: [{ create: 'made' }, { create: '' }] },
  listCollections: {
    ok: [{ listCollections: 1, cursor: {} }, { listCollections: 1, nameOnly: true, filter: { name: 'items' }, cursor: {} }],
    error: [{ listCollections: 1, filter: { name: { $regex: '(a)\\1' } }, cursor: {} }, { listCollections: 1, filter: 'x', cursor: {} }],
  },
  // MongoDB 7.0 and FerretDB answer ok to a drop of a collection that does not exist.
  drop: { ok: [{ create: 'to_drop' }, { drop: 'to_drop' }, { drop: 'nothing_here' }], error: [{ drop: '' }, { drop: 'system.views' }] },
  renameCollection: {
    ok: [{ create: 'old_name' }, { renameCollection: `${DB}.old_name`, to: `${DB}.new_name`, $db: 'admin' }],
    error: [
      { renameCollection: `${DB}.nothing_here`, to: `${DB}.new_name2`, $db: 'admin' },
      { renameCollection: `${DB}.new_name`, to: `${DB}.made`, $db: 'admin' },
      { renameCollection: `${DB}.new_name`, to: 'otherdb.x', $db: 'admin' },
    ],
  },
  explain: {
    ok: [{ explain: { find: 'items', filter: { _id: 1 } } }, { explain: { count: 'items' } }, { explain: { aggregate: 'items', pipeline: [{ $match: { a: 1 } }], cursor: {} } }],
    error: [gap({ explain: { find: 'items', filter: { $bogus: 1 } } }), { explain: { insert: 'items', documents: [{}] } }, { explain: 'x' }],
  },
  killSessions: { ok: [gap({ killSessions: [lsid] })], error: [{ killSessions: [] }, { killSessions: 'x' }] },
  refreshSessions: { ok: [gap({ refreshSessions: [lsid] })], error: [{ refreshSessions: 'x' }] },
  commitTransaction: {
    ok: [],
    error: [{ commitTransaction: 1, lsid, txnNumber: Long.fromNumber(5), autocommit: false, $db: 'admin' }, { commitTransaction: 1, $db: 'admin' }],
  },
  abortTransaction: {
    ok: [],
    error: [{ abortTransaction: 1, lsid, txnNumber: Long.fromNumber(6), autocommit: false, $db: 'admin' }, { abortTransaction: 1, $db: 'admin' }],
  },
};

function cursorOf(last: Document[], command: string): Long {
  for (let i = last.length - 1; i >= 0; i--) {
    const id = (last[i]!.cursor as Document | undefined)?.id;
    if (id !== undefined && Number(id) !== 0 && last[i]!.__command === command) return Long.fromValue(id as number);
  }
  throw new Error(`no ${command} cursor before: ${JSON.stringify(last.filter((r) => r.__command === command))}`);
}

beforeAll(async () => {
  physicalDb = uniqueDb('names');
  proxy = await startTestProxy({
    apps: {
      'alpha.yaml': 'slug: alpha\nname: Alpha\nauth_required: false\n',
      'beta.yaml': 'slug: beta\nname: Beta\nauth_required: false\n',
    },
    runtimeYaml: runtimeYamlWithDatabase(physicalDb),
    runtime: { indexReconciler: false },
  });
  // beta has a collection of the same name (its physical name must never come back to alpha).
  const beta = await RawClient.connect(proxy.port);
  await beta.command({ hello: 1, client: { application: { name: 'beta' } }, $db: 'admin' });
  expect(await beta.command({ insert: 'items', documents: [{ _id: 1, secret: 'beta' }], $db: DB })).toMatchObject({ ok: 1 });
  beta.destroy();
  alpha = await RawClient.connect(proxy.port);
  expect(await alpha.command({ hello: 1, client: { application: { name: 'alpha' } }, $db: 'admin' })).toMatchObject({ ok: 1 });
});

afterAll(async () => {
  alpha?.destroy();
  await proxy?.stop();
});

describe('no reply names a physical namespace', () => {
  it('every allowed command has success and error cases here', () => {
    const allowed = commandHelp()
      .filter((c) => !lookupCommand(c.name)!.refused)
      .map((c) => c.name);
    expect(Object.keys(CASES).sort()).toEqual([...allowed].sort());
    for (const [name, { ok, error }] of Object.entries(CASES)) {
      // saslStart/saslContinue and the transaction commands succeed only on other connections or upstreams.
      if (!['saslStart', 'saslContinue', 'commitTransaction', 'abortTransaction'].includes(name)) expect(ok.length, name).toBeGreaterThan(0);
      if ((!lookupCommand(name)!.local && name !== 'buildInfo') || lookupCommand(name)!.local === 'sasl') expect(error.length, name).toBeGreaterThan(0);
    }
  });

  const order = Object.keys(CASES);
  it.each(order)('%s: neither its replies nor its errors show the shared database or a <slug>_ prefix', async (name) => {
    const { ok, error } = CASES[name]!;
    const replies: Document[] = [];
    for (const [kind, steps] of [
      ['ok', ok],
      ['error', error],
    ] as const) {
      for (const step of steps) {
        const isGap = typeof step !== 'function' && 'ferretGap' in step;
        const cmd = typeof step === 'function' ? step(seen) : isGap ? (step.ferretGap as Document) : step;
        const judged = !(isGap && ferret);
        const reply = await alpha.command({ ...cmd, $db: cmd.$db ?? DB });
        const command = Object.keys(cmd)[0]!;
        seen.push({ ...reply, __command: command });
        replies.push(reply);
        expect(leaks(reply), `${kind} ${JSON.stringify(cmd)} → ${JSON.stringify(reply)}`).toEqual([]);
        if (judged && kind === 'ok') expect(reply.ok === 1 && reply.writeErrors === undefined, `${JSON.stringify(cmd)} was expected to succeed: ${JSON.stringify(reply)}`).toBe(true);
        if (judged && kind === 'error' && lookupCommand(command)?.name === name) {
          expect(reply.ok === 0 || Array.isArray(reply.writeErrors), `${JSON.stringify(cmd)} was expected to fail: ${JSON.stringify(reply)}`).toBe(true);
        }
      }
    }
    expect(replies.length).toBe(ok.length + error.length);
  });
});
