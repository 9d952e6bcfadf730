import { describe, expect, it } from 'vitest';
import { Binary, Double, Long, deserialize, serialize, type Document } from 'bson';
import type { AppManifest } from '../../src/apps/manifests.js';
import { shopManifest } from '../helpers/apps.js';
import { AppRegistry } from '../../src/apps/registry.js';
import { commandError } from '../../src/policy/errors.js';
import { resolveRoles } from '../../src/policy/rbac.js';
import { Outcome, ProxyMetrics } from '../../src/observability/metrics.js';
import type { Logger } from '../../src/observability/logger.js';
import { CursorRegistry, Router, type CursorTarget } from '../../src/upstream/index.js';
import { TransactionPins } from '../../src/upstream/pins.js';
import { encodeOpMsg, parseOpMsg, type DocumentSequence } from '../../src/wire/opmsg.js';
import { MsgFlag } from '../../src/wire/constants.js';
import { AppBinding } from '../../src/session/app-binding.js';
import { AppTable } from '../../src/session/app-usage.js';
import { DocumentCounts } from '../../src/session/document-counts.js';
import type { Identity } from '../../src/session/authentication.js';
import type { ProxyContext } from '../../src/session/context.js';
import { Request } from '../../src/session/request.js';
import { Rejected } from '../../src/session/rejection.js';
import { STEPS, run, type StepContext } from '../../src/session/steps/index.js';
import { parse } from '../../src/session/steps/parse.js';
import { gate } from '../../src/session/steps/gate.js';
import { limits } from '../../src/session/steps/limits.js';
import { policy } from '../../src/session/steps/policy.js';

/**
 * The request path's steps without a socket: a fake session (its replies and upstream round trips
 * recorded), the real policy layer, real cursor registry, router and pins.
 */

const manifest = shopManifest;

const silent = {
  isLevelEnabled: () => false,
  child: () => silent,
  debug() {},
  info() {},
  warn() {},
  error() {},
} as unknown as Logger;

const lsid = { id: new Binary(Buffer.alloc(16, 7), 4) };

class FakeSession implements StepContext {
  readonly replies: Document[] = [];
  readonly sent: Document[] = [];
  readonly upstreamSent: { address: string; body: Document }[] = [];
  readonly killed: CursorTarget[] = [];
  readonly pins = new TransactionPins();
  readonly cursors = new CursorRegistry();
  /** The upstream's next replies, in order. */
  upstreamReplies: Document[] = [];
  closedWith: string | undefined;
  gone = false;
  closed = false;
  timed = true;
  maxMessageSize = 48_000_000;
  readonly ctx: ProxyContext;
  readonly binding: AppBinding;
  readonly auth: StepContext['auth'];
  readonly exchange: StepContext['exchange'];

  constructor(app: AppManifest | undefined) {
    const upstream = {
      cursors: this.cursors,
      pins: this.pins,
      router: new Router({
        selectNow: () => ({ address: 'primary:1', type: 'RSPrimary', maxWireVersion: 21 }),
        select: async () => ({ address: 'primary:1', type: 'RSPrimary', maxWireVersion: 21 }),
        pins: this.pins,
      }),
      killCursors: async (targets: CursorTarget[]) => {
        this.killed.push(...targets);
        return targets.length;
      },
      topology: { maxWireVersion: () => 21, isStandalone: () => false },
    };
    this.ctx = {
      upstream: upstream as unknown as ProxyContext['upstream'],
      logger: silent,
      apps: { current: AppRegistry.build(app ? [app] : []) },
      usage: new AppTable(new ProxyMetrics({ enabled: false, processMetrics: false, commands: [], poolWaitBounds: [] })),
      documentCounts: undefined,
      limits: {
        maxMessageSize: 48_000_000,
        preAuthMaxMessageSize: 65536,
        preAuthIdleTimeoutMS: 0,
        logicalSessionTimeoutMinutes: 30,
        upstreamPoolSize: 100,
        openCursorsPerApp: 1000,
        upstreamWaitQueueTimeoutMS: 1000,
        upstreamRequestTimeoutMS: 5000,
        maxAwaitTimeMS: 1000,
      },
      scoping: { database: 'apps', tagField: 'app_id' },
      now: Date.now,
      metrics: undefined as unknown as ProxyContext['metrics'],
      slowOperationMS: 0,
    };
    this.binding = new AppBinding(this.ctx, { warn() {}, drain() {}, closed: false });
    const identity: Identity | undefined = app && {
      app,
      sub: undefined,
      roles: resolveRoles(undefined, undefined),
      rolesClaim: undefined,
      expiresAt: undefined,
      transport: 'dev',
    };
    if (identity) this.binding.bind(this.ctx.usage.get(identity.app.slug));
    this.auth = {
      identity,
      check: (name: string, preAuth: boolean) => {
        if (!identity && !preAuth) throw commandError('Unauthorized', `command ${name} requires authentication`);
      },
      onHello: async () => ({}),
      saslStart: async () => ({ ok: 1 }),
      saslContinue: () => ({ ok: 1 }),
    } as unknown as StepContext['auth'];
    this.exchange = {
      send: async (address: string, msg: Buffer) => {
        this.upstreamSent.push({ address, body: deserialize(parseOpMsg(msg).body) });
        const next = this.upstreamReplies.shift() ?? { ok: 1 };
        return encodeOpMsg(99, 0, 0, Buffer.from(serialize(next)));
      },
    };
  }

