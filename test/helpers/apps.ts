import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SignJWT, exportJWK, exportPKCS8, exportSPKI, generateKeyPair, type CryptoKey, type JWK, type JWTPayload } from 'jose';
import { loadManifests, manifestDefaults, type AppManifest } from '../../src/apps/manifests.js';
import type { AppLimits, DataAccess } from '../../src/apps/manifest-types.js';
import { AppRegistry } from '../../src/apps/registry.js';

/** A 64-byte secret (long enough for HS256, HS384 and HS512). */
export const SECRET_64 = 'k'.repeat(32) + 'e'.repeat(32);

const dirs: string[] = [];

/** A temporary config directory holding `files` (paths relative to it, e.g. 'apps/a.yaml', 'keys/a.pem'). */
export function configDirWith(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-apps-'));
  dirs.push(dir);
  fs.mkdirSync(path.join(dir, 'apps'));
  for (const [file, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
    fs.writeFileSync(path.join(dir, file), text);
  }
  return dir;
}

export function removeConfigDirs(): void {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
}

/** Loads the manifests of `files` with `env` and builds the registry. */
export function registryOf(files: Record<string, string>, env: NodeJS.ProcessEnv = {}): AppRegistry {
  const dir = configDirWith(files);
  return AppRegistry.build(loadManifests(dir, env));
}

export function manifestOf(files: Record<string, string>, env: NodeJS.ProcessEnv = {}): AppManifest {
  const dir = configDirWith(files);
  const [m] = loadManifests(dir, env);
  return m!;
}

export interface TestKeyPair {
  alg: string;
  privateKey: CryptoKey;
  publicKey: CryptoKey;
  spki: string;
  pkcs8: string;
  jwk: JWK;
}

/** A fresh asymmetric key pair for `alg` (RS256, PS256, ES256/384/512, EdDSA) with its PEM and JWK forms. */
export async function keyPair(alg: string): Promise<TestKeyPair> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { alg, privateKey, publicKey, spki: await exportSPKI(publicKey), pkcs8: await exportPKCS8(privateKey), jwk: await exportJWK(publicKey) };
}

/** Signs `claims` with `key` (a secret string or a private key), header {alg} (+ extra header fields). */
export function sign(claims: JWTPayload, alg: string, key: string | CryptoKey | Uint8Array, header: Record<string, string> = {}): Promise<string> {
  const k = typeof key === 'string' ? new TextEncoder().encode(key) : key;
  return new SignJWT(claims).setProtectedHeader({ alg, ...header }).sign(k);
}

/** Seconds since the epoch for `ms` (default now). */
export function seconds(ms = Date.now()): number {
  return Math.floor(ms / 1000);
}

/** A manifest of app `shop` with defaults everywhere but the given limits and data access (unit tests, no files). */
export function shopManifest(options: { limits?: AppLimits; dataAccess?: Partial<DataAccess> } = {}): AppManifest {
  const defaults = manifestDefaults();
  return {
    ...defaults,
    slug: 'shop',
    name: 'Shop',
    authRequired: false,
    exposeTag: false,
    file: '/cfg/apps/shop.yaml',
    jwt: undefined,
    rbac: undefined,
    unavailable: undefined,
    warnings: [],
    limits: options.limits ?? {},
    dataAccess: { ...defaults.dataAccess, ...options.dataAccess },
  };
}
