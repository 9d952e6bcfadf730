import { describeValue, isMapping, keyPathName, type KeyPath, type Locator, type YamlFile } from '../config/source.js';
import { INDEX_OPTION_NAMES } from './manifest-schema.js';
import { inFileOrder } from '../config/schema.js';
import { MANIFEST_SCHEMA_VERSION } from './manifest-types.js';

/**
 * Manifest format versions and the migration of older ones: a schema_version key, with the loader
 * migrating older versions (README, "App manifests").
 *
 * - A manifest without schema_version, or with schema_version 3, is the current format.
 * - schema_version "1.0" and "2.0" (strings, as written by mdb-engine, the Python library mdb-runtime
 *   descends from; numbers 1 and 2 too) are mdb-engine's manifest.json. It is migrated in memory to the
 *   current format: what maps cleanly maps (slug, name, managed_indexes), what mdb-runtime has no use
 *   for is ignored with a warning (web-app auth, CORS, AI services, cross-app read scopes, ...), and what
 *   could not be ignored without weakening the app's protection is refused with an actionable error
 *   (client-side field encryption). The mapping is documented in docs/manifest-reference.md.
 * - A version above the current one was written for a newer mdb-runtime and is refused.
 *
 * The migrated manifest keeps positions: every path of the migrated value maps back to the key of the
 * original file it came from, so later errors still name file:line:col and the key as written.
 */

export type ManifestVersion =
  | { kind: 'current' }
  | { kind: 'ancestor'; version: 1 | 2 }
  | { kind: 'newer'; version: string };

/** The format a manifest value declares. Unrecognized values are left to the schema (current). */
export function manifestVersion(raw: Record<string, unknown>): ManifestVersion {
  const v = raw.schema_version;
  if (v === undefined || v === null) return { kind: 'current' };
  const text = typeof v === 'number' ? String(v) : typeof v === 'string' ? v.trim() : undefined;
  const m = text === undefined ? null : /^(\d+)(?:\.\d+)?$/.exec(text);
  if (!m) return { kind: 'current' };
  const major = Number(m[1]);
  if (major === 1 || major === 2) return { kind: 'ancestor', version: major };
  if (major > MANIFEST_SCHEMA_VERSION) return { kind: 'newer', version: text! };
  return { kind: 'current' };
}

export interface Migration {
  /** The manifest in the current format (to be validated like any other). */
  readonly value: Record<string, unknown>;
  /** Positions and key names of the original file for the migrated paths. */
  readonly locator: Locator;
  readonly warnings: string[];
  /** Problems that stop the migration (the app is not loaded). */
  readonly problems: string[];
}

/** The env variable a migrated app's HS256 secret is read from: `TASKS_JWT_SECRET` for `tasks`. */
export function migratedSecretEnv(slug: string): string {
  return `${slug.toUpperCase()}_JWT_SECRET`;
}

const SLUG_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;

/** mdb-engine index types whose definition maps to createIndexes keys and options. */
const KEYED_TYPES = ['regular', 'text', 'geospatial', 'ttl', 'partial'];
const SEARCH_TYPES = ['vectorSearch', 'search', 'hybrid'];
const GEO_KINDS = ['2dsphere', '2d'];

/** Keys of mdb-engine's manifest that mdb-runtime ignores without a word (metadata, Python packaging). */
const SILENT_KEYS = new Set(['schema_version', 'slug', 'name', 'description', 'developer_id', 'pip_deps', 'status']);

/** mdb-engine's AI service sections. */
const AI_KEYS = ['embedding_config', 'memory_config', 'llm_config', 'graph_config'];

/**
 * Migrates an mdb-engine manifest (schema_version "1.0" or "2.0") to the current format. One mapping
 * reads both: 2.0 only added keys to 1.0, and 1.0's legacy keys (data_scope, auth_policy, sub_auth)
 * are handled like their 2.0 successors.
 */
export function migrateAncestor(raw: Record<string, unknown>, yaml: YamlFile): Migration {
  return new AncestorMigration(raw, yaml).run();
}

/** Maps migrated paths back to the original file (longest prefix wins). */
class OriginMap implements Locator {
  private readonly origins: { to: KeyPath; from: KeyPath | 'added' }[] = [];

  constructor(
    private readonly yaml: YamlFile,
    /** The version as the file writes it ("2.0"). */
    private readonly version: string,
  ) {}

  get file(): string {
    return this.yaml.file;
  }

