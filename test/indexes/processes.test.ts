import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient } from 'mongodb';
import { LEASE_COLLECTION, type LeaseDocument } from '../../src/indexes/index.js';
import type { ManagedIndex } from '../../src/apps/manifest-types.js';
import { freePort } from '../../src/testing/ports.js';
import { uniqueDb } from '../helpers/proxy.js';
import { WireRelay } from '../../src/testing/relay.js';
import { CLI, ROOT, assertBuilt } from '../../src/testing/processes.js';
import { ConnectionHoldingRelay, idx, upstreamIndexes, waitFor } from './helpers.js';

/**
 * Several processes, one upstream: only one process reconciles a given app at a time,
 * and a holder that dies is taken over after lease_ttl_ms. Each process is a real OS process running
 * the built code: the reconciler fixture (test/indexes/fixtures/reconciler-process.mjs), and, once the
 * runtime starts the reconciler, `mdb-runtime serve` itself. Process A talks to the upstream through a
 * relay that can hold its replies: with A's first index build held in flight, A holds the lease
 * mid-pass, deterministically.
 */

const upstreamUri = inject('upstreamUri');
const FIXTURE = path.join(ROOT, 'test/indexes/fixtures/reconciler-process.mjs');
let direct: MongoClient;
const cleanup: (() => Promise<unknown> | unknown)[] = [];

beforeAll(async () => {
  assertBuilt();
  direct = new MongoClient(upstreamUri, { serverSelectionTimeoutMS: 10_000 });
  await direct.connect();
});
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});
afterAll(async () => {
  await direct.close();
});

type Line = Record<string, unknown> & { msg?: string; time?: string };

/** A node process whose stdout is pino JSON lines; every wait is on a line or the exit. */
class NodeProcess {
  readonly lines: Line[] = [];
  private readonly child: ChildProcess;
  private output = '';
  private readonly listeners = new Set<() => void>();
  readonly exited: Promise<number | null>;

  constructor(args: string[], env: Record<string, string>) {
    const base: NodeJS.ProcessEnv = {};
    for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MDB_')) base[k] = v;
    this.child = spawn(process.execPath, args, { cwd: ROOT, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let partial = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      this.output += d.toString();
      const parts = (partial + d.toString()).split('\n');
      partial = parts.pop()!;
      for (const l of parts) {
        if (!l.trim()) continue;
        try {
          this.lines.push(JSON.parse(l) as Line);
        } catch {
          this.lines.push({ msg: l });
        }
      }
      for (const f of [...this.listeners]) f();
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.output += d.toString()));
    this.exited = new Promise((resolve) => this.child.once('close', (code) => resolve(code)));
    cleanup.push(() => this.kill());
  }

  /** Everything the process wrote (stdout and stderr). */
  get text(): string {
    return this.output;
  }

