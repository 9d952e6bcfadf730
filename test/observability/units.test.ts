import { PassThrough, Writable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { serialize, type Document } from 'bson';
import { createLogger, chooseLogFormat } from '../../src/observability/logger.js';
import { AppMeter, HistogramCell, Outcome, ProxyMetrics, RecentLatency, UNKNOWN_COMMAND } from '../../src/observability/metrics.js';
import { UpstreamProbe } from '../../src/observability/health.js';
import { tokenFailureReason } from '../../src/session/authentication.js';
import { collectionOf } from '../../src/session/steps/observe.js';
import { ReplyView } from '../../src/wire/reply-status.js';
import { TokenError, verifyAppToken } from '../../src/apps/tokens.js';
import type { AppRegistry } from '../../src/apps/registry.js';
import { COMMANDS } from '../../src/policy/commands.js';
import { POOL_WAIT_BOUNDS } from '../../src/upstream/pool.js';
import { registryOf, removeConfigDirs, seconds, sign } from '../helpers/apps.js';
import { parsePrometheus, total } from './prom-text.js';

/** What the composition root gives the metrics: the command table's names and the pools' wait buckets. */
const COMMAND_NAMES = [...COMMANDS.values()].map((s) => s.name);
const LABELS = { commands: COMMAND_NAMES, poolWaitBounds: POOL_WAIT_BOUNDS };

/** The parts of observability that need no proxy: formats, redaction, cells, probes, reply facts. */

function capture(): { stream: Writable; lines: string[] } {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(line);
      cb();
    },
  });
  return { stream, lines };
}

describe('log output format', () => {
  it('is pretty on a terminal and JSON otherwise', () => {
    expect(chooseLogFormat({ isTTY: true })).toBe('pretty');
    expect(chooseLogFormat({ isTTY: false })).toBe('json');
    expect(chooseLogFormat({})).toBe('json');
  });

  it('writes human-readable lines to a TTY stdout and JSON lines to any other', () => {
    const tty = Object.assign(new PassThrough(), { isTTY: true });
    let prettyText = '';
    tty.on('data', (d: Buffer) => (prettyText += d.toString()));
    createLogger('info', undefined, { stdout: tty }).info({ app_id: 'alpha' }, 'hello there');
    expect(prettyText).toContain('hello there');
    expect(prettyText).toContain('alpha');
    expect(() => JSON.parse(prettyText.split('\n')[0]!) as unknown).toThrow();

    const pipe = Object.assign(new PassThrough(), { isTTY: false });
    let jsonText = '';
    pipe.on('data', (d: Buffer) => (jsonText += d.toString()));
    createLogger('info', undefined, { stdout: pipe }).info({ app_id: 'alpha' }, 'hello there');
    expect(JSON.parse(jsonText.split('\n')[0]!)).toMatchObject({ msg: 'hello there', app_id: 'alpha', level: 30 });
  });

  it('redacts fields that may hold secrets, at the top level and one level down', () => {
    const { stream, lines } = capture();
    createLogger('info', stream).info(
      { token: 'tok-secret', password: 'pw-secret', cmd: { payload: 'payload-secret', filter: { a: 'filter-secret' } }, uri: 'mongodb://u:p@h' },
      'x',
    );
    const text = lines.join('\n');
    for (const s of ['tok-secret', 'pw-secret', 'payload-secret', 'filter-secret', 'u:p@h']) expect(text).not.toContain(s);
    expect(JSON.parse(lines[0]!)).toMatchObject({ token: '***', password: '***', cmd: { payload: '***', filter: '***' } });
  });

  it('redacts one level down without changing the objects it was given', () => {
    const { stream, lines } = capture();
    const cmd = { find: 'items', filter: { a: 'filter-secret' } };
    const err = Object.assign(new Error('boom'), { password: 'err-secret' });
    const fields = { cmd, err, n: 1, app_id: 'alpha' };
    createLogger('info', stream).info(fields, 'x');
    expect(fields.cmd).toBe(cmd);
    expect(cmd.filter).toEqual({ a: 'filter-secret' });
    expect(err.password).toBe('err-secret');
    const text = lines.join('\n');
    expect(text).not.toContain('filter-secret');
    expect(text).not.toContain('err-secret');
    expect(JSON.parse(lines[0]!)).toMatchObject({ cmd: { find: 'items', filter: '***' }, err: { message: 'boom', password: '***' }, n: 1, app_id: 'alpha' });
  });
});

