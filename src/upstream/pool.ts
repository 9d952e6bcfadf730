import { UpstreamConnection, type UpstreamConnectOptions } from './connection.js';
import { UpstreamError } from './errors.js';

export interface PoolOptions {
  maxSize: number;
  /** Idle connections older than this are closed. */
  maxIdleTimeMS: number;
  /** How long a request waits for a free connection before the client is failed. */
  waitQueueTimeoutMS: number;
}

interface Waiter {
  resolve: (conn: UpstreamConnection) => void;
  reject: (err: Error) => void;
  timer: NodeJS.Timeout;
}

/**
 * Raw connections to one upstream server. A connection is lent to one request at a time; requests
 * beyond `maxSize` wait in FIFO order. Connections that fail are discarded, never returned.
 */
export class ConnectionPool {
  private readonly idle: UpstreamConnection[] = [];
  private readonly waiters: Waiter[] = [];
  private total = 0;
  private pendingConnects = 0;
  private closed = false;
  private readonly sweeper: NodeJS.Timeout;

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

  async acquire(): Promise<UpstreamConnection> {
    if (this.closed) throw new UpstreamError(`pool for ${this.address} is closed`);
    while (this.idle.length > 0) {
      const conn = this.idle.pop()!;
      if (!conn.isClosed) return conn;
      this.total--;
    }
    if (this.total < this.options.maxSize) return this.open();
    return new Promise<UpstreamConnection>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.waiters.indexOf(waiter);
          if (i >= 0) this.waiters.splice(i, 1);
          reject(new UpstreamError(`timed out after ${this.options.waitQueueTimeoutMS} ms waiting for a connection to ${this.address}`));
        }, this.options.waitQueueTimeoutMS),
      };
      this.waiters.push(waiter);
    });
  }

  /** Returns a healthy connection after its request completed. */
  release(conn: UpstreamConnection): void {
    if (conn.isClosed || this.closed) {
      this.discard(conn);
      return;
    }
    const waiter = this.waiters.shift();
    if (waiter) {
      clearTimeout(waiter.timer);
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
    for (const w of this.waiters.splice(0)) {
      clearTimeout(w.timer);
      w.reject(new UpstreamError(`pool for ${this.address} is closed`));
    }
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
    const waiter = this.waiters.shift()!;
    clearTimeout(waiter.timer);
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
