import { commandError } from './errors.js';
import { hideTagInFilter } from './expression.js';
import { typeName } from './namespace.js';
import { isDoc, type AppScope, type Doc } from './scope.js';

/** The condition every read and write filter is ANDed with: `{ <tag>: <slug> }`. */
export function tagCondition(scope: AppScope): Doc {
  return { [scope.tagField]: scope.slug };
}

/**
 * Scopes a query filter to the app's documents. The tag condition is always a top-level equality
 * (keeping `$text`, `$near` and friends at the top level where the server requires them): an upsert
 * takes the fields of the document it inserts from the filter's top-level equalities, and servers
 * differ on equalities inside `$and` (FerretDB ignores them: with the tag there, it inserted a document
 * without any tag). A filter whose tag condition is exactly ours stays as it is; any other condition
 * the app puts on the tag moves into `$and`, where it can narrow ours but never replace it, and the rest
 * of the filter stays where it was. Its `$expr` conditions see documents as the app does (expression.ts).
 */
export function scopeFilter(scope: AppScope, raw: unknown, field: string): Doc {
  if (raw === undefined || raw === null) return tagCondition(scope);
  if (!isDoc(raw)) {
    throw commandError('TypeMismatch', `BSON field '${field}' is the wrong type '${typeName(raw)}', expected type 'object'`);
  }
  const filter = hideTagInFilter(scope, raw) as Doc;
  const tag = scope.tagField;
  if (!Object.prototype.hasOwnProperty.call(filter, tag)) return { ...filter, [tag]: scope.slug };
  if (filter[tag] === scope.slug) return filter;
  const { [tag]: theirs, ...rest } = filter;
  const and = rest.$and;
  // A malformed $and is the server's to report: the whole filter goes under a new one.
  if (and !== undefined && !Array.isArray(and)) return { $and: [filter], [tag]: scope.slug };
  return { ...rest, $and: [...(and ?? []), { [tag]: theirs }], [tag]: scope.slug };
}
