import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, YamlFile, isMapping, type KeyPath, type Locator } from '../config/source.js';
import { parseAuthSection, type JwtConfig } from './manifest-auth.js';
import { INDEX_OPTION_NAMES } from './manifest-schema.js';
import { manifestVersion, migrateAncestor } from './migrations.js';
import { inFileOrder } from '../config/schema.js';
import { manifestSchemaProblems } from './manifest-schema.js';
import type { RbacConfig } from '../policy/rbac.js';
import {
  MANIFEST_SCHEMA_VERSION,
  type AppLimits,
  type DataAccess,
  type IndexKey,
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
  /** Problems that do not stop the app (a rotated key whose secret is gone, a migration note), for the log. */
  warnings: string[];
  /** The format version the file was written in (1 and 2: mdb-engine manifests, migrated on load). */
  schemaVersion: number;
  /** Managed indexes by the app's collection name (`managed_indexes`), in the file's order. */
  managedIndexes: ReadonlyMap<string, readonly ManagedIndex[]>;
  /**
   * What the manifest's `index_policy` sets; a key it leaves out follows runtime.yaml `indexes`
   * (see effectivePolicy in src/indexes).
   */
  indexPolicy: Partial<IndexPolicy>;
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

/** One manifest file: the app it declares, or every problem found in it. */
export interface ManifestCheck {
  file: string;
  manifest: AppManifest | undefined;
  problems: string[];
}

export const SLUG_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;
export const MANIFEST_EXTENSIONS = ['.yaml', '.yml', '.json'];

/** The manifest files of `<configDir>/apps`, sorted; empty when there is no apps/ directory. */
export function manifestFiles(configDir: string): string[] {
  const dir = path.join(configDir, 'apps');
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .filter((f) => MANIFEST_EXTENSIONS.includes(path.extname(f)))
    .sort()
    .map((f) => path.join(dir, f));
}

/** Checks every manifest of `<configDir>/apps` on its own (no cross-file rules): one result per file. */
export function checkManifestDir(configDir: string, env: NodeJS.ProcessEnv = process.env): ManifestCheck[] {
  return manifestFiles(configDir).map((file) => {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      return { file, manifest: undefined, problems: [`${file}: cannot read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`] };
    }
    return { file, ...checkManifest(file, text, { env, configDir }) };
  });
}