  waitForLine(predicate: (l: Line) => boolean, what: string, timeoutMS = 20_000): Promise<Line> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const found = this.lines.find(predicate);
        if (found) {
          done();
          resolve(found);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`no ${what} within ${timeoutMS} ms\n${this.output}`));
      }, timeoutMS);
      const done = () => {
        clearTimeout(timer);
        this.listeners.delete(check);
      };
      this.listeners.add(check);
      check();
      void this.exited.then(() => {
        if (this.listeners.has(check)) {
          done();
          reject(new Error(`process exited before ${what}\n${this.output}`));
        }
      });
    });
  }

  /** SIGTERM, then the exit status (fails with the output if the process is still running after `timeoutMS`). */
  async terminate(timeoutMS = 15_000): Promise<number | null> {
    this.child.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`still running ${timeoutMS} ms after SIGTERM\n${this.output}`)), timeoutMS);
    });
    try {
      return await Promise.race([this.exited, late]);
    } finally {
      clearTimeout(timer);
    }
  }

  async kill(): Promise<void> {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

interface Scenario {
  database: string;
  apps: Record<string, Record<string, ManagedIndex[]>>;
  leaseTtlMS: number;
}

/** How a test starts one "proxy" process against `uri`. */
type Starter = (name: string, uri: string, s: Scenario) => Promise<{ proc: NodeProcess; holder: string }>;

const fixtureStarter: Starter = async (name, uri, s) => {
  const holder = `${name}:${os.hostname()}`;
  const settings = {
    uri,
    database: s.database,
    holderId: holder,
    leaseTtlMS: s.leaseTtlMS,
    intervalMS: 60_000,
    apps: Object.entries(s.apps).map(([slug, indexes]) => ({ slug, indexes })),
  };
  const proc = new NodeProcess([FIXTURE], { MDB_RECONCILER_FIXTURE: JSON.stringify(settings) });
  await proc.waitForLine((l) => l.msg === 'index reconciler started', 'the reconciler start line');
  return { proc, holder };
};

/** YAML of a manifest with `indexes` (flow mappings), auth not required. */
function manifestYaml(slug: string, indexes: Record<string, ManagedIndex[]>): string {
  const lines = [`slug: ${slug}`, 'auth_required: false', 'managed_indexes:'];
  for (const [collection, list] of Object.entries(indexes)) {
    lines.push(`  ${collection}:`);
    for (const i of list) {
      const keys = i.keys.map(([f, k]) => `${f}: ${k}`).join(', ');
      const options = Object.entries(i.options).map(([k, v]) => `, ${k}: ${JSON.stringify(v)}`).join('');
      lines.push(`    - { keys: { ${keys} }, name: ${i.name}${options} }`);
    }
  }
  return `${lines.join('\n')}\n`;
}

const serveStarter: Starter = async (_name, uri, s) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-two-proxies-'));
  cleanup.push(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.mkdirSync(path.join(dir, 'apps'));
  fs.writeFileSync(path.join(dir, 'runtime.yaml'), `shutdown_grace_ms: 2000\nupstream:\n  database: ${s.database}\n`);
  for (const [slug, indexes] of Object.entries(s.apps)) fs.writeFileSync(path.join(dir, 'apps', `${slug}.yaml`), manifestYaml(slug, indexes));
  const args = [CLI, 'serve', '--config', dir, '--upstream', uri, '--listen', `127.0.0.1:${await freePort()}`, '--http-listen', `127.0.0.1:${await freePort()}`];
  // Lease TTL and interval through the environment (the flags work the same way).
  const proc = new NodeProcess(args, { MDB_LOG_LEVEL: 'debug', MDB_INDEX_LEASE_TTL_MS: String(s.leaseTtlMS), MDB_INDEX_INTERVAL_MS: '60000' });
  const started = await proc.waitForLine((l) => l.msg === 'index reconciler started', 'the reconciler start line');
  return { proc, holder: String(started.lease_holder) };
};

/** True once the built runtime starts an index reconciler (the runtime's owner wires it in). */
function serveRunsReconciler(): boolean {
  return ['dist/runtime.js', 'dist/cli/main.js'].some((f) => {
    const file = path.join(ROOT, f);
    return fs.existsSync(file) && fs.readFileSync(file, 'utf8').includes('new IndexReconciler(');
  });
}

async function leaseOf(database: string, slug: string): Promise<LeaseDocument | null> {
  return direct.db(database).collection<LeaseDocument>(LEASE_COLLECTION).findOne({ _id: slug });
}

/** A relay in front of the upstream that holds its replies from the first createIndexes on `collection` on. */
async function holdingRelay(collection: string): Promise<{ relay: WireRelay; held: Promise<void> }> {
  const relay = await WireRelay.start(WireRelay.firstHost(upstreamUri));
  cleanup.push(() => relay.close());
  let holding = false;
  const held = new Promise<void>((resolve) =>
    relay.onMessage((m) => {
      if (!holding && m.command === 'createIndexes' && m.body.createIndexes === collection) {
        holding = true;
        relay.hold();
        resolve();
      }
    }),
  );
  return { relay, held };
}

/** `promise`, or a failure saying what did not happen (with `detail()`) after `timeoutMS`. */
async function within<T>(promise: Promise<T>, timeoutMS: number, detail: () => string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`not within ${timeoutMS} ms: ${detail()}`)), timeoutMS);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

const eventTime = (l: Line) => Date.parse(String(l.time));

