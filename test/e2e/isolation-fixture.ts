import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { deflateSync } from 'node:zlib';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { Binary, EJSON, Long, deserialize, serialize, type Document } from 'bson';
import { MongoClient, MongoServerError, type Db } from 'mongodb';
import { expect, inject } from 'vitest';
import { seconds, sign } from '../helpers/apps.js';
import { startTestProxy, type TestProxy } from '../helpers/proxy.js';
import { WireRelay, type RelayedMessage } from '../../src/testing/relay.js';
import { RawClient, opMsg } from '../../src/testing/wire-client.js';
import { OpCode } from '../../src/wire/constants.js';
import { writeHeader } from '../../src/wire/header.js';
import { encodeOpMsg, parseOpMsg } from '../../src/wire/opmsg.js';
import { mapSessionId } from '../../src/policy/session-ids.js';
import { makeScope } from '../../src/policy/scope.js';

/**
 * The world of the isolation suites: two apps, `alpha` (the attacker, with a
 * read-only role for RBAC attempts) and `beta` (the victim), authenticated by JWT, on one upstream
 * through the real proxy. A WireRelay between the proxy and the upstream records every command the
 * proxy sends, for features FerretDB lacks. Beta's data is seeded through the proxy as beta, then
 * snapshotted twice — directly from the upstream's physical collections and through the proxy as beta —
 * so every attempt can assert afterwards that beta's data is unchanged (and every physical document
 * still carries the tag of the app whose prefix its collection has).
 */

const HERE = path.dirname(fileURLToPath(import.meta.url));

export const ALPHA_SECRET = 'isolation-alpha-secret-'.padEnd(48, 'a');
export const BETA_SECRET = 'isolation-beta-secret-'.padEnd(48, 'b');
/** The logical databases the two apps name (any name works; both land in the one physical database). */
export const ALPHA_DB = 'alphadb';
export const BETA_DB = 'betadb';
/** Beta's collections: `shared` exists in both apps; `alpha_notes` is named like alpha's physical `notes`. */
export const BETA_COLLECTIONS = ['shared', 'alpha_notes', 'victim'] as const;
export const ALPHA_COLLECTIONS = ['shared', 'notes', 'victim'] as const;
/** Every beta document holds this marker: it must never appear in anything alpha receives. */
export const BETA_MARK = 'BETA-SECRET';

const ALPHA_MANIFEST = [
  'slug: alpha',
  'auth:',
  '  jwt:',
  '    secret_env: ISO_ALPHA_SECRET',
  '  roles:',
  "    reader: { read: ['*'] }",
  "    editor: { read: ['*'], write: ['*'], indexes: ['*'] }",
  '  default_role: editor',
  '',
].join('\n');
const BETA_MANIFEST = 'slug: beta\nauth:\n  jwt:\n    secret_env: ISO_BETA_SECRET\n';

export type Slug = 'alpha' | 'beta';

/** Documents whose _id is anything (the driver's default type assumes ObjectId). */
export interface Loose extends Document {
  _id: string | number;
}

/** What a client got: the reply document (ok: 1 results, or the server's error shape). */
export type Reply = Document;

interface BetaSnapshot {
  physical: string;
  viaProxy: string;
}

export class IsolationWorld {
  readonly ferret = inject('upstreamIsFerretDB');
  /** Raw clients opened by tests, destroyed at the end. */
  private readonly raws: RawClient[] = [];
  private readonly clients: MongoClient[] = [];
  private snapshot!: BetaSnapshot;
  alpha!: MongoClient;
  beta!: MongoClient;
  py: PyAttacker | undefined;

  private constructor(
    readonly proxy: TestProxy,
    readonly relay: WireRelay,
    readonly direct: MongoClient,
    /** The shared physical database (unique per suite). */
    readonly phys: string,
  ) {}

