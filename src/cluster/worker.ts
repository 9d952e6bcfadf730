import { AggregatorRegistry } from 'prom-client';
import { ConfigError, type RuntimeConfig } from '../config/runtime-config.js';
import { formatHostPort, redactUri } from '../config/runtime-config.js';
import { createLogger, type Logger } from '../observability/logger.js';
import { StartupError, startRuntime, type RunningRuntime } from '../runtime.js';
import { WORKER_ID_ENV, isOurs, type FatalMessage, type PrimaryMessage, type ReadyMessage, type ReplyMessage, type WorkerReadiness } from './messages.js';

/**
 * One worker of `serve --workers N` (a process forked by node:cluster; see primary.ts): the whole data
 * plane (the wire listener, which node:cluster shares between the workers, sessions, upstream pools),
 * its own manifest watcher (hot reload happens in every worker on its own), and no HTTP listener: the
 * primary serves HTTP and asks each worker for its readiness, its /apps document and its metrics.
 * Worker 1 alone runs the index reconciler.
 *
 * It stops on the primary's 'shutdown' message, on SIGTERM/SIGINT (a terminal's Ctrl-C reaches the
 * whole process group; a signal here is the same request, not a second one) and when the primary is
 * gone (the IPC channel closes).
 */
export async function runWorker(config: RuntimeConfig): Promise<void> {
  const id = Number(process.env[WORKER_ID_ENV] ?? '0');
  const logger = createLogger(config.logLevel, undefined, { worker: id });
  // Listens for prom-client's metric requests from the start (the registry is set once the runtime runs),
  // so that a scrape while this worker starts gets an empty answer rather than a timeout.
  new AggregatorRegistry();

  let runtime: RunningRuntime | undefined;
  let stopping = false;
  const stop = (why: string) => {
    if (stopping) return;
    stopping = true;
    if (!runtime) {
      exit(logger, 0);
      return;
    }
    logger.info({ why }, 'worker stopping');
    runtime.stop().then(
      () => exit(logger, 0),
      (err: unknown) => {
        logger.error({ err }, 'error during shutdown');
        exit(logger, 1);
      },
    );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('disconnect', () => stop('the primary process is gone'));
  process.on('message', (m: unknown) => {
    if (!isOurs(m)) return;
    const msg = m as PrimaryMessage;
    if (msg.mdb === 'shutdown') stop('shutdown requested by the primary');
    else if (msg.mdb === 'request') void answer(msg.id, msg.what);
  });

  const answer = async (requestId: number, what: string) => {
    const reply: ReplyMessage = { mdb: 'reply', id: requestId };
    try {
      if (!runtime) throw new Error('starting');
      if (what === 'readiness') {
        const r = await runtime.readiness();
        reply.value = { ...r, connections: runtime.proxy.connectionCount } satisfies WorkerReadiness;
      } else if (what === 'apps') {
        reply.value = runtime.describeApps();
      } else {
        throw new Error(`unknown request ${what}`);
      }
    } catch (err) {
      reply.error = err instanceof Error ? err.message : String(err);
    }
    send(reply);
  };

  try {
    runtime = await startRuntime(config, logger, { http: false, workerId: id, ...(id === 1 ? {} : { indexReconciler: false }) });
  } catch (err) {
    const fatal: FatalMessage = {
      mdb: 'fatal',
      kind: err instanceof ConfigError ? 'config' : err instanceof StartupError ? 'startup' : 'error',
      message: err instanceof Error ? err.message : String(err),
    };
    send(fatal);
    exit(logger, 1);
    return;
  }
  AggregatorRegistry.setRegistries([runtime.metrics.registry]);
  const ready: ReadyMessage = {
    mdb: 'ready',
    worker: id,
    pid: process.pid,
    listen: formatHostPort({ host: runtime.proxyAddress.address, port: runtime.proxyAddress.port }),
    upstream: redactUri(config.upstream.uri),
    database: config.upstream.database,
    topology: runtime.upstream.topology.describe(),
    apps: [...runtime.apps.current.slugs],
    manifestErrors: runtime.apps.startFailures.map((p) => p.file),
    config: config.file ?? config.configDir,
  };
  send(ready);
}

function send(message: unknown): void {
  if (process.connected && process.send) {
    try {
      process.send(message);
    } catch {
      // The channel closed under us: the 'disconnect' handler stops the worker.
    }
  }
}

function exit(logger: Logger, code: number): void {
  process.exitCode = code;
  setTimeout(() => process.exit(code), 2000).unref();
  logger.flush(() => process.exit(code));
}