  set(to: KeyPath, from: KeyPath | 'added'): void {
    this.origins.push({ to, from });
  }

  private resolve(path: KeyPath): KeyPath | 'added' {
    let best: { to: KeyPath; from: KeyPath | 'added' } | undefined;
    for (const o of this.origins) {
      if (o.to.length <= path.length && o.to.every((s, i) => s === path[i]) && (!best || o.to.length > best.to.length)) best = o;
    }
    if (!best) return path;
    return best.from === 'added' ? 'added' : [...best.from, ...path.slice(best.to.length)];
  }

  at(path: KeyPath, which: 'value' | 'key' = 'value'): string {
    const from = this.resolve(path);
    return from === 'added' ? this.yaml.at(['slug']) : this.yaml.at(from, which);
  }

  label(path: KeyPath): string {
    const from = this.resolve(path);
    return from === 'added' ? `${keyPathName(path)} (set by the migration from schema_version ${this.version})` : keyPathName(from);
  }
}

class AncestorMigration {
  private readonly out: Record<string, unknown> = {};
  private readonly origins: OriginMap;
  private readonly warnings: string[] = [];
  private readonly problems: string[] = [];
  private readonly slug: string;

  constructor(
    private readonly raw: Record<string, unknown>,
    private readonly yaml: YamlFile,
  ) {
    this.origins = new OriginMap(yaml, String(raw.schema_version));
    this.slug = typeof raw.slug === 'string' ? raw.slug : '';
  }

  private warn(path: KeyPath, message: string, which: 'value' | 'key' = 'key'): void {
    this.warnings.push(`${this.yaml.at(path, which)}: ${path.length ? `${keyPathName(path)}: ` : ''}${message}`);
  }

  private refuse(path: KeyPath, message: string, which: 'value' | 'key' = 'key'): void {
    this.problems.push(`${this.yaml.at(path, which)}: ${path.length ? `${keyPathName(path)}: ` : ''}${message}`);
  }

  /** Copies `raw[key]` to `out[key]` (same path). */
  private copy(key: string): void {
    if (this.raw[key] === undefined) return;
    this.out[key] = this.raw[key];
    this.origins.set([key], [key]);
  }

  run(): Migration {
    const raw = this.raw;
    this.copy('slug');
    this.copy('name');
    this.copy('description');
    if (typeof raw.slug === 'string' && !SLUG_PATTERN.test(raw.slug)) {
      const suggestion = raw.slug.toLowerCase().replace(/[^a-z0-9_]/g, '_').replace(/^[^a-z]+/, '').slice(0, 32) || 'app';
      this.refuse(
        ['slug'],
        `'${raw.slug}' is a valid mdb-engine slug but not an mdb-runtime one (^[a-z][a-z0-9_]{0,31}$). mdb-engine stored this ` +
          `app's collections as '${raw.slug}_<name>', mdb-runtime stores them as '<slug>_<name>': pick a new slug (e.g. '${suggestion}'), ` +
          `rename the collections to '${suggestion}_<name>' (renameCollection, directly on the cluster), and set slug and the file name to it`,
        'value',
      );
    }
    this.auth();
    this.dataAccess();
    this.indexes();
    this.ignored();
    const order = (m: string) => m;
    return { value: this.out, locator: this.origins, warnings: inFileOrder(this.warnings, order), problems: inFileOrder(this.problems, order) };
  }

  /** mdb-engine authenticated web users; mdb-runtime authenticates database connections with a JWT. */
  private auth(): void {
    const raw = this.raw;
    const secretEnv = migratedSecretEnv(this.slug || 'app');
    this.out.auth_required = true;
    this.out.auth = { jwt: { secret_env: secretEnv } };
    this.origins.set(['auth_required'], 'added');
    this.origins.set(['auth'], 'added');
    this.warn(
      [],
      `migrated from mdb-engine schema_version ${JSON.stringify(raw.schema_version)}: clients authenticate with a JWT signed with the HS256 ` +
        `secret in ${secretEnv} (mint one with 'mdb-runtime token ${this.slug || '<slug>'}'); for other keys, roles or limits, ` +
        `rewrite the file as an mdb-runtime manifest (docs/manifest-reference.md)`,
    );
    if (raw.auth_required === false) {
      this.warn(
        ['auth_required'],
        'not carried over: it let web users in without logging in to the app; mdb-runtime still requires a token for every ' +
          'database connection of a migrated app (a manifest written for mdb-runtime may set auth_required: false for local development)',
      );
    }
    const webAuth: KeyPath[] = [];
    if (isMapping(raw.auth)) for (const k of Object.keys(raw.auth)) webAuth.push(['auth', k]);
    for (const k of ['auth_policy', 'sub_auth', 'token_management']) if (raw[k] !== undefined) webAuth.push([k]);
    if (webAuth.length > 0) {
      this.warn(
        webAuth[0]!.slice(0, 1),
        `ignored: mdb-engine's web-app authentication (${webAuth.map(keyPathName).join(', ')}: users, sessions, SSO, Casbin/OSO ` +
          'policies, tokens) ran in the app, which keeps doing its own user login; mdb-runtime authenticates database ' +
          "connections (the app's token), and its roles are declared in an mdb-runtime manifest",
        'key',
      );
    }
  }

