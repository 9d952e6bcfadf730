import fs from 'node:fs';
import path from 'node:path';
import { MongoClient } from 'mongodb';
import { runtimeSchemaProblems } from './runtime-schema.js';
import { CONFIG_DIR_SETTING, HOST_PORT_EXPECTED, LOG_LEVELS, SETTINGS, expectation, type ConfigOverrides, type SettingSpec } from './settings.js';
import { ConfigError, YamlFile, closest, describeValue, isMapping } from './source.js';

export { ConfigError } from './source.js';
// The settings table is part of this module's interface (serve's flags, validate, the docs read it here).
export {
  CONFIG_DIR_SETTING,
  HOST_PORT_EXPECTED,
  LOG_LEVELS,
  SETTINGS,
  expectation,
  type ConfigOverrides,
  type SettingKind,
  type SettingSpec,
} from './settings.js';

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
    /** A request whose reply takes longer is failed (NetworkTimeout) and its upstream connection closed. */
    requestTimeoutMS: number;
    /** The cap on the maxTimeMS of awaitData getMores (tailable cursors, change streams). */
    maxAwaitTimeMS: number;
  };
  logLevel: string;
  shutdownGraceMS: number;
  /** Processes serving the wire port (`serve --workers N`): 1 runs everything in one process, no cluster. */
  workers: number;
  /** An unauthenticated client connection idle this long is closed (0: never). */
  preAuthIdleTimeoutMS: number;
  /** The field every app document is tagged with (docs/security.md). */
  tagField: string;
  /** Operations slower than this are logged at warn (a manifest's observability may override). */
  slowOperationMS: number;
  /** Per-request metrics (operations, latencies, bytes, rejections); false makes that instrumentation a no-op. */
  metrics: boolean;
  /** Index reconciliation defaults (a manifest's index_policy may override reconcile and prune). */
  indexes: { reconcile: 'report' | 'replace'; prune: boolean; intervalMS: number; leaseTtlMS: number };
}

export interface HostPort {
  host: string;
  port: number;
}

const SETTING_KEYS = new Set(SETTINGS.map((s) => s.key));
/** Keys that hold a mapping of settings ("upstream", "upstream.pool"). */
const SECTIONS = new Set(SETTINGS.flatMap((s) => s.key.split('.').slice(0, -1).map((_, i, parts) => parts.slice(0, i + 1).join('.'))));

/** Where a value came from and the value itself, as given (a string from a flag or env, any YAML value). */
interface Given {
  value: unknown;
  /** For error messages: `--listen`, `MDB_LISTEN`, `/etc/mdb/runtime.yaml:3:9: listen` or `default listen`. */
  where: string;
  /** True when the value is text typed by a person (flag, env variable), not a YAML value. */
  text: boolean;
}

/** The found value for an error: text as typed ('abc'), YAML values with their type. */
function found(g: Given): string {
  return g.text && typeof g.value === 'string' ? `'${g.value}'` : describeValue(g.value);
}

/**
 * Loads runtime.yaml from the config directory. Precedence: CLI flag > env variable > file > default.
 * An empty env variable counts as unset. Every error names where the bad value came from (file:line:col
 * and key, variable or flag), what was expected and what was found.
 */
