import { EJSON, type Document } from 'bson';
import type { IndexKey, IndexPolicy, ManagedIndex } from '../apps/manifest-types.js';
import { scopeFilter } from '../policy/filter.js';
import { physicalCollection } from '../policy/namespace.js';
import { isDoc, makeScope, type AppScope } from '../policy/scope.js';
import type { IndexStatus } from './types.js';

/**
 * Index planning, pure: from an app's managed indexes, its index policy and what the
 * upstream's listIndexes returned for each managed physical collection, what to do with each index.
 *
 * - ok: an index of that name exists with the manifest's keys and options (compared normalized);
 * - create: no index of that name: build it (`spec` is the createIndexes entry);
 * - drift: an index of that name exists with other keys or options; replaced (dropped and rebuilt) only
 *   when the effective policy says `reconcile: replace`, otherwise reported;
 * - prune: an index the manifest does not manage, on a managed collection, with prune on (never `_id_`);
 * - error: the manifest's index cannot be planned (bad collection name, `_id_`, a duplicate name, the
 *   same keys and options already indexed under another name that will not be pruned).
 * `unsupported` never comes from planning alone: markUnsupported (src/indexes/unsupported.ts) turns a
 * create or drift into it when the upstream is known not to build that index.
 *
 * The spec sent upstream is the manifest's: keys in order, name, options as given, except that
 * `partialFilterExpression` is scoped like any filter (ANDed with `<tag>: <slug>` by scopeFilter), and
 * the drift comparison compares against that scoped filter.
 */

/** The index reconciliation settings in force for one app. */
export interface EffectivePolicy {
  reconcile: 'report' | 'replace';
  prune: boolean;
}

/**
 * The app's index policy over the runtime defaults: a manifest field that is unset (undefined) falls
 * back to runtime.yaml `indexes.reconcile` / `indexes.prune`; `override` (e.g. `indexes --apply`, which
 * implies replace) wins over both.
 */
export function effectivePolicy(
  appPolicy: Partial<IndexPolicy> | undefined,
  defaults: EffectivePolicy,
  override: Partial<EffectivePolicy> = {},
): EffectivePolicy {
  return {
    reconcile: override.reconcile ?? appPolicy?.reconcile ?? defaults.reconcile,
    prune: override.prune ?? appPolicy?.prune ?? defaults.prune,
  };
}

/** What the reconciler does about one planned index. */
export type IndexOperation = 'none' | 'create' | 'replace' | 'drop';

/** One row of a plan: the status as `/apps` shows it, plus what executing the plan does. */
export interface PlannedIndex extends IndexStatus {
  physicalCollection: string;
  operation: IndexOperation;
  /** The createIndexes entry (`{ key, name, ...options }`) for create and replace. */
  spec?: Document;
}

export interface IndexPlan {
  app: string;
  database: string;
  policy: EffectivePolicy;
  entries: PlannedIndex[];
}

export interface PlanInput {
  slug: string;
  /** The app's managed indexes by its own collection names (AppManifest.managedIndexes). */
  managedIndexes: ReadonlyMap<string, readonly ManagedIndex[]>;
  policy: EffectivePolicy;
  /** The shared physical database and the tag field (runtime config). */
  database: string;
  tagField: string;
  /**
   * listIndexes of each managed collection, by the app's collection name; `null` (or absent) when the
   * collection does not exist (creating its first index creates it).
   */
  actual: ReadonlyMap<string, readonly Document[] | null>;
}

/** The physical collection of an app's collection, or the reason it has none (InvalidNamespace). */
export function physicalNameOf(scope: AppScope, collection: string): { physical: string } | { error: string } {
  try {
    return { physical: physicalCollection(scope, collection, `managed_indexes.${collection}`) };
  } catch (err) {
    return { error: (err as Error).message };
  }
}

/** The scope the plan works in (no reads happen through it: expose_tag does not matter). */
export function planScope(slug: string, database: string, tagField: string): AppScope {
  return makeScope(slug, database, tagField);
}

