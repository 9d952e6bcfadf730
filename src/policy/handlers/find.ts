import { Binary, Decimal128, Double, Int32, Long, ObjectId, Timestamp, UUID } from 'bson';
import { fieldSet, type CommandHandler, type CommandInput, type RewrittenCommand } from '../handler.js';
import { hideTagInProjection } from '../expression.js';
import { isDoc, type Doc } from '../scope.js';
import { onCollection, targetOf, withCollection } from './common.js';

/**
 * find: the filter is scoped to the app's documents; the reply is a cursor over them.
 *
 * The exact-_id fast path: a find whose filter is exactly `{_id: <plain value>}` (a point read, e.g. every
 * driver's findOne by _id) is sent with that filter as it is, so that the upstream can use its primary key
 * (MongoDB's IDHACK; FerretDB on SQLite uses its primary key only for exactly that filter), and the tag is
 * enforced on the reply instead: the cursor's view carries `checkTag`, and every batch of it (the first and
 * every getMore) keeps only the documents whose tag is exactly the app's slug (the argument is in
 * docs/security.md, "Why point reads may check the tag on the reply"). Only when the returned documents are sure to carry the tag, and the
 * result cannot differ from the scoped command's in a collection holding only the app's documents;
 * otherwise, and when explained, the filter is scoped as for every other read.
 */
export const find: CommandHandler = {
  fields: fieldSet(
    'filter', 'sort', 'projection', 'hint', 'skip', 'limit', 'batchSize', 'singleBatch', 'max', 'min', 'returnKey',
    'showRecordId', 'tailable', 'noCursorTimeout', 'awaitData', 'allowPartialResults', 'collation', 'allowDiskUse', 'let',
  ),
  rewrite(raw) {
    // Computed fields of the projection see documents as the app does (expression.ts).
    const projection = hideTagInProjection(raw.scope, raw.body.projection);
    const input = projection === raw.body.projection ? raw : { ...raw, body: { ...raw.body, projection } };
    return exactIdFind(input) ?? onCollection(input, 'read', { filter: 'filter', reply: 'documents' });
  },
};

/**
 * Fields that rule the fast path out when present with any value but `false`: `returnKey` returns index
 * keys (no tag to check); `collation` can make one `_id` match several documents; `hint`, `min`, `max`
 * choose an index or bounds whose interplay with the missing tag condition is not worth reasoning about
 * (a point read never needs them); tailable and awaitData cursors are for capped collections.
 */
const RULED_OUT = ['returnKey', 'collation', 'hint', 'min', 'max', 'tailable', 'awaitData'] as const;

/**
 * The bson classes (promoteValues: false) of plain `_id` values an exact lookup may use, by prototype:
 * a document with a field named `_bsontype` is not one of them (scope.ts, isDoc).
 */
const PLAIN_ID_TYPES: ReadonlySet<unknown> = new Set<unknown>([ObjectId, Int32, Double, Long, Decimal128, Binary, UUID, Timestamp].map((c) => c.prototype));

/**
 * Whether `filter` is exactly `{_id: v}` with `v` a plain value: a string, boolean, number, date, ObjectId,
 * binary (UUIDs included) or timestamp. Not a document (an operator expression, or an embedded `_id`
 * compared as a whole document), an array, a regex, null or undefined, MinKey/MaxKey, code or symbols:
 * those are not point reads, or not ones worth a second code path.
 */
export function isExactIdFilter(filter: unknown): boolean {
  if (!isDoc(filter)) return false;
  const keys = Object.keys(filter);
  if (keys.length !== 1 || keys[0] !== '_id') return false;
  const v = filter._id;
  switch (typeof v) {
    case 'string':
    case 'boolean':
    case 'number':
      return true;
    case 'object':
      if (v === null) return false;
      if (v instanceof Date) return true;
      return PLAIN_ID_TYPES.has(Object.getPrototypeOf(v));
    default:
      return false;
  }
}

/** A projection value that only includes (truthy) or excludes (falsy) a field; undefined for anything else. */
function projectionFlag(v: unknown): boolean | undefined {
  if (typeof v === 'boolean') return v;
  let n: number | undefined;
  if (typeof v === 'number') n = v;
  else if (v instanceof Int32 || v instanceof Double) n = v.valueOf();
  else if (v instanceof Long) n = v.toNumber();
  return n === undefined || Number.isNaN(n) ? undefined : n !== 0;
}