describe('authentication failure reasons (a fixed label set)', () => {
  const SECRET = 'u'.repeat(40);
  let apps: AppRegistry;

  beforeAll(() => {
    apps = registryOf(
      {
        'apps/units.yaml': "slug: units\nauth:\n  jwt:\n    secret_env: UNITS_SECRET\n  roles:\n    reader: { read: ['*'] }\n  default_role: reader\n",
        'apps/broken.yaml': 'slug: broken\nauth:\n  jwt:\n    secret_env: UNITS_MISSING_SECRET\n',
      },
      { UNITS_SECRET: SECRET },
    );
  });
  afterAll(() => removeConfigDirs());

  async function reasonOf(token: string, expectedApp?: string): Promise<string> {
    try {
      await verifyAppToken(token, apps, expectedApp !== undefined ? { expectedApp } : {});
    } catch (err) {
      expect(err).toBeInstanceOf(TokenError);
      return tokenFailureReason((err as TokenError).message);
    }
    throw new Error('the token was accepted');
  }

  it('classifies each kind of refused token', async () => {
    const now = seconds();
    expect(await reasonOf(await sign({ app: 'units', exp: now - 3600 }, 'HS256', SECRET))).toBe('expired');
    expect(await reasonOf(await sign({ app: 'units', exp: now + 600 }, 'HS256', 'w'.repeat(40)))).toBe('bad_signature');
    expect(await reasonOf(await sign({ app: 'units', exp: now + 600 }, 'HS512', SECRET.repeat(2)))).toBe('bad_signature');
    expect(await reasonOf(await sign({ app: 'nobody', exp: now + 600 }, 'HS256', SECRET))).toBe('unknown_app');
    expect(await reasonOf(await sign({ app: 'broken', exp: now + 600 }, 'HS256', SECRET))).toBe('app_unavailable');
    expect(await reasonOf('not-a-token')).toBe('malformed_token');
    expect(await reasonOf(await sign({ exp: now + 600 }, 'HS256', SECRET))).toBe('malformed_token');
    expect(await reasonOf(await sign({ app: 'units', exp: now + 600 }, 'HS256', SECRET), 'other')).toBe('app_mismatch');
    expect(await reasonOf(await sign({ app: 'units', exp: now + 600, roles: 'admin' }, 'HS256', SECRET))).toBe('invalid_claims');
    expect(await reasonOf(await sign({ app: 'units', exp: now + 600, roles: ['nope'] }, 'HS256', SECRET))).toBe('invalid_claims');
    expect(tokenFailureReason('something new')).toBe('invalid_token');
  });
});