export function planIndexes(input: PlanInput): IndexPlan {
  const scope = planScope(input.slug, input.database, input.tagField);
  const entries: PlannedIndex[] = [];
  for (const [collection, managed] of input.managedIndexes) {
    const where = physicalNameOf(scope, collection);
    if ('error' in where) {
      for (const index of managed) {
        entries.push({ collection, index: index.name, keys: index.keys, physicalCollection: '', action: 'error', operation: 'none', error: where.error });
      }
      continue;
    }
    const physical = where.physical;
    const actual = input.actual.get(collection) ?? null;
    const existing = new Map<string, Document>();
    for (const doc of actual ?? []) if (typeof doc.name === 'string') existing.set(doc.name, doc);
    const managedNames = new Set(managed.map((m) => m.name));
    const prunable = (name: string) => input.policy.prune && name !== '_id_' && !managedNames.has(name);
    const seen = new Set<string>();

    for (const index of managed) {
      const base = { collection, index: index.name, keys: index.keys, physicalCollection: physical };
      const fail = (error: string) => entries.push({ ...base, action: 'error', operation: 'none', error });
      if (seen.has(index.name)) {
        fail(`the manifest lists two indexes named '${index.name}' on '${collection}'; index names must be unique per collection`);
        continue;
      }
      seen.add(index.name);
      if (index.name === '_id_') {
        fail("'_id_' is the index the server builds on _id; it cannot be managed (give the index another name)");
        continue;
      }
      if (index.keys.length === 0) {
        fail(`index '${index.name}' has no keys`);
        continue;
      }
      let spec: Document;
      let desired: Normalized;
      try {
        spec = createIndexSpec(scope, index);
        desired = normalizeDesired(scope, index);
      } catch (err) {
        fail((err as Error).message);
        continue;
      }
      const found = existing.get(index.name);
      if (!found) {
        // The same keys and options under another name: the server refuses a second copy
        // (IndexOptionsConflict), unless that one is pruned first (prunes run before builds).
        const twin = [...existing.values()].find((doc) => doc.name !== index.name && differences(desired, normalizeActual(doc)).length === 0);
        if (twin && !prunable(String(twin.name))) {
          fail(
            `the same keys and options are already indexed as '${String(twin.name)}', which the manifest does not manage; ` +
              `rename the managed index to '${String(twin.name)}', or drop '${String(twin.name)}' (prune: true drops it)`,
          );
          continue;
        }
        const detail =
          actual === null
            ? `collection ${physical} does not exist yet (building the index creates it)`
            : twin
              ? `after pruning '${String(twin.name)}' (same keys and options)`
              : undefined;
        entries.push({ ...base, action: 'create', operation: 'create', spec, ...(detail ? { detail } : {}) });
        continue;
      }
      const diffs = differences(desired, normalizeActual(found));
      if (diffs.length === 0) {
        entries.push({ ...base, action: 'ok', operation: 'none' });
      } else if (input.policy.reconcile === 'replace') {
        entries.push({ ...base, action: 'drift', operation: 'replace', spec, detail: `${diffs.join('; ')} (will be replaced)` });
      } else {
        entries.push({ ...base, action: 'drift', operation: 'none', detail: `${diffs.join('; ')} (reported only: reconcile is 'report')` });
      }
    }

    for (const doc of actual ?? []) {
      const name = typeof doc.name === 'string' ? doc.name : undefined;
      if (name === undefined || !prunable(name)) continue;
      entries.push({
        collection,
        index: name,
        keys: keysOf(doc),
        physicalCollection: physical,
        action: 'prune',
        operation: 'drop',
        detail: 'not managed by the manifest (prune is on)',
      });
    }
  }
  return { app: input.slug, database: input.database, policy: input.policy, entries };
}

/**
 * The createIndexes entry for a managed index: `{ key, name, ...options }`, keys in the manifest's order,
 * options as the manifest gives them, partialFilterExpression scoped to the app.
 */
