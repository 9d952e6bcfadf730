import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkManifestDir } from '../apps/manifests.js';
import { CONFIG_DIR_SETTING, redactUri } from '../config/runtime-config.js';

/**
 * The state file of a running `npm run dev` (scripts/dev.mjs): where its proxy listens, its upstream,
 * its config directory and the app secrets it generated. `mdb-runtime token`, `indexes` and `validate`
 * run beside it read the file so that they talk to the same upstream and sign with the same secrets
 * without flags; the runner writes it (mode 0600: it holds secrets) under the cache directory and removes
 * it when it exits.
 */
export interface DevState {
  version: 1;
  /** The runner's pid: the file counts only while this process lives. */
  pid: number;
  startedAt: string;
  /** Absolute config directory the proxy serves. */
  configDir: string;
  upstreamUri: string;
  /** The FerretDB the runner started (absent when MDB_UPSTREAM_URI named an upstream). */
  upstream?: { port: number; pid: number; dir: string; log: string };
  proxyPid?: number;
  /** host:port of the wire and HTTP listeners. */
  listen: string;
  httpListen: string;
  /**
   * Environment the proxy was started with that the commands need to agree with it: MDB_* settings and
   * the secrets the runner generated (not those the user exported: they stay out of the file).
   */
  env: Record<string, string>;
  /** The names in `env` that are secrets the runner generated. */
  generatedSecrets: string[];
}

/** The cache: MDB_CACHE_DIR, else ~/.cache/mdb-runtime (the FerretDB build, the dev upstream's data). */
export function cacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return path.resolve(env.MDB_CACHE_DIR || path.join(os.homedir(), '.cache', 'mdb-runtime'));
}

export function devStateFile(env: NodeJS.ProcessEnv = process.env): string {
  return path.join(cacheDir(env), 'dev-state.json');
}

/** Writes the state file atomically, readable by its owner only. Returns its path. */
export function writeDevState(state: DevState, env: NodeJS.ProcessEnv = process.env): string {
  const file = devStateFile(env);
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
  fs.chmodSync(tmp, 0o600);
  fs.renameSync(tmp, file);
  return file;
}

/** Removes the state file if it is the one runner `pid` wrote. */
export function removeDevState(pid: number, env: NodeJS.ProcessEnv = process.env): void {
  if (readDevStateFile(env)?.pid === pid) fs.rmSync(devStateFile(env), { force: true });
}

/** The state file's content, whether or not its runner still runs; undefined if absent or unreadable. */
export function readDevStateFile(env: NodeJS.ProcessEnv = process.env): DevState | undefined {
  let value: unknown;
  try {
    value = JSON.parse(fs.readFileSync(devStateFile(env), 'utf8'));
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null) return undefined;
  const s = value as Partial<DevState>;
  const strings = (o: unknown) => typeof o === 'object' && o !== null && Object.values(o).every((v) => typeof v === 'string');
  if (s.version !== 1 || typeof s.pid !== 'number' || typeof s.configDir !== 'string' || typeof s.upstreamUri !== 'string' || !strings(s.env)) {
    return undefined;
  }
  return s as DevState;
}

/** The state of a runner that is running now, else undefined. */
export function readDevState(env: NodeJS.ProcessEnv = process.env): DevState | undefined {
  const state = readDevStateFile(env);
  return state && processAlive(state.pid, 'dev.mjs') ? state : undefined;
}

/**
 * True while `pid` runs. Where /proc exists, its command line must also contain `marker`, so that a
 * pid reused by an unrelated process after a crash does not count.
 */
export function processAlive(pid: number, marker?: string): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  if (marker === undefined) return true;
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(marker);
  } catch {
    return !fs.existsSync('/proc/self');
  }
}

/**
 * The environment a CLI command resolves its options with: `env`, plus the values of a running
 * `npm run dev` for every variable that `env` leaves unset (config directory, upstream, listen
 * addresses, the secrets it generated). Flags still win: they are applied over this environment.
 * The runner's values apply only to its own config directory: when --config, MDB_CONFIG or a ./config
 * here names another one, `env` is returned as it is. Says on `note` what it took from the runner.
 */
export function devEnvironment(
  opts: { config?: string | undefined },
  env: NodeJS.ProcessEnv = process.env,
  note: (line: string) => void = (line) => process.stderr.write(`mdb-runtime: ${line}\n`),
): NodeJS.ProcessEnv {
  const state = readDevState(env);
  if (!state) return env;
  const named = opts.config ?? (env[CONFIG_DIR_SETTING.env] || undefined);
  const local = path.resolve(CONFIG_DIR_SETTING.default);
  const wouldUse = named !== undefined ? path.resolve(named) : fs.existsSync(local) ? local : undefined;
  if (wouldUse !== undefined && !sameDir(wouldUse, state.configDir)) return env;

  const merged: NodeJS.ProcessEnv = { ...env };
  const used: string[] = [];
  for (const [key, value] of Object.entries({ [CONFIG_DIR_SETTING.env]: state.configDir, ...state.env })) {
    if (env[key] !== undefined && env[key] !== '') continue;
    merged[key] = value;
    used.push(key);
  }
  if (used.length > 0) {
    const what = used.map((key) => {
      const value = merged[key]!;
      if (key === CONFIG_DIR_SETTING.env) return `config ${value}`;
      if (key === 'MDB_UPSTREAM_URI') return `upstream ${redactUri(value)}`;
      if (key === 'MDB_LISTEN') return `listen ${value}`;
      if (state.generatedSecrets.includes(key)) return `${key} (generated by it)`;
      return /SECRET|PASSWORD|TOKEN|KEY/i.test(key) ? key : `${key}=${value}`;
    });
    note(`using the dev upstream of \`npm run dev\` (pid ${state.pid}): ${what.join(', ')}; from ${devStateFile(env)}`);
  }
  return merged;
}

function sameDir(a: string, b: string): boolean {
  const real = (p: string) => {
    try {
      return fs.realpathSync(p);
    } catch {
      return path.resolve(p);
    }
  };
  return real(a) === real(b);
}

/**
 * The environment variables the manifests of `configDir` read their secrets from (`secret_env`, rotated
 * `keys:`, `<SLUG>_JWT_SECRET` of migrated mdb-engine manifests): recorded as the manifest loader reads
 * them, so every way a manifest can name a secret counts. Sorted, without duplicates.
 */
export function secretVariables(configDir: string, env: NodeJS.ProcessEnv = process.env): string[] {
  const read = new Set<string>();
  const recording = new Proxy(env, {
    get(target, key) {
      if (typeof key === 'string') read.add(key);
      return target[key as string];
    },
  });
  checkManifestDir(configDir, recording);
  return [...read].sort();
}

/** A new secret long enough for HS256, HS384 and HS512 (the manifest may allow any): 86 base64url characters. */
export function generateSecret(): string {
  return crypto.randomBytes(64).toString('base64url');
}
