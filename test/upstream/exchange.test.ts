import { describe, expect, it } from 'vitest';
import { serialize } from 'bson';
import { Exchange, type UpstreamShare } from '../../src/upstream/exchange.js';
import { ClientGoneError, UnreachableError } from '../../src/upstream/errors.js';
import { UpstreamTimeoutError } from '../../src/upstream/connection.js';
import { AcquireAbandonedError, type ConnectionPool } from '../../src/upstream/pool.js';
import { encodeOpMsg } from '../../src/wire/opmsg.js';
import { AppEntry } from '../../src/session/app-usage.js';

/** One client's round trips (the app's slot, a pooled connection, the timeout) over a fake pool. */

const msg = encodeOpMsg(1, 0, 0, Buffer.from(serialize({ ping: 1, $db: 'admin' })));
const reply = encodeOpMsg(2, 0, 0, Buffer.from(serialize({ ok: 1 })));

function fakePool(behaviour: { acquire?: () => Promise<unknown>; roundTrip?: () => Promise<Buffer> }) {
  const log: string[] = [];
  const conn = {
    send: () => log.push('send'),
    roundTrip: (_out: Buffer, _id: number, timeoutMS: number) => {
      log.push(`roundTrip ${timeoutMS}`);
      return behaviour.roundTrip ? behaviour.roundTrip() : Promise.resolve(reply);
    },
  };
  const pool = {
    tryAcquire: () => (behaviour.acquire ? undefined : conn),
    acquire: () => behaviour.acquire!(),
    release: () => log.push('release'),
    discard: () => log.push('discard'),
  } as unknown as ConnectionPool;
  return { pools: { pool: () => pool }, log };
}

const client = (gone = false) => ({ gone, signal: new AbortController().signal });

function share(usage: AppEntry, connections = 1): UpstreamShare {
  return { usage, connections, waitMS: 50, overShare: () => new Error('over share') };
}

describe('Exchange', () => {
  it('sends, times the round trip, and gives the connection and the slot back', async () => {
    const { pools, log } = fakePool({});
    const usage = new AppEntry('shop');
    const timing = { upstreamMS: -1 };
    const got = await new Exchange(pools, client(), true).send('a:1', msg, false, 1234, share(usage), timing);
    expect(got).toBe(reply);
    expect(log).toEqual(['roundTrip 1234', 'release']);
    expect(timing.upstreamMS).toBeGreaterThanOrEqual(0);
    expect(usage.upstreamInUse).toBe(0);
  });

  it('writes a moreToCome message and waits for nothing', async () => {
    const { pools, log } = fakePool({});
    expect(await new Exchange(pools, client(), false).send('a:1', msg, true, 1000, undefined, { upstreamMS: -1 })).toBeUndefined();
    expect(log).toEqual(['send', 'release']);
  });

  it('sends nothing for a client that left', async () => {
    const { pools, log } = fakePool({});
    await expect(new Exchange(pools, client(true), false).send('a:1', msg, false, 1000, undefined, { upstreamMS: -1 })).rejects.toBeInstanceOf(ClientGoneError);
    expect(log).toEqual([]);
  });

  it('says unreachable when no pooled connection could be had, and client gone when it left the queue', async () => {
    const failing = fakePool({ acquire: () => Promise.reject(new Error('connect ECONNREFUSED')) });
    await expect(new Exchange(failing.pools, client(), false).send('a:1', msg, false, 1000, undefined, { upstreamMS: -1 })).rejects.toMatchObject({
      constructor: UnreachableError,
      detail: 'connect ECONNREFUSED',
    });
    const abandoned = fakePool({ acquire: () => Promise.reject(new AcquireAbandonedError('a:1')) });
    await expect(new Exchange(abandoned.pools, client(), false).send('a:1', msg, false, 1000, undefined, { upstreamMS: -1 })).rejects.toBeInstanceOf(ClientGoneError);
  });

  it('discards the connection of a late reply and counts the timeout against the app', async () => {
    const { pools, log } = fakePool({ roundTrip: () => Promise.reject(new UpstreamTimeoutError('a:1', 5)) });
    const usage = new AppEntry('shop');
    await expect(new Exchange(pools, client(), false).send('a:1', msg, false, 5, share(usage), { upstreamMS: -1 })).rejects.toBeInstanceOf(UpstreamTimeoutError);
    expect(log).toEqual(['roundTrip 5', 'discard']);
    expect([usage.upstreamTimeouts, usage.upstreamInUse]).toEqual([1, 0]);
  });

  it("refuses with the share's error when the app's slots stay taken", async () => {
    const { pools } = fakePool({});
    const usage = new AppEntry('shop');
    expect(usage.tryTakeUpstreamSlot(1)).toBe(true);
    expect(usage.tryTakeUpstreamSlot(1)).toBe(false);
    await expect(new Exchange(pools, client(), false).send('a:1', msg, false, 1000, share(usage), { upstreamMS: -1 })).rejects.toThrow('over share');
    expect(usage.upstreamWaitTimeouts).toBe(1);
  });
});
