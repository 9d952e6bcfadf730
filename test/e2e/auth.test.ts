import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient, MongoServerError, type CommandFailedEvent } from 'mongodb';
import { Binary, serialize } from 'bson';
import { startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { RawClient, opMsg } from '../../src/testing/wire-client.js';
import { expectClosedWithoutReply } from '../session/raw-helpers.js';
import { keyPair, seconds, sign, type TestKeyPair } from '../helpers/apps.js';
import { scratchHome } from './workloads/run.js';

/**
 * Identity end to end, through the real proxy on the test upstream, with real clients: the Node driver
 * (appName, PLAIN, MONGODB-OIDC with a token expiring mid-connection), PyMongo and mongosh (PLAIN), raw
 * wire for the pre-auth rules, and what the proxy logs. Data is read back through the proxy only, so
 * these tests hold whatever physical layout scoping gives the app.
 */

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '../..');
const TASKS_SECRET = 'e2e-tasks-secret-'.padEnd(40, 'x');
const OTHER_SECRET = 'e2e-other-secret-'.padEnd(40, 'y');
const ENV = { E2E_TASKS_SECRET: TASKS_SECRET, E2E_OTHER_SECRET: OTHER_SECRET } as const;

let proxy: TestProxy;
let rsa: TestKeyPair;
let keyDir: string;
let home: string;
/** Added to the proxy's clock: the OIDC test moves time forward to expire a live token. */
let clockOffset = 0;
const clients: MongoClient[] = [];
const db = uniqueDb('e2e_auth');

beforeAll(async () => {
  Object.assign(process.env, ENV);
  rsa = await keyPair('RS256');
  keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-e2e-keys-'));
  fs.writeFileSync(path.join(keyDir, 'notes.pem'), rsa.spki);
  home = scratchHome();
  proxy = await startTestProxy({
    now: () => Date.now() + clockOffset,
    apps: {
      'tasks.yaml':
        "slug: tasks\nauth:\n  jwt:\n    secret_env: E2E_TASKS_SECRET\n  roles:\n    reader: { read: ['*'] }\n    editor: { read: ['*'], write: ['*'] }\n  default_role: editor\n",
      'other.yaml': 'slug: other\nauth:\n  jwt:\n    secret_env: E2E_OTHER_SECRET\n',
      'notes.yaml': `slug: notes\nauth:\n  jwt:\n    public_key_file: ${path.join(keyDir, 'notes.pem')}\n    issuer: https://id.example.com\n`,
      'gone.yaml': 'slug: gone\nauth:\n  jwt:\n    secret_env: E2E_GONE_SECRET_NEVER_SET\n',
      'playground.yaml': 'slug: playground\nauth_required: false\n',
    },
  });
});

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await proxy?.stop();
  // Best effort: what the tests wrote, wherever the proxy put it in this database.
  const direct = new MongoClient(inject('upstreamUri'), { serverSelectionTimeoutMS: 5000 });
  await direct.db(db).dropDatabase().catch(() => undefined);
  await direct.close();
  for (const k of Object.keys(ENV)) delete process.env[k];
  fs.rmSync(keyDir, { recursive: true, force: true });
  fs.rmSync(home, { recursive: true, force: true });
});

const tasksToken = (claims: Record<string, unknown> = {}, ttl = 600) => sign({ app: 'tasks', exp: seconds() + ttl, ...claims }, 'HS256', TASKS_SECRET);
const plainUri = (slug: string, token: string, database = '') =>
  `mongodb://${slug}:${token}@127.0.0.1:${proxy.port}/${database}?authMechanism=PLAIN&authSource=%24external`;

async function client(uri: string, options: ConstructorParameters<typeof MongoClient>[1] = {}): Promise<MongoClient> {
  const c = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000, ...options });
  clients.push(c);
  await c.connect();
  return c;
}

/** Writes through the proxy and reads back through the proxy. */
async function roundTrip(c: MongoClient, collection: string, marker: string): Promise<unknown[]> {
  await c.db(db).collection(collection).insertOne({ marker });
  return (await c.db(db).collection(collection).find({ marker }, { projection: { _id: 0 } }).toArray()).map((d) => d.marker);
}

