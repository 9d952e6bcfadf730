import { performance } from 'node:perf_hooks';
import type { AppManifest } from '../apps/manifests.js';
import type { AppDirectory, ManifestProblem } from '../apps/watcher.js';
import type { AppIndexState } from '../indexes/index.js';
import type { AppMeter, IndexSample, PoolSample, ProxyMetrics } from './metrics.js';
import { sendJson, type Router } from './router.js';

/**
 * The /apps view: every manifest file's app (in force or failing) with its usage, its share of the
 * upstream and its index state, as GET /apps answers it and the status page shows it; and the same
 * parts sampled for /metrics (poolSamples, indexSamples).
 *
 * It reads the session's per-app entries and the upstream's counters through the small interfaces below (the composition
 * root, src/runtime.ts, hands it the real objects): observability imports neither (docs/architecture.md).
 */

/** GET /apps. */
export interface AppsDocument {
  config_dir: string;
  /** The runtime setting `metrics`: false means ops_total, errors_total and latency_ms are not kept. */
  metrics: boolean;
  /** When the manifests were last (re)loaded (ISO time). */
  reloaded_at: string | undefined;
  apps: AppStatusEntry[];
  /** Every manifest file whose latest version is not serving. */
  manifest_errors: ManifestErrorEntry[];
}

export interface ManifestErrorEntry {
  file: string;
  line: number | undefined;
  column: number | undefined;
  kind: ManifestProblem['kind'];
  message: string;
  since: string;
}

export interface AppStatusEntry {
  slug: string;
  name: string | undefined;
  /** available; unavailable (its keys are missing from the environment: `reason`); error (no version in force: `reason`). */
  status: 'available' | 'unavailable' | 'error';
  reason?: string;
  file: string;
  /** 'latest': the file as it is; 'last_good': its latest version was refused; 'none': never loaded. */
  serving: 'latest' | 'last_good' | 'none';
  loaded_at: string | undefined;
  auth_required: boolean | undefined;
  /** Open authenticated connections (driver monitoring connections authenticated by an appName token included). */
  connections: number;
  /** Connections that have sent an app command: what limits.connections counts. */
  active_connections: number;
  /** Commands forwarded upstream since the proxy started, and their rate over the last 10 s. */
  ops: number;
  ops_per_second: number;
  /**
   * Commands of every outcome since the proxy started: the sum of mdb_operations_total for the app
   * (0 when the runtime setting `metrics` is false).
   */
  ops_total: number;
  /** Commands whose outcome was not ok (error, rejected, failed): 0 when `metrics` is false. */
  errors_total: number;
  /** Latency at the proxy over the last minute (ms); null without requests in it (or when `metrics` is false). */
  latency_ms: { p50: number | null; p99: number | null };
  /** Commands refused by limits or data_access since the proxy started. */
  refused: number;
  limits: Record<string, number>;
  /** The app's share of the upstream now, and what its limits did about it (null: no app in force). */
  upstream_share: UpstreamShareEntry | null;
  data_access: { read_only: boolean; collections: readonly string[] | null } | undefined;
  /** The reconciler's view (null when no reconciler runs or it has not seen the app yet). */
  indexes: AppIndexState | null;
  last_error: ManifestErrorEntry | null;
  warnings: readonly string[];
}

/** /apps: an app's share of the upstream (limits.upstream_connections, limits.open_cursors and the runtime's bounds). */
export interface UpstreamShareEntry {
  connections: { in_use: number; waiting: number; limit: number };
  open_cursors: { open: number; limit: number };
  /** Requests refused after waiting upstream.pool.wait_queue_timeout_ms for one of the app's connections. */
  wait_timeouts: number;
  /** Requests whose reply took longer than upstream.request_timeout_ms (answered NetworkTimeout). */
  upstream_timeouts: number;
  /** Commands refused because they opened a cursor beyond limits.open_cursors. */
  cursor_refusals: number;
  /** awaitData getMores whose maxTimeMS was lowered to upstream.max_await_time_ms. */
  await_capped: number;
}

/** One app's entry (its usage counters and meter), as the view reads it (src/session/app-usage.ts keeps it). */
export interface AppUsageView {
  readonly meter: Pick<AppMeter, 'ops' | 'errors' | 'recent'>;
  readonly connections: number;
  readonly activeConnections: number;
  readonly ops: number;
  readonly refused: number;
  readonly upstreamInUse: number;
  readonly upstreamWaiting: number;
  readonly upstreamWaitTimeouts: number;
  readonly upstreamTimeouts: number;
  readonly cursorRefusals: number;
  readonly awaitCapped: number;
  opsPerSecond(): number;
}

/** The index reconciler's state per app (src/indexes). */
export interface IndexStateSource {
  stateOf(slug: string): AppIndexState | undefined;
}

/** What the /apps document is made of. */
export interface AppsViewSources {
  readonly directory: Pick<AppDirectory, 'configDir' | 'files' | 'problems' | 'reloadedAt'>;
  /** The per-app table: usage and meters in one entry per app. */
  readonly usage: { peek(slug: string): AppUsageView | undefined };
  readonly metrics: Pick<ProxyMetrics, 'enabled'>;
  /** None when no reconciler runs (every app's `indexes` is then null). */
  readonly reconciler: IndexStateSource | undefined;
  /** The app's upstream bounds: its limits, or the runtime's defaults (fair share of the pool, open cursors). */
  upstreamLimits(manifest: AppManifest): { connections: number; openCursors: number };
  /** Upstream cursors the app holds open now. */
  openCursors(slug: string): number;
}

