import cluster, { type Worker } from 'node:cluster';
import type net from 'node:net';
import { AggregatorRegistry } from 'prom-client';
import { ConfigError, formatHostPort, type RuntimeConfig } from '../config/runtime-config.js';
import type { AppStatusEntry, AppsDocument } from '../observability/apps-view.js';
import { HttpServer, registerObservabilityRoutes } from '../observability/http.js';
import type { Logger } from '../observability/logger.js';
import { Router } from '../observability/router.js';
import { StartupError } from '../runtime.js';
import { VERSION } from '../version.js';
import { WORKER_ID_ENV, isOurs, type FatalMessage, type ReadyMessage, type WorkerMessage, type WorkerReadiness } from './messages.js';

/**
 * The primary process of `serve --workers N` (N > 1).
 *
 * Design: the primary runs no data plane and holds no upstream connection. It forks N workers
 * (node:cluster; each runs the full data plane, see worker.ts) which share the wire listen port
 * (node:cluster's round-robin distribution on Linux: the primary accepts and hands each socket to the
 * next worker), and it owns the HTTP listener itself:
 *  - /metrics: prom-client's AggregatorRegistry asks every worker for its registry over IPC and sums
 *    them (see the aggregators in src/observability/metrics.ts);
 *  - /readyz: ready when every worker is running and answers ready (upstream ping, manifests); the
 *    detail is worker 1's, plus `workers` (id, pid, ready, connections, restarts) and the reasons of
 *    the workers that are not ready;
 *  - /apps: the workers' documents merged (per app: connections, commands and rates summed; latency
 *    p50/p99 the largest worker's); index state from worker 1, the only one that runs the reconciler;
 *  - /healthz and the status page at / are answered by the primary itself.
 * Each worker watches the config directory itself, so hot reload happens in every worker.
 *
 * Lifecycle: a worker that fails to start during the first start (configuration error, upstream
 * unreachable, port in use) stops everything, and `serve` exits 1 with that worker's message; a worker
 * that dies later is logged and forked again after a backoff (1 s, doubling up to 30 s; reset once a
 * worker has run for a minute). stop() asks every worker to drain (shutdown_grace_ms) and resolves
 * with 0 when all of them exited cleanly.
 */
export class ClusterPrimary {
  private readonly slots: Slot[];
  private readonly http: HttpServer;
  private readonly aggregator = new AggregatorRegistry();
  private httpAddress: net.AddressInfo | undefined;
  private phase: 'starting' | 'running' | 'stopping' = 'starting';
  private seq = 0;
  private readonly pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private startFailure: ((err: Error) => void) | undefined;
  private stopped: Promise<number> | undefined;

  constructor(
    private readonly config: RuntimeConfig,
    private readonly logger: Logger,
  ) {
    this.slots = Array.from({ length: config.workers }, (_, i) => ({ id: i + 1, ready: false, failures: 0, restarts: 0 }));
    // The same routes as a single process, answered from every worker (see the class comment).
    const routes = registerObservabilityRoutes(new Router(), {
      readiness: () => this.readiness(),
      apps: () => this.apps(),
      metrics: async () => ({ contentType: this.aggregator.contentType, text: await this.aggregator.clusterMetrics() }),
    });
    this.http = new HttpServer(routes);
  }

  /** Listens on http_listen, forks the workers and resolves once all of them serve; throws what made the start fail. */
  async start(): Promise<void> {
    const hl = this.config.httpListen;
    try {
      this.httpAddress = await this.http.listen(hl.host, hl.port);
    } catch (err) {
      throw new StartupError(`cannot listen on http_listen ${formatHostPort(hl)} (MDB_HTTP_LISTEN, --http-listen): ${(err as Error).message}`, { cause: err });
    }
    cluster.setupPrimary({ exec: process.argv[1]!, args: process.argv.slice(2), silent: false });
    const allReady = new Promise<void>((resolve, reject) => {
      this.startFailure = reject;
      this.onAllReady = resolve;
    });
    for (const slot of this.slots) this.fork(slot);
    try {
      await allReady;
    } catch (err) {
      this.phase = 'stopping';
      for (const s of this.slots) if (s.worker && !s.worker.isDead()) s.worker.process.kill('SIGKILL');
      await Promise.all(this.slots.map((s) => s.exited));
      await this.http.close();
      throw err;
    }
    this.phase = 'running';
    this.startFailure = undefined;
    const first = this.slots[0]!.info!;
    const http = formatHostPort({ host: this.httpAddress.address, port: this.httpAddress.port });
    this.logger.info(
      {
        listen: first.listen,
        http,
        upstream: first.upstream,
        database: first.database,
        topology: first.topology,
        apps: first.apps,
        ...(first.manifestErrors.length > 0 ? { manifest_errors: first.manifestErrors } : {}),
        config: first.config,
        version: VERSION,
        workers: this.slots.map((s) => ({ id: s.id, pid: s.pid })),
      },
      `mdb-runtime ${VERSION} listening on ${first.listen} (http ${http}) with ${this.slots.length} workers; upstream ${first.upstream}: ${first.topology}`,
    );
  }

