import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { MongoClient, type Db } from 'mongodb';
import { CONFIG_DIR_SETTING, loadRuntimeConfig, redactUri, type ConfigOverrides, type RuntimeConfig } from '../config/runtime-config.js';
import { AppRegistry } from '../apps/registry.js';
import { checkManifestDir, type AppManifest } from '../apps/manifests.js';
import { applyPlan, describeError, planApp, type ApplyOutcome } from '../indexes/apply.js';
import { LeaseManager, type Lease } from '../indexes/lease.js';
import { effectivePolicy, type IndexPlan, type PlannedIndex } from '../indexes/plan.js';
import {
  acceptedDetail,
  describeRefusal,
  loadVerdicts,
  markUnsupported,
  refusedDetail,
  saveVerdict,
  specFingerprint,
  upstreamIdentity,
  verdictKey,
  type Verdict,
} from '../indexes/unsupported.js';
import { CliError } from './token.js';
import { devEnvironment } from './dev-state.js';

/**
 * `mdb-runtime indexes [--app SLUG] [--apply]`: the index plan of every app (or one) as
 * a table, and with --apply the plan carried out: missing indexes built, drifted ones replaced (--apply
 * implies reconcile: replace), unmanaged ones dropped where prune is on, one progress line per index
 * operation. It takes each app's reconciliation lease like a proxy does, so it never builds alongside
 * a running proxy. Exit status 1 when anything ends in error. An index the upstream cannot build is
 * `unsupported`, not an error: found by a build (here or by a proxy) and kept in the upstream
 * (src/indexes/unsupported.ts), it is not built again for the same spec on the same upstream. A
 * manifest that cannot be loaded is reported and the other apps are still planned.
 */

export interface IndexesOptions {
  app?: string;
  apply?: boolean;
  config?: string;
  upstream?: string;
  database?: string;
}

export interface IndexesDeps {
  /** The apps to plan (default: the manifests of the config directory). */
  apps?: readonly AppManifest[];
  /** The lease holder name (default `mdb-runtime-indexes:<host>:<pid>`). */
  holderId?: string;
  /** How long --apply waits for an app's lease held by a proxy (default: twice the lease TTL, at least 30 s). */
  leaseWaitMS?: number;
}

export function addIndexesCommand(program: Command): void {
  program
    .command('indexes')
    .description("show each app's index plan (create / ok / drift / prune / error); --apply carries it out")
    .option('--app <slug>', 'only this app')
    .option('--apply', 'build missing indexes, replace drifted ones, drop unmanaged ones where prune is on')
    .option(`${CONFIG_DIR_SETTING.short}, ${CONFIG_DIR_SETTING.flag} <dir>`, `config directory holding runtime.yaml and apps/ (default: ${CONFIG_DIR_SETTING.default})`)
    .option('-u, --upstream <uri>', 'upstream MongoDB connection string (default: upstream.uri of runtime.yaml, MDB_UPSTREAM_URI)')
    .option('-d, --database <name>', 'the shared physical database (default: upstream.database, MDB_DATABASE)')
    .addHelpText(
      'after',
      [
        '',
        'Actions: create (missing: built by --apply), ok, drift (same name, other keys or options: replaced by',
        '--apply), prune (not in the manifest, prune: true: dropped by --apply), unsupported (the upstream cannot',
        'build it: see detail; not an error, not built again for the same spec), error (see detail).',
        'Without --apply nothing is changed. --apply takes each app\'s reconciliation lease, as proxies do.',
        'Exit status: 0, or 1 when the plan or the apply has an error (or on a configuration error). A manifest',
        'that cannot be loaded is reported; it makes the status 1 unless --app names another app.',
      ].join('\n'),
    )
    .action(async (opts: IndexesOptions) => {
      const code = await runIndexes(opts, (line) => process.stdout.write(`${line}\n`));
      process.exitCode = code;
    });
}

