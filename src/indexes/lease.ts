import type { Collection, Db } from 'mongodb';

/**
 * Reconciliation leases: when several proxies share an upstream, only the holder of an
 * app's lease reconciles that app's indexes.
 *
 * One document per app in the control collection `_mdb_runtime_leases` of the shared database (apps'
 * collections are `<slug>_<name>` and slugs start with a letter, so no app can name it):
 *
 *     { _id: <slug>, holder: <holder id>, expiresAt: Date, renewedAt: Date, acquiredAt: Date, ttlMS }
 *
 * - acquire: one atomic findOneAndUpdate with upsert on
 *   `{_id: slug, $or: [{holder: me}, {expiresAt: {$lte: now}}]}`: a missing document is inserted (free),
 *   an expired or released one, or one we hold already, is taken; when another holder's lease is live the
 *   filter matches nothing, the upsert collides on `_id` (DuplicateKey) and the lease is not ours.
 * - renew: `{_id: slug, holder: me}` → new expiresAt; matching nothing means another proxy took it.
 * - release: expiresAt set to the epoch (the document stays: `holder` names who had it last).
 *
 * Time. Every proxy judges expiry on one clock: the upstream's. `$currentDate` stamps `renewedAt` with
 * the upstream's time on every lease write (and on the `_clock` document when calibrating), and each
 * proxy keeps the offset between that and its own clock (measured at the midpoint of the round trip).
 * `expiresAt` is written as upstream-now + ttl by the holder, and compared with upstream-now by the
 * others, so clock skew between proxies does not matter. The assumptions: the upstream's clock is one
 * clock (after a replica-set failover the new primary's clock agrees with the old one's to well within
 * the TTL, as NTP keeps it), and a round trip is short compared with the TTL (the offset error is at
 * most half of one). The holder is more careful still: it counts its lease as valid only until its own
 * monotonic clock reaches the send time of the last successful acquire/renew plus 4/5 of the TTL, renews
 * every third of the TTL, and stops starting index operations once that deadline passes.
 */

export const LEASE_COLLECTION = '_mdb_runtime_leases';
/** The document whose `$currentDate` write gives the upstream's time when a proxy calibrates. */
const CLOCK_ID = '_clock';
const DUPLICATE_KEY = 11000;

export interface LeaseDocument {
  _id: string;
  holder: string;
  /** Upstream time after which another proxy may take the lease (the epoch once released). */
  expiresAt: Date;
  /** Upstream time of the last acquire or renew (`$currentDate`). */
  renewedAt?: Date;
  acquiredAt?: Date;
  releasedAt?: Date;
  ttlMS?: number;
}

/** The upstream's clock as seen from this process: local time plus a measured offset. */
export class UpstreamClock {
  private offsetMS: number | undefined;
  private calibratedAt = -Infinity;
  private calibrating: Promise<void> | undefined;

  constructor(
    private readonly collection: Collection<LeaseDocument>,
    private readonly localNow: () => number = Date.now,
  ) {}

  /** Estimated upstream time, ms since the epoch. */
  now(): number {
    return this.localNow() + (this.offsetMS ?? 0);
  }

  get calibrated(): boolean {
    return this.offsetMS !== undefined;
  }

  /** Records the upstream time `server` of a write sent at local `sentAt` and answered at `receivedAt`. */
  observe(server: Date | undefined, sentAt: number, receivedAt: number): void {
    if (!(server instanceof Date)) return;
    this.offsetMS = server.getTime() - (sentAt + receivedAt) / 2;
    this.calibratedAt = receivedAt;
  }

  /** Measures the offset unless it was measured within `maxAgeMS` (concurrent callers share one measurement). */
  calibrate(maxAgeMS = 5 * 60_000): Promise<void> {
    if (this.offsetMS !== undefined && this.localNow() - this.calibratedAt < maxAgeMS) return Promise.resolve();
    this.calibrating ??= this.measure().finally(() => {
      this.calibrating = undefined;
    });
    return this.calibrating;
  }

  private async measure(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      const sentAt = this.localNow();
      try {
        const doc = await this.collection.findOneAndUpdate(
          { _id: CLOCK_ID },
          { $currentDate: { renewedAt: true } },
          { upsert: true, returnDocument: 'after' },
        );
        this.observe(doc?.renewedAt, sentAt, this.localNow());
        return;
      } catch (err) {
        // Two processes creating the clock document at once: one insert loses; the document exists now.
        if ((err as { code?: unknown }).code !== DUPLICATE_KEY || attempt >= 3) throw err;
      }
    }
  }
}

export type AcquireResult =
  | { acquired: true; lease: Lease }
  | { acquired: false; holder: string; /** Upstream time the holder's lease runs out. */ expiresAt: Date; /** Local time (this process's clock) it runs out. */ expiresAtLocal: number };

export interface LeaseManagerOptions {
  db: Db;
  holderId: string;
  ttlMS: number;
  /** Local wall clock (default Date.now). */
  now?: () => number;
}

/** Acquires leases for one holder (one proxy process, or one `indexes --apply`). */
export class LeaseManager {
  readonly collection: Collection<LeaseDocument>;
  readonly clock: UpstreamClock;
  readonly holderId: string;
  readonly ttlMS: number;
  private readonly localNow: () => number;

