import type { Db, MongoClient } from 'mongodb';
import type { AppManifest } from '../apps/manifests.js';
import type { Logger } from '../observability/logger.js';
import { applyPlan, describeError, planApp, type ApplyOutcome } from './apply.js';
import { LeaseManager, type AcquireResult, type Lease } from './lease.js';
import { canonical, effectivePolicy, type EffectivePolicy, type IndexPlan, type PlannedIndex } from './plan.js';
import type { AppIndexState, IndexStatus, UpstreamRefusal } from './types.js';
import {
  acceptedDetail,
  driftDifferences,
  dropVerdict,
  loadVerdicts,
  markUnsupported,
  refusedDetail,
  saveVerdict,
  specFingerprint,
  upstreamIdentity,
  verdictKey,
  type Verdict,
} from './unsupported.js';

/** The runtime's `indexes` settings (RuntimeConfig['indexes']). */
export interface IndexDefaults {
  reconcile: 'report' | 'replace';
  prune: boolean;
  intervalMS: number;
  leaseTtlMS: number;
}

export interface IndexReconcilerOptions {
  /** A connected driver client to the upstream (runtime.upstream.topology.client). */
  client: MongoClient;
  /** The shared physical database (runtime config upstream.database). */
  database: string;
  /** The tag field (runtime config tag_field); partial filters are scoped with it. */
  tagField: string;
  logger: Logger;
  /** runtime config `indexes`: reconcile/prune defaults (a manifest's index_policy overrides them), interval, lease TTL. */
  defaults: IndexDefaults;
  /** This proxy instance's name in lease documents; unique per process (see defaultHolderId()). */
  holderId: string;
  /** Wall clock (ms since the epoch) for lastRun and lease times; default Date.now. */
  now?: () => number;
  /** How many apps are reconciled at once (default 4). */
  concurrency?: number;
  /**
   * Which upstream this is (a changed answer makes unsupported indexes be tried again); default
   * upstreamIdentity(): product, version and topology from buildInfo and hello.
   */
  identifyUpstream?: () => Promise<string>;
}

/** A pass that failed as a whole (upstream unreachable) is tried again this soon (or at the interval if sooner). */
const FAILED_RETRY_MS = 5_000;

interface AppEntry {
  manifest: AppManifest;
  /** What the reconciler acts on: managed indexes and policy; a change triggers a pass. */
  fingerprint: string;
}

/**
 * Background index reconciliation.
 *
 * `update(apps)` (on start and on every manifest change) schedules a pass for every new or changed app
 * right away; every app is checked again every `defaults.intervalMS`. A pass for one app: take the app's
 * lease (another proxy holding it → phase 'waiting-for-lease', retried when that lease runs out), list
 * the indexes of each managed collection, build missing ones, report drift (rebuild it only under
 * `reconcile: replace`), drop unmanaged ones only under `prune: true`, then release the lease. One
 * failing index is reported with its error and does not stop the others; a failing app does not stop
 * other apps. An index the upstream cannot build (src/indexes/unsupported.ts) is `unsupported`: logged
 * once, and not built again while its spec and the upstream's identity stay the same (this process
 * forgets on restart, so a restart tries again). Nothing here throws into the caller: everything is
 * logged and shown by `stateOf`.
 */
export class IndexReconciler {
  private readonly db: Db;
  private readonly logger: Logger;
  private readonly leases: LeaseManager;
  private readonly now: () => number;
  private readonly concurrency: number;
  private readonly apps = new Map<string, AppEntry>();
  private readonly appStates = new Map<string, AppIndexState>();
  private readonly queued = new Set<string>();
  private readonly running = new Map<string, Promise<void>>();
  private readonly rerun = new Set<string>();
  private readonly retryTimers = new Map<string, NodeJS.Timeout>();
  private readonly heldLeases = new Set<Lease>();
  /**
   * What this process found the upstream cannot build (a refused build, or an index it accepted but
   * lists without some option, as FerretDB drops `sparse`), by slug, then verdictKey. Kept while the app
   * exists; a verdict applies only to the same spec on the same upstream.
   */
  private readonly verdicts = new Map<string, Map<string, Verdict>>();
  private identity: Promise<string> | undefined;
  /** The last drift detail logged per index, so that an unchanged drift is logged once. */
  private readonly loggedDrift = new Map<string, string>();
  private readonly idleWaiters: (() => void)[] = [];
  private interval: NodeJS.Timeout | undefined;
  private stopping: Promise<void> | undefined;

