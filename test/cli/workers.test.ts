import fs from 'node:fs';
import http from 'node:http';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient, type Document } from 'mongodb';
import { freePort } from '../../src/testing/ports.js';
import { PLAYGROUND_APP, uniqueDb } from '../helpers/proxy.js';
import { parsePrometheus } from '../observability/prom-text.js';
import { CliProcess, type LogLine } from './cli-process.js';
import { assertBuilt, tempConfig } from '../../src/testing/processes.js';

/**
 * `mdb-runtime serve --workers N`: the built CLI as a child process, against the test
 * upstream (FerretDB). The primary forks N workers sharing the wire port and serves HTTP for all of them.
 */
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
  for (const fn of cleanup.splice(0).reverse()) await fn();
  await Promise.all(running.splice(0).map((p) => p.kill()));
});
afterAll(async () => {
  await direct.close();
});

function config(): string {
  const dir = tempConfig('shutdown_grace_ms: 5000\nupstream:\n  server_selection_timeout_ms: 5000\n', { 'playground.yaml': PLAYGROUND_APP });
  cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  return dir;
}

function start(args: string[], env: Record<string, string> = {}): CliProcess {
  const p = CliProcess.start(args, env);
  running.push(p);
  return p;
}

function get(port: number, path: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    http
      .get({ host: '127.0.0.1', port, path }, (res) => {
        let text = '';
        res.on('data', (d: Buffer) => (text += d.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      })
      .on('error', reject);
  });
}
const getJSON = async (port: number, path: string) => {
  const r = await get(port, path);
  return { status: r.status, body: JSON.parse(r.text) as Document };
};

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const isMsg = (re: RegExp) => (l: LogLine) => typeof l.msg === 'string' && re.test(l.msg);

