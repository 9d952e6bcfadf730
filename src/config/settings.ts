/**
 * The settings of runtime.yaml as a table: each key with its env variable, flag, kind, bounds and default.
 * The loader (runtime-config.ts) reads it; the JSON Schema (runtime-schema.ts), `serve`'s flags and --help
 * and docs/runtime-reference.md are generated from it. It imports nothing, so that the loader and the
 * schema can both import it without importing each other.
 */

/**
 * Settings given as CLI flags (commander's camelCase of the flag name); undefined means "not given".
 * Values are the strings typed on the command line.
 */
export interface ConfigOverrides {
  config?: string | undefined;
  listen?: string | undefined;
  httpListen?: string | undefined;
  upstream?: string | undefined;
  database?: string | undefined;
  logLevel?: string | undefined;
  shutdownGraceMs?: string | undefined;
  workers?: string | undefined;
  preAuthIdleTimeoutMs?: string | undefined;
  tagField?: string | undefined;
  slowOperationMs?: string | undefined;
  metrics?: string | undefined;
  indexReconcile?: string | undefined;
  indexPrune?: string | undefined;
  indexIntervalMs?: string | undefined;
  indexLeaseTtlMs?: string | undefined;
  connectTimeoutMs?: string | undefined;
  serverSelectionTimeoutMs?: string | undefined;
  poolMaxSize?: string | undefined;
  poolMaxIdleTimeMs?: string | undefined;
  poolWaitQueueTimeoutMs?: string | undefined;
  upstreamRequestTimeoutMs?: string | undefined;
  maxAwaitTimeMs?: string | undefined;
}

export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export type SettingKind = 'hostport' | 'uri' | 'database' | 'logLevel' | 'int' | 'fieldName' | 'bool' | 'enum';

/** One setting of runtime.yaml with its env variable and flag. */
export interface SettingSpec {
  /** Dotted key path in runtime.yaml. */
  key: string;
  env: string;
  /** The long flag, e.g. `--listen`; `option` is its ConfigOverrides property. */
  flag: string;
  short?: string;
  option: Exclude<keyof ConfigOverrides, 'config'>;
  /** The flag's argument placeholder for --help. */
  arg: string;
  kind: SettingKind;
  /** Smallest value allowed (kind 'int'). */
  min?: number;
  /** Largest value allowed (kind 'int'). */
  max?: number;
  /** The allowed values (kind 'enum'). */
  values?: readonly string[];
  default: string | number | boolean;
  help: string;
}

/** The config directory is not a runtime.yaml setting but has a flag and an env variable too. */
export const CONFIG_DIR_SETTING = { env: 'MDB_CONFIG', flag: '--config', short: '-c', default: './config' } as const;

/**
 * Every setting of runtime.yaml. The loader, the unknown-key check, `serve`'s flags and its --help are
 * all generated from this table; a new setting is added here (and read in loadRuntimeConfig).
 */
