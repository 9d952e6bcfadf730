import crypto, { type KeyObject } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { createLocalJWKSet, type JSONWebKeySet, type JWK, type JWTVerifyGetKey } from 'jose';
import { ConfigError, closest, describeValue, type Locator } from '../config/source.js';
import { ACTIONS, type Action, type RbacConfig, type RoleDefinition } from '../policy/rbac.js';

/**
 * The `auth` section of a manifest: JWT verification keys and roles.
 *
 *   auth:
 *     jwt:                       # one key inline, or `keys: [...]` (rotation: every listed key verifies)
 *       secret_env: APP_SECRET   # HS256/384/512; or public_key_file (SPKI PEM) / jwks_file (local JWKS)
 *       algorithms: [HS256]      # optional allow-list; default by key type
 *       issuer: https://...      # optional, checked when set
 *       audience: my-app         # optional (string or list), checked when set
 *     roles: { reader: { read: ['*'] } }
 *     default_role: reader
 *
 * The manifest schema (manifest-schema.ts) checks this section's structure before it gets here; the
 * checks below stay so that the section also parses safely on its own, and add what a schema cannot
 * say. Keys are imported here, once per manifest load, and verification reuses them. Problems in the file
 * (types, unknown keys, unusable algorithm lists, unreadable key files) are ConfigErrors. A secret that
 * is missing from the environment is not: the deployment, not the file, is wrong, so the key is left
 * out with a reason and the caller decides (the app is unavailable when no key is left).
 */

/** One verification key with the algorithms it accepts. */
export interface VerificationKey {
  /** Where it came from, for logs: `secret_env TASK_MANAGER_JWT_SECRET`, `public_key_file keys/app.pem`. */
  readonly source: string;
  readonly kind: 'secret' | 'public' | 'jwks';
  /** Allowed `alg` header values: never 'none', never HS* for a public key (by construction). */
  readonly algorithms: readonly string[];
  /** When set, only tokens whose header names this `kid` (or no kid) are tried with this key. */
  readonly kid: string | undefined;
  /** A secret or public KeyObject, or a JWKS resolver (jose picks the key by kid/alg). */
  readonly key: KeyObject | JWTVerifyGetKey;
}

export interface JwtConfig {
  /** The usable keys, newest first as listed. */
  readonly keys: readonly VerificationKey[];
  readonly issuer: string | undefined;
  readonly audience: string | readonly string[] | undefined;
  /** Why listed keys were left out (secret variable unset or too short), for the startup log. */
  readonly skipped: readonly string[];
}

export interface AuthSection {
  /** Undefined when the manifest has no `auth.jwt`. */
  readonly jwt: JwtConfig | undefined;
  /** Undefined when the manifest defines no roles (RBAC off). */
  readonly rbac: RbacConfig | undefined;
}

/** HMAC algorithms and the smallest secret each accepts (RFC 7518 3.2: at least the hash size). */
export const HMAC_MIN_BYTES: Readonly<Record<string, number>> = { HS256: 32, HS384: 48, HS512: 64 };
const RSA_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512'];
const PSS_ALGORITHMS = ['PS256', 'PS384', 'PS512'];
const EC_ALGORITHM: Readonly<Record<string, string>> = { prime256v1: 'ES256', secp384r1: 'ES384', secp521r1: 'ES512' };
const JWK_EC_ALGORITHM: Readonly<Record<string, string>> = { 'P-256': 'ES256', 'P-384': 'ES384', 'P-521': 'ES512' };
const EDDSA_ALGORITHMS = ['EdDSA', 'Ed25519'];

/** The algorithms a key type accepts, and those allowed when the manifest lists none. */
interface Family {
  readonly what: string;
  readonly allowed: readonly string[];
  readonly defaults: readonly string[];
}

const AUTH_KEYS = ['jwt', 'roles', 'default_role'];
const KEY_SOURCES = ['secret_env', 'public_key_file', 'jwks_file'];
const KEY_ENTRY_KEYS = [...KEY_SOURCES, 'algorithms', 'kid'];
const JWT_KEYS = [...KEY_ENTRY_KEYS, 'keys', 'issuer', 'audience'];

