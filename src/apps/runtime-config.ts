import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';

/** The proxy's own settings (config/runtime.yaml), after env variables and CLI flags are applied. */
export interface RuntimeConfig {
  configDir: string;
  /** The file the settings came from, if one existed. */
  file: string | undefined;
  listen: HostPort;
  httpListen: HostPort;
  upstream: {
    uri: string;
    database: string;
    connectTimeoutMS: number;
    serverSelectionTimeoutMS: number;
    pool: { maxSize: number; maxIdleTimeMS: number; waitQueueTimeoutMS: number };
  };
  logLevel: string;
  shutdownGraceMS: number;
}

export interface HostPort {
  host: string;
  port: number;
}

/** Settings that can come from a flag; undefined means "not given". */
export interface ConfigOverrides {
  config?: string | undefined;
  listen?: string | undefined;
  httpListen?: string | undefined;
  upstream?: string | undefined;
  database?: string | undefined;
  logLevel?: string | undefined;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'];

/**
 * Loads runtime.yaml from the config directory. Precedence: CLI flag > env variable > file > default
 * (DESIGN.md section 2).
 */
export function loadRuntimeConfig(overrides: ConfigOverrides = {}, env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  const configDir = path.resolve(overrides.config ?? env.MDB_CONFIG ?? './config');
  const file = ['runtime.yaml', 'runtime.yml'].map((f) => path.join(configDir, f)).find((f) => fs.existsSync(f));
  let raw: Record<string, unknown> = {};
  if (file) {
    const doc = YAML.parseDocument(fs.readFileSync(file, 'utf8'));
    if (doc.errors.length > 0) {
      const e = doc.errors[0]!;
      const at = e.linePos?.[0];
      throw new ConfigError(`${file}${at ? `:${at.line}:${at.col}` : ''}: ${e.message}`);
    }
    const value: unknown = doc.toJS() ?? {};
    if (!isObject(value)) throw new ConfigError(`${file}: expected a mapping of settings, found ${describe(value)}`);
    raw = value;
  } else if (overrides.config !== undefined || env.MDB_CONFIG !== undefined) {
    if (!fs.existsSync(configDir)) throw new ConfigError(`config directory ${configDir} does not exist`);
  }
  const where = (key: string) => `${file ?? 'runtime.yaml'}: ${key}`;
  const upstream = optionalObject(raw.upstream, where('upstream'));
  const pool = optionalObject(upstream.pool, where('upstream.pool'));

  const logLevel = overrides.logLevel ?? env.MDB_LOG_LEVEL ?? optionalString(raw.log_level, where('log_level')) ?? 'info';
  if (!LOG_LEVELS.includes(logLevel)) {
    throw new ConfigError(`log level '${logLevel}' is not one of ${LOG_LEVELS.join(', ')}`);
  }
  const uri = overrides.upstream ?? env.MDB_UPSTREAM_URI ?? optionalString(upstream.uri, where('upstream.uri')) ?? 'mongodb://127.0.0.1:27017';
  if (!/^mongodb(\+srv)?:\/\//.test(uri)) {
    throw new ConfigError(`upstream uri must start with mongodb:// or mongodb+srv://, found '${redactUri(uri)}'`);
  }
  const database = overrides.database ?? env.MDB_DATABASE ?? optionalString(upstream.database, where('upstream.database')) ?? 'mdb_runtime';
  if (!/^[A-Za-z0-9_-]{1,63}$/.test(database)) {
    throw new ConfigError(`upstream database '${database}' must be 1-63 letters, digits, '_' or '-'`);
  }
  return {
    configDir,
    file,
    listen: parseHostPort(
      overrides.listen ?? env.MDB_LISTEN ?? optionalString(raw.listen, where('listen')) ?? '127.0.0.1:27100',
      'listen',
    ),
    httpListen: parseHostPort(
      overrides.httpListen ?? env.MDB_HTTP_LISTEN ?? optionalString(raw.http_listen, where('http_listen')) ?? '127.0.0.1:27180',
      'http_listen',
    ),
    upstream: {
      uri,
      database,
      connectTimeoutMS: optionalInt(upstream.connect_timeout_ms, where('upstream.connect_timeout_ms'), 1) ?? 10_000,
      serverSelectionTimeoutMS:
        optionalInt(upstream.server_selection_timeout_ms, where('upstream.server_selection_timeout_ms'), 1) ?? 30_000,
      pool: {
        maxSize: optionalInt(pool.max_size, where('upstream.pool.max_size'), 1) ?? 100,
        maxIdleTimeMS: optionalInt(pool.max_idle_time_ms, where('upstream.pool.max_idle_time_ms'), 1) ?? 60_000,
        waitQueueTimeoutMS: optionalInt(pool.wait_queue_timeout_ms, where('upstream.pool.wait_queue_timeout_ms'), 1) ?? 30_000,
      },
    },
    logLevel,
    shutdownGraceMS: optionalInt(raw.shutdown_grace_ms, where('shutdown_grace_ms'), 0) ?? 10_000,
  };
}

export function parseHostPort(value: string, key: string): HostPort {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(value) ?? /^([^:]*):(\d+)$/.exec(value) ?? /^()(\d+)$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new ConfigError(`${key}: expected host:port (e.g. 127.0.0.1:27100), found '${value}'`);
  }
  return { host: m[1] || '127.0.0.1', port };
}

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/** The URI with any password replaced, for logs and errors. */
export function redactUri(uri: string): string {
  return uri.replace(/(mongodb(?:\+srv)?:\/\/[^:@/]*):[^@/]*@/, '$1:***@');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'a list';
  return `a ${typeof v} (${JSON.stringify(v)})`;
}

function optionalObject(v: unknown, key: string): Record<string, unknown> {
  if (v === undefined || v === null) return {};
  if (!isObject(v)) throw new ConfigError(`${key}: expected a mapping, found ${describe(v)}`);
  return v;
}

function optionalString(v: unknown, key: string): string | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v === 'number') return String(v);
  if (typeof v !== 'string') throw new ConfigError(`${key}: expected a string, found ${describe(v)}`);
  return v;
}

function optionalInt(v: unknown, key: string, min: number): number | undefined {
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min) {
    throw new ConfigError(`${key}: expected an integer >= ${min}, found ${describe(v)}`);
  }
  return v;
}