/** What the fast path sends as the projection, and whether the tag must then be hidden even if exposed. */
interface CheckedProjection {
  /** The projection to send; `undefined` for none. */
  readonly projection: unknown;
  readonly hideTag: boolean;
}

/**
 * The app's projection made to return the tag, or undefined when that cannot be done without changing
 * what the app gets (then the fast path is not taken):
 * - none, `{}`, or an exclusion projection that leaves the tag: unchanged;
 * - an inclusion projection (a field included by a literal flag; computed fields and operators may come
 *   beside it): `<tag>: 1` added, hidden again in the reply;
 * - an exclusion projection that excludes the tag: that exclusion dropped (when what is left is still an
 *   exclusion projection or empty), hidden again in the reply;
 * - the tag already included: unchanged.
 * Anything else (operators without an included field, which may be either mode; an aggregation operator
 * anywhere; a computed or dotted tag field; `$`-keys; a mix the server refuses) falls back.
 */
export function projectionForCheck(projection: unknown, tag: string): CheckedProjection | undefined {
  if (projection === undefined || projection === null) return { projection, hideTag: false };
  if (!isDoc(projection)) return undefined;
  // The projection runs on every document with that _id, the app's or not: an operator that fails on
  // another's (a conversion, a division) would fail the app's read, and could quote that document.
  if (Object.values(projection).some(evaluatesOperator)) return undefined;
  let included = 0;
  let excluded = 0;
  let computed = 0;
  let tagFlag: boolean | undefined;
  for (const [key, value] of Object.entries(projection)) {
    const flag = projectionFlag(value);
    if (key === tag) {
      if (flag === undefined) return undefined;
      tagFlag = flag;
    } else if (key.startsWith('$') || key.startsWith(`${tag}.`) || tag.startsWith(`${key}.`)) {
      return undefined;
    } else if (key === '_id') {
      if (flag === undefined) computed++;
    } else if (flag === undefined) computed++;
    else if (flag) included++;
    else excluded++;
  }
  const idFlag = projectionFlag(projection._id);
  if (tagFlag === true) return { projection, hideTag: false };
  if (tagFlag === false) {
    // Dropping the tag's exclusion must leave an exclusion projection (or nothing): `{_id: 1, tag: 0}`
    // would become `{_id: 1}`, an inclusion.
    if (included > 0 || computed > 0 || (excluded === 0 && idFlag === true)) return undefined;
    const { [tag]: _dropped, ...rest } = projection;
    return { projection: rest, hideTag: true };
  }
  if (included > 0) return { projection: { ...projection, [tag]: 1 }, hideTag: true };
  if (computed > 0) return undefined;
  if (excluded > 0) return { projection, hideTag: false };
  // Only `_id`, or nothing: `{_id: 1}` is an inclusion projection, `{_id: 0}` and `{}` are not.
  if (idFlag === true) return { projection: { ...projection, [tag]: 1 }, hideTag: true };
  return { projection, hideTag: false };
}

/** Projection operators that only select, and constants: they cannot fail on a document. */
const SELECTING = new Set(['$slice', '$elemMatch', '$meta', '$literal']);

/** Whether a projection value evaluates an aggregation operator (which may fail on some document). */
function evaluatesOperator(value: unknown): boolean {
  if (Array.isArray(value)) return value.some(evaluatesOperator);
  if (!isDoc(value)) return false;
  for (const [key, child] of Object.entries(value)) {
    if (key.startsWith('$') ? !SELECTING.has(key) : evaluatesOperator(child)) return true;
  }
  return false;
}

/** The fast-path rewrite of a find, or undefined when it does not apply. */
function exactIdFind(input: CommandInput): RewrittenCommand | undefined {
  if (input.explained === true) return undefined;
  const body = input.body;
  if (!isExactIdFilter(body.filter)) return undefined;
  for (const field of RULED_OUT) if (body[field] !== undefined && body[field] !== false) return undefined;
  const checked = projectionForCheck(body.projection, input.scope.tagField);
  if (!checked) return undefined;
  const { logical, physical } = targetOf(input);
  const out: Doc = withCollection(input, physical);
  if (checked.projection !== body.projection) out.projection = checked.projection;
  return {
    body: out,
    sequences: [],
    access: [{ action: 'read', collection: logical }],
    reply: {
      kind: 'cursor',
      view: checked.hideTag ? { kind: 'documents', appDb: input.appDb, checkTag: true, hideTag: true } : { kind: 'documents', appDb: input.appDb, checkTag: true },
      collections: [logical],
    },
  };
}
