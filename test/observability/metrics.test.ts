import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { Binary, Long, type Document } from 'bson';
import { connect, runtimeYamlWithDatabase, startTestProxy, uniqueDb, type TestProxy } from '../helpers/proxy.js';
import { RawClient, opMsg } from '../../src/testing/wire-client.js';
import { decodeReply } from '../session/raw-helpers.js';
import { seconds, sign } from '../helpers/apps.js';
import { httpGet, parsePrometheus, scrape, select, total, type Sample } from './prom-text.js';
import type { AppsDocument } from '../../src/observability/apps-view.js';

/**
 * After a scripted workload through the proxy (two apps, known numbers of each command,
 * failures of every kind), the scraped metrics equal those numbers exactly. The workload speaks raw
 * OP_MSG so that nothing else (driver monitoring, handshakes, endSessions) adds to the counts, and so
 * that the bytes each side sent are known to the byte.
 */

const ALPHA_SECRET = 'metrics-alpha-secret-'.padEnd(48, 'a');
const OTHER_SECRET = 'metrics-other-secret-'.padEnd(48, 'o');
const UNAUTH = '_unauthenticated';

let proxy: TestProxy;

beforeAll(async () => {
  process.env.OBS_METRICS_ALPHA_SECRET = ALPHA_SECRET;
  proxy = await startTestProxy({
    logLevel: 'info',
    apps: {
      'alpha.yaml': 'slug: alpha\nauth:\n  jwt:\n    secret_env: OBS_METRICS_ALPHA_SECRET\n',
      'beta.yaml': 'slug: beta\nauth_required: false\n',
    },
    runtime: { processMetrics: false },
  });
});

afterAll(async () => {
  await proxy?.stop();
  delete process.env.OBS_METRICS_ALPHA_SECRET;
});

type Outcome = 'ok' | 'error' | 'rejected' | 'failed';

/** What the workload did, as the metrics must count it. */
class Expected {
  readonly ops = new Map<string, number>();
  readonly upstream = new Map<string, number>();
  readonly rejected = new Map<string, number>();
  readonly received = new Map<string, number>();
  readonly sent = new Map<string, number>();

  add(map: Map<string, number>, key: string, n = 1): void {
    map.set(key, (map.get(key) ?? 0) + n);
  }
}

const expected = new Expected();

/** A raw connection whose requests are counted under `label` (changed once it authenticates). */
class Conn {
  constructor(
    readonly raw: RawClient,
    public label: string,
  ) {}

  static async open(label = UNAUTH): Promise<Conn> {
    return new Conn(await RawClient.connect(proxy.port), label);
  }

  /**
   * Sends `doc` and reads the reply, recording what the metrics should count: the command label, the
   * outcome, whether it reached the upstream, and the rejection reason.
   */
  async run(doc: Document, command: string, outcome: Outcome, how: { upstream?: boolean; reason?: string } = {}): Promise<Document> {
    const label = this.label;
    const bytes = opMsg(doc);
    this.raw.send(bytes);
    const msg = await this.raw.nextMessage();
    expected.add(expected.received, label, bytes.length);
    expected.add(expected.sent, label, msg.length);
    expected.add(expected.ops, `${label}|${command}|${outcome}`);
    if (how.upstream) expected.add(expected.upstream, `${label}|${command}`);
    if (how.reason) expected.add(expected.rejected, `${label}|${how.reason}`);
    return decodeReply(msg).doc;
  }
}

const plain = (user: string, token: string) => ({
  saslStart: 1,
  mechanism: 'PLAIN',
  payload: new Binary(Buffer.from(`\0${user}\0${token}`)),
  $db: '$external',
});

const conns: Conn[] = [];

