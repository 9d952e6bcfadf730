/** Where a cursor lives and who opened it. */
export interface CursorEntry {
  /** The upstream server that created it: getMore and killCursors must go there. */
  address: string;
  /** The app that opened it; other apps never see it. */
  owner: string;
  /** How the policy layer shows this cursor's batches (opaque here). */
  view: unknown;
  lastUsed: number;
}

/**
 * Open cursors across all client connections (a driver may continue a cursor on any connection of its
 * pool). Entries idle longer than the server's own cursor timeout are forgotten.
 */
export class CursorRegistry {
  private readonly cursors = new Map<bigint, CursorEntry>();
  private readonly sweeper: NodeJS.Timeout;

  constructor(private readonly idleTimeoutMS = 10 * 60_000) {
    this.sweeper = setInterval(() => this.sweep(), Math.min(60_000, idleTimeoutMS));
    this.sweeper.unref();
  }

  get size(): number {
    return this.cursors.size;
  }

  /** Open cursors by owning app (metrics, at scrape time). */
  countByOwner(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const entry of this.cursors.values()) counts.set(entry.owner, (counts.get(entry.owner) ?? 0) + 1);
    return counts;
  }

  register(id: bigint, address: string, owner: string, view: unknown = undefined): void {
    this.cursors.set(id, { address, owner, view, lastUsed: Date.now() });
  }

  /** The cursor if it exists and belongs to `owner`; anyone else's cursor does not exist. */
  lookup(id: bigint, owner: string): CursorEntry | undefined {
    const entry = this.cursors.get(id);
    if (!entry || entry.owner !== owner) return undefined;
    entry.lastUsed = Date.now();
    return entry;
  }

  remove(id: bigint): void {
    this.cursors.delete(id);
  }

  close(): void {
    clearInterval(this.sweeper);
    this.cursors.clear();
  }

  private sweep(): void {
    const cutoff = Date.now() - this.idleTimeoutMS;
    for (const [id, entry] of this.cursors) if (entry.lastUsed < cutoff) this.cursors.delete(id);
  }
}
