import fs from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient } from 'mongodb';
import { loadManifests, type AppManifest } from '../../src/apps/manifests.js';
import { runIndexes, type IndexesOptions } from '../../src/cli/indexes.js';
import { CliError } from '../../src/cli/token.js';
import { LeaseManager } from '../../src/indexes/index.js';
import { uniqueDb } from '../helpers/proxy.js';
import { appWith, idx, planTable, upstreamIndexes } from '../indexes/helpers.js';
import { CliProcess } from './cli-process.js';
import { assertBuilt, tempConfig } from '../../src/testing/processes.js';

/**
 * `mdb-runtime indexes [--app SLUG] [--apply]` on the real upstream: the plan table,
 * --apply with a progress line per index operation, exit status. In process (`runIndexes` with apps
 * built in code) and as the built binary (manifests read from files).
 */

const upstreamUri = inject('upstreamUri');
const ferret = inject('upstreamIsFerretDB');
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
    expect(planTable(lines)).toEqual([
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
    expect(planTable(lines)).toContainEqual(['apply_app', 't', 'drifted', 'drift', 'unique: manifest true, upstream absent (will be replaced)']);
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
    const result = planTable(lines, lines.indexOf('result:'));
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
    const result = planTable(lines, lines.indexOf('result:'));
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
    expect(planTable(lines).map((r) => r.slice(0, 4))).toEqual([['two', 't', 'y', 'create']]);
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

  it('--apply: an index the upstream cannot build is unsupported, with its answer, and not a failure; the next run knows it', async () => {
    const { dir, database } = setup();
    const app = appWith('limited', {
      sessions: [
        idx('last_seen_1', [['last_seen', 1]], { expireAfterSeconds: 86400 }),
        idx('open_due', [['due', 1]], { partialFilterExpression: { status: 'open' } }),
        idx('user_1', [['user', 1]]),
      ],
    });
    const { code, lines } = await run({ config: dir, apply: true }, [app]);
    expect(code, lines.join('\n')).toBe(0);
    const result = planTable(lines, lines.indexOf('result:'));
    if (!ferret) {
      expect(result.map((r) => r[3])).toEqual(['ok', 'ok', 'ok']);
      return;
    }
    const ns = `${database}.limited_sessions`;
    expect(lines.filter((l) => /^\[\d\/3\] .*(cannot build|done in)/.test(l)).map((l) => l.replace(/\(\d+ ms\)|in \d+ ms/, 'N'))).toEqual([
      `[1/3] limited: building index last_seen_1 on sessions (${ns}): the upstream cannot build it N: NotImplemented (238): Index option "expireAfterSeconds" is not implemented yet`,
      `[2/3] limited: building index open_due on sessions (${ns}): the upstream cannot build it N: NotImplemented (238): Index option "partialFilterExpression" is not implemented yet`,
      `[3/3] limited: building index user_1 on sessions (${ns}): done N`,
    ]);
    expect(lines.some((l) => l.includes('FAILED'))).toBe(false);
    expect(result).toEqual([
      ['limited', 'sessions', 'last_seen_1', 'unsupported', 'the upstream cannot build this index: NotImplemented (238): Index option "expireAfterSeconds" is not implemented yet'],
      ['limited', 'sessions', 'open_due', 'unsupported', 'the upstream cannot build this index: NotImplemented (238): Index option "partialFilterExpression" is not implemented yet'],
      ['limited', 'sessions', 'user_1', 'ok'],
    ]);
    expect(lines).toContain('1 ok, 0 to create, 0 drifted, 0 to prune, 2 unsupported by the upstream, 0 errors');
    expect(lines).toContain(
      'the upstream cannot build 2 indexes, left out (not an error): limited sessions.last_seen_1 (NotImplemented 238), limited sessions.open_due (NotImplemented 238)',
    );

    // The next run plans them as unsupported (the verdicts are kept in the upstream) and builds nothing.
    const plan = await run({ config: dir }, [app]);
    expect(plan.code).toBe(0);
    expect(planTable(plan.lines).map((r) => r.slice(0, 4))).toEqual([
      ['limited', 'sessions', 'last_seen_1', 'unsupported'],
      ['limited', 'sessions', 'open_due', 'unsupported'],
      ['limited', 'sessions', 'user_1', 'ok'],
    ]);
    expect(plan.lines).not.toContain('nothing was changed; run with --apply to carry out the plan');
    const again = await run({ config: dir, apply: true }, [app]);
    expect(again.code).toBe(0);
    expect(again.lines).toContain('nothing to do');
    // A changed spec is another index: planned for a build again.
    const changed = appWith('limited', { sessions: [idx('last_seen_1', [['last_seen', 1]], { expireAfterSeconds: 60 }), idx('user_1', [['user', 1]])] });
    expect(planTable((await run({ config: dir }, [changed])).lines).map((r) => r.slice(0, 4))).toEqual([
      ['limited', 'sessions', 'last_seen_1', 'create'],
      ['limited', 'sessions', 'user_1', 'ok'],
    ]);
  });

  it("another app's broken manifest does not stop --app; without --app it is reported, the others are planned, and the status is 1", async () => {
    const { dir } = setup('', {
      'good.yaml': 'slug: good\nauth_required: false\nmanaged_indexes:\n  t:\n    - { keys: { a: 1 }, name: a }\n',
      'broken.yaml': 'slug: broken\nauth_required: false\nmanaged_indexes:\n  t:\n    - { keys: { a: 1 }, nmae: a }\n',
    });
    const runFiles = async (options: IndexesOptions) => {
      const lines: string[] = [];
      const code = await runIndexes({ upstream: upstreamUri, config: dir, ...options }, (l) => lines.push(l), { holderId: 'cli-test' });
      return { code, lines };
    };
    const warning = (lines: string[]) => lines.filter((l) => l.startsWith('warning: '));

    const one = await runFiles({ app: 'good' });
    expect(one.code, one.lines.join('\n')).toBe(0);
    expect(warning(one.lines)).toHaveLength(1);
    expect(warning(one.lines)[0]).toMatch(/^warning: manifest not loaded, its indexes are not planned: .*apps\/broken\.yaml:5:\d+: managed_indexes\.t\[0\]\.nmae: unknown key/);
    expect(planTable(one.lines).map((r) => r.slice(0, 4))).toEqual([['good', 't', 'a', 'create']]);

    const applied = await runFiles({ app: 'good', apply: true });
    expect(applied.code, applied.lines.join('\n')).toBe(0);
    expect(planTable(applied.lines, applied.lines.indexOf('result:')).map((r) => r.slice(0, 4))).toEqual([['good', 't', 'a', 'ok']]);

    const all = await runFiles({});
    expect(all.code).toBe(1);
    expect(warning(all.lines)).toEqual(warning(one.lines));
    expect(planTable(all.lines).map((r) => r.slice(0, 4))).toEqual([['good', 't', 'a', 'ok']]);
    expect(all.lines.find((l) => l.startsWith('1 manifest not loaded'))).toMatch(/^1 manifest not loaded \(see the warnings above\): .*apps\/broken\.yaml$/);

    // Asking for the broken app itself is an error naming its file and what is wrong.
    await expect(runFiles({ app: 'broken' })).rejects.toThrow(/app 'broken' cannot be loaded from .*apps\/broken\.yaml:\n.*broken\.yaml:5:\d+: .*nmae/);
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

  it("--app plans its app when another manifest is broken (exit 0, a warning naming the file); without --app the status is 1", async () => {
    const { dir } = setup('', {
      'good.yaml': 'slug: good\nauth_required: false\nmanaged_indexes:\n  t:\n    - { keys: { a: 1 }, name: a }\n',
      'broken.yaml': 'slug: broken\nauth_required: false\nlimits: { connections: many }\n',
    });
    const one = CliProcess.start(['indexes', '--config', dir, '--upstream', upstreamUri, '--app', 'good']);
    expect((await one.exit()).code, one.output()).toBe(0);
    expect(one.stdout).toMatch(/^warning: manifest not loaded, its indexes are not planned: .*apps\/broken\.yaml:3:\d+: limits\.connections/m);
    expect(one.stdout).toMatch(/^good +t +a +create/m);
    const all = CliProcess.start(['indexes', '--config', dir, '--upstream', upstreamUri]);
    expect((await all.exit()).code, all.output()).toBe(1);
    expect(all.stdout).toMatch(/^good +t +a +create/m);
    expect(all.stdout).toMatch(/^1 manifest not loaded \(see the warnings above\): .*apps\/broken\.yaml$/m);
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