async function workload(): Promise<void> {
  const good = await sign({ app: 'alpha', exp: seconds() + 600 }, 'HS256', ALPHA_SECRET);
  const forged = await sign({ app: 'alpha', exp: seconds() + 600 }, 'HS256', OTHER_SECRET);

  // ---- alpha over PLAIN: one failed attempt (wrong key), then a good one.
  const a = await Conn.open();
  conns.push(a);
  expect((await a.run({ hello: 1, $db: 'admin' }, 'hello', 'ok')).ok).toBe(1);
  expect((await a.run(plain('alpha', forged), 'saslStart', 'error')).code).toBe(18);
  expect((await a.run(plain('alpha', good), 'saslStart', 'ok')).done).toBe(true);
  a.label = 'alpha';
  for (let i = 0; i < 3; i++) {
    const r = await a.run({ insert: 'items', documents: [{ n: 2 * i }, { n: 2 * i + 1 }], $db: 'app' }, 'insert', 'ok', { upstream: true });
    expect(r).toMatchObject({ ok: 1, n: 2 });
  }
  const opened = await a.run({ find: 'items', filter: {}, batchSize: 2, $db: 'app' }, 'find', 'ok', { upstream: true });
  const cursorId = (opened.cursor as { id: Long }).id;
  expect(cursorId.isZero()).toBe(false);
  expect((await a.run({ getMore: cursorId, collection: 'items', batchSize: 2, $db: 'app' }, 'getMore', 'ok', { upstream: true })).ok).toBe(1);
  const killed = await a.run({ killCursors: 'items', cursors: [cursorId], $db: 'app' }, 'killCursors', 'ok', { upstream: true });
  expect(killed.cursorsKilled).toHaveLength(1);
  expect((await a.run({ find: 'items', filter: { n: { $gte: 3 } }, $db: 'app' }, 'find', 'ok', { upstream: true })).ok).toBe(1);
  // Left open: the open-cursors gauge shows it.
  const left = await a.run({ find: 'items', filter: {}, batchSize: 1, $db: 'app' }, 'find', 'ok', { upstream: true });
  expect((left.cursor as { id: Long }).id.isZero()).toBe(false);
  // A filter the upstream refuses ($in needs an array): the command ran and answered an error.
  const bad = await a.run({ find: 'items', filter: { n: { $in: 5 } }, $db: 'app' }, 'find', 'error', { upstream: true });
  expect(bad.ok).toBe(0);
  // Refused by the proxy, each for its own reason.
  expect((await a.run({ serverStatus: 1, $db: 'admin' }, 'serverStatus', 'rejected', { reason: 'server_wide' })).code).toBe(13);
  expect((await a.run({ frobnicate: 1, $db: 'app' }, 'unknown', 'rejected', { reason: 'unknown_command' })).code).toBe(59);
  expect((await a.run({ getMore: Long.fromNumber(424242), collection: 'items', $db: 'app' }, 'getMore', 'rejected', { reason: 'cursor_not_found' })).code).toBe(43);
  const tagged = await a.run({ insert: 'items', documents: [{ n: 99, app_id: 'beta' }], $db: 'app' }, 'insert', 'rejected', { reason: 'policy' });
  expect(tagged.ok).toBe(0);
  expect((await a.run({ count: 'items', query: {}, $db: 'app' }, 'count', 'ok', { upstream: true })).n).toBe(6);

  // ---- beta, a dev app selected by appName alone.
  const b = await Conn.open();
  conns.push(b);
  const hello = { hello: 1, client: { application: { name: 'beta' }, driver: { name: 'raw', version: '1' }, os: { type: 'linux' } }, $db: 'admin' };
  expect((await b.run(hello, 'hello', 'ok')).ok).toBe(1);
  b.label = 'beta';
  for (let i = 0; i < 2; i++) await b.run({ insert: 'notes', documents: [{ i }], $db: 'app' }, 'insert', 'ok', { upstream: true });
  expect((await b.run({ delete: 'notes', deletes: [{ q: { i: 0 }, limit: 1 }], $db: 'app' }, 'delete', 'ok', { upstream: true })).n).toBe(1);
  expect((await b.run({ aggregate: 'notes', pipeline: [{ $match: {} }], cursor: {}, $db: 'app' }, 'aggregate', 'ok', { upstream: true })).ok).toBe(1);
  const mr = await b.run({ mapReduce: 'notes', map: 'function(){}', reduce: 'function(){}', out: { inline: 1 }, $db: 'app' }, 'mapReduce', 'rejected', {
    reason: 'server_js',
  });
  expect(mr.code).toBe(224);

  // ---- a connection that never authenticates.
  const c = await Conn.open();
  conns.push(c);
  expect((await c.run({ ping: 1, $db: 'admin' }, 'ping', 'ok')).ok).toBe(1);
  expect((await c.run({ find: 'items', filter: {}, $db: 'app' }, 'find', 'rejected', { reason: 'unauthenticated' })).code).toBe(13);
  expect((await c.run(plain('alpha', 'not-a-token'), 'saslStart', 'error')).code).toBe(18);
  const scram = { saslStart: 1, mechanism: 'SCRAM-SHA-256', payload: new Binary(Buffer.from('n,,n=alpha,r=abc')), $db: 'admin' };
  expect((await c.run(scram, 'saslStart', 'error')).code).toBe(18);
}