  static async start(): Promise<IsolationWorld> {
    process.env.ISO_ALPHA_SECRET = ALPHA_SECRET;
    process.env.ISO_BETA_SECRET = BETA_SECRET;
    const upstream = inject('upstreamUri');
    const phys = `iso_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
    const relay = await WireRelay.start(WireRelay.firstHost(upstream));
    const proxy = await startTestProxy({
      upstreamUri: WireRelay.uriThrough(upstream, relay.port),
      runtimeYaml: `shutdown_grace_ms: 1000\nupstream:\n  database: ${phys}\n`,
      logLevel: 'warn',
      apps: { 'alpha.yaml': ALPHA_MANIFEST, 'beta.yaml': BETA_MANIFEST },
    });
    const direct = new MongoClient(upstream, { serverSelectionTimeoutMS: 10_000 });
    await direct.connect();
    const world = new IsolationWorld(proxy, relay, direct, phys);
    world.alpha = await world.client(world.plainUri('alpha', await token('alpha')));
    world.beta = await world.client(world.plainUri('beta', await token('beta')));
    await world.seed();
    return world;
  }

  get alphaDb(): Db {
    return this.alpha.db(ALPHA_DB);
  }

  get betaDb(): Db {
    return this.beta.db(BETA_DB);
  }

  plainUri(user: string, jwt: string, db = ''): string {
    return `mongodb://${encodeURIComponent(user)}:${encodeURIComponent(jwt)}@127.0.0.1:${this.proxy.port}/${db}?authMechanism=PLAIN&authSource=%24external`;
  }

