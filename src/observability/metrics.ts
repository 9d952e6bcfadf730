import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { sendJson, type Router } from './router.js';

/**
 * Prometheus metrics, one Registry per runtime (tests run several proxies in one
 * process, so nothing goes to prom-client's global registry).
 *
 * The request path never touches prom-client: a labelled prom-client child costs 0.5-1.5 µs per
 * call (it hashes its label values every time), several times per request. Instead each (app,
 * command) pair has a plain cell (counters, and histogram buckets in a Float64Array): a connection
 * holds its app's meter, finds the command's cell with one Map lookup by the canonical name, and bumps
 * it with a few additions (AppMeter.request). The prom-client metrics read the cells when /metrics is
 * scraped. Everything else (connections, pools, cursors, manifests, indexes) is sampled at scrape time
 * from the objects that already hold it. With the runtime setting `metrics: false` the sessions skip
 * the cells altogether (ClientConnection checks `enabled` once per connection).
 *
 * With `serve --workers N` the primary's /metrics is prom-client's AggregatorRegistry over the workers'
 * registries: counters, histograms and most gauges are summed; what describes the shared configuration
 * (manifest reloads and errors, mdb_apps) takes the largest worker's value, mdb_upstream_up the smallest
 * (0 when any worker cannot reach the upstream); the index gauges come from the one worker that
 * reconciles.
 *
 * Label values are bounded: `command` is a name from the command table (anything else is 'unknown'),
 * `app` a registered slug or one of the fixed labels below, `reason` and `outcome` fixed enums. The
 * command names and the pool's wait buckets are given by the composition root (src/runtime.ts): this
 * module imports neither the policy nor the upstream (docs/architecture.md).
 */

/** The app label of connections and requests not (yet) authenticated as an app (slugs start with a letter). */
export const UNAUTHENTICATED = '_unauthenticated';
/** The command label of a command name the command table does not know. */
export const UNKNOWN_COMMAND = 'unknown';

/** How a request ended (the `outcome` label). */
export const Outcome = {
  /** Answered ok: 1 (by the proxy or the upstream) without write errors. */
  OK: 0,
  /** Ran (upstream, or a local command such as saslStart) and answered an error or write errors. */
  ERROR: 1,
  /** Refused by the proxy before anything was sent upstream (see REJECT_REASONS). */
  REJECTED: 2,
  /** The upstream could not be reached or failed mid-request. */
  FAILED: 3,
} as const;
export type OutcomeCode = (typeof Outcome)[keyof typeof Outcome];
export const OUTCOME_LABELS = ['ok', 'error', 'rejected', 'failed'] as const;

/** Why the proxy refused a command (mdb_rejected_commands_total{reason}). */
export const REJECT_REASONS = [
  /** Not in the command table (CommandNotFound 59). */
  'unknown_command',
  /** In the table but refused: server-wide and administrative commands (Unauthorized 13). */
  'server_wide',
  /** Server-side JavaScript: mapReduce, $where, $function, $accumulator (224). */
  'server_js',
  /** Sent before authenticating, or with an expired token. */
  'unauthenticated',
  /** Malformed or unsupported requests (no $db, invalid BSON, OP_QUERY commands, admin-only commands elsewhere). */
  'invalid_request',
  /** The connection's app was removed (or now requires authentication). */
  'app_removed',
  /** limits.connections. */
  'connection_limit',
  /** limits.operations_per_second. */
  'rate_limit',
  /** The scoping policy: namespaces outside the app, unknown arguments or stages, tag writes. */
  'policy',
  /** The token's roles do not allow it. */
  'rbac',
  /** data_access (read_only, collections). */
  'data_access',
  /** limits.max_document_bytes. */
  'document_size',
  /** limits.max_documents_per_collection. */
  'document_count',
  /** A cursor id the app does not hold (CursorNotFound 43). */
  'cursor_not_found',
  /** limits.upstream_connections: the request waited too long for one of its app's upstream connections. */
  'upstream_connections',
  /** limits.open_cursors: the command would have left one cursor too many open. */
  'open_cursors',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];
