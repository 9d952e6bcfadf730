import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { Binary, type Document } from 'bson';
import type { MongoClient } from 'mongodb';
import { connect, startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { RawClient, opMsg } from '../../src/testing/wire-client.js';
import { decodeReply } from '../session/raw-helpers.js';
import { seconds, sign } from '../helpers/apps.js';
import { scrape, total } from './prom-text.js';

/**
 * The logs of a workload at debug level. Every line of a client connection
 * carries its connection id, request id and (once known) app_id; one debug line per command; a warn
 * line for slow operations with the documents returned; authentication failures with the reason;
 * lifecycle events. And no token, password or document content appears in any line.
 */

const SECRET = 'logs-alpha-signing-secret-'.padEnd(48, 's');
const OTHER = 'logs-wrong-signing-secret-'.padEnd(48, 'w');

/** Values that must never reach a log line: filled with the tokens and markers the workload uses. */
const secrets: string[] = [];
const marker = (name: string): string => {
  const m = `${name}-marker-${Math.random().toString(36).slice(2, 10)}`;
  secrets.push(m);
  return m;
};

let proxy: TestProxy;
const clients: MongoClient[] = [];
const raws: RawClient[] = [];

beforeAll(async () => {
  process.env.OBS_LOGS_ALPHA_SECRET = SECRET;
  proxy = await startTestProxy({
    logLevel: 'debug',
    apps: {
      'alpha.yaml': [
        'slug: alpha',
        'auth:',
        '  jwt:',
        '    secret_env: OBS_LOGS_ALPHA_SECRET',
        'observability: { slow_operation_ms: 1 }',
        'managed_indexes:',
        '  items:',
        '    - { keys: { n: 1 }, name: by_n }',
        '',
      ].join('\n'),
      'beta.yaml': 'slug: beta\nauth_required: false\n',
      // 0: this app's slow operations are never logged, whatever runtime.yaml says.
      'gamma.yaml': 'slug: gamma\nauth_required: false\nobservability: { slow_operation_ms: 0 }\n',
    },
  });
});

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  for (const r of raws) r.destroy();
  await proxy?.stop();
  delete process.env.OBS_LOGS_ALPHA_SECRET;
});

const plainUri = (token: string) => `mongodb://alpha:${encodeURIComponent(token)}@127.0.0.1:${proxy.port}/app?authMechanism=PLAIN&authSource=%24external`;

async function client(uri: string): Promise<MongoClient> {
  const c = await connect(uri);
  clients.push(c);
  return c;
}

/** The request ids the raw workload used, by what they did. */
const requestIds = { insert: 0, failedAuth: 0 };

