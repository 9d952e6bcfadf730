import type net from 'node:net';
import type { RuntimeConfig } from './config/runtime-config.js';
import { formatHostPort, redactUri } from './config/runtime-config.js';
import { ConfigError } from './config/source.js';
import type { AppManifest } from './apps/manifests.js';
import { AppDirectory, type WatchOptions } from './apps/watcher.js';
import { VerifiedTokenCache } from './apps/tokens.js';
import { IndexReconciler, defaultHolderId, type AppIndexState } from './indexes/index.js';
import type { Logger } from './observability/logger.js';
import { HttpServer, registerObservabilityRoutes } from './observability/http.js';
import { Router } from './observability/router.js';
import { UpstreamProbe, readinessOf } from './observability/health.js';
import { ProxyMetrics } from './observability/metrics.js';
import { appsDocument, indexSamples, poolSamples, type AppsDocument } from './observability/apps-view.js';
import { COMMANDS } from './policy/commands.js';
import { Upstream } from './upstream/index.js';
import { POOL_WAIT_BOUNDS } from './upstream/pool.js';
import { ProxyServer } from './session/server.js';
import { AppTable } from './session/app-usage.js';
import { DocumentCounts } from './session/document-counts.js';
import { DEFAULT_OPEN_CURSORS, fairUpstreamShare } from './session/context.js';
import { MAX_MESSAGE_SIZE } from './wire/constants.js';
import { VERSION } from './version.js';

/**
 * The composition root: builds the parts from the configuration and wires them together (the data
 * plane: upstream, sessions; the control plane: manifests, index reconciliation, metrics, the HTTP
 * routes). What each part does lives in its own module (docs/architecture.md).
 */

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
  usage: AppTable;
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
   * The index reconciler, given the apps at start: default src/indexes'
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

  // ---- Metrics: one registry per runtime; the start's manifest load counts as a reload.
  const metrics = new ProxyMetrics({
    enabled: config.metrics,
    processMetrics: options.processMetrics ?? true,
    // The command label values are the command table's names; the pool wait buckets the pools' own.
    commands: [...COMMANDS.values()].map((spec) => spec.name),
    poolWaitBounds: POOL_WAIT_BOUNDS,
  });
  metrics.manifestReload('start', startFailures.length, directory.reloadedAt);

  // The one per-app table: the sessions' usage and meters, read by /metrics and /apps.
  const usage = new AppTable(metrics);
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

  // ---- Index reconciliation: in the background, on start and on every manifest change;
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
  // per-app table and the reconciler.
  directory.on('reload', (event) => {
    metrics.manifestReload(event.cause, event.refused.length);
    proxy.appsChanged(event.registry);
    // Entries of replaced manifests can no longer answer (VerifiedTokenCache.get): free them.
    if (event.changed.length + event.removed.length > 0) tokenCache.clear();
    usage.prune((slug) => event.registry.get(slug) !== undefined);
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
    pools: () => poolSamples(upstream.pools.values(), POOL_WAIT_BOUNDS),
    cursors: () => upstream.cursors.countByOwner(),
    upstreamShares: () =>
      [...usage.entries()].map((u) => ({ app: u.slug, held: u.upstreamInUse, waiting: u.upstreamWaiting, timeouts: u.upstreamTimeouts, awaitCapped: u.awaitCapped })),
    indexes: () => indexSamples(directory.current.slugs, reconciler),
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
  const readiness = () =>
    readinessOf({ stopping: () => stopping !== undefined, probe, writableServer: () => upstream.topology.trySelect(), directory });
  const describeApps = (): AppsDocument =>
    appsDocument({
      directory,
      usage,
      metrics,
      reconciler,
      upstreamLimits: (m) => ({
        connections: m.limits.upstreamConnections ?? fairUpstreamShare(config.upstream.pool.maxSize, directory.current.size),
        openCursors: m.limits.openCursors ?? DEFAULT_OPEN_CURSORS,
      }),
      openCursors: (slug) => upstream.cursors.countOf(slug),
    });
  // The HTTP route table: each part registers its own routes (today observability's).
  const routes = registerObservabilityRoutes(new Router(), { readiness, apps: describeApps, metrics: () => metrics.scrape() });
  const http = new HttpServer(routes);

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