const REJECT_INDEX: ReadonlyMap<RejectReason, number> = new Map(REJECT_REASONS.map((r, i) => [r, i]));

/** Why an authentication failed (mdb_authentications_total{reason}); 'ok' for successes. */
export const AUTH_REASONS = [
  'ok',
  'unsupported_mechanism',
  'bad_request',
  'malformed_token',
  'unknown_app',
  'app_unavailable',
  'app_mismatch',
  'expired',
  'bad_signature',
  'invalid_claims',
  'invalid_token',
] as const;
export type AuthReason = (typeof AUTH_REASONS)[number];
/** The mechanism label: how the client presented its identity (anything else a client names is 'other'). */
export const AUTH_MECHANISMS = ['appName', 'PLAIN', 'MONGODB-OIDC', 'dev', 'other'] as const;
export type AuthMechanism = (typeof AUTH_MECHANISMS)[number];

/** Seconds: total time at the proxy and upstream time. */
export const LATENCY_BUCKETS: readonly number[] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Seconds: the proxy's own time (total - upstream), finer at the low end. */
export const OVERHEAD_BUCKETS: readonly number[] = [0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1];

/** A histogram as plain numbers: per-bucket (not cumulative) counts, the last one past every bound. */
export class HistogramCell {
  readonly counts: Float64Array;
  sum = 0;
  count = 0;

  constructor(readonly bounds: readonly number[]) {
    this.counts = new Float64Array(bounds.length + 1);
  }

  observe(value: number): void {
    const bounds = this.bounds;
    let i = 0;
    while (i < bounds.length && value > bounds[i]!) i++;
    this.counts[i]! += 1;
    this.sum += value;
    this.count++;
  }
}

/** What one (app, command) pair has done. */
export class CommandCell {
  /** Requests by outcome (indexed by Outcome). */
  readonly outcomes = new Float64Array(OUTCOME_LABELS.length);
  /** Total time at the proxy, every request. */
  readonly total = new HistogramCell(LATENCY_BUCKETS);
  /** Upstream time (request sent → reply read), requests that got an upstream reply. */
  readonly upstream = new HistogramCell(LATENCY_BUCKETS);
  /** total - upstream, for the same requests as `upstream`. */
  readonly overhead = new HistogramCell(OVERHEAD_BUCKETS);

  constructor(readonly command: string) {}
}

/** Seconds per slot of the recent-latency window, and slots kept: p50/p99 cover the last 50-60 s. */
const RECENT_SLOT_MS = 10_000;
const RECENT_SLOTS = 6;
/** Log-scale buckets: 8 per doubling (a reported quantile is within ±4.5%) from 1 µs to about 18 minutes. */
const RECENT_PER_OCTAVE = 8;
const RECENT_MIN_MS = 0.001;
const RECENT_BUCKETS = RECENT_PER_OCTAVE * 30;

/**
 * Request latencies of the last minute in a few time slots of log-scale buckets: recording is one
 * logarithm and one increment; quantiles merge the slots (for /apps and the status page).
 */
export class RecentLatency {
  private readonly counts = new Uint32Array(RECENT_SLOTS * RECENT_BUCKETS);
  private readonly slotOf = new Float64Array(RECENT_SLOTS).fill(-1);

  /** Records `ms` at monotonic time `now` (performance.now()). */
  record(ms: number, now: number): void {
    const slot = Math.floor(now / RECENT_SLOT_MS);
    const i = slot % RECENT_SLOTS;
    if (this.slotOf[i] !== slot) {
      this.slotOf[i] = slot;
      this.counts.fill(0, i * RECENT_BUCKETS, (i + 1) * RECENT_BUCKETS);
    }
    const b = ms <= RECENT_MIN_MS ? 0 : Math.min(RECENT_BUCKETS - 1, Math.ceil(Math.log2(ms / RECENT_MIN_MS) * RECENT_PER_OCTAVE));
    this.counts[i * RECENT_BUCKETS + b]! += 1;
  }