describe('metric cells', () => {
  it('places observations in the right bucket (upper bounds inclusive)', () => {
    const cell = new HistogramCell([0.001, 0.01, 0.1]);
    for (const v of [0.0005, 0.001, 0.005, 0.1, 5]) cell.observe(v);
    expect([...cell.counts]).toEqual([2, 1, 1, 1]);
    expect(cell.count).toBe(5);
    expect(cell.sum).toBeCloseTo(5.1065, 6);
  });

  it('gives every unknown command name one shared cell', () => {
    const meter = new AppMeter('alpha', new Set(COMMAND_NAMES));
    const a = meter.cell('frobnicate');
    const b = meter.cell('somethingElse');
    expect(a).toBe(b);
    expect(a.command).toBe(UNKNOWN_COMMAND);
    expect(meter.cell('find').command).toBe('find');
    expect([...meter.commandCells()].map((c) => c.command).sort()).toEqual(['find', 'unknown']);
  });

  it('reports p50 and p99 of the last minute within 5%, and forgets older requests', () => {
    const recent = new RecentLatency();
    const t0 = 1_000_000;
    for (let i = 1; i <= 1000; i++) recent.record(i / 10, t0 + i); // 0.1 .. 100 ms
    const [p50, p99] = recent.quantiles([0.5, 0.99], t0 + 1000);
    expect(Math.abs(p50! - 50) / 50).toBeLessThan(0.05);
    expect(Math.abs(p99! - 99) / 99).toBeLessThan(0.05);
    expect(recent.count(t0 + 1000)).toBe(1000);
    expect(recent.quantiles([0.5], t0 + 70_000)).toEqual([null]);
    expect(recent.count(t0 + 70_000)).toBe(0);
    expect(new RecentLatency().quantiles([0.5, 0.99], 0)).toEqual([null, null]);
  });

  it('keeps one registry per runtime: two instances in one process do not clash', async () => {
    const one = new ProxyMetrics({ enabled: true, processMetrics: true, ...LABELS });
    const two = new ProxyMetrics({ enabled: true, processMetrics: true, ...LABELS });
    const meter = one.meter('alpha');
    one.readMeters(() => [meter]);
    meter.request(meter.cell('find'), Outcome.OK, 2, 1, 0);
    const a = parsePrometheus((await one.scrape()).text);
    const b = parsePrometheus((await two.scrape()).text);
    expect(total(a, 'mdb_operations_total', { app: 'alpha', command: 'find', outcome: 'ok' })).toBe(1);
    expect(total(b, 'mdb_operations_total')).toBe(0);
    expect(a.some((s) => s.name === 'process_cpu_user_seconds_total')).toBe(true);
  });

  it('labels commands and buckets pool waits with what it is given, not a table of its own', async () => {
    const metrics = new ProxyMetrics({ enabled: true, processMetrics: false, commands: ['alpha_cmd'], poolWaitBounds: [0, 0.5] });
    const meter = metrics.meter('alpha');
    metrics.readMeters(() => [meter]);
    meter.request(meter.cell('alpha_cmd'), Outcome.OK, 2, 1, 0);
    meter.request(meter.cell('find'), Outcome.OK, 2, 1, 0);
    metrics.setSources({
      pools: () => [
        { address: 'db:27017', size: 1, inUse: 0, waiting: 0, waitBounds: [0, 0.5], waitCounts: Float64Array.from([3, 1, 2]), waitSum: 4.2, waitCount: 6, waitFailures: 0 },
      ],
      cursors: () => [],
      upstreamShares: () => [],
      indexes: () => [],
      manifestErrors: () => 0,
      apps: () => [],
      upstreamUp: () => Promise.resolve(true),
    });
    const samples = parsePrometheus((await metrics.scrape()).text);
    expect(total(samples, 'mdb_operations_total', { command: 'alpha_cmd' })).toBe(1);
    // 'find' is not among the given names: it counts as unknown.
    expect(total(samples, 'mdb_operations_total', { command: 'find' })).toBe(0);
    expect(total(samples, 'mdb_operations_total', { command: UNKNOWN_COMMAND })).toBe(1);
    const buckets = samples.filter((s) => s.name === 'mdb_upstream_pool_wait_seconds_bucket').map((s) => [s.labels.le, s.value]);
    expect(buckets).toEqual([
      ['0', 3],
      ['0.5', 4],
      ['+Inf', 6],
    ]);
  });

  it('exports no request-path series when metrics are off', async () => {
    const off = new ProxyMetrics({ enabled: false, processMetrics: false, ...LABELS });
    const meter = off.meter('alpha');
    off.readMeters(() => [meter]);
    meter.request(meter.cell('find'), Outcome.OK, 2, 1, 0);
    meter.bytesReceived += 100;
    const samples = parsePrometheus((await off.scrape()).text);
    expect(samples.filter((s) => /^mdb_(operations|rejected|command_duration|upstream_duration|proxy_overhead|bytes)/.test(s.name))).toEqual([]);
  });
});