function logsMatching(msg: string): Record<string, unknown>[] {
  return proxy.logs.filter((l) => l.msg === msg);
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv = process.env): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { env, timeout: 45_000 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${path.basename(file)} failed: ${err.message}\n${stdout}\n${stderr}`));
      else resolve(stdout);
    });
  });
}

describe('the Node driver', () => {
  it('authenticates with a compact token as appName', async () => {
    const token = await tasksToken();
    expect(Buffer.byteLength(token)).toBeLessThanOrEqual(128);
    const c = await client(`mongodb://127.0.0.1:${proxy.port}/?appName=${token}`);
    expect(await roundTrip(c, 'appname_items', 'via-appName')).toEqual(['via-appName']);
    const status = await c.db('admin').command({ connectionStatus: 1 });
    expect(status.authInfo).toEqual({ authenticatedUsers: [{ user: 'tasks', db: '$external' }], authenticatedUserRoles: [{ role: 'editor', db: '$external' }] });
  });

  it('fails a token the driver cut to 128 bytes with a clear AuthenticationFailed, never half-working', async () => {
    const long = await tasksToken({ sub: 'someone-with-a-long-name@example.com', roles: ['editor'] });
    expect(Buffer.byteLength(long)).toBeGreaterThan(128);
    const c = await client(`mongodb://127.0.0.1:${proxy.port}/?appName=${long}`);
    const err = await c.db(db).collection('cut').insertOne({ x: 1 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MongoServerError);
    expect((err as MongoServerError).code).toBe(18);
    expect((err as MongoServerError).message).toContain('it is 128 bytes long, so the driver probably cut it');
    expect(await c.db(db).collection('cut').findOne({}).catch((e: unknown) => (e as MongoServerError).code)).toBe(18);
  });

  it('authenticates with SASL PLAIN (a long RS256 token for a public-key app, with sub and issuer)', async () => {
    const token = await sign({ app: 'notes', sub: 'carol', iss: 'https://id.example.com', exp: seconds() + 600 }, 'RS256', rsa.privateKey);
    expect(Buffer.byteLength(token)).toBeGreaterThan(300);
    const c = await client(plainUri('notes', token));
    expect(await roundTrip(c, 'plain_items', 'via-PLAIN')).toEqual(['via-PLAIN']);
    const status = await c.db('admin').command({ connectionStatus: 1 });
    expect(status.authInfo.authenticatedUsers).toEqual([{ user: 'carol', db: '$external' }]);
  });

  it("refuses app A's token presented as app B (PLAIN user name) with AuthenticationFailed", async () => {
    const err = await client(plainUri('other', await tasksToken()), { serverSelectionTimeoutMS: 3000 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MongoServerError);
    expect((err as MongoServerError).code).toBe(18);
    expect((err as MongoServerError).message).toBe('Authentication failed.');
  });

  it('re-authenticates on the same connection when the MONGODB-OIDC token expires mid-connection (391)', async () => {
    let calls = 0;
    const failures: CommandFailedEvent[] = [];
    let created = 0;
    const c = new MongoClient(`mongodb://127.0.0.1:${proxy.port}/?authMechanism=MONGODB-OIDC`, {
      serverSelectionTimeoutMS: 10_000,
      maxPoolSize: 1,
      monitorCommands: true,
      authMechanismProperties: {
        OIDC_CALLBACK: async () => {
          calls++;
          // Expires 60 s after the proxy's clock (which the test moves).
          return { accessToken: await sign({ app: 'tasks', sub: `oidc-${calls}`, exp: seconds(Date.now() + clockOffset) + 60 }, 'HS256', TASKS_SECRET) };
        },
      },
    });
    clients.push(c);
    c.on('commandFailed', (e) => failures.push(e));
    c.on('connectionCreated', () => created++);
    try {
      await c.connect();
      expect(await roundTrip(c, 'oidc_items', 'before-expiry')).toEqual(['before-expiry']);
      expect(calls).toBe(1);

      clockOffset = 10 * 60_000; // the token expired 9 minutes ago, as far as the proxy knows
      expect(await roundTrip(c, 'oidc_items', 'after-expiry')).toEqual(['after-expiry']);

      expect(calls).toBe(2); // the driver called back once more...
      expect(created).toBe(1); // ...and kept its one connection
      expect(failures.map((f) => [f.commandName, (f.failure as MongoServerError).code])).toEqual([['insert', 391]]);
      const reauth = logsMatching('connection re-authenticated').filter((l) => l.transport === 'MONGODB-OIDC');
      expect(reauth).toHaveLength(1);
      expect(reauth[0]).toMatchObject({ app_id: 'tasks', sub: 'oidc-2' });
      const status = await c.db('admin').command({ connectionStatus: 1 });
      expect(status.authInfo.authenticatedUsers).toEqual([{ user: 'oidc-2', db: '$external' }]);
    } finally {
      clockOffset = 0;
    }
  });

  it('fails authentication for an app whose secret is missing, while the others serve', async () => {
    const gone = await sign({ app: 'gone', exp: seconds() + 600 }, 'HS256', TASKS_SECRET);
    const err = await client(plainUri('gone', gone), { serverSelectionTimeoutMS: 3000 }).catch((e: unknown) => e);
    expect((err as MongoServerError).code).toBe(18);
    expect(proxy.logs.find((l) => l.level === 50 && l.app_id === 'gone')?.msg).toMatch(/^app 'gone' is unavailable: .*E2E_GONE_SECRET_NEVER_SET is not set/);
    expect(proxy.logs.some((l) => l.msg === 'authentication failed' && String(l.reason).startsWith("app 'gone' is unavailable"))).toBe(true);
  });
});