/** The times a process held an app's lease, from its own log: [acquired, released] pairs. */
function holdIntervals(p: NodeProcess, slug: string): [number, number][] {
  const intervals: [number, number][] = [];
  let open: number | undefined;
  for (const l of p.lines) {
    if (l.app_id !== slug) continue;
    if (l.msg === 'index reconciliation lease acquired') open = eventTime(l);
    if (l.msg === 'index reconciliation lease released' && open !== undefined) {
      intervals.push([open, eventTime(l)]);
      open = undefined;
    }
  }
  expect(open, `${slug}: a lease acquired and never released`).toBeUndefined();
  return intervals;
}

/** Which processes built indexes of `slug`. */
function builders(procs: Record<string, NodeProcess>, slug: string): string[] {
  return Object.entries(procs)
    .filter(([, p]) => p.lines.some((l) => l.app_id === slug && l.msg === 'index build started'))
    .map(([name]) => name);
}

async function onlyOneReconciles(start: Starter): Promise<void> {
  const s: Scenario = {
    database: uniqueDb('two_procs'),
    leaseTtlMS: 5000,
    apps: {
      alpha: { t: [idx('one', [['one', 1]]), idx('two', [['two', 1], ['x', -1]]), idx('three', [['three', 1]], { unique: true })], u: [idx('u', [['u', 1]])] },
      beta: { t: [idx('b', [['b', 1]])] },
    },
  };
  cleanup.push(() => direct.db(s.database).dropDatabase().catch(() => undefined));
  // Only the connection carrying A's first build of alpha is held: A's lease renewals go through.
  const relay = await ConnectionHoldingRelay.start(WireRelay.firstHost(upstreamUri), (b) => b.createIndexes === 'alpha_t');
  cleanup.push(() => relay.close());
  const a = await start('proc-a', WireRelay.uriThrough(upstreamUri, relay.port), s);
  await within(relay.held, 20_000, () => `A's first build of alpha\n${a.proc.text}`); // A is building alpha's first index, holding alpha's lease

  const during = await leaseOf(s.database, 'alpha');
  expect(during).toMatchObject({ holder: a.holder });
  // A renews its lease while it works.
  await waitFor(async () => ((await leaseOf(s.database, 'alpha'))?.renewedAt?.getTime() ?? 0) > during!.renewedAt!.getTime(), "A's renewal");
  expect(await leaseOf(s.database, 'alpha')).toMatchObject({ holder: a.holder });

  const b = await start('proc-b', upstreamUri, s);
  const waiting = await b.proc.waitForLine(
    (l) => l.app_id === 'alpha' && l.msg === 'index reconciliation: waiting for the lease held by another proxy',
    "B's waiting-for-lease line",
  );
  expect(waiting.lease_holder).toBe(a.holder);
  expect(b.proc.lines.filter((l) => l.app_id === 'alpha' && l.msg === 'index build started')).toEqual([]);

  relay.release();
  // A finishes alpha; B takes the lease when A's runs out, finds everything in place, releases it.
  await waitFor(async () => {
    const lease = await leaseOf(s.database, 'alpha');
    return lease?.holder === b.holder && lease.expiresAt.getTime() === 0;
  }, 'B to take and release alpha', 20_000);

  await waitFor(async () => 'b' in (await upstreamIndexes(direct, s.database, 'beta_t')), "beta's index");
  // Stopping waits for the passes in progress and releases their leases: the logs are complete.
  expect(await a.proc.terminate()).toBe(0);
  expect(await b.proc.terminate()).toBe(0);
  expect(a.proc.lines.filter((l) => l.app_id === 'alpha' && l.msg === 'index build finished').map((l) => l.index)).toEqual(['one', 'two', 'three', 'u']);
  // Each app was built by one process only (beta by whichever got its lease first).
  const procs = { A: a.proc, B: b.proc };
  expect(builders(procs, 'alpha')).toEqual(['A']);
  expect(builders(procs, 'beta')).toHaveLength(1);
  // The lease intervals of the two processes never overlap, app by app.
  for (const slug of ['alpha', 'beta']) {
    const aHeld = holdIntervals(a.proc, slug);
    const bHeld = holdIntervals(b.proc, slug);
    expect(aHeld.length + bHeld.length, slug).toBeGreaterThanOrEqual(2);
    for (const [a0, a1] of aHeld) for (const [b0, b1] of bHeld) expect(a1 <= b0 || b1 <= a0, `${slug}: A ${a0}-${a1}, B ${b0}-${b1}`).toBe(true);
  }
  expect(holdIntervals(b.proc, 'alpha')[0]![0]).toBeGreaterThanOrEqual(holdIntervals(a.proc, 'alpha')[0]![1]);
  expect(await upstreamIndexes(direct, s.database, 'alpha_t')).toEqual({
    _id_: { key: { _id: 1 } },
    one: { key: { one: 1 } },
    two: { key: { two: 1, x: -1 } },
    three: { key: { three: 1 }, unique: true },
  });
  expect(Object.keys(await upstreamIndexes(direct, s.database, 'beta_t')).sort()).toEqual(['_id_', 'b']);
}

