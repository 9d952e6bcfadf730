import crypto, { webcrypto, type KeyObject } from 'node:crypto';
import { SignJWT, decodeJwt, decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from 'jose';
import type { AppManifest, VerificationKey } from './manifests.js';
import { publicKeyFamily } from './manifest-auth.js';
import { RoleError, resolveRoles, type ResolvedRoles } from '../policy/rbac.js';

/**
 * App tokens: verification (every transport) and minting (`mdb-runtime token`). A token is a compact
 * JWS whose claims are `app` (the slug, required), optional `sub` and `roles`, and usually `exp`.
 */

/** The MongoDB handshake limits appName to 128 bytes: drivers cut (Node) or refuse (PyMongo) longer ones. */
export const APPNAME_MAX_BYTES = 128;
/** Skew allowed on exp and nbf. */
export const CLOCK_TOLERANCE_SECONDS = 30;
/** Longer tokens are refused before any parsing. */
export const MAX_TOKEN_BYTES = 16 * 1024;

export interface VerifiedToken {
  app: AppManifest;
  sub: string | undefined;
  roles: ResolvedRoles;
  /** Milliseconds since the epoch (exp), or undefined for a token without exp. */
  expiresAt: number | undefined;
  alg: string;
  /** The verified `roles` claim (undefined when absent), kept to resolve it again against a changed manifest. */
  rolesClaim: readonly string[] | undefined;
}

/** Why a token was refused: for the log only (clients get "Authentication failed."). Never holds the token. */
export class TokenError extends Error {
  constructor(
    message: string,
    /** The app the token claimed or was presented for, when known (logged as app_id). */
    readonly app?: string,
  ) {
    super(message);
    this.name = 'TokenError';
  }
}

export interface AppLookup {
  get(slug: string): AppManifest | undefined;
}

/** A compact JWS, or what is left of one after a driver cut it: base64url segments starting `eyJ`. */
export function looksLikeJwt(s: string): boolean {
  return /^eyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*)?$/.test(s);
}

/**
 * Verifies `token` against the keys of the app its `app` claim names. `expectedApp` (the PLAIN user
 * name) must equal that claim. Throws TokenError.
 */
export async function verifyAppToken(
  token: string,
  apps: AppLookup,
  options: { expectedApp?: string; now?: number; cache?: VerifiedTokenCache } = {},
): Promise<VerifiedToken> {
  const cached = options.cache?.get(token, apps, options.expectedApp, options.now ?? Date.now());
  if (cached) return cached;
  const verified = await verifyUncached(token, apps, options);
  options.cache?.set(token, verified);
  return verified;
}

async function verifyUncached(token: string, apps: AppLookup, options: { expectedApp?: string; now?: number }): Promise<VerifiedToken> {
  if (Buffer.byteLength(token) > MAX_TOKEN_BYTES) throw new TokenError(`token longer than ${MAX_TOKEN_BYTES} bytes`, options.expectedApp);
  let header: { alg?: unknown; kid?: unknown };
  let unverified: JWTPayload;
  try {
    header = decodeProtectedHeader(token);
    unverified = decodeJwt(token);
  } catch (err) {
    throw new TokenError(`malformed token: ${(err as Error).message}`, options.expectedApp);
  }
  // The unverified claim only chooses which app's keys to try; the verified payload is checked below.
  const slug = unverified.app;
  if (typeof slug !== 'string') throw new TokenError("the token has no 'app' claim (the app's slug)", options.expectedApp);
  if (options.expectedApp !== undefined && slug !== options.expectedApp) {
    throw new TokenError(`the user name '${options.expectedApp}' does not match the token's app claim '${slug}'`, options.expectedApp);
  }
  const app = apps.get(slug);
  if (!app) throw new TokenError(`the token names app '${slug}', which is not registered`, slug);
  if (app.unavailable) throw new TokenError(`app '${slug}' is unavailable: ${app.unavailable}`, slug);
  const jwt = app.jwt;
  if (!jwt || jwt.keys.length === 0) throw new TokenError(`app '${slug}' accepts no tokens (its manifest has no usable auth.jwt key)`, slug);

  const alg = typeof header.alg === 'string' ? header.alg : '';
  const kid = typeof header.kid === 'string' ? header.kid : undefined;
  const candidates = jwt.keys.filter((k) => k.algorithms.includes(alg) && (k.kid === undefined || kid === undefined || k.kid === kid));
  if (candidates.length === 0) {
    const allowed = [...new Set(jwt.keys.flatMap((k) => k.algorithms))].join(', ');
    if (jwt.keys.some((k) => k.algorithms.includes(alg))) {
      throw new TokenError(`no key of app '${slug}' has kid ${JSON.stringify(kid)} (keys: ${jwt.keys.map((k) => k.kid ?? '(no kid)').join(', ')})`, slug);
    }
    throw new TokenError(`alg ${JSON.stringify(header.alg)} is not allowed for app '${slug}' (allowed: ${allowed})`, slug);
  }
  let payload: JWTPayload | undefined;
  let lastError: unknown;
  for (const key of candidates) {
    try {
      payload = (await verifyWith(token, key, jwt, options.now, alg)).payload;
      break;
    } catch (err) {
      lastError = err;
      // A claim failure (expired, wrong issuer) is the token's, not the key's: no other key changes it.
      if (err instanceof errors.JWTClaimValidationFailed || err instanceof errors.JWTExpired) break;
    }
  }
  if (!payload) throw new TokenError(describeJoseError(lastError), slug);

  if (payload.app !== slug) throw new TokenError(`the verified app claim differs from '${slug}'`, slug);
  if (payload.sub !== undefined && typeof payload.sub !== 'string') throw new TokenError("the 'sub' claim is not a string", slug);
  const claim = payload.roles;
  if (claim !== undefined && !(Array.isArray(claim) && claim.every((r) => typeof r === 'string'))) {
    throw new TokenError("the 'roles' claim is not a list of strings", slug);
  }
  let roles: ResolvedRoles;
  try {
    roles = resolveRoles(app.rbac, claim as string[] | undefined);
  } catch (err) {
    if (err instanceof RoleError) throw new TokenError(err.message, slug);
    throw err;
  }
  return {
    app,
    sub: payload.sub,
    roles,
    expiresAt: payload.exp === undefined ? undefined : payload.exp * 1000,
    alg,
    rolesClaim: claim as string[] | undefined,
  };
}