/** Plans (and with `apply` carries out) the indexes; prints with `out`; returns the exit status. */
export async function runIndexes(opts: IndexesOptions, out: (line: string) => void, deps: IndexesDeps = {}): Promise<number> {
  const overrides: ConfigOverrides = {};
  if (opts.config !== undefined) overrides.config = opts.config;
  if (opts.upstream !== undefined) overrides.upstream = opts.upstream;
  if (opts.database !== undefined) overrides.database = opts.database;
  // Beside `npm run dev`: its config directory and upstream, unless named here (src/cli/dev-state.ts).
  const config = loadRuntimeConfig(overrides, devEnvironment(opts));
  const loaded = deps.apps ? { apps: [...deps.apps], broken: [] } : loadAppsTolerating(config.configDir);
  let apps = loaded.apps.sort((a, b) => a.slug.localeCompare(b.slug));
  const broken = loaded.broken;
  if (opts.app !== undefined) {
    const app = apps.find((a) => a.slug === opts.app);
    if (!app) {
      const mine = broken.find((b) => path.parse(b.file).name === opts.app);
      if (mine) throw new CliError(`app '${opts.app}' cannot be loaded from ${mine.file}:\n${mine.problems.join('\n')}`);
      throw new CliError(
        `no app '${opts.app}' in ${path.join(config.configDir, 'apps')} (apps: ${apps.map((a) => a.slug).join(', ') || 'none'}); pass --config <dir> if it lives elsewhere`,
      );
    }
    apps = [app];
  }
  // Another app's broken manifest does not stop this one: said, and (without --app) a failure.
  for (const b of broken) {
    for (const problem of b.problems) out(`warning: manifest not loaded, its indexes are not planned: ${problem.startsWith(b.file) ? problem : `${b.file}: ${problem}`}`);
  }
  const brokenFails = opts.app === undefined && broken.length > 0;

  const client = await connect(config);
  try {
    const db = client.db(config.upstream.database);
    const override = opts.apply ? { reconcile: 'replace' as const } : {};
    const plans: IndexPlan[] = [];
    const failedApps: { slug: string; error: string }[] = [];
    // What the upstream is known not to build (verdicts kept by the proxies and earlier runs).
    const upstream = await upstreamIdentity(db).catch(() => undefined);
    const identity = upstream ?? 'an upstream that did not say what it is';
    const verdicts = new Map<string, Map<string, Verdict>>();
    const known = async (slug: string): Promise<Map<string, Verdict>> => {
      let v = verdicts.get(slug);
      if (!v) verdicts.set(slug, (v = upstream === undefined ? new Map() : await loadVerdicts(db, slug).catch(() => new Map<string, Verdict>())));
      return v;
    };
    const planOf = async (app: AppManifest): Promise<IndexPlan> => {
      const plan = await planApp(db, app, config.tagField, effectivePolicy(app.indexPolicy, config.indexes, override));
      return markUnsupported(plan, app.managedIndexes, await known(app.slug), identity);
    };
    for (const app of apps) {
      if (app.managedIndexes.size === 0) continue;
      try {
        plans.push(await planOf(app));
      } catch (err) {
        failedApps.push({ slug: app.slug, error: `cannot list the indexes: ${describeError(err)}` });
      }
    }

    const unmanaged = apps.filter((a) => a.managedIndexes.size === 0).map((a) => a.slug);
    out(`database ${config.upstream.database} on ${redactUri(config.upstream.uri)}${opts.apply ? ' (--apply)' : ''}`);
    printTable(out, plans, failedApps);
    if (unmanaged.length > 0) out(`apps without managed indexes: ${unmanaged.join(', ')}`);
    const counts = countActions(plans);
    out(summaryLine(counts, failedApps.length));
    if (brokenFails) out(brokenLine(broken));

    if (!opts.apply) {
      if (counts.create + counts.drift + counts.prune > 0) out('nothing was changed; run with --apply to carry out the plan');
      if (counts.unsupported > 0) out(unsupportedLine(plans));
      return counts.error > 0 || failedApps.length > 0 || brokenFails ? 1 : 0;
    }

    const results = await applyAll(db, config, plans, out, deps);
    // What the upstream has now; what it refused to build (or built otherwise) is kept as a verdict.
    const after: IndexPlan[] = [];
    for (const plan of plans) {
      const app = apps.find((a) => a.slug === plan.app)!;
      try {
        const outcomes = new Map((results.get(plan.app) ?? []).map((o) => [`${o.entry.collection}/${o.entry.index}`, o]));
        const listed = await planApp(db, app, config.tagField, effectivePolicy(app.indexPolicy, config.indexes, override));
        const mine = await known(app.slug);
        const found: [string, string, Verdict][] = [];
        const learn = (e: PlannedIndex, detail: string, reason?: ApplyOutcome['unsupported']) => {
          const index = app.managedIndexes.get(e.collection)?.find((i) => i.name === e.index);
          if (!index) return;
          const verdict: Verdict = { spec: specFingerprint(index), upstream: identity, detail, ...(reason ? { reason } : {}) };
          mine.set(verdictKey(e.collection, e.index), verdict);
          found.push([e.collection, e.index, verdict]);
        };
        for (const e of listed.entries) {
          const o = outcomes.get(`${e.collection}/${e.index}`);
          if (o?.unsupported) learn(e, refusedDetail(o.unsupported, o.dropped === true), o.unsupported);
          else if (o?.ok && e.action === 'drift' && o.entry.operation !== 'drop') learn(e, acceptedDetail(e.detail));
        }
        const now = markUnsupported(listed, app.managedIndexes, mine, identity);
        now.entries = now.entries.map((e): PlannedIndex => {
          const o = outcomes.get(`${e.collection}/${e.index}`);
          return o && !o.ok && !o.unsupported ? { ...e, action: 'error', operation: 'none', error: o.error ?? 'failed' } : e;
        });
        after.push(now);
        // Kept for the next runs and the proxies; not when the upstream could not say what it is.
        const holder = deps.holderId ?? defaultCliHolder();
        if (upstream !== undefined) for (const [collection, index, verdict] of found) await saveVerdict(db, app.slug, collection, index, verdict, holder).catch(() => undefined);
      } catch (err) {
        failedApps.push({ slug: plan.app, error: `cannot list the indexes after applying: ${describeError(err)}` });
      }
    }
    out('');
    out('result:');
    printTable(out, after, failedApps);
    const final = countActions(after);
    out(summaryLine(final, failedApps.length));
    if (final.unsupported > 0) out(unsupportedLine(after));
    if (brokenFails) out(brokenLine(broken));
    const anyFailure = [...results.values()].some((list) => list.some((o) => !o.ok && !o.unsupported));
    return anyFailure || final.error > 0 || failedApps.length > 0 || brokenFails ? 1 : 0;
  } finally {
    await client.close();
  }
}

