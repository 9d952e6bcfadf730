import type { Db, Document } from 'mongodb';
import type { ManagedIndex } from '../apps/manifest-types.js';
import { canonical, type IndexPlan, type PlannedIndex } from './plan.js';
import type { UpstreamRefusal } from './types.js';

/**
 * Indexes the upstream cannot build (README "Indexes, the schema and `mdb-runtime validate`"): an
 * upstream limit, not an error of the app. They are shown as `unsupported` with what the upstream
 * answered, and remembered per (upstream, app, collection, index spec) so that they are not built and
 * logged again on every pass.
 *
 * Which answers count (what FerretDB v1.24 and MongoDB answer to an index kind or option they lack):
 * - NotImplemented (238): FerretDB for the options expireAfterSeconds (TTL), partialFilterExpression,
 *   collation, hidden, weights, default_language, wildcardProjection, ... ("Index option
 *   \"expireAfterSeconds\" is not implemented yet"), and for key values other than 1 and -1;
 * - CommandNotSupported (115): servers that implement the wire protocol without a feature;
 * - IndexNotFound (27) for a key of a named kind (text, 2dsphere, 2d, hashed): FerretDB's answer to
 *   those ("can't find index with key: { loc: \"2dsphere\" }"); a MongoDB never answers createIndexes so;
 * - InternalError (1) "bad JSON path" for a whole-document wildcard key (`$**`): FerretDB's SQLite
 *   backend cannot index it.
 * Everything else stays an error: a unique index over duplicates (DuplicateKey 11000, or FerretDB's
 * InternalError "UNIQUE constraint failed"), a conflicting index, a refused authorization.
 */

const NOT_IMPLEMENTED = 238;
const COMMAND_NOT_SUPPORTED = 115;
const INDEX_NOT_FOUND = 27;
const INTERNAL_ERROR = 1;

/** The upstream's answer when `err` (from a createIndexes of `spec`) says it cannot build such an index, else undefined. */
export function unsupportedRefusal(err: unknown, spec: Document | undefined): UpstreamRefusal | undefined {
  const refusal = refusalOf(err);
  if (refusal?.code === undefined) return undefined;
  const keys = keyEntries(spec);
  switch (refusal.code) {
    case NOT_IMPLEMENTED:
    case COMMAND_NOT_SUPPORTED:
      return refusal;
    case INDEX_NOT_FOUND:
      return keys.some(([, kind]) => typeof kind === 'string') ? refusal : undefined;
    case INTERNAL_ERROR:
      return /bad JSON path/i.test(refusal.errmsg) && keys.some(([field]) => field === '$**') ? refusal : undefined;
    default:
      return undefined;
  }
}

/** A server error's code, codeName and errmsg (a driver error carries them on errorResponse). */
export function refusalOf(err: unknown): UpstreamRefusal | undefined {
  if (typeof err !== 'object' || err === null) return undefined;
  const e = err as { code?: unknown; codeName?: unknown; message?: unknown; errorResponse?: { errmsg?: unknown } };
  const errmsg = typeof e.errorResponse?.errmsg === 'string' ? e.errorResponse.errmsg : typeof e.message === 'string' ? e.message : String(err);
  const out: UpstreamRefusal = { errmsg };
  if (typeof e.code === 'number') out.code = e.code;
  if (typeof e.codeName === 'string') out.codeName = e.codeName;
  return out;
}

function keyEntries(spec: Document | undefined): [string, unknown][] {
  const key: unknown = spec?.key;
  if (key instanceof Map) return [...(key as Map<string, unknown>)];
  return typeof key === 'object' && key !== null ? Object.entries(key) : [];
}

/** `NotImplemented (238): Index option "expireAfterSeconds" is not implemented yet`. */
export function describeRefusal(r: UpstreamRefusal): string {
  return r.code !== undefined ? `${r.codeName ?? 'error'} (${r.code}): ${r.errmsg}` : r.errmsg;
}

/** What `unsupported` says for an index whose build the upstream refused. */
export function refusedDetail(r: UpstreamRefusal, replaced = false): string {
  return `${replaced ? 'the drifted index was dropped and ' : ''}the upstream cannot build this index: ${describeRefusal(r)}`;
}

/** What `unsupported` says for an index the upstream built without some of its options (FerretDB drops `sparse`). */
export function acceptedDetail(driftDetail: string | undefined): string {
  return `the upstream accepted the index but does not list it as specified (${driftDifferences(driftDetail)})`;
}

/** A drift's differences without the planner's note on what is done about them. */
export function driftDifferences(detail: string | undefined): string {
  return (detail ?? '').replace(/ \((will be replaced|reported only: [^)]*)\)$/, '');
}

/** The upstream's verdict on one managed index, valid for that spec on that upstream only. */
export interface Verdict {
  /** specFingerprint of the manifest's index when it was found. */
  spec: string;
  /** upstreamIdentity when it was found. */
  upstream: string;
  detail: string;
  reason?: UpstreamRefusal;
}

