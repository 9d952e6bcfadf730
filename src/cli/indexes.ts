import os from 'node:os';
import path from 'node:path';
import type { Command } from 'commander';
import { MongoClient, type Db } from 'mongodb';
import { CONFIG_DIR_SETTING, loadRuntimeConfig, redactUri, type ConfigOverrides, type RuntimeConfig } from '../apps/runtime-config.js';
import { loadApps } from '../apps/registry.js';
import type { AppManifest } from '../apps/manifests.js';
import { applyPlan, describeError, planApp } from '../indexes/apply.js';
import { LeaseManager, type Lease } from '../indexes/lease.js';
import { effectivePolicy, type IndexPlan, type PlannedIndex } from '../indexes/plan.js';
import { CliError } from './token.js';

/**
 * `mdb-runtime indexes [--app SLUG] [--apply]` (issue 4 item 6): the index plan of every app (or one) as
 * a table, and with --apply the plan carried out: missing indexes built, drifted ones replaced (--apply
 * implies reconcile: replace), unmanaged ones dropped where prune is on, one progress line per index
 * operation. It takes each app's reconciliation lease like a proxy does, so it never builds alongside
 * a running proxy. Exit status 1 when anything ends in error.
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
        '--apply), prune (not in the manifest, prune: true: dropped by --apply), error (see detail).',
        'Without --apply nothing is changed. --apply takes each app\'s reconciliation lease, as proxies do.',
        'Exit status: 0, or 1 when the plan or the apply has an error (or on a configuration error).',
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
  const config = loadRuntimeConfig(overrides);
  let apps = [...(deps.apps ?? loadApps(config.configDir))].sort((a, b) => a.slug.localeCompare(b.slug));
  if (opts.app !== undefined) {
    const app = apps.find((a) => a.slug === opts.app);
    if (!app) {
      throw new CliError(
        `no app '${opts.app}' in ${path.join(config.configDir, 'apps')} (apps: ${apps.map((a) => a.slug).join(', ') || 'none'}); pass --config <dir> if it lives elsewhere`,
      );
    }
    apps = [app];
  }

  const client = await connect(config);
  try {
    const db = client.db(config.upstream.database);
    const override = opts.apply ? { reconcile: 'replace' as const } : {};
    const plans: IndexPlan[] = [];
    const failedApps: { slug: string; error: string }[] = [];
    for (const app of apps) {
      if (app.managedIndexes.size === 0) continue;
      try {
        plans.push(await planApp(db, app, config.tagField, effectivePolicy(app.indexPolicy, config.indexes, override)));
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

    if (!opts.apply) {
      if (counts.create + counts.drift + counts.prune > 0) out('nothing was changed; run with --apply to carry out the plan');
      return counts.error > 0 || failedApps.length > 0 ? 1 : 0;
    }

    const results = await applyAll(db, config, plans, out, deps);
    // What the upstream has now.
    const after: IndexPlan[] = [];
    for (const plan of plans) {
      const app = apps.find((a) => a.slug === plan.app)!;
      try {
        const now = await planApp(db, app, config.tagField, effectivePolicy(app.indexPolicy, config.indexes, override));
        const failures = results.get(plan.app) ?? new Map<string, string>();
        now.entries = now.entries.map((e): PlannedIndex => {
          const error = failures.get(`${e.collection}/${e.index}`);
          return error !== undefined ? { ...e, action: 'error', operation: 'none', error } : e;
        });
        after.push(now);
      } catch (err) {
        failedApps.push({ slug: plan.app, error: `cannot list the indexes after applying: ${describeError(err)}` });
      }
    }
    out('');
    out('result:');
    printTable(out, after, failedApps);
    const final = countActions(after);
    out(summaryLine(final, failedApps.length));
    const anyFailure = [...results.values()].some((m) => m.size > 0);
    return anyFailure || final.error > 0 || failedApps.length > 0 ? 1 : 0;
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
 * ends. Returns, per app, the failures by `collection/index`.
 */
async function applyAll(
  db: Db,
  config: RuntimeConfig,
  plans: IndexPlan[],
  out: (line: string) => void,
  deps: IndexesDeps,
): Promise<Map<string, Map<string, string>>> {
  const holderId = deps.holderId ?? `mdb-runtime-indexes:${os.hostname()}:${process.pid}`;
  const leases = new LeaseManager({ db, holderId, ttlMS: config.indexes.leaseTtlMS });
  const waitMS = deps.leaseWaitMS ?? Math.max(30_000, 2 * config.indexes.leaseTtlMS);
  const results = new Map<string, Map<string, string>>();
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
    const failures = new Map<string, string>();
    results.set(plan.app, failures);
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
        failures.set(`${e.collection}/${e.index}`, error);
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
        },
      });
      for (const o of result.outcomes) if (!o.ok) failures.set(`${o.entry.collection}/${o.entry.index}`, o.error ?? 'failed');
      if (result.aborted) {
        const reason = lease.lost ?? 'stopped';
        out(`${plan.app}: stopped: ${reason}`);
        const finished = new Set(result.outcomes.map((o) => o.entry));
        for (const e of todo) if (!finished.has(e)) failures.set(`${e.collection}/${e.index}`, `not carried out: ${reason}`);
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

interface Counts {
  ok: number;
  create: number;
  drift: number;
  prune: number;
  error: number;
}

function countActions(plans: IndexPlan[]): Counts {
  const counts: Counts = { ok: 0, create: 0, drift: 0, prune: 0, error: 0 };
  for (const p of plans) for (const e of p.entries) counts[e.action]++;
  return counts;
}

function summaryLine(c: Counts, failedApps: number): string {
  const parts = [`${c.ok} ok`, `${c.create} to create`, `${c.drift} drifted`, `${c.prune} to prune`, `${c.error} error${c.error === 1 ? '' : 's'}`];
  if (failedApps > 0) parts.push(`${failedApps} app${failedApps === 1 ? '' : 's'} not listed`);
  return parts.join(', ');
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