async function connect(config: RuntimeConfig): Promise<MongoClient> {
  const client = new MongoClient(config.upstream.uri, {
    appName: 'mdb-runtime indexes',
    serverSelectionTimeoutMS: config.upstream.serverSelectionTimeoutMS,
    connectTimeoutMS: config.upstream.connectTimeoutMS,
  });
  try {
    await client.connect();
    await client.db('admin').command({ ping: 1 });
    return client;
  } catch (err) {
    await client.close().catch(() => undefined);
    throw new CliError(
      `cannot reach the upstream ${redactUri(config.upstream.uri)}: ${(err as Error).message}. ` +
        'Check upstream.uri (--upstream, MDB_UPSTREAM_URI); upstream.server_selection_timeout_ms sets how long to wait',
    );
  }
}

/**
 * Carries out each app's plan under its lease; prints one line when an operation starts and one when it
 * ends. Returns, per app, the outcomes of the operations (and a failure for each one not carried out).
 */
async function applyAll(
  db: Db,
  config: RuntimeConfig,
  plans: IndexPlan[],
  out: (line: string) => void,
  deps: IndexesDeps,
): Promise<Map<string, ApplyOutcome[]>> {
  const holderId = deps.holderId ?? defaultCliHolder();
  const leases = new LeaseManager({ db, holderId, ttlMS: config.indexes.leaseTtlMS });
  const waitMS = deps.leaseWaitMS ?? Math.max(30_000, 2 * config.indexes.leaseTtlMS);
  const results = new Map<string, ApplyOutcome[]>();
  const total = plans.reduce((n, p) => n + p.entries.filter((e) => e.operation !== 'none').length, 0);
  const numbers = new Map<PlannedIndex, number>();
  const number = (e: PlannedIndex): number => {
    let n = numbers.get(e);
    if (n === undefined) numbers.set(e, (n = numbers.size + 1));
    return n;
  };
  if (total === 0) {
    out('nothing to do');
    return results;
  }
  out('');
  for (const plan of plans) {
    const outcomes: ApplyOutcome[] = [];
    results.set(plan.app, outcomes);
    const todo = plan.entries.filter((e) => e.operation !== 'none');
    if (todo.length === 0) continue;
    let lease: Lease;
    try {
      lease = await acquireWaiting(leases, plan.app, waitMS, out);
    } catch (err) {
      const error = err instanceof CliError ? err.message : describeError(err);
      out(`${plan.app}: skipped: ${error}`);
      for (const e of todo) {
        number(e);
        outcomes.push({ entry: e, ok: false, error });
      }
      continue;
    }
    lease.startRenewing();
    try {
      const what = (e: PlannedIndex, step: string) =>
        `${plan.app}: ${step === 'drop' ? (e.operation === 'replace' ? 'dropping drifted' : 'dropping') : e.operation === 'replace' ? 'rebuilding' : 'building'} index ${e.index} on ${e.collection} (${plan.database}.${e.physicalCollection})`;
      const result = await applyPlan(db, plan, {
        shouldContinue: () => lease.valid,
        events: {
          start: (e, step) => out(`[${number(e)}/${total}] ${what(e, step)} ...`),
          finish: (e, step, ms) => out(`[${number(e)}/${total}] ${what(e, step)}: done in ${ms} ms`),
          fail: (e, step, error, ms) => out(`[${number(e)}/${total}] ${what(e, step)}: FAILED after ${ms} ms: ${error}`),
          unsupported: (e, refusal, ms) =>
            out(`[${number(e)}/${total}] ${what(e, 'create')}: the upstream cannot build it (${ms} ms): ${describeRefusal(refusal)}`),
        },
      });
      outcomes.push(...result.outcomes);
      if (result.aborted) {
        const reason = lease.lost ?? 'stopped';
        out(`${plan.app}: stopped: ${reason}`);
        const finished = new Set(result.outcomes.map((o) => o.entry));
        for (const e of todo) if (!finished.has(e)) outcomes.push({ entry: e, ok: false, error: `not carried out: ${reason}` });
      }
    } finally {
      await lease.release().catch(() => undefined);
    }
  }
  return results;
}