/**
 * Tokens already verified, by their exact text: many connections of one app present the same token
 * (a driver's pool, every process of a deployment), and a full verification (signature, claims, roles)
 * is most of the CPU time of a new connection. Only successful verifications are kept, and an entry
 * answers only while
 *   - the app's manifest in force is the very object the token was verified under: a reload that re-reads
 *     the manifest (a changed file, a touched one to pick up a rotated key file or secret, a removed app)
 *     makes a new object, so its keys are never bypassed by an older verification;
 *   - the token has not expired (exp, with the same CLOCK_TOLERANCE_SECONDS as a full verification).
 * nbf needs no check: a token verified once only becomes more valid with time. Bounded: the least
 * recently used entry goes first; tokens longer than MAX_TOKEN_LENGTH characters are not kept.
 */
export class VerifiedTokenCache {
  /** Longer tokens (characters) are verified every time: the cache holds at most maxEntries × this. */
  static readonly MAX_TOKEN_LENGTH = 2048;
  private readonly entries = new Map<string, VerifiedToken>();

  constructor(readonly maxEntries = 4096) {}

  get size(): number {
    return this.entries.size;
  }

  /** The verification of `token` if it still holds for `apps` at `now` (ms), else undefined. */
  get(token: string, apps: AppLookup, expectedApp: string | undefined, now: number): VerifiedToken | undefined {
    const entry = this.entries.get(token);
    if (!entry) return undefined;
    const slug = entry.app.slug;
    if (apps.get(slug) !== entry.app || (entry.expiresAt !== undefined && now > entry.expiresAt + CLOCK_TOLERANCE_SECONDS * 1000)) {
      this.entries.delete(token);
      return undefined;
    }
    // A PLAIN user name that differs from the claim: the full verification says why.
    if (expectedApp !== undefined && expectedApp !== slug) return undefined;
    // Most recently used last.
    this.entries.delete(token);
    this.entries.set(token, entry);
    return entry;
  }

  set(token: string, verified: VerifiedToken): void {
    if (this.maxEntries <= 0 || token.length > VerifiedTokenCache.MAX_TOKEN_LENGTH) return;
    this.entries.delete(token);
    this.entries.set(token, verified);
    if (this.entries.size > this.maxEntries) this.entries.delete(this.entries.keys().next().value!);
  }

  clear(): void {
    this.entries.clear();
  }
}

function verifyWith(token: string, key: VerificationKey, jwt: NonNullable<AppManifest['jwt']>, now: number | undefined, alg: string) {
  const options = {
    algorithms: [...key.algorithms],
    clockTolerance: CLOCK_TOLERANCE_SECONDS,
    requiredClaims: ['app'],
    ...(jwt.issuer !== undefined ? { issuer: jwt.issuer } : {}),
    ...(jwt.audience !== undefined ? { audience: typeof jwt.audience === 'string' ? jwt.audience : [...jwt.audience] } : {}),
    ...(now !== undefined ? { currentDate: new Date(now) } : {}),
  };
  if (typeof key.key === 'function') return jwtVerify(token, key.key, options);
  const hmac = hmacCryptoKey(key.key, alg);
  return hmac ? hmac.then((k) => jwtVerify(token, k, options)) : jwtVerify(token, key.key, options);
}

