import type { Logger } from '../observability/logger.js';

/**
 * Approximate document counts per physical collection, for `limits.max_documents_per_collection`.
 *
 * The approximation (README "Limits and data access"):
 * - The first insert into a limited collection waits for one count from the upstream (the control
 *   plane's MongoClient, `count` without a filter: every document of `<slug>_<name>` is the app's).
 * - Each admitted insert adds its documents to the estimate at once, so this proxy alone cannot pass
 *   the limit by racing itself; failed inserts are corrected by the next refresh.
 * - Collections used in the last minute are counted again in the background every couple of seconds,
 *   which picks up deletes, other proxies' inserts and upserts (upserts themselves are not checked).
 * - When the upstream cannot be counted, inserts are admitted on the last known estimate.
 */

export interface DocumentCountSource {
  /** Documents in the physical collection `physical` of the shared database. */
  count(physical: string): Promise<number>;
}

export interface DocumentCountOptions {
  /** Background refresh period (default 2000 ms). */
  refreshMS?: number;
  /** Collections not checked for this long are no longer refreshed (default 60 s). */
  idleMS?: number;
  logger?: Logger;
}

interface Entry {
  count: number;
  /** Documents admitted since the proxy started (to carry admissions across a refresh in flight). */
  admitted: number;
  /** Documents admitted whose insert has not been answered yet: a count may not include them. */
  inFlight: number;
  known: boolean;
  lastUsed: number;
  refreshing: Promise<void> | undefined;
}

/** An admission answers `settle()` once its insert was answered (or failed): until then a count may miss it. */
export type CountVerdict = { ok: true; count: number; settle: () => void } | { ok: false; count: number };

export class DocumentCounts {
  private readonly entries = new Map<string, Entry>();
  private timer: NodeJS.Timeout | undefined;
  private readonly refreshMS: number;
  private readonly idleMS: number;
  private warned = false;

  constructor(
    private readonly source: DocumentCountSource,
    private readonly options: DocumentCountOptions = {},
  ) {
    this.refreshMS = options.refreshMS ?? 2000;
    this.idleMS = options.idleMS ?? 60_000;
  }

  /**
   * Admits `adding` documents into `physical` when the estimate stays within `limit`, and counts them
   * in; otherwise refuses with the current estimate.
   */
  async admit(physical: string, limit: number, adding: number): Promise<CountVerdict> {
    let entry = this.entries.get(physical);
    if (!entry) {
      entry = { count: 0, admitted: 0, inFlight: 0, known: false, lastUsed: Date.now(), refreshing: undefined };
      this.entries.set(physical, entry);
    }
    entry.lastUsed = Date.now();
    if (!entry.known) await this.refresh(physical, entry);
    if (entry.count + adding > limit) return { ok: false, count: entry.count };
    entry.count += adding;
    entry.admitted += adding;
    entry.inFlight += adding;
    const admittedTo = entry;
    let settled = false;
    const settle = () => {
      if (settled) return;
      settled = true;
      admittedTo.inFlight -= adding;
    };
    return { ok: true, count: entry.count, settle };
  }

  /** The current estimate, if the collection was ever checked. */
  estimate(physical: string): number | undefined {
    const e = this.entries.get(physical);
    return e?.known ? e.count : undefined;
  }

  start(): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.refreshAll(), this.refreshMS);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async refreshAll(): Promise<void> {
    const now = Date.now();
    for (const [physical, entry] of this.entries) {
      if (now - entry.lastUsed > this.idleMS) this.entries.delete(physical);
      else await this.refresh(physical, entry);
    }
  }

  private refresh(physical: string, entry: Entry): Promise<void> {
    entry.refreshing ??= (async () => {
      const admittedBefore = entry.admitted;
      const inFlightBefore = entry.inFlight;
      try {
        const counted = await this.source.count(physical);
        // Inserts admitted but not yet answered when the count started, or admitted while it ran, may or
        // may not be in it: count them (err high; the next refresh corrects).
        entry.count = counted + inFlightBefore + (entry.admitted - admittedBefore);
        entry.known = true;
        this.warned = false;
      } catch (err) {
        if (!this.warned) {
          this.warned = true;
          this.options.logger?.warn(
            { collection: physical, err: (err as Error).message },
            'cannot count documents for max_documents_per_collection; admitting inserts on the last estimate',
          );
        }
        entry.known = true;
      } finally {
        entry.refreshing = undefined;
      }
    })();
    return entry.refreshing;
  }
}