/** Takes the app's lease, waiting (with a line saying for whom) while a proxy holds it, up to `waitMS`. */
async function acquireWaiting(leases: LeaseManager, slug: string, waitMS: number, out: (line: string) => void): Promise<Lease> {
  const deadline = Date.now() + waitMS;
  let said: string | undefined;
  for (;;) {
    const result = await leases.acquire(slug);
    if (result.acquired) return result.lease;
    if (said !== result.holder) {
      out(`${slug}: waiting for the reconciliation lease held by ${result.holder} (a proxy reconciling it)`);
      said = result.holder;
    }
    const now = Date.now();
    if (now >= deadline) {
      throw new CliError(`the reconciliation lease of '${slug}' is held by ${result.holder}; try again when that proxy is done`);
    }
    const delay = Math.min(Math.max(result.expiresAtLocal - now + 50, 100), deadline - now, 1000);
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}

function defaultCliHolder(): string {
  return `mdb-runtime-indexes:${os.hostname()}:${process.pid}`;
}

/** The app manifests that load, and the files that do not (with their problems) instead of throwing. */
function loadAppsTolerating(configDir: string): { apps: AppManifest[]; broken: { file: string; problems: string[] }[] } {
  const broken: { file: string; problems: string[] }[] = [];
  const manifests: AppManifest[] = [];
  for (const check of checkManifestDir(configDir)) {
    if (check.manifest) manifests.push(check.manifest);
    else broken.push({ file: check.file, problems: check.problems });
  }
  const { registry, refused } = AppRegistry.admit(manifests);
  for (const r of refused) broken.push({ file: r.manifest.file, problems: [r.reason] });
  return { apps: [...registry], broken };
}

interface Counts {
  ok: number;
  create: number;
  drift: number;
  prune: number;
  unsupported: number;
  error: number;
}

function countActions(plans: IndexPlan[]): Counts {
  const counts: Counts = { ok: 0, create: 0, drift: 0, prune: 0, unsupported: 0, error: 0 };
  for (const p of plans) for (const e of p.entries) counts[e.action]++;
  return counts;
}

function summaryLine(c: Counts, failedApps: number): string {
  const parts = [`${c.ok} ok`, `${c.create} to create`, `${c.drift} drifted`, `${c.prune} to prune`];
  if (c.unsupported > 0) parts.push(`${c.unsupported} unsupported by the upstream`);
  parts.push(`${c.error} error${c.error === 1 ? '' : 's'}`);
  if (failedApps > 0) parts.push(`${failedApps} app${failedApps === 1 ? '' : 's'} not listed`);
  return parts.join(', ');
}

/** One line naming what the upstream cannot build: not an error, so not in the exit status. */
function unsupportedLine(plans: IndexPlan[]): string {
  const items = plans.flatMap((p) =>
    p.entries
      .filter((e) => e.action === 'unsupported')
      .map((e) => `${p.app} ${e.collection}.${e.index}${e.reason?.code !== undefined ? ` (${e.reason.codeName ?? 'error'} ${e.reason.code})` : ''}`),
  );
  return `the upstream cannot build ${items.length} index${items.length === 1 ? '' : 'es'}, left out (not an error): ${items.join(', ')}`;
}

function brokenLine(broken: { file: string }[]): string {
  return `${broken.length} manifest${broken.length === 1 ? '' : 's'} not loaded (see the warnings above): ${broken.map((b) => b.file).join(', ')}`;
}

function printTable(out: (line: string) => void, plans: IndexPlan[], failedApps: { slug: string; error: string }[]): void {
  const rows: string[][] = [['APP', 'COLLECTION', 'INDEX', 'ACTION', 'DETAIL']];
  for (const p of plans) {
    for (const e of p.entries) rows.push([p.app, e.collection, e.index, e.action, e.error ?? e.detail ?? '']);
  }
  for (const f of failedApps) rows.push([f.slug, '-', '-', 'error', f.error]);
  if (rows.length === 1) {
    out('no managed indexes');
    return;
  }
  const widths = [0, 1, 2, 3].map((i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const r of rows) out(r.map((cell, i) => (i < 4 ? cell.padEnd(widths[i]!) : cell)).join('  ').trimEnd());
}
