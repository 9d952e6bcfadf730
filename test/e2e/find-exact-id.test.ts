import { execFile } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { Long, ObjectId, type Document, type MongoClient } from 'mongodb';
import { PLAYGROUND_APP, connect, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { physicalCollection, sandboxOf, type Sandbox } from '../helpers/physical.js';
import { WireRelay } from '../../src/testing/relay.js';
import { RawClient } from '../../src/testing/wire-client.js';

/**
 * find's exact-_id fast path end to end (src/policy/handlers/find.ts): a point read reaches the upstream
 * as exactly `{_id: X}` and the tag is enforced on the returned documents. Documents planted directly in
 * the app's physical collection (bypassing the proxy) with another app's tag, or none, never come back.
 */

let relay: WireRelay;
let proxy: TestProxy;
let direct: MongoClient;
let app: MongoClient;
let shown: MongoClient;
let sandbox: Sandbox;
let shownSandbox: Sandbox;
const db = uniqueDb('exact_id');
const OID = new ObjectId('0123456789abcdef01234567');
const FOREIGN_OID = new ObjectId('0123456789abcdef01234568');

beforeAll(async () => {
  const uri = inject('upstreamUri');
  relay = await WireRelay.start(WireRelay.firstHost(uri));
  proxy = await startTestProxy({
    upstreamUri: WireRelay.uriThrough(uri, relay.port),
    apps: { 'playground.yaml': PLAYGROUND_APP, 'shown.yaml': 'slug: shown\nauth_required: false\nexpose_tag: true\n' },
  });
  direct = await connect(uri);
  app = await connect(proxy.uri('playground'));
  shown = await connect(proxy.uri('shown'));
  sandbox = sandboxOf(proxy, 'playground');
  shownSandbox = sandboxOf(proxy, 'shown');
  const tag = proxy.tagField;
  // Planted directly upstream, in each app's own physical collection.
  await physicalCollection(direct, sandbox, 'items').insertMany([
    { _id: 'mine', title: 'kept', body: 'b', [tag]: 'playground' } as Document,
    { _id: 'theirs', title: 'foreign', body: 'b', [tag]: 'shown' },
    { _id: 'untagged', title: 'untagged', body: 'b' },
    { _id: 'numeric', title: 'numeric tag', [tag]: 1 },
    { _id: OID, title: 'kept oid', [tag]: 'playground' },
    { _id: FOREIGN_OID, title: 'foreign oid', [tag]: 'other' },
  ]);
  await physicalCollection(direct, shownSandbox, 'items').insertMany([
    { _id: 'mine', title: 'shown kept', [tag]: 'shown' } as Document,
    { _id: 'theirs', title: 'foreign', [tag]: 'playground' },
  ]);
});

afterAll(async () => {
  await app?.close();
  await shown?.close();
  await proxy?.stop();
  await relay?.close();
  await direct?.close();
});

/** The last find the proxy sent upstream for the app's physical `items`. */
function lastUpstreamFind(slug = 'playground'): Document {
  const finds = relay.commands('find', { db: proxy.database, collection: `${slug}_items` });
  expect(finds.length).toBeGreaterThan(0);
  return finds[finds.length - 1]!.body;
}

describe('exact-_id find through the proxy (Node driver)', () => {
  it('findOne({_id}) returns the correctly tagged document without the tag; the upstream got exactly {_id: X}', async () => {
    const items = app.db(db).collection('items');
    expect(await items.findOne({ _id: 'mine' as unknown as ObjectId })).toEqual({ _id: 'mine', title: 'kept', body: 'b' });
    const sent = lastUpstreamFind();
    expect(sent.filter).toEqual({ _id: 'mine' });
    expect(Object.keys(sent.filter as Document)).toEqual(['_id']);
    expect(sent.limit).toBe(1);
    expect(sent.singleBatch).toBe(true);
    expect(await items.findOne({ _id: OID })).toEqual({ _id: OID, title: 'kept oid' });
    expect(lastUpstreamFind().filter).toEqual({ _id: OID });
  });

  it('a document with another app tag, no tag or a non-string tag is not returned', async () => {
    const items = app.db(db).collection('items');
    for (const id of ['theirs', 'untagged', 'numeric']) {
      expect(await items.findOne({ _id: id as unknown as ObjectId }), id).toBeNull();
      expect(lastUpstreamFind().filter).toEqual({ _id: id });
    }
    expect(await items.findOne({ _id: FOREIGN_OID })).toBeNull();
    expect(await items.find({ _id: 'theirs' as unknown as ObjectId }).toArray()).toEqual([]);
  });

  it('with an inclusion projection: the tag is asked for upstream, checked, and hidden', async () => {
    const items = app.db(db).collection('items');
    expect(await items.findOne({ _id: 'mine' as unknown as ObjectId }, { projection: { title: 1 } })).toEqual({ _id: 'mine', title: 'kept' });
    expect(lastUpstreamFind().projection).toEqual({ title: 1, [proxy.tagField]: 1 });
    expect(await items.findOne({ _id: 'theirs' as unknown as ObjectId }, { projection: { title: 1 } })).toBeNull();
    expect(await items.findOne({ _id: 'untagged' as unknown as ObjectId }, { projection: { title: 1, _id: 0 } })).toBeNull();
    expect(lastUpstreamFind().filter).toEqual({ _id: 'untagged' });
  });

  it('with an exclusion of the tag: dropped upstream, the document still checked', async () => {
    const items = app.db(db).collection('items');
    expect(await items.findOne({ _id: 'mine' as unknown as ObjectId }, { projection: { [proxy.tagField]: 0, body: 0 } })).toEqual({ _id: 'mine', title: 'kept' });
    expect(lastUpstreamFind().projection).toEqual({ body: 0 });
    expect(await items.findOne({ _id: 'theirs' as unknown as ObjectId }, { projection: { [proxy.tagField]: 0 } })).toBeNull();
  });

  it('other filters keep the tag in the filter (and still never return foreign documents)', async () => {
    const items = app.db(db).collection('items');
    expect(await items.find({ title: 'foreign' }).toArray()).toEqual([]);
    expect(lastUpstreamFind().filter).toEqual({ title: 'foreign', [proxy.tagField]: 'playground' });
    expect(await items.find({ _id: { $in: ['mine', 'theirs'] } as unknown as ObjectId }).toArray()).toEqual([{ _id: 'mine', title: 'kept', body: 'b' }]);
    expect(lastUpstreamFind().filter).toEqual({ _id: { $in: ['mine', 'theirs'] }, [proxy.tagField]: 'playground' });
  });

  it('writes by _id keep the tag in their filter: a foreign document is not touched', async () => {
    const items = app.db(db).collection('items');
    const res = await items.updateOne({ _id: 'theirs' as unknown as ObjectId }, { $set: { touched: true } });
    expect(res.matchedCount).toBe(0);
    const updates = relay.commands('update', { db: proxy.database, collection: 'playground_items' });
    expect(updates[updates.length - 1]!.body.updates[0].q).toEqual({ _id: 'theirs', [proxy.tagField]: 'playground' });
    expect(await physicalCollection(direct, sandbox, 'items').findOne({ _id: 'theirs' as unknown as ObjectId })).not.toHaveProperty('touched');
  });

  it('a getMore of a fast-path cursor is checked too', async () => {
    const raw = await RawClient.connect(proxy.port);
    try {
      await raw.command({ hello: 1, client: { application: { name: 'playground' } }, $db: 'admin' });
      const first = await raw.command({ find: 'items', filter: { _id: 'theirs' }, batchSize: 0, $db: db });
      expect(first.ok).toBe(1);
      expect(first.cursor.firstBatch).toEqual([]);
      expect(lastUpstreamFind().filter).toEqual({ _id: 'theirs' });
      const id = first.cursor.id;
      // FerretDB may close a cursor whose first batch is empty; only an open one can be continued.
      if (Number(id) !== 0) {
        const more = await raw.command({ getMore: Long.fromString(String(id)), collection: 'items', $db: db });
        expect(more.ok).toBe(1);
        expect(more.cursor.nextBatch).toEqual([]);
      }
      const mine = await raw.command({ find: 'items', filter: { _id: 'mine' }, batchSize: 0, $db: db });
      if (Number(mine.cursor.id) !== 0) {
        const more = await raw.command({ getMore: Long.fromString(String(mine.cursor.id)), collection: 'items', $db: db });
        expect(more.cursor.nextBatch).toEqual([{ _id: 'mine', title: 'kept', body: 'b' }]);
      } else {
        expect(mine.cursor.firstBatch).toEqual([{ _id: 'mine', title: 'kept', body: 'b' }]);
      }
    } finally {
      raw.socket.destroy();
    }
  });
});

describe('exact-_id find with expose_tag', () => {
  it('the app sees its tag; a foreign document is not returned', async () => {
    const items = shown.db(db).collection('items');
    expect(await items.findOne({ _id: 'mine' as unknown as ObjectId })).toEqual({ _id: 'mine', title: 'shown kept', [proxy.tagField]: 'shown' });
    expect(lastUpstreamFind('shown').filter).toEqual({ _id: 'mine' });
    expect(await items.findOne({ _id: 'theirs' as unknown as ObjectId })).toBeNull();
  });

  it('a tag added only for the check stays hidden; one the app asked for is shown', async () => {
    const items = shown.db(db).collection('items');
    expect(await items.findOne({ _id: 'mine' as unknown as ObjectId }, { projection: { title: 1 } })).toEqual({ _id: 'mine', title: 'shown kept' });
    expect(await items.findOne({ _id: 'mine' as unknown as ObjectId }, { projection: { [proxy.tagField]: 0 } })).toEqual({ _id: 'mine', title: 'shown kept' });
    expect(await items.findOne({ _id: 'mine' as unknown as ObjectId }, { projection: { title: 1, [proxy.tagField]: 1 } })).toEqual({
      _id: 'mine',
      title: 'shown kept',
      [proxy.tagField]: 'shown',
    });
    expect(await items.findOne({ _id: 'theirs' as unknown as ObjectId }, { projection: { title: 1 } })).toBeNull();
  });
});

describe('exact-_id find through the proxy (PyMongo)', () => {
  it('find_one by _id: the tagged document without the tag, None for the planted ones; upstream got {_id: X}', async () => {
    const script = [
      'import sys, json',
      'from pymongo import MongoClient',
      'c = MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000)',
      'items = c[sys.argv[2]]["items"]',
      'out = {',
      '  "mine": items.find_one({"_id": "mine"}),',
      '  "theirs": items.find_one({"_id": "theirs"}),',
      '  "untagged": items.find_one({"_id": "untagged"}),',
      '  "projected": items.find_one({"_id": "mine"}, {"title": 1}),',
      '  "projected_theirs": items.find_one({"_id": "theirs"}, {"title": 1}),',
      '  "limit_minus_one": list(items.find({"_id": "theirs"}, limit=-1)),',
      '}',
      'print(json.dumps(out))',
    ].join('\n');
    const before = relay.commands('find', { db: proxy.database, collection: 'playground_items' }).length;
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(inject('pythonPath'), ['-c', script, proxy.uri('playground'), db], { timeout: 45_000 }, (err, out, stderr) => {
        if (err) reject(new Error(`python failed: ${err.message}\n${out}\n${stderr}`));
        else resolve(out);
      });
    });
    expect(JSON.parse(stdout)).toEqual({
      mine: { _id: 'mine', title: 'kept', body: 'b' },
      theirs: null,
      untagged: null,
      projected: { _id: 'mine', title: 'kept' },
      projected_theirs: null,
      limit_minus_one: [],
    });
    const sent = relay.commands('find', { db: proxy.database, collection: 'playground_items' }).slice(before).map((m) => m.body);
    expect(sent.map((b) => b.filter)).toEqual([{ _id: 'mine' }, { _id: 'theirs' }, { _id: 'untagged' }, { _id: 'mine' }, { _id: 'theirs' }, { _id: 'theirs' }]);
    expect(sent[3]!.projection).toEqual({ title: 1, [proxy.tagField]: 1 });
  });
});

