import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MongoClient, MongoServerError } from 'mongodb';
import { startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { seconds, sign } from '../helpers/apps.js';
import { afterEdit, httpJson, writeManifest } from '../helpers/reload.js';
import type { AppsDocument } from '../../src/observability/apps-view.js';

/**
 * Hot reload on a running proxy with real files and real Node driver clients
 * connected: every change is made to the proxy's config/apps directory as an operator would, and the
 * tests wait for the reload event (within the 2-second pledge) before looking at what clients see.
 */

const SECRET = 'reload-tasks-secret-'.padEnd(40, 'x');
const ROTATED = 'reload-tasks-rotated-'.padEnd(40, 'y');
const ENV = { RELOAD_TASKS_SECRET: SECRET, RELOAD_TASKS_ROTATED: ROTATED } as const;

const tasksYaml = (o: { defaultRole?: string; secretEnv?: string; editorWrites?: string; extra?: string } = {}) =>
  'slug: tasks\n' +
  'name: Tasks\n' +
  'auth:\n' +
  `  jwt:\n    secret_env: ${o.secretEnv ?? 'RELOAD_TASKS_SECRET'}\n` +
  '  roles:\n' +
  "    reader: { read: ['*'] }\n" +
  `    editor: { read: ['*'], write: ${o.editorWrites ?? "['*']"} }\n` +
  `  default_role: ${o.defaultRole ?? 'editor'}\n` +
  (o.extra ?? '');
const devYaml = (slug: string, extra = '') => `slug: ${slug}\nauth_required: false\n${extra}`;

let proxy: TestProxy;
const clients: MongoClient[] = [];
const db = uniqueDb('e2e_reload');

beforeAll(async () => {
  Object.assign(process.env, ENV);
  proxy = await startTestProxy({
    apps: { 'tasks.yaml': tasksYaml(), 'other.yaml': devYaml('other'), 'doomed.yaml': devYaml('doomed') },
    runtime: { removedAppGraceMS: 1000 },
  });
});

afterAll(async () => {
  for (const c of clients) await c.close().catch(() => undefined);
  await proxy?.stop();
  for (const k of Object.keys(ENV)) delete process.env[k];
});

const token = (claims: Record<string, unknown> = {}, secret = SECRET) => sign({ app: 'tasks', exp: seconds() + 600, ...claims }, 'HS256', secret);
const plainUri = (jwt: string) => `mongodb://tasks:${jwt}@127.0.0.1:${proxy.port}/?authMechanism=PLAIN&authSource=%24external`;

async function client(uri: string): Promise<MongoClient> {
  const c = new MongoClient(uri, { serverSelectionTimeoutMS: 5000, maxPoolSize: 1 });
  clients.push(c);
  await c.connect();
  return c;
}

/** The code of the error `op` fails with. */
async function failure(op: Promise<unknown>): Promise<MongoServerError> {
  try {
    await op;
  } catch (err) {
    expect(err).toBeInstanceOf(MongoServerError);
    return err as MongoServerError;
  }
  throw new Error('the operation succeeded');
}

const edit = (fn: () => void, predicate: Parameters<typeof afterEdit>[2]) => afterEdit(proxy.runtime.apps, fn, predicate);
const apps = async () => (await httpJson<AppsDocument>(proxy.httpPort, '/apps')).body;
const entry = async (slug: string) => (await apps()).apps.find((a) => a.slug === slug);

describe('hot reload with connected clients', () => {
  it('a new app can connect within 2 s of its file appearing', async () => {
    const { event, elapsedMS } = await edit(
      () => writeManifest(proxy.configDir, 'fresh.yaml', devYaml('fresh', 'name: Fresh app\n')),
      (e) => e.added.includes('fresh'),
    );
    expect(elapsedMS).toBeLessThan(2000);
    expect(event.cause).toMatch(/^(watch|rescan)$/);
    const fresh = await client(proxy.uri('fresh'));
    await fresh.db(db).collection('notes').insertOne({ n: 1 });
    expect(await fresh.db(db).collection('notes').countDocuments()).toBe(1);
    expect(await entry('fresh')).toMatchObject({ name: 'Fresh app', status: 'available', serving: 'latest', connections: expect.any(Number) });
    expect(proxy.logs.some((l) => l.msg === 'manifests reloaded' && (l.added as string[]).includes('fresh'))).toBe(true);
  });

  it('changed roles apply to the next request of a connected client, without reconnecting', async () => {
    const c = await client(plainUri(await token()));
    let created = 0;
    c.on('connectionCreated', () => created++);
    const tasks = c.db(db).collection('tasks');
    await tasks.insertOne({ t: 'before' });
    const authenticated = proxy.logs.filter((l) => l.msg === 'connection authenticated' && l.app_id === 'tasks').length;

    await edit(() => writeManifest(proxy.configDir, 'tasks.yaml', tasksYaml({ defaultRole: 'reader' })), (e) => e.changed.includes('tasks'));
    const refused = await failure(tasks.insertOne({ t: 'as reader' }));
    expect(refused.code).toBe(13);
    expect(refused.message).toContain('roles: reader');
    expect(await tasks.countDocuments()).toBe(1); // reads still allowed

    // A role whose grants change: the claim names 'editor', whose write list is narrowed.
    const named = await client(plainUri(await token({ roles: ['editor'] })));
    await edit(() => writeManifest(proxy.configDir, 'tasks.yaml', tasksYaml({ editorWrites: "['log']" })), (e) => e.changed.includes('tasks'));
    expect((await failure(named.db(db).collection('tasks').insertOne({ t: 'x' }))).code).toBe(13);
    await named.db(db).collection('log').insertOne({ t: 'allowed' });

    // A role the manifest no longer defines: the connection's requests are refused, saying why.
    await edit(
      () => writeManifest(proxy.configDir, 'tasks.yaml', tasksYaml().replace(/    editor: .*\n/, '').replace('default_role: editor', 'default_role: reader')),
      (e) => e.changed.includes('tasks'),
    );
    const gone = await failure(named.db(db).collection('log').countDocuments());
    expect(gone.code).toBe(13);
    expect(gone.message).toContain("the roles of this connection's token are no longer valid for app 'tasks': the token names the role 'editor'");

    // Back to the first version: the first client writes again, on the same connection.
    await edit(() => writeManifest(proxy.configDir, 'tasks.yaml', tasksYaml()), (e) => e.changed.includes('tasks'));
    await tasks.insertOne({ t: 'after' });
    expect(created).toBe(0);
    expect(proxy.logs.filter((l) => l.msg === 'connection authenticated' && l.app_id === 'tasks').length).toBe(authenticated + 1);
  });

  it('expose_tag and keys change for the next request and the next authentication', async () => {
    const other = await client(proxy.uri('other'));
    await other.db(db).collection('items').insertOne({ _id: 'i1' } as never);
    expect(await other.db(db).collection('items').findOne({})).toEqual({ _id: 'i1' });
    await edit(() => writeManifest(proxy.configDir, 'other.yaml', devYaml('other', 'expose_tag: true\n')), (e) => e.changed.includes('other'));
    expect(await other.db(db).collection('items').findOne({})).toEqual({ _id: 'i1', [proxy.tagField]: 'other' });

    // Rotating the key: connected clients keep working; new authentications need the new key.
    const connected = await client(plainUri(await token()));
    await connected.db(db).command({ ping: 1 });
    await edit(() => writeManifest(proxy.configDir, 'tasks.yaml', tasksYaml({ secretEnv: 'RELOAD_TASKS_ROTATED' })), (e) => e.changed.includes('tasks'));
    expect(await connected.db(db).collection('tasks').countDocuments()).toBeGreaterThan(0);
    const stale = new MongoClient(plainUri(await token()), { serverSelectionTimeoutMS: 3000 });
    clients.push(stale);
    expect((await failure(stale.connect())).code).toBe(18);
    const rotated = await client(plainUri(await token({}, ROTATED)));
    expect(await rotated.db(db).collection('tasks').countDocuments()).toBeGreaterThan(0);
    await edit(() => writeManifest(proxy.configDir, 'tasks.yaml', tasksYaml()), (e) => e.changed.includes('tasks'));
  });

  it('an invalid new version is refused: the last good one serves, the error shows in the log, /apps and /readyz; fixing it applies', async () => {
    const c = await client(plainUri(await token()));
    const tasks = c.db(db).collection('tasks');
    const file = path.join(proxy.configDir, 'apps', 'tasks.yaml');
    // Line 10 is wrong (and the default role would change if it were accepted).
    const { event } = await edit(
      () => writeManifest(proxy.configDir, 'tasks.yaml', tasksYaml({ defaultRole: 'reader', extra: 'auth_required: maybe\n' })),
      (e) => e.refused.some((p) => p.file === file),
    );
    expect(event.changed).not.toContain('tasks');
    await tasks.insertOne({ t: 'still editor' }); // the last good version (default_role: editor) is in force
    expect((await client(plainUri(await token()))).db(db)).toBeDefined(); // new authentications too

    const shown = await entry('tasks');
    expect(shown).toMatchObject({ status: 'available', serving: 'last_good', last_error: { file, line: 10, column: 16, kind: 'invalid' } });
    expect(shown!.last_error!.message).toContain(`${file}:10:16: auth_required`);
    const ready = await httpJson<{ status: string; manifest_errors: { file: string; line: number }[] }>(proxy.httpPort, '/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.manifest_errors).toEqual([expect.objectContaining({ file, line: 10 })]);
    const logged = proxy.logs.find((l) => l.level === 50 && l.file === file && l.kept_last_good === true);
    expect(logged?.msg).toMatch(/^manifest refused; the last good version stays in force: .*tasks\.yaml:10:16: auth_required/);

    await edit(() => writeManifest(proxy.configDir, 'tasks.yaml', tasksYaml({ defaultRole: 'reader' })), (e) => e.changed.includes('tasks'));
    expect((await failure(tasks.insertOne({ t: 'now reader' }))).code).toBe(13);
    expect(await entry('tasks')).toMatchObject({ serving: 'latest', last_error: null });
    expect((await httpJson<{ manifest_errors: unknown[] }>(proxy.httpPort, '/readyz')).body.manifest_errors).toEqual([]);
    await edit(() => writeManifest(proxy.configDir, 'tasks.yaml', tasksYaml()), (e) => e.changed.includes('tasks'));
  });

  it('a new file whose slug conflicts with a running app is refused; the running app is untouched', async () => {
    const file = path.join(proxy.configDir, 'apps', 'tasks_admin.yaml');
    const { event } = await edit(() => writeManifest(proxy.configDir, 'tasks_admin.yaml', devYaml('tasks_admin')), (e) => e.refused.some((p) => p.file === file));
    expect(event.added).toEqual([]);
    expect(await entry('tasks_admin')).toMatchObject({ status: 'error', serving: 'none', last_error: { kind: 'conflict', file } });
    expect((await entry('tasks_admin'))!.reason).toContain("slug: 'tasks_admin' conflicts with 'tasks'");
    const admin = await client(proxy.uri('tasks_admin'));
    expect((await failure(admin.db(db).collection('tasks').find().toArray())).code).toBe(13);
    const c = await client(plainUri(await token()));
    expect(await c.db(db).collection('tasks').countDocuments()).toBeGreaterThan(0);
    await edit(() => fs.rmSync(file), (e) => !e.files.some((f) => f.file === file));
    expect(await entry('tasks_admin')).toBeUndefined();
  });

  it("a removed app's connections are told why and closed; other apps are unaffected", async () => {
    const doomed = await client(proxy.uri('doomed'));
    const idle = await client(proxy.uri('doomed'));
    const other = await client(proxy.uri('other'));
    await doomed.db(db).collection('d').insertOne({ d: 1 });
    await idle.db(db).collection('d').countDocuments();
    await other.db(db).collection('kept').insertOne({ k: 1 });
    expect(proxy.runtime.usage.peek('doomed')?.connections).toBeGreaterThanOrEqual(2);

    const { elapsedMS } = await edit(() => fs.rmSync(path.join(proxy.configDir, 'apps', 'doomed.yaml')), (e) => e.removed.includes('doomed'));
    expect(elapsedMS).toBeLessThan(2000);
    // The next request on a connection of the removed app: Unauthorized, saying why; then it closes.
    const err = await failure(doomed.db(db).collection('d').countDocuments());
    expect(err.code).toBe(13);
    expect(err.message).toBe("app 'doomed' was removed from the configuration; this connection is closed");
    // Idle ones close after the grace period; nothing of the app stays connected.
    await expect.poll(() => proxy.runtime.usage.peek('doomed')?.connections ?? 0, { timeout: 5000, interval: 50 }).toBe(0);
    expect(proxy.logs.some((l) => l.app_id === 'doomed' && String(l.msg).startsWith("closing connection: app 'doomed' was removed"))).toBe(true);
    // New connections of the removed app are not authenticated.
    expect((await failure(idle.db(db).collection('d').countDocuments())).code).toBe(13);
    expect(await entry('doomed')).toBeUndefined();

    // The other app never noticed.
    await other.db(db).collection('kept').insertOne({ k: 2 });
    expect(await other.db(db).collection('kept').find({}, { projection: { _id: 0, k: 1 } }).toArray()).toEqual([{ k: 1 }, { k: 2 }]);
  });
});

describe('hot reload and the rest of the runtime', () => {
  it('a dev connection (appName only) is closed when its app starts requiring authentication', async () => {
    writeManifest(proxy.configDir, 'lab.yaml', devYaml('lab'));
    await expect.poll(() => proxy.runtime.apps.current.get('lab') !== undefined, { timeout: 2000, interval: 20 }).toBe(true);
    const lab = await client(proxy.uri('lab'));
    await lab.db(db).collection('l').insertOne({ l: 1 });
    await edit(
      () => writeManifest(proxy.configDir, 'lab.yaml', 'slug: lab\nauth:\n  jwt:\n    secret_env: RELOAD_TASKS_SECRET\n'),
      (e) => e.changed.includes('lab'),
    );
    const err = await failure(lab.db(db).collection('l').countDocuments());
    expect(err.code).toBe(13);
    expect(err.message).toContain("app 'lab' now requires authentication (auth_required: true)");
  });

  it('managed indexes added by a reload are built by the reconciler, and /apps shows their state', async () => {
    await edit(
      () => writeManifest(proxy.configDir, 'other.yaml', devYaml('other', 'managed_indexes:\n  items:\n    - { keys: { sku: 1 }, name: by_sku, unique: true }\n')),
      (e) => e.changed.includes('other'),
    );
    await expect
      .poll(async () => (await entry('other'))?.indexes, { timeout: 10_000, interval: 100 })
      .toMatchObject({ phase: 'done', indexes: [expect.objectContaining({ collection: 'items', index: 'by_sku', action: 'ok' })] });
  });
});

describe('manifests failing at start', () => {
  let started: TestProxy;

  afterAll(async () => {
    await started?.stop();
  });

  it("with manifestErrorsAtStart 'serve', the proxy serves the valid apps and is not ready until the file is fixed", async () => {
    started = await startTestProxy({
      apps: { 'good.yaml': devYaml('good'), 'bad.yaml': 'slug: bad\nauth_required: false\nlimits: { connections: many }\n' },
      runtime: { manifestErrorsAtStart: 'serve' },
    });
    const file = path.join(started.configDir, 'apps', 'bad.yaml');
    const ready = await httpJson<{ reason: string; manifest_errors: { file: string; line: number }[] }>(started.httpPort, '/readyz');
    expect(ready.status).toBe(503);
    expect(ready.body.reason).toBe(`manifests failed to load at start: ${file}`);
    expect(ready.body.manifest_errors).toEqual([expect.objectContaining({ file, line: 3 })]);
    const doc = (await httpJson<AppsDocument>(started.httpPort, '/apps')).body;
    expect(doc.apps.find((a) => a.slug === 'bad')).toMatchObject({ status: 'error', serving: 'none', last_error: { file, line: 3 } });
    const good = new MongoClient(started.uri('good'), { serverSelectionTimeoutMS: 5000 });
    clients.push(good);
    await good.db(db).collection('g').insertOne({ g: 1 });

    await afterEdit(started.runtime.apps, () => writeManifest(started.configDir, 'bad.yaml', devYaml('bad', 'limits: { connections: 3 }\n')), (e) => e.added.includes('bad'));
    expect((await httpJson(started.httpPort, '/readyz')).status).toBe(200);
    expect((await httpJson<AppsDocument>(started.httpPort, '/apps')).body.apps.find((a) => a.slug === 'bad')).toMatchObject({
      status: 'available',
      limits: { connections: 3 },
    });
  });
});