  constructor(private readonly options: IndexReconcilerOptions) {
    this.db = options.client.db(options.database);
    this.logger = options.logger.child({ component: 'indexes' });
    this.now = options.now ?? Date.now;
    this.concurrency = Math.max(1, options.concurrency ?? 4);
    this.leases = new LeaseManager({ db: this.db, holderId: options.holderId, ttlMS: options.defaults.leaseTtlMS, now: this.now });
    this.interval = setInterval(() => {
      for (const slug of this.apps.keys()) this.enqueue(slug);
    }, options.defaults.intervalMS);
    this.interval.unref();
    this.logger.info(
      { lease_holder: options.holderId, interval_ms: options.defaults.intervalMS, lease_ttl_ms: options.defaults.leaseTtlMS, reconcile: options.defaults.reconcile, prune: options.defaults.prune },
      'index reconciler started',
    );
  }

  /**
   * The current set of apps (all of them, each time). New apps and apps whose managed indexes or index
   * policy changed are reconciled promptly in the background; removed apps are forgotten (nothing is
   * dropped for them). Returns at once.
   */
  update(apps: Iterable<AppManifest>): void {
    if (this.stopping) return;
    const seen = new Set<string>();
    for (const manifest of apps) {
      seen.add(manifest.slug);
      const fingerprint = fingerprintOf(manifest);
      const previous = this.apps.get(manifest.slug);
      this.apps.set(manifest.slug, { manifest, fingerprint });
      if (previous?.fingerprint === fingerprint) continue;
      if (!this.appStates.has(manifest.slug)) this.appStates.set(manifest.slug, { phase: 'idle', indexes: [] });
      this.forget(manifest.slug, { keepState: true });
      this.enqueue(manifest.slug);
    }
    for (const slug of [...this.apps.keys()]) {
      if (seen.has(slug)) continue;
      this.apps.delete(slug);
      this.forget(slug, { keepState: false });
    }
  }

  /** The app's index state (phase 'idle' with no indexes for an app not known or not yet reconciled). */
  stateOf(slug: string): AppIndexState {
    const state = this.appStates.get(slug);
    return state ? cloneState(state) : { phase: 'idle', indexes: [] };
  }

  /** Every known app's index state, by slug. */
  states(): Map<string, AppIndexState> {
    return new Map([...this.appStates].map(([slug, state]) => [slug, cloneState(state)]));
  }

  /** Schedules a pass for one app now (or after the one in progress). */
  reconcileNow(slug: string): void {
    if (this.apps.has(slug)) this.enqueue(slug);
  }

