import type net from 'node:net';
import type { RuntimeConfig } from './apps/runtime-config.js';
import { formatHostPort, redactUri } from './apps/runtime-config.js';
import { ConfigError } from './apps/config-source.js';
import type { AppManifest } from './apps/manifests.js';
import { AppDirectory, type ManifestProblem, type WatchOptions } from './apps/watcher.js';
import { VerifiedTokenCache } from './apps/tokens.js';
import { IndexReconciler, defaultHolderId, type AppIndexState } from './indexes/index.js';
import type { Logger } from './observability/logger.js';
import { HttpServer } from './observability/http.js';
import { UpstreamProbe } from './observability/health.js';
import { ProxyMetrics, type IndexSample, type PoolSample } from './observability/metrics.js';
import { Upstream } from './upstream/index.js';
import { ProxyServer } from './session/server.js';
import { AppUsageTable, type AppUsage } from './session/app-usage.js';
import { DocumentCounts } from './session/document-counts.js';
import { DEFAULT_OPEN_CURSORS, fairUpstreamShare } from './session/context.js';
import { MAX_MESSAGE_SIZE } from './wire/constants.js';
import { POOL_WAIT_BOUNDS } from './upstream/pool.js';
import { performance } from 'node:perf_hooks';
import { VERSION } from './version.js';

/** The runtime could not start (upstream unreachable, address in use); the message says what to check. */
export class StartupError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'StartupError';
  }
}

export interface RunningRuntime {
  proxyAddress: net.AddressInfo;
  httpAddress: net.AddressInfo;
  upstream: Upstream;
  proxy: ProxyServer;
  /** The live apps: `apps.current` is the registry in force; 'reload' is emitted after each change. */
  apps: AppDirectory;
  /** Per-app connections, commands and rate buckets. */
  usage: AppUsageTable;
  /** The Prometheus registry and the per-app meters (GET /metrics). */
  metrics: ProxyMetrics;
  /** The /apps document (what GET /apps answers). */
  describeApps(): AppsDocument;
  /** What GET /readyz answers (ready: 200, else 503 with the reason in `detail`). */
  readiness(): Promise<{ ready: boolean; detail: Record<string, unknown> }>;
  /** Stops accepting, finishes in-flight requests (up to the grace period), closes the upstream. */
  stop(): Promise<void>;
}

/** The largest message an unauthenticated client may send (hello, saslStart with a token). */
export const PRE_AUTH_MAX_MESSAGE_SIZE = 64 * 1024;

export interface RuntimeOptions {
  /** The clock token expiry is judged by (milliseconds since the epoch); tests pass one they can move. */
  now?: () => number;
  /**
   * What an invalid manifest (or a slug conflict) at start does: 'fail' (the default, what `serve`
   * does) throws a ConfigError naming every problem; 'serve' starts with the valid apps and answers
   * /readyz 503 until the failing files are fixed or removed.
   */
  manifestErrorsAtStart?: 'fail' | 'serve';
  /** Manifest watching (debounce, fallback rescan period); false: no hot reload. */
  watch?: WatchOptions | false;
  /** How long an idle connection of a removed app stays open to tell its next request why (default 2000 ms). */
  removedAppGraceMS?: number;
  /** Background refresh period of max_documents_per_collection counts (default 2000 ms). */
  documentCountRefreshMS?: number;
  /**
   * The index reconciler (issue 4 item 4), given the apps at start: default src/indexes'
   * IndexReconciler on the control plane's client; false runs none (tests of other layers may).
   */
  indexReconciler?: ((apps: readonly AppManifest[]) => IndexReconcilerHook) | false;
  /** /readyz's upstream ping: how long it may take (default 2000 ms) and how long its result is reused (default 1000 ms). */
  readiness?: { timeoutMS?: number; cacheMS?: number };
  /** prom-client's process metrics (CPU, memory, event loop) on /metrics; default true. */
  processMetrics?: boolean;
  /**
   * false: no HTTP listener (a worker of `serve --workers N`: the primary serves HTTP for all workers
   * and asks each for readiness(), describeApps() and its metrics registry); `httpAddress` is then the
   * configured http_listen.
   */
  http?: false;
  /** The worker's number under `serve --workers N` (its startup line says so). */
  workerId?: number;
}

/** What the runtime needs of the index reconciler (src/indexes): fed every reload, asked for /apps. */
export interface IndexReconcilerHook {
  update(apps: readonly AppManifest[]): void;
  stateOf(slug: string): AppIndexState | undefined;
  stop(): Promise<void> | void;
}

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