/** The samples of `name` as "label|label|..." → value, for the given label names. */
function byLabels(samples: readonly Sample[], name: string, labelNames: readonly string[]): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of select(samples, name)) {
    const key = labelNames.map((l) => s.labels[l] ?? '').join('|');
    out.set(key, (out.get(key) ?? 0) + s.value);
  }
  return out;
}

/** A map without its zero entries, sorted (for toEqual). */
function nonZero(map: Map<string, number>): Record<string, number> {
  return Object.fromEntries([...map].filter(([, v]) => v !== 0).sort(([a], [b]) => (a < b ? -1 : 1)));
}

describe('metrics after a scripted workload', () => {
  let samples: Sample[];
  let text: string;

  beforeAll(async () => {
    await workload();
    const res = await httpGet(proxy.httpPort, '/metrics');
    expect(res.status).toBe(200);
    expect(res.type).toContain('text/plain');
    text = res.body;
    samples = parsePrometheus(text);
  });

  afterAll(() => {
    for (const c of conns) c.raw.destroy();
  });

  it('counts every command by app, command and outcome', () => {
    expect(nonZero(byLabels(samples, 'mdb_operations_total', ['app', 'command', 'outcome']))).toEqual(nonZero(expected.ops));
    // The same numbers, spelled out for a reader.
    expect(total(samples, 'mdb_operations_total', { app: 'alpha', command: 'insert', outcome: 'ok' })).toBe(3);
    expect(total(samples, 'mdb_operations_total', { app: 'alpha', command: 'find', outcome: 'ok' })).toBe(3);
    expect(total(samples, 'mdb_operations_total', { app: 'alpha', command: 'find', outcome: 'error' })).toBe(1);
    expect(total(samples, 'mdb_operations_total', { app: 'beta' })).toBe(5);
    expect(total(samples, 'mdb_operations_total', { app: UNAUTH, command: 'saslStart' })).toBe(4);
  });

  it('counts rejections by app and reason', () => {
    expect(nonZero(byLabels(samples, 'mdb_rejected_commands_total', ['app', 'reason']))).toEqual(
      nonZero(
        new Map([
          ['alpha|server_wide', 1],
          ['alpha|unknown_command', 1],
          ['alpha|cursor_not_found', 1],
          ['alpha|policy', 1],
          ['beta|server_js', 1],
          [`${UNAUTH}|unauthenticated`, 1],
        ]),
      ),
    );
    expect(nonZero(byLabels(samples, 'mdb_rejected_commands_total', ['app', 'reason']))).toEqual(nonZero(expected.rejected));
  });

  it('keeps label values bounded: an unknown command name is not a label', () => {
    expect(text).not.toContain('frobnicate');
    const commands = new Set(select(samples, 'mdb_operations_total').map((s) => s.labels.command));
    expect([...commands].sort()).toEqual(
      ['aggregate', 'count', 'delete', 'find', 'getMore', 'hello', 'insert', 'killCursors', 'mapReduce', 'ping', 'saslStart', 'serverStatus', 'unknown'].sort(),
    );
    expect(new Set(select(samples, 'mdb_operations_total').map((s) => s.labels.app))).toEqual(new Set(['alpha', 'beta', UNAUTH]));
  });

  it('has latency histograms: total for every command, upstream and overhead for those that reached the upstream', () => {
    const totalCounts = byLabels(select(samples, 'mdb_command_duration_seconds_count'), 'mdb_command_duration_seconds_count', ['app', 'command']);
    const opsByCommand = new Map<string, number>();
    for (const [key, n] of expected.ops) {
      const [app, command] = key.split('|');
      opsByCommand.set(`${app}|${command}`, (opsByCommand.get(`${app}|${command}`) ?? 0) + n);
    }
    expect(nonZero(totalCounts)).toEqual(nonZero(opsByCommand));
    expect(nonZero(byLabels(samples, 'mdb_upstream_duration_seconds_count', ['app', 'command']))).toEqual(nonZero(expected.upstream));
    expect(nonZero(byLabels(samples, 'mdb_proxy_overhead_seconds_count', ['app', 'command']))).toEqual(nonZero(expected.upstream));
    // Cumulative buckets end at the count; sums are positive; overhead never exceeds the total.
    for (const name of ['mdb_command_duration_seconds', 'mdb_upstream_duration_seconds', 'mdb_proxy_overhead_seconds']) {
      for (const c of select(samples, `${name}_count`)) {
        const labels = { app: c.labels.app!, command: c.labels.command! };
        const buckets = select(samples, `${name}_bucket`, labels);
        const values = buckets.map((b) => b.value);
        expect(values).toEqual([...values].sort((x, y) => x - y));
        expect(buckets.find((b) => b.labels.le === '+Inf')?.value).toBe(c.value);
        expect(total(samples, `${name}_sum`, labels)).toBeGreaterThan(0);
      }
    }
    // For commands that all reached the upstream, upstream + overhead is the total.
    const upstreamSum = total(samples, 'mdb_upstream_duration_seconds_sum', { app: 'beta', command: 'insert' });
    const overheadSum = total(samples, 'mdb_proxy_overhead_seconds_sum', { app: 'beta', command: 'insert' });
    const totalSum = total(samples, 'mdb_command_duration_seconds_sum', { app: 'beta', command: 'insert' });
    expect(upstreamSum + overheadSum).toBeCloseTo(totalSum, 6);
  });

  it('counts bytes in and out by app, to the byte', () => {
    expect(nonZero(byLabels(samples, 'mdb_bytes_received_total', ['app']))).toEqual(nonZero(expected.received));
    expect(nonZero(byLabels(samples, 'mdb_bytes_sent_total', ['app']))).toEqual(nonZero(expected.sent));
  });

  it('counts authentications by result, mechanism and reason', () => {
    expect(nonZero(byLabels(samples, 'mdb_authentications_total', ['result', 'mechanism', 'reason']))).toEqual({
      'failure|PLAIN|bad_signature': 1,
      'failure|PLAIN|malformed_token': 1,
      'failure|other|unsupported_mechanism': 1,
      'success|PLAIN|ok': 1,
      'success|dev|ok': 1,
    });
  });

  it('shows open client connections by app, open cursors, and the upstream pool', () => {
    expect(nonZero(byLabels(samples, 'mdb_client_connections', ['app']))).toEqual({ alpha: 1, beta: 1, [UNAUTH]: 1 });
    expect(nonZero(byLabels(samples, 'mdb_open_cursors', ['app']))).toEqual({ alpha: 1 });
    expect(total(samples, 'mdb_upstream_pool_size')).toBeGreaterThanOrEqual(1);
    expect(total(samples, 'mdb_upstream_pool_in_use')).toBe(0);
    expect(total(samples, 'mdb_upstream_pool_waiters')).toBe(0);
    // Every upstream round trip took one connection from the pool.
    const roundTrips = [...expected.upstream.values()].reduce((x, y) => x + y, 0);
    expect(total(samples, 'mdb_upstream_pool_wait_seconds_count')).toBe(roundTrips);
    expect(total(samples, 'mdb_upstream_pool_acquire_failures_total')).toBe(0);
  });

  it('shows manifests, apps and index reconciliation state', () => {
    expect(total(samples, 'mdb_manifest_reloads_total', { cause: 'start' })).toBe(1);
    expect(total(samples, 'mdb_manifest_refused_total')).toBe(0);
    expect(total(samples, 'mdb_manifest_errors')).toBe(0);
    expect(total(samples, 'mdb_apps', { status: 'available' })).toBe(2);
    expect(select(samples, 'mdb_manifest_last_reload_timestamp_seconds')[0]!.value).toBeGreaterThan(Date.now() / 1000 - 3600);
    for (const app of ['alpha', 'beta']) {
      expect(select(samples, 'mdb_indexes', { app }).map((s) => s.labels.action).sort()).toEqual(['create', 'drift', 'error', 'ok', 'prune', 'unsupported']);
      expect(select(samples, 'mdb_index_reconciliation_phase', { app })).toHaveLength(5);
    }
  });

  it('/apps agrees: ops_total is the sum of mdb_operations_total, errors_total the non-ok ones, and recent latency', async () => {
    const res = await httpGet(proxy.httpPort, '/apps');
    const doc = JSON.parse(res.body) as AppsDocument;
    expect(doc.metrics).toBe(true);
    const now = await scrape(proxy.httpPort);
    for (const app of ['alpha', 'beta']) {
      const entry = doc.apps.find((a) => a.slug === app)!;
      expect(entry.ops_total).toBe(total(now, 'mdb_operations_total', { app }));
      const errors = total(now, 'mdb_operations_total', { app }) - total(now, 'mdb_operations_total', { app, outcome: 'ok' });
      expect(entry.errors_total).toBe(errors);
      expect(entry.latency_ms.p50).toBeGreaterThan(0);
      expect(entry.latency_ms.p99!).toBeGreaterThanOrEqual(entry.latency_ms.p50!);
    }
    expect(doc.apps.find((a) => a.slug === 'alpha')!.errors_total).toBe(5);
    expect(doc.apps.find((a) => a.slug === 'beta')!.errors_total).toBe(1);
  });
});