  /** The quantiles `qs` (0..1) of the window ending at `now`, in ms (3 decimals); null without samples. */
  quantiles(qs: readonly number[], now: number): (number | null)[] {
    const current = Math.floor(now / RECENT_SLOT_MS);
    const merged = new Float64Array(RECENT_BUCKETS);
    let total = 0;
    for (let i = 0; i < RECENT_SLOTS; i++) {
      const slot = this.slotOf[i]!;
      if (slot < 0 || slot > current || slot <= current - RECENT_SLOTS) continue;
      for (let b = 0; b < RECENT_BUCKETS; b++) {
        const n = this.counts[i * RECENT_BUCKETS + b]!;
        merged[b]! += n;
        total += n;
      }
    }
    return qs.map((q) => {
      if (total === 0) return null;
      const rank = Math.max(1, Math.ceil(q * total));
      let seen = 0;
      for (let b = 0; b < RECENT_BUCKETS; b++) {
        seen += merged[b]!;
        if (seen >= rank) {
          // The bucket's geometric middle: bucket b holds (MIN·2^((b-1)/k), MIN·2^(b/k)].
          const ms = b === 0 ? RECENT_MIN_MS : RECENT_MIN_MS * 2 ** ((b - 0.5) / RECENT_PER_OCTAVE);
          return Math.round(ms * 1000) / 1000;
        }
      }
      return null;
    });
  }

  /** How many requests the window holds. */
  count(now: number): number {
    const current = Math.floor(now / RECENT_SLOT_MS);
    let total = 0;
    for (let i = 0; i < RECENT_SLOTS; i++) {
      const slot = this.slotOf[i]!;
      if (slot < 0 || slot > current || slot <= current - RECENT_SLOTS) continue;
      for (let b = 0; b < RECENT_BUCKETS; b++) total += this.counts[i * RECENT_BUCKETS + b]!;
    }
    return total;
  }
}

/**
 * Everything counted for one app label (a registered slug, or UNAUTHENTICATED). It is a member of the
 * app's one entry in the session's per-app table (src/session/app-usage.ts), which a connection holds
 * with the cells of the commands it ran, so a request costs no lookups by string.
 */
export class AppMeter {
  /** Open client connections counted under this label (always kept: connection events are rare). */
  connections = 0;
  bytesReceived = 0;
  bytesSent = 0;
  /** Requests of any outcome (the sum of mdb_operations_total for the app). */
  ops = 0;
  /** Requests whose outcome is not ok (error, rejected, failed). */
  errors = 0;
  /** Rejected requests by reason (indexed like REJECT_REASONS). */
  readonly rejected = new Float64Array(REJECT_REASONS.length);
  readonly recent = new RecentLatency();
  private readonly cells = new Map<string, CommandCell>();

  /** `commands`: the command labels (the command table's canonical names); any other name counts as 'unknown'. */
  constructor(
    readonly app: string,
    private readonly commands: ReadonlySet<string>,
  ) {}

  /** The cell of `command` (a canonical name from the command table; any other name shares 'unknown'). */
  cell(command: string): CommandCell {
    let cell = this.cells.get(command);
    if (!cell) {
      const label = this.commands.has(command) ? command : UNKNOWN_COMMAND;
      cell = this.cells.get(label);
      if (!cell) {
        cell = new CommandCell(label);
        this.cells.set(label, cell);
      }
    }
    return cell;
  }

  /** Every command cell used so far. */
  commandCells(): IterableIterator<CommandCell> {
    return this.cells.values();
  }