describe('mdb-runtime serve --workers', () => {
  it('refuses a worker count that is not an integer from 1 to 64, with a clear message and exit 1', async () => {
    const cases: [string[], Record<string, string>, string][] = [
      [['--workers', '0'], {}, "--workers: expected an integer from 1 to 64, found '0'"],
      [['--workers=-1'], {}, "--workers: expected an integer from 1 to 64, found '-1'"],
      [['--workers', 'abc'], {}, "--workers: expected an integer from 1 to 64, found 'abc'"],
      [['--workers', '65'], {}, "--workers: expected an integer from 1 to 64, found '65'"],
      [[], { MDB_WORKERS: '1000' }, "MDB_WORKERS: expected an integer from 1 to 64, found '1000'"],
    ];
    const dir = config();
    await Promise.all(
      cases.map(async ([flags, env, message]) => {
        const cli = start(['serve', '--config', dir, '--upstream', upstreamUri, '--listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', ...flags], env);
        expect(await cli.exit(), cli.output()).toEqual({ code: 1, signal: null });
        expect(cli.stderr).toContain(`mdb-runtime: configuration error: ${message}`);
      }),
    );
  });

  it('serves through 2 workers sharing the port; /metrics sums the workers exactly; SIGTERM stops every process and exits 0', async () => {
    const port = await freePort();
    const httpPort = await freePort();
    const cli = start([
      'serve',
      '--workers',
      '2',
      '--config',
      config(),
      '--listen',
      `127.0.0.1:${port}`,
      '--http-listen',
      `127.0.0.1:${httpPort}`,
      '--upstream',
      upstreamUri,
    ]);
    const startup = await cli.started(40_000);
    expect(startup.msg).toContain(`listening on 127.0.0.1:${port} (http 127.0.0.1:${httpPort}) with 2 workers`);
    expect(startup.worker).toBe(0);
    const workerPids = (startup.workers as { id: number; pid: number }[]).map((w) => w.pid);
    expect(workerPids).toHaveLength(2);
    expect(new Set(workerPids).size).toBe(2);

    const ready = await getJSON(httpPort, '/readyz');
    expect(ready).toMatchObject({ status: 200, body: { status: 'ready', upstream_ping: { ok: true } } });
    expect((ready.body.workers as Document[]).map((w) => w.id)).toEqual([1, 2]);
    expect(await getJSON(httpPort, '/healthz')).toMatchObject({ status: 200 });
    expect((await get(httpPort, '/')).text).toContain('<html');

    // Many clients: the connections are spread over both workers (round-robin).
    const clients: MongoClient[] = [];
    for (let i = 0; i < 12; i++) {
      const c = new MongoClient(`mongodb://127.0.0.1:${port}/?appName=playground`, { serverSelectionTimeoutMS: 10_000, maxPoolSize: 2 });
      cleanup.push(() => c.close());
      clients.push(c);
    }
    await Promise.all(clients.map((c) => c.db('admin').command({ ping: 1 })));
    const spread = await getJSON(httpPort, '/readyz');
    const perWorker = (spread.body.workers as { connections: number }[]).map((w) => w.connections);
    expect(perWorker.every((n) => n > 0), `connections per worker: ${perWorker.join('/')}`).toBe(true);
    expect(perWorker.reduce((a, b) => a + b, 0)).toBeGreaterThanOrEqual(12);

    // A known workload, spread over the clients (so over both workers): 24 inserts and 36 finds.
    const db = uniqueDb('cli_workers');
    await Promise.all(
      clients.map(async (c, i) => {
        const col = c.db(db).collection<{ _id: number; i: number }>('items');
        await col.insertOne({ _id: i * 2, i });
        await col.insertOne({ _id: i * 2 + 1, i });
        for (let k = 0; k < 3; k++) expect(await col.findOne({ _id: i * 2 })).toEqual({ _id: i * 2, i });
      }),
    );
    const samples = parsePrometheus((await get(httpPort, '/metrics')).text);
    const ops = (command: string) =>
      samples
        .filter((s) => s.name === 'mdb_operations_total' && s.labels.app === 'playground' && s.labels.command === command)
        .reduce((sum, s) => sum + s.value, 0);
    expect(ops('insert')).toBe(24);
    expect(ops('find')).toBe(36);
    const durationCount = samples
      .filter((s) => s.name === 'mdb_command_duration_seconds_count' && s.labels.app === 'playground' && s.labels.command === 'insert')
      .reduce((sum, s) => sum + s.value, 0);
    expect(durationCount).toBe(24);
    // Configuration-wide series are not multiplied by the worker count.
    expect(samples.find((s) => s.name === 'mdb_apps' && s.labels.status === 'available')?.value).toBe(1);
    expect(samples.find((s) => s.name === 'mdb_upstream_up')?.value).toBe(1);
    const clientConnections = samples.filter((s) => s.name === 'mdb_client_connections' && s.labels.app === 'playground').reduce((sum, s) => sum + s.value, 0);
    expect(clientConnections).toBe(perWorker.reduce((a, b) => a + b, 0));

    // /apps adds up the workers.
    const apps = await getJSON(httpPort, '/apps');
    const playground = (apps.body.apps as Document[]).find((a) => a.slug === 'playground')!;
    expect(playground.status).toBe('available');
    expect(playground.ops_total).toBeGreaterThanOrEqual(ops('insert') + ops('find'));
    expect(playground.connections).toBe(clientConnections);
    expect(playground.indexes).not.toBeNull();

    // Every log line names its worker (0: the primary).
    const workersSeen = new Set(cli.lines.filter((l) => !l.raw).map((l) => l.worker));
    expect(workersSeen).toEqual(new Set([0, 1, 2]));
    expect(cli.lines.filter((l) => !l.raw).every((l) => typeof l.worker === 'number')).toBe(true);

    await direct.db(db).dropDatabase();
    for (const fn of cleanup.splice(cleanup.length - clients.length)) await fn();
    cli.child.kill('SIGTERM');
    expect(await cli.exit(30_000)).toEqual({ code: 0, signal: null });
    expect(workerPids.filter(alive)).toEqual([]);
    expect(cli.lines.filter(isMsg(/^mdb-runtime stopped$/)).map((l) => l.worker).sort()).toEqual([0, 1, 2]);
  }, 90_000);

  it('restarts a worker that dies, and reports a start failure once with exit 1 (no restart loop)', async () => {
    const port = await freePort();
    const httpPort = await freePort();
    const cli = start(['serve', '--workers', '2', '--config', config(), '--listen', `127.0.0.1:${port}`, '--http-listen', `127.0.0.1:${httpPort}`, '--upstream', upstreamUri]);
    const startup = await cli.started(40_000);
    const victim = (startup.workers as { id: number; pid: number }[])[1]!;
    process.kill(victim.pid, 'SIGKILL');
    const died = await cli.waitForLine(isMsg(/^worker 2 \(pid \d+\) exited unexpectedly/), 'the worker death line');
    expect(died).toMatchObject({ worker: 0, worker_id: 2, signal: 'SIGKILL', restart_in_ms: 1000 });
    await cli.waitForLine(isMsg(/^worker 2 is serving again$/), 'the restarted worker', 30_000);
    const ready = await getJSON(httpPort, '/readyz');
    expect(ready.status).toBe(200);
    expect((ready.body.workers as Document[])[1]).toMatchObject({ id: 2, ready: true, restarts: 1 });
    expect((ready.body.workers as Document[])[1]!.pid).not.toBe(victim.pid);

    // The wire port is taken by the running cluster: a second one cannot start, and says why.
    const second = start(['serve', '--workers', '2', '--config', config(), '--listen', `127.0.0.1:${port}`, '--http-listen', '127.0.0.1:0', '--upstream', upstreamUri]);
    expect(await second.exit(40_000)).toEqual({ code: 1, signal: null });
    expect(second.stderr).toMatch(/^mdb-runtime: cannot start: cannot listen on listen 127\.0\.0\.1:\d+ \(MDB_LISTEN, --listen\): .*EADDRINUSE/m);
    expect(second.stderr.match(/mdb-runtime: /g)).toHaveLength(1);

    cli.child.kill('SIGTERM');
    expect((await cli.exit(30_000)).code).toBe(0);
  }, 90_000);

  it('exits 1 with the usual message when the upstream cannot be reached at start', async () => {
    const deadPort = await freePort();
    const cli = start([
      'serve',
      '--workers',
      '2',
      '--config',
      config(),
      '--listen',
      '127.0.0.1:0',
      '--http-listen',
      '127.0.0.1:0',
      '--upstream',
      `mongodb://127.0.0.1:${deadPort}`,
      '--server-selection-timeout-ms',
      '500',
    ]);
    expect(await cli.exit(30_000)).toEqual({ code: 1, signal: null });
    expect(cli.stderr).toMatch(/^mdb-runtime: cannot start: cannot reach the upstream mongodb:\/\/127\.0\.0\.1:\d+ within 500 ms/m);
  }, 40_000);
});
