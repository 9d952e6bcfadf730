import { Double } from 'bson';
import { describe, expect, it } from 'vitest';
import { shopManifest } from '../helpers/apps.js';
import {
  checkDataAccess,
  documentTooLarge,
  rateLimited,
  restrictListing,
  allowedCollections,
} from '../../src/session/app-limits.js';
import { AppEntry, TokenBucket } from '../../src/session/app-usage.js';
import { DocumentCounts } from '../../src/session/document-counts.js';
import { CommandError, errorReply } from '../../src/policy/errors.js';
import type { ReplyPlan } from '../../src/policy/handler.js';

/** The manifest's limits and data_access as the session applies them, without sockets. */

const app = shopManifest;

function refusal(fn: () => unknown): CommandError {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(CommandError);
    return err as CommandError;
  }
  throw new Error('not refused');
}


describe('TokenBucket and AppEntry', () => {
  it('grants one second of burst, then the rate, and says how long to wait', () => {
    const bucket = new TokenBucket(5, 0);
    for (let i = 0; i < 5; i++) expect(bucket.take(0)).toBe(0);
    expect(bucket.take(0)).toBe(200);
    expect(bucket.take(100)).toBe(100);
    expect(bucket.take(200)).toBe(0);
    // A long pause refills to the burst, not beyond.
    let granted = 0;
    while (bucket.take(10_000) === 0) granted++;
    expect(granted).toBe(5);
  });

  it('applies a changed rate to the running bucket', () => {
    const usage = new AppEntry('shop');
    for (let i = 0; i < 10; i++) expect(usage.admit(10, 0)).toBe(0);
    expect(usage.admit(10, 0)).toBeGreaterThan(0);
    expect(usage.admit(2, 1000)).toBe(0); // refilled, capped at the new burst of 2
    expect(usage.admit(2, 1000)).toBe(0);
    expect(usage.admit(2, 1000)).toBe(500);
  });

  it('counts commands served and their rate over the last complete seconds', () => {
    const usage = new AppEntry('shop');
    for (let i = 0; i < 30; i++) usage.served(5_000 + i);
    for (let i = 0; i < 20; i++) usage.served(6_000 + i);
    expect(usage.ops).toBe(50);
    expect(usage.opsPerSecond(6_500)).toBe(3); // 30 in the last complete second, over 10 s
    expect(usage.opsPerSecond(7_000)).toBe(5);
    expect(usage.opsPerSecond(30_000)).toBe(0);
  });

  it('answers over-rate commands with the retryable overload error drivers back off on', () => {
    const reply = errorReply(rateLimited(app(), 5, 200));
    expect(reply).toMatchObject({ ok: new Double(0), code: 462, codeName: 'IngressRequestRateLimitExceeded', errorLabels: ['SystemOverloadedError', 'RetryableError'] });
    expect(rateLimited(app(), 5, 200).extra).toEqual({ baseBackoffMS: 200 });
  });
});

describe('data_access', () => {
  it('read_only refuses every write and index access with Unauthorized, and lets reads through', () => {
    const readOnly = app({ dataAccess: { readOnly: true } });
    checkDataAccess(readOnly, [{ action: 'read', collection: 'orders' }], 'find');
    for (const action of ['write', 'indexes'] as const) {
      const err = refusal(() => checkDataAccess(readOnly, [{ action: 'read', collection: 'a' }, { action, collection: 'b' }], 'aggregate'));
      expect(err.code).toBe(13);
      expect(err.message).toBe("not authorized on b to execute command aggregate: app 'shop' is read-only (data_access.read_only)");
    }
  });

  it('collections refuses any other collection, wherever the command touches it', () => {
    const limited = app({ dataAccess: { collections: ['orders', 'items'] } });
    checkDataAccess(limited, [{ action: 'write', collection: 'orders' }, { action: 'read', collection: 'items' }], 'aggregate');
    const err = refusal(() => checkDataAccess(limited, [{ action: 'read', collection: 'orders' }, { action: 'read', collection: 'users' }], 'aggregate'));
    expect(err).toMatchObject({ code: 13, codeName: 'Unauthorized' });
    expect(err.message).toContain("app 'shop' may only use orders, items (data_access.collections)");
    expect(allowedCollections(app({ dataAccess: { collections: ['*'] } }).dataAccess)).toBeUndefined();
  });

  it('narrows a listCollections listing to the allowed collections, keeping the app filter', () => {
    const plan: ReplyPlan = { kind: 'cursor', view: { kind: 'collections', appDb: 'db', names: (n) => n !== 'items' }, collections: [] };
    const narrowed = restrictListing(plan, new Set(['orders', 'items']));
    const names = narrowed.kind === 'cursor' && narrowed.view.kind === 'collections' ? narrowed.view.names : undefined;
    expect(['orders', 'items', 'users'].filter((n) => names!(n))).toEqual(['orders']);
  });
});