  constructor(options: LeaseManagerOptions) {
    this.collection = options.db.collection<LeaseDocument>(LEASE_COLLECTION);
    this.holderId = options.holderId;
    this.ttlMS = options.ttlMS;
    this.localNow = options.now ?? Date.now;
    this.clock = new UpstreamClock(this.collection, this.localNow);
  }

  /** Takes the app's lease if it is free, expired, released or ours already. */
  async acquire(slug: string): Promise<AcquireResult> {
    await this.clock.calibrate();
    const sentAt = this.localNow();
    const sentMono = performance.now();
    const now = this.clock.now();
    try {
      const doc = await this.collection.findOneAndUpdate(
        { _id: slug, $or: [{ holder: this.holderId }, { expiresAt: { $lte: new Date(now) } }] },
        {
          $set: { holder: this.holderId, expiresAt: new Date(now + this.ttlMS), ttlMS: this.ttlMS },
          $currentDate: { renewedAt: true, acquiredAt: true },
        },
        { upsert: true, returnDocument: 'after' },
      );
      this.clock.observe(doc?.renewedAt, sentAt, this.localNow());
      return { acquired: true, lease: new Lease(this, slug, sentMono) };
    } catch (err) {
      if ((err as { code?: unknown }).code !== DUPLICATE_KEY) throw err;
      const current = await this.collection.findOne({ _id: slug });
      // Released or expired between the two reads: report it as ending now, the caller retries.
      const expiresAt = current?.expiresAt ?? new Date(now);
      return {
        acquired: false,
        holder: current?.holder ?? 'unknown',
        expiresAt,
        expiresAtLocal: expiresAt.getTime() - (this.clock.now() - this.localNow()),
      };
    }
  }

  /** The lease document of an app, as stored. */
  current(slug: string): Promise<LeaseDocument | null> {
    return this.collection.findOne({ _id: slug });
  }

  /** @internal Renews `slug`'s lease if this holder still has it; returns the send time, or undefined if lost. */
  async renewRaw(slug: string): Promise<number | undefined> {
    const sentAt = this.localNow();
    const sentMono = performance.now();
    const doc = await this.collection.findOneAndUpdate(
      { _id: slug, holder: this.holderId },
      { $set: { expiresAt: new Date(this.clock.now() + this.ttlMS), ttlMS: this.ttlMS }, $currentDate: { renewedAt: true } },
      { returnDocument: 'after' },
    );
    if (!doc) return undefined;
    this.clock.observe(doc.renewedAt, sentAt, this.localNow());
    return sentMono;
  }

  /** @internal Releases `slug`'s lease if this holder still has it. */
  async releaseRaw(slug: string): Promise<void> {
    await this.collection.updateOne({ _id: slug, holder: this.holderId }, { $set: { expiresAt: new Date(0) }, $currentDate: { releasedAt: true } });
  }
}

/**
 * A held lease. `startRenewing()` renews it every third of the TTL until `release()`; `valid` turns false
 * once a renewal found another holder, or no renewal succeeded in time.
 */
export class Lease {
  private validUntil: number;
  private lostReason: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private renewing: Promise<void> | undefined;
  private released = false;

  constructor(
    private readonly manager: LeaseManager,
    readonly slug: string,
    sentMono: number,
  ) {
    this.validUntil = sentMono + this.safeMS;
  }

  get holder(): string {
    return this.manager.holderId;
  }

  /** How long after a successful write the holder still relies on the lease (4/5 of the TTL). */
  private get safeMS(): number {
    return (this.manager.ttlMS * 4) / 5;
  }

  /** True while the lease is ours as far as this process can tell. */
  get valid(): boolean {
    return !this.released && this.lostReason === undefined && performance.now() < this.validUntil;
  }

  /** Why the lease is no longer ours (undefined while valid or after a normal release). */
  get lost(): string | undefined {
    if (this.lostReason !== undefined) return this.lostReason;
    if (!this.released && performance.now() >= this.validUntil) return 'the lease could not be renewed in time';
    return undefined;
  }

  /** Extends the lease now; false when another holder has it (the lease is then lost). */
  async renew(): Promise<boolean> {
    if (this.released || this.lostReason !== undefined) return false;
    try {
      const sent = await this.manager.renewRaw(this.slug);
      if (sent === undefined) {
        this.lostReason = 'another holder took the lease over';
        return false;
      }
      this.validUntil = Math.max(this.validUntil, sent + this.safeMS);
      return true;
    } catch {
      // Unreachable upstream: the lease stays valid until its deadline; the next renewal tries again.
      return this.valid;
    }
  }

  /** Renews every third of the TTL until release (the timer does not keep the process alive). */
  startRenewing(): void {
    if (this.timer || this.released) return;
    this.timer = setInterval(() => {
      this.renewing ??= this.renew().then(
        () => {
          this.renewing = undefined;
        },
        () => {
          this.renewing = undefined;
        },
      );
    }, Math.max(50, Math.floor(this.manager.ttlMS / 3)));
    this.timer.unref();
  }

  /** Stops renewing without releasing (what a crashed holder leaves behind). */
  abandon(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.released = true;
  }

  /** Stops renewing and frees the lease for other proxies (if it is still ours). */
  async release(): Promise<void> {
    const wasOurs = !this.released && this.lostReason === undefined;
    this.abandon();
    await this.renewing;
    if (wasOurs) await this.manager.releaseRaw(this.slug);
  }
}