/**
 * HMAC secrets as WebCrypto keys, imported once per (secret, algorithm): given a KeyObject, jose
 * imports it into a CryptoKey on every verification, which was most of the cost of an HS256 check
 * (≈100-160 µs, against ≈45 µs with the CryptoKey, on the 2-core development machine; the connect rate
 * of bench/scale.mjs). `alg` is the token header's, already checked against the key's algorithms.
 */
const HMAC_KEYS = new WeakMap<KeyObject, Map<string, Promise<webcrypto.CryptoKey>>>();
const HMAC_HASH: Readonly<Record<string, string>> = { HS256: 'SHA-256', HS384: 'SHA-384', HS512: 'SHA-512' };

function hmacCryptoKey(key: KeyObject, alg: string): Promise<webcrypto.CryptoKey> | undefined {
  const hash = HMAC_HASH[alg];
  if (key.type !== 'secret' || !hash) return undefined;
  let byAlg = HMAC_KEYS.get(key);
  if (!byAlg) {
    byAlg = new Map();
    HMAC_KEYS.set(key, byAlg);
  }
  let cached = byAlg.get(alg);
  if (!cached) {
    cached = webcrypto.subtle.importKey('raw', key.export(), { name: 'HMAC', hash }, false, ['verify']);
    byAlg.set(alg, cached);
  }
  return cached;
}

function describeJoseError(err: unknown): string {
  if (err instanceof errors.JWTExpired) return `token expired (exp ${String(err.payload.exp)})`;
  if (err instanceof errors.JWTClaimValidationFailed) return `claim '${err.claim}' check failed: ${err.reason} (${err.message})`;
  if (err instanceof errors.JWSSignatureVerificationFailed) return 'signature verification failed (wrong key, or a cut or altered token)';
  if (err instanceof errors.JOSEError) return `${err.code}: ${err.message}`;
  return err instanceof Error ? err.message : String(err);
}

export interface MintOptions {
  sub?: string | undefined;
  roles?: readonly string[] | undefined;
  ttlSeconds: number;
  /** The private key for apps verified by public keys; HS apps sign with their secret. */
  privateKey?: KeyObject | undefined;
  now?: number;
}

/**
 * Mints a compact token for `app`: header `{"alg":...}` without `typ`, claims in a short fixed order
 * (app, sub, roles, iss, aud, exp), no iat, so that HS256 tokens for short slugs fit in appName.
 */
export async function mintToken(app: AppManifest, options: MintOptions): Promise<{ token: string; alg: string; expiresAt: number }> {
  const jwt = app.jwt;
  if (!jwt || jwt.keys.length === 0) throw new TokenError(`app '${app.slug}' has no usable auth.jwt key`, app.slug);
  let signingKey: KeyObject;
  let alg: string;
  let kid: string | undefined;
  if (options.privateKey) {
    const family = publicKeyFamily(crypto.createPublicKey(options.privateKey));
    const match = jwt.keys
      .filter((k) => k.kind !== 'secret')
      .flatMap((k) => k.algorithms.filter((a) => family?.allowed.includes(a)).map((a) => ({ k, a })))[0];
    if (!match) {
      throw new TokenError(`app '${app.slug}' has no public key of the private key's type (${options.privateKey.asymmetricKeyType})`, app.slug);
    }
    signingKey = options.privateKey;
    alg = match.a;
    kid = match.k.kid;
  } else {
    const secret = jwt.keys.find((k) => k.kind === 'secret');
    if (!secret) {
      throw new TokenError(`app '${app.slug}' is verified by public keys; pass the private key with --key-file`, app.slug);
    }
    signingKey = secret.key as KeyObject;
    alg = secret.algorithms[0]!;
    kid = secret.kid;
  }
  const now = Math.floor((options.now ?? Date.now()) / 1000);
  const exp = now + options.ttlSeconds;
  const claims: JWTPayload = { app: app.slug };
  if (options.sub !== undefined) claims.sub = options.sub;
  if (options.roles !== undefined) claims.roles = [...options.roles];
  if (jwt.issuer !== undefined) claims.iss = jwt.issuer;
  if (jwt.audience !== undefined) claims.aud = typeof jwt.audience === 'string' ? jwt.audience : [...jwt.audience];
  claims.exp = exp;
  const token = await new SignJWT(claims).setProtectedHeader(kid === undefined ? { alg } : { alg, kid }).sign(signingKey);
  return { token, alg, expiresAt: exp * 1000 };
}