  /**
   * One request done: `totalMS` at the proxy, `upstreamMS` waiting for the upstream (< 0: it did not
   * reach the upstream), `now` the monotonic end time (performance.now()).
   */
  request(cell: CommandCell, outcome: OutcomeCode, totalMS: number, upstreamMS: number, now: number): void {
    cell.outcomes[outcome]! += 1;
    cell.total.observe(totalMS / 1000);
    if (upstreamMS >= 0) {
      cell.upstream.observe(upstreamMS / 1000);
      cell.overhead.observe(Math.max(0, totalMS - upstreamMS) / 1000);
    }
    this.ops++;
    if (outcome !== Outcome.OK) this.errors++;
    this.recent.record(totalMS, now);
  }

  reject(reason: RejectReason): void {
    this.rejected[REJECT_INDEX.get(reason)!]! += 1;
  }
}

/** The upstream connection pool as the metrics read it (src/upstream/pool.ts). */
export interface PoolSample {
  address: string;
  size: number;
  inUse: number;
  waiting: number;
  /** Acquisitions by wait time: per-bucket counts over `waitBounds` (seconds), sum and count. */
  waitBounds: readonly number[];
  waitCounts: Float64Array;
  waitSum: number;
  waitCount: number;
  /** Acquisitions that failed (wait queue timeout, or a connection that could not be opened). */
  waitFailures: number;
}

/** One app's share of the upstream, as the metrics read it (src/session/app-usage.ts keeps it). */
export interface UpstreamShareSample {
  app: string;
  /** Upstream connections its requests hold now, and requests waiting for one (limits.upstream_connections). */
  held: number;
  waiting: number;
  /** Requests whose reply took longer than upstream.request_timeout_ms. */
  timeouts: number;
  /** awaitData getMores whose maxTimeMS was lowered to upstream.max_await_time_ms. */
  awaitCapped: number;
}

/** Index reconciliation state of one app, as the metrics read it (src/indexes). */
export interface IndexSample {
  app: string;
  phase: string;
  /** Managed indexes by action (ok, create, drift, prune, unsupported, error). */
  actions: Readonly<Record<string, number>>;
}

export const INDEX_ACTIONS = ['ok', 'create', 'drift', 'prune', 'unsupported', 'error'] as const;
export const INDEX_PHASES = ['idle', 'reconciling', 'done', 'failed', 'waiting-for-lease'] as const;

/** What the scrape samples from the runtime (everything not counted on the request path). */
export interface MetricsSources {
  pools(): Iterable<PoolSample>;
  /** Open cursors by owning app. */
  cursors(): Iterable<[app: string, count: number]>;
  /** Each app's share of the upstream. */
  upstreamShares(): Iterable<UpstreamShareSample>;
  indexes(): Iterable<IndexSample>;
  /** Manifest files whose latest version is not serving. */
  manifestErrors(): number;
  /** Registered apps by status (available, unavailable). */
  apps(): Iterable<[status: string, count: number]>;
  /** Whether the upstream answers a ping (the /readyz probe: cached, bounded by its timeout). */
  upstreamUp(): Promise<boolean>;
}

export interface MetricsOptions {
  /** Request-path instrumentation on (runtime setting `metrics`); when false only scrape-time samples remain. */
  enabled: boolean;
  /**
   * The `command` label values: the command table's canonical names (aliases resolve to them before
   * they reach a cell). Any other name is counted as 'unknown', so the label stays bounded.
   */
  commands: Iterable<string>;
  /** The bounds (seconds) of mdb_upstream_pool_wait_seconds: the ones the pools count their waits in. */
  poolWaitBounds: readonly number[];
  /** Also export prom-client's process metrics (CPU, memory, event loop). Default true. */
  processMetrics?: boolean;
}

/**
 * The runtime's metrics: the per-app meters the sessions bump, the events the control plane reports
 * (authentications, manifest reloads), and the Registry /metrics serves.
 */
