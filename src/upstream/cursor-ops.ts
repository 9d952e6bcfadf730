import { Long } from 'bson';
import { sessionKey, type CursorRegistry, type CursorTarget } from './cursors.js';
import type { ReplyView } from '../wire/reply-status.js';

/** What a command does to cursors (the command table's `cursor`). */
export type CursorEffect = 'opens' | 'continues' | 'kills';

/** A reply's cursor, as the request that got it knows it. */
export interface CursorReply {
  readonly effect: 'opens' | 'continues';
  /** The getMore's cursor id (continues). */
  readonly requested: bigint | undefined;
  readonly address: string;
  readonly owner: string;
  /** How the policy layer shows the cursor's batches (opaque here). */
  readonly view: unknown;
  /** The mapped lsid the command carried (opens). */
  readonly lsid: unknown;
  /** A tailable awaitData cursor or a change stream. */
  readonly awaitData: boolean;
  /** The client closed (or ended its side) while the request was upstream. */
  readonly clientGone: boolean;
  /** The app's limits.open_cursors (undefined: not counted). */
  readonly limit: number | undefined;
}

/**
 * What tracking did with a reply's cursor: nothing to keep (or kept), killed because its client left
 * (nobody knows its id), or killed because the app holds its limits.open_cursors already.
 */
export type Tracked = 'ok' | 'orphaned' | 'over_limit';

type Kill = (targets: CursorTarget[], reason: 'client_closed' | 'open_cursors_limit' | 'session_ended') => void;

/**
 * Records a cursor a reply opened (with its owner, view, namespace and session) and forgets exhausted
 * ones (and ones the upstream no longer knows: CursorNotFound, 43). A cursor opened for a client that
 * left is killed at once: nobody knows its id, so nobody could continue or kill it. A getMore's reply
 * that arrives after its client left keeps the cursor: a driver may continue a cursor on any
 * connection of its pool (endSessions, killCursors or the idle timeout end it).
 */
export function trackCursor(registry: CursorRegistry, kill: Kill, r: CursorReply, reply: ReplyView): Tracked {
  if (!reply.hasCursor) {
    if (r.effect === 'continues' && reply.code === 43 && r.requested !== undefined) registry.remove(r.requested);
    return 'ok';
  }
  const id = reply.cursorId;
  if (r.effect === 'opens' && id !== 0n) {
    const target = { id, address: r.address, ns: reply.cursorNs ?? '' };
    if (r.clientGone) {
      kill([target], 'client_closed');
      return 'orphaned';
    }
    if (r.limit !== undefined && registry.countOf(r.owner) >= r.limit) {
      kill([target], 'open_cursors_limit');
      return 'over_limit';
    }
    registry.register(id, r.address, r.owner, r.view, reply.cursorNs ?? '', sessionKey(r.lsid), r.awaitData);
  }
  if (r.effect === 'continues' && id === 0n && r.requested !== undefined) registry.remove(r.requested);
  return 'ok';
}

/**
 * endSessions / killSessions: the sessions' cursors are forgotten and killed upstream, as a server
 * does when a session ends (FerretDB v1 has no sessions: its cursors would stay open).
 */
export function endSessionCursors(registry: CursorRegistry, kill: Kill, owner: string, sessions: unknown): void {
  if (!Array.isArray(sessions)) return;
  const keys: string[] = [];
  for (const lsid of sessions) {
    const key = sessionKey(lsid);
    if (key !== undefined) keys.push(key);
  }
  const ended = registry.endSessions(owner, keys);
  if (ended.length > 0) kill(ended, 'session_ended');
}

/** A client's killCursors split by server: ids the app holds (forgotten now), and the rest, reported not found. */
export interface KillPlan {
  readonly byAddress: Map<string, Long[]>;
  readonly notFound: Long[];
}

/** Only cursors the app holds reach the upstream (each on its server); any other id does not exist for it. */
export function planKill(registry: CursorRegistry, owner: string, ids: readonly unknown[]): KillPlan {
  const byAddress = new Map<string, Long[]>();
  const notFound: Long[] = [];
  for (const raw of ids) {
    const id = cursorId(raw);
    if (id === undefined) continue;
    const entry = registry.lookup(id, owner);
    if (!entry) {
      notFound.push(Long.fromBigInt(id));
      continue;
    }
    const group = byAddress.get(entry.address) ?? [];
    group.push(Long.fromBigInt(id));
    byAddress.set(entry.address, group);
  }
  for (const group of byAddress.values()) for (const id of group) registry.remove(id.toBigInt());
  return { byAddress, notFound };
}

/** The cursors of a killCursors whose client left before they were sent (`byAddress`): killed by the proxy. */
export function killDeparted(kill: Kill, byAddress: Map<string, Long[]>, ns: string): void {
  const targets: CursorTarget[] = [];
  for (const [address, group] of byAddress) for (const id of group) targets.push({ id: id.toBigInt(), address, ns });
  kill(targets, 'client_closed');
}

/** A cursor id as decoded without promotion (Long, Int32, Double, a JS number or bigint), or undefined. */
export function cursorId(v: unknown): bigint | undefined {
  if (v instanceof Long) return v.toBigInt();
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number' && Number.isInteger(v)) return BigInt(v);
  if (v !== null && typeof v === 'object' && '_bsontype' in v) {
    const n = Number(v as unknown as number);
    return Number.isInteger(n) ? BigInt(n) : undefined;
  }
  return undefined;
}
