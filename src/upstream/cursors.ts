import { Binary, Long, type Document } from 'bson';
import type { ConnectionPool } from './pool.js';
import { UpstreamCommandError } from './connection.js';

/** Where a cursor lives and who opened it. */
export interface CursorEntry {
  /** The upstream server that created it: getMore and killCursors must go there. */
  address: string;
  /** The app that opened it; other apps never see it. */
  owner: string;
  /** How the policy layer shows this cursor's batches (opaque here). */
  view: unknown;
  lastUsed: number;
  /** The cursor's physical namespace as the upstream named it (`db.collection`): killCursors needs it. */
  ns: string;
  /** The (mapped) logical session it was opened in, as a key (see sessionKey); undefined: none. */
  session: string | undefined;
  /** A tailable awaitData cursor or a change stream: its getMores wait upstream (maxTimeMS is capped). */
  awaitData: boolean;
}

/** A cursor to kill upstream: its id, server and physical namespace. */
export interface CursorTarget {
  id: bigint;
  address: string;
  ns: string;
}

/**
 * Open cursors across all client connections (a driver may continue a cursor on any connection of its
 * pool, so cursors are not bound to the connection that opened them, as on a server). A cursor leaves
 * the registry when it is exhausted, killed, not found upstream, when its session ends (endSessions,
 * killSessions), or when it was idle longer than the server's own cursor timeout (10 minutes, as
 * mongod's cursorTimeoutMillis): then `onExpired` is told, to kill it upstream (an upstream such as
 * FerretDB v1 never times cursors out, and holds resources per open cursor).
 */
export class CursorRegistry {
  private readonly cursors = new Map<bigint, CursorEntry>();
  /** Session key → ids of its open cursors. */
  private readonly bySession = new Map<string, Set<bigint>>();
  /** Owner → open cursors (limits.open_cursors is checked on every cursor a reply opens). */
  private readonly perOwner = new Map<string, number>();
  private readonly sweeper: NodeJS.Timeout;
  /** Called with the cursors the idle sweep forgot (to kill them upstream). */
  onExpired: ((cursors: CursorTarget[]) => void) | undefined;

  constructor(private readonly idleTimeoutMS = 10 * 60_000) {
    this.sweeper = setInterval(() => this.sweep(), Math.min(60_000, idleTimeoutMS));
    this.sweeper.unref();
  }

  get size(): number {
    return this.cursors.size;
  }

  /** Open cursors by owning app (metrics, at scrape time). */
  countByOwner(): Map<string, number> {
    return new Map(this.perOwner);
  }

  /** Open cursors of one app. */
  countOf(owner: string): number {
    return this.perOwner.get(owner) ?? 0;
  }

  register(id: bigint, address: string, owner: string, view: unknown = undefined, ns = '', session?: string, awaitData = false): void {
    this.remove(id);
    this.cursors.set(id, { address, owner, view, lastUsed: Date.now(), ns, session, awaitData });
    this.perOwner.set(owner, (this.perOwner.get(owner) ?? 0) + 1);
    if (session !== undefined) {
      let ids = this.bySession.get(session);
      if (!ids) this.bySession.set(session, (ids = new Set()));
      ids.add(id);
    }
  }

  /** The cursor if it exists and belongs to `owner`; anyone else's cursor does not exist. */
  lookup(id: bigint, owner: string): CursorEntry | undefined {
    const entry = this.cursors.get(id);
    if (!entry || entry.owner !== owner) return undefined;
    entry.lastUsed = Date.now();
    return entry;
  }

  remove(id: bigint): void {
    const entry = this.cursors.get(id);
    if (!entry) return;
    this.cursors.delete(id);
    const left = (this.perOwner.get(entry.owner) ?? 1) - 1;
    if (left > 0) this.perOwner.set(entry.owner, left);
    else this.perOwner.delete(entry.owner);
    if (entry.session !== undefined) {
      const ids = this.bySession.get(entry.session);
      ids?.delete(id);
      if (ids?.size === 0) this.bySession.delete(entry.session);
    }
  }

  /**
   * The sessions `sessions` of `owner` ended (endSessions, killSessions): their cursors leave the
   * registry and are returned, for the caller to kill upstream (as a server kills an ended session's cursors).
   */
  endSessions(owner: string, sessions: Iterable<string>): CursorTarget[] {
    const ended: CursorTarget[] = [];
    for (const session of sessions) {
      const ids = this.bySession.get(session);
      if (!ids) continue;
      for (const id of [...ids]) {
        const entry = this.cursors.get(id);
        if (!entry || entry.owner !== owner) continue;
        ended.push({ id, address: entry.address, ns: entry.ns });
        this.remove(id);
      }
    }
    return ended;
  }

  close(): void {
    clearInterval(this.sweeper);
    this.cursors.clear();
    this.bySession.clear();
    this.perOwner.clear();
  }

  /** Forgets cursors idle longer than the timeout, and has them killed upstream. */
  sweep(now = Date.now()): CursorTarget[] {
    const cutoff = now - this.idleTimeoutMS;
    const expired: CursorTarget[] = [];
    for (const [id, entry] of this.cursors) {
      if (entry.lastUsed >= cutoff) continue;
      expired.push({ id, address: entry.address, ns: entry.ns });
      this.remove(id);
    }
    if (expired.length > 0) this.onExpired?.(expired);
    return expired;
  }
}

/** The registry's key of a mapped lsid ({id: UUID}); undefined when there is none. */
export function sessionKey(lsid: unknown): string | undefined {
  const id = (lsid as { id?: unknown } | null | undefined)?.id;
  if (!(id instanceof Binary)) return undefined;
  const bytes = id.read(0, id.length());
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('hex');
}

/** Groups cursors by server, then by namespace (one killCursors per namespace). */
export function groupCursors(targets: Iterable<CursorTarget>): Map<string, Map<string, bigint[]>> {
  const byAddress = new Map<string, Map<string, bigint[]>>();
  for (const t of targets) {
    let byNs = byAddress.get(t.address);
    if (!byNs) byAddress.set(t.address, (byNs = new Map()));
    const ids = byNs.get(t.ns);
    if (ids) ids.push(t.id);
    else byNs.set(t.ns, [t.id]);
  }
  return byAddress;
}

/**
 * Kills `ids` of namespace `ns` (`db.collection`) on the pool's server: one killCursors, on a pooled
 * connection (no session: the cursors' clients are gone). Resolves with how many the server killed;
 * rejects when the server could not be reached or answered an error.
 */
export async function killCursorsOn(pool: ConnectionPool, ns: string, ids: readonly bigint[]): Promise<number> {
  const dot = ns.indexOf('.');
  if (dot <= 0) throw new Error(`cannot kill cursors of namespace '${ns}'`);
  const cmd = { killCursors: ns.slice(dot + 1), cursors: ids.map((id) => Long.fromBigInt(id)), $db: ns.slice(0, dot) };
  const conn = await pool.acquire();
  let doc: Document;
  try {
    doc = await conn.command(cmd);
  } catch (err) {
    // A refused command leaves the connection usable; anything else (it closed, a bad reply) does not.
    if (err instanceof UpstreamCommandError) pool.release(conn);
    else pool.discard(conn);
    throw err;
  }
  pool.release(conn);
  return Array.isArray(doc.cursorsKilled) ? doc.cursorsKilled.length : 0;
}