/** Starts the proxy and its HTTP side from a loaded configuration. */
export async function startRuntime(config: RuntimeConfig, logger: Logger, options: RuntimeOptions = {}): Promise<RunningRuntime> {
  // The manifests (the directory logs each app's warnings, and each refused file with file:line:col).
  const directory = new AppDirectory(config.configDir, { logger });
  const startFailures = directory.startFailures;
  if (startFailures.length > 0 && (options.manifestErrorsAtStart ?? 'fail') === 'fail') {
    directory.close();
    throw new ConfigError(startFailures.map((p) => p.message).join('\n'));
  }

  // A failure to reach the upstream at start is reported with what to check (the URI, the timeout),
  // not as a bare driver error.
  let upstream: Upstream;
  try {
    upstream = await Upstream.connect({
      uri: config.upstream.uri,
      pool: config.upstream.pool,
      connectTimeoutMS: config.upstream.connectTimeoutMS,
      serverSelectionTimeoutMS: config.upstream.serverSelectionTimeoutMS,
      version: VERSION,
    });
  } catch (err) {
    // A server error (e.g. AuthenticationFailed) means the upstream was reached and refused us.
    const refused = typeof (err as { code?: unknown }).code === 'number';
    const uri = redactUri(config.upstream.uri);
    throw new StartupError(
      refused
        ? `the upstream ${uri} refused the proxy: ${(err as Error).message}. Check the credentials and options in ` +
            'upstream.uri (MDB_UPSTREAM_URI, --upstream)'
        : `cannot reach the upstream ${uri} within ${config.upstream.serverSelectionTimeoutMS} ms: ` +
            `${(err as Error).message}. Check upstream.uri (MDB_UPSTREAM_URI, --upstream); ` +
            'upstream.server_selection_timeout_ms (MDB_SERVER_SELECTION_TIMEOUT_MS) sets how long to wait',
      { cause: err },
    );
  }
  upstream.topology.on('changed', () => logger.info({ topology: upstream.topology.describe() }, 'upstream topology changed'));
  upstream.onCursorKillFailed = (err, detail) => logger.warn({ err: err.message, ...detail }, 'could not kill cursors upstream');

  // ---- Metrics (issue 5): one registry per runtime; the start's manifest load counts as a reload.
  const metrics = new ProxyMetrics({ enabled: config.metrics, processMetrics: options.processMetrics ?? true });
  metrics.manifestReload('start', startFailures.length, directory.reloadedAt);

  const usage = new AppUsageTable();
  // Verified tokens, shared by the connections; an entry holds only under the manifest it was verified with.
  const tokenCache = new VerifiedTokenCache();
  // max_documents_per_collection: counts through the control plane's own client (approximate, see
  // src/session/document-counts.ts).
  const documentCounts = new DocumentCounts(
    { count: (physical) => upstream.topology.client.db(config.upstream.database).collection(physical).estimatedDocumentCount() },
    { logger, ...(options.documentCountRefreshMS !== undefined ? { refreshMS: options.documentCountRefreshMS } : {}) },
  );
  documentCounts.start();
  const proxy = new ProxyServer({
    upstream,
    logger,
    apps: directory,
    usage,
    documentCounts,
    metrics,
    tokenCache,
    slowOperationMS: config.slowOperationMS,
    now: options.now ?? Date.now,
    scoping: { database: config.upstream.database, tagField: config.tagField },
    limits: {
      maxMessageSize: MAX_MESSAGE_SIZE,
      preAuthMaxMessageSize: PRE_AUTH_MAX_MESSAGE_SIZE,
      preAuthIdleTimeoutMS: config.preAuthIdleTimeoutMS,
      logicalSessionTimeoutMinutes: 30,
      ...(options.removedAppGraceMS !== undefined ? { removedAppGraceMS: options.removedAppGraceMS } : {}),
      upstreamPoolSize: config.upstream.pool.maxSize,
      openCursorsPerApp: DEFAULT_OPEN_CURSORS,
      upstreamWaitQueueTimeoutMS: config.upstream.pool.waitQueueTimeoutMS,
      upstreamRequestTimeoutMS: config.upstream.requestTimeoutMS,
      maxAwaitTimeMS: config.upstream.maxAwaitTimeMS,
    },
  });

  // ---- Index reconciliation (issue 4 item 4): in the background, on start and on every manifest change;
  // /apps shows its state per app.
  let reconciler: IndexReconcilerHook | undefined;
  try {
    const makeReconciler =
      options.indexReconciler ??
      ((apps: readonly AppManifest[]): IndexReconcilerHook => {
        const r = new IndexReconciler({
          client: upstream.topology.client,
          database: config.upstream.database,
          tagField: config.tagField,
          logger,
          defaults: config.indexes,
          holderId: defaultHolderId(),
        });
        r.update(apps);
        return r;
      });
    reconciler = makeReconciler === false ? undefined : makeReconciler([...directory.current]);
  } catch (err) {
    directory.close();
    documentCounts.stop();
    await upstream.close().catch(() => undefined);
    throw err;
  }

  // ---- Hot reload: every applied change reaches the sessions (removed apps' connections close), the
  // usage table and the reconciler.
  directory.on('reload', (event) => {
    metrics.manifestReload(event.cause, event.refused.length);
    proxy.appsChanged(event.registry);
    // Entries of replaced manifests can no longer answer (VerifiedTokenCache.get): free them.
    if (event.changed.length + event.removed.length > 0) tokenCache.clear();
    usage.prune((slug) => event.registry.get(slug) !== undefined);
    metrics.prune((slug) => event.registry.get(slug) !== undefined);
    if (event.added.length + event.changed.length + event.removed.length > 0) reconciler?.update([...event.registry]);
  });
  if (options.watch !== false) directory.watch(options.watch ?? {});

  // ---- /readyz's upstream check: a real ping through the control plane's client, bounded by a timeout
  // (the driver is told to give up too), its result reused for a second.
  const probe = new UpstreamProbe({
    ping: async (timeoutMS) => {
      await upstream.topology.client.db('admin').command({ ping: 1 }, { signal: AbortSignal.timeout(timeoutMS) });
    },
    logger,
    ...(options.readiness?.timeoutMS !== undefined ? { timeoutMS: options.readiness.timeoutMS } : {}),
    ...(options.readiness?.cacheMS !== undefined ? { cacheMS: options.readiness.cacheMS } : {}),
  });

  metrics.setSources({
    pools: () => poolSamples(upstream),
    cursors: () => upstream.cursors.countByOwner(),
    upstreamShares: () =>
      [...usage.entries()].map((u) => ({ app: u.slug, held: u.upstreamInUse, waiting: u.upstreamWaiting, timeouts: u.upstreamTimeouts, awaitCapped: u.awaitCapped })),
    indexes: () => indexSamples(directory, reconciler),
    manifestErrors: () => directory.problems.length,
    apps: () => {
      const apps = [...directory.current];
      const unavailable = apps.filter((m) => m.unavailable).length;
      return [
        ['available', apps.length - unavailable],
        ['unavailable', unavailable],
      ];
    },
    upstreamUp: async () => (await probe.check()).ok,
  });

  let stopping: Promise<void> | undefined;
  const readiness = async (): Promise<{ ready: boolean; detail: Record<string, unknown> }> => {
      // While draining on shutdown the HTTP side stays up and says "not ready" so load balancers stop
      // sending new clients before the listener is gone.
      if (stopping) return { ready: false, detail: { shutting_down: true } };
      const ping = await probe.check();
      const server = upstream.topology.trySelect();
      const apps = directory.current;
      const failed = directory.startFailures;
      const reasons = [
        ...(ping.ok ? [] : [`the upstream did not answer a ping (timeout ${probe.timeoutMS} ms): ${ping.error ?? 'no answer'}`]),
        ...(server || !ping.ok ? [] : ['no writable upstream server']),
        ...(failed.length > 0 ? [`manifests failed to load at start: ${failed.map((p) => p.file).join(', ')}`] : []),
      ];
      return {
        ready: reasons.length === 0,
        detail: {
          ...(reasons.length > 0 ? { reason: reasons.join('; ') } : {}),
          upstream: server ? `${server.type} ${server.address}` : 'no writable upstream server',
          upstream_ping: ping.ok ? { ok: true, ms: ping.ms } : { ok: false, error: ping.error ?? 'no answer', timeout_ms: probe.timeoutMS },
          apps: apps.size,
          unavailable_apps: [...apps].filter((m) => m.unavailable).map((m) => m.slug),
          // A refused reload keeps the proxy ready (the last good version serves) but shows here.
          manifest_errors: directory.problems.map(errorEntry),
        },
      };
  };
  const http = new HttpServer({
    readiness,
    apps: () => describeApps(),
    metrics: () => metrics.scrape(),
  });
  const shareOf = (m: AppManifest, u: AppUsage | undefined): UpstreamShareEntry => ({
    connections: { in_use: u?.upstreamInUse ?? 0, waiting: u?.upstreamWaiting ?? 0, limit: m.limits.upstreamConnections ?? fairUpstreamShare(config.upstream.pool.maxSize, directory.current.size) },
    open_cursors: { open: upstream.cursors.countOf(m.slug), limit: m.limits.openCursors ?? DEFAULT_OPEN_CURSORS },
    wait_timeouts: u?.upstreamWaitTimeouts ?? 0,
    upstream_timeouts: u?.upstreamTimeouts ?? 0,
    cursor_refusals: u?.cursorRefusals ?? 0,
    await_capped: u?.awaitCapped ?? 0,
  });
  const describeApps = (): AppsDocument => appsDocument(directory, usage, reconciler, metrics, shareOf);

  let proxyAddress: net.AddressInfo;
  let httpAddress: net.AddressInfo;
  let what = `listen ${formatHostPort(config.listen)} (MDB_LISTEN, --listen)`;
  try {
    proxyAddress = await proxy.listen(config.listen.host, config.listen.port);
    what = `http_listen ${formatHostPort(config.httpListen)} (MDB_HTTP_LISTEN, --http-listen)`;
    httpAddress =
      options.http === false
        ? { address: config.httpListen.host, port: config.httpListen.port, family: config.httpListen.host.includes(':') ? 'IPv6' : 'IPv4' }
        : await http.listen(config.httpListen.host, config.httpListen.port);
  } catch (err) {
    await proxy.shutdown(0).catch(() => undefined);
    await http.close().catch(() => undefined);
    directory.close();
    documentCounts.stop();
    await reconciler?.stop();
    await upstream.close();
    throw new StartupError(`cannot listen on ${what}: ${(err as Error).message}`, { cause: err });
  }
  // The startup line: where it listens, and which upstream (URI without password, and what the driver
  // discovered there).
  const listen = formatHostPort({ host: proxyAddress.address, port: proxyAddress.port });
  const httpListen = formatHostPort({ host: httpAddress.address, port: httpAddress.port });
  const upstreamUri = redactUri(config.upstream.uri);
  logger.info(
    {
      listen,
      http: httpListen,
      upstream: upstreamUri,
      database: config.upstream.database,
      topology: upstream.topology.describe(),
      apps: directory.current.slugs,
      ...(startFailures.length > 0 ? { manifest_errors: startFailures.map((p) => p.file) } : {}),
      config: config.file ?? config.configDir,
      version: VERSION,
    },
    options.workerId !== undefined
      ? `worker ${options.workerId} serving ${listen}; upstream ${upstreamUri}: ${upstream.topology.describe()}`
      : `mdb-runtime ${VERSION} listening on ${listen} (http ${httpListen}); upstream ${upstreamUri}: ${upstream.topology.describe()}`,
  );

  return {
    proxyAddress,
    httpAddress,
    upstream,
    proxy,
    apps: directory,
    usage,
    metrics,
    describeApps,
    readiness,
    stop() {
      stopping ??= (async () => {
        logger.info({ connections: proxy.connectionCount }, 'shutting down: no new connections, finishing requests');
        directory.close();
        await proxy.shutdown(config.shutdownGraceMS);
        documentCounts.stop();
        await reconciler?.stop();
        if (options.http !== false) await http.close();
        await upstream.close();
        logger.info('mdb-runtime stopped');
      })();
      return stopping;
    },
  };
}