describe('max_document_bytes', () => {
  it("refuses with the server's BSONObjectTooLarge shape", () => {
    const reply = errorReply(documentTooLarge(app(), { where: 'documents.0', bytes: 300 }, 100));
    expect(reply).toMatchObject({ ok: new Double(0), code: 10334, codeName: 'BSONObjectTooLarge' });
    expect(reply.errmsg).toMatch(/^object to insert too large\. size in bytes: 300, max size: 100 /);
  });
});

describe('DocumentCounts (max_documents_per_collection)', () => {
  it('counts once on first use, admits inserts within the limit, and counts admitted documents at once', async () => {
    let upstream = 3;
    let counted = 0;
    const counts = new DocumentCounts({ count: () => Promise.resolve((counted++, upstream)) }, { refreshMS: 50 });
    const admitted = await counts.admit('shop_c', 5, 2);
    expect(admitted).toMatchObject({ ok: true, count: 5 });
    expect(await counts.admit('shop_c', 5, 1)).toEqual({ ok: false, count: 5 });
    expect(counted).toBe(1);
    // Concurrent first inserts into another collection share one count.
    const both = await Promise.all([counts.admit('shop_d', 2, 1), counts.admit('shop_d', 2, 1)]);
    expect(both.map((v) => v.ok)).toEqual([false, false]);
    expect(counted).toBe(2);
    if (admitted.ok) admitted.settle(); // the insert was answered
    upstream = 0; // documents deleted: the background refresh sees it
    counts.start();
    await expect.poll(() => counts.estimate('shop_c'), { timeout: 5000, interval: 50 }).toBe(0);
    counts.stop();
    expect((await counts.admit('shop_c', 5, 5)).ok).toBe(true);
  });

  it('keeps admitted inserts that are not answered yet in the estimate, whatever a count says meanwhile', async () => {
    // The upstream does not hold the admitted documents yet (their insert is still on its way).
    let counted = 0;
    const counts = new DocumentCounts({ count: () => Promise.resolve((counted++, 0)) }, { refreshMS: 20 });
    const first = await counts.admit('shop_c', 5, 3);
    expect(first).toMatchObject({ ok: true, count: 3 });
    counts.start();
    // Background counts of 0 complete; the 3 documents in flight stay counted.
    await expect.poll(() => counted, { timeout: 5000, interval: 10 }).toBeGreaterThan(3);
    expect(counts.estimate('shop_c')).toBe(3);
    expect(await counts.admit('shop_c', 5, 3)).toEqual({ ok: false, count: 3 });
    // Once the insert is answered the counts are trusted again (here: the upstream still says 0).
    if (first.ok) first.settle();
    await expect.poll(() => counts.estimate('shop_c'), { timeout: 5000, interval: 25 }).toBe(0);
    counts.stop();
  });

  it('admits on the last estimate when the upstream cannot count', async () => {
    const counts = new DocumentCounts({ count: () => Promise.reject(new Error('down')) });
    expect(await counts.admit('shop_c', 1, 1)).toMatchObject({ ok: true, count: 1 });
    expect(await counts.admit('shop_c', 1, 1)).toEqual({ ok: false, count: 1 });
  });
});