/**
 * The aggregate counterpart (src/policy/pipeline.ts): the tag condition joins the app's own leading
 * $match instead of preceding it. Same planted documents: whatever the app's $match selects, only its
 * own come back.
 */
describe("aggregate: the tag joined to the app's leading $match", () => {
  it('returns only the documents tagged with the app, and the upstream got one $match holding both conditions', async () => {
    const items = app.db(db).collection('items');
    const docs = await items.aggregate([{ $match: { title: { $in: ['kept', 'foreign', 'untagged', 'numeric tag', 'foreign oid', 'kept oid'] } } }, { $sort: { title: 1 } }]).toArray();
    expect(docs).toEqual([
      { _id: 'mine', title: 'kept', body: 'b' },
      { _id: OID, title: 'kept oid' },
    ]);
    const sent = relay.commands('aggregate', { db: proxy.database, collection: 'playground_items' });
    const pipeline = sent[sent.length - 1]!.body.pipeline as Document[];
    expect(pipeline[0]).toEqual({ $match: { title: { $in: ['kept', 'foreign', 'untagged', 'numeric tag', 'foreign oid', 'kept oid'] }, [proxy.tagField]: 'playground' } });
    expect(pipeline[1]).toEqual({ $unset: proxy.tagField });
  });

  it('a $match on the _id of a foreign document finds nothing; grouping counts only the app\'s documents', async () => {
    const items = app.db(db).collection('items');
    expect(await items.aggregate([{ $match: { _id: 'theirs' } }]).toArray()).toEqual([]);
    expect(await items.aggregate([{ $match: { _id: FOREIGN_OID } }]).toArray()).toEqual([]);
    expect(await items.aggregate([{ $match: { body: 'b' } }, { $group: { _id: null, n: { $sum: 1 } } }]).toArray()).toEqual([{ _id: null, n: 1 }]);
  });

  it('a leading $match naming the tag runs after the tag is hidden: it sees no tag', async () => {
    const items = app.db(db).collection('items');
    expect(await items.aggregate([{ $match: { [proxy.tagField]: 'shown' } }]).toArray()).toEqual([]);
    expect(await items.aggregate([{ $match: { [proxy.tagField]: 'playground' } }]).toArray()).toEqual([]);
  });
});
