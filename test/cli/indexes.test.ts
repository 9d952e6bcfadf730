import fs from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient } from 'mongodb';
import { loadManifests, type AppManifest } from '../../src/apps/manifests.js';
import { runIndexes, type IndexesOptions } from '../../src/cli/indexes.js';
import { CliError } from '../../src/cli/token.js';
import { LeaseManager } from '../../src/indexes/index.js';
import { uniqueDb } from '../helpers/proxy.js';
import { appWith, idx, upstreamIndexes } from '../indexes/helpers.js';
import { CliProcess, assertBuilt, tempConfig } from './cli-process.js';

/**
 * `mdb-runtime indexes [--app SLUG] [--apply]` (issue 4 item 6) on the real upstream: the plan table,
 * --apply with a progress line per index operation, exit status. In process (`runIndexes` with apps
 * built in code) and as the built binary (manifests read from files).
 */

const upstreamUri = inject('upstreamUri');
let direct: MongoClient;
const cleanup: (() => Promise<unknown> | unknown)[] = [];

beforeAll(async () => {
  direct = new MongoClient(upstreamUri, { serverSelectionTimeoutMS: 10_000 });
  await direct.connect();
});
afterEach(async () => {
  for (const fn of cleanup.splice(0).reverse()) await fn();
});
afterAll(async () => {
  await direct.close();
});

/** A config dir whose runtime.yaml names a fresh database (dropped afterwards); `extra` goes at the top level. */
function setup(extra = '', apps: Record<string, string> = {}, selectionMS = 5000): { dir: string; database: string } {
  const database = uniqueDb('cli_indexes');
  const dir = tempConfig(`${extra}upstream:\n  database: ${database}\n  server_selection_timeout_ms: ${selectionMS}\n`, apps);
  cleanup.push(async () => {
    fs.rmSync(dir, { recursive: true, force: true });
    await direct.db(database).dropDatabase().catch(() => undefined);
  });
  return { dir, database };
}

async function run(options: IndexesOptions, apps: AppManifest[]): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await runIndexes({ upstream: upstreamUri, ...options }, (l) => lines.push(l), { apps, holderId: 'cli-test' });
  return { code, lines };
}

/** The table rows (APP, COLLECTION, INDEX, ACTION, DETAIL) printed after the header line `header`. */
function table(lines: string[], from = 0): string[][] {
  const start = lines.findIndex((l, i) => i >= from && l.startsWith('APP '));
  expect(start, lines.join('\n')).toBeGreaterThanOrEqual(0);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 1)) {
    const cells = line.split(/ {2,}/);
    if (cells.length < 4) break;
    rows.push(cells);
  }
  return rows;
}

/** An app with one index of each outcome on collection t (after seeding `<slug>_t`). */
async function seeded(database: string, slug: string): Promise<AppManifest> {
  const coll = direct.db(database).collection(`${slug}_t`);
  await coll.createIndex({ a: 1 }, { name: 'in_place' });
  await coll.createIndex({ b: 1 }, { name: 'drifted' });
  await coll.createIndex({ h: 1 }, { name: 'by_hand' });
  return appWith(
    slug,
    { t: [idx('in_place', [['a', 1]]), idx('missing', [['m', 1], ['n', -1]]), idx('drifted', [['b', 1]], { unique: true })] },
    { prune: true },
  );
}