/** GET /apps: every manifest file's app (in force or failing), with usage and index state. */
export function appsDocument(sources: AppsViewSources, now = performance.now()): AppsDocument {
  const { directory, usage, metrics, reconciler } = sources;
  const apps: AppStatusEntry[] = [];
  for (const f of directory.files) {
    const m = f.inForce;
    const u = m ? usage.peek(m.slug) : undefined;
    const meter = u?.meter;
    const [p50, p99] = meter && metrics.enabled ? meter.recent.quantiles([0.5, 0.99], now) : [null, null];
    const limits: Record<string, number> = {};
    if (m?.limits.connections !== undefined) limits.connections = m.limits.connections;
    if (m?.limits.operationsPerSecond !== undefined) limits.operations_per_second = m.limits.operationsPerSecond;
    if (m?.limits.maxDocumentBytes !== undefined) limits.max_document_bytes = m.limits.maxDocumentBytes;
    if (m?.limits.maxDocumentsPerCollection !== undefined) limits.max_documents_per_collection = m.limits.maxDocumentsPerCollection;
    const status: AppStatusEntry['status'] = !m ? 'error' : m.unavailable ? 'unavailable' : 'available';
    const reason = !m ? f.error?.message : m.unavailable;
    apps.push({
      slug: m?.slug ?? f.slug,
      name: m?.name,
      status,
      ...(reason !== undefined ? { reason } : {}),
      file: f.file,
      serving: !m ? 'none' : f.error ? 'last_good' : 'latest',
      loaded_at: iso(f.loadedAt),
      auth_required: m?.authRequired,
      connections: u?.connections ?? 0,
      active_connections: u?.activeConnections ?? 0,
      ops: u?.ops ?? 0,
      ops_per_second: u?.opsPerSecond() ?? 0,
      ops_total: meter?.ops ?? 0,
      errors_total: meter?.errors ?? 0,
      latency_ms: { p50: p50 ?? null, p99: p99 ?? null },
      refused: u?.refused ?? 0,
      limits,
      upstream_share: m ? upstreamShare(sources, m, u) : null,
      data_access: m ? { read_only: m.dataAccess.readOnly, collections: m.dataAccess.collections ?? null } : undefined,
      indexes: (m && reconciler?.stateOf(m.slug)) ?? null,
      last_error: f.error ? errorEntry(f.error) : null,
      warnings: m?.warnings ?? [],
    });
  }
  return {
    config_dir: directory.configDir,
    metrics: metrics.enabled,
    reloaded_at: iso(directory.reloadedAt),
    apps,
    manifest_errors: directory.problems.map(errorEntry),
  };
}

function upstreamShare(sources: AppsViewSources, m: AppManifest, u: AppUsageView | undefined): UpstreamShareEntry {
  const limits = sources.upstreamLimits(m);
  return {
    connections: { in_use: u?.upstreamInUse ?? 0, waiting: u?.upstreamWaiting ?? 0, limit: limits.connections },
    open_cursors: { open: sources.openCursors(m.slug), limit: limits.openCursors },
    wait_timeouts: u?.upstreamWaitTimeouts ?? 0,
    upstream_timeouts: u?.upstreamTimeouts ?? 0,
    cursor_refusals: u?.cursorRefusals ?? 0,
    await_capped: u?.awaitCapped ?? 0,
  };
}

/** A manifest problem as /apps and /readyz show it. */
export function errorEntry(p: ManifestProblem): ManifestErrorEntry {
  return { file: p.file, line: p.line, column: p.column, kind: p.kind, message: p.message, since: new Date(p.since).toISOString() };
}

function iso(ms: number | undefined): string | undefined {
  return ms === undefined ? undefined : new Date(ms).toISOString();
}

/** One upstream connection pool, as the metrics read it (src/upstream/pool.ts keeps it). */
export interface PoolView {
  readonly address: string;
  readonly size: number;
  readonly inUse: number;
  readonly waiting: number;
  /** Acquisitions by wait time: per-bucket counts over the pool's wait bounds, sum, count and failures. */
  readonly waits: { readonly counts: Float64Array; readonly sum: number; readonly count: number; readonly failures: number };
}

/** The upstream pools as the metrics read them; `waitBounds` are the bounds the pools count waits in. */
export function poolSamples(pools: Iterable<PoolView>, waitBounds: readonly number[]): PoolSample[] {
  return [...pools].map((p) => ({
    address: p.address,
    size: p.size,
    inUse: p.inUse,
    waiting: p.waiting,
    waitBounds,
    waitCounts: p.waits.counts,
    waitSum: p.waits.sum,
    waitCount: p.waits.count,
    waitFailures: p.waits.failures,
  }));
}

/** Index state per registered app, as the metrics read it (none without a reconciler). */
export function indexSamples(slugs: Iterable<string>, reconciler: IndexStateSource | undefined): IndexSample[] {
  if (!reconciler) return [];
  const out: IndexSample[] = [];
  for (const slug of slugs) {
    const state = reconciler.stateOf(slug);
    if (!state) continue;
    const actions: Record<string, number> = {};
    for (const i of state.indexes) actions[i.action] = (actions[i.action] ?? 0) + 1;
    out.push({ app: slug, phase: state.phase, actions });
  }
  return out;
}

/** GET /apps: `describe`'s document (one runtime's, or the workers' merged), or a 500 saying why not. */
export function registerAppsRoute(router: Router, describe: () => unknown): void {
  router.get('/apps', async (_req, res) => {
    let doc: unknown;
    try {
      doc = await describe();
    } catch (err) {
      return sendJson(res, 500, { error: `cannot describe the apps: ${(err as Error).message}` });
    }
    sendJson(res, 200, doc);
  });
}