  /** Resolves when no pass is queued or running (retries and the interval may schedule more later). */
  idle(): Promise<void> {
    if (this.queued.size === 0 && this.running.size === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops scheduling, waits for the passes in progress (each stops before its next index operation;
   * a build already sent finishes), and releases the leases this proxy holds.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      if (this.interval) clearInterval(this.interval);
      this.interval = undefined;
      for (const t of this.retryTimers.values()) clearTimeout(t);
      this.retryTimers.clear();
      this.queued.clear();
      this.rerun.clear();
      await Promise.allSettled([...this.running.values()]);
      await Promise.allSettled([...this.heldLeases].map((l) => l.release()));
      this.heldLeases.clear();
      this.notifyIdle();
    })();
    return this.stopping;
  }

  private forget(slug: string, { keepState }: { keepState: boolean }): void {
    const timer = this.retryTimers.get(slug);
    if (timer) clearTimeout(timer);
    this.retryTimers.delete(slug);
    for (const key of [...this.loggedDrift.keys()]) if (key.startsWith(`${slug}/`)) this.loggedDrift.delete(key);
    if (!keepState) {
      // A changed manifest keeps its verdicts (each is for one spec); a removed app loses them.
      this.verdicts.delete(slug);
      this.appStates.delete(slug);
      this.queued.delete(slug);
      this.rerun.delete(slug);
    }
  }

  private enqueue(slug: string): void {
    if (this.stopping) return;
    const timer = this.retryTimers.get(slug);
    if (timer) clearTimeout(timer);
    this.retryTimers.delete(slug);
    if (this.running.has(slug)) this.rerun.add(slug);
    else this.queued.add(slug);
    this.pump();
  }

  private pump(): void {
    for (const slug of [...this.queued]) {
      if (this.running.size >= this.concurrency || this.stopping) break;
      this.queued.delete(slug);
      const run = this.pass(slug)
        .catch((err: unknown) => this.logger.error({ app_id: slug, err }, 'index reconciliation failed unexpectedly'))
        .finally(() => {
          this.running.delete(slug);
          if (this.rerun.delete(slug) && this.apps.has(slug)) this.queued.add(slug);
          this.pump();
          this.notifyIdle();
        });
      this.running.set(slug, run);
    }
  }

  private notifyIdle(): void {
    if (this.queued.size > 0 || this.running.size > 0) return;
    for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private setState(slug: string, state: AppIndexState): void {
    // An app removed while its pass ran is not brought back.
    if (this.apps.has(slug)) this.appStates.set(slug, state);
  }

  private previousIndexes(slug: string): IndexStatus[] {
    return this.appStates.get(slug)?.indexes ?? [];
  }

  /** One reconciliation pass for one app. */
  private async pass(slug: string): Promise<void> {
    const entry = this.apps.get(slug);
    if (!entry) return;
    const app = entry.manifest;
    const policy = effectivePolicy(app.indexPolicy, this.options.defaults);
    const log = this.logger.child({ app_id: slug });
    if (app.managedIndexes.size === 0) {
      this.setState(slug, { phase: 'done', lastRun: this.now(), indexes: [] });
      return;
    }

    let acquired: AcquireResult;
    try {
      acquired = await this.leases.acquire(slug);
    } catch (err) {
      this.failed(slug, log, `cannot take the reconciliation lease: ${describeError(err)}`);
      return;
    }
    if (!acquired.acquired) {
      // Another proxy reconciles this app: show what the upstream has, and try again when its lease
      // runs out (a holder that died is taken over then).
      let indexes = this.previousIndexes(slug);
      try {
        // The holder keeps its verdicts in the upstream: show them, with this process's own.
        const [upstream, kept, plan] = await Promise.all([this.upstream(), loadVerdicts(this.db, slug), planApp(this.db, app, this.options.tagField, policy)]);
        const known = new Map([...kept, ...(this.verdicts.get(slug) ?? [])]);
        indexes = markUnsupported(plan, app.managedIndexes, known, upstream).entries.map(toStatus);
      } catch {
        // Keep the last known statuses.
      }
      const previous = this.appStates.get(slug);
      if (previous?.phase !== 'waiting-for-lease' || previous.leaseHolder !== acquired.holder) {
        log.info({ lease_holder: acquired.holder, lease_expires_at: acquired.expiresAt.toISOString() }, 'index reconciliation: waiting for the lease held by another proxy');
      }
      this.setState(slug, { phase: 'waiting-for-lease', leaseHolder: acquired.holder, ...(previous?.lastRun !== undefined ? { lastRun: previous.lastRun } : {}), indexes });
      this.retryAfter(slug, acquired.expiresAtLocal - this.now() + 50);
      return;
    }

    const lease = acquired.lease;
    this.heldLeases.add(lease);
    lease.startRenewing();
    log.debug({ lease_holder: lease.holder }, 'index reconciliation lease acquired');
    try {
      await this.reconcileHeld(slug, entry, policy, lease, log);
    } finally {
      this.heldLeases.delete(lease);
      await lease.release().catch((err: unknown) => log.warn({ err }, 'could not release the index reconciliation lease (it expires by itself)'));
      log.debug({ lease_holder: lease.holder }, 'index reconciliation lease released');
    }
  }

  private async reconcileHeld(slug: string, entry: AppEntry, policy: EffectivePolicy, lease: Lease, log: Logger): Promise<void> {
    const app = entry.manifest;
    let upstream: string;
    try {
      upstream = await this.upstream();
    } catch (err) {
      this.failed(slug, log, `cannot ask the upstream for its version (buildInfo, hello): ${describeError(err)}`);
      return;
    }
    let plan: IndexPlan;
    try {
      plan = this.withVerdicts(slug, app, await planApp(this.db, app, this.options.tagField, policy), upstream);
    } catch (err) {
      this.failed(slug, log, `cannot list the indexes: ${describeError(err)}`);
      return;
    }
    this.setState(slug, { phase: 'reconciling', leaseHolder: lease.holder, indexes: plan.entries.map(toStatus) });
    this.logDrift(slug, plan, log);

    const found: [collection: string, index: string, verdict: Verdict][] = [];
    const result = await applyPlan(this.db, plan, {
      shouldContinue: () => !this.stopping && lease.valid && this.apps.get(slug)?.fingerprint === entry.fingerprint,
      events: {
        start: (e, step) => log.info(buildFields(e, step), step === 'create' ? 'index build started' : 'index drop started'),
        finish: (e, step, ms) => log.info({ ...buildFields(e, step), duration_ms: ms }, step === 'create' ? 'index build finished' : 'index dropped'),
        fail: (e, step, error, ms) => log.warn({ ...buildFields(e, step), duration_ms: ms, error }, step === 'create' ? 'index build failed' : 'index drop failed'),
        unsupported: (e, refusal, ms) => {
          const verdict = this.remember(slug, app, e.collection, e.index, upstream, refusedDetail(refusal, e.operation === 'replace'), refusal);
          if (verdict) found.push([e.collection, e.index, verdict]);
          log.warn({ ...buildFields(e, 'create'), duration_ms: ms, ...refusalFields(refusal), upstream }, UNSUPPORTED_MESSAGE);
        },
      },
    });

    let after: IndexPlan;
    try {
      after = await planApp(this.db, app, this.options.tagField, policy);
    } catch (err) {
      this.failed(slug, log, `cannot list the indexes after reconciling: ${describeError(err)}`);
      return;
    }
    const indexes = this.merge(slug, app, after, result.outcomes, upstream, log, found);
    await this.keepVerdicts(slug, found, result.outcomes, log);
    const lost = lease.lost;
    if (result.aborted && lost !== undefined) {
      log.warn({ reason: lost }, 'index reconciliation lease lost; another proxy continues');
      this.setState(slug, { phase: 'waiting-for-lease', lastRun: this.now(), indexes });
      this.retryAfter(slug, this.options.defaults.leaseTtlMS);
      return;
    }
    this.setState(slug, { phase: 'done', lastRun: this.now(), indexes });
    if (result.aborted && !this.stopping) this.enqueue(slug); // the manifest changed mid-pass
  }

  /**
   * The statuses after a pass: what the upstream has now, with this pass's failures as errors, and
   * indexes that were built but are not listed as specified turned into unsupported (and remembered, so
   * that they are not rebuilt on every pass).
   */
  private merge(
    slug: string,
    app: AppManifest,
    after: IndexPlan,
    outcomes: ApplyOutcome[],
    upstream: string,
    log: Logger,
    found: [string, string, Verdict][],
  ): IndexStatus[] {
    const byKey = new Map(outcomes.map((o) => [`${o.entry.collection}/${o.entry.index}`, o]));
    const rows: IndexStatus[] = [];
    for (const e of this.withVerdicts(slug, app, after, upstream).entries) {
      const outcome = byKey.get(`${e.collection}/${e.index}`);
      if (outcome && !outcome.ok && !outcome.unsupported) {
        rows.push(toStatus({ ...e, action: 'error', error: outcome.error ?? 'failed' }));
      } else if (outcome?.ok && e.action === 'drift' && outcome.entry.operation !== 'drop') {
        const differences = driftDifferences(e.detail);
        const verdict = this.remember(slug, app, e.collection, e.index, upstream, acceptedDetail(e.detail));
        if (verdict) found.push([e.collection, e.index, verdict]);
        log.warn(
          { collection: e.collection, physical_collection: e.physicalCollection, index: e.index, detail: differences, upstream },
          'index built, but the upstream does not list it as specified; not rebuilt until its spec, the upstream or the proxy changes',
        );
        const { spec: _spec, ...rest } = e;
        rows.push(toStatus({ ...rest, action: 'unsupported', operation: 'none', detail: acceptedDetail(e.detail) }));
      } else {
        rows.push(toStatus(e));
      }
    }
    return rows;
  }

  /** Remembers that the upstream cannot build the app's index as its manifest says now. */
  private remember(slug: string, app: AppManifest, collection: string, name: string, upstream: string, detail: string, reason?: UpstreamRefusal): Verdict | undefined {
    const index = app.managedIndexes.get(collection)?.find((i) => i.name === name);
    if (!index || !this.apps.has(slug)) return undefined;
    const verdict: Verdict = { spec: specFingerprint(index), upstream, detail, ...(reason ? { reason } : {}) };
    let known = this.verdicts.get(slug);
    if (!known) this.verdicts.set(slug, (known = new Map()));
    known.set(verdictKey(collection, name), verdict);
    return verdict;
  }

  /**
   * Keeps this pass's verdicts in the upstream (for `mdb-runtime indexes` and the proxies waiting for
   * the lease) and forgets those of indexes that were built. Best effort: the proxy decides from memory.
   */
  private async keepVerdicts(slug: string, found: [string, string, Verdict][], outcomes: ApplyOutcome[], log: Logger): Promise<void> {
    const fresh = new Set(found.map(([c, i]) => verdictKey(c, i)));
    try {
      for (const [collection, index, verdict] of found) await saveVerdict(this.db, slug, collection, index, verdict, this.options.holderId);
      for (const o of outcomes) {
        if (!o.ok || o.entry.operation === 'drop' || fresh.has(verdictKey(o.entry.collection, o.entry.index))) continue;
        this.verdicts.get(slug)?.delete(verdictKey(o.entry.collection, o.entry.index));
        await dropVerdict(this.db, slug, o.entry.collection, o.entry.index);
      }
    } catch (err) {
      log.debug({ err }, 'could not keep the unsupported-index verdicts in the upstream');
    }
  }

  /** The plan with the indexes this process knows the upstream cannot build turned into unsupported. */
  private withVerdicts(slug: string, app: AppManifest, plan: IndexPlan, upstream: string): IndexPlan {
    return markUnsupported(plan, app.managedIndexes, this.verdicts.get(slug) ?? new Map(), upstream);
  }

  /** The upstream's identity (product, version, topology): asked for every pass (passes in flight share one answer). */
  private upstream(): Promise<string> {
    if (!this.identity) {
      const value = this.options.identifyUpstream ? this.options.identifyUpstream() : upstreamIdentity(this.db);
      this.identity = value;
      const clear = () => {
        if (this.identity === value) this.identity = undefined;
      };
      value.then(clear, clear);
    }
    return this.identity;
  }

  private logDrift(slug: string, plan: IndexPlan, log: Logger): void {
    for (const e of plan.entries) {
      const key = `${slug}/${e.collection}/${e.index}`;
      if (e.action !== 'drift') {
        this.loggedDrift.delete(key);
        continue;
      }
      if (this.loggedDrift.get(key) === e.detail) continue;
      this.loggedDrift.set(key, e.detail ?? '');
      log.warn({ collection: e.collection, physical_collection: e.physicalCollection, index: e.index, detail: e.detail }, 'index drift');
    }
  }

  private failed(slug: string, log: Logger, error: string): void {
    const retryMS = Math.min(FAILED_RETRY_MS, this.options.defaults.intervalMS);
    log.error({ error, retry_in_ms: retryMS }, 'index reconciliation failed; retrying');
    const previous = this.appStates.get(slug);
    this.setState(slug, { phase: 'failed', lastRun: this.now(), error, indexes: previous?.indexes ?? [] });
    this.retryAfter(slug, retryMS);
  }

  private retryAfter(slug: string, delayMS: number): void {
    if (this.stopping) return;
    const delay = Math.min(Math.max(delayMS, 50), this.options.defaults.intervalMS);
    const existing = this.retryTimers.get(slug);
    if (existing) clearTimeout(existing);
    const timer = setTimeout(() => {
      this.retryTimers.delete(slug);
      this.enqueue(slug);
    }, delay);
    timer.unref();
    this.retryTimers.set(slug, timer);
  }
}