export const SETTINGS: readonly SettingSpec[] = [
  { key: 'listen', env: 'MDB_LISTEN', flag: '--listen', short: '-l', option: 'listen', arg: '<host:port>', kind: 'hostport', default: '127.0.0.1:27100', help: 'MongoDB wire-protocol listen address' },
  { key: 'http_listen', env: 'MDB_HTTP_LISTEN', flag: '--http-listen', option: 'httpListen', arg: '<host:port>', kind: 'hostport', default: '127.0.0.1:27180', help: 'HTTP listen address (/healthz, /readyz)' },
  { key: 'upstream.uri', env: 'MDB_UPSTREAM_URI', flag: '--upstream', short: '-u', option: 'upstream', arg: '<uri>', kind: 'uri', default: 'mongodb://127.0.0.1:27017', help: 'upstream MongoDB connection string (credentials and TLS options go here)' },
  { key: 'upstream.database', env: 'MDB_DATABASE', flag: '--database', short: '-d', option: 'database', arg: '<name>', kind: 'database', default: 'mdb_runtime', help: 'the shared physical database on the upstream' },
  { key: 'log_level', env: 'MDB_LOG_LEVEL', flag: '--log-level', option: 'logLevel', arg: '<level>', kind: 'logLevel', default: 'info', help: `log level: ${LOG_LEVELS.join(', ')}` },
  { key: 'shutdown_grace_ms', env: 'MDB_SHUTDOWN_GRACE_MS', flag: '--shutdown-grace-ms', option: 'shutdownGraceMs', arg: '<ms>', kind: 'int', min: 0, default: 10_000, help: 'on SIGTERM/SIGINT, how long in-flight requests may take to finish' },
  { key: 'workers', env: 'MDB_WORKERS', flag: '--workers', option: 'workers', arg: '<n>', kind: 'int', min: 1, max: 64, default: 1, help: 'processes serving the wire port (node:cluster; 1: a single process); the HTTP endpoints add up all of them' },
  { key: 'tag_field', env: 'MDB_TAG_FIELD', flag: '--tag-field', option: 'tagField', arg: '<name>', kind: 'fieldName', default: 'app_id', help: 'the field every app document is tagged with' },
  { key: 'pre_auth_idle_timeout_ms', env: 'MDB_PRE_AUTH_IDLE_TIMEOUT_MS', flag: '--pre-auth-idle-timeout-ms', option: 'preAuthIdleTimeoutMs', arg: '<ms>', kind: 'int', min: 0, default: 60_000, help: 'close client connections that send nothing for this long before authenticating (0: never)' },
  { key: 'slow_operation_ms', env: 'MDB_SLOW_OPERATION_MS', flag: '--slow-operation-ms', option: 'slowOperationMs', arg: '<ms>', kind: 'int', min: 0, default: 100, help: 'log operations slower than this at warn (0: log none)' },
  { key: 'metrics', env: 'MDB_METRICS', flag: '--metrics', option: 'metrics', arg: '<bool>', kind: 'bool', default: true, help: 'count every request in the Prometheus metrics (/metrics) and in /apps (false: no per-request instrumentation)' },
  { key: 'indexes.reconcile', env: 'MDB_INDEX_RECONCILE', flag: '--index-reconcile', option: 'indexReconcile', arg: '<mode>', kind: 'enum', values: ['report', 'replace'], default: 'report', help: 'what to do with a managed index that drifted: report it, or replace it' },
  { key: 'indexes.prune', env: 'MDB_INDEX_PRUNE', flag: '--index-prune', option: 'indexPrune', arg: '<bool>', kind: 'bool', default: false, help: 'drop indexes of managed collections that no manifest lists' },
  { key: 'indexes.interval_ms', env: 'MDB_INDEX_INTERVAL_MS', flag: '--index-interval-ms', option: 'indexIntervalMs', arg: '<ms>', kind: 'int', min: 1000, default: 60_000, help: 'how often indexes are checked again (besides start and manifest changes)' },
  { key: 'indexes.lease_ttl_ms', env: 'MDB_INDEX_LEASE_TTL_MS', flag: '--index-lease-ttl-ms', option: 'indexLeaseTtlMs', arg: '<ms>', kind: 'int', min: 1000, default: 30_000, help: 'a reconciliation lease not renewed for this long may be taken over by another proxy' },
  { key: 'upstream.connect_timeout_ms', env: 'MDB_CONNECT_TIMEOUT_MS', flag: '--connect-timeout-ms', option: 'connectTimeoutMs', arg: '<ms>', kind: 'int', min: 1, default: 10_000, help: 'timeout for opening one upstream connection' },
  { key: 'upstream.server_selection_timeout_ms', env: 'MDB_SERVER_SELECTION_TIMEOUT_MS', flag: '--server-selection-timeout-ms', option: 'serverSelectionTimeoutMs', arg: '<ms>', kind: 'int', min: 1, default: 30_000, help: 'how long to wait for a usable upstream server, at start and per request' },
  { key: 'upstream.pool.max_size', env: 'MDB_POOL_MAX_SIZE', flag: '--pool-max-size', option: 'poolMaxSize', arg: '<n>', kind: 'int', min: 1, default: 100, help: 'raw connections per upstream server' },
  { key: 'upstream.pool.max_idle_time_ms', env: 'MDB_POOL_MAX_IDLE_TIME_MS', flag: '--pool-max-idle-time-ms', option: 'poolMaxIdleTimeMs', arg: '<ms>', kind: 'int', min: 1, default: 60_000, help: 'idle upstream connections older than this are closed' },
  { key: 'upstream.pool.wait_queue_timeout_ms', env: 'MDB_POOL_WAIT_QUEUE_TIMEOUT_MS', flag: '--pool-wait-queue-timeout-ms', option: 'poolWaitQueueTimeoutMs', arg: '<ms>', kind: 'int', min: 1, default: 30_000, help: 'how long a request may wait for a free upstream connection' },
  { key: 'upstream.request_timeout_ms', env: 'MDB_UPSTREAM_REQUEST_TIMEOUT_MS', flag: '--upstream-request-timeout-ms', option: 'upstreamRequestTimeoutMs', arg: '<ms>', kind: 'int', min: 1000, default: 120_000, help: "how long a request may wait for the upstream's reply (longer when its maxTimeMS asks for more); then it fails with NetworkTimeout (89) and the upstream connection is closed" },
  { key: 'upstream.max_await_time_ms', env: 'MDB_MAX_AWAIT_TIME_MS', flag: '--max-await-time-ms', option: 'maxAwaitTimeMs', arg: '<ms>', kind: 'int', min: 1, default: 10_000, help: 'the most a getMore of a tailable awaitData cursor or a change stream may wait upstream (its maxTimeMS is lowered to this)' },
];

/** What a setting's value must be, in words (errors of the loader and the schema's `x-expected`). */
export function expectation(spec: SettingSpec): string {
  switch (spec.kind) {
    case 'hostport':
      return HOST_PORT_EXPECTED;
    case 'uri':
      return 'a MongoDB connection string (mongodb://...)';
    case 'database':
      return "a database name of 1-63 letters, digits, '_' or '-'";
    case 'logLevel':
      return `one of ${LOG_LEVELS.join(', ')}`;
    case 'int':
      return spec.max !== undefined ? `an integer from ${spec.min ?? 0} to ${spec.max}` : `an integer >= ${spec.min ?? 0}`;
    case 'enum':
      return `one of ${(spec.values ?? []).join(', ')}`;
    case 'bool':
      return 'true or false';
    case 'fieldName':
      return 'a top-level field name of letters, digits and _ (not starting with a digit, not _id), e.g. app_id';
  }
}

export const HOST_PORT_EXPECTED = 'host:port (e.g. 127.0.0.1:27100) with a port from 0 to 65535';
