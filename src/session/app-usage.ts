import { performance } from 'node:perf_hooks';
import { AppMeter, UNAUTHENTICATED, type ProxyMetrics } from '../observability/metrics.js';
import { WaitQueue } from '../upstream/wait-queue.js';

/**
 * The one per-app table: for each app label (a slug, or UNAUTHENTICATED) one entry shared by all of
 * its connections, holding both its usage (README "Limits and data access": connections, commands
 * served, refusals, the operations-per-second token bucket, the app's upstream slots) and its meter
 * (src/observability/metrics.ts: what /metrics exports). A connection holds its entry; /metrics and
 * /apps read the same entries. Keyed by slug and kept across manifest reloads, so a changed limit
 * applies to the running counts; pruned once, when the app is gone and its last connection closed.
 */

/** Seconds of history behind ops_per_second in /apps. */
const RATE_WINDOW_SECONDS = 10;

/**
 * A token bucket: `rate` tokens per second, holding at most one second's worth (at least one token),
 * so an app may burst to its limit and then runs at it.
 */
export class TokenBucket {
  private tokens: number;
  private last: number;

  constructor(
    private rate: number,
    now: number,
  ) {
    this.tokens = Math.max(1, rate);
    this.last = now;
  }

  /** Takes a token: 0 when granted, otherwise the milliseconds until one is available. */
  take(now: number): number {
    this.refill(now);
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil(((1 - this.tokens) / this.rate) * 1000));
  }

  get ratePerSecond(): number {
    return this.rate;
  }

  /** A new limit (after a reload): keeps what is left, within the new capacity. */
  setRate(rate: number, now: number): void {
    this.refill(now);
    this.rate = rate;
    this.tokens = Math.min(this.tokens, Math.max(1, rate));
  }

  private refill(now: number): void {
    const elapsed = Math.max(0, now - this.last) / 1000;
    this.last = now;
    this.tokens = Math.min(Math.max(1, this.rate), this.tokens + elapsed * this.rate);
  }
}

/** No command labels: the meter of an entry made outside a table (tests) counts every command as 'unknown'. */
const NO_COMMANDS: ReadonlySet<string> = new Set();

export class AppEntry {
  /** Upstream connections the app's requests hold now (limits.upstream_connections). */
  upstreamInUse = 0;
  /** Requests that waited past upstream.pool.wait_queue_timeout_ms for one of the app's slots. */
  upstreamWaitTimeouts = 0;
  /** Requests whose upstream reply took longer than upstream.request_timeout_ms. */
  upstreamTimeouts = 0;
  /** awaitData getMores whose maxTimeMS was lowered to upstream.max_await_time_ms. */
  awaitCapped = 0;
  /** Commands refused because they would have opened a cursor beyond limits.open_cursors. */
  cursorRefusals = 0;
  private readonly slotWaiters = new WaitQueue<void>();
  /** Connections that have sent an app command: what limits.connections counts. */
  activeConnections = 0;
  /** Commands forwarded upstream for the app since the proxy started. */
  ops = 0;
  /** Commands refused by the app's limits or data_access since the proxy started. */
  refused = 0;
  private bucket: TokenBucket | undefined;
  private readonly slots = new Float64Array(RATE_WINDOW_SECONDS);
  private readonly slotSecond = new Float64Array(RATE_WINDOW_SECONDS).fill(-1);

  constructor(
    readonly slug: string,
    /** The app's meters (mdb_* series under this label). */
    readonly meter: AppMeter = new AppMeter(slug, NO_COMMANDS),
  ) {}

  /**
   * Open connections under this label: for an app, authenticated ones (driver monitoring connections
   * with an appName token included). The meter's count, which mdb_client_connections exports.
   */
  get connections(): number {
    return this.meter.connections;
  }

  /**
   * Admits one command under `limit` operations per second (undefined: no limit). Returns 0, or the
   * milliseconds until the app may send again.
   */
  admit(limit: number | undefined, now = performance.now()): number {
    if (limit === undefined) {
      this.bucket = undefined;
      return 0;
    }
    if (!this.bucket) this.bucket = new TokenBucket(limit, now);
    else if (this.bucket.ratePerSecond !== limit) this.bucket.setRate(limit, now);
    return this.bucket.take(now);
  }

