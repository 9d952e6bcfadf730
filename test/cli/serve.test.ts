import fs from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient, type Collection, type Document } from 'mongodb';

interface Item {
  _id: number;
  run: string;
  square: number;
  small?: boolean;
}
interface Tagged {
  _id: string;
  run: string;
}
import { SETTINGS } from '../../src/config/runtime-config.js';
import { freePort } from '../../src/testing/ports.js';
import { PLAYGROUND_APP, startTestProxy, uniqueDb } from '../helpers/proxy.js';
import { WireRelay } from '../../src/testing/relay.js';
import { CliProcess, type LogLine } from './cli-process.js';
import { assertBuilt, tempConfig } from '../../src/testing/processes.js';

const upstreamUri = inject('upstreamUri');
let direct: MongoClient;
const running: CliProcess[] = [];
const cleanup: (() => Promise<void> | void)[] = [];

beforeAll(async () => {
  assertBuilt();
  direct = new MongoClient(upstreamUri, { serverSelectionTimeoutMS: 10_000 });
  await direct.connect();
});
afterEach(async () => {
  await Promise.all(running.splice(0).map((p) => p.kill()));
  for (const fn of cleanup.splice(0).reverse()) await fn();
});
afterAll(async () => {
  await direct.close();
});

const RUNTIME_YAML = 'shutdown_grace_ms: 20000\nupstream:\n  server_selection_timeout_ms: 5000\n';

/** A config dir with runtime.yaml and the playground app (selected with ?appName=playground). */
function config(runtimeYaml = RUNTIME_YAML, apps: Record<string, string> = { 'playground.yaml': PLAYGROUND_APP }): string {
  const dir = tempConfig(runtimeYaml, apps);
  cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function start(args: string[], env: Record<string, string> = {}): CliProcess {
  const p = CliProcess.start(args, env);
  running.push(p);
  return p;
}

/** `serve` on free ports with everything given as flags. */
async function serve(options: { upstream?: string; configDir?: string; extra?: string[] } = {}) {
  const port = await freePort();
  const httpPort = await freePort();
  const cli = start([
    'serve',
    '--config',
    options.configDir ?? config(),
    '--listen',
    `127.0.0.1:${port}`,
    '--http-listen',
    `127.0.0.1:${httpPort}`,
    '--upstream',
    options.upstream ?? upstreamUri,
    ...(options.extra ?? []),
  ]);
  const startup = await cli.started();
  return { cli, port, httpPort, startup };
}

/** A driver connected through the proxy as the playground app. */
async function client(port: number, options: { serverSelectionTimeoutMS?: number; maxPoolSize?: number } = {}): Promise<MongoClient> {
  const c = new MongoClient(`mongodb://127.0.0.1:${port}/?appName=playground`, {
    serverSelectionTimeoutMS: options.serverSelectionTimeoutMS ?? 10_000,
    maxPoolSize: options.maxPoolSize ?? 10,
  });
  cleanup.push(() => c.close());
  await c.connect();
  return c;
}

/**
 * The upstream collection holding the documents a test wrote through the proxy, found by the run's
 * marker field: today the proxy does not rename (`<db>.<coll>`); once scoping lands it is
 * `<shared db>.playground_<coll>` (README). Exactly one of them may hold the run's documents.
 */
async function upstreamCollection<T extends Document>(db: string, coll: string, run: string): Promise<Collection<T>> {
  const candidates: [string, string][] = [
    [db, coll],
    ['mdb_runtime', `playground_${coll}`],
  ];
  const holding: [string, string][] = [];
  for (const [d, c] of candidates) if ((await direct.db(d).collection(c).countDocuments({ run })) > 0) holding.push([d, c]);
  expect(holding.map(([d, c]) => `${d}.${c}`), 'upstream collections holding the run').toHaveLength(1);
  return direct.db(holding[0]![0]).collection<T>(holding[0]![1]);
}

function httpGet(port: number, path: string): Promise<{ status: number; body: Document }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) as Document }));
      })
      .on('error', reject);
  });
}

/** 'refused' if nothing accepts connections on the port, 'accepted' otherwise. */
function tryConnect(port: number): Promise<'accepted' | 'refused'> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve('accepted');
    });
    s.once('error', (err: NodeJS.ErrnoException) => (err.code === 'ECONNREFUSED' ? resolve('refused') : reject(err)));
  });
}