  /** Cross-app scopes: mdb-runtime never lets an app reach another app's data, so they are dropped. */
  private dataAccess(): void {
    const raw = this.raw;
    const self = new Set([this.slug, 'self']);
    const scopes: { path: KeyPath; value: unknown }[] = [];
    if (raw.data_scope !== undefined) scopes.push({ path: ['data_scope'], value: raw.data_scope });
    const access = raw.data_access;
    if (isMapping(access)) {
      if (access.read_scopes !== undefined) scopes.push({ path: ['data_access', 'read_scopes'], value: access.read_scopes });
      const write = access.write_scope;
      if (write !== undefined && !self.has(String(write))) {
        this.warn(
          ['data_access', 'write_scope'],
          `ignored: writes into another app's data (${describeValue(write)}) are not possible through mdb-runtime; this app writes its own collections`,
        );
      }
    }
    for (const { path, value } of scopes) {
      const others = (Array.isArray(value) ? value : [value]).filter((s) => !self.has(String(s)));
      if (others.length > 0) {
        this.warn(
          path,
          `ignored: cross-app reads (${others.map((o) => String(o)).join(', ')}) are not possible through mdb-runtime: each app sees ` +
            'only its own data; the app must get other apps\' data through those apps',
        );
      }
    }
  }

  private indexes(): void {
    const raw = this.raw.managed_indexes;
    if (raw === undefined || raw === null) return;
    if (!isMapping(raw)) {
      // Let the schema say what is wrong, at this key.
      this.out.managed_indexes = raw;
      this.origins.set(['managed_indexes'], ['managed_indexes']);
      return;
    }
    const out: Record<string, unknown> = {};
    this.out.managed_indexes = out;
    this.origins.set(['managed_indexes'], ['managed_indexes']);
    for (const [collection, defs] of Object.entries(raw)) {
      const from: KeyPath = ['managed_indexes', collection];
      this.origins.set(['managed_indexes', collection], from);
      if (!Array.isArray(defs)) {
        out[collection] = defs;
        continue;
      }
      const list: unknown[] = [];
      out[collection] = list;
      defs.forEach((def: unknown, i) => {
        const entry = this.index(collection, [...from, i], def);
        if (entry === undefined) return;
        const to: KeyPath = ['managed_indexes', collection, list.length];
        this.origins.set(to, [...from, i]);
        for (const [k, origin] of entry.origins) this.origins.set([...to, ...k], origin);
        list.push(entry.value);
      });
      // Every index of it was skipped (e.g. only an Atlas Search index): the collection is not managed.
      if (list.length === 0 && defs.length > 0) delete out[collection];
    }
  }