/** The manifest's index (keys in order and options as given), compared to know when its spec changed. */
export function specFingerprint(index: ManagedIndex): string {
  return canonical([index.keys, index.options]);
}

/** The key of a verdict within one app. */
export function verdictKey(collection: string, index: string): string {
  return JSON.stringify([collection, index]);
}

/**
 * The plan with each index that is to be built or rebuilt (create, drift) and that this upstream is
 * known not to build with the same spec turned into `unsupported` (no operation). An index the upstream
 * now lists as specified is ok whatever was known.
 */
export function markUnsupported(
  plan: IndexPlan,
  managed: ReadonlyMap<string, readonly ManagedIndex[]>,
  verdicts: ReadonlyMap<string, Verdict>,
  upstream: string,
): IndexPlan {
  if (verdicts.size === 0) return plan;
  const entries = plan.entries.map((e): PlannedIndex => {
    if (e.action !== 'create' && e.action !== 'drift') return e;
    const verdict = verdicts.get(verdictKey(e.collection, e.index));
    const index = managed.get(e.collection)?.find((i) => i.name === e.index);
    if (!verdict || !index || verdict.upstream !== upstream || verdict.spec !== specFingerprint(index)) return e;
    const { spec: _spec, detail: _detail, ...rest } = e;
    return { ...rest, action: 'unsupported', operation: 'none', detail: verdict.detail, ...(verdict.reason ? { reason: verdict.reason } : {}) };
  });
  return { ...plan, entries };
}

/**
 * Which upstream this is, as far as what it can build goes: product, version and topology, e.g.
 * `FerretDB v1.24.2 (MongoDB 7.0.42 wire), standalone` or `MongoDB 8.0.4, replica set rs0`.
 */
export async function upstreamIdentity(db: Db): Promise<string> {
  const admin = db.client.db('admin');
  const [build, hello] = await Promise.all([admin.command({ buildInfo: 1 }), admin.command({ hello: 1 }).catch(() => admin.command({ isMaster: 1 }))]);
  const version = typeof build.version === 'string' ? build.version : 'unknown';
  const product = typeof build.ferretdbVersion === 'string' ? `FerretDB ${build.ferretdbVersion} (MongoDB ${version} wire)` : `MongoDB ${version}`;
  const topology =
    typeof hello.setName === 'string' ? `replica set ${hello.setName}` : hello.msg === 'isdbgrid' ? 'sharded' : 'standalone';
  return `${product}, ${topology}`;
}

/**
 * The control collection where verdicts are kept for `mdb-runtime indexes` and the other proxies (a
 * proxy itself decides from what it found since it started). Like `_mdb_runtime_leases`, no app can
 * name it: apps' collections are `<slug>_<name>` and slugs start with a letter.
 */
export const UNSUPPORTED_COLLECTION = '_mdb_runtime_unsupported_indexes';

export interface UnsupportedRecord {
  /** JSON of [app, collection, index]. */
  _id: string;
  app: string;
  collection: string;
  index: string;
  spec: string;
  upstream: string;
  detail: string;
  reason?: UpstreamRefusal;
  /** Who found it (a proxy's lease holder id, or `mdb-runtime indexes`). */
  foundBy: string;
  foundAt: Date;
}

function recordId(app: string, collection: string, index: string): string {
  return JSON.stringify([app, collection, index]);
}

/** Keeps a verdict in the control collection (replacing an older one for that index). */
export async function saveVerdict(db: Db, app: string, collection: string, index: string, verdict: Verdict, foundBy: string): Promise<void> {
  const record: UnsupportedRecord = {
    _id: recordId(app, collection, index),
    app,
    collection,
    index,
    spec: verdict.spec,
    upstream: verdict.upstream,
    detail: verdict.detail,
    ...(verdict.reason ? { reason: verdict.reason } : {}),
    foundBy,
    foundAt: new Date(),
  };
  await db.collection<UnsupportedRecord>(UNSUPPORTED_COLLECTION).replaceOne({ _id: record._id }, record, { upsert: true });
}

/** Forgets the kept verdict of an index (it was built). */
export async function dropVerdict(db: Db, app: string, collection: string, index: string): Promise<void> {
  await db.collection<UnsupportedRecord>(UNSUPPORTED_COLLECTION).deleteOne({ _id: recordId(app, collection, index) });
}

/** The kept verdicts of one app, by verdictKey. */
export async function loadVerdicts(db: Db, app: string): Promise<Map<string, Verdict>> {
  const out = new Map<string, Verdict>();
  for (const r of await db.collection<UnsupportedRecord>(UNSUPPORTED_COLLECTION).find({ app }).toArray()) {
    if (typeof r.collection !== 'string' || typeof r.index !== 'string' || typeof r.spec !== 'string' || typeof r.upstream !== 'string') continue;
    out.set(verdictKey(r.collection, r.index), {
      spec: r.spec,
      upstream: r.upstream,
      detail: typeof r.detail === 'string' ? r.detail : 'the upstream cannot build this index',
      ...(r.reason && typeof r.reason.errmsg === 'string' ? { reason: r.reason } : {}),
    });
  }
  return out;
}