/** Reads every manifest in `<configDir>/apps`. Problems are collected and thrown together. */
export function loadManifests(configDir: string, env: NodeJS.ProcessEnv = process.env): AppManifest[] {
  const problems: string[] = [];
  const manifests: AppManifest[] = [];
  for (const check of checkManifestDir(configDir, env)) {
    if (check.manifest) manifests.push(check.manifest);
    problems.push(...check.problems);
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

/** Parses one manifest; a ConfigError lists every problem of the file, one per line. */
export function parseManifest(file: string, text: string, options: ManifestOptions = {}): AppManifest {
  const { manifest, problems } = checkManifest(file, text, options);
  if (!manifest) throw new ConfigError(problems.join('\n'));
  return manifest;
}

/**
 * Parses and checks one manifest: YAML, version (migrating mdb-engine manifests), the schema
 * (schema/manifest.schema.json), then the rules a schema cannot say (file name, keys, indexes, ...).
 */
export function checkManifest(file: string, text: string, options: ManifestOptions = {}): { manifest: AppManifest | undefined; problems: string[] } {
  let yaml: YamlFile;
  try {
    yaml = YamlFile.parse(file, text); // JSON is YAML too
  } catch (err) {
    if (err instanceof ConfigError) return { manifest: undefined, problems: [err.message] };
    throw err;
  }
  let value = yaml.value;
  let locator: Locator = yaml;
  let schemaVersion = MANIFEST_SCHEMA_VERSION;
  const warnings: string[] = [];
  if (isMapping(value)) {
    const version = manifestVersion(value);
    if (version.kind === 'newer') {
      return {
        manifest: undefined,
        problems: [
          `${yaml.at(['schema_version'])}: schema_version: ${version.version} is a newer format than this mdb-runtime reads ` +
            `(up to ${MANIFEST_SCHEMA_VERSION}); upgrade mdb-runtime`,
        ],
      };
    }
    if (version.kind === 'ancestor') {
      const migration = migrateAncestor(value, yaml);
      if (migration.problems.length > 0) return { manifest: undefined, problems: migration.problems };
      value = migration.value;
      locator = migration.locator;
      warnings.push(...migration.warnings);
      schemaVersion = version.version;
    }
  }
  const schemaProblems = manifestSchemaProblems(value, locator, {
    requiredHint: (at, key) => (at.length === 0 && key === 'slug' ? `add 'slug: ${suggestSlug(file)}' (${SLUG_RULE})` : undefined),
  });
  if (schemaProblems.length > 0) return { manifest: undefined, problems: schemaProblems.map((p) => p.message) };
  // The schema holds: the value has the shape of ManifestFile.
  return new ManifestBuilder(file, value as ManifestFile, locator, locator === yaml ? yaml : undefined, options, schemaVersion, warnings).build();
}

/** The shape of a manifest that passed the schema. */
type IndexKind = IndexKey[1];
interface ManifestIndexEntry {
  keys: Record<string, IndexKind> | [string, IndexKind][];
  name?: string;
  [option: string]: unknown;
}
interface ManifestFile {
  schema_version?: number;
  slug: string;
  name?: string | null;
  auth_required?: boolean | null;
  expose_tag?: boolean | null;
  auth?: unknown;
  managed_indexes?: Record<string, ManifestIndexEntry[] | null> | null;
  index_policy?: { reconcile?: 'report' | 'replace'; prune?: boolean } | null;
  data_access?: { read_only?: boolean; collections?: string[] } | null;
  websockets?: { path: string; collection: string; filter?: Record<string, unknown> }[] | null;
  limits?: {
    connections?: number;
    operations_per_second?: number;
    max_document_bytes?: number;
    max_documents_per_collection?: number;
    upstream_connections?: number;
    open_cursors?: number;
  } | null;
  observability?: { slow_operation_ms?: number } | null;
}

/** HTTP paths of the proxy itself, which a websocket endpoint may not take. */
// '/' is the status page; the others own their sub-paths too.
const RESERVED_HTTP_PATHS = ['/', '/metrics', '/healthz', '/readyz', '/apps'];

const TEXT_OPTIONS = ['weights', 'default_language', 'language_override', 'textIndexVersion'];
const GEO_2D_OPTIONS = ['bits', 'min', 'max'];

class ManifestBuilder {
  private readonly problems: string[] = [];

  constructor(
    private readonly file: string,
    private readonly raw: ManifestFile,
    private readonly locator: Locator,
    /** The file itself when the value is its own (not migrated): the source of key order. */
    private readonly yaml: YamlFile | undefined,
    private readonly options: ManifestOptions,
    private readonly schemaVersion: number,
    private readonly warnings: string[],
  ) {}

  private problem(at: KeyPath, message: string, which: 'value' | 'key' = 'value'): void {
    this.problems.push(`${this.locator.at(at, which)}: ${this.locator.label(at)}: ${message}`);
  }

  build(): { manifest: AppManifest | undefined; problems: string[] } {
    const { raw, file, locator } = this;
    const slug = raw.slug;
    const base = path.basename(file, path.extname(file));
    if (base !== slug) {
      this.problem(['slug'], `'${slug}' must match the file name; rename the file to ${slug}${path.extname(file)} or set 'slug: ${base}'`);
    }
    const authRequired = raw.auth_required ?? true;
    const exposeTag = raw.expose_tag ?? false;

    let jwt: JwtConfig | undefined;
    let rbac: RbacConfig | undefined;
    let authOk = true;
    try {
      ({ jwt, rbac } = parseAuthSection(locator, raw.auth, {
        configDir: this.options.configDir ?? path.dirname(path.dirname(file)),
        env: this.options.env ?? process.env,
      }));
    } catch (err) {
      if (!(err instanceof ConfigError)) throw err;
      this.problems.push(err.message);
      authOk = false;
    }
    if (authOk && authRequired && !jwt) {
      this.problems.push(
        `${locator.at(raw.auth === undefined || raw.auth === null ? [] : ['auth'])}: auth.jwt: missing; an app with auth_required: true (the default) needs a key ` +
          `to verify its tokens: auth.jwt.secret_env (HS256 secret from an env variable), public_key_file or jwks_file; ` +
          `or set auth_required: false (local development only)`,
      );
    }

    const managedIndexes = this.indexes();
    const dataAccess: DataAccess = { readOnly: raw.data_access?.read_only ?? false, collections: raw.data_access?.collections };
    const websockets = this.websockets();
    this.withinDataAccess(managedIndexes, websockets, dataAccess);

    if (this.problems.length > 0) return { manifest: undefined, problems: inFileOrder(this.problems, (p) => p) };

    const warnings = [...this.warnings];
    let unavailable: string | undefined;
    if (jwt && jwt.keys.length === 0 && authRequired) {
      // Every listed key is missing from the environment: with auth required nothing can connect.
      unavailable = jwt.skipped.join('; ');
    } else {
      warnings.push(...(jwt?.skipped ?? []));
      if (jwt && jwt.keys.length === 0) warnings.push(`app '${slug}' accepts no tokens (no usable key); it is still selectable by appName=${slug}`);
    }
    const policy = raw.index_policy ?? {};
    const limits = raw.limits ?? {};
    return {
      manifest: {
        slug,
        name: raw.name ?? slug,
        authRequired,
        exposeTag,
        file,
        jwt,
        rbac,
        unavailable,
        warnings,
        schemaVersion: this.schemaVersion,
        managedIndexes,
        indexPolicy: {
          ...(policy.reconcile !== undefined ? { reconcile: policy.reconcile } : {}),
          ...(policy.prune !== undefined ? { prune: policy.prune } : {}),
        },
        limits: {
          ...(limits.connections !== undefined ? { connections: limits.connections } : {}),
          ...(limits.operations_per_second !== undefined ? { operationsPerSecond: limits.operations_per_second } : {}),
          ...(limits.max_document_bytes !== undefined ? { maxDocumentBytes: limits.max_document_bytes } : {}),
          ...(limits.max_documents_per_collection !== undefined ? { maxDocumentsPerCollection: limits.max_documents_per_collection } : {}),
          ...(limits.upstream_connections !== undefined ? { upstreamConnections: limits.upstream_connections } : {}),
          ...(limits.open_cursors !== undefined ? { openCursors: limits.open_cursors } : {}),
        },
        dataAccess,
        observability: { slowOperationMs: raw.observability?.slow_operation_ms },
        websockets,
      },
      problems: [],
    };
  }

  /** managed_indexes, normalized (ordered keys, names, options), with the rules of createIndexes. */
  private indexes(): Map<string, ManagedIndex[]> {
    const out = new Map<string, ManagedIndex[]>();
    for (const [collection, entries] of Object.entries(this.raw.managed_indexes ?? {})) {
      const list: ManagedIndex[] = [];
      out.set(collection, list);
      const byName = new Map<string, number>();
      const byKeys = new Map<string, number>();
      let textIndex: number | undefined;
      (entries ?? []).forEach((entry, i) => {
        const at: KeyPath = ['managed_indexes', collection, i];
        const other = (j: number) => this.locator.label(['managed_indexes', collection, j]);
        const keys = this.indexKeys(at, entry.keys);
        const options: Record<string, unknown> = {};
        for (const name of INDEX_OPTION_NAMES) if (entry[name] !== undefined) options[name] = entry[name];
        const name = entry.name ?? indexName(keys);

        const fields = new Map<string, number>();
        keys.forEach(([field], n) => {
          if (fields.has(field)) this.problem([...at, 'keys', n], `field '${field}' appears twice in the keys`);
          fields.set(field, n);
        });
        if (keys.length === 1 && keys[0]![0] === '_id' && (keys[0]![1] === 1 || keys[0]![1] === -1)) {
          this.problem([...at, 'keys'], "MongoDB keeps an _id index (named _id_) on every collection; remove this entry");
        }
        if (name === '_id_') this.problem([...at, entry.name !== undefined ? 'name' : 'keys'], "'_id_' is the name of the _id index; choose another name");
        const sameName = byName.get(name);
        if (sameName !== undefined) {
          this.problem(
            [...at, entry.name !== undefined ? 'name' : 'keys'],
            `index name '${name}' is also the name of ${other(sameName)}${entry.name === undefined ? ' (names default to the keys)' : ''}; ` +
              'index names must be unique within a collection: give one of them another name',
          );
        } else byName.set(name, i);
        const pattern = JSON.stringify(keys);
        const sameKeys = byKeys.get(pattern);
        if (sameKeys !== undefined) {
          this.problem([...at, 'keys'], `the same keys as ${other(sameKeys)}; a collection keeps one index per key pattern: merge the two entries`);
        } else byKeys.set(pattern, i);

        const kinds = keys.map(([, k]) => k);
        const wildcards = keys.filter(([f]) => f === '$**' || f.endsWith('.$**'));
        if (kinds.includes('text')) {
          if (textIndex !== undefined) {
            this.problem([...at, 'keys'], `a collection has at most one text index, and ${other(textIndex)} is one: put all text fields in one index`);
          }
          textIndex ??= i;
        } else {
          for (const o of TEXT_OPTIONS.filter((o) => options[o] !== undefined)) this.problem([...at, o], "applies to text indexes only (a key of kind 'text')", 'key');
        }
        if (options['2dsphereIndexVersion'] !== undefined && !kinds.includes('2dsphere')) {
          this.problem([...at, '2dsphereIndexVersion'], "applies to 2dsphere indexes only (a key of kind '2dsphere')", 'key');
        }
        if (!kinds.includes('2d')) {
          for (const o of GEO_2D_OPTIONS.filter((o) => options[o] !== undefined)) this.problem([...at, o], "applies to 2d indexes only (a key of kind '2d')", 'key');
        } else if (typeof options.min === 'number' && typeof options.max === 'number' && options.min >= options.max) {
          this.problem([...at, 'max'], `must be greater than min (${options.min})`);
        }
        if (kinds.filter((k) => k === 'hashed').length > 1) this.problem([...at, 'keys'], 'an index has at most one hashed field');
        if (kinds.includes('hashed') && options.unique === true) this.problem([...at, 'unique'], 'a hashed index cannot be unique');
        if (wildcards.length > 0) {
          if (wildcards.length > 1) this.problem([...at, 'keys'], 'an index has at most one wildcard field');
          if (wildcards.some(([, k]) => k !== 1 && k !== -1)) this.problem([...at, 'keys'], 'a wildcard field takes kind 1 or -1');
          if (options.unique === true) this.problem([...at, 'unique'], 'a wildcard index cannot be unique');
        }
        if (options.wildcardProjection !== undefined && !keys.some(([f]) => f === '$**')) {
          this.problem([...at, 'wildcardProjection'], "needs the key '$**' (it selects the fields of an all-fields wildcard index)", 'key');
        }
        if (options.expireAfterSeconds !== undefined) {
          const [only] = keys;
          if (keys.length !== 1 || wildcards.length > 0 || (only![1] !== 1 && only![1] !== -1) || only![0] === '_id') {
            this.problem(
              [...at, 'expireAfterSeconds'],
              'a TTL index has one key: an ascending or descending date field (not _id, not a wildcard); documents expire this many seconds after its date',
              'key',
            );
          }
        }
        if (options.partialFilterExpression !== undefined && options.sparse === true) {
          this.problem([...at, 'sparse'], "cannot be combined with partialFilterExpression; filter with { <field>: { $exists: true } } instead", 'key');
        }
        list.push({ name, keys, options });
      });
    }
    return out;
  }

  /** An index's keys as ordered pairs (a mapping keeps the file's order). */
  private indexKeys(at: KeyPath, keys: ManifestIndexEntry['keys']): IndexKey[] {
    if (Array.isArray(keys)) return keys.map(([f, k]) => [f, k] as const);
    const order = this.yaml?.keysAt([...at, 'keys']) ?? Object.keys(keys);
    return order.map((f) => [f, keys[f]!] as const);
  }

  private websockets(): WebsocketEndpoint[] {
    const seen = new Map<string, number>();
    return (this.raw.websockets ?? []).map((w, i) => {
      const at: KeyPath = ['websockets', i, 'path'];
      const reserved = RESERVED_HTTP_PATHS.find((r) => w.path === r || (r !== '/' && w.path.startsWith(`${r}/`)));
      if (reserved) this.problem(at, `'${reserved}' belongs to the proxy's own HTTP endpoints (${RESERVED_HTTP_PATHS.join(', ')}); choose another path`);
      const same = seen.get(w.path);
      if (same !== undefined) this.problem(at, `'${w.path}' is also the path of ${this.locator.label(['websockets', same])}; paths must be unique`);
      seen.set(w.path, i);
      return { path: w.path, collection: w.collection, filter: w.filter };
    });
  }

  /** With data_access.collections set, indexes and endpoints must stay within those collections. */
  private withinDataAccess(indexes: Map<string, ManagedIndex[]>, websockets: WebsocketEndpoint[], access: DataAccess): void {
    const allowed = access.collections;
    if (!allowed || allowed.includes('*')) return;
    const list = allowed.join(', ') || 'none';
    for (const collection of indexes.keys()) {
      if (!allowed.includes(collection)) {
        this.problem(['managed_indexes', collection], `collection '${collection}' is not in data_access.collections (${list}); add it there or remove its indexes`, 'key');
      }
    }
    websockets.forEach((w, i) => {
      if (!allowed.includes(w.collection)) {
        this.problem(['websockets', i, 'collection'], `collection '${w.collection}' is not in data_access.collections (${list}); add it there or use another collection`);
      }
    });
  }
}

/** The name the server gives an index without one: `status_1_created_at_-1`. */
export function indexName(keys: readonly IndexKey[]): string {
  return keys.map(([field, kind]) => `${field}_${kind}`).join('_');
}

/** The sections an app has when its manifest does not mention them. */
export function manifestDefaults(): Pick<
  AppManifest,
  'schemaVersion' | 'managedIndexes' | 'indexPolicy' | 'limits' | 'dataAccess' | 'observability' | 'websockets'
> {
  return {
    schemaVersion: MANIFEST_SCHEMA_VERSION,
    managedIndexes: new Map(),
    indexPolicy: {},
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
