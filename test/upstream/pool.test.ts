import net from 'node:net';
import { afterAll, beforeAll, describe, expect, it, inject } from 'vitest';
import { MongoClient } from 'mongodb';
import { ConnectionPool } from '../../src/upstream/pool.js';
import { CursorRegistry } from '../../src/upstream/cursors.js';
import { TransactionPins } from '../../src/upstream/pins.js';
import { UpstreamError } from '../../src/upstream/errors.js';
import type { UpstreamConnectOptions } from '../../src/upstream/connection.js';
import { freePort } from '../../src/testing/ports.js';

const options: UpstreamConnectOptions = { connectTimeoutMS: 2000, appName: 'pool-test', driverVersion: 'test' };

/** The upstream's address as the driver reports it (host:port), from the test upstream URI. */
async function upstreamAddress(): Promise<string> {
  const client = new MongoClient(inject('upstreamUri'));
  await client.connect();
  const hello = await client.db('admin').command({ hello: 1 });
  await client.close();
  const uri = new URL(inject('upstreamUri').replace(/^mongodb(\+srv)?:/, 'http:'));
  return typeof hello.primary === 'string' ? hello.primary : `${uri.hostname}:${uri.port || 27017}`;
}

describe('ConnectionPool against the real upstream', () => {
  let address: string;
  let pool: ConnectionPool;
  beforeAll(async () => {
    address = await upstreamAddress();
    pool = new ConnectionPool(address, options, { maxSize: 2, maxIdleTimeMS: 60_000, waitQueueTimeoutMS: 500 });
  });
  afterAll(async () => {
    await pool.close();
  });

  it('opens handshaken connections that run commands', async () => {
    const conn = await pool.acquire();
    expect(conn.hello.maxWireVersion).toBeGreaterThanOrEqual(6);
    expect((await conn.command({ ping: 1, $db: 'admin' })).ok).toBe(1);
    pool.release(conn);
    expect(pool.size).toBe(1);
    // The idle connection is reused, not reopened.
    const again = await pool.acquire();
    expect(again).toBe(conn);
    pool.release(again);
  });

  it('makes requests beyond maxSize wait, hands released connections to waiters in order', async () => {
    const a = await pool.acquire();
    const b = await pool.acquire();
    expect(pool.size).toBe(2);
    const order: string[] = [];
    const w1 = pool.acquire().then((c) => (order.push('w1'), c));
    const w2 = pool.acquire().then((c) => (order.push('w2'), c));
    expect(pool.waiting).toBe(2);
    pool.release(a);
    const c1 = await w1;
    expect(c1).toBe(a);
    pool.release(b);
    const c2 = await w2;
    expect(c2).toBe(b);
    expect(order).toEqual(['w1', 'w2']);
    pool.release(c1);
    pool.release(c2);
    expect(pool.size).toBe(2);
  });

  it('fails a waiter after waitQueueTimeoutMS instead of hanging', async () => {
    const a = await pool.acquire();
    const b = await pool.acquire();
    await expect(pool.acquire()).rejects.toBeInstanceOf(UpstreamError);
    expect(pool.waiting).toBe(0);
    pool.release(a);
    pool.release(b);
  });

  it('replaces a discarded connection', async () => {
    const a = await pool.acquire();
    const b = await pool.acquire();
    const waiter = pool.acquire();
    pool.discard(a);
    const fresh = await waiter;
    expect(fresh).not.toBe(a);
    expect(a.isClosed).toBe(true);
    expect((await fresh.command({ ping: 1, $db: 'admin' })).ok).toBe(1);
    pool.release(fresh);
    pool.release(b);
    expect(pool.size).toBe(2);
  });
});

describe('ConnectionPool when the upstream is unreachable', () => {
  it('rejects with UpstreamError and frees the slot', async () => {
    const port = await freePort();
    const pool = new ConnectionPool(`127.0.0.1:${port}`, options, { maxSize: 1, maxIdleTimeMS: 1000, waitQueueTimeoutMS: 500 });
    await expect(pool.acquire()).rejects.toBeInstanceOf(UpstreamError);
    expect(pool.size).toBe(0);
    await expect(pool.acquire()).rejects.toThrow(/cannot connect/);
    await pool.close();
  });

  it('times out a connect that is never answered', async () => {
    // A listener that accepts and says nothing: the handshake must not wait forever.
    const silent = net.createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    const { port } = silent.address() as net.AddressInfo;
    const pool = new ConnectionPool(`127.0.0.1:${port}`, { ...options, connectTimeoutMS: 300 }, { maxSize: 1, maxIdleTimeMS: 1000, waitQueueTimeoutMS: 5000 });
    const started = Date.now();
    await expect(pool.acquire()).rejects.toBeInstanceOf(UpstreamError);
    expect(Date.now() - started).toBeLessThan(5000);
    await pool.close();
    silent.close();
  });
});

describe('CursorRegistry', () => {
  it('routes a cursor to the server that opened it, for its owner only', () => {
    const reg = new CursorRegistry();
    reg.register(42n, 'a:1', 'app1');
    expect(reg.lookup(42n, 'app1')?.address).toBe('a:1');
    expect(reg.lookup(42n, 'app2')).toBeUndefined();
    expect(reg.lookup(43n, 'app1')).toBeUndefined();
    reg.remove(42n);
    expect(reg.lookup(42n, 'app1')).toBeUndefined();
    expect(reg.size).toBe(0);
    reg.close();
  });
});

describe('TransactionPins', () => {
  it('keeps a transaction on the server that started it until unpinned', () => {
    const pins = new TransactionPins();
    pins.pin('app\0abc', 'mongos1:27017');
    expect(pins.lookup('app\0abc')).toBe('mongos1:27017');
    expect(pins.lookup('other\0abc')).toBeUndefined();
    pins.unpin('app\0abc');
    expect(pins.lookup('app\0abc')).toBeUndefined();
    pins.close();
  });
});