  /** One mdb-engine index definition as a managed index, or undefined (skipped, with a warning). */
  private index(collection: string, at: KeyPath, def: unknown): { value: Record<string, unknown>; origins: [KeyPath, KeyPath][] } | undefined {
    if (!isMapping(def)) return { value: def as Record<string, unknown>, origins: [] };
    const type = def.type ?? 'regular';
    const label = typeof def.name === 'string' ? `'${def.name}'` : `#${Number(at.at(-1)) + 1}`;
    if (typeof type === 'string' && SEARCH_TYPES.includes(type)) {
      this.warn(
        [...at, 'type'],
        `index ${label} (${type}) ignored: Atlas Search and Vector Search indexes are not managed by mdb-runtime; create it in Atlas ` +
          `on the physical collection ${this.slug}_${collection}, with a filter field app_id`,
        'value',
      );
      return undefined;
    }
    if (typeof type !== 'string' || !KEYED_TYPES.includes(type)) {
      this.refuse([...at, 'type'], `expected one of ${[...KEYED_TYPES, ...SEARCH_TYPES].join(', ')}, found ${describeValue(type)}`, 'value');
      return undefined;
    }
    const origins: [KeyPath, KeyPath][] = [];
    const value: Record<string, unknown> = {};
    const skip = (why: string) => {
      this.warn(at, `index ${label} ignored: ${why} (mdb-engine skipped it too)`, 'value');
      return undefined;
    };

    // Keys: a mapping (in the file's order) or a list of pairs, both become pairs.
    const keys = def.keys;
    let pairs: [string, unknown][] = [];
    if (isMapping(keys)) {
      const order = this.yaml.keysAt([...at, 'keys']) ?? Object.keys(keys);
      pairs = order.map((f) => [f, keys[f]]);
      pairs.forEach(([f], n) => {
        origins.push([['keys', n], [...at, 'keys', f]]);
        origins.push([['keys', n, 0], [...at, 'keys', f]]);
        origins.push([['keys', n, 1], [...at, 'keys', f]]);
      });
    } else if (Array.isArray(keys)) {
      pairs = keys.map((p: unknown) => (Array.isArray(p) ? [String(p[0]), p[1]] : ['', p]));
      keys.forEach((p: unknown, n) => {
        if (!Array.isArray(p) || p.length !== 2) pairs = [];
        origins.push([['keys', n], [...at, 'keys', n]]);
      });
      if (pairs.length === 0 && keys.length > 0) {
        // Not pairs: keep it as written for the schema's message.
        value.keys = keys;
        origins.push([['keys'], [...at, 'keys']]);
      }
    } else if (keys !== undefined && keys !== null) {
      value.keys = keys;
      origins.push([['keys'], [...at, 'keys']]);
    }
    if (value.keys === undefined) {
      if (pairs.length === 0) return skip('it has no keys');
      pairs = pairs.map(([f, k]) => [f, k === 'TEXT' ? 'text' : k]);
      if (pairs.some(([, k]) => k === 'geoHaystack')) return skip('geoHaystack indexes were removed in MongoDB 5.0');
      if (pairs.length === 1 && pairs[0]![0] === '_id') return skip('MongoDB creates the _id index of every collection itself');
      if (type === 'text' && !pairs.some(([, k]) => k === 'text')) return skip("type 'text' needs a key of kind 'text'");
      if (type === 'geospatial' && !pairs.some(([, k]) => GEO_KINDS.includes(String(k)))) return skip("type 'geospatial' needs a key of kind '2dsphere' or '2d'");
      value.keys = pairs;
      origins.push([['keys'], [...at, 'keys']]);
    }

    // Options: under `options` (mdb-engine's place) or, as some of its examples wrote them, beside keys.
    // Its schema let other keys through; they had no effect there and have none here.
    const options: Record<string, unknown> = {};
    const ignored: KeyPath[] = [];
    const take = (k: string, v: unknown, from: KeyPath) => {
      if (INDEX_OPTION_NAMES.includes(k)) {
        options[k] = v;
        origins.push([[k], from]);
      } else if (!['background', 'name', 'wait_for_ready'].includes(k)) ignored.push(from);
    };
    for (const [k, v] of Object.entries(def)) {
      if (!['type', 'keys', 'name', 'options'].includes(k)) take(k, v, [...at, k]);
    }
    if (isMapping(def.options)) {
      for (const [k, v] of Object.entries(def.options)) take(k, v, [...at, 'options', k]);
    } else if (def.options !== undefined && def.options !== null) {
      options.options = def.options; // not a mapping: the schema says so, at this key
      origins.push([['options'], [...at, 'options']]);
    }
    for (const path of ignored) this.warn(path, `ignored: not an index option (options: ${INDEX_OPTION_NAMES.join(', ')})`);
    if (type === 'ttl' && (typeof options.expireAfterSeconds !== 'number' || options.expireAfterSeconds < 1)) {
      return skip("type 'ttl' needs options.expireAfterSeconds (a positive integer)");
    }
    if (type === 'partial' && !isMapping(options.partialFilterExpression)) {
      return skip("type 'partial' needs options.partialFilterExpression");
    }
    // mdb-engine created the index as <slug>_<name> on the physical collection; keeping that name lets
    // the reconciler recognize the existing index instead of building a second one.
    if (typeof def.name === 'string' && def.name !== '') {
      value.name = `${this.slug}_${def.name}`;
      origins.push([['name'], [...at, 'name']]);
    } else if (def.name !== undefined) {
      value.name = def.name;
      origins.push([['name'], [...at, 'name']]);
    }
    Object.assign(value, options);
    return { value, origins };
  }

