import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, YamlFile, describeValue } from './config-source.js';
import { parseAuthSection, type JwtConfig } from './manifest-auth.js';
import type { RbacConfig } from '../policy/rbac.js';
import {
  MANIFEST_SCHEMA_VERSION,
  type AppLimits,
  type DataAccess,
  type IndexPolicy,
  type ManagedIndex,
  type ObservabilitySettings,
  type WebsocketEndpoint,
} from './manifest-types.js';

export type { JwtConfig, VerificationKey } from './manifest-auth.js';

/** What the data plane needs of an app's manifest (config/apps/<slug>.yaml). */
export interface AppManifest {
  slug: string;
  name: string;
  /** Default true: connections need a verified token. False lets `appName=<slug>` select the app. */
  authRequired: boolean;
  /** Default false: reads hide the tag field. */
  exposeTag: boolean;
  file: string;
  /** JWT verification keys (auth.jwt); undefined when the app accepts no tokens. */
  jwt: JwtConfig | undefined;
  /** Roles (auth.roles, auth.default_role); undefined when the app does not restrict its identities. */
  rbac: RbacConfig | undefined;
  /**
   * Why the app cannot serve in this environment (its only secret variable is unset, or too short);
   * undefined when it can. The proxy starts anyway, logs the reason, and fails authentication for it.
   */
  unavailable: string | undefined;
  /** Problems that do not stop the app (a rotated key whose secret is gone), for the startup log. */
  warnings: string[];
  /** The format version the file was written in (older ones are migrated on load). */
  schemaVersion: number;
  /** Managed indexes by the app's collection name (`managed_indexes`). */
  managedIndexes: ReadonlyMap<string, readonly ManagedIndex[]>;
  indexPolicy: IndexPolicy;
  limits: AppLimits;
  dataAccess: DataAccess;
  observability: ObservabilitySettings;
  websockets: readonly WebsocketEndpoint[];
}

export interface ManifestOptions {
  /** Where secret_env variables are read (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Key files are relative to it (default: the parent of the manifest's apps/ directory). */
  configDir?: string;
}

export const SLUG_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;
const MANIFEST_EXTENSIONS = ['.yaml', '.yml', '.json'];

/** Reads every manifest in `<configDir>/apps`. Problems are collected and thrown together. */
export function loadManifests(configDir: string, env: NodeJS.ProcessEnv = process.env): AppManifest[] {
  const dir = path.join(configDir, 'apps');
  if (!fs.existsSync(dir)) return [];
  const problems: string[] = [];
  const manifests: AppManifest[] = [];
  const files = fs
    .readdirSync(dir)
    .filter((f) => MANIFEST_EXTENSIONS.includes(path.extname(f)))
    .sort();
  for (const name of files) {
    const file = path.join(dir, name);
    try {
      manifests.push(parseManifest(file, fs.readFileSync(file, 'utf8'), { env, configDir }));
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  const seen = new Map<string, string>();
  for (const m of manifests) {
    const other = seen.get(m.slug);
    if (other) problems.push(`${m.file}: slug: '${m.slug}' is already declared by ${other}; keep one of the two files`);
    seen.set(m.slug, m.file);
  }
  if (problems.length > 0) throw new ConfigError(problems.join('\n'));
  return manifests;
}

export function parseManifest(file: string, text: string, options: ManifestOptions = {}): AppManifest {
  const yaml = YamlFile.parse(file, text); // JSON is YAML too
  const value = yaml.value;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(`${yaml.at([])}: expected a mapping with at least 'slug: <slug>', found ${describeValue(value)}`);
  }
  const raw = value as Record<string, unknown>;
  const slug = raw.slug;
  if (slug === undefined || slug === null) {
    throw new ConfigError(`${yaml.at([])}: slug: missing; add 'slug: ${suggestSlug(file)}' (${SLUG_RULE})`);
  }
  if (typeof slug !== 'string' || !SLUG_PATTERN.test(slug)) {
    throw new ConfigError(`${yaml.at(['slug'])}: slug: expected ${SLUG_RULE}, found ${describeValue(slug)}`);
  }
  const base = path.basename(file, path.extname(file));
  if (base !== slug) {
    throw new ConfigError(
      `${yaml.at(['slug'])}: slug: '${slug}' must match the file name; rename the file to ${slug}${path.extname(file)} or set 'slug: ${base}'`,
    );
  }
  const authRequired = raw.auth_required ?? true;
  if (typeof authRequired !== 'boolean') {
    throw new ConfigError(`${yaml.at(['auth_required'])}: auth_required: expected true or false, found ${describeValue(authRequired)}`);
  }
  const name = raw.name ?? slug;
  if (typeof name !== 'string') {
    throw new ConfigError(`${yaml.at(['name'])}: name: expected a string, found ${describeValue(name)}`);
  }
  const exposeTag = raw.expose_tag ?? false;
  if (typeof exposeTag !== 'boolean') {
    throw new ConfigError(`${yaml.at(['expose_tag'])}: expose_tag: expected true or false, found ${describeValue(exposeTag)}`);
  }
  const { jwt, rbac } = parseAuthSection(yaml, raw.auth, {
    configDir: options.configDir ?? path.dirname(path.dirname(file)),
    env: options.env ?? process.env,
  });
  if (authRequired && !jwt) {
    throw new ConfigError(
      `${yaml.at(raw.auth === undefined ? [] : ['auth'])}: auth.jwt: missing; an app with auth_required: true (the default) needs a key ` +
        `to verify its tokens: auth.jwt.secret_env (HS256 secret from an env variable), public_key_file or jwks_file; ` +
        `or set auth_required: false (local development only)`,
    );
  }
  const warnings = [...(jwt?.skipped ?? [])];
  let unavailable: string | undefined;
  if (jwt && jwt.keys.length === 0) {
    // Every listed key is missing from the environment: with auth required nothing can connect.
    if (authRequired) unavailable = warnings.splice(0).join('; ');
    else warnings.push(`app '${slug}' accepts no tokens (no usable key); it is still selectable by appName=${slug}`);
  }
  return {
    slug,
    name,
    authRequired,
    exposeTag,
    file,
    jwt,
    rbac,
    unavailable,
    warnings,
    ...manifestDefaults(),
  };
}

/** The sections an app has when its manifest does not mention them. */
export function manifestDefaults(): Pick<
  AppManifest,
  'schemaVersion' | 'managedIndexes' | 'indexPolicy' | 'limits' | 'dataAccess' | 'observability' | 'websockets'
> {
  return {
    schemaVersion: MANIFEST_SCHEMA_VERSION,
    managedIndexes: new Map(),
    indexPolicy: { reconcile: 'report', prune: false },
    limits: {},
    dataAccess: { readOnly: false, collections: undefined },
    observability: { slowOperationMs: undefined },
    websockets: [],
  };
}

const SLUG_RULE = `a lowercase name matching ${SLUG_PATTERN.source} (a letter, then up to 31 letters, digits or '_')`;

/** The file name turned into a valid slug, for the "missing slug" hint. */
function suggestSlug(file: string): string {
  const base = path.basename(file, path.extname(file)).toLowerCase().replace(/[^a-z0-9_]/g, '_');
  const slug = /^[a-z]/.test(base) ? base : `app_${base}`;
  return slug.slice(0, 32);
}