  private onAllReady: (() => void) | undefined;

  /** Asks every worker to drain and exit; resolves with the exit code `serve` should end with. */
  stop(): Promise<number> {
    this.stopped ??= (async () => {
      this.phase = 'stopping';
      this.logger.info({ workers: this.slots.length }, 'shutting down: asking every worker to finish its requests');
      for (const s of this.slots) {
        clearTimeout(s.timer);
        if (s.worker && !s.worker.isDead()) this.send(s.worker, { mdb: 'shutdown' });
      }
      // A worker that does not finish (it gets shutdown_grace_ms, then needs a moment to close) is killed.
      const killer = setTimeout(() => this.kill(), this.config.shutdownGraceMS + 10_000);
      const codes = await Promise.all(this.slots.map((s) => s.exited ?? Promise.resolve(0)));
      clearTimeout(killer);
      await this.http.close();
      const clean = codes.every((c) => c === 0);
      if (clean) this.logger.info('mdb-runtime stopped');
      else this.logger.error({ exit_codes: codes }, 'mdb-runtime stopped; some workers did not exit cleanly');
      return clean ? 0 : 1;
    })();
    return this.stopped;
  }

  /** Kills every worker at once (a second signal). */
  kill(): void {
    for (const s of this.slots) if (s.worker && !s.worker.isDead()) s.worker.process.kill('SIGKILL');
  }

  private fork(slot: Slot): void {
    slot.ready = false;
    slot.info = undefined;
    slot.fatal = undefined;
    const worker = cluster.fork({ [WORKER_ID_ENV]: String(slot.id) });
    slot.worker = worker;
    slot.pid = worker.process.pid;
    slot.exited = new Promise<number>((resolve) => {
      worker.once('exit', (code: number | null, signal: string | null) => {
        this.onExit(slot, worker, code, signal);
        resolve(code ?? 1);
      });
    });
    worker.on('message', (m: unknown) => {
      if (isOurs(m)) this.onMessage(slot, m as WorkerMessage);
    });
  }

  private onMessage(slot: Slot, m: WorkerMessage): void {
    switch (m.mdb) {
      case 'ready':
        slot.ready = true;
        slot.readyAt = Date.now();
        slot.info = m;
        if (this.phase === 'starting' && this.slots.every((s) => s.ready)) this.onAllReady?.();
        else if (this.phase === 'running') this.logger.info({ worker_id: slot.id, worker_pid: m.pid }, `worker ${slot.id} is serving again`);
        return;
      case 'fatal':
        slot.fatal = m;
        return;
      case 'reply': {
        const p = this.pending.get(m.id);
        if (!p) return;
        this.pending.delete(m.id);
        clearTimeout(p.timer);
        if (m.error !== undefined) p.reject(new Error(m.error));
        else p.resolve(m.value);
        return;
      }
    }
  }

  private onExit(slot: Slot, worker: Worker, code: number | null, signal: string | null): void {
    if (slot.worker !== worker) return;
    slot.ready = false;
    if (this.phase === 'stopping') return;
    if (this.phase === 'starting') {
      this.startFailure?.(startError(slot, code, signal));
      return;
    }
    // Running: restart with a backoff (a worker that keeps failing is not forked in a tight loop).
    if (slot.readyAt !== undefined && Date.now() - slot.readyAt > 60_000) slot.failures = 0;
    slot.failures++;
    slot.restarts++;
    const delay = Math.min(30_000, 1000 * 2 ** (slot.failures - 1));
    this.logger.error(
      {
        worker_id: slot.id,
        worker_pid: slot.pid,
        code,
        signal,
        ...(slot.fatal ? { error: slot.fatal.message } : {}),
        restart_in_ms: delay,
      },
      `worker ${slot.id} (pid ${slot.pid}) exited unexpectedly (${signal ?? `code ${code}`}); restarting it in ${delay} ms`,
    );
    slot.readyAt = undefined;
    slot.timer = setTimeout(() => {
      if (this.phase === 'running') this.fork(slot);
    }, delay);
  }

  private send(worker: Worker, message: unknown): void {
    try {
      worker.send(message as never);
    } catch {
      // The worker is going away; its exit is handled.
    }
  }

