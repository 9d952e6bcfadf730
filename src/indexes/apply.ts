import type { Db, Document } from 'mongodb';
import type { ManagedIndex } from '../apps/manifest-types.js';
import { physicalNameOf, planIndexes, planScope, type EffectivePolicy, type IndexPlan, type PlannedIndex } from './plan.js';
import type { UpstreamRefusal } from './types.js';
import { unsupportedRefusal } from './unsupported.js';

/**
 * Reading the upstream's indexes and carrying out a plan: shared by the background
 * reconciler and `mdb-runtime indexes --apply`. Every operation is one command for one index, so one
 * failing build (a unique index over duplicates) fails alone.
 */

/** NamespaceNotFound: listIndexes on a collection that does not exist. */
const NAMESPACE_NOT_FOUND = 26;

/** listIndexes of each managed collection of an app, by the app's collection name (null: no such collection). */
export async function listManagedIndexes(
  db: Db,
  slug: string,
  tagField: string,
  managedIndexes: ReadonlyMap<string, readonly ManagedIndex[]>,
): Promise<Map<string, Document[] | null>> {
  const scope = planScope(slug, db.databaseName, tagField);
  const actual = new Map<string, Document[] | null>();
  for (const collection of managedIndexes.keys()) {
    const where = physicalNameOf(scope, collection);
    if ('error' in where) continue; // planned as an error, never listed
    try {
      actual.set(collection, await db.collection(where.physical).listIndexes().toArray());
    } catch (err) {
      if ((err as { code?: unknown }).code === NAMESPACE_NOT_FOUND) actual.set(collection, null);
      else throw err;
    }
  }
  return actual;
}

/** Lists the app's managed collections and plans them. */
export async function planApp(
  db: Db,
  app: { slug: string; managedIndexes: ReadonlyMap<string, readonly ManagedIndex[]> },
  tagField: string,
  policy: EffectivePolicy,
): Promise<IndexPlan> {
  const actual = await listManagedIndexes(db, app.slug, tagField, app.managedIndexes);
  return planIndexes({ slug: app.slug, managedIndexes: app.managedIndexes, policy, database: db.databaseName, tagField, actual });
}

/** The step an operation is at, for logs and progress lines. */
export type Step = 'drop' | 'create';

export interface ApplyEvents {
  /** An index build (create, or the rebuild of a replace) or a drop starts. */
  start?(entry: PlannedIndex, step: Step): void;
  finish?(entry: PlannedIndex, step: Step, durationMS: number): void;
  fail?(entry: PlannedIndex, step: Step, error: string, durationMS: number): void;
  /** The upstream cannot build the index (src/indexes/unsupported.ts): not a failure of the app. */
  unsupported?(entry: PlannedIndex, refusal: UpstreamRefusal, durationMS: number): void;
}

export interface ApplyOutcome {
  entry: PlannedIndex;
  ok: boolean;
  /** Why it failed ("E11000 ...", with a hint for duplicates). */
  error?: string;
  /** Set when the build failed because the upstream cannot build such an index. */
  unsupported?: UpstreamRefusal;
  /** For unsupported on a replace: the drifted index was dropped before the rebuild was refused. */
  dropped?: boolean;
}

export interface ApplyResult {
  outcomes: ApplyOutcome[];
  /** True when `shouldContinue` said stop before every operation was carried out. */
  aborted: boolean;
}

/**
 * Carries out the plan's operations: prunes first (an unmanaged twin of a managed index must be gone
 * before the managed one is built), then replaces (drop, then build), then creates. `shouldContinue` is
 * asked before each operation (the lease is still ours, the proxy is not stopping).
 */
export async function applyPlan(
  db: Db,
  plan: IndexPlan,
  options: { events?: ApplyEvents; shouldContinue?: () => boolean } = {},
): Promise<ApplyResult> {
  const { events = {}, shouldContinue = () => true } = options;
  const order: PlannedIndex['operation'][] = ['drop', 'replace', 'create'];
  const todo = order.flatMap((op) => plan.entries.filter((e) => e.operation === op));
  const outcomes: ApplyOutcome[] = [];
  for (const entry of todo) {
    if (!shouldContinue()) return { outcomes, aborted: true };
    let refusal: UpstreamRefusal | undefined;
    const step = async (name: Step, run: () => Promise<unknown>): Promise<string | undefined> => {
      const started = performance.now();
      events.start?.(entry, name);
      try {
        await run();
        events.finish?.(entry, name, Math.round(performance.now() - started));
        return undefined;
      } catch (err) {
        const message = describeError(err);
        refusal = name === 'create' ? unsupportedRefusal(err, entry.spec) : undefined;
        if (refusal) events.unsupported?.(entry, refusal, Math.round(performance.now() - started));
        else events.fail?.(entry, name, message, Math.round(performance.now() - started));
        return message;
      }
    };
    const drop = () => db.command({ dropIndexes: entry.physicalCollection, index: entry.index });
    const create = () => db.command({ createIndexes: entry.physicalCollection, indexes: [entry.spec] });
    let error: string | undefined;
    if (entry.operation === 'drop') {
      error = await step('drop', drop);
    } else if (entry.operation === 'create') {
      error = await step('create', create);
    } else {
      const dropError = await step('drop', drop);
      if (dropError !== undefined) error = `dropping the drifted index failed: ${dropError}`;
      else {
        const createError = await step('create', create);
        if (createError !== undefined) error = `the drifted index was dropped but rebuilding it failed: ${createError}`;
      }
    }
    const done = refusal as UpstreamRefusal | undefined; // set inside step(): not narrowed here
    if (done) outcomes.push({ entry, ok: false, error: error ?? done.errmsg, unsupported: done, ...(entry.operation === 'replace' ? { dropped: true } : {}) });
    else outcomes.push(error === undefined ? { entry, ok: true } : { entry, ok: false, error });
  }
  return { outcomes, aborted: false };
}

/** A server error as a person reads it: codeName (code): message, with a hint for duplicate keys. */
export function describeError(err: unknown): string {
  const e = err as { code?: unknown; codeName?: unknown; message?: unknown };
  const message = typeof e.message === 'string' ? e.message : String(err);
  const code = typeof e.code === 'number' ? e.code : undefined;
  const codeName = typeof e.codeName === 'string' ? e.codeName : undefined;
  const head = code !== undefined ? `${codeName ?? 'error'} (${code}): ` : '';
  // MongoDB answers DuplicateKey (11000); FerretDB's SQLite backend an InternalError naming the constraint.
  const duplicates = code === 11000 || /UNIQUE constraint failed|duplicate key/i.test(message);
  return `${duplicates ? 'the collection holds documents with the same values for this unique index; remove the duplicates and it is built on the next pass: ' : ''}${head}${message}`;
}