export function loadRuntimeConfig(overrides: ConfigOverrides = {}, env: NodeJS.ProcessEnv = process.env): RuntimeConfig {
  const configDir = resolveConfigDir(overrides, env);
  const file = findRuntimeFile(configDir);
  let yaml: YamlFile | undefined;
  let raw: Record<string, unknown> = {};
  if (file) {
    yaml = YamlFile.parse(file, fs.readFileSync(file, 'utf8'));
    const value = yaml.value ?? {};
    if (!isMapping(value)) {
      throw new ConfigError(
        `${yaml.at([])}: expected a mapping of settings (e.g. "listen: 127.0.0.1:27100"), found ${describeValue(value)}`,
      );
    }
    raw = value;
    checkKeys(raw, [], yaml);
  }

  const given = (spec: SettingSpec): Given => {
    const flag = overrides[spec.option];
    if (flag !== undefined) return { value: flag, where: spec.flag, text: true };
    const fromEnv = env[spec.env];
    if (fromEnv !== undefined && fromEnv !== '') return { value: fromEnv, where: spec.env, text: true };
    const keyPath = spec.key.split('.');
    const inFile = getIn(raw, keyPath);
    if (inFile !== undefined && inFile !== null && yaml) return { value: inFile, where: `${yaml.at(keyPath)}: ${spec.key}`, text: false };
    return { value: spec.default, where: `default ${spec.key}`, text: false };
  };
  const setting = (key: string): SettingSpec => SETTINGS.find((s) => s.key === key)!;
  const str = (key: string): string => {
    const spec = setting(key);
    return parseString(given(spec), spec);
  };
  const hostPort = (key: string): HostPort => {
    const spec = setting(key);
    const g = given(spec);
    const hp = tryParseHostPort(parseString(g, spec));
    if (!hp) throw new ConfigError(`${g.where}: expected ${HOST_PORT_EXPECTED}, found ${found(g)}`);
    return hp;
  };
  const int = (key: string): number => {
    const spec = setting(key);
    return parseInteger(given(spec), spec.min ?? 0, spec.max);
  };
  const bool = (key: string): boolean => {
    const g = given(setting(key));
    if (typeof g.value === 'boolean') return g.value;
    if (g.text && typeof g.value === 'string' && /^(true|false)$/i.test(g.value.trim())) return g.value.trim().toLowerCase() === 'true';
    throw new ConfigError(`${g.where}: expected true or false, found ${found(g)}`);
  };

  const config: RuntimeConfig = {
    configDir,
    file,
    listen: hostPort('listen'),
    httpListen: hostPort('http_listen'),
    upstream: {
      uri: str('upstream.uri'),
      database: str('upstream.database'),
      connectTimeoutMS: int('upstream.connect_timeout_ms'),
      serverSelectionTimeoutMS: int('upstream.server_selection_timeout_ms'),
      pool: {
        maxSize: int('upstream.pool.max_size'),
        maxIdleTimeMS: int('upstream.pool.max_idle_time_ms'),
        waitQueueTimeoutMS: int('upstream.pool.wait_queue_timeout_ms'),
      },
      requestTimeoutMS: int('upstream.request_timeout_ms'),
      maxAwaitTimeMS: int('upstream.max_await_time_ms'),
    },
    logLevel: str('log_level'),
    shutdownGraceMS: int('shutdown_grace_ms'),
    workers: int('workers'),
    preAuthIdleTimeoutMS: int('pre_auth_idle_timeout_ms'),
    tagField: str('tag_field'),
    slowOperationMS: int('slow_operation_ms'),
    metrics: bool('metrics'),
    indexes: {
      reconcile: str('indexes.reconcile') as 'report' | 'replace',
      prune: bool('indexes.prune'),
      intervalMS: int('indexes.interval_ms'),
      leaseTtlMS: int('indexes.lease_ttl_ms'),
    },
  };
  // The file must also satisfy schema/runtime.schema.json (the checks above come first, for their
  // messages; this catches what they let through, e.g. a quoted number).
  if (yaml) {
    const problems = runtimeSchemaProblems(raw, yaml);
    if (problems.length > 0) throw new ConfigError(problems.map((p) => p.message).join('\n'));
  }
  return config;
}

/**
 * Every problem of the runtime.yaml (or runtime.yml) in `configDir` on its own, without env variables
 * and flags: YAML syntax, the schema (unknown keys, types, ranges). Empty when there is no such file.
 */