describe('the upstream probe', () => {
  it('bounds a ping that never answers by its timeout, and logs the transition', async () => {
    const { stream, lines } = capture();
    let answer = false;
    const probe = new UpstreamProbe({
      ping: () => (answer ? Promise.resolve() : new Promise<void>(() => undefined)),
      timeoutMS: 50,
      cacheMS: 0,
      logger: createLogger('info', stream),
    });
    const started = performance.now();
    const down = await probe.check();
    expect(down).toMatchObject({ ok: false, error: 'no answer within 50 ms' });
    expect(performance.now() - started).toBeLessThan(1000);
    answer = true;
    expect((await probe.check()).ok).toBe(true);
    expect(lines.map((l) => (JSON.parse(l) as { msg: string }).msg)).toEqual(['upstream unreachable: a ping did not succeed', 'upstream reachable again']);
  });

  it('shares the ping in flight and reuses its result for cacheMS', async () => {
    let pings = 0;
    const probe = new UpstreamProbe({ ping: async () => void pings++, timeoutMS: 1000, cacheMS: 60_000 });
    await Promise.all([probe.check(), probe.check(), probe.check()]);
    await probe.check();
    expect(pings).toBe(1);
  });
});

describe('reply facts read from bytes (one ReplyView)', () => {
  const bytes = (doc: Document) => Buffer.from(serialize(doc));
  const replyOutcome = (b: Buffer) => (new ReplyView(b).failed ? Outcome.ERROR : Outcome.OK);
  const documentsReturned = (b: Buffer) => new ReplyView(b).documents;

  it('tells ok replies from errors and write errors', () => {
    expect(replyOutcome(bytes({ ok: 1 }))).toBe(Outcome.OK);
    expect(replyOutcome(bytes({ n: 1, ok: 1.0 }))).toBe(Outcome.OK);
    expect(replyOutcome(bytes({ ok: 0, errmsg: 'x', code: 2 }))).toBe(Outcome.ERROR);
    expect(replyOutcome(bytes({ n: 0, writeErrors: [{ index: 0, code: 11000 }], ok: 1 }))).toBe(Outcome.ERROR);
    expect(replyOutcome(bytes({ n: 1, writeConcernError: { code: 64 }, ok: 1 }))).toBe(Outcome.ERROR);
  });

  it('counts the documents a reply returned or touched', () => {
    expect(documentsReturned(bytes({ cursor: { firstBatch: [{ a: 1 }, { a: 2 }, { a: 3 }], id: 0, ns: 'x.y' }, ok: 1 }))).toBe(3);
    expect(documentsReturned(bytes({ cursor: { nextBatch: [], id: 0, ns: 'x.y' }, ok: 1 }))).toBe(0);
    expect(documentsReturned(bytes({ n: 7, ok: 1 }))).toBe(7);
    expect(documentsReturned(bytes({ values: ['a', 'b'], ok: 1 }))).toBe(2);
    expect(documentsReturned(bytes({ value: null, ok: 1 }))).toBe(0);
    expect(documentsReturned(bytes({ value: { a: 1 }, ok: 1 }))).toBe(1);
    expect(documentsReturned(bytes({ ok: 1 }))).toBeUndefined();
  });

  it('names the collection as the app named it', () => {
    expect(collectionOf({ find: 'tasks', filter: {} })).toBe('tasks');
    expect(collectionOf({ getMore: 5, collection: 'tasks' })).toBe('tasks');
    expect(collectionOf({ explain: { count: 'tasks' }, verbosity: 'queryPlanner' })).toBe('tasks');
    expect(collectionOf({ aggregate: 1, pipeline: [] })).toBeUndefined();
    expect(collectionOf(undefined)).toBeUndefined();
  });
});