export function createIndexSpec(scope: AppScope, index: ManagedIndex): Document {
  const spec: Document = { key: keyDocument(index.keys), name: index.name };
  for (const [option, value] of Object.entries(index.options)) {
    if (option === 'key' || option === 'name') continue;
    spec[option] = option === 'partialFilterExpression' ? scopeFilter(scope, value, 'partialFilterExpression') : value;
  }
  return spec;
}

/**
 * An ordered key document. JavaScript objects put integer-like keys ("0", "12") first whatever the
 * insertion order, so keys with such a field are sent as a Map, which BSON serializes in order.
 */
function keyDocument(keys: readonly IndexKey[]): Document {
  if (keys.some(([field]) => INTEGER_LIKE.test(field))) return new Map(keys) as unknown as Document;
  const doc: Document = {};
  for (const [field, kind] of keys) doc[field] = kind;
  return doc;
}

const INTEGER_LIKE = /^(0|[1-9]\d{0,8})$/;

/** An index's keys and options in the form listIndexes reports them, for comparison. */
interface Normalized {
  key: [string, unknown][];
  options: Map<string, unknown>;
}

/** Never compared: index version, namespace (pre-4.4 servers), the ignored `background` flag. */
const IGNORED = new Set(['v', 'ns', 'background', 'key', 'name']);
/** What the server reports (or omits) for an option the manifest did not set. ANY: whatever it picks. */
const ANY = Symbol('any');
const SERVER_DEFAULTS = new Map<string, unknown>([
  ['unique', false],
  ['sparse', false],
  ['hidden', false],
  ['default_language', 'english'],
  ['language_override', 'language'],
  ['textIndexVersion', ANY],
  ['2dsphereIndexVersion', ANY],
  ['bits', 26],
  ['min', -180],
  ['max', 180],
]);

/**
 * The manifest's index as the server will list it: text keys folded into `_fts: 'text', _ftsx: 1`
 * (at the first text key) with their weights (1 unless given), partialFilterExpression scoped, and
 * the default collation `{locale: 'simple'}` dropped (the server stores no collation for it).
 */
function normalizeDesired(scope: AppScope, index: ManagedIndex): Normalized {
  const folded: [string, unknown][] = [];
  const textFields: string[] = [];
  for (const [field, kind] of index.keys) {
    if (kind === 'text') {
      if (textFields.length === 0) folded.push(['_fts', 'text'], ['_ftsx', 1]);
      textFields.push(field);
    } else {
      folded.push([field, kind]);
    }
  }
  const options = new Map<string, unknown>();
  for (const [option, value] of Object.entries(index.options)) {
    if (IGNORED.has(option)) continue;
    options.set(option, option === 'partialFilterExpression' ? scopeFilter(scope, value, 'partialFilterExpression') : value);
  }
  if (textFields.length > 0) {
    const given = options.get('weights');
    const weights: Document = {};
    for (const f of textFields) weights[f] = 1;
    if (isDoc(given)) Object.assign(weights, given);
    options.set('weights', weights);
  }
  const collation = options.get('collation');
  if (isDoc(collation) && collation.locale === 'simple' && Object.keys(collation).length === 1) options.delete('collation');
  normalizeProjection(options);
  // Deserialized key documents put integer-like fields first: compare in that order.
  return { key: Object.entries(Object.fromEntries(folded)), options };
}

function normalizeActual(doc: Document): Normalized {
  const options = new Map<string, unknown>();
  for (const [option, value] of Object.entries(doc)) if (!IGNORED.has(option)) options.set(option, value);
  normalizeProjection(options);
  return { key: Object.entries(isDoc(doc.key) ? doc.key : {}), options };
}

/** A wildcard projection's `true`/`false` and `1`/`0` mean the same (servers may list either). */
function normalizeProjection(options: Map<string, unknown>): void {
  const projection = options.get('wildcardProjection');
  if (!isDoc(projection)) return;
  const out: Document = {};
  for (const [field, v] of Object.entries(projection)) out[field] = typeof v === 'boolean' ? Number(v) : v;
  options.set('wildcardProjection', out);
}

