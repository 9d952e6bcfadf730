import { expect } from 'vitest';
import net from 'node:net';
import { Writable } from 'node:stream';
import { deserialize } from 'bson';
import type { Document, MongoClient } from 'mongodb';
import type { IndexKey, IndexPolicy, ManagedIndex } from '../../src/apps/manifest-types.js';
import { manifestDefaults, type AppManifest } from '../../src/apps/manifests.js';
import { createLogger, type Logger } from '../../src/observability/logger.js';
import { MessageFramer, OpCode, parseOpMsg } from '../../src/wire/index.js';

/** Shared helpers of the index suites: manifests built in code, a captured logger, polling. */

export function idx(name: string, keys: IndexKey[], options: Record<string, unknown> = {}): ManagedIndex {
  return { name, keys, options };
}

/** An AppManifest as the loader would produce it, with `managed` indexes and an index policy. */
export function appWith(slug: string, managed: Record<string, ManagedIndex[]>, policy: Partial<IndexPolicy> = {}): AppManifest {
  const defaults = manifestDefaults();
  return {
    slug,
    name: slug,
    authRequired: false,
    exposeTag: false,
    file: `/nowhere/apps/${slug}.yaml`,
    jwt: undefined,
    rbac: undefined,
    unavailable: undefined,
    warnings: [],
    ...defaults,
    managedIndexes: new Map(Object.entries(managed)),
    indexPolicy: { ...defaults.indexPolicy, ...policy },
  };
}

export interface CapturedLogger {
  logger: Logger;
  lines: Record<string, unknown>[];
}

export function captureLogger(level = 'debug'): CapturedLogger {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  return { logger: createLogger(level, sink), lines };
}

/** Polls `probe` until it returns something other than undefined/false, or fails after `timeoutMS`. */
export async function waitFor<T>(probe: () => T | undefined | false | Promise<T | undefined | false>, what: string, timeoutMS = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMS;
  let last: unknown;
  for (let delay = 10; ; delay = Math.min(delay * 2, 200)) {
    try {
      const value = await probe();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMS} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, delay));
  }
}

/** listIndexes of a physical collection, directly on the upstream, as `{name: rest}` without `v`/`ns`. */
export async function upstreamIndexes(client: MongoClient, database: string, collection: string): Promise<Record<string, Document>> {
  let list: Document[];
  try {
    list = await client.db(database).collection(collection).listIndexes().toArray();
  } catch (err) {
    if ((err as { code?: unknown }).code === 26) return {};
    throw err;
  }
  const out: Record<string, Document> = {};
  for (const { name, v: _v, ns: _ns, ...rest } of list) out[String(name)] = rest;
  return out;
}

/**
 * A TCP relay in front of the upstream that holds the replies of ONE connection: the one that carries
 * the first request `matches` accepts (e.g. a createIndexes on one collection). Other connections of
 * the same client (lease renewals from its pool) keep flowing, so a holder stays alive and keeps its
 * lease while its build is "in progress" for as long as the test wants.
 */
export class ConnectionHoldingRelay {
  /** Resolves once a matching request was forwarded and its connection's replies are held. */
  readonly held: Promise<void>;
  private readonly pairs = new Set<{ client: net.Socket; target: net.Socket; holding: boolean; buffered: Buffer[] }>();
  private triggered = false;
  private onHeld!: () => void;

  private constructor(
    private readonly server: net.Server,
    readonly port: number,
    target: { host: string; port: number },
    private readonly matches: (body: Document) => boolean,
  ) {
    this.held = new Promise((resolve) => (this.onHeld = resolve));
    server.on('connection', (client) => this.accept(client, target));
  }

  static async start(target: { host: string; port: number }, matches: (body: Document) => boolean): Promise<ConnectionHoldingRelay> {
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return new ConnectionHoldingRelay(server, (server.address() as net.AddressInfo).port, target, matches);
  }

  /** Passes the held replies on; from now on everything flows. */
  release(): void {
    for (const p of this.pairs) {
      p.holding = false;
      for (const chunk of p.buffered.splice(0)) if (!p.client.destroyed) p.client.write(chunk);
    }
  }

  async close(): Promise<void> {
    for (const p of this.pairs) {
      p.client.destroy();
      p.target.destroy();
    }
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(client: net.Socket, to: { host: string; port: number }): void {
    const target = net.connect(to);
    const pair = { client, target, holding: false, buffered: [] as Buffer[] };
    this.pairs.add(pair);
    const end = () => {
      client.destroy();
      target.destroy();
      this.pairs.delete(pair);
    };
    for (const s of [client, target]) {
      s.on('error', end);
      s.on('close', end);
    }
    target.on('data', (chunk: Buffer) => {
      if (pair.holding) pair.buffered.push(chunk);
      else if (!client.destroyed) client.write(chunk);
    });
    const framer = new MessageFramer(0x7fffffff);
    client.on('data', (chunk: Buffer) => {
      for (const frame of framer.push(chunk)) {
        const raw = Buffer.from(frame);
        target.write(raw);
        if (this.triggered || raw.readInt32LE(12) !== OpCode.MSG) continue;
        let body: Document;
        try {
          body = deserialize(parseOpMsg(raw).body);
        } catch {
          continue;
        }
        if (this.matches(body)) {
          this.triggered = true;
          pair.holding = true;
          this.onHeld();
        }
      }
    });
  }
}

/** The plan table's rows (APP, COLLECTION, INDEX, ACTION, DETAIL) after the first header from `from`. */
export function planTable(lines: string[], from = 0): string[][] {
  const start = lines.findIndex((l, i) => i >= from && l.startsWith('APP '));
  expect(start, lines.join('\n')).toBeGreaterThanOrEqual(0);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 1)) {
    const cells = line.split(/ {2,}/);
    if (cells.length < 4) break;
    rows.push(cells);
  }
  return rows;
}