function iso(ms: number | undefined): string | undefined {
  return ms === undefined ? undefined : new Date(ms).toISOString();
}

function errorEntry(p: ManifestProblem): ManifestErrorEntry {
  return { file: p.file, line: p.line, column: p.column, kind: p.kind, message: p.message, since: new Date(p.since).toISOString() };
}

/** The upstream pools as the metrics read them. */
function poolSamples(upstream: Upstream): PoolSample[] {
  return [...upstream.pools.values()].map((p) => ({
    address: p.address,
    size: p.size,
    inUse: p.inUse,
    waiting: p.waiting,
    waitBounds: POOL_WAIT_BOUNDS,
    waitCounts: p.waits.counts,
    waitSum: p.waits.sum,
    waitCount: p.waits.count,
    waitFailures: p.waits.failures,
  }));
}

/** Index state per registered app, as the metrics read it (none without a reconciler). */
function indexSamples(directory: AppDirectory, reconciler: IndexReconcilerHook | undefined): IndexSample[] {
  if (!reconciler) return [];
  const out: IndexSample[] = [];
  for (const slug of directory.current.slugs) {
    const state = reconciler.stateOf(slug);
    if (!state) continue;
    const actions: Record<string, number> = {};
    for (const i of state.indexes) actions[i.action] = (actions[i.action] ?? 0) + 1;
    out.push({ app: slug, phase: state.phase, actions });
  }
  return out;
}

/** GET /apps: every manifest file's app (in force or failing), with usage and index state. */
function appsDocument(
  directory: AppDirectory,
  usage: AppUsageTable,
  reconciler: IndexReconcilerHook | undefined,
  metrics: ProxyMetrics,
  shareOf: (m: AppManifest, u: AppUsage | undefined) => UpstreamShareEntry,
): AppsDocument {
  const apps: AppStatusEntry[] = [];
  const now = performance.now();
  for (const f of directory.files) {
    const m = f.inForce;
    const u = m ? usage.peek(m.slug) : undefined;
    const meter = m ? metrics.peek(m.slug) : undefined;
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
      upstream_share: m ? shareOf(m, u) : null,
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