function keysOf(doc: Document): IndexKey[] {
  return Object.entries(isDoc(doc.key) ? doc.key : {}).map(([f, k]) => [f, (typeof k === 'string' ? k : Number(k) < 0 ? -1 : 1) as IndexKey[1]]);
}

/** What differs between the manifest's index and the upstream's, one phrase each ("unique: manifest true, upstream absent"). */
function differences(desired: Normalized, actual: Normalized): string[] {
  const diffs: string[] = [];
  const sameKeys =
    desired.key.length === actual.key.length && desired.key.every(([f, k], i) => actual.key[i]![0] === f && canonical(actual.key[i]![1]) === canonical(k));
  if (!sameKeys) diffs.push(`keys: manifest ${showKey(desired.key)}, upstream ${showKey(actual.key)}`);
  const names = [...new Set([...desired.options.keys(), ...actual.options.keys()])].sort();
  for (const name of names) {
    const d = desired.options.get(name);
    const a = actual.options.get(name);
    const fallback = SERVER_DEFAULTS.get(name);
    const hasDefault = SERVER_DEFAULTS.has(name);
    if (d === undefined && a === undefined) continue;
    if (d === undefined) {
      if (hasDefault && (fallback === ANY || canonical(a) === canonical(fallback))) continue;
      diffs.push(`${name}: manifest absent, upstream ${show(a)}`);
    } else if (a === undefined) {
      if (hasDefault && fallback !== ANY && canonical(d) === canonical(fallback)) continue;
      diffs.push(`${name}: manifest ${show(d)}, upstream absent`);
    } else if (name === 'collation' && isDoc(d) && isDoc(a)) {
      // The server lists the whole collation (its defaults depend on the locale, plus an ICU version):
      // the fields the manifest sets must match.
      const differing = Object.keys(d).filter((k) => canonical(d[k]) !== canonical(a[k]));
      if (differing.length > 0) diffs.push(`collation: manifest ${show(d)}, upstream ${show(pick(a, differing))}`);
    } else if (canonical(d) !== canonical(a)) {
      diffs.push(`${name}: manifest ${show(d)}, upstream ${show(a)}`);
    }
  }
  return diffs;
}

function pick(doc: Document, keys: string[]): Document {
  const out: Document = {};
  for (const k of keys) out[k] = doc[k];
  return out;
}

function showKey(key: [string, unknown][]): string {
  return show(Object.fromEntries(key));
}

function show(v: unknown): string {
  try {
    return EJSON.stringify(v as Document, { relaxed: true });
  } catch {
    return String(v);
  }
}

/**
 * A comparison form of a BSON value: numbers by value whatever their BSON type (1, 1.0, Int32(1),
 * Long(1)), object keys sorted at every level (a filter's or weights' field order does not change its
 * meaning), arrays in order.
 */
export function canonical(v: unknown): string {
  if (v === undefined) return 'undefined';
  if (v === null) return 'null';
  if (typeof v === 'number') return `n:${Object.is(v, -0) ? 0 : v}`;
  if (typeof v === 'bigint') return `n:${v}`;
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'boolean') return String(v);
  if (v instanceof Date) return `date:${v.getTime()}`;
  if (v instanceof RegExp) return `re:${v.source}/${v.flags}`;
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v instanceof Map) return canonical(Object.fromEntries(v as Map<string, unknown>));
  if (typeof v === 'object' && '_bsontype' in v) {
    const type = String((v as { _bsontype: unknown })._bsontype);
    if (type === 'Int32' || type === 'Double' || type === 'Long') return `n:${Number((v as { valueOf(): unknown }).valueOf())}`;
    if (type === 'BSONRegExp') {
      const re = v as unknown as { pattern: string; options: string };
      return `re:${re.pattern}/${[...re.options].sort().join('')}`;
    }
    return `${type}:${EJSON.stringify(v as Document, { relaxed: false })}`;
  }
  if (typeof v === 'object') {
    const entries = Object.entries(v as Document).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonical(x)}`).join(',')}}`;
  }
  return String(v);
}