describe('PyMongo and mongosh', () => {
  it('PyMongo authenticates with PLAIN', async () => {
    const script = [
      'import sys, json',
      'from pymongo import MongoClient',
      'c = MongoClient(sys.argv[1], serverSelectionTimeoutMS=10000)',
      'coll = c[sys.argv[2]]["py_items"]',
      'coll.insert_one({"marker": "via-pymongo"})',
      'print("RESULT " + json.dumps([d["marker"] for d in coll.find({}, {"_id": 0})]))',
      'print("STATUS " + json.dumps(c.admin.command("connectionStatus")["authInfo"]["authenticatedUsers"]))',
    ].join('\n');
    const out = await run(inject('pythonPath'), ['-c', script, plainUri('tasks', await tasksToken({ sub: 'py' })), db]);
    expect(out).toContain('RESULT ["via-pymongo"]');
    expect(out).toContain('STATUS [{"user": "py", "db": "$external"}]');
  });

  it('mongosh authenticates with PLAIN', async () => {
    const mongosh = path.join(ROOT, 'node_modules/.bin/mongosh');
    const script = `db.sh_items.insertOne({marker: 'via-mongosh'}); print('RESULT ' + JSON.stringify(db.sh_items.find({}, {_id: 0}).toArray().map(d => d.marker)))`;
    const out = await run(mongosh, [plainUri('tasks', await tasksToken(), db), '--quiet', '--norc', '--eval', script], {
      ...process.env,
      HOME: home,
      DO_NOT_TRACK: '1',
      MONGOSH_NO_TELEMETRY: '1',
    });
    expect(out).toContain('RESULT ["via-mongosh"]');
  });
});