  readonly id = 1;
  readonly remoteAddress = '127.0.0.1:50000';
  reply(_req: Request, doc: Document) {
    this.replies.push(doc);
  }
  send(req: Request, bytes: Buffer) {
    req.sent += bytes.length;
    this.sent.push(deserialize(parseOpMsg(bytes).body));
  }
  close(reason: string) {
    this.closedWith = reason;
  }
  nextReplyId() {
    return 1;
  }
  log() {
    return silent;
  }
}

const message = (doc: Document, flags = 0): Buffer => encodeOpMsg(5, 0, flags, Buffer.from(serialize(doc)));
const request = (doc: Document, flags = 0) => new Request(message(doc, flags), 0, 0);

/** Runs the steps up to `upTo` and returns the rejection they threw. */
async function rejection(s: FakeSession, doc: Document, upTo = STEPS.length): Promise<Rejected | Error> {
  const req = request(doc);
  try {
    for (const step of STEPS.slice(0, upTo)) if ((await step(req, s)) === 'done') break;
  } catch (err) {
    return err as Error;
  }
  throw new Error('not refused');
}

describe('request steps', () => {
  it('parse refuses an unknown, a refused and a malformed command, each with its reason', async () => {
    const s = new FakeSession(manifest());
    await expect(rejection(s, { nosuch: 1, $db: 'x' })).resolves.toMatchObject({ reason: 'unknown_command', error: { code: 59 } });
    await expect(rejection(s, { mapReduce: 't', $db: 'x' })).resolves.toMatchObject({ reason: 'server_js', error: { code: 224 } });
    await expect(rejection(s, { serverStatus: 1, $db: 'admin' })).resolves.toMatchObject({ reason: 'server_wide', error: { code: 13 } });
    await expect(rejection(s, { find: 't' })).resolves.toMatchObject({ reason: 'invalid_request', error: { code: 40571 } });
    const req = new Request(Buffer.from([20, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xdd, 7, 0, 0, 0, 0, 0, 0]), 0, 0);
    await expect(Promise.resolve().then(() => parse(req, s))).rejects.toMatchObject({ reason: 'invalid_request' });
  });

  it('gate refuses an unauthenticated command and an admin-only one elsewhere', async () => {
    const anonymous = new FakeSession(undefined);
    const req = request({ find: 't', $db: 'x' });
    await parse(req, anonymous);
    expect(() => gate(req, anonymous)).toThrow(expect.objectContaining({ reason: 'unauthenticated' }));
    const s = new FakeSession(manifest());
    const commit = request({ commitTransaction: 1, $db: 'x' });
    await parse(commit, s);
    expect(() => gate(commit, s)).toThrow(expect.objectContaining({ reason: 'invalid_request' }));
  });

  it('gate refuses a removed app: app_removed, answered and then closed', async () => {
    const s = new FakeSession(manifest());
    (s.ctx as { apps: { current: AppRegistry } }).apps = { current: AppRegistry.build([]) };
    const req = request({ find: 't', $db: 'x' });
    await run(req, s);
    expect([req.outcome, req.reason, req.errorCode]).toEqual([Outcome.REJECTED, 'app_removed', 13]);
    expect(s.replies[0]).toMatchObject({ ok: new Double(0), code: 13 });
    expect(s.closedWith).toMatch(/removed/);
  });

  it('limits refuse past the rate, with the reason and the backoff', async () => {
    const s = new FakeSession(manifest({ limits: { operationsPerSecond: 1 } }));
    const first = request({ find: 't', $db: 'x' });
    await run(first, s);
    expect(first.outcome).toBe(Outcome.OK);
    const second = request({ find: 't', $db: 'x' });
    await parse(second, s);
    gate(second, s);
    expect(() => limits(second, s)).toThrow(expect.objectContaining({ reason: 'rate_limit', code: 462 }));
  });

  it('policy refuses server-side JavaScript, bad arguments and data_access with their reasons (the real policy layer)', async () => {
    const s = new FakeSession(manifest({ dataAccess: { readOnly: true } }));
    const refusal = async (doc: Document) => {
      const req = request(doc);
      await parse(req, s);
      gate(req, s);
      limits(req, s);
      try {
        await policy(req, s);
      } catch (err) {
        return err;
      }
      throw new Error('not refused');
    };
    await expect(refusal({ find: 't', filter: { $where: 'true' }, $db: 'x' })).resolves.toMatchObject({ reason: 'server_js' });
    await expect(refusal({ find: 't', bogus: 1, $db: 'x' })).resolves.toMatchObject({ reason: 'policy' });
    await expect(refusal({ insert: 't', documents: [{ a: 1 }], $db: 'x' })).resolves.toMatchObject({ reason: 'data_access', code: 13 });
  });

  it('policy applies max_document_bytes and max_documents_per_collection to what the rewrite says it writes', async () => {
    const s = new FakeSession(manifest({ limits: { maxDocumentBytes: 100, maxDocumentsPerCollection: 4 } }));
    const counted: string[] = [];
    (s.ctx as { documentCounts: DocumentCounts | undefined }).documentCounts = new DocumentCounts({
      count: async (physical) => {
        counted.push(physical);
        return 1;
      },
    });
    const through = async (doc: Document, sequences: DocumentSequence[] = []) => {
      const req = new Request(encodeOpMsg(5, 0, 0, Buffer.from(serialize(doc)), sequences), 0, 0);
      await parse(req, s);
      gate(req, s);
      limits(req, s);
      try {
        return await policy(req, s);
      } catch (err) {
        return err;
      }
    };
    const big = { _id: 1, blob: 'x'.repeat(200) };
    const size = serialize(big).length;
    // The largest document as the app sent it, where it is, and nothing counted for a refused insert.
    await expect(through({ insert: 't', documents: [{ _id: 2 }, big], $db: 'x' })).resolves.toMatchObject({
      reason: 'document_size',
      code: 10334,
      message: expect.stringMatching(new RegExp(`^object to insert too large\\. size in bytes: ${size}, max size: 100 \\(documents\\.1; app 'shop' limits\\.max_document_bytes\\)`)),
    });
    expect(counted).toEqual([]);
    await expect(through({ update: 't', $db: 'x' }, [{ identifier: 'updates', documents: [Buffer.from(serialize({ q: {}, u: big, upsert: true }))] }])).resolves.toMatchObject({
      reason: 'document_size',
      message: expect.stringContaining(`size in bytes: ${size}, max size: 100 (updates.0.u;`),
    });
    await expect(through({ findAndModify: 't', query: {}, update: big, $db: 'x' })).resolves.toMatchObject({ reason: 'document_size' });
    await expect(through({ findAndModify: 't', query: {}, update: { $set: big }, $db: 'x' })).resolves.toBe('next');
    // 1 counted + 3 in a kind-1 section fit the limit of 4; one more does not.
    await expect(through({ insert: 't', $db: 'x' }, [{ identifier: 'documents', documents: [{ a: 1 }, { a: 2 }, { a: 3 }].map((d) => Buffer.from(serialize(d))) }])).resolves.toBe('next');
    await expect(through({ insert: 't', documents: [{ a: 4 }], $db: 'x' })).resolves.toMatchObject({
      reason: 'document_count',
      code: 14031,
      message: expect.stringContaining('holds about 4 documents and may hold at most 4'),
    });
    expect(counted).toEqual(['shop_t']);
    expect(s.ctx.usage.peek('shop')?.refused).toBe(4);
  });

  it('forwards a find to the primary, records the cursor it opened and rewrites the reply', async () => {
    const s = new FakeSession(manifest());
    s.upstreamReplies = [{ cursor: { firstBatch: [{ _id: 1, app_id: 'shop', a: 1 }], id: Long.fromBigInt(42n), ns: 'apps.shop_t' }, ok: 1 }];
    const req = request({ find: 't', filter: {}, $db: 'x' });
    await run(req, s);
    expect(req.outcome).toBe(Outcome.OK);
    expect(s.upstreamSent[0]).toMatchObject({ address: 'primary:1', body: { find: 'shop_t', $db: 'apps' } });
    expect(s.sent[0]).toMatchObject({ cursor: { firstBatch: [{ _id: 1, a: 1 }], ns: 'x.t' }, ok: 1 });
    expect(s.sent[0]!.cursor.firstBatch[0].app_id).toBeUndefined();
    expect(s.cursors.lookup(42n, 'shop')).toMatchObject({ address: 'primary:1', ns: 'apps.shop_t' });
    expect(req.reply?.documents).toBe(1);
  });

  it('refuses a getMore of a cursor the app does not hold without sending it: cursor_not_found', async () => {
    const s = new FakeSession(manifest());
    s.cursors.register(7n, 'primary:1', 'blog', undefined, 'apps.blog_t');
    const req = request({ getMore: Long.fromBigInt(7n), collection: 't', $db: 'x' });
    await run(req, s);
    expect([req.outcome, req.reason, req.errorCode]).toEqual([Outcome.REJECTED, 'cursor_not_found', 43]);
    expect(s.upstreamSent).toEqual([]);
  });

  it('refuses a cursor past limits.open_cursors, killing it upstream: open_cursors', async () => {
    const s = new FakeSession(manifest({ limits: { openCursors: 1 } }));
    const opened = (id: bigint) => ({ cursor: { firstBatch: [], id: Long.fromBigInt(id), ns: 'apps.shop_t' }, ok: 1 });
    s.upstreamReplies = [opened(1n), opened(2n)];
    await run(request({ find: 't', $db: 'x' }), s);
    const second = request({ find: 't', $db: 'x' });
    await run(second, s);
    expect([second.outcome, second.reason, second.errorCode]).toEqual([Outcome.REJECTED, 'open_cursors', 96]);
    expect(s.killed).toEqual([{ id: 2n, address: 'primary:1', ns: 'apps.shop_t' }]);
  });

  it('pins a transaction to its server and releases the pin on the commit reply', async () => {
    const s = new FakeSession(manifest());
    const txn = { lsid, txnNumber: Long.fromNumber(1), autocommit: false };
    await run(request({ insert: 't', documents: [{ a: 1 }], startTransaction: true, ...txn, $db: 'x' }), s);
    // One pin, keyed by the app and its session.
    const pinned = [...(s.pins as unknown as { pins: Map<string, unknown> }).pins.keys()];
    expect(pinned).toHaveLength(1);
    expect(pinned[0]!.startsWith('shop\0')).toBe(true);
    expect(s.pins.lookup(pinned[0]!)).toBe('primary:1');
    const commit = request({ commitTransaction: 1, ...txn, $db: 'admin' });
    await run(commit, s);
    expect(commit.outcome).toBe(Outcome.OK);
    expect(s.upstreamSent.at(-1)).toMatchObject({ address: 'primary:1', body: { commitTransaction: 1 } });
    expect((s.pins as unknown as { pins: Map<string, unknown> }).pins.size).toBe(0);
  });

  it('releases the pin on an abort reply, even a failed one, and keeps it after a failed commit', async () => {
    const s = new FakeSession(manifest());
    const pins = () => (s.pins as unknown as { pins: Map<string, unknown> }).pins.size;
    const txn = { lsid, txnNumber: Long.fromNumber(2), autocommit: false };
    await run(request({ insert: 't', documents: [{ a: 1 }], startTransaction: true, ...txn, $db: 'x' }), s);
    expect(pins()).toBe(1);
    s.upstreamReplies = [{ ok: 0, code: 112, codeName: 'WriteConflict', errorLabels: ['TransientTransactionError'] }];
    const commit = request({ commitTransaction: 1, ...txn, $db: 'admin' });
    await run(commit, s);
    expect(s.sent.at(-1)).toMatchObject({ ok: 0, code: 112 });
    expect(pins()).toBe(1);
    s.upstreamReplies = [{ ok: 0, code: 251, codeName: 'NoSuchTransaction' }];
    await run(request({ abortTransaction: 1, ...txn, $db: 'admin' }), s);
    expect(pins()).toBe(0);
  });

  it('answers a local command itself, with what it knows of the connection', async () => {
    const s = new FakeSession(manifest());
    const req = request({ whatsmyuri: 1, $db: 'admin' });
    await run(req, s);
    expect(s.replies).toEqual([{ you: '127.0.0.1:50000', ok: new Double(1) }]);
    expect(s.upstreamSent).toEqual([]);
  });

  it('answers nothing to a moreToCome request, even an error', async () => {
    const s = new FakeSession(manifest());
    const req = request({ nosuch: 1, $db: 'x' }, MsgFlag.MORE_TO_COME);
    await run(req, s);
    expect(req.reason).toBe('unknown_command');
    expect(s.replies).toEqual([]);
  });
});