export class ProxyMetrics {
  readonly registry = new Registry();
  /** Request-path instrumentation on: sessions check this once per connection. */
  readonly enabled: boolean;
  private meterSource: () => Iterable<AppMeter> = () => [];
  private readonly authCounts = new Map<string, { result: string; mechanism: AuthMechanism; reason: AuthReason; n: number }>();
  private readonly reloads = new Map<string, number>();
  private refusedManifests = 0;
  private lastReload: number | undefined;
  private sources: MetricsSources | undefined;
  private readonly commands: ReadonlySet<string>;

  constructor(options: MetricsOptions) {
    this.enabled = options.enabled;
    this.commands = new Set(options.commands);
    if (options.processMetrics ?? true) collectDefaultMetrics({ register: this.registry });
    this.define(options.poolWaitBounds);
  }

  /** Where scrape-time samples come from (set once the runtime has built its parts). */
  setSources(sources: MetricsSources): void {
    this.sources = sources;
  }

  /**
   * A new meter for the app label `app` (a slug, or UNAUTHENTICATED), counting commands under this
   * runtime's labels. The meters live in the session's one per-app table (src/session/app-usage.ts),
   * which hands them to the scrape with `readMeters`.
   */
  meter(app: string): AppMeter {
    return new AppMeter(app, this.commands);
  }

  /** Where the scrape finds the per-app meters (the session's app table; none until it is set). */
  readMeters(meters: () => Iterable<AppMeter>): void {
    this.meterSource = meters;
  }

  /** One authentication attempt (success: reason 'ok'). */
  authentication(success: boolean, mechanism: string, reason: AuthReason): void {
    const mech: AuthMechanism = (AUTH_MECHANISMS as readonly string[]).includes(mechanism) ? (mechanism as AuthMechanism) : 'other';
    const result = success ? 'success' : 'failure';
    const key = `${result}\0${mech}\0${reason}`;
    const entry = this.authCounts.get(key);
    if (entry) entry.n++;
    else this.authCounts.set(key, { result, mechanism: mech, reason, n: 1 });
  }

  /** A manifest reload was applied (`refused`: manifest versions it refused). */
  manifestReload(cause: string, refused: number, at = Date.now()): void {
    this.reloads.set(cause, (this.reloads.get(cause) ?? 0) + 1);
    this.refusedManifests += refused;
    this.lastReload = at;
  }

  /** The Prometheus text of everything. */
  async scrape(): Promise<{ contentType: string; text: string }> {
    return { contentType: this.registry.contentType, text: await this.registry.metrics() };
  }