export function runtimeFileProblems(configDir: string): string[] {
  let file: string | undefined;
  try {
    file = findRuntimeFile(configDir);
  } catch (err) {
    return [(err as Error).message];
  }
  if (!file) return [];
  let yaml: YamlFile;
  try {
    yaml = YamlFile.parse(file, fs.readFileSync(file, 'utf8'));
  } catch (err) {
    return [(err as Error).message];
  }
  return runtimeSchemaProblems(yaml.value ?? {}, yaml).map((p) => p.message);
}

/** The config directory named by --config, MDB_CONFIG or the default; a named one must exist. */
export function resolveConfigDir(overrides: Pick<ConfigOverrides, 'config'>, env: NodeJS.ProcessEnv): string {
  const fromEnv = env[CONFIG_DIR_SETTING.env] || undefined;
  const where = overrides.config !== undefined ? CONFIG_DIR_SETTING.flag : fromEnv !== undefined ? CONFIG_DIR_SETTING.env : undefined;
  const dir = path.resolve(overrides.config ?? fromEnv ?? CONFIG_DIR_SETTING.default);
  // The default ./config may be absent (all defaults); a directory someone named must exist.
  if (where !== undefined) {
    if (!fs.existsSync(dir)) throw new ConfigError(`${where}: config directory ${dir} does not exist`);
    if (!fs.statSync(dir).isDirectory()) {
      throw new ConfigError(`${where}: expected a directory holding runtime.yaml and apps/, found the file ${dir}`);
    }
  }
  return dir;
}

/** config/runtime.yaml or runtime.yml (not both), or undefined. */
export function findRuntimeFile(configDir: string): string | undefined {
  const found = ['runtime.yaml', 'runtime.yml'].map((f) => path.join(configDir, f)).filter((f) => fs.existsSync(f));
  if (found.length > 1) throw new ConfigError(`${found.join(' and ')} both exist; keep one of them`);
  return found[0];
}

/** Rejects keys that are not settings (typos would otherwise be silently ignored). */
function checkKeys(map: Record<string, unknown>, prefix: string[], yaml: YamlFile): void {
  for (const [key, value] of Object.entries(map)) {
    const keyPath = [...prefix, key];
    const full = keyPath.join('.');
    if (SECTIONS.has(full)) {
      if (value === null || value === undefined) continue;
      if (!isMapping(value)) {
        throw new ConfigError(`${yaml.at(keyPath)}: ${full}: expected a mapping of settings, found ${describeValue(value)}`);
      }
      checkKeys(value, keyPath, yaml);
      continue;
    }
    if (SETTING_KEYS.has(full)) continue;
    const allowedHere = [...SETTING_KEYS, ...SECTIONS]
      .filter((k) => k.split('.').length === keyPath.length && k.startsWith(prefix.length ? `${prefix.join('.')}.` : ''))
      .map((k) => k.split('.').pop()!);
    const elsewhere = [...SETTING_KEYS].find((k) => k.endsWith(`.${key}`) || k === key);
    const typo = closest(key, allowedHere);
    const hint = elsewhere ? ` (did you mean '${elsewhere}'?)` : typo ? ` (did you mean '${[...prefix, typo].join('.')}'?)` : '';
    throw new ConfigError(
      `${yaml.at(keyPath, 'key')}: unknown setting '${full}'${hint}; allowed ${prefix.length ? `under '${prefix.join('.')}'` : 'at the top level'}: ${allowedHere.join(', ')}`,
    );
  }
}

