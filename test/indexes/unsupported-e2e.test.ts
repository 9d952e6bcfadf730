import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { MongoClient } from 'mongodb';
import { runIndexes } from '../../src/cli/indexes.js';
import type { AppStatusEntry, AppsDocument } from '../../src/observability/apps-view.js';
import { parsePrometheus, select } from '../observability/prom-text.js';
import { runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { planTable, waitFor } from './helpers.js';

/**
 * End to end, on the real upstream through the real proxy: a manifest with a TTL index, a partial index
 * and a plain one reconciles to unsupported / unsupported / ok on FerretDB (which answers NotImplemented
 * to the first two); `/apps`, `/metrics` and `mdb-runtime indexes` say the same; later passes neither
 * build nor log them again; `--apply` exits 0. A unique index over duplicates, beside it, stays an error.
 */

const upstreamUri = inject('upstreamUri');
const ferret = inject('upstreamIsFerretDB');
const database = uniqueDb('unsupported_e2e');
let direct: MongoClient;
let proxy: TestProxy;

const LIMITED = `slug: limited
auth_required: false
managed_indexes:
  sessions:
    - { keys: { last_seen: 1 }, expireAfterSeconds: 86400 }
    - { keys: { due: 1 }, name: open_due, partialFilterExpression: { status: open } }
    - { keys: { user: 1 } }
`;
const DUPS = `slug: dups
auth_required: false
managed_indexes:
  people:
    - { keys: { email: 1 }, unique: true }
`;

beforeAll(async () => {
  direct = new MongoClient(upstreamUri, { serverSelectionTimeoutMS: 10_000 });
  await direct.connect();
  await direct.db(database).collection('dups_people').insertMany([{ email: 'a@x', app_id: 'dups' }, { email: 'a@x', app_id: 'dups' }]);
  proxy = await startTestProxy({
    runtimeYaml: runtimeYamlWithDatabase(database, { top: 'indexes:\n  interval_ms: 1000\n' }),
    apps: { 'limited.yaml': LIMITED, 'dups.yaml': DUPS },
    logLevel: 'info',
  });
});

afterAll(async () => {
  await proxy?.stop();
  await direct.db(database).dropDatabase().catch(() => undefined);
  await direct.close();
});

async function apps(): Promise<Map<string, AppStatusEntry>> {
  const res = await fetch(`http://127.0.0.1:${proxy.httpPort}/apps`);
  expect(res.status).toBe(200);
  const doc = (await res.json()) as AppsDocument;
  return new Map(doc.apps.map((a) => [a.slug, a]));
}

async function indexGauge(): Promise<Record<string, Record<string, number>>> {
  const res = await fetch(`http://127.0.0.1:${proxy.httpPort}/metrics`);
  const samples = select(parsePrometheus(await res.text()), 'mdb_indexes');
  const out: Record<string, Record<string, number>> = {};
  for (const s of samples) (out[s.labels.app!] ??= {})[s.labels.action!] = s.value;
  return out;
}

/** Resolves once both apps have finished a pass that started after `after` (ms since the epoch). */
async function passesAfter(after: number): Promise<Map<string, AppStatusEntry>> {
  return waitFor(async () => {
    const now = await apps();
    const done = ['limited', 'dups'].every((slug) => (now.get(slug)?.indexes?.lastRun ?? 0) > after && now.get(slug)?.indexes?.phase === 'done');
    return done ? now : undefined;
  }, `a reconciliation pass after ${after}`);
}

async function cli(options: { app?: string; apply?: boolean }): Promise<{ code: number; lines: string[] }> {
  const lines: string[] = [];
  const code = await runIndexes({ config: proxy.configDir, upstream: upstreamUri, ...options }, (l) => lines.push(l), { holderId: 'cli-e2e' });
  return { code, lines };
}


describe('an index the upstream cannot build, through the proxy', () => {
  it('is unsupported in /apps, /metrics and mdb-runtime indexes; later passes say nothing of it; --apply exits 0; duplicates stay an error', async () => {
    const first = await passesAfter(0);
    const limited = first.get('limited')!.indexes!;
    const dups = first.get('dups')!.indexes!;
    const expected: [string, string][] = ferret
      ? [
          ['last_seen_1', 'unsupported'],
          ['open_due', 'unsupported'],
          ['user_1', 'ok'],
        ]
      : [
          ['last_seen_1', 'ok'],
          ['open_due', 'ok'],
          ['user_1', 'ok'],
        ];
    expect(limited.indexes.map((i) => [i.index, i.action])).toEqual(expected);
    if (ferret) {
      expect(limited.indexes.slice(0, 2).map((i) => i.reason)).toEqual([
        { code: 238, codeName: 'NotImplemented', errmsg: 'Index option "expireAfterSeconds" is not implemented yet' },
        { code: 238, codeName: 'NotImplemented', errmsg: 'Index option "partialFilterExpression" is not implemented yet' },
      ]);
    }
    expect(dups.indexes.map((i) => [i.index, i.action])).toEqual([['email_1', 'error']]);
    expect(dups.indexes[0]!.error).toMatch(/same values for this unique index/);

    // /metrics counts the same.
    const unsupported = ferret ? 2 : 0;
    expect(await indexGauge()).toEqual({
      limited: { ok: 3 - unsupported, create: 0, drift: 0, prune: 0, unsupported, error: 0 },
      dups: { ok: 0, create: 0, drift: 0, prune: 0, unsupported: 0, error: 1 },
    });

    // mdb-runtime indexes (from the manifest files, on the same upstream) plans what /apps shows.
    const plan = await cli({ app: 'limited' });
    expect(plan.code, plan.lines.join('\n')).toBe(0);
    const fromApps = limited.indexes.map((i) => ['limited', i.collection, i.index, i.action, ...(i.detail !== undefined ? [i.detail] : [])]);
    expect(planTable(plan.lines)).toEqual(fromApps);

    // The next two passes neither build nor log the unsupported ones; the duplicate is tried (and logged) again.
    const from = proxy.logs.length;
    let at = Math.max(limited.lastRun!, dups.lastRun!);
    for (let pass = 2; pass <= 3; pass++) {
      const now = await passesAfter(at);
      expect(now.get('limited')!.indexes!.indexes.map((i) => [i.index, i.action]), `pass ${pass}`).toEqual(expected);
      at = Math.max(now.get('limited')!.indexes!.lastRun!, now.get('dups')!.indexes!.lastRun!);
    }
    const later = proxy.logs.slice(from);
    expect(later.filter((l) => l.app_id === 'limited' && Number(l.level) >= 30)).toEqual([]);
    expect(later.filter((l) => l.app_id === 'dups' && l.msg === 'index build failed').length).toBeGreaterThanOrEqual(2);
    // Over the whole run, one line for each unsupported index.
    expect(proxy.logs.filter((l) => l.app_id === 'limited' && String(l.msg).startsWith('index not supported by the upstream')).map((l) => l.index)).toEqual(
      ferret ? ['last_seen_1', 'open_due'] : [],
    );

    // --apply for the app: nothing to build, exit 0, a line saying what the upstream cannot build.
    const applied = await cli({ app: 'limited', apply: true });
    expect(applied.code, applied.lines.join('\n')).toBe(0);
    expect(applied.lines).toContain('nothing to do');
    if (ferret) {
      expect(applied.lines).toContain(
        'the upstream cannot build 2 indexes, left out (not an error): limited sessions.last_seen_1 (NotImplemented 238), limited sessions.open_due (NotImplemented 238)',
      );
    }
    expect(planTable(applied.lines, applied.lines.indexOf('result:'))).toEqual(fromApps);
    // Without --app the duplicate's failed build is what makes the status 1, not the unsupported indexes.
    const all = await cli({ apply: true });
    expect(all.code).toBe(1);
    const result = planTable(all.lines, all.lines.indexOf('result:'));
    expect(result.map((r) => r.slice(0, 4))).toEqual([['dups', 'people', 'email_1', 'error'], ...expected.map(([i, a]) => ['limited', 'sessions', i, a])]);
    expect(all.lines.find((l) => l.includes('building index email_1') && l.includes('FAILED'))).toMatch(/same values for this unique index/);
  });
});
