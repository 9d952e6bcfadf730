import fs from 'node:fs';
import { Writable } from 'node:stream';
import { inject } from 'vitest';
import { MongoClient, type MongoClientOptions } from 'mongodb';
import { loadRuntimeConfig } from '../../src/config/runtime-config.js';
import { createLogger } from '../../src/observability/logger.js';
import { startRuntime, type RunningRuntime, type RuntimeOptions } from '../../src/runtime.js';
import { tempConfig } from '../../src/testing/processes.js';

export interface TestProxy {
  runtime: RunningRuntime;
  port: number;
  /** A connection string to the proxy (appName selects a dev app when given). */
  uri(appName?: string): string;
  /** The shared physical database every app's collections live in (runtime.yaml `upstream.database`). */
  database: string;
  /** The field every stored document is tagged with (runtime.yaml `tag_field`). */
  tagField: string;
  /** Log lines the proxy wrote, parsed. */
  logs: Record<string, unknown>[];
  /** The temporary config directory (runtime.yaml, apps/): tests of hot reload edit apps/ in place. */
  configDir: string;
  /** The HTTP port (/healthz, /readyz, /apps). */
  httpPort: number;
  stop(): Promise<void>;
}

export interface TestProxyOptions {
  upstreamUri?: string;
  /** Manifests to write into a temporary config dir: file name → YAML text. */
  apps?: Record<string, string>;
  runtimeYaml?: string;
  logLevel?: string;
  /** The proxy's clock (token expiry); default Date.now. */
  now?: () => number;
  /** Further runtime options (manifest watching, start-time manifest errors, grace periods). */
  runtime?: Omit<RuntimeOptions, 'now'>;
}

/** A playground app (no auth required) that tests select with ?appName=playground. */
export const PLAYGROUND_APP = 'slug: playground\nname: Playground\nauth_required: false\n';

/** Starts the real proxy in this process on free ports, against the test upstream by default. */
export async function startTestProxy(options: TestProxyOptions = {}): Promise<TestProxy> {
  // By default each proxy gets its own physical database: suites run side by side on one upstream, and
  // an app's collections (playground_t...) would otherwise meet another suite's. It is dropped on stop.
  const ownDatabase = options.runtimeYaml === undefined ? uniqueDb('sandbox') : undefined;
  const dir = tempConfig(
    options.runtimeYaml ?? runtimeYamlWithDatabase(ownDatabase!),
    options.apps ?? { 'playground.yaml': PLAYGROUND_APP },
    'mdb-proxy-config-',
  );
  const config = loadRuntimeConfig(
    {
      config: dir,
      listen: '127.0.0.1:0',
      httpListen: '127.0.0.1:0',
      upstream: options.upstreamUri ?? inject('upstreamUri'),
      logLevel: options.logLevel ?? 'debug',
    },
    {},
  );
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      if (logs.length > 50_000) logs.splice(0, 25_000);
      cb();
    },
  });
  const runtime = await startRuntime(config, createLogger(config.logLevel, sink), {
    ...(options.runtime ?? {}),
    ...(options.now ? { now: options.now } : {}),
  });
  const port = runtime.proxyAddress.port;
  return {
    runtime,
    port,
    logs,
    configDir: dir,
    httpPort: runtime.httpAddress.port,
    uri: (appName?: string) => `mongodb://127.0.0.1:${port}/${appName ? `?appName=${appName}` : ''}`,
    database: config.upstream.database,
    tagField: config.tagField,
    async stop() {
      await runtime.stop();
      fs.rmSync(dir, { recursive: true, force: true });
      if (ownDatabase) {
        const direct = new MongoClient(config.upstream.uri, { serverSelectionTimeoutMS: 5000 });
        try {
          await direct.db(ownDatabase).dropDatabase();
        } catch {
          // The upstream may be gone already (tests that stop it); the data dir goes with it.
        } finally {
          await direct.close();
        }
      }
    },
  };
}

/**
 * runtime.yaml text giving the proxy its own physical database `database` (so that a suite's apps do
 * not share `mdb_runtime` with the suites running beside it), plus any further top-level lines.
 * `upstream` lines (e.g. '  pool:\n    max_size: 4') go inside the upstream section.
 */
export function runtimeYamlWithDatabase(database: string, options: { top?: string; upstream?: string } = {}): string {
  return `shutdown_grace_ms: 5000\n${options.top ?? ''}upstream:\n  database: ${database}\n${options.upstream ?? ''}`;
}

/** A database name no other suite uses (suites share one upstream). */
export function uniqueDb(prefix: string): string {
  return `${prefix}_${process.pid}_${Math.random().toString(36).slice(2, 8)}`;
}

export async function connect(uri: string, options: MongoClientOptions = {}): Promise<MongoClient> {
  const client = new MongoClient(uri, { serverSelectionTimeoutMS: 10_000, ...options });
  await client.connect();
  return client;
}