describe('mdb-runtime indexes (in process)', () => {
  it('prints the plan as a table and changes nothing', async () => {
    const { dir, database } = setup();
    const app = await seeded(database, 'plan_app');
    const { code, lines } = await run({ config: dir }, [app, appWith('bare', {})]);
    expect(code).toBe(0);
    expect(table(lines)).toEqual([
      ['plan_app', 't', 'in_place', 'ok'],
      ['plan_app', 't', 'missing', 'create'],
      ['plan_app', 't', 'drifted', 'drift', "unique: manifest true, upstream absent (reported only: reconcile is 'report')"],
      ['plan_app', 't', 'by_hand', 'prune', 'not managed by the manifest (prune is on)'],
    ]);
    expect(lines).toContain('apps without managed indexes: bare');
    expect(lines).toContain('1 ok, 1 to create, 1 drifted, 1 to prune, 0 errors');
    expect(lines).toContain('nothing was changed; run with --apply to carry out the plan');
    expect(Object.keys(await upstreamIndexes(direct, database, 'plan_app_t')).sort()).toEqual(['_id_', 'by_hand', 'drifted', 'in_place']);
  });

  it('--apply builds, replaces the drifted index (--apply implies replace), prunes, with a progress line per operation', async () => {
    const { dir, database } = setup();
    const app = await seeded(database, 'apply_app');
    const { code, lines } = await run({ config: dir, apply: true }, [app]);
    expect(code, lines.join('\n')).toBe(0);
    // The plan printed first says what --apply will do.
    expect(table(lines)).toContainEqual(['apply_app', 't', 'drifted', 'drift', 'unique: manifest true, upstream absent (will be replaced)']);
    const progress = lines.filter((l) => /^\[\d+\/\d+\] /.test(l)).map((l) => l.replace(/ in \d+ ms$/, ' in N ms'));
    const ns = `${database}.apply_app_t`;
    expect(progress).toEqual([
      `[1/3] apply_app: dropping index by_hand on t (${ns}) ...`,
      `[1/3] apply_app: dropping index by_hand on t (${ns}): done in N ms`,
      `[2/3] apply_app: dropping drifted index drifted on t (${ns}) ...`,
      `[2/3] apply_app: dropping drifted index drifted on t (${ns}): done in N ms`,
      `[2/3] apply_app: rebuilding index drifted on t (${ns}) ...`,
      `[2/3] apply_app: rebuilding index drifted on t (${ns}): done in N ms`,
      `[3/3] apply_app: building index missing on t (${ns}) ...`,
      `[3/3] apply_app: building index missing on t (${ns}): done in N ms`,
    ]);
    const result = table(lines, lines.indexOf('result:'));
    expect(result).toEqual([
      ['apply_app', 't', 'in_place', 'ok'],
      ['apply_app', 't', 'missing', 'ok'],
      ['apply_app', 't', 'drifted', 'ok'],
    ]);
    expect(await upstreamIndexes(direct, database, 'apply_app_t')).toEqual({
      _id_: { key: { _id: 1 } },
      in_place: { key: { a: 1 } },
      missing: { key: { m: 1, n: -1 } },
      drifted: { key: { b: 1 }, unique: true },
    });
    // A second run has nothing to do.
    const again = await run({ config: dir, apply: true }, [app]);
    expect(again.code).toBe(0);
    expect(again.lines).toContain('nothing to do');
  });

  it('--apply exits 1 when an index fails (unique over duplicates); the others are built', async () => {
    const { dir, database } = setup();
    await direct.db(database).collection('dup_app_t').insertMany([{ e: 1 }, { e: 1 }]);
    const app = appWith('dup_app', { t: [idx('e', [['e', 1]], { unique: true }), idx('f', [['f', 1]])] });
    const { code, lines } = await run({ config: dir, apply: true }, [app]);
    expect(code).toBe(1);
    expect(lines.find((l) => l.includes('building index e on t') && l.includes('FAILED'))).toMatch(/same values for this unique index/);
    const result = table(lines, lines.indexOf('result:'));
    expect(result.map((r) => r.slice(0, 4))).toEqual([
      ['dup_app', 't', 'e', 'error'],
      ['dup_app', 't', 'f', 'ok'],
    ]);
    expect(Object.keys(await upstreamIndexes(direct, database, 'dup_app_t')).sort()).toEqual(['_id_', 'f']);
  });

  it('--app selects one app; an unknown one is an error naming the known apps', async () => {
    const { dir } = setup();
    const apps = [appWith('one', { t: [idx('x', [['x', 1]])] }), appWith('two', { t: [idx('y', [['y', 1]])] })];
    const { code, lines } = await run({ config: dir, app: 'two' }, apps);
    expect(code).toBe(0);
    expect(table(lines).map((r) => r.slice(0, 4))).toEqual([['two', 't', 'y', 'create']]);
    await expect(run({ config: dir, app: 'three' }, apps)).rejects.toThrow(CliError);
    await expect(run({ config: dir, app: 'three' }, apps)).rejects.toThrow(/no app 'three' in .* \(apps: one, two\)/);
  });

  it('--apply waits for the lease of an app a proxy is reconciling, then carries out the plan', async () => {
    const { dir, database } = setup('indexes:\n  lease_ttl_ms: 1500\n');
    const proxy = new LeaseManager({ db: direct.db(database), holderId: 'proxy-x', ttlMS: 1500 });
    const held = await proxy.acquire('busy');
    if (!held.acquired) throw new Error('lease not acquired');
    held.lease.abandon();
    const { code, lines } = await run({ config: dir, apply: true }, [appWith('busy', { t: [idx('x', [['x', 1]])] })]);
    expect(code).toBe(0);
    const waiting = lines.indexOf('busy: waiting for the reconciliation lease held by proxy-x (a proxy reconciling it)');
    const building = lines.findIndex((l) => l.includes('building index x on t'));
    expect(waiting).toBeGreaterThanOrEqual(0);
    expect(building).toBeGreaterThan(waiting);
    expect(await proxy.current('busy')).toMatchObject({ holder: 'cli-test', expiresAt: new Date(0) });
    expect(await upstreamIndexes(direct, database, 'busy_t')).toMatchObject({ x: { key: { x: 1 } } });
  });

  it('an unreachable upstream is an error saying what to check', async () => {
    const { dir } = setup('', {}, 300);
    await expect(run({ config: dir, upstream: 'mongodb://127.0.0.1:1/' }, [])).rejects.toThrow(
      /cannot reach the upstream mongodb:\/\/127\.0\.0\.1:1\/.*Check upstream\.uri \(--upstream, MDB_UPSTREAM_URI\)/,
    );
  });
});

