import { describe, expect, it } from 'vitest';
import { Binary, serialize, type Document } from 'bson';
import { TransactionPins } from '../../src/upstream/pins.js';
import { Router, type RoutedCommand } from '../../src/upstream/routing.js';
import { ReplyView } from '../../src/wire/reply-status.js';
import { CursorRegistry, type CursorTarget } from '../../src/upstream/cursors.js';
import { trackCursor, planKill, endSessionCursors, type CursorReply } from '../../src/upstream/cursor-ops.js';
import { Long } from 'bson';

/** Routing, transaction pins and cursor bookkeeping from reply views, without an upstream. */

const view = (doc: Document): ReplyView => new ReplyView(Buffer.from(serialize(doc)));
const lsid = (byte: number) => ({ id: new Binary(Buffer.alloc(16, byte), 4) });

function router(addresses: string[]) {
  const pins = new TransactionPins();
  let next = 0;
  const r = new Router({
    selectNow: () => undefined,
    select: async () => ({ address: addresses[next++ % addresses.length]!, type: 'Mongos', maxWireVersion: 21 }),
    pins,
  });
  return { r, pins };
}

describe('TransactionPins', () => {
  it('pins, looks up and unpins a transaction', () => {
    const pins = new TransactionPins();
    pins.pin('shop\0aa', 'mongos-1:27017');
    expect(pins.lookup('shop\0aa')).toBe('mongos-1:27017');
    expect(pins.lookup('shop\0bb')).toBeUndefined();
    pins.unpin('shop\0aa');
    expect(pins.lookup('shop\0aa')).toBeUndefined();
    pins.close();
  });
});

describe('Router', () => {
  const start = (s: number): RoutedCommand => ({ cmd: { startTransaction: true, autocommit: false, lsid: lsid(s) }, transactionControl: false, owner: 'shop' });
  const statement = (s: number): RoutedCommand => ({ cmd: { autocommit: false, lsid: lsid(s) }, transactionControl: false, owner: 'shop' });
  const commit = (s: number): RoutedCommand => ({ cmd: { autocommit: false, lsid: lsid(s) }, transactionControl: true, owner: 'shop' });

  it('routes a transaction to the server that started it, and releases the pin on a committed reply', async () => {
    const { r, pins } = router(['a:1', 'b:1', 'c:1']);
    expect(await r.route(start(1))).toBe('a:1');
    expect(await r.route(statement(1))).toBe('a:1');
    expect(await r.route(commit(1))).toBe('a:1');
    r.settle(commit(1), 'commitTransaction', view({ ok: 1 }));
    // The pin is gone: the session's next command goes wherever selection says.
    expect(await r.route(commit(1))).toBe('b:1');
    expect(pins.lookup('shop\0' + Buffer.alloc(16, 1).toString('hex'))).toBeUndefined();
  });

  it('keeps the pin when a commit failed (the driver retries it on the same server), releases it on abort', async () => {
    const { r } = router(['a:1', 'b:1', 'c:1']);
    expect(await r.route(start(2))).toBe('a:1');
    r.settle(commit(2), 'commitTransaction', view({ ok: 1, writeConcernError: { code: 64, errmsg: 'timeout' } }));
    expect(await r.route(commit(2))).toBe('a:1');
    r.settle(commit(2), 'abortTransaction', view({ ok: 0, code: 251, errmsg: 'no such transaction' }));
    expect(await r.route(commit(2))).toBe('b:1');
  });

  it('does not route pins of another app or session', async () => {
    const { r } = router(['a:1', 'b:1']);
    expect(await r.route(start(3))).toBe('a:1');
    expect(await r.route({ ...statement(3), owner: 'blog' })).toBe('b:1');
    expect(await r.route(statement(4))).toBe('a:1');
  });

  it('answers at once outside transactions, and says unreachable when nothing can be selected', async () => {
    const pins = new TransactionPins();
    const r = new Router({ selectNow: () => ({ address: 'p:1', type: 'RSPrimary', maxWireVersion: 21 }), select: () => Promise.reject(new Error('no primary')), pins });
    expect(r.routeNow({}, false)).toBe('p:1');
    expect(r.routeNow(start(5).cmd, false)).toBeUndefined();
    expect(r.routeNow({}, true)).toBeUndefined();
    await expect(r.route(start(5))).rejects.toMatchObject({ name: 'UnreachableError', detail: 'no primary' });
  });
});

