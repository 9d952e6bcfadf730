import { commandError } from './errors.js';
import { typeName } from './namespace.js';
import { isDoc, type AppScope, type Doc } from './scope.js';

/** The condition every read and write filter is ANDed with: `{ <tag>: <slug> }`. */
export function tagCondition(scope: AppScope): Doc {
  return { [scope.tagField]: scope.slug };
}

/**
 * Scopes a query filter to the app's documents. The tag condition is added as a top-level equality
 * (keeping `$text`, `$near` and friends at the top level where the server requires them); a filter that
 * already names the tag field is wrapped in `$and` so the app's own condition cannot replace ours.
 * An equality on the tag also makes upserts insert the tag.
 */
export function scopeFilter(scope: AppScope, filter: unknown, field: string): Doc {
  if (filter === undefined || filter === null) return tagCondition(scope);
  if (!isDoc(filter)) {
    throw commandError('TypeMismatch', `BSON field '${field}' is the wrong type '${typeName(filter)}', expected type 'object'`);
  }
  if (!Object.prototype.hasOwnProperty.call(filter, scope.tagField)) return { ...filter, [scope.tagField]: scope.slug };
  return { $and: [filter, tagCondition(scope)] };
}
