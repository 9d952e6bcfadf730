import { performance } from 'node:perf_hooks';
import type { AppDirectory } from '../apps/watcher.js';
import { errorEntry } from './apps-view.js';
import type { Logger } from './logger.js';
import { sendJson, type Router } from './router.js';

/** GET /healthz (the process answers) and GET /readyz (able to serve: 200, else 503 with the reason). */
export function registerHealthRoutes(router: Router, readiness: () => Promise<{ ready: boolean; detail: Record<string, unknown> }>): void {
  router.get('/healthz', (_req, res) => sendJson(res, 200, { status: 'ok' }));
  router.get('/readyz', async (_req, res) => {
    const { ready, detail } = await readiness();
    sendJson(res, ready ? 200 : 503, { status: ready ? 'ready' : 'not ready', ...detail });
  });
}

/** The result of one upstream ping. */
export interface ProbeResult {
  ok: boolean;
  /** How long the ping took (ms), or how long it was given before it was abandoned. */
  ms: number;
  /** Why not ok. */
  error?: string;
  /** When the ping finished (performance.now()). */
  at: number;
}

export interface UpstreamProbeOptions {
  /** Sends one ping; must honour `timeoutMS` itself too (the probe stops waiting after it regardless). */
  ping: (timeoutMS: number) => Promise<void>;
  /** Longest wait for the answer (default 2000 ms). */
  timeoutMS?: number;
  /** How long a result answers further probes (default 1000 ms), so that frequent probes stay cheap. */
  cacheMS?: number;
  /** Logs transitions (reachable → unreachable and back). */
  logger?: Logger;
}

/**
 * /readyz's upstream check: a real ping through the control plane's client, bounded by
 * a timeout, its result kept for a second. Concurrent probes share the ping in flight. Changes of state
 * are logged (a lifecycle event).
 */
export class UpstreamProbe {
  private last: ProbeResult | undefined;
  private inFlight: Promise<ProbeResult> | undefined;
  readonly timeoutMS: number;
  private readonly cacheMS: number;

  constructor(private readonly options: UpstreamProbeOptions) {
    this.timeoutMS = options.timeoutMS ?? 2000;
    this.cacheMS = options.cacheMS ?? 1000;
  }

  /** The last result, if any (metrics read it without probing). */
  get latest(): ProbeResult | undefined {
    return this.last;
  }

  /** A fresh enough result: the cached one, the one in flight, or a new ping. Never throws. */
  check(): Promise<ProbeResult> {
    const last = this.last;
    if (last && performance.now() - last.at < this.cacheMS) return Promise.resolve(last);
    this.inFlight ??= this.run().finally(() => (this.inFlight = undefined));
    return this.inFlight;
  }

  private async run(): Promise<ProbeResult> {
    const start = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.timeoutMS} ms`)), this.timeoutMS);
      timer.unref();
    });
    let result: ProbeResult;
    try {
      await Promise.race([this.options.ping(this.timeoutMS), timeout]);
      const end = performance.now();
      result = { ok: true, ms: round(end - start), at: end };
    } catch (err) {
      const end = performance.now();
      result = { ok: false, ms: round(end - start), error: err instanceof Error ? err.message : String(err), at: end };
    } finally {
      clearTimeout(timer);
    }
    const before = this.last;
    this.last = result;
    if (before && before.ok !== result.ok) {
      if (result.ok) this.options.logger?.info({ ping_ms: result.ms }, 'upstream reachable again');
      else this.options.logger?.warn({ error: result.error, timeout_ms: this.timeoutMS }, 'upstream unreachable: a ping did not succeed');
    } else if (!before && !result.ok) {
      this.options.logger?.warn({ error: result.error, timeout_ms: this.timeoutMS }, 'upstream unreachable: a ping did not succeed');
    }
    return result;
  }
}

function round(ms: number): number {
  return Math.round(ms * 100) / 100;
}

/** What /readyz is judged from. */
export interface ReadinessSources {
  /** Draining on shutdown. */
  stopping(): boolean;
  probe: Pick<UpstreamProbe, 'check' | 'timeoutMS'>;
  /** The writable upstream server the topology knows now, if any (src/upstream/topology.ts). */
  writableServer(): { type: string; address: string } | undefined;
  directory: Pick<AppDirectory, 'current' | 'startFailures' | 'problems'>;
}

/**
 * GET /readyz: ready when the upstream answers a ping, a writable server is known and no manifest
 * failed to load at start; the detail says what was checked, and the reasons when not ready.
 */
export async function readinessOf(sources: ReadinessSources): Promise<{ ready: boolean; detail: Record<string, unknown> }> {
  // While draining on shutdown the HTTP side stays up and says "not ready" so load balancers stop
  // sending new clients before the listener is gone.
  if (sources.stopping()) return { ready: false, detail: { shutting_down: true } };
  const { probe, directory } = sources;
  const ping = await probe.check();
  const server = sources.writableServer();
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
}