const isMsg = (re: RegExp) => (l: LogLine) => typeof l.msg === 'string' && re.test(l.msg);
const upstreamHost = /^mongodb:\/\/(?:[^@/]*@)?([^/?,]+)/.exec(upstreamUri)![1]!;

describe('mdb-runtime serve (the built CLI as a child process)', () => {
  it('prints a startup line saying where it listens and which upstream it found, and a Node driver works through it', async () => {
    const { cli, port, httpPort, startup } = await serve();
    expect(startup.msg).toContain(`listening on 127.0.0.1:${port} (http 127.0.0.1:${httpPort})`);
    expect(startup.msg).toContain(`upstream mongodb://${upstreamHost}`);
    expect(startup.msg).toMatch(/topology, \d+ server\(s\); using \w+ \S+ \(maxWireVersion \d+\)/);
    expect(startup).toMatchObject({ listen: `127.0.0.1:${port}`, http: `127.0.0.1:${httpPort}`, apps: ['playground'] });
    expect(await httpGet(httpPort, '/healthz')).toMatchObject({ status: 200, body: { status: 'ok' } });
    expect(await httpGet(httpPort, '/readyz')).toMatchObject({ status: 200, body: { status: 'ready' } });

    const c = await client(port);
    const db = uniqueDb('cli_serve');
    const run = `run-${db}`;
    const col = c.db(db).collection<Item>('items');
    await col.insertMany(Array.from({ length: 50 }, (_, i) => ({ _id: i, run, square: i * i })));
    await col.updateMany({ _id: { $lt: 10 } }, { $set: { small: true } });
    expect(await col.countDocuments({ small: true })).toBe(10);
    const read = await col.find({ run }, { batchSize: 7, projection: { run: 0 } }).sort({ _id: 1 }).toArray();
    expect(read).toHaveLength(50);
    expect(read[7]).toEqual({ _id: 7, square: 49, small: true });
    // The writes are really on the upstream.
    const up = await upstreamCollection<Item>(db, 'items', run);
    expect(await up.countDocuments({ run, small: true })).toBe(10);
    expect((await up.findOne({ _id: 49 }))?.square).toBe(2401);
    await col.drop();

    cli.child.kill('SIGTERM');
    expect(await cli.exit()).toEqual({ code: 0, signal: null });
  });

  it('takes its settings from the MDB_* environment variables instead of flags', async () => {
    const port = await freePort();
    const httpPort = await freePort();
    const dir = config();
    const cli = start(['serve'], {
      MDB_CONFIG: dir,
      MDB_LISTEN: `127.0.0.1:${port}`,
      MDB_HTTP_LISTEN: `127.0.0.1:${httpPort}`,
      MDB_UPSTREAM_URI: upstreamUri,
      MDB_DATABASE: 'env_shared_db',
      MDB_LOG_LEVEL: 'debug',
    });
    const startup = await cli.started();
    expect(startup).toMatchObject({
      listen: `127.0.0.1:${port}`,
      http: `127.0.0.1:${httpPort}`,
      upstream: expect.stringContaining(upstreamHost) as unknown,
      database: 'env_shared_db',
      config: `${dir}/runtime.yaml`,
    });
    expect(await httpGet(httpPort, '/healthz')).toMatchObject({ status: 200 });
    const c = await client(port);
    const db = uniqueDb('cli_env');
    const t = c.db(db).collection<Tagged>('t');
    await t.insertOne({ _id: 'env', run: db });
    expect(await t.findOne({ _id: 'env' })).toEqual({ _id: 'env', run: db });
    // MDB_LOG_LEVEL=debug: the per-command debug lines are there.
    await cli.waitForLine((l) => l.level === 20 && l.msg === 'command' && l.cmd === 'insert', 'a debug line for the insert');
    await direct.db(db).dropDatabase();
    cli.child.kill('SIGTERM');
    expect((await cli.exit()).code).toBe(0);
  });

  it('lets a flag win over its environment variable', async () => {
    const flagPort = await freePort();
    const envPort = await freePort();
    const cli = start(['serve', '--config', config(), '--listen', `127.0.0.1:${flagPort}`, '--http-listen', '127.0.0.1:0'], {
      MDB_LISTEN: `127.0.0.1:${envPort}`,
      MDB_UPSTREAM_URI: upstreamUri,
    });
    expect(await cli.started()).toMatchObject({ listen: `127.0.0.1:${flagPort}` });
    expect(await tryConnect(envPort)).toBe('refused');
    cli.child.kill('SIGTERM');
    expect((await cli.exit()).code).toBe(0);
  });

  it('serve --help lists every flag and every environment variable', async () => {
    const cli = start(['serve', '--help']);
    expect(await cli.exit()).toEqual({ code: 0, signal: null });
    for (const flag of ['--config', ...SETTINGS.map((s) => s.flag)]) expect(cli.stdout).toContain(flag);
    for (const env of ['MDB_CONFIG', 'MDB_LISTEN', 'MDB_HTTP_LISTEN', 'MDB_UPSTREAM_URI', 'MDB_DATABASE', 'MDB_LOG_LEVEL', ...SETTINGS.map((s) => s.env)]) {
      expect(cli.stdout).toMatch(new RegExp(`^  ${env} +--`, 'm'));
    }
    expect(cli.stdout).toContain('SIGTERM');
    const top = start(['--help']);
    expect((await top.exit()).code).toBe(0);
    expect(top.stdout).toMatch(/^ {2}serve /m);
  });

  it('on SIGTERM finishes in-flight inserts, refuses new connections, loses no acknowledged insert and exits 0', async () => {
    // The upstream goes through a relay that can hold its replies: a held insert has run upstream but
    // is still in flight at the proxy when SIGTERM arrives.
    const relay = await WireRelay.start(WireRelay.firstHost(upstreamUri));
    cleanup.push(() => relay.close());
    const { cli, port, httpPort } = await serve({ upstream: WireRelay.uriThrough(upstreamUri, relay.port) });
    const c = await client(port, { serverSelectionTimeoutMS: 1000, maxPoolSize: 8 });
    const db = uniqueDb('cli_sigterm');
    const run = `run-${db}`;
    const col = c.db(db).collection<Tagged>('events');

    // A stream of acknowledged inserts from 6 concurrent workers; each records the ids acknowledged.
    const acknowledged = new Set<string>();
    const failures: string[] = [];
    let next = 0;
    let onProgress: (() => void) | undefined;
    const worker = async () => {
      for (;;) {
        const id = `w${next++}`;
        try {
          await col.insertOne({ _id: id, run });
        } catch (err) {
          failures.push((err as Error).message);
          return;
        }
        acknowledged.add(id);
        onProgress?.();
      }
    };
    const workers = Promise.all(Array.from({ length: 6 }, worker));
    await new Promise<void>((resolve) => {
      onProgress = () => acknowledged.size >= 60 && resolve();
    });

    // Hold the upstream's replies and wait until one held reply answers an insert (the relay saw the
    // run's marker on that upstream connection, which carries only the workers' inserts): that insert has
    // run upstream and is certainly in flight at the proxy.
    relay.watch(run);
    relay.hold();
    await relay.heldMarkedReply();
    const ackedBeforeSignal = acknowledged.size;

    cli.child.kill('SIGTERM');
    await cli.waitForLine(isMsg(/^shutting down/), 'the shutting-down line');
    // Draining: the listener is closed while the process still runs, and /readyz says not ready.
    expect(await tryConnect(port)).toBe('refused');
    expect(cli.running).toBe(true);
    expect(await httpGet(httpPort, '/readyz')).toMatchObject({ status: 503, body: { shutting_down: true } });
    expect(acknowledged.size).toBe(ackedBeforeSignal);

    relay.release();
    expect(await cli.exit()).toEqual({ code: 0, signal: null });
    expect(cli.lines.some(isMsg(/^mdb-runtime stopped$/))).toBe(true);
    expect(cli.lines.find(isMsg(/^signal received$/))).toMatchObject({ signal: 'SIGTERM' });
    await workers;
    // The in-flight inserts were acknowledged after the signal; after that every worker failed (the
    // proxy closed its connection and no longer accepts new ones).
    expect(acknowledged.size).toBeGreaterThan(ackedBeforeSignal);
    expect(failures).toHaveLength(6);

    // Counted directly on the upstream: every acknowledged insert is there, and nothing else ran.
    const up = await upstreamCollection<Tagged>(db, 'events', run);
    const stored = new Set((await up.find({ run }, { projection: { _id: 1 } }).toArray()).map((d) => String(d._id)));
    expect([...acknowledged].filter((id) => !stored.has(id)), 'acknowledged but missing upstream').toEqual([]);
    expect([...stored].filter((id) => !acknowledged.has(id)), 'stored upstream but never acknowledged').toEqual([]);
    await up.drop();
  });

  it('exits on SIGINT too, closing idle client connections at once', async () => {
    const { cli, port } = await serve();
    const c = await client(port);
    await c.db('admin').command({ ping: 1 });
    cli.child.kill('SIGINT');
    // The grace period is 20 s: exiting well within it shows the idle connection did not hold it up.
    expect(await cli.exit(10_000)).toEqual({ code: 0, signal: null });
    expect(cli.lines.find(isMsg(/^signal received$/))).toMatchObject({ signal: 'SIGINT' });
    expect(cli.lines.some(isMsg(/^mdb-runtime stopped$/))).toBe(true);
  });

  it('exits 1 at once on a second signal while requests are still in flight', async () => {
    const relay = await WireRelay.start(WireRelay.firstHost(upstreamUri));
    cleanup.push(() => relay.close());
    const { cli, port } = await serve({ upstream: WireRelay.uriThrough(upstreamUri, relay.port) });
    const c = await client(port, { serverSelectionTimeoutMS: 1000 });
    const db = uniqueDb('cli_second_signal');
    const col = c.db(db).collection<Tagged>('t');
    // One insert first, so the next one reuses that warm upstream connection (no handshake to hold).
    await col.insertOne({ _id: 'warm-up', run: db });
    relay.watch(db);
    relay.hold();
    const stuck = col.insertOne({ _id: 'in-flight', run: db });
    stuck.catch(() => undefined);
    await relay.heldMarkedReply();
    cli.child.kill('SIGTERM');
    await cli.waitForLine(isMsg(/^shutting down/), 'the shutting-down line');
    cli.child.kill('SIGTERM');
    expect(await cli.exit(5000)).toEqual({ code: 1, signal: null });
    expect(cli.lines.some(isMsg(/^second signal/))).toBe(true);
    await expect(stuck).rejects.toThrow();
    relay.release();
    await direct.db(db).dropDatabase();
  });

  it('stop() closes every upstream connection (pools and monitoring) before it resolves', async () => {
    // In process, to observe the upstream side: the relay counts the connections the proxy holds open.
    const relay = await WireRelay.start(WireRelay.firstHost(upstreamUri));
    cleanup.push(() => relay.close());
    const proxy = await startTestProxy({ upstreamUri: WireRelay.uriThrough(upstreamUri, relay.port), logLevel: 'silent' });
    const c = await client(proxy.port, { maxPoolSize: 20 });
    const col = c.db(uniqueDb('cli_pools')).collection('t');
    await Promise.all(Array.from({ length: 20 }, (_, i) => col.insertOne({ i })));
    expect(proxy.runtime.upstream.pools.size).toBeGreaterThan(0);
    expect(relay.openConnections).toBeGreaterThan(1);
    await col.drop();
    await proxy.stop();
    await relay.drained();
    expect(relay.openConnections).toBe(0);
  });

  describe('startup failures exit 1 with a message a person can act on', () => {
    it.each([
      {
        name: 'YAML syntax error',
        yaml: 'listen: 127.0.0.1:0\nupstream:\n  uri: "mongodb://db\n',
        expected: /runtime\.yaml:3:8: invalid YAML: Missing closing "quote/,
      },
      {
        name: 'bad value',
        yaml: 'upstream:\n  pool:\n    max_size: lots\n',
        expected: /runtime\.yaml:3:15: upstream\.pool\.max_size: expected an integer >= 1, found "lots" \(a string\)/,
      },
      {
        name: 'unknown key',
        yaml: 'listen: 127.0.0.1:0\nhttp_lisen: 127.0.0.1:0\n',
        expected: /runtime\.yaml:2:1: unknown setting 'http_lisen' \(did you mean 'http_listen'\?\)/,
      },
    ])('invalid runtime.yaml ($name) names the file and line', async ({ yaml, expected }) => {
      const dir = config(yaml);
      const cli = start(['serve', '--config', dir, '--upstream', upstreamUri]);
      expect(await cli.exit()).toEqual({ code: 1, signal: null });
      expect(cli.stderr).toMatch(/^mdb-runtime: configuration error: /);
      expect(cli.stderr).toContain(`${dir}/runtime.yaml:`);
      expect(cli.stderr).toMatch(expected);
      expect(cli.lines.some(isMsg(/listening on/))).toBe(false);
    });

    it('an invalid manifest names the manifest file, line and key', async () => {
      const dir = config('listen: 127.0.0.1:0\nhttp_listen: 127.0.0.1:0\n', { 'shop.yaml': 'slug: Shop\n' });
      const cli = start(['serve', '--config', dir, '--upstream', upstreamUri]);
      expect(await cli.exit()).toEqual({ code: 1, signal: null });
      expect(cli.stderr).toContain(`${dir}/apps/shop.yaml:1:7: slug: expected a lowercase name`);
    });

    it('a bad flag value names the flag', async () => {
      const cli = start(['serve', '--config', config(), '--listen', 'localhost', '--upstream', upstreamUri]);
      expect(await cli.exit()).toEqual({ code: 1, signal: null });
      expect(cli.stderr).toBe("mdb-runtime: configuration error: --listen: expected host:port (e.g. 127.0.0.1:27100) with a port from 0 to 65535, found 'localhost'\n");
    });

    it('a listen address in use says which setting to change', async () => {
      const blocker = net.createServer();
      await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
      cleanup.push(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
      const busy = (blocker.address() as net.AddressInfo).port;
      const cli = start(['serve', '--config', config(), '--listen', `127.0.0.1:${busy}`, '--http-listen', '127.0.0.1:0', '--upstream', upstreamUri]);
      expect(await cli.exit()).toEqual({ code: 1, signal: null });
      expect(cli.stderr).toContain(`cannot start: cannot listen on listen 127.0.0.1:${busy} (MDB_LISTEN, --listen):`);
      expect(cli.stderr).toContain('EADDRINUSE');
    });

    it.each([
      { name: 'nothing listening', host: async () => `127.0.0.1:${await freePort()}` },
      // TEST-NET-1 (RFC 5737): never routed, so the connection attempt hangs until the timeout.
      { name: 'an address that never answers', host: async () => '192.0.2.1:27017' },
    ])('an unreachable upstream ($name) exits 1 within the server selection timeout, password hidden', async ({ host }) => {
      const uri = `mongodb://admin:hunter2@${await host()}/`;
      const dir = config('listen: 127.0.0.1:0\nhttp_listen: 127.0.0.1:0\nupstream:\n  server_selection_timeout_ms: 1000\n  connect_timeout_ms: 1000\n');
      const started = Date.now();
      const cli = start(['serve', '--config', dir, '--upstream', uri]);
      expect(await cli.exit(15_000)).toEqual({ code: 1, signal: null });
      expect(Date.now() - started).toBeLessThan(8000);
      expect(cli.stderr).toContain(`mdb-runtime: cannot start: cannot reach the upstream ${uri.replace(':hunter2@', ':***@')} within 1000 ms`);
      expect(cli.stderr).toContain('Check upstream.uri (MDB_UPSTREAM_URI, --upstream)');
      expect(cli.stdout + cli.stderr).not.toContain('hunter2');
    });

    it('lines logged before a fatal startup error are written (stdout is buffered, flushed at exit)', async () => {
      const dir = config('listen: 127.0.0.1:0\nhttp_listen: 127.0.0.1:0\nupstream:\n  server_selection_timeout_ms: 300\n  connect_timeout_ms: 300\n', {
        'nokey.yaml': 'slug: nokey\nauth:\n  jwt:\n    secret_env: SERVE_TEST_MISSING_SECRET\n',
      });
      const cli = start(['serve', '--config', dir, '--upstream', `mongodb://127.0.0.1:${await freePort()}/`]);
      expect(await cli.exit(15_000)).toEqual({ code: 1, signal: null });
      expect(cli.stderr).toContain('mdb-runtime: cannot start: cannot reach the upstream');
      expect(cli.lines.find((l) => l.app_id === 'nokey' && typeof l.msg === 'string' && /is unavailable/.test(l.msg))).toMatchObject({ level: 50 });
    });
  });
});