async function workload(): Promise<void> {
  const plainToken = await sign({ app: 'alpha', exp: seconds() + 600, sub: marker('sub') }, 'HS256', SECRET);
  const appNameToken = await sign({ app: 'alpha', exp: seconds() + 600 }, 'HS256', SECRET);
  const forged = await sign({ app: 'alpha', exp: seconds() + 600, sub: marker('forged') }, 'HS256', OTHER);
  secrets.push(plainToken, appNameToken, forged, plainToken.split('.')[2]!, forged.split('.')[2]!, SECRET, OTHER);
  // The sub claim is logged on success (it names who connected); only the forged one must stay out.
  secrets.splice(secrets.indexOf(secrets.find((s) => s.startsWith('sub-marker'))!), 1);

  // ---- alpha through the Node driver, PLAIN (the token is the password).
  const alpha = await client(plainUri(plainToken));
  const items = alpha.db('app').collection('items');
  const docMarker = marker('doc');
  const pwMarker = marker('password');
  await items.insertMany([
    { n: 1, note: docMarker, password: pwMarker },
    { n: 2, note: marker('doc2') },
  ]);
  expect(await items.countDocuments({ note: docMarker })).toBe(1);
  await items.updateOne({ note: docMarker }, { $set: { note: marker('update') } });
  await items.find({ note: marker('filter') }).toArray();
  await items.aggregate([{ $match: { note: marker('pipeline') } }]).toArray();
  await items.deleteMany({ note: marker('delete') });
  // Errors whose server messages could echo values: a duplicate key, a bad filter, a refused operator.
  await items.createIndex({ email: 1 }, { unique: true, name: 'email_unique' });
  const dup = marker('dup');
  await items.insertOne({ email: dup });
  await expect(items.insertOne({ email: dup })).rejects.toThrow();
  await expect(items.find({ n: { $in: marker('badfilter') } as unknown as number[] }).toArray()).rejects.toThrow();
  await expect(items.find({ $where: `function() { return '${marker('js')}' }` }).toArray()).rejects.toThrow();
  await expect(items.insertOne({ n: 3, app_id: marker('tag') })).rejects.toThrow();

  // A bulk insert and a sorted find slow enough for alpha's 1 ms threshold.
  const bulk = alpha.db('app').collection('bulk');
  await bulk.insertMany(Array.from({ length: 1000 }, (_, i) => ({ i, pad: 'x'.repeat(200) })));
  expect(await bulk.find({ i: { $gte: 0 } }).sort({ i: -1 }).toArray()).toHaveLength(1000);

  // ---- alpha by appName (a compact token in the handshake).
  const byAppName = await client(`mongodb://127.0.0.1:${proxy.port}/?appName=${appNameToken}`);
  await byAppName.db('app').collection('items').findOne({ n: 1 });

  // ---- raw wire: a failed PLAIN attempt (a token signed with the wrong key), then a known request id.
  const raw = await RawClient.connect(proxy.port);
  raws.push(raw);
  requestIds.failedAuth = 910_001;
  raw.send(
    opMsg(
      { saslStart: 1, mechanism: 'PLAIN', payload: new Binary(Buffer.from(`\0alpha\0${forged}`)), $db: '$external' },
      { requestId: requestIds.failedAuth },
    ),
  );
  expect(decodeReply(await raw.nextMessage()).doc.code).toBe(18);
  raw.send(opMsg({ saslStart: 1, mechanism: 'PLAIN', payload: new Binary(Buffer.from(`\0alpha\0${plainToken}`)), $db: '$external' }));
  expect(decodeReply(await raw.nextMessage()).doc.done).toBe(true);
  requestIds.insert = 910_002;
  raw.send(opMsg({ insert: 'items', documents: [{ n: 7, note: marker('raw') }], $db: 'app' } satisfies Document, { requestId: requestIds.insert }));
  expect(decodeReply(await raw.nextMessage()).doc.ok).toBe(1);

  // ---- beta and gamma (dev apps): gamma's bulk insert is slow too, but its threshold is 0 (none).
  const beta = await client(`mongodb://127.0.0.1:${proxy.port}/?appName=beta`);
  await beta.db('app').collection('notes').insertOne({ text: marker('beta') });
  const gamma = await client(`mongodb://127.0.0.1:${proxy.port}/?appName=gamma`);
  await gamma.db('app').collection('bulk').insertMany(Array.from({ length: 1000 }, (_, i) => ({ i, pad: 'y'.repeat(200) })));
}