describe('before authentication (raw wire)', () => {
  it('answers the pre-auth commands and refuses every other command with Unauthorized (13)', async () => {
    const raw = await RawClient.connect(proxy.port);
    try {
      expect((await raw.command({ hello: 1, $db: 'admin' })).ok).toBe(1);
      expect(await raw.command({ ping: 1, $db: 'admin' })).toEqual({ ok: 1 });
      expect((await raw.command({ buildInfo: 1, $db: 'admin' })).ok).toBe(1);
      for (const cmd of [
        { find: 'c', $db: db },
        { insert: 'c', documents: [{ a: 1 }], $db: db },
        { listCollections: 1, $db: db },
        { connectionStatus: 1, $db: 'admin' },
        { whatsmyuri: 1, $db: 'admin' },
        { hostInfo: 1, $db: 'admin' },
        { commitTransaction: 1, $db: 'admin' },
      ]) {
        const name = Object.keys(cmd)[0]!;
        expect(await raw.command(cmd), name).toEqual({
          ok: 0,
          code: 13,
          codeName: 'Unauthorized',
          errmsg: expect.stringMatching(new RegExp(`^command ${name} requires authentication: this connection presented no token and its handshake carried no appName\\. .*authMechanism=PLAIN`)),
        });
      }
    } finally {
      raw.destroy();
    }
  });

  it('answers a failed saslStart with a bare AuthenticationFailed and logs the reason without the token', async () => {
    const raw = await RawClient.connect(proxy.port);
    try {
      const bad = await sign({ app: 'tasks', exp: seconds() + 600 }, 'HS256', OTHER_SECRET);
      const payload = new Binary(Buffer.from(`\0tasks\0${bad}`));
      const reply = await raw.command({ saslStart: 1, mechanism: 'PLAIN', payload, $db: '$external' });
      expect(reply).toEqual({ ok: 0, code: 18, codeName: 'AuthenticationFailed', errmsg: 'Authentication failed.' });
      const line = proxy.logs.filter((l) => l.msg === 'authentication failed').at(-1);
      expect(line).toMatchObject({ level: 40, app_id: 'tasks', mechanism: 'PLAIN' });
      expect(String(line!.reason)).toMatch(/signature verification failed/);
      const all = JSON.stringify(proxy.logs);
      expect(all).not.toContain(bad.split('.')[2]!);
      expect(all).not.toContain(bad.split('.')[1]!);
      // Still unauthenticated.
      expect((await raw.command({ find: 'c', $db: db })).code).toBe(13);
    } finally {
      raw.destroy();
    }
  });

  it('closes a connection that sends a large message before authenticating; after PLAIN the same size is accepted', async () => {
    const big = 'x'.repeat(100 * 1024);
    const before = await RawClient.connect(proxy.port);
    before.send(opMsg({ insert: 'big', documents: [{ big }], $db: db }));
    await expectClosedWithoutReply(before);

    const after = await RawClient.connect(proxy.port);
    try {
      const payload = new Binary(Buffer.from(`\0tasks\0${await tasksToken()}`));
      expect((await after.command({ saslStart: 1, mechanism: 'PLAIN', payload, $db: '$external' })).done).toBe(true);
      expect(await after.command({ insert: 'big', documents: [{ big }], $db: db })).toMatchObject({ ok: 1, n: 1 });
    } finally {
      after.destroy();
    }
  });

  it('authenticates with MONGODB-OIDC speculatively in the raw handshake', async () => {
    const raw = await RawClient.connect(proxy.port);
    try {
      const payload = new Binary(serialize({ jwt: await tasksToken() }));
      const hello = await raw.command({ hello: 1, speculativeAuthenticate: { saslStart: 1, mechanism: 'MONGODB-OIDC', payload, db: '$external' }, $db: 'admin' });
      expect(hello.speculativeAuthenticate).toMatchObject({ conversationId: 1, done: true });
      expect((await raw.command({ find: 'c', filter: {}, $db: db })).ok).toBe(1);
    } finally {
      raw.destroy();
    }
  });
});

describe('idle connections before authentication', () => {
  let idle: TestProxy;
  beforeAll(async () => {
    idle = await startTestProxy({ runtimeYaml: 'shutdown_grace_ms: 1000\npre_auth_idle_timeout_ms: 500\n' });
  });
  afterAll(async () => {
    await idle?.stop();
  });

  it('closes a silent unauthenticated connection, keeps one that sends hellos, and never closes an authenticated one', async () => {
    const silent = await RawClient.connect(idle.port);
    const monitor = await RawClient.connect(idle.port);
    const app = await RawClient.connect(idle.port);
    try {
      await app.command({ hello: 1, client: { application: { name: 'playground' } }, $db: 'admin' });
      // The monitor says hello every 100 ms (a driver's heartbeat, faster) while the silent one is closed.
      const heartbeat = setInterval(() => monitor.send(opMsg({ hello: 1, $db: 'admin' })), 100);
      try {
        await silent.closed; // closed by the proxy after 500 ms without a message
        expect(idle.logs.some((l) => l.msg === 'closing a connection that did not authenticate and sent nothing')).toBe(true);
        // Two more idle periods: the monitor and the authenticated app are still served.
        await new Promise((resolve) => setTimeout(resolve, 1000));
        expect(monitor.isOpen).toBe(true);
      } finally {
        clearInterval(heartbeat);
      }
      expect(await app.command({ ping: 1, $db: 'admin' })).toEqual({ ok: 1 });
      expect(app.isOpen).toBe(true);
    } finally {
      silent.destroy();
      monitor.destroy();
      app.destroy();
    }
  });
});