async function deadHolderIsTakenOver(start: Starter): Promise<void> {
  const s: Scenario = {
    database: uniqueDb('dead_proc'),
    leaseTtlMS: 3000,
    apps: { gamma: { t: [idx('one', [['one', 1]]), idx('two', [['two', 1]]), idx('three', [['three', 1]])] } },
  };
  cleanup.push(() => direct.db(s.database).dropDatabase().catch(() => undefined));
  const { relay, held } = await holdingRelay('gamma_t');
  const a = await start('proc-a', WireRelay.uriThrough(upstreamUri, relay.port), s);
  await within(held, 20_000, () => `A's first build of gamma\n${a.proc.text}`);
  await a.proc.kill(); // SIGKILL mid-build: the lease is never renewed nor released
  relay.destroyAll();
  const orphaned = await leaseOf(s.database, 'gamma');
  expect(orphaned).toMatchObject({ holder: a.holder });
  expect(orphaned!.expiresAt.getTime()).toBeGreaterThan(0);

  const b = await start('proc-b', upstreamUri, s);
  await waitFor(async () => {
    const lease = await leaseOf(s.database, 'gamma');
    return lease?.holder === b.holder && lease.expiresAt.getTime() === 0;
  }, 'B to take over and finish gamma', 20_000);
  const taken = await leaseOf(s.database, 'gamma');
  // Taken over only once the dead holder's lease had run out (both are upstream times).
  expect(taken!.acquiredAt!.getTime()).toBeGreaterThanOrEqual(orphaned!.expiresAt.getTime() - 100);
  // B usually starts while A's lease is still live and says whom it waits for (a slow start may find it expired already).
  const waited = b.proc.lines.find((l) => l.app_id === 'gamma' && l.msg === 'index reconciliation: waiting for the lease held by another proxy');
  if (waited) expect(waited.lease_holder).toBe(a.holder);
  // Log lines are written in batches (at most ~100 ms late): wait for them rather than read them now.
  for (const index of ['two', 'three']) {
    await b.proc.waitForLine((l) => l.app_id === 'gamma' && l.msg === 'index build finished' && l.index === index, `B's build of ${index}`, 5_000);
  }
  expect(Object.keys(await upstreamIndexes(direct, s.database, 'gamma_t')).sort()).toEqual(['_id_', 'one', 'three', 'two']);
  expect(await b.proc.terminate()).toBe(0);
}

describe('two reconciler processes on one upstream', () => {
  it('only one reconciles an app at a time: the other waits for the lease, then finds the work done', () => onlyOneReconciles(fixtureStarter));
  it('a process killed while holding a lease is taken over after lease_ttl_ms', () => deadHolderIsTakenOver(fixtureStarter));
});

describe.runIf(serveRunsReconciler())('two `mdb-runtime serve` processes on one upstream', () => {
  it('only one proxy reconciles an app at a time (lease collection and logs)', () => onlyOneReconciles(serveStarter));
  it('a proxy killed while holding a lease is taken over after lease_ttl_ms', () => deadHolderIsTakenOver(serveStarter));
});