  private request<T>(slot: Slot, what: 'readiness' | 'apps', timeoutMS = 3000): Promise<T> {
    const worker = slot.worker;
    if (!worker || !slot.ready || !worker.isConnected()) return Promise.reject(new Error(`worker ${slot.id} is not running`));
    const id = ++this.seq;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`worker ${slot.id} did not answer within ${timeoutMS} ms`));
      }, timeoutMS);
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.send(worker, { mdb: 'request', id, what });
    });
  }

  private async readiness(): Promise<{ ready: boolean; detail: Record<string, unknown> }> {
    if (this.phase === 'stopping') return { ready: false, detail: { shutting_down: true } };
    const answers = await Promise.all(
      this.slots.map((s) =>
        this.request<WorkerReadiness>(s, 'readiness').then(
          (r) => ({ slot: s, r, error: undefined as string | undefined }),
          (err: Error) => ({ slot: s, r: undefined, error: err.message }),
        ),
      ),
    );
    const reasons: string[] = [];
    for (const a of answers) {
      if (a.error !== undefined) reasons.push(`worker ${a.slot.id}: ${a.error}`);
      else if (!a.r!.ready) reasons.push(`worker ${a.slot.id}: ${String(a.r!.detail.reason ?? 'not ready')}`);
    }
    if (this.phase === 'starting') reasons.unshift('starting');
    const base = answers.find((a) => a.r)?.r?.detail ?? {};
    const { reason: _reason, ...rest } = base;
    return {
      ready: reasons.length === 0,
      detail: {
        ...(reasons.length > 0 ? { reason: reasons.join('; ') } : {}),
        ...rest,
        workers: answers.map((a) => ({
          id: a.slot.id,
          pid: a.slot.pid,
          ready: a.r?.ready ?? false,
          connections: a.r?.connections ?? 0,
          restarts: a.slot.restarts,
          ...(a.error !== undefined ? { error: a.error } : {}),
        })),
      },
    };
  }

  private async apps(): Promise<AppsDocument & { workers: { id: number; pid: number | undefined; answered: boolean }[] }> {
    const answers = await Promise.all(this.slots.map((s) => this.request<AppsDocument>(s, 'apps').catch(() => undefined)));
    const docs = answers.filter((d): d is AppsDocument => d !== undefined);
    if (docs.length === 0) throw new Error('no worker answered');
    return {
      ...mergeAppsDocuments(docs),
      workers: this.slots.map((s, i) => ({ id: s.id, pid: s.pid, answered: answers[i] !== undefined })),
    };
  }
}

interface Slot {
  id: number;
  worker?: Worker;
  pid?: number | undefined;
  ready: boolean;
  readyAt?: number | undefined;
  info?: ReadyMessage | undefined;
  fatal?: FatalMessage | undefined;
  failures: number;
  restarts: number;
  timer?: NodeJS.Timeout;
  exited?: Promise<number>;
}

/** The error `serve` exits with when a worker could not start (the worker's own message when it sent one). */
function startError(slot: Slot, code: number | null, signal: string | null): Error {
  const f = slot.fatal;
  if (f?.kind === 'config') return new ConfigError(f.message);
  if (f?.kind === 'startup') return new StartupError(f.message);
  if (f) return new Error(f.message);
  return new StartupError(`worker ${slot.id} exited during start (${signal ?? `code ${code}`})`);
}

const SUMMED = ['connections', 'active_connections', 'ops', 'ops_per_second', 'ops_total', 'errors_total', 'refused'] as const;

/**
 * The /apps documents of several workers as one: the first document's apps, with per-app counters
 * summed over the workers, latency p50/p99 the largest worker's, and index state from whichever worker
 * reports it (the one that reconciles).
 */
export function mergeAppsDocuments(docs: readonly AppsDocument[]): AppsDocument {
  const first = docs[0]!;
  const apps: AppStatusEntry[] = first.apps.map((entry) => {
    const merged: AppStatusEntry = { ...entry, latency_ms: { ...entry.latency_ms } };
    for (const other of docs.slice(1)) {
      const e = other.apps.find((a) => a.file === entry.file && a.slug === entry.slug);
      if (!e) continue;
      for (const key of SUMMED) merged[key] += e[key];
      merged.latency_ms = { p50: maxOf(merged.latency_ms.p50, e.latency_ms.p50), p99: maxOf(merged.latency_ms.p99, e.latency_ms.p99) };
      merged.indexes ??= e.indexes;
    }
    merged.ops_per_second = Math.round(merged.ops_per_second * 100) / 100;
    return merged;
  });
  return { ...first, apps };
}

function maxOf(a: number | null, b: number | null): number | null {
  if (a === null) return b;
  if (b === null) return a;
  return Math.max(a, b);
}
