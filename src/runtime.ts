import type net from 'node:net';
import type { RuntimeConfig } from './apps/runtime-config.js';
import { formatHostPort, redactUri } from './apps/runtime-config.js';
import { loadApps } from './apps/registry.js';
import type { Logger } from './observability/logger.js';
import { HttpServer } from './observability/http.js';
import { Upstream } from './upstream/index.js';
import { ProxyServer } from './session/server.js';
import { MAX_MESSAGE_SIZE } from './wire/constants.js';
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
  /** Stops accepting, finishes in-flight requests (up to the grace period), closes the upstream. */
  stop(): Promise<void>;
}

/** The largest message an unauthenticated client may send (hello, saslStart with a token). */
export const PRE_AUTH_MAX_MESSAGE_SIZE = 64 * 1024;

export interface RuntimeOptions {
  /** The clock token expiry is judged by (milliseconds since the epoch); tests pass one they can move. */
  now?: () => number;
}

/** Starts the proxy and its HTTP side from a loaded configuration. */
export async function startRuntime(config: RuntimeConfig, logger: Logger, options: RuntimeOptions = {}): Promise<RunningRuntime> {
  const apps = loadApps(config.configDir);
  for (const m of apps) {
    if (!m.authRequired) logger.warn({ app_id: m.slug }, `app '${m.slug}' has auth_required: false; any client naming it can act as it`);
    for (const w of m.warnings) logger.warn({ app_id: m.slug }, w);
    // A missing secret makes one app unavailable (its clients fail authentication), not the proxy.
    if (m.unavailable) logger.error({ app_id: m.slug }, `app '${m.slug}' is unavailable: ${m.unavailable}`);
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

  const proxy = new ProxyServer({
    upstream,
    logger,
    apps,
    now: options.now ?? Date.now,
    scoping: { database: config.upstream.database, tagField: config.tagField },
    limits: {
      maxMessageSize: MAX_MESSAGE_SIZE,
      preAuthMaxMessageSize: PRE_AUTH_MAX_MESSAGE_SIZE,
      preAuthIdleTimeoutMS: config.preAuthIdleTimeoutMS,
      logicalSessionTimeoutMinutes: 30,
    },
  });
  let stopping: Promise<void> | undefined;
  const http = new HttpServer({
    readiness: async () => {
      // While draining on shutdown the HTTP side stays up and says "not ready" so load balancers stop
      // sending new clients before the listener is gone.
      if (stopping) return { ready: false, detail: { shutting_down: true } };
      const server = upstream.topology.trySelect();
      return {
        ready: server !== undefined,
        detail: {
          upstream: server ? `${server.type} ${server.address}` : 'no writable upstream server',
          apps: apps.size,
          unavailable_apps: [...apps].filter((m) => m.unavailable).map((m) => m.slug),
        },
      };
    },
  });

  let proxyAddress: net.AddressInfo;
  let httpAddress: net.AddressInfo;
  let what = `listen ${formatHostPort(config.listen)} (MDB_LISTEN, --listen)`;
  try {
    proxyAddress = await proxy.listen(config.listen.host, config.listen.port);
    what = `http_listen ${formatHostPort(config.httpListen)} (MDB_HTTP_LISTEN, --http-listen)`;
    httpAddress = await http.listen(config.httpListen.host, config.httpListen.port);
  } catch (err) {
    await proxy.shutdown(0).catch(() => undefined);
    await http.close().catch(() => undefined);
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
      apps: apps.slugs,
      config: config.file ?? config.configDir,
      version: VERSION,
    },
    `mdb-runtime ${VERSION} listening on ${listen} (http ${httpListen}); upstream ${upstreamUri}: ${upstream.topology.describe()}`,
  );

  return {
    proxyAddress,
    httpAddress,
    upstream,
    proxy,
    stop() {
      stopping ??= (async () => {
        logger.info({ connections: proxy.connectionCount }, 'shutting down: no new connections, finishing requests');
        await proxy.shutdown(config.shutdownGraceMS);
        await http.close();
        await upstream.close();
        logger.info('mdb-runtime stopped');
      })();
      return stopping;
    },
  };
}
