import type net from 'node:net';
import type { RuntimeConfig } from './apps/runtime-config.js';
import { formatHostPort, redactUri } from './apps/runtime-config.js';
import { loadManifests, type AppManifest } from './apps/manifests.js';
import type { Logger } from './observability/logger.js';
import { HttpServer } from './observability/http.js';
import { Upstream } from './upstream/index.js';
import { ProxyServer } from './session/server.js';
import { MAX_MESSAGE_SIZE } from './wire/constants.js';
import { VERSION } from './version.js';

export interface RunningRuntime {
  proxyAddress: net.AddressInfo;
  httpAddress: net.AddressInfo;
  upstream: Upstream;
  proxy: ProxyServer;
  /** Stops accepting, finishes in-flight requests (up to the grace period), closes the upstream. */
  stop(): Promise<void>;
}

/** Starts the proxy and its HTTP side from a loaded configuration. */
export async function startRuntime(config: RuntimeConfig, logger: Logger): Promise<RunningRuntime> {
  const manifests = loadManifests(config.configDir);
  const apps = new Map<string, AppManifest>(manifests.map((m) => [m.slug, m]));
  for (const m of manifests) {
    if (!m.authRequired) logger.warn({ app_id: m.slug }, `app '${m.slug}' has auth_required: false; any client naming it can act as it`);
  }

  const upstream = await Upstream.connect({
    uri: config.upstream.uri,
    pool: config.upstream.pool,
    connectTimeoutMS: config.upstream.connectTimeoutMS,
    serverSelectionTimeoutMS: config.upstream.serverSelectionTimeoutMS,
    version: VERSION,
  });
  upstream.topology.on('changed', () => logger.info({ topology: upstream.topology.describe() }, 'upstream topology changed'));

  const proxy = new ProxyServer({
    upstream,
    logger,
    findApp: (slug) => apps.get(slug),
    limits: { maxMessageSize: MAX_MESSAGE_SIZE, logicalSessionTimeoutMinutes: 30 },
  });
  const http = new HttpServer({
    readiness: async () => {
      const server = upstream.topology.trySelect();
      return {
        ready: server !== undefined,
        detail: { upstream: server ? `${server.type} ${server.address}` : 'no writable upstream server', apps: apps.size },
      };
    },
  });

  let proxyAddress: net.AddressInfo;
  let httpAddress: net.AddressInfo;
  try {
    proxyAddress = await proxy.listen(config.listen.host, config.listen.port);
    httpAddress = await http.listen(config.httpListen.host, config.httpListen.port);
  } catch (err) {
    await proxy.shutdown(0).catch(() => undefined);
    await upstream.close();
    throw err;
  }
  logger.info(
    {
      listen: formatHostPort({ host: proxyAddress.address, port: proxyAddress.port }),
      http: formatHostPort({ host: httpAddress.address, port: httpAddress.port }),
      upstream: redactUri(config.upstream.uri),
      topology: upstream.topology.describe(),
      apps: [...apps.keys()],
      version: VERSION,
    },
    `mdb-runtime listening on ${formatHostPort({ host: proxyAddress.address, port: proxyAddress.port })}, upstream ${upstream.topology.describe()}`,
  );

  let stopping: Promise<void> | undefined;
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