  async client(uri: string, options: ConstructorParameters<typeof MongoClient>[1] = {}): Promise<MongoClient> {
    const c = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000, ...options });
    this.clients.push(c);
    await c.connect();
    return c;
  }

  /** A raw wire connection authenticated as `slug` with SASL PLAIN (claims added to the token). */
  async raw(slug: Slug, claims: Record<string, unknown> = {}): Promise<RawClient> {
    const raw = await this.rawUnauthenticated();
    const payload = new Binary(Buffer.from(`\0${slug}\0${await token(slug, claims)}`));
    const reply = await command(raw, { saslStart: 1, mechanism: 'PLAIN', payload, $db: '$external' });
    expect(reply.ok, `PLAIN as ${slug}`).toBe(1);
    return raw;
  }

  async rawUnauthenticated(): Promise<RawClient> {
    const raw = await RawClient.connect(this.proxy.port);
    this.raws.push(raw);
    return raw;
  }

  /** Seeds beta (the victim) and alpha through the proxy, then snapshots beta's state. */
  private async seed(): Promise<void> {
    const b = this.betaDb;
    await b.collection<Loose>('shared').insertMany(
      [1, 2, 3, 4, 5].map((i) => ({ _id: i, secret: `${BETA_MARK}-${i}`, n: i, tags: ['beta-doc'] })),
    );
    await b.collection<Loose>('shared').createIndex({ secret: 1 }, { name: 'beta_secret_idx' });
    await b.collection<Loose>('alpha_notes').insertMany([
      { _id: 'n1', secret: `${BETA_MARK}-note-1` },
      { _id: 'n2', secret: `${BETA_MARK}-note-2` },
    ]);
    await b.collection<Loose>('victim').insertMany([
      { _id: 1, secret: `${BETA_MARK}-victim-1` },
      { _id: 2, secret: `${BETA_MARK}-victim-2` },
    ]);
    const a = this.alphaDb;
    await a.collection<Loose>('shared').insertMany([1, 2, 3].map((i) => ({ _id: i, mine: `alpha-${i}`, n: i })));
    await a.collection<Loose>('notes').insertOne({ _id: 'a1', mine: 'alpha-note' });
    await a.collection<Loose>('victim').insertOne({ _id: 1, mine: 'alpha-victim' });
    this.snapshot = await this.betaState();
    // Sanity: the layout is what the suites assume.
    const physical = JSON.parse(this.snapshot.physical) as Record<string, unknown>;
    expect(Object.keys(physical).sort()).toEqual(['beta_alpha_notes', 'beta_shared', 'beta_victim']);
  }

  /** Beta's documents and indexes, read directly from the upstream and through the proxy as beta. */
  private async betaState(): Promise<BetaSnapshot> {
    const db = this.direct.db(this.phys);
    const names = (await db.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).filter((n) => n.startsWith('beta_')).sort();
    const physical: Record<string, Document> = {};
    for (const name of names) {
      const docs = await db.collection<Loose>(name).find({}).sort({ _id: 1 }).toArray();
      const indexes = (await db.collection<Loose>(name).listIndexes().toArray()).map((i) => i.name as string).sort();
      physical[name] = { docs, indexes };
    }
    const viaProxy: Record<string, Document> = {};
    viaProxy.collections = (await this.betaDb.listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name).sort();
    for (const name of BETA_COLLECTIONS) viaProxy[name] = await this.betaDb.collection<Loose>(name).find({}).sort({ _id: 1 }).toArray();
    return { physical: EJSON.stringify(physical, { relaxed: false }), viaProxy: EJSON.stringify(viaProxy, { relaxed: false }) };
  }

  /**
   * Beta's data is exactly as seeded (directly and through the proxy), and every document of the physical
   * database carries, as a string, the tag of the app whose prefix its collection has.
   */
  async expectBetaUnchanged(): Promise<void> {
    const now = await this.betaState();
    expect(JSON.parse(now.physical), "beta's physical collections, read directly from the upstream").toEqual(JSON.parse(this.snapshot.physical));
    expect(JSON.parse(now.viaProxy), "beta's collections, read through the proxy as beta").toEqual(JSON.parse(this.snapshot.viaProxy));
    const db = this.direct.db(this.phys);
    for (const { name } of await db.listCollections({}, { nameOnly: true }).toArray()) {
      if (name.startsWith('system.')) continue; // system.views on MongoDB once an app made a view
      const slug = name.startsWith('alpha_') ? 'alpha' : name.startsWith('beta_') ? 'beta' : undefined;
      expect(slug, `physical collection '${name}' belongs to no app`).toBeDefined();
      const strays = await db.collection<Loose>(name).find({ app_id: { $ne: slug } }).toArray();
      expect(strays, `documents of ${name} not tagged '${slug}'`).toEqual([]);
    }
  }

  /**
   * Nothing alpha received holds beta's data or a physical name: no beta marker, no physical database
   * name, no physical collection name (beta's, or alpha's own prefixed ones). `allow` drops strings the
   * attempt itself sent (an echo of alpha's own input is not a leak).
   */
  expectNoLeak(received: unknown, allow: string[] = []): void {
    const text = typeof received === 'string' ? received : EJSON.stringify(toDocument(received), { relaxed: true });
    const forbidden = [BETA_MARK, this.phys, 'beta_shared', 'beta_alpha_notes', 'beta_victim', 'alpha_shared', 'alpha_victim'];
    for (const s of forbidden) if (!allow.includes(s)) expect(text, `alpha received '${s}'`).not.toContain(s);
  }

  /** The one command the proxy sent upstream carrying `comment` (a marker unique to the attempt). */
  sentUpstream(comment: string): RelayedMessage {
    const found = this.relay.messages.filter((m) => m.body.comment === comment);
    expect(found, `commands sent upstream with comment ${comment}`).toHaveLength(1);
    return found[0]!;
  }

  /** How many commands the proxy sent upstream with this comment (0 when it refused the attempt itself). */
  countUpstream(comment: string): number {
    return this.relay.messages.filter((m) => m.body.comment === comment).length;
  }

  /** The lsid id the upstream sees for `slug`'s session id `id`. */
  mappedSession(slug: Slug, id: Binary): Binary {
    return mapSessionId(makeScope(slug, this.phys, 'app_id'), id);
  }

  /** The physical name of `slug`'s collection. */
  physical(slug: Slug, coll: string): string {
    return `${slug}_${coll}`;
  }

  /** Beta's collection UUID as the upstream knows it. */
  async betaUuid(coll: string): Promise<Binary> {
    const [info] = await this.direct.db(this.phys).listCollections({ name: `beta_${coll}` }).toArray();
    // The driver's Binary comes from bson's CommonJS build: rebuild it as this module's.
    const uuid = (info as Document | undefined)?.info?.uuid as { buffer: Uint8Array; sub_type: number } | undefined;
    expect(uuid?.sub_type).toBe(Binary.SUBTYPE_UUID);
    return new Binary(Buffer.from(uuid!.buffer), uuid!.sub_type);
  }

  async close(): Promise<void> {
    for (const r of this.raws) r.destroy();
    await this.py?.close();
    for (const c of this.clients) await c.close().catch(() => undefined);
    await this.proxy.stop();
    await this.relay.close();
    await this.direct.db(this.phys).dropDatabase().catch(() => undefined);
    await this.direct.close();
  }
}

/** An HS256 token for `slug` (10 minutes), signed with its own secret unless `key` says otherwise. */
export function token(slug: string, claims: Record<string, unknown> = {}, key?: string): Promise<string> {
  const secret = key ?? (slug === 'beta' ? BETA_SECRET : ALPHA_SECRET);
  return sign({ app: slug, exp: seconds() + 600, ...claims }, 'HS256', secret);
}