  /** Sections mdb-runtime has no use for: a warning each (or a refusal). */
  private ignored(): void {
    const raw = this.raw;
    const handled = new Set(['auth', 'auth_required', 'auth_policy', 'sub_auth', 'token_management', 'data_access', 'data_scope', 'managed_indexes']);
    for (const [key, value] of Object.entries(raw)) {
      if (handled.has(key) || SILENT_KEYS.has(key)) continue;
      switch (key) {
        case 'encrypted_fields': {
          const fields = isMapping(value)
            ? Object.entries(value).flatMap(([c, f]) => (Array.isArray(f) ? f.map((x) => `${c}.${String(x)}`) : [c]))
            : [];
          if (fields.length === 0) break;
          this.refuse(
            [key],
            `mdb-runtime does not encrypt fields: loading this app would store ${fields.join(', ')} in plain text. Keep the app on ` +
              'mdb-engine, or have the app encrypt these fields itself (explicit client-side encryption in its driver) and remove encrypted_fields',
          );
          break;
        }
        case 'encryption_config':
          if (raw.encrypted_fields === undefined) this.warn([key], 'ignored: mdb-runtime does not encrypt fields (and no encrypted_fields are listed)');
          break;
        case 'multi_app':
          this.refuse(
            [key],
            "this is an mdb-engine multi-app manifest, which lists other apps' manifests: give each app its own file, " +
              'config/apps/<slug>.json, and remove this one',
          );
          break;
        case 'websockets': {
          const paths = isMapping(value)
            ? Object.entries(value).map(([n, w]) => `${n}: ${isMapping(w) && typeof w.path === 'string' ? w.path : '?'}`)
            : [];
          this.warn(
            [key],
            `ignored: mdb-engine's websocket routes${paths.length ? ` (${paths.join(', ')})` : ''} ran in the app's own process; ` +
              'mdb-runtime endpoints stream the changes of a collection and are declared as websockets: [{ path, collection }] in an mdb-runtime manifest',
          );
          break;
        }
        case 'cors':
          this.warn([key], "ignored: CORS is the web app's concern; the proxy answers no browser requests for the app");
          break;
        case 'observability':
          this.warn(
            [key],
            "ignored: the proxy's /healthz, /readyz, /metrics and JSON logs cover every app; an mdb-runtime manifest can set " +
              'observability.slow_operation_ms',
          );
          break;
        case 'collection_settings':
          this.warn([key], 'ignored: validators, capped and time-series collections and default collations are not created by mdb-runtime');
          break;
        case 'initial_data':
          this.warn([key], 'ignored: mdb-runtime does not seed collections; insert the documents through the proxy (mongosh, mongoimport)');
          break;
        default:
          if (AI_KEYS.includes(key) || /_config$/.test(key)) {
            if (isMapping(value) && value.enabled === false) break;
            this.warn([key], "ignored: mdb-engine's AI services (embeddings, memory, LLM, graph) are not part of mdb-runtime");
          } else {
            this.warn([key], 'ignored: not an mdb-engine manifest key that mdb-runtime knows');
          }
      }
    }
    const status = raw.status;
    if (status === 'archived' || status === 'inactive') {
      this.warn(['status'], `'${status}' is not used by mdb-runtime: the app is served; remove its manifest to retire it`, 'value');
    }
  }
}

