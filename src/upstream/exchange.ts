import { performance } from 'node:perf_hooks';
import { readdressOpMsg } from '../wire/opmsg.js';
import { upstreamRequestIds, UpstreamTimeoutError, type UpstreamConnection } from './connection.js';
import { AcquireAbandonedError, type ConnectionPool } from './pool.js';
import { ClientGoneError, UnreachableError } from './errors.js';

/** The client a round trip is made for: whether it left, and a signal that aborts when it does. */
export interface ClientSide {
  readonly gone: boolean;
  readonly signal: AbortSignal;
}

/** An app's upstream connection slots (limits.upstream_connections): the session's per-app usage. */
export interface UpstreamSlots {
  tryTakeUpstreamSlot(limit: number): boolean;
  waitUpstreamSlot(timeoutMS: number, signal: AbortSignal, timeout: () => Error, abandoned: () => Error): Promise<void>;
  releaseUpstreamSlot(limit: number): void;
  upstreamTimeouts: number;
}

/** The share of the upstream a request runs under: its app's slots, how many, and the refusal when none came in time. */
export interface UpstreamShare {
  readonly usage: UpstreamSlots;
  readonly connections: number;
  readonly waitMS: number;
  overShare(): Error;
}

/** Where a round trip adds the time it waited for the upstream (ms; < 0: nothing was sent yet). */
export interface UpstreamTiming {
  upstreamMS: number;
}

/**
 * One client's round trips to the upstream: one message to a server and its reply, holding one of
 * the app's upstream slots and one pooled connection meanwhile. Throws ClientGoneError when the client
 * left before the message was sent, UnreachableError when no connection could be had (nothing was
 * sent), UpstreamTimeoutError when the reply came later than its timeout (the connection is closed).
 */
export class Exchange {
  constructor(
    private readonly pools: { pool(address: string): ConnectionPool },
    private readonly client: ClientSide,
    private readonly timed: boolean,
  ) {}

  /**
   * Sends `msg` to `address` and returns the reply's bytes (undefined for moreToCome). A moreToCome
   * write gives its connection back as soon as it is written: nothing is waited for, and a connection
   * held for the client's next request would let idle clients take the whole pool (the upstream reads
   * a connection's messages in order; a reply FerretDB sends to it is skipped by the next request's
   * round trip).
   */
  async send(address: string, msg: Buffer, moreToCome: boolean, timeoutMS: number, share: UpstreamShare | undefined, timing: UpstreamTiming): Promise<Buffer | undefined> {
    if (this.client.gone) throw new ClientGoneError();
    // The common case takes a slot at once, with nothing allocated; only a wait needs its errors.
    if (share && !share.usage.tryTakeUpstreamSlot(share.connections)) {
      await share.usage.waitUpstreamSlot(share.waitMS, this.client.signal, () => share.overShare(), () => new ClientGoneError());
    }
    try {
      return await this.onPool(address, msg, moreToCome, timeoutMS, share, timing);
    } finally {
      share?.usage.releaseUpstreamSlot(share.connections);
    }
  }

  private async onPool(address: string, msg: Buffer, moreToCome: boolean, timeoutMS: number, share: UpstreamShare | undefined, timing: UpstreamTiming): Promise<Buffer | undefined> {
    const pool = this.pools.pool(address);
    let conn: UpstreamConnection;
    if (this.client.gone) throw new ClientGoneError();
    try {
      // A request whose client closes while it waits in the pool's queue leaves the queue.
      conn = pool.tryAcquire() ?? (await pool.acquire(this.client.signal));
    } catch (err) {
      if (err instanceof AcquireAbandonedError) throw new ClientGoneError();
      // Nothing was sent: the client may safely retry, reads and writes alike.
      throw new UnreachableError((err as Error).message);
    }
    if (this.client.gone) {
      // The client closed while this request waited (for a connection, a route, a document count):
      // nobody could receive its reply, so it is not sent.
      pool.release(conn);
      throw new ClientGoneError();
    }
    const requestId = upstreamRequestIds.take();
    const out = readdressOpMsg(msg, requestId, 0);
    if (moreToCome) {
      try {
        conn.send(out);
      } catch (err) {
        pool.discard(conn);
        throw err;
      }
      pool.release(conn);
      return undefined;
    }
    try {
      const sent = this.timed ? performance.now() : 0;
      const reply = await conn.roundTrip(out, requestId, timeoutMS);
      if (this.timed) timing.upstreamMS = Math.max(0, timing.upstreamMS) + (performance.now() - sent);
      pool.release(conn);
      return reply;
    } catch (err) {
      pool.discard(conn);
      if (err instanceof UpstreamTimeoutError && share) share.usage.upstreamTimeouts++;
      throw err;
    }
  }
}