function parseString(g: Given, spec: SettingSpec): string {
  let value = g.value;
  // `listen: 27100` is a number in YAML; a bare port is a valid address.
  if (typeof value === 'number' && spec.kind === 'hostport') value = String(value);
  if (typeof value !== 'string') throw new ConfigError(`${g.where}: expected ${expectation(spec)}, found ${found(g)}`);
  switch (spec.kind) {
    case 'uri': {
      if (!/^mongodb(\+srv)?:\/\//.test(value)) {
        throw new ConfigError(`${g.where}: expected a connection string starting with mongodb:// or mongodb+srv://, found '${redactUri(value)}'`);
      }
      try {
        // Parses the string (hosts, options, credentials) without connecting.
        new MongoClient(value);
      } catch (err) {
        throw new ConfigError(`${g.where}: invalid connection string '${redactUri(value)}': ${(err as Error).message}`);
      }
      return value;
    }
    case 'database':
      if (!/^[A-Za-z0-9_-]{1,63}$/.test(value)) {
        throw new ConfigError(`${g.where}: expected ${expectation(spec)}, found ${found(g)}`);
      }
      return value;
    case 'logLevel':
      if (!(LOG_LEVELS as readonly string[]).includes(value)) {
        throw new ConfigError(`${g.where}: expected ${expectation(spec)}, found ${found(g)}`);
      }
      return value;
    case 'enum':
      if (!spec.values?.includes(value)) throw new ConfigError(`${g.where}: expected ${expectation(spec)}, found ${found(g)}`);
      return value;
    case 'fieldName':
      // _id cannot be the tag: every document of an app would share one _id.
      if (!/^[A-Za-z_][A-Za-z0-9_]{0,63}$/.test(value) || value === '_id') {
        throw new ConfigError(`${g.where}: expected ${expectation(spec)}, found ${found(g)}`);
      }
      return value;
    default:
      return value;
  }
}

function parseInteger(g: Given, min: number, max?: number): number {
  let n: number | undefined;
  if (typeof g.value === 'number') n = g.value;
  else if (typeof g.value === 'string' && /^\s*-?\d+\s*$/.test(g.value)) n = Number(g.value);
  if (n === undefined || !Number.isSafeInteger(n) || n < min || (max !== undefined && n > max)) {
    const expected = max !== undefined ? `an integer from ${min} to ${max}` : `an integer >= ${min}`;
    throw new ConfigError(`${g.where}: expected ${expected}, found ${found(g)}`);
  }
  return n;
}

/** Parses `host:port`, `[v6]:port` or a bare port; `where` names the source for the error. */
export function parseHostPort(value: string, where: string): HostPort {
  const hp = tryParseHostPort(value);
  if (!hp) throw new ConfigError(`${where}: expected ${HOST_PORT_EXPECTED}, found '${value}'`);
  return hp;
}

function tryParseHostPort(value: string): HostPort | undefined {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(value) ?? /^([^:]*):(\d+)$/.exec(value) ?? /^()(\d+)$/.exec(value);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) return undefined;
  return { host: m[1] || '127.0.0.1', port };
}

export function formatHostPort(hp: HostPort): string {
  return hp.host.includes(':') ? `[${hp.host}]:${hp.port}` : `${hp.host}:${hp.port}`;
}

/**
 * The URI with secrets replaced, for logs and errors: the password of the user info, and the secret
 * options tlsCertificateKeyFilePassword and AWS_SESSION_TOKEN. User info ends at the last '@', so a
 * password with an unescaped '@' is hidden whole (hiding too much is the safe direction).
 */
export function redactUri(uri: string): string {
  let out = uri;
  // Any scheme (a mistyped http:// must not leak the password into the error about it), or none.
  const prefix = /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.exec(out)?.[0] ?? '';
  const at = out.lastIndexOf('@');
  if (at > prefix.length) {
    const userinfo = out.slice(prefix.length, at);
    const colon = userinfo.indexOf(':');
    if (colon >= 0) out = `${prefix}${userinfo.slice(0, colon)}:***${out.slice(at)}`;
  }
  return out
    .replace(/([?&]tlsCertificateKeyFilePassword=)[^&]*/gi, '$1***')
    .replace(/(AWS_SESSION_TOKEN(?::|%3A))[^,&]*/gi, '$1***');
}

function getIn(obj: Record<string, unknown>, keyPath: string[]): unknown {
  let cur: unknown = obj;
  for (const k of keyPath) {
    if (!isMapping(cur)) return undefined;
    cur = cur[k];
  }
  return cur;
}
