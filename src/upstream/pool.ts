import { performance } from 'node:perf_hooks';
import { UpstreamConnection, type UpstreamConnectOptions } from './connection.js';
import { UpstreamError } from './errors.js';
import { WaitQueue } from './wait-queue.js';

/** Bucket bounds (seconds) of the pool's wait-time counts; 0 holds acquisitions served by an idle connection. */
export const POOL_WAIT_BOUNDS: readonly number[] = [0, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30];

/** How long acquisitions waited, as plain counts (read by the metrics at scrape time). */
export class PoolWaitStats {
  /** Per-bucket counts over POOL_WAIT_BOUNDS; the last one is past every bound. */
  readonly counts = new Float64Array(POOL_WAIT_BOUNDS.length + 1);
  /** Seconds waited in total, and acquisitions (successful ones). */
  sum = 0;
  count = 0;
  /** Acquisitions that failed: the wait queue timed out, or a new connection could not be opened. */
  failures = 0;

  /** An acquisition that found an idle connection. */
  immediate(): void {
    this.counts[0]! += 1;
    this.count++;
  }

  observe(seconds: number): void {
    let i = 0;
    while (i < POOL_WAIT_BOUNDS.length && seconds > POOL_WAIT_BOUNDS[i]!) i++;
    this.counts[i]! += 1;
    this.sum += seconds;
    this.count++;
  }
}

export interface PoolOptions {
  maxSize: number;
  /** Idle connections older than this are closed. */
  maxIdleTimeMS: number;
  /** How long a request waits for a free connection before the client is failed. */
  waitQueueTimeoutMS: number;
}

/** acquire() gave up because its signal aborted (the request's client is gone): not a pool failure. */
export class AcquireAbandonedError extends Error {
  constructor(address: string) {
    super(`gave up waiting for a connection to ${address}: the request was abandoned`);
    this.name = 'AcquireAbandonedError';
  }
}

/**
 * Raw connections to one upstream server. A connection is lent to one request at a time; requests
 * beyond `maxSize` wait in FIFO order. Connections that fail are discarded, never returned.
 */
export class ConnectionPool {
  private readonly idle: UpstreamConnection[] = [];
  private readonly waiters = new WaitQueue<UpstreamConnection>();
  private total = 0;
  private pendingConnects = 0;
  private closed = false;
  private readonly sweeper: NodeJS.Timeout;
  /** Wait times of acquire() (metrics). */
  readonly waits = new PoolWaitStats();

  constructor(
    readonly address: string,
    private readonly connectOptions: UpstreamConnectOptions,
    private readonly options: PoolOptions,
  ) {
    this.sweeper = setInterval(() => this.sweepIdle(), Math.max(1000, Math.min(options.maxIdleTimeMS, 30_000)));
    this.sweeper.unref();
  }

  get size(): number {
    return this.total;
  }
  get inUse(): number {
    return this.total - this.idle.length - this.pendingConnects;
  }
  get waiting(): number {
    return this.waiters.length;
  }

  /** An idle connection now, or undefined (then acquire() opens one or waits). Synchronous: no promise per request. */
  tryAcquire(): UpstreamConnection | undefined {
    if (this.closed) return undefined;
    while (this.idle.length > 0) {
      const conn = this.idle.pop()!;
      if (!conn.isClosed) {
        this.waits.immediate();
        return conn;
      }
      this.total--;
    }
    return undefined;
  }

  /**
   * A connection: an idle one, a new one (below maxSize), or the next one released (FIFO wait queue,
   * up to waitQueueTimeoutMS). When `signal` aborts while waiting in the queue, the request leaves the
   * queue (AcquireAbandonedError) and takes no connection: a request whose client closed must not hold
   * up those behind it, nor be sent later.
   */
  async acquire(signal?: AbortSignal): Promise<UpstreamConnection> {
    if (this.closed) throw new UpstreamError(`pool for ${this.address} is closed`);
    const now = this.tryAcquire();
    if (now) return now;
    if (signal?.aborted) throw new AcquireAbandonedError(this.address);
    // No idle connection: the time to open one, or in the wait queue, is what the request waited.
    const start = performance.now();
    try {
      const conn = await (this.total < this.options.maxSize ? this.open() : this.enqueue(signal));
      this.waits.observe((performance.now() - start) / 1000);
      return conn;
    } catch (err) {
      if (!(err instanceof AcquireAbandonedError)) this.waits.failures++;
      throw err;
    }
  }

  private enqueue(signal: AbortSignal | undefined): Promise<UpstreamConnection> {
    const timeoutMS = this.options.waitQueueTimeoutMS;
    return this.waiters.wait(
      timeoutMS,
      () => new UpstreamError(`timed out after ${timeoutMS} ms waiting for a connection to ${this.address}`),
      signal,
      () => new AcquireAbandonedError(this.address),
    );
  }

  /** Returns a healthy connection after its request completed. */
  release(conn: UpstreamConnection): void {
    if (conn.isClosed || this.closed) {
      this.discard(conn);
      return;
    }
    const waiter = this.waiters.next();
    if (waiter) {
      waiter.resolve(conn);
      return;
    }
    this.idle.push(conn);
  }

  /** Drops a connection that failed or whose stream state is unknown. */
  discard(conn: UpstreamConnection): void {
    conn.destroy();
    this.total--;
    this.serveWaiter();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.sweeper);
    this.waiters.rejectAll(new UpstreamError(`pool for ${this.address} is closed`));
    for (const conn of this.idle.splice(0)) {
      conn.destroy();
      this.total--;
    }
  }

  private async open(): Promise<UpstreamConnection> {
    this.total++;
    this.pendingConnects++;
    try {
      return await UpstreamConnection.connect(this.address, this.connectOptions);
    } catch (err) {
      this.total--;
      this.serveWaiter();
      throw err;
    } finally {
      this.pendingConnects--;
    }
  }

  /** A slot freed up: open a connection for the first waiter, if any. */
  private serveWaiter(): void {
    if (this.closed || this.waiters.length === 0 || this.total >= this.options.maxSize) return;
    const waiter = this.waiters.next()!;
    this.open().then(waiter.resolve, waiter.reject);
  }

  private sweepIdle(): void {
    const cutoff = Date.now() - this.options.maxIdleTimeMS;
    for (let i = this.idle.length - 1; i >= 0; i--) {
      const conn = this.idle[i]!;
      if (conn.isClosed || conn.lastUsed < cutoff) {
        this.idle.splice(i, 1);
        conn.destroy();
        this.total--;
      }
    }
  }
}