describe('logs of a workload at debug level', () => {
  beforeAll(async () => {
    await workload();
  });

  const lines = () => proxy.logs;
  const fromConnections = () => lines().filter((l) => l.conn !== undefined);

  it('writes one debug line per command with the app, connection, request, command, collection, duration and outcome', () => {
    const commands = fromConnections().filter((l) => l.msg === 'command');
    expect(commands.length).toBeGreaterThan(20);
    for (const l of commands) {
      expect(l.level).toBe(20);
      expect(typeof l.conn).toBe('number');
      expect(typeof l.req).toBe('number');
      expect(typeof l.cmd).toBe('string');
      expect(typeof l.duration_ms).toBe('number');
      expect(['ok', 'error', 'rejected', 'failed']).toContain(l.outcome);
    }
    const inserts = commands.filter((l) => l.app_id === 'alpha' && l.cmd === 'insert' && l.collection === 'items');
    expect(inserts.length).toBeGreaterThanOrEqual(3);
    // Upstream time on the ones that reached the upstream.
    expect(inserts.filter((l) => l.outcome !== 'rejected').every((l) => typeof l.upstream_ms === 'number')).toBe(true);
    expect(inserts.filter((l) => l.outcome === 'rejected').every((l) => l.upstream_ms === undefined)).toBe(true);
    // The request id is the client's requestId of the message.
    expect(commands.find((l) => l.req === requestIds.insert)).toMatchObject({ app_id: 'alpha', cmd: 'insert', collection: 'items', outcome: 'ok' });
    // Failures say what kind: an upstream error, a refusal with its reason.
    expect(commands.some((l) => l.app_id === 'alpha' && l.cmd === 'insert' && l.outcome === 'error')).toBe(true); // duplicate key
    expect(commands.find((l) => l.app_id === 'alpha' && l.cmd === 'find' && l.outcome === 'rejected')).toMatchObject({ reason: 'server_js', code: 224 });
    expect(commands.find((l) => l.app_id === 'alpha' && l.cmd === 'insert' && l.outcome === 'rejected')).toMatchObject({ reason: 'policy' });
  });

  it('tags every line of an authenticated connection with app_id, and every line of a request with req', () => {
    const byConn = new Map<number, Record<string, unknown>[]>();
    for (const l of fromConnections()) {
      const list = byConn.get(l.conn as number) ?? [];
      list.push(l);
      byConn.set(l.conn as number, list);
    }
    let authenticated = 0;
    for (const list of byConn.values()) {
      const at = list.findIndex((l) => l.msg === 'connection authenticated');
      if (at < 0) continue;
      authenticated++;
      const app = list[at]!.app_id;
      for (const l of list.slice(at)) expect(l.app_id, JSON.stringify(l)).toBe(app);
      for (const l of list.filter((x) => x.msg !== 'client connection closed')) expect(typeof l.req, JSON.stringify(l)).toBe('number');
    }
    expect(authenticated).toBeGreaterThanOrEqual(5);
  });

  it('logs slow operations at warn with command, collection, duration and documents returned', () => {
    const slow = lines().filter((l) => l.msg === 'slow operation');
    const insert = slow.find((l) => l.app_id === 'alpha' && l.cmd === 'insert' && l.collection === 'bulk');
    expect(insert).toMatchObject({ level: 40, docs: 1000, threshold_ms: 1, outcome: 'ok' });
    expect(insert!.duration_ms as number).toBeGreaterThan(1);
    expect(typeof insert!.conn).toBe('number');
    expect(typeof insert!.req).toBe('number');
    // The first batch of a find (101 documents by default): always over 1 ms on FerretDB (a real MongoDB
    // may answer faster, but when it is logged the count is the same).
    const find = slow.find((l) => l.app_id === 'alpha' && l.cmd === 'find' && l.collection === 'bulk');
    if (find || inject('upstreamIsFerretDB')) expect(find).toMatchObject({ level: 40, docs: 101 });
    const getMore = slow.filter((l) => l.app_id === 'alpha' && l.cmd === 'getMore' && l.collection === 'bulk');
    expect(getMore.map((l) => l.docs as number).reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(899);
    // slow_operation_ms: 0 in gamma's manifest: none, however slow.
    expect(slow.filter((l) => l.app_id === 'gamma')).toEqual([]);
  });

  it('logs authentication failures with the reason, on the connection and request', () => {
    const failed = lines().find((l) => l.msg === 'authentication failed' && l.req === requestIds.failedAuth);
    expect(failed).toMatchObject({ level: 40, mechanism: 'PLAIN', cause: 'bad_signature', app_id: 'alpha' });
    expect(String(failed!.reason)).toContain('signature verification failed');
    expect(typeof failed!.conn).toBe('number');
  });

  it('logs lifecycle events: start, index builds, manifest reloads', async () => {
    expect(lines().find((l) => typeof l.msg === 'string' && l.msg.includes(' listening on '))).toBeDefined();
    await vi.waitFor(() => expect(lines().find((l) => l.msg === 'index build finished' && l.app_id === 'alpha' && l.index === 'by_n')).toBeDefined(), {
      timeout: 15_000,
      interval: 50,
    });
    fs.writeFileSync(path.join(proxy.configDir, 'apps', 'delta.yaml'), 'slug: delta\nauth_required: false\n');
    const event = proxy.runtime.apps.reload('manual');
    expect(event?.added).toEqual(['delta']);
    expect(lines().find((l) => l.msg === 'manifests reloaded')).toMatchObject({ cause: 'manual', added: ['delta'] });
    const samples = await scrape(proxy.httpPort);
    expect(total(samples, 'mdb_manifest_reloads_total', { cause: 'manual' })).toBe(1);
    expect(total(samples, 'mdb_indexes', { app: 'alpha', action: 'ok' })).toBe(1);
  });

  it('never logs a token, a password or a document value', () => {
    expect(secrets.length).toBeGreaterThan(15);
    const text = lines().map((l) => JSON.stringify(l));
    for (const secret of secrets) {
      const hits = text.filter((t) => t.includes(secret));
      expect(hits, `'${secret}' appears in the log`).toEqual([]);
    }
  });
});
