import type tls from 'node:tls';
import type { MongoClientOptions } from 'mongodb';
import { ConnectionPool, type PoolOptions } from './pool.js';
import { UpstreamTopology, type SelectedServer } from './topology.js';
import { CursorRegistry, groupCursors, killCursorsOn, type CursorTarget } from './cursors.js';
import { TransactionPins } from './pins.js';
import { Router } from './routing.js';
import type { UpstreamConnectOptions } from './connection.js';
import type { UpstreamCredentials, UpstreamMechanism } from './auth.js';
import { UpstreamError } from './errors.js';

export { UpstreamError } from './errors.js';
export { UpstreamConnection, UpstreamTimeoutError, upstreamRequestIds } from './connection.js';
export type { SelectedServer } from './topology.js';
export type { ConnectionPool } from './pool.js';
export { CursorRegistry, sessionKey, type CursorTarget } from './cursors.js';
export { AcquireAbandonedError } from './pool.js';
export { ClientGoneError, UnreachableError } from './errors.js';
export { Router, type RoutedCommand } from './routing.js';
export { Exchange, type ClientSide, type UpstreamShare, type UpstreamSlots, type UpstreamTiming } from './exchange.js';
export { cursorId, endSessionCursors, killDeparted, planKill, trackCursor, type CursorReply, type KillPlan, type Tracked } from './cursor-ops.js';

/** Why the proxy kills cursors no client asked it to kill (logged with a failure). */
export type CursorKillReason = 'client_closed' | 'session_ended' | 'idle_timeout' | 'open_cursors_limit';

export interface UpstreamSettings {
  uri: string;
  pool: PoolOptions;
  connectTimeoutMS: number;
  serverSelectionTimeoutMS: number;
  version: string;
}

const SUPPORTED_MECHANISMS = new Set<string>(['SCRAM-SHA-256', 'SCRAM-SHA-1', 'PLAIN', 'MONGODB-X509', 'DEFAULT']);

/**
 * The data plane's view of the upstream: which server to use (from the driver's monitoring), a pool of
 * raw connections per server, and the registry of open cursors.
 */
export class Upstream {
  readonly pools = new Map<string, ConnectionPool>();
  readonly cursors = new CursorRegistry();
  readonly pins = new TransactionPins();
  /** Where each command goes: the writable server or its transaction's pinned one. */
  readonly router = new Router(this);
  private readonly connectOptions: UpstreamConnectOptions;
  /** Told when a killCursors the proxy sent on its own failed (the runtime logs it). */
  onCursorKillFailed: ((err: Error, detail: { address: string; ns: string; cursors: number; reason: CursorKillReason }) => void) | undefined;

  private constructor(
    readonly topology: UpstreamTopology,
    private readonly settings: UpstreamSettings,
  ) {
    this.connectOptions = connectOptionsFrom(topology.client.options, settings);
    // Cursors idle longer than the cursor timeout are killed upstream, as mongod does (FerretDB v1 never does).
    this.cursors.onExpired = (expired) => void this.killCursors(expired, 'idle_timeout');
  }

  /**
   * Kills cursors upstream that no client can use any more (its client closed before it learned the
   * id, its session ended, it timed out): one killCursors per server and namespace, on pooled
   * connections. Never rejects: a failure is reported to onCursorKillFailed. Resolves with how many
   * the upstream reported killed.
   */
  async killCursors(targets: Iterable<CursorTarget>, reason: CursorKillReason): Promise<number> {
    const kills: Promise<number>[] = [];
    for (const [address, byNs] of groupCursors(targets)) {
      for (const [ns, ids] of byNs) {
        kills.push(
          killCursorsOn(this.pool(address), ns, ids).catch((err: unknown) => {
            this.onCursorKillFailed?.(err as Error, { address, ns, cursors: ids.length, reason });
            return 0;
          }),
        );
      }
    }
    let killed = 0;
    for (const n of await Promise.all(kills)) killed += n;
    return killed;
  }

  static async connect(settings: UpstreamSettings, clientOptions: MongoClientOptions = {}): Promise<Upstream> {
    const topology = await UpstreamTopology.connect(settings.uri, {
      serverSelectionTimeoutMS: settings.serverSelectionTimeoutMS,
      connectTimeoutMS: settings.connectTimeoutMS,
      ...clientOptions,
    });
    try {
      return new Upstream(topology, settings);
    } catch (err) {
      await topology.close();
      throw err;
    }
  }

  /** A writable server now, without waiting (the common case: no election in progress). */
  selectNow(): SelectedServer | undefined {
    return this.topology.trySelect();
  }

  select(): Promise<SelectedServer> {
    return this.topology.select(this.settings.serverSelectionTimeoutMS);
  }

  pool(address: string): ConnectionPool {
    let pool = this.pools.get(address);
    if (!pool) {
      pool = new ConnectionPool(address, this.connectOptions, this.settings.pool);
      this.pools.set(address, pool);
    }
    return pool;
  }

  async close(): Promise<void> {
    this.cursors.close();
    this.pins.close();
    await Promise.all([...this.pools.values()].map((p) => p.close()));
    await this.topology.close();
  }
}

type DriverOptions = UpstreamTopology['client']['options'];

/** Raw connections authenticate and encrypt exactly as the driver was told to by the upstream URI. */
function connectOptionsFrom(options: DriverOptions, settings: UpstreamSettings): UpstreamConnectOptions {
  let credentials: UpstreamCredentials | undefined;
  const c = options.credentials;
  if (c) {
    if (!SUPPORTED_MECHANISMS.has(c.mechanism)) {
      throw new UpstreamError(
        `upstream authMechanism ${c.mechanism} is not supported by the data plane; use SCRAM-SHA-256, SCRAM-SHA-1, PLAIN or MONGODB-X509`,
      );
    }
    credentials = {
      username: c.username,
      password: c.password,
      source: c.source,
      mechanism: c.mechanism as UpstreamMechanism,
    };
  }
  let tlsOptions: tls.ConnectionOptions | undefined;
  if (options.tls) {
    tlsOptions = {
      ca: options.ca,
      cert: options.cert,
      key: options.key,
      passphrase: options.passphrase,
      crl: options.crl,
      rejectUnauthorized: options.rejectUnauthorized ?? !options.tlsAllowInvalidCertificates,
    };
    if (options.tlsAllowInvalidHostnames) tlsOptions.checkServerIdentity = () => undefined;
  }
  return {
    connectTimeoutMS: settings.connectTimeoutMS,
    tls: tlsOptions,
    credentials,
    appName: 'mdb-runtime',
    driverVersion: settings.version,
  };
}