/** What happens to each key of an mdb-engine manifest (docs/manifest-reference.md shows this table). */
export const MIGRATION_TABLE: readonly { key: string; outcome: string; detail: string }[] = [
  { key: 'schema_version', outcome: 'read', detail: '"1.0" or "2.0" selects this migration (numbers 1 and 2 too); the app\'s schemaVersion records it.' },
  {
    key: 'slug',
    outcome: 'mapped',
    detail:
      "Kept; it must also be an mdb-runtime slug (^[a-z][a-z0-9_]{0,31}$) and the file name. mdb-engine's collections are `<slug>_<name>` and its documents carry `app_id: <slug>`, like mdb-runtime's, so with upstream.database set to mdb-engine's database the data is found as it is. A slug mdb-runtime cannot take (a '-', a leading digit) is refused with the steps to rename it.",
  },
  { key: 'name, description', outcome: 'mapped', detail: 'Kept.' },
  { key: 'status, developer_id, pip_deps', outcome: 'ignored', detail: "Metadata of mdb-engine's platform; `status: archived` or `inactive` warns that the app is served anyway." },
  {
    key: 'auth_required',
    outcome: 'replaced (warning when false)',
    detail: `Every migrated app needs a token for its database connections: the migration sets \`auth_required: true\` and \`auth.jwt.secret_env: <SLUG>_JWT_SECRET\` (HS256; e.g. TASKS_JWT_SECRET for tasks). Mint tokens with \`mdb-runtime token <slug>\`. (A manifest written for mdb-runtime may choose other keys, or \`auth_required: false\` for local development.)`,
  },
  {
    key: 'auth (mode, roles, default_role, policy, users, jwt, ...), auth_policy, sub_auth, token_management',
    outcome: 'ignored, warning',
    detail: "mdb-engine's web-app login, sessions, SSO and Casbin/OSO policies ran in the app, which keeps its own user login. Database roles (read/write/indexes per collection) are declared in an mdb-runtime manifest.",
  },
  {
    key: 'data_access.read_scopes, data_scope',
    outcome: 'ignored (warning when it names other apps)',
    detail: "Each app sees only its own data: cross-app reads are not possible through mdb-runtime. Ignoring them makes the app's access narrower, never wider.",
  },
  { key: 'data_access.write_scope', outcome: 'ignored (warning when another app)', detail: "The app writes its own collections." },
  { key: 'data_access.cross_app_policy', outcome: 'ignored', detail: 'mdb-runtime always denies cross-app access (what deny_all asked for).' },
  {
    key: 'managed_indexes.<collection>[] (type regular, text, geospatial, ttl, partial)',
    outcome: 'mapped',
    detail:
      "keys (a mapping, in order, or [field, kind] pairs; 'TEXT' becomes 'text') and options (under `options` or beside keys) become the entry's keys and options; `name` becomes `<slug>_<name>`, the name mdb-engine gave the physical index, so the reconciler recognizes existing indexes. `background` is dropped (MongoDB 4.2+ ignores it); other unknown options are ignored with a warning.",
  },
  {
    key: 'managed_indexes entries mdb-engine skipped',
    outcome: 'ignored, warning',
    detail: 'No keys, ttl without options.expireAfterSeconds, partial without options.partialFilterExpression, text or geospatial without such a key, an _id index, geoHaystack (removed in MongoDB 5.0).',
  },
  {
    key: 'managed_indexes entries of type vectorSearch, search, hybrid',
    outcome: 'ignored, warning',
    detail: 'Atlas Search and Vector Search indexes are not managed by mdb-runtime: create them in Atlas on `<slug>_<collection>`, with a filter field app_id.',
  },
  { key: 'collection_settings', outcome: 'ignored, warning', detail: 'Validators, capped and time-series collections and default collations are not created by mdb-runtime.' },
  { key: 'initial_data', outcome: 'ignored, warning', detail: 'Not seeded; insert the documents through the proxy (mongosh, mongoimport).' },
  {
    key: 'websockets',
    outcome: 'ignored, warning',
    detail: "mdb-engine's routes ran in the app's process; mdb-runtime endpoints stream a collection's changes and are declared as `websockets: [{ path, collection }]`.",
  },
  { key: 'cors', outcome: 'ignored, warning', detail: "The web app's concern; the proxy answers no browser requests for the app." },
  { key: 'observability', outcome: 'ignored, warning', detail: "The proxy's /healthz, /readyz, /metrics and JSON logs cover every app (`observability.slow_operation_ms` per app)." },
  {
    key: 'embedding_config, memory_config, llm_config, graph_config (any *_config)',
    outcome: 'ignored, warning (silent when enabled: false)',
    detail: "mdb-engine's AI services are not part of mdb-runtime.",
  },
  {
    key: 'encrypted_fields',
    outcome: 'refused',
    detail:
      "mdb-runtime does not encrypt fields: loading the app would store them in plain text. Keep the app on mdb-engine, or have the app encrypt them itself (explicit client-side encryption) and remove the key.",
  },
  { key: 'encryption_config (without encrypted_fields)', outcome: 'ignored, warning', detail: 'Nothing is listed for encryption.' },
  { key: 'multi_app', outcome: 'refused', detail: "A multi-app manifest lists other apps' files: give each app its own `config/apps/<slug>.json`." },
  { key: 'any other key', outcome: 'ignored, warning', detail: '' },
];
