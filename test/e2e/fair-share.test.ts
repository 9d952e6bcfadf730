import { afterAll, beforeAll, beforeEach, describe, expect, inject, it, vi } from 'vitest';
import { Long, type Document } from 'bson';
import { MsgFlag } from '../../src/wire/index.js';
import { WireRelay } from '../../src/testing/relay.js';
import { RawClient, opMsg } from '../../src/testing/wire-client.js';
import { runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { httpGet, scrape, total } from '../observability/prom-text.js';

/**
 * One app never takes more than its share of the upstream (README, "Limits and data access"): while
 * `greedy` holds every upstream connection it may, leaves cursors open, stalls on a stuck upstream or
 * sends fire-and-forget writes from many connections, `calm` is served. The proxy reaches FerretDB
 * through a relay that can stall the replies to chosen requests (an upstream stuck on them).
 */

const WAIT_QUEUE_MS = 1000;
const REQUEST_TIMEOUT_MS = 3000;
const MAX_AWAIT_MS = 300;
const GREEDY = 'slug: greedy\nname: Greedy\nauth_required: false\nlimits:\n  upstream_connections: 2\n  open_cursors: 3\n';
const CALM = 'slug: calm\nname: Calm\nauth_required: false\n';

let relay: WireRelay;
let proxy: TestProxy;
let calm: RawClient;

async function rawAs(app: string): Promise<RawClient> {
  const raw = await RawClient.connect(proxy.port);
  const hello = await raw.command({ hello: 1, client: { application: { name: app } }, $db: 'admin' });
  expect(hello.ok).toBe(1);
  return raw;
}

async function appsEntry(slug: string): Promise<Document> {
  const apps = JSON.parse((await httpGet(proxy.httpPort, '/apps')).body) as { apps: Document[] };
  return apps.apps.find((a) => a.slug === slug)!;
}

/** calm's own find, answered from FerretDB. */
async function calmFind(): Promise<Document> {
  const reply = await calm.command({ find: 'notes', filter: {}, $db: 'app' });
  expect(reply).toMatchObject({ ok: 1, cursor: { firstBatch: [{ _id: 1, text: 'calm' }] } });
  return reply;
}

beforeAll(async () => {
  relay = await WireRelay.start(WireRelay.firstHost(inject('upstreamUri')));
  const upstream = WireRelay.uriThrough(inject('upstreamUri'), relay.port);
  proxy = await startTestProxy({
    apps: { 'greedy.yaml': GREEDY, 'calm.yaml': CALM },
    upstreamUri: upstream,
    runtimeYaml: runtimeYamlWithDatabase(uniqueDb('share'), {
      upstream:
        `  request_timeout_ms: ${REQUEST_TIMEOUT_MS}\n  max_await_time_ms: ${MAX_AWAIT_MS}\n` +
        `  pool:\n    max_size: 4\n    wait_queue_timeout_ms: ${WAIT_QUEUE_MS}\n`,
    }),
    runtime: { indexReconciler: false },
  });
  calm = await rawAs('calm');
  expect(await calm.command({ insert: 'notes', documents: [{ _id: 1, text: 'calm' }], $db: 'app' })).toMatchObject({ ok: 1, n: 1 });
});

afterAll(async () => {
  calm?.destroy();
  await proxy?.stop();
  await relay?.close();
});

beforeEach(() => relay.release());

describe("an app's share of the upstream", () => {
  it("limits.upstream_connections: greedy's third request waits for one of its own two connections, calm is served meanwhile", async () => {
    const clients = await Promise.all([rawAs('greedy'), rawAs('greedy'), rawAs('greedy')]);
    try {
      relay.stall('STALL-SHARE');
      const stuck = clients.map((c) => c.command({ find: 'items', filter: { marker: 'STALL-SHARE' }, $db: 'app' }));
      // Two reach the (stuck) upstream; the third waits in greedy's own queue, not in the pool's.
      await relay.stalledRequests(2);
      await vi.waitFor(async () => {
        const samples = await scrape(proxy.httpPort);
        expect(total(samples, 'mdb_upstream_connections_held', { app: 'greedy' })).toBe(2);
        expect(total(samples, 'mdb_upstream_connection_waiters', { app: 'greedy' })).toBe(1);
      });
      // The pool has 4 connections: calm gets one while greedy is stuck.
      await calmFind();
      expect(relay.stalled).toBe(2);
      const share = await appsEntry('greedy');
      expect(share.upstream_share).toMatchObject({ connections: { in_use: 2, waiting: 1, limit: 2 } });

      const replies = await Promise.all(stuck);
      // The waiting one gave up after the wait queue timeout (retryable, like an overloaded server);
      // the two stuck on the upstream after the request timeout (NetworkTimeout, their connections closed).
      const codes = replies.map((r) => r.code).sort();
      expect(codes).toEqual([462, 89, 89].sort());
      const waited = replies.find((r) => r.code === 462)!;
      expect(waited).toMatchObject({ ok: 0, codeName: 'IngressRequestRateLimitExceeded', errorLabels: ['SystemOverloadedError', 'RetryableError'] });
      expect(waited.errmsg).toContain('limits.upstream_connections');
      for (const r of replies.filter((x) => x.code === 89)) {
        expect(r).toMatchObject({ ok: 0, codeName: 'NetworkTimeout' });
        expect(r.errmsg).toContain('upstream.request_timeout_ms');
      }
      const samples = await scrape(proxy.httpPort);
      expect(total(samples, 'mdb_rejected_commands_total', { app: 'greedy', reason: 'upstream_connections' })).toBe(1);
      expect(total(samples, 'mdb_upstream_timeouts_total', { app: 'greedy' })).toBe(2);
      expect(total(samples, 'mdb_upstream_connections_held', { app: 'greedy' })).toBe(0);
      expect(await appsEntry('greedy')).toMatchObject({ upstream_share: { wait_timeouts: 1, upstream_timeouts: 2, connections: { in_use: 0, waiting: 0 } } });
      // The timed-out upstream connections were closed, not handed to the next request.
      await vi.waitFor(() => expect(relay.stalled).toBe(0));
      await calmFind();
    } finally {
      for (const c of clients) c.destroy();
    }
  });

  it('a moreToCome write gives its upstream connection back at once: many silent writers do not starve calm', async () => {
    const writers = await Promise.all(Array.from({ length: 8 }, () => rawAs('greedy')));
    try {
      writers.forEach((w, i) => w.send(opMsgMoreToCome({ insert: 'fire', documents: [{ _id: i }], writeConcern: { w: 0 }, $db: 'app' })));
      // Every write reaches the upstream, and none keeps a connection: the 8 writers stay connected
      // and idle, the pool has 4 connections, calm is answered.
      await vi.waitFor(() => expect(relay.commands('insert').filter((m) => m.moreToCome).length).toBeGreaterThanOrEqual(8));
      await vi.waitFor(async () => expect(total(await scrape(proxy.httpPort), 'mdb_upstream_connections_held', { app: 'greedy' })).toBe(0));
      await calmFind();
      const greedy = writers[0]!;
      const count = await greedy.command({ count: 'fire', $db: 'app' });
      expect(count).toMatchObject({ ok: 1, n: 8 });
      expect(writers.every((w) => w.isOpen)).toBe(true);
    } finally {
      for (const w of writers) w.destroy();
    }
  });

  it('limits.open_cursors: a command that would leave a fourth cursor open is refused and its cursor killed; single-batch reads still work', async () => {
    const greedy = await rawAs('greedy');
    try {
      await greedy.command({ insert: 'many', documents: Array.from({ length: 5 }, (_, i) => ({ _id: i })), $db: 'app' });
      const ids: Long[] = [];
      for (let i = 0; i < 3; i++) {
        const r = await greedy.command({ find: 'many', batchSize: 1, $db: 'app' });
        expect(r.ok).toBe(1);
        ids.push(Long.fromValue(r.cursor.id as number));
      }
      expect(await appsEntry('greedy')).toMatchObject({ upstream_share: { open_cursors: { open: 3, limit: 3 } } });
      const fourth = await greedy.command({ find: 'many', batchSize: 1, $db: 'app' });
      expect(fourth).toMatchObject({ ok: 0, code: 96, codeName: 'OperationFailed' });
      expect(fourth.errmsg).toContain('limits.open_cursors');
      // The killed cursor never counted; a read that needs no cursor is served.
      const all = await greedy.command({ find: 'many', $db: 'app' });
      expect(all).toMatchObject({ ok: 1 });
      expect(all.cursor.firstBatch).toHaveLength(5);
      // calm's cursors are its own business.
      expect(await calm.command({ find: 'notes', batchSize: 0, $db: 'app' })).toMatchObject({ ok: 1 });
      // Closing one of greedy's makes room for another.
      expect(await greedy.command({ killCursors: 'many', cursors: [ids[0]!], $db: 'app' })).toMatchObject({ ok: 1, cursorsKilled: [ids[0]!.toNumber()] });
      const again = await greedy.command({ find: 'many', batchSize: 1, $db: 'app' });
      expect(again.ok).toBe(1);
      const samples = await scrape(proxy.httpPort);
      expect(total(samples, 'mdb_rejected_commands_total', { app: 'greedy', reason: 'open_cursors' })).toBe(1);
      expect(total(samples, 'mdb_open_cursors', { app: 'greedy' })).toBe(3);
      expect(await appsEntry('greedy')).toMatchObject({ upstream_share: { cursor_refusals: 1 } });
      await greedy.command({ killCursors: 'many', cursors: [ids[1]!, ids[2]!, Long.fromValue(again.cursor.id as number)], $db: 'app' });
    } finally {
      greedy.destroy();
    }
  });

  it('the maxTimeMS of a getMore on an awaitData cursor is capped (upstream.max_await_time_ms)', async () => {
    const greedy = await rawAs('greedy');
    try {
      expect(await greedy.command({ create: 'log', capped: true, size: 65536, $db: 'app' })).toMatchObject({ ok: 1 });
      await greedy.command({ insert: 'log', documents: [{ _id: 1 }], $db: 'app' });
      const opened = await greedy.command({ find: 'log', tailable: true, awaitData: true, batchSize: 1, $db: 'app' });
      expect(opened).toMatchObject({ ok: 1 });
      const id = Long.fromValue(opened.cursor.id as number);
      expect(id.isZero()).toBe(false);
      const more = await greedy.command({ getMore: id, collection: 'log', maxTimeMS: Long.fromNumber(600_000), $db: 'app' });
      expect(more, JSON.stringify(more)).toMatchObject({ ok: 1, cursor: { nextBatch: [] } });
      const sent = relay.commands('getMore').at(-1)!;
      expect(Number(sent.body.maxTimeMS)).toBe(MAX_AWAIT_MS);
      expect(total(await scrape(proxy.httpPort), 'mdb_await_time_capped_total', { app: 'greedy' })).toBe(1);
      // A getMore that asks for less than the cap is sent as asked.
      await greedy.command({ getMore: id, collection: 'log', maxTimeMS: 50, $db: 'app' });
      expect(Number(relay.commands('getMore').at(-1)!.body.maxTimeMS)).toBe(50);
      await greedy.command({ killCursors: 'log', cursors: [id], $db: 'app' });
    } finally {
      greedy.destroy();
    }
  });
});

function opMsgMoreToCome(doc: Document): Buffer {
  return opMsg(doc, { flags: MsgFlag.MORE_TO_COME });
}