type KeyPath = (string | number)[];

/** Helpers bound to one manifest file, producing errors in the manifests' style. */
class Reader {
  constructor(
    readonly yaml: Locator,
    readonly configDir: string,
    readonly env: NodeJS.ProcessEnv,
  ) {}

  /** `auth.jwt.keys[1].secret_env` */
  name(keyPath: KeyPath): string {
    return this.yaml.label(keyPath);
  }

  error(keyPath: KeyPath, message: string): ConfigError {
    return new ConfigError(`${this.yaml.at(keyPath)}: ${this.name(keyPath)}: ${message}`);
  }

  expected(keyPath: KeyPath, expected: string, found: unknown): ConfigError {
    return this.error(keyPath, `expected ${expected}, found ${describeValue(found)}`);
  }

  mapping(keyPath: KeyPath, value: unknown, allowed: readonly string[]): Record<string, unknown> {
    if (typeof value !== 'object' || value === null || Array.isArray(value) || value instanceof Date) {
      throw this.expected(keyPath, `a mapping with ${allowed.join(', ')}`, value);
    }
    const map = value as Record<string, unknown>;
    for (const key of Object.keys(map)) {
      if (allowed.includes(key)) continue;
      const typo = closest(key, allowed);
      throw new ConfigError(
        `${this.yaml.at([...keyPath, key], 'key')}: ${this.name([...keyPath, key])}: unknown key${typo ? ` (did you mean '${typo}'?)` : ''}; allowed: ${allowed.join(', ')}`,
      );
    }
    return map;
  }

  string(keyPath: KeyPath, value: unknown, what = 'a non-empty string'): string {
    if (typeof value !== 'string' || value.length === 0) throw this.expected(keyPath, what, value);
    return value;
  }

  /** A list of non-empty strings; a single string counts as a list of one. */
  strings(keyPath: KeyPath, value: unknown, what: string): string[] {
    const list = typeof value === 'string' ? [value] : value;
    if (!Array.isArray(list) || list.length === 0 || !list.every((v) => typeof v === 'string' && v.length > 0)) {
      throw this.expected(keyPath, what, value);
    }
    return list as string[];
  }

