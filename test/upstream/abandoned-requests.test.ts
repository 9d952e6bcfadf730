import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { MongoClient } from 'mongodb';
import { AcquireAbandonedError, ConnectionPool } from '../../src/upstream/pool.js';
import { CursorRegistry, groupCursors, sessionKey, type CursorTarget } from '../../src/upstream/cursors.js';
import type { UpstreamConnectOptions } from '../../src/upstream/connection.js';
import { Binary } from 'bson';

const options: UpstreamConnectOptions = { connectTimeoutMS: 2000, appName: 'abandon-test', driverVersion: 'test' };

async function upstreamAddress(): Promise<string> {
  const client = new MongoClient(inject('upstreamUri'));
  await client.connect();
  const hello = await client.db('admin').command({ hello: 1 });
  await client.close();
  const uri = new URL(inject('upstreamUri').replace(/^mongodb(\+srv)?:/, 'http:'));
  return typeof hello.primary === 'string' ? hello.primary : `${uri.hostname}:${uri.port || 27017}`;
}

describe('ConnectionPool: a waiter whose request is abandoned leaves the wait queue', () => {
  let pool: ConnectionPool;
  beforeAll(async () => {
    pool = new ConnectionPool(await upstreamAddress(), options, { maxSize: 1, maxIdleTimeMS: 60_000, waitQueueTimeoutMS: 10_000 });
  });
  afterAll(async () => {
    await pool.close();
  });

  it('rejects with AcquireAbandonedError, is not counted a failure, and takes no connection', async () => {
    const busy = await pool.acquire();
    const abandoned = new AbortController();
    const first = pool.acquire(abandoned.signal);
    const second = pool.acquire();
    expect(pool.waiting).toBe(2);
    const failuresBefore = pool.waits.failures;
    abandoned.abort();
    await expect(first).rejects.toBeInstanceOf(AcquireAbandonedError);
    expect(pool.waiting).toBe(1);
    expect(pool.waits.failures).toBe(failuresBefore);
    // The connection freed goes to the waiter behind the abandoned one.
    pool.release(busy);
    expect(await second).toBe(busy);
    expect(pool.waiting).toBe(0);
    pool.release(busy);
  });

  it('an already aborted signal does not queue at all; a served waiter ignores a later abort', async () => {
    const busy = await pool.acquire();
    const gone = new AbortController();
    gone.abort();
    await expect(pool.acquire(gone.signal)).rejects.toBeInstanceOf(AcquireAbandonedError);
    expect(pool.waiting).toBe(0);
    const later = new AbortController();
    const served = pool.acquire(later.signal);
    pool.release(busy);
    const conn = await served;
    later.abort(); // served already: nothing happens
    expect(conn).toBe(busy);
    expect(pool.inUse).toBe(1);
    pool.release(conn);
    expect(pool.inUse).toBe(0);
  });
});

describe('CursorRegistry: sessions, ownership and the idle sweep', () => {
  const uuid = (b: number) => new Binary(Buffer.alloc(16, b), Binary.SUBTYPE_UUID);

  it('ends the cursors of the ended sessions of their owner only', () => {
    const reg = new CursorRegistry();
    const s1 = sessionKey({ id: uuid(1) })!;
    const s2 = sessionKey({ id: uuid(2) })!;
    expect(s1).toBe('01'.repeat(16));
    reg.register(1n, 'a:1', 'alpha', undefined, 'db.alpha_c', s1);
    reg.register(2n, 'a:1', 'alpha', undefined, 'db.alpha_d', s1);
    reg.register(3n, 'a:1', 'alpha', undefined, 'db.alpha_c', s2);
    reg.register(4n, 'a:1', 'beta', undefined, 'db.beta_c', s1); // (mapped ids never collide across apps; still owner-checked)
    reg.register(5n, 'a:1', 'alpha', undefined, 'db.alpha_c'); // no session
    expect(reg.endSessions('alpha', [s1])).toEqual([
      { id: 1n, address: 'a:1', ns: 'db.alpha_c' },
      { id: 2n, address: 'a:1', ns: 'db.alpha_d' },
    ]);
    expect(reg.size).toBe(3);
    expect(reg.lookup(4n, 'beta')).toBeDefined();
    expect(reg.endSessions('alpha', [s1])).toEqual([]);
    // A cursor removed otherwise (exhausted, killed) is no longer one of its session's.
    reg.remove(3n);
    expect(reg.endSessions('alpha', [s2])).toEqual([]);
    expect(reg.size).toBe(2);
    reg.close();
  });

  it('the idle sweep forgets cursors idle past the timeout and hands them over to be killed', () => {
    const reg = new CursorRegistry(60_000);
    const expired: CursorTarget[][] = [];
    reg.onExpired = (cursors) => expired.push(cursors);
    reg.register(7n, 'a:1', 'alpha', undefined, 'db.alpha_c');
    reg.register(8n, 'b:1', 'alpha', undefined, 'db.alpha_c');
    expect(reg.sweep(Date.now() + 30_000)).toEqual([]);
    expect(expired).toEqual([]);
    reg.sweep(Date.now() + 61_000);
    expect(expired).toEqual([
      [
        { id: 7n, address: 'a:1', ns: 'db.alpha_c' },
        { id: 8n, address: 'b:1', ns: 'db.alpha_c' },
      ],
    ]);
    expect(reg.size).toBe(0);
    reg.close();
  });

  it('groups cursors to kill by server and namespace', () => {
    const groups = groupCursors([
      { id: 1n, address: 'a:1', ns: 'd.x' },
      { id: 2n, address: 'a:1', ns: 'd.y' },
      { id: 3n, address: 'a:1', ns: 'd.x' },
      { id: 4n, address: 'b:1', ns: 'd.x' },
    ]);
    expect([...groups].map(([a, byNs]) => [a, [...byNs]])).toEqual([
      ['a:1', [['d.x', [1n, 3n]], ['d.y', [2n]]]],
      ['b:1', [['d.x', [4n]]]],
    ]);
  });
});