describe('ReplyView', () => {
  it('reads failure, code, cursor and counts in one walk', () => {
    const v = view({ cursor: { firstBatch: [{ a: 1 }, { a: 2 }], id: Long.fromBigInt(77n), ns: 'apps.shop_tasks' }, ok: 1 });
    expect([v.failed, v.hasCursor, v.cursorId, v.cursorNs, v.documents]).toEqual([false, true, 77n, 'apps.shop_tasks', 2]);
    const e = view({ ok: 0, code: 43, errmsg: 'cursor not found' });
    expect([e.failed, e.code, e.hasCursor, e.documents]).toEqual([true, 43, false, undefined]);
    expect(view({ n: 3, writeErrors: [{ index: 0, code: 11000 }], ok: 1 })).toMatchObject({ failed: true, documents: 3 });
    expect(view({ values: [1, 2, 3], ok: 1 }).documents).toBe(3);
    expect(view({ value: null, ok: 1 }).documents).toBe(0);
    // A `values` that is not an array is not distinct's: findAndModify's value counts.
    expect(view({ values: 'x', value: { a: 1 }, ok: 1 }).documents).toBe(1);
    expect(view({ ok: 1, cursor: { id: Long.ZERO, ns: 'x.y', nextBatch: [{}] } })).toMatchObject({ cursorId: 0n, documents: 1 });
  });
});

describe('cursor operations', () => {
  const base: CursorReply = { effect: 'opens', requested: undefined, address: 'a:1', owner: 'shop', view: 'v', lsid: lsid(9), awaitData: false, clientGone: false, limit: 2 };
  const opened = (id: bigint) => view({ cursor: { firstBatch: [], id: Long.fromBigInt(id), ns: 'apps.shop_t' }, ok: 1 });

  it('registers opened cursors, kills orphans and those over the limit, forgets exhausted ones', () => {
    const registry = new CursorRegistry();
    const killed: [CursorTarget[], string][] = [];
    const kill = (t: CursorTarget[], r: string) => void killed.push([t, r]);
    expect(trackCursor(registry, kill, base, opened(1n))).toBe('ok');
    expect(trackCursor(registry, kill, { ...base, clientGone: true }, opened(2n))).toBe('orphaned');
    expect(trackCursor(registry, kill, base, opened(3n))).toBe('ok');
    expect(trackCursor(registry, kill, base, opened(4n))).toBe('over_limit');
    expect(killed).toEqual([
      [[{ id: 2n, address: 'a:1', ns: 'apps.shop_t' }], 'client_closed'],
      [[{ id: 4n, address: 'a:1', ns: 'apps.shop_t' }], 'open_cursors_limit'],
    ]);
    expect(registry.countOf('shop')).toBe(2);
    const exhausted = view({ cursor: { nextBatch: [], id: Long.ZERO, ns: 'apps.shop_t' }, ok: 1 });
    expect(trackCursor(registry, kill, { ...base, effect: 'continues', requested: 1n }, exhausted)).toBe('ok');
    expect(trackCursor(registry, kill, { ...base, effect: 'continues', requested: 3n }, view({ ok: 0, code: 43 }))).toBe('ok');
    expect(registry.countOf('shop')).toBe(0);
    registry.close();
  });

  it('plans a client killCursors over the app own cursors only, and ends sessions', () => {
    const registry = new CursorRegistry();
    registry.register(1n, 'a:1', 'shop', undefined, 'apps.shop_t');
    registry.register(2n, 'b:1', 'blog', undefined, 'apps.blog_t');
    registry.register(3n, 'a:1', 'shop', undefined, 'apps.shop_t', Buffer.alloc(16, 9).toString('hex'));
    const plan = planKill(registry, 'shop', [Long.fromBigInt(1n), Long.fromBigInt(2n)]);
    expect([...plan.byAddress.keys()]).toEqual(['a:1']);
    expect(plan.notFound.map(String)).toEqual(['2']);
    expect(registry.lookup(1n, 'shop')).toBeUndefined();
    const ended: CursorTarget[] = [];
    endSessionCursors(registry, (t) => void ended.push(...t), 'shop', [lsid(9)]);
    expect(ended).toEqual([{ id: 3n, address: 'a:1', ns: 'apps.shop_t' }]);
    expect(registry.lookup(2n, 'blog')).toBeDefined();
    registry.close();
  });
});