/** A token with header {"alg":"none"} and no signature. */
export function unsignedToken(claims: Record<string, unknown>): string {
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  return `${b64({ alg: 'none' })}.${b64(claims)}.`;
}

/** Sends `doc` (plus kind-1 sequences) and decodes the reply without promoting int64 (cursor ids). */
export async function command(raw: RawClient, doc: Document, sequences?: { identifier: string; documents: Document[] }[]): Promise<Reply> {
  raw.send(opMsg(doc, sequences ? { sequences } : {}));
  return decodeReply(await raw.nextMessage());
}

/** Sends bytes and decodes the one reply. */
export async function exchange(raw: RawClient, bytes: Buffer): Promise<{ opCode: number; doc: Reply }> {
  raw.send(bytes);
  const msg = await raw.nextMessage();
  return { opCode: msg.readInt32LE(12), doc: decodeReply(msg) };
}

export function decodeReply(msg: Buffer): Reply {
  const opCode = msg.readInt32LE(12);
  if (opCode === OpCode.MSG) return deserialize(parseOpMsg(msg).body, { promoteLongs: false });
  if (opCode === OpCode.REPLY) return deserialize(msg.subarray(36), { promoteLongs: false });
  throw new Error(`unexpected reply opcode ${opCode}`);
}

/** The proxy closed the connection without replying. */
export async function expectClosed(raw: RawClient): Promise<void> {
  await expect(raw.nextMessage(5000)).rejects.toThrow('connection closed before a reply');
  expect(raw.isOpen).toBe(false);
}

/** What a driver call gave: its result, or the server's error document. */
export async function outcome(p: Promise<unknown>): Promise<Reply> {
  try {
    return { ok: 1, result: (await p) as Document };
  } catch (err) {
    if (err instanceof MongoServerError) {
      return { ok: 0, code: err.code, codeName: err.codeName, errmsg: err.message, ...(err.errorResponse as Document) };
    }
    throw err;
  }
}

/** The reply is the server's error shape with this code (and codeName when given). */
export function expectError(reply: Reply, code: number, codeName?: string): void {
  expect(reply, EJSON.stringify(reply)).toMatchObject({ ok: 0, code, ...(codeName ? { codeName } : {}) });
  expect(typeof reply.errmsg).toBe('string');
}

function toDocument(v: unknown): Document {
  if (v instanceof Error) return { name: v.name, message: v.message };
  if (Array.isArray(v)) return { array: v };
  if (v !== null && typeof v === 'object') return v as Document;
  return { value: v };
}

/** The documents of a cursor reply's first batch. */
export function firstBatch(reply: Reply): Document[] {
  expect(reply.ok, EJSON.stringify(reply)).toBe(1);
  return (reply.cursor as { firstBatch: Document[] }).firstBatch;
}

// ---- Hand-built BSON (duplicate keys, odd types) and legacy frames ----

type Element = Buffer;
const cstring = (s: string) => Buffer.concat([Buffer.from(s, 'utf8'), Buffer.from([0])]);

/** Hand-built BSON elements: names may repeat, which no encoder produces. */
export const el = {
  str(name: string, value: string): Element {
    const v = Buffer.from(value, 'utf8');
    const len = Buffer.alloc(4);
    len.writeInt32LE(v.length + 1);
    return Buffer.concat([Buffer.from([0x02]), cstring(name), len, v, Buffer.from([0])]);
  },
  int(name: string, value: number): Element {
    const v = Buffer.alloc(4);
    v.writeInt32LE(value);
    return Buffer.concat([Buffer.from([0x10]), cstring(name), v]);
  },
  doc(name: string, doc: Buffer): Element {
    return Buffer.concat([Buffer.from([0x03]), cstring(name), doc]);
  },
  arr(name: string, docs: Buffer[]): Element {
    return Buffer.concat([Buffer.from([0x04]), cstring(name), rawDoc(docs.map((d, i) => el.doc(String(i), d)))]);
  },
};

export function rawDoc(elements: Element[]): Buffer {
  const body = Buffer.concat(elements);
  const out = Buffer.alloc(4 + body.length + 1);
  out.writeInt32LE(out.length);
  body.copy(out, 4);
  return out;
}

let legacyRequestId = 900_000;