  /** A key file path, relative to the config directory. */
  readFile(keyPath: KeyPath, value: unknown): { file: string; text: string } {
    const given = this.string(keyPath, value, 'a file path (relative to the config directory)');
    const file = path.resolve(this.configDir, given);
    try {
      return { file, text: fs.readFileSync(file, 'utf8') };
    } catch (err) {
      throw this.error(keyPath, `cannot read ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
  }
}

export function parseAuthSection(
  yaml: Locator,
  raw: unknown,
  options: { configDir: string; env: NodeJS.ProcessEnv },
): AuthSection {
  if (raw === undefined || raw === null) return { jwt: undefined, rbac: undefined };
  const r = new Reader(yaml, options.configDir, options.env);
  const auth = r.mapping(['auth'], raw, AUTH_KEYS);
  const jwt = auth.jwt === undefined || auth.jwt === null ? undefined : parseJwt(r, auth.jwt);
  return { jwt, rbac: parseRoles(r, auth.roles, auth.default_role) };
}

function parseJwt(r: Reader, raw: unknown): JwtConfig {
  const at: KeyPath = ['auth', 'jwt'];
  const jwt = r.mapping(at, raw, JWT_KEYS);
  const issuer = jwt.issuer === undefined ? undefined : r.string([...at, 'issuer'], jwt.issuer);
  const audience =
    jwt.audience === undefined
      ? undefined
      : typeof jwt.audience === 'string'
        ? r.string([...at, 'audience'], jwt.audience)
        : r.strings([...at, 'audience'], jwt.audience, 'a string or a list of strings');

  let entries: { keyPath: KeyPath; value: Record<string, unknown> }[];
  if (jwt.keys !== undefined) {
    const inline = KEY_ENTRY_KEYS.find((k) => jwt[k] !== undefined);
    if (inline) throw r.error([...at, inline], `with 'keys', put ${inline} inside each entry of keys`);
    if (!Array.isArray(jwt.keys) || jwt.keys.length === 0) {
      throw r.expected([...at, 'keys'], 'a non-empty list of keys (each with secret_env, public_key_file or jwks_file)', jwt.keys);
    }
    entries = jwt.keys.map((value: unknown, i) => ({ keyPath: [...at, 'keys', i], value: r.mapping([...at, 'keys', i], value, KEY_ENTRY_KEYS) }));
  } else {
    entries = [{ keyPath: at, value: jwt }];
  }

  const keys: VerificationKey[] = [];
  const skipped: string[] = [];
  for (const { keyPath, value } of entries) {
    const result = parseKey(r, keyPath, value);
    if (typeof result === 'string') skipped.push(result);
    else keys.push(result);
  }
  return { keys, issuer, audience, skipped };
}

/** A key entry: the imported key, or (a string) why it is not usable in this environment. */
function parseKey(r: Reader, at: KeyPath, entry: Record<string, unknown>): VerificationKey | string {
  const sources = KEY_SOURCES.filter((k) => entry[k] !== undefined);
  if (sources.length !== 1) {
    const message =
      sources.length === 0
        ? 'missing a key: add secret_env (HS256 secret from an env variable), public_key_file (SPKI PEM) or jwks_file'
        : `has both ${sources.join(' and ')}; give one key per entry (use 'keys:' for several)`;
    throw r.error(at, message);
  }
  const source = sources[0]!;
  const kid = entry.kid === undefined ? undefined : r.string([...at, 'kid'], entry.kid);
  const listed =
    entry.algorithms === undefined ? undefined : r.strings([...at, 'algorithms'], entry.algorithms, 'a list of JWS algorithms (e.g. [HS256])');

  if (source === 'secret_env') {
    const variable = r.string([...at, 'secret_env'], entry.secret_env, 'the name of an environment variable');
    const where = `${r.yaml.at([...at, 'secret_env'])}: ${r.name([...at, 'secret_env'])}`;
    const family: Family = { what: 'a secret (secret_env)', allowed: Object.keys(HMAC_MIN_BYTES), defaults: Object.keys(HMAC_MIN_BYTES) };
    const algorithms = checkAlgorithms(r, [...at, 'algorithms'], listed, family);
    const secret = r.env[variable];
    if (secret === undefined || secret === '') {
      return `${where}: the environment variable ${variable} is not set; set it to a random secret of at least 32 bytes (e.g. openssl rand -base64 32)`;
    }
    const bytes = Buffer.byteLength(secret);
    // Without an explicit list, the HMAC algorithms this secret is long enough for.
    const usable = algorithms.filter((a) => bytes >= HMAC_MIN_BYTES[a]!);
    if (listed ? usable.length !== algorithms.length : usable.length === 0) {
      const need = Math.max(...(listed ? algorithms : ['HS256']).map((a) => HMAC_MIN_BYTES[a]!));
      return `${where}: ${variable} holds ${bytes} bytes; ${listed ? algorithms.join('/') : 'HS256'} needs a secret of at least ${need} bytes (e.g. openssl rand -base64 ${need})`;
    }
    return { source: `secret_env ${variable}`, kind: 'secret', algorithms: usable, kid, key: crypto.createSecretKey(Buffer.from(secret)) };
  }

  if (source === 'public_key_file') {
    const { file, text } = r.readFile([...at, source], entry.public_key_file);
    if (/PRIVATE KEY-----/.test(text)) {
      throw r.error([...at, source], `${file} holds a private key; give the proxy only the public key (openssl pkey -in <key> -pubout)`);
    }
    let key: KeyObject;
    try {
      key = crypto.createPublicKey(text);
    } catch (err) {
      throw r.error([...at, source], `${file} is not a PEM public key (SPKI "BEGIN PUBLIC KEY" or a certificate): ${(err as Error).message}`);
    }
    const family = publicKeyFamily(key);
    if (!family) throw r.error([...at, source], `${file} holds a ${key.asymmetricKeyType} key; supported: RSA, EC P-256/P-384/P-521, Ed25519`);
    const algorithms = checkAlgorithms(r, [...at, 'algorithms'], listed, family);
    return { source: `public_key_file ${String(entry.public_key_file)}`, kind: 'public', algorithms, kid, key };
  }

  const { file, text } = r.readFile([...at, source], entry.jwks_file);
  let jwks: unknown;
  try {
    jwks = JSON.parse(text);
  } catch (err) {
    throw r.error([...at, source], `${file} is not JSON: ${(err as Error).message}`);
  }
  const list = (jwks as { keys?: unknown } | null)?.keys;
  if (!Array.isArray(list) || list.length === 0) throw r.error([...at, source], `${file} is not a JWKS: expected {"keys": [ ... ]} with at least one key`);
  const allowed = new Set<string>();
  const defaults = new Set<string>();
  list.forEach((jwk: unknown, i) => {
    const problem = jwkProblem(jwk);
    if (problem) throw r.error([...at, source], `${file}: keys[${i}] ${problem}`);
    const family = jwkFamily(jwk as JWK)!;
    family.allowed.forEach((a) => allowed.add(a));
    family.defaults.forEach((a) => defaults.add(a));
  });
  const family: Family = { what: 'the keys of this JWKS', allowed: [...allowed], defaults: [...defaults] };
  const algorithms = checkAlgorithms(r, [...at, 'algorithms'], listed, family);
  return {
    source: `jwks_file ${String(entry.jwks_file)}`,
    kind: 'jwks',
    algorithms,
    kid,
    key: createLocalJWKSet(jwks as JSONWebKeySet),
  };
}

/** The allow-list: the manifest's (checked against the key type) or the key type's default. */
function checkAlgorithms(r: Reader, at: KeyPath, listed: string[] | undefined, family: Family): string[] {
  if (!listed) return [...family.defaults];
  for (const alg of listed) {
    if (family.allowed.includes(alg)) continue;
    let why = `expected algorithms for ${family.what} (${family.allowed.join(', ')}), found ${JSON.stringify(alg)}`;
    if (alg.toLowerCase() === 'none') why = "'none' (unsigned tokens) is never accepted";
    else if (/^HS/.test(alg) && family.what !== 'a secret (secret_env)') {
      why = `${alg} with a public key would let anyone holding the public key sign tokens (algorithm confusion); HMAC needs secret_env`;
    } else if (family.what === 'a secret (secret_env)' && !/^HS/.test(alg)) {
      why = `${alg} needs a public key (public_key_file or jwks_file); a secret only signs ${family.allowed.join(', ')}`;
    }
    throw r.error(at, why);
  }
  return [...new Set(listed)];
}

export function publicKeyFamily(key: KeyObject): Family | undefined {
  switch (key.asymmetricKeyType) {
    case 'rsa':
      return { what: 'an RSA public key', allowed: RSA_ALGORITHMS, defaults: ['RS256'] };
    case 'rsa-pss':
      return { what: 'an RSA-PSS public key', allowed: PSS_ALGORITHMS, defaults: ['PS256'] };
    case 'ec': {
      const alg = EC_ALGORITHM[key.asymmetricKeyDetails?.namedCurve ?? ''];
      return alg ? { what: `an EC ${alg === 'ES256' ? 'P-256' : alg === 'ES384' ? 'P-384' : 'P-521'} public key`, allowed: [alg], defaults: [alg] } : undefined;
    }
    case 'ed25519':
      return { what: 'an Ed25519 public key', allowed: EDDSA_ALGORITHMS, defaults: EDDSA_ALGORITHMS };
    default:
      return undefined;
  }
}

function jwkFamily(jwk: JWK): Family | undefined {
  let family: Family | undefined;
  if (jwk.kty === 'RSA') family = { what: 'RSA', allowed: RSA_ALGORITHMS, defaults: ['RS256'] };
  else if (jwk.kty === 'EC' && JWK_EC_ALGORITHM[jwk.crv ?? '']) {
    const alg = JWK_EC_ALGORITHM[jwk.crv!]!;
    family = { what: 'EC', allowed: [alg], defaults: [alg] };
  } else if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') family = { what: 'Ed25519', allowed: EDDSA_ALGORITHMS, defaults: EDDSA_ALGORITHMS };
  // A key pinned to one algorithm (its "alg") allows only that one.
  if (family && jwk.alg) family = { ...family, allowed: [jwk.alg], defaults: [jwk.alg] };
  return family;
}

function jwkProblem(jwk: unknown): string | undefined {
  if (typeof jwk !== 'object' || jwk === null || Array.isArray(jwk)) return 'is not a JWK object';
  const k = jwk as JWK;
  if (k.kty === 'oct') return 'is a secret (kty "oct"); secrets belong in an environment variable (secret_env), not in a file';
  if (k.d !== undefined) return 'holds private key material ("d"); a JWKS for the proxy must hold public keys only';
  if (k.alg !== undefined && (k.alg.toLowerCase() === 'none' || /^HS/.test(k.alg))) return `has alg ${JSON.stringify(k.alg)}, which a public key must not use`;
  const family = jwkFamily(k);
  if (!family) return `has kty ${JSON.stringify(k.kty)}${k.crv ? ` crv ${JSON.stringify(k.crv)}` : ''}; supported: RSA, EC P-256/P-384/P-521, OKP Ed25519`;
  if (k.alg !== undefined && !jwkFamily({ ...k, alg: undefined } as JWK)!.allowed.includes(k.alg)) return `has alg ${JSON.stringify(k.alg)}, which does not match its key type`;
  try {
    crypto.createPublicKey({ key: k as crypto.JsonWebKey, format: 'jwk' });
  } catch (err) {
    return `is not a valid public key: ${(err as Error).message}`;
  }
  return undefined;
}

const ROLE_NAME = /^[A-Za-z0-9_.:-]{1,64}$/;

function parseRoles(r: Reader, rawRoles: unknown, rawDefault: unknown): RbacConfig | undefined {
  if (rawRoles === undefined || rawRoles === null) {
    if (rawDefault !== undefined && rawDefault !== null) throw r.error(['auth', 'default_role'], 'is set but auth.roles defines no roles');
    return undefined;
  }
  if (typeof rawRoles !== 'object' || Array.isArray(rawRoles) || rawRoles instanceof Date) {
    throw r.expected(['auth', 'roles'], "a mapping of role names to grants (e.g. reader: { read: ['*'] })", rawRoles);
  }
  const roles = new Map<string, RoleDefinition>();
  for (const [name, grants] of Object.entries(rawRoles as Record<string, unknown>)) {
    const at: KeyPath = ['auth', 'roles', name];
    if (!ROLE_NAME.test(name)) throw r.error(at, `role names are 1-64 letters, digits, '_', '.', ':' or '-'`);
    const map = grants === null ? {} : r.mapping(at, grants, ACTIONS);
    const def = {} as Record<Action, readonly string[]>;
    for (const action of ACTIONS) {
      def[action] = map[action] === undefined ? [] : r.strings([...at, action], map[action], "a list of collection names ('*' = all)");
    }
    roles.set(name, def);
  }
  if (roles.size === 0) throw r.error(['auth', 'roles'], 'defines no roles; remove it or add one');
  let defaultRole: string | undefined;
  if (rawDefault !== undefined && rawDefault !== null) {
    defaultRole = r.string(['auth', 'default_role'], rawDefault, 'a role name');
    if (!roles.has(defaultRole)) throw r.error(['auth', 'default_role'], `'${defaultRole}' is not a role of auth.roles (${[...roles.keys()].join(', ')})`);
  }
  return { roles, defaultRole };
}