/** True once manifests declare managed indexes (the loader parses managed_indexes). */
function loaderParsesIndexes(): boolean {
  const dir = tempConfig('', { 'probe.yaml': 'slug: probe\nauth_required: false\nmanaged_indexes:\n  t:\n    - { keys: { a: 1 }, name: a }\n' });
  try {
    return (loadManifests(dir, {})[0]?.managedIndexes.size ?? 0) > 0;
  } catch {
    return false;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('mdb-runtime indexes (the built binary)', () => {
  beforeAll(() => assertBuilt());

  it('--help describes the command and its exit status', async () => {
    const cli = CliProcess.start(['indexes', '--help']);
    expect((await cli.exit()).code).toBe(0);
    expect(cli.stdout).toMatch(/--app <slug>/);
    expect(cli.stdout).toMatch(/--apply/);
    expect(cli.stdout).toMatch(/Exit status: 0, or 1 when the plan or the apply has an error/);
  });

  it('an unknown --app exits 1 with a message', async () => {
    const { dir } = setup('', { 'known.yaml': 'slug: known\nauth_required: false\n' });
    const cli = CliProcess.start(['indexes', '--config', dir, '--upstream', upstreamUri, '--app', 'nope']);
    expect((await cli.exit()).code).toBe(1);
    expect(cli.stderr).toMatch(/mdb-runtime: no app 'nope' in .*apps \(apps: known\)/);
  });

  it.runIf(loaderParsesIndexes())('reads managed_indexes from the manifests: plan, then --apply with progress lines', async () => {
    const { dir, database } = setup('', {
      'files.yaml':
        'slug: files\nauth_required: false\nmanaged_indexes:\n  docs:\n    - { keys: { owner: 1, created_at: -1 }, name: by_owner }\n    - { keys: { path: 1 }, name: path, unique: true }\n',
    });
    const plan = CliProcess.start(['indexes', '--config', dir, '--upstream', upstreamUri]);
    expect((await plan.exit()).code, plan.output()).toBe(0);
    expect(plan.stdout).toMatch(/^files +docs +by_owner +create/m);
    expect(plan.stdout).toMatch(/^files +docs +path +create/m);

    const apply = CliProcess.start(['indexes', '--config', dir, '--upstream', upstreamUri, '--apply']);
    expect((await apply.exit()).code, apply.output()).toBe(0);
    expect(apply.stdout).toMatch(/^\[1\/2\] files: building index by_owner on docs \(.*\.files_docs\): done in \d+ ms$/m);
    expect(apply.stdout).toMatch(/^\[2\/2\] files: building index path on docs \(.*\.files_docs\): done in \d+ ms$/m);
    expect(await upstreamIndexes(direct, database, 'files_docs')).toEqual({
      _id_: { key: { _id: 1 } },
      by_owner: { key: { owner: 1, created_at: -1 } },
      path: { key: { path: 1 }, unique: true },
    });
  });
});