  private define(poolWaitBounds: readonly number[]): void {
    const registers = [this.registry];
    const meters = () => this.meterSource();
    const enabled = this.enabled;

    new Counter({
      name: 'mdb_operations_total',
      help: 'Commands handled, by app, command and outcome (ok, error: the command answered an error, rejected: refused by the proxy, failed: upstream unreachable)',
      labelNames: ['app', 'command', 'outcome'],
      registers,
      collect() {
        this.reset();
        if (!enabled) return;
        for (const m of meters()) {
          for (const c of m.commandCells()) {
            for (let o = 0; o < OUTCOME_LABELS.length; o++) {
              if (c.outcomes[o]! > 0) this.inc({ app: m.app, command: c.command, outcome: OUTCOME_LABELS[o]! }, c.outcomes[o]!);
            }
          }
        }
      },
    });
    new Counter({
      name: 'mdb_rejected_commands_total',
      help: `Commands refused by the proxy, by app and reason (${REJECT_REASONS.join(', ')})`,
      labelNames: ['app', 'reason'],
      registers,
      collect() {
        this.reset();
        if (!enabled) return;
        for (const m of meters()) {
          for (let r = 0; r < REJECT_REASONS.length; r++) {
            if (m.rejected[r]! > 0) this.inc({ app: m.app, reason: REJECT_REASONS[r]! }, m.rejected[r]!);
          }
        }
      },
    });
    cellHistogram(
      registers,
      'mdb_command_duration_seconds',
      'Total time of a command at the proxy (message read to reply written), by app and command',
      APP_COMMAND,
      LATENCY_BUCKETS,
      (emit) => {
        if (!enabled) return;
        for (const m of meters()) for (const c of m.commandCells()) emit({ app: m.app, command: c.command }, c.total);
      },
    );
    cellHistogram(
      registers,
      'mdb_upstream_duration_seconds',
      'Time waiting for the upstream (request sent to reply read), by app and command, for commands that reached the upstream',
      APP_COMMAND,
      LATENCY_BUCKETS,
      (emit) => {
        if (!enabled) return;
        for (const m of meters()) for (const c of m.commandCells()) emit({ app: m.app, command: c.command }, c.upstream);
      },
    );
    cellHistogram(
      registers,
      'mdb_proxy_overhead_seconds',
      "The proxy's own time (total minus upstream), by app and command, for commands that reached the upstream",
      APP_COMMAND,
      OVERHEAD_BUCKETS,
      (emit) => {
        if (!enabled) return;
        for (const m of meters()) for (const c of m.commandCells()) emit({ app: m.app, command: c.command }, c.overhead);
      },
    );
    new Counter({
      name: 'mdb_bytes_received_total',
      help: 'Bytes of whole messages received from clients, by app',
      labelNames: ['app'],
      registers,
      collect() {
        this.reset();
        if (!enabled) return;
        for (const m of meters()) if (m.bytesReceived > 0) this.inc({ app: m.app }, m.bytesReceived);
      },
    });
    new Counter({
      name: 'mdb_bytes_sent_total',
      help: 'Bytes of replies sent to clients, by app',
      labelNames: ['app'],
      registers,
      collect() {
        this.reset();
        if (!enabled) return;
        for (const m of meters()) if (m.bytesSent > 0) this.inc({ app: m.app }, m.bytesSent);
      },
    });
    new Gauge({
      name: 'mdb_client_connections',
      help: `Open client connections, by app (${UNAUTHENTICATED}: not authenticated yet)`,
      labelNames: ['app'],
      registers,
      collect() {
        this.reset();
        for (const m of meters()) this.set({ app: m.app }, m.connections);
      },
    });
    const authCounts = this.authCounts;
    new Counter({
      name: 'mdb_authentications_total',
      help: `Authentication attempts, by result (success, failure), mechanism (${AUTH_MECHANISMS.join(', ')}) and reason (${AUTH_REASONS.join(', ')})`,
      labelNames: ['result', 'mechanism', 'reason'],
      registers,
      collect() {
        this.reset();
        for (const e of authCounts.values()) this.inc({ result: e.result, mechanism: e.mechanism, reason: e.reason }, e.n);
      },
    });
    const sources = () => this.sources;
    new Gauge({
      name: 'mdb_open_cursors',
      help: 'Upstream cursors the proxy tracks, by the app that opened them',
      labelNames: ['app'],
      registers,
      collect() {
        this.reset();
        for (const [app, n] of sources()?.cursors() ?? []) this.set({ app }, n);
      },
    });
    const shareMetric = (kind: typeof Gauge | typeof Counter, name: string, help: string, pick: (s: UpstreamShareSample) => number) =>
      new kind({
        name,
        help,
        labelNames: ['app'],
        registers,
        collect() {
          this.reset();
          for (const s of sources()?.upstreamShares() ?? []) {
            const n = pick(s);
            if (this instanceof Gauge) this.set({ app: s.app }, n);
            else if (n > 0) this.inc({ app: s.app }, n);
          }
        },
      });
    shareMetric(Gauge, 'mdb_upstream_connections_held', "Upstream connections held by the app's requests (limits.upstream_connections), by app", (s) => s.held);
    shareMetric(Gauge, 'mdb_upstream_connection_waiters', "Requests waiting for one of the app's upstream connections, by app", (s) => s.waiting);
    shareMetric(Counter, 'mdb_upstream_timeouts_total', 'Requests whose upstream reply took longer than upstream.request_timeout_ms (answered NetworkTimeout), by app', (s) => s.timeouts);
    shareMetric(Counter, 'mdb_await_time_capped_total', 'awaitData getMores whose maxTimeMS was lowered to upstream.max_await_time_ms, by app', (s) => s.awaitCapped);
    const poolGauge = (name: string, help: string, pick: (p: PoolSample) => number) =>
      new Gauge({
        name,
        help,
        labelNames: ['address'],
        registers,
        collect() {
          this.reset();
          for (const p of sources()?.pools() ?? []) this.set({ address: p.address }, pick(p));
        },
      });
    poolGauge('mdb_upstream_pool_size', 'Raw upstream connections open or opening, by upstream server', (p) => p.size);
    poolGauge('mdb_upstream_pool_in_use', 'Raw upstream connections lent to a request, by upstream server', (p) => p.inUse);
    poolGauge('mdb_upstream_pool_waiters', 'Requests waiting for a free upstream connection, by upstream server', (p) => p.waiting);
    new Counter({
      name: 'mdb_upstream_pool_acquire_failures_total',
      help: 'Requests that got no upstream connection (the wait queue timed out, or connecting failed), by upstream server',
      labelNames: ['address'],
      registers,
      collect() {
        this.reset();
        for (const p of sources()?.pools() ?? []) this.inc({ address: p.address }, p.waitFailures);
      },
    });
    cellHistogram(
      registers,
      'mdb_upstream_pool_wait_seconds',
      'Time to get an upstream connection from the pool (0: an idle one was ready), by upstream server',
      ['address'],
      poolWaitBounds,
      (emit) => {
        for (const p of sources()?.pools() ?? []) {
          emit({ address: p.address }, { bounds: p.waitBounds, counts: p.waitCounts, sum: p.waitSum, count: p.waitCount });
        }
      },
    );
    const reloads = this.reloads;
    new Counter({
      name: 'mdb_manifest_reloads_total',
      aggregator: 'max',
      help: 'Manifest reloads applied, by cause (start, watch, rescan, manual)',
      labelNames: ['cause'],
      registers,
      collect() {
        this.reset();
        for (const [cause, n] of reloads) this.inc({ cause }, n);
      },
    });
    const refused = () => this.refusedManifests;
    new Counter({
      name: 'mdb_manifest_refused_total',
      aggregator: 'max',
      help: 'Manifest versions refused (invalid, or a slug conflict); the last good version stays in force',
      registers,
      collect() {
        this.reset();
        this.inc(refused());
      },
    });
    new Gauge({
      name: 'mdb_manifest_errors',
      aggregator: 'max',
      help: 'Manifest files whose latest version is not serving',
      registers,
      collect() {
        this.set(sources()?.manifestErrors() ?? 0);
      },
    });
    const lastReload = () => this.lastReload;
    new Gauge({
      name: 'mdb_manifest_last_reload_timestamp_seconds',
      aggregator: 'max',
      help: 'When the manifests were last (re)loaded (Unix time)',
      registers,
      collect() {
        const at = lastReload();
        this.reset();
        if (at !== undefined) this.set(at / 1000);
      },
    });
    new Gauge({
      name: 'mdb_apps',
      aggregator: 'max',
      help: 'Registered apps, by status (available; unavailable: a key it needs is missing)',
      labelNames: ['status'],
      registers,
      collect() {
        this.reset();
        for (const [status, n] of sources()?.apps() ?? []) this.set({ status }, n);
      },
    });
    new Gauge({
      name: 'mdb_indexes',
      help: `Managed indexes by app and reconciliation action (${INDEX_ACTIONS.join(', ')})`,
      labelNames: ['app', 'action'],
      registers,
      collect() {
        this.reset();
        for (const s of sources()?.indexes() ?? []) for (const action of INDEX_ACTIONS) this.set({ app: s.app, action }, s.actions[action] ?? 0);
      },
    });
    new Gauge({
      name: 'mdb_index_reconciliation_phase',
      help: `Index reconciliation phase by app: 1 for the current phase (${INDEX_PHASES.join(', ')})`,
      labelNames: ['app', 'phase'],
      registers,
      collect() {
        this.reset();
        for (const s of sources()?.indexes() ?? []) for (const phase of INDEX_PHASES) this.set({ app: s.app, phase }, s.phase === phase ? 1 : 0);
      },
    });
    new Gauge({
      name: 'mdb_upstream_up',
      aggregator: 'min',
      help: 'Whether the upstream answers a ping in time (the /readyz probe, reused for a second)',
      registers,
      async collect() {
        const source = sources();
        if (source) this.set((await source.upstreamUp()) ? 1 : 0);
      },
    });
  }
}

