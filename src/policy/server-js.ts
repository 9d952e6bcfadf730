import { Code } from 'bson';
import { commandError } from './errors.js';

/** Operators that run JavaScript on the server (DESIGN.md rule 6). */
const SERVER_JS_OPERATORS = new Set(['$where', '$function', '$accumulator']);

/**
 * Refuses server-side JavaScript anywhere in `value`: the `$where`, `$function` and `$accumulator`
 * operators at any depth, and BSON Code values. QueryFeatureNotAllowed (224), as a server configured
 * with javascriptEnabled: false answers. The walk is iterative: depth was bounded at the byte level.
 */
export function refuseServerJavaScript(value: unknown, where: string): void {
  const stack: unknown[] = [value];
  while (stack.length > 0) {
    const v = stack.pop();
    if (v === null || typeof v !== 'object') continue;
    if (v instanceof Code) {
      throw commandError('QueryFeatureNotAllowed', `${where}: JavaScript code values are not allowed by mdb-runtime`);
    }
    if ('_bsontype' in v || v instanceof Date || v instanceof Uint8Array) continue;
    if (Array.isArray(v)) {
      for (const item of v) stack.push(item);
      continue;
    }
    const doc = v as Record<string, unknown>;
    // for...in over a decoded document (a plain object, own enumerable keys only): no entries array per level.
    for (const key in doc) {
      if (SERVER_JS_OPERATORS.has(key)) {
        throw commandError('QueryFeatureNotAllowed', `${where}: ${key} is not allowed: mdb-runtime refuses server-side JavaScript`);
      }
      stack.push(doc[key]);
    }
  }
}