describe('metrics: false', () => {
  it('turns the request-path instrumentation off: no per-request series, /apps says so; the sampled ones stay', async () => {
    const database = uniqueDb('obs_off');
    const off = await startTestProxy({ runtimeYaml: runtimeYamlWithDatabase(database, { top: 'metrics: false\n' }), logLevel: 'silent' });
    try {
      const c = await connect(off.uri('playground'));
      await c.db('app').collection('t').insertOne({ a: 1 });
      expect(await c.db('app').collection('t').countDocuments()).toBe(1);
      const samples = await scrape(off.httpPort);
      expect(samples.filter((s) => /^mdb_(operations|rejected|command_duration|upstream_duration|proxy_overhead|bytes)/.test(s.name))).toEqual([]);
      expect(total(samples, 'mdb_client_connections', { app: 'playground' })).toBeGreaterThanOrEqual(1);
      expect(total(samples, 'mdb_upstream_pool_wait_seconds_count')).toBeGreaterThanOrEqual(2);
      const apps = JSON.parse((await httpGet(off.httpPort, '/apps')).body) as AppsDocument;
      expect(apps.metrics).toBe(false);
      expect(apps.apps[0]).toMatchObject({ slug: 'playground', ops: 2, ops_total: 0, errors_total: 0, latency_ms: { p50: null, p99: null } });
      await c.close();
    } finally {
      await off.stop();
      const direct = await connect(inject('upstreamUri'));
      await direct.db(database).dropDatabase().catch(() => undefined);
      await direct.close();
    }
  });
});