/** GET /metrics: the Prometheus text of `scrape` (one runtime's registry, or the workers' summed). */
export function registerMetricsRoute(router: Router, scrape: () => Promise<{ contentType: string; text: string }>): void {
  router.get('/metrics', async (req, res) => {
    let scraped: { contentType: string; text: string };
    try {
      scraped = await scrape();
    } catch (err) {
      return sendJson(res, 500, { error: `cannot collect the metrics: ${(err as Error).message}` });
    }
    res.writeHead(200, { 'content-type': scraped.contentType, 'content-length': Buffer.byteLength(scraped.text) });
    res.end(req.method === 'HEAD' ? undefined : scraped.text);
  });
}

const APP_COMMAND: readonly string[] = ['app', 'command'];

type CellLike = Pick<HistogramCell, 'bounds' | 'counts' | 'sum' | 'count'>;
type Emit = (labels: Record<string, string>, cell: CellLike) => void;

/**
 * A prom-client Histogram whose values are read from cells at scrape time instead of observed through
 * prom-client (whose per-call label hashing is too slow for the request path).
 */
class CellHistogram extends Histogram<string> {
  constructor(
    registers: Registry[],
    private readonly metricName: string,
    private readonly helpText: string,
    labelNames: readonly string[],
    buckets: readonly number[],
    private readonly read: (emit: Emit) => void,
  ) {
    super({ name: metricName, help: helpText, labelNames: [...labelNames], buckets: [...buckets], registers });
  }