/** An OP_MSG whose body is raw bytes, with raw kind-1 documents. */
export function rawOpMsg(body: Buffer, sequences: { identifier: string; documents: Buffer[] }[] = []): Buffer {
  return encodeOpMsg(legacyRequestId++, 0, 0, body, sequences);
}

function frame(opCode: number, parts: Buffer[]): Buffer {
  const body = Buffer.concat(parts);
  const out = Buffer.alloc(16 + body.length);
  writeHeader(out, out.length, legacyRequestId++, 0, opCode);
  body.copy(out, 16);
  return out;
}

const i32 = (n: number) => {
  const b = Buffer.alloc(4);
  b.writeInt32LE(n);
  return b;
};
const i64 = (n: Long) => {
  const b = Buffer.alloc(8);
  b.writeBigInt64LE(n.toBigInt());
  return b;
};

export const legacy = {
  query(ns: string, query: Document): Buffer {
    return frame(OpCode.QUERY, [i32(0), cstring(ns), i32(0), i32(-1), Buffer.from(serialize(query))]);
  },
  insert(ns: string, docs: Document[]): Buffer {
    return frame(OpCode.INSERT, [i32(0), cstring(ns), ...docs.map((d) => Buffer.from(serialize(d)))]);
  },
  update(ns: string, selector: Document, update: Document): Buffer {
    return frame(OpCode.UPDATE, [i32(0), cstring(ns), i32(2), Buffer.from(serialize(selector)), Buffer.from(serialize(update))]);
  },
  delete(ns: string, selector: Document): Buffer {
    return frame(OpCode.DELETE, [i32(0), cstring(ns), i32(0), Buffer.from(serialize(selector))]);
  },
  getMore(ns: string, id: Long): Buffer {
    return frame(OpCode.GET_MORE, [i32(0), cstring(ns), i32(0), i64(id)]);
  },
  killCursors(ids: Long[]): Buffer {
    return frame(OpCode.KILL_CURSORS, [i32(0), i32(ids.length), ...ids.map(i64)]);
  },
  /** Wraps a whole message in OP_COMPRESSED (zlib = 2, noop = 0, snappy = 1). */
  compressed(msg: Buffer, compressor: 0 | 1 | 2 = 2): Buffer {
    const original = msg.subarray(16);
    const payload = compressor === 2 ? deflateSync(original) : original;
    const head = Buffer.alloc(9);
    head.writeInt32LE(msg.readInt32LE(12), 0);
    head.writeInt32LE(original.length, 4);
    head[8] = compressor;
    return frame(OpCode.COMPRESSED, [head, payload]);
  },
};

// ---- PyMongo ----

export interface PyOutcome {
  ok: boolean;
  result?: unknown;
  code?: number;
  codeName?: string;
  message?: string;
  /** Every exception message and detail, for leak checks. */
  raw: string;
}

/**
 * A long-lived Python process running PyMongo as alpha (test/e2e/isolation-attacks.py): each attempt is
 * one request line, answered by one JSON line, so attempts run in test order with beta checked between.
 */
export class PyAttacker {
  private readonly child: ChildProcessWithoutNullStreams;
  private readonly pending = new Map<number, (o: PyOutcome) => void>();
  private nextId = 1;
  private stderr = '';

  constructor(uri: string, db: string) {
    this.child = spawn(inject('pythonPath'), [path.join(HERE, 'isolation-attacks.py'), uri, db], {
      env: { ...process.env, PYTHONUNBUFFERED: '1' },
    });
    this.child.stderr.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-4000)));
    readline.createInterface({ input: this.child.stdout }).on('line', (line) => {
      const parsed = JSON.parse(line) as PyOutcome & { id: number };
      const done = this.pending.get(parsed.id);
      this.pending.delete(parsed.id);
      done?.({ ...parsed, raw: line });
    });
    this.child.on('exit', (code) => {
      for (const done of this.pending.values()) done({ ok: false, message: `python exited (${code}): ${this.stderr}`, raw: this.stderr });
      this.pending.clear();
    });
  }

  run(attack: string, ...args: unknown[]): Promise<PyOutcome> {
    const id = this.nextId++;
    return new Promise((resolve) => {
      this.pending.set(id, resolve);
      this.child.stdin.write(JSON.stringify({ id, attack, args }) + '\n');
    });
  }

  async close(): Promise<void> {
    if (this.child.exitCode !== null) return;
    const exited = new Promise((resolve) => this.child.once('exit', resolve));
    this.child.stdin.end();
    await exited;
  }
}