function buildFields(e: PlannedIndex, step: string): Record<string, unknown> {
  return {
    collection: e.collection,
    physical_collection: e.physicalCollection,
    index: e.index,
    operation: e.operation,
    step,
    ...(step === 'create' ? { spec: e.spec } : {}),
  };
}

function toStatus(e: PlannedIndex): IndexStatus {
  const status: IndexStatus = { collection: e.collection, index: e.index, action: e.action, physicalCollection: e.physicalCollection };
  if (e.keys) status.keys = e.keys;
  if (e.detail !== undefined) status.detail = e.detail;
  if (e.error !== undefined) status.error = e.error;
  if (e.reason !== undefined) status.reason = { ...e.reason };
  return status;
}

const UNSUPPORTED_MESSAGE = 'index not supported by the upstream; not built again until its spec, the upstream or the proxy changes';

function refusalFields(r: UpstreamRefusal): Record<string, unknown> {
  return { ...(r.code !== undefined ? { code: r.code } : {}), ...(r.codeName !== undefined ? { code_name: r.codeName } : {}), errmsg: r.errmsg };
}


function fingerprintOf(app: AppManifest): string {
  return canonical({ indexes: [...app.managedIndexes].map(([c, list]) => [c, list.map((i) => [i.name, i.keys, i.options])]), policy: app.indexPolicy });
}

function cloneState(state: AppIndexState): AppIndexState {
  return { ...state, indexes: state.indexes.map((i) => ({ ...i, ...(i.reason ? { reason: { ...i.reason } } : {}) })) };
}