  /**
   * What the Registry prints: prom-client's Registry (and Histogram.get) call this method of a
   * histogram for its samples; the values use prom-client's own shape (the bucket's `le` in `labels`,
   * the series' labels in `sharedLabels`).
   */
  getForPromString(): Promise<{ name: string; help: string; type: string; aggregator: string; values: CellSample[] }> {
    return Promise.resolve({ name: this.metricName, help: this.helpText, type: 'histogram', aggregator: 'sum', values: this.samples() });
  }

  private samples(): CellSample[] {
    const out: CellSample[] = [];
    this.read((labels, cell) => {
      if (cell.count === 0) return;
      const bucket = `${this.metricName}_bucket`;
      let cumulative = 0;
      for (let i = 0; i < cell.bounds.length; i++) {
        cumulative += cell.counts[i]!;
        out.push({ labels: { le: cell.bounds[i]! }, sharedLabels: labels, value: cumulative, metricName: bucket });
      }
      out.push({ labels: { le: '+Inf' }, sharedLabels: labels, value: cell.count, metricName: bucket });
      out.push({ labels: {}, sharedLabels: labels, value: cell.sum, metricName: `${this.metricName}_sum` });
      out.push({ labels: {}, sharedLabels: labels, value: cell.count, metricName: `${this.metricName}_count` });
    });
    return out;
  }
}

interface CellSample {
  labels: Record<string, string | number>;
  sharedLabels: Record<string, string>;
  value: number;
  metricName: string;
}

function cellHistogram(
  registers: Registry[],
  name: string,
  help: string,
  labelNames: readonly string[],
  buckets: readonly number[],
  read: (emit: Emit) => void,
): CellHistogram {
  return new CellHistogram(registers, name, help, labelNames, buckets, read);
}