  /** Requests waiting for one of the app's upstream slots. */
  get upstreamWaiting(): number {
    return this.slotWaiters.length;
  }

  /** Takes one of the app's `limit` upstream connection slots if one is free and nobody waits (the common case). */
  tryTakeUpstreamSlot(limit: number): boolean {
    if (this.upstreamInUse >= limit || this.slotWaiters.length > 0) return false;
    this.upstreamInUse++;
    return true;
  }

  /**
   * Waits in line for one of the app's slots (after tryTakeUpstreamSlot said no): settles when one is
   * released to this request (FIFO), or rejects with `timeout()` after `timeoutMS`, or with
   * `abandoned()` when `signal` aborts (the client left).
   */
  waitUpstreamSlot(timeoutMS: number, signal: AbortSignal, timeout: () => Error, abandoned: () => Error): Promise<void> {
    return this.slotWaiters.wait(
      timeoutMS,
      () => {
        this.upstreamWaitTimeouts++;
        return timeout();
      },
      signal,
      abandoned,
    );
  }

  /**
   * Gives a slot back: to the first waiter if there is one (the count stays), else to the app. `limit`
   * is the limit in force now: a lowered limit lets waiters in only as slots drain below it.
   */
  releaseUpstreamSlot(limit: number): void {
    if (this.upstreamInUse <= limit) {
      const waiter = this.slotWaiters.next();
      if (waiter) {
        waiter.resolve();
        return;
      }
    }
    this.upstreamInUse--;
  }

  /** Counts one command served. */
  served(now = performance.now()): void {
    this.ops++;
    const second = Math.floor(now / 1000);
    const i = second % RATE_WINDOW_SECONDS;
    if (this.slotSecond[i] !== second) {
      this.slotSecond[i] = second;
      this.slots[i] = 0;
    }
    this.slots[i]! += 1;
  }

  /** Commands per second over the last complete seconds (up to ten). */
  opsPerSecond(now = performance.now()): number {
    const current = Math.floor(now / 1000);
    let sum = 0;
    for (let i = 0; i < RATE_WINDOW_SECONDS; i++) {
      const s = this.slotSecond[i]!;
      if (s < current && s >= current - RATE_WINDOW_SECONDS) sum += this.slots[i]!;
    }
    return Math.round((sum / RATE_WINDOW_SECONDS) * 100) / 100;
  }
}

/** The entries by slug, and the one of connections not (yet) authenticated. */
export class AppTable {
  private readonly apps = new Map<string, AppEntry>();
  readonly unauthenticated: AppEntry;

  /** The scrape of `metrics` reads this table's meters. */
  constructor(private readonly metrics: ProxyMetrics) {
    this.unauthenticated = new AppEntry(UNAUTHENTICATED, metrics.meter(UNAUTHENTICATED));
    metrics.readMeters(() => this.meters());
  }

  /** The entry of a registered app, created on first use. */
  get(slug: string): AppEntry {
    let entry = this.apps.get(slug);
    if (!entry) {
      entry = new AppEntry(slug, this.metrics.meter(slug));
      this.apps.set(slug, entry);
    }
    return entry;
  }

  peek(slug: string): AppEntry | undefined {
    return this.apps.get(slug);
  }

  /** The apps' entries (not the unauthenticated one). */
  entries(): IterableIterator<AppEntry> {
    return this.apps.values();
  }

  /** Every label's meter, the unauthenticated one first. */
  *meters(): IterableIterator<AppMeter> {
    yield this.unauthenticated.meter;
    for (const entry of this.apps.values()) yield entry.meter;
  }

  /** Forgets apps no longer registered once their last connection is gone (their series disappear). */
  prune(isRegistered: (slug: string) => boolean): void {
    for (const [slug, entry] of this.apps) if (!isRegistered(slug) && entry.connections === 0 && entry.activeConnections === 0) this.apps.delete(slug);
  }
}
