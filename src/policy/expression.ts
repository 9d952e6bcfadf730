import { isDoc, type AppScope, type Doc } from './scope.js';

/**
 * Aggregation expressions that a command evaluates against stored documents — `$expr` in filters,
 * computed find projections, `$merge`'s `let` — see the tag, which the app's documents do not have.
 * These rewrites make them see documents as the app does (docs/security.md, "Tag hidden"): the whole
 * document (`$$ROOT`, `$$CURRENT`, `$getField`'s default input) without the tag, and a path to the tag
 * (`$app_id`, `$$ROOT.app_id...`) missing. Nothing changes when the manifest exposes the tag.
 */
export function hideTagInExpression(scope: AppScope, expr: unknown): unknown {
  if (scope.exposeTag) return expr;
  return hide(scope.tagField, expr);
}

/** The document without the tag, as an expression (`$unsetField`, MongoDB 5.0+). */
function without(tag: string, input: string): Doc {
  return { $unsetField: { field: tag, input } };
}

/** The expression with the tag hidden; `expr` itself when nothing in it reads the tag. */
function hide(tag: string, expr: unknown): unknown {
  if (typeof expr === 'string') return hidePath(tag, expr);
  if (Array.isArray(expr)) {
    const out = expr.map((e) => hide(tag, e));
    return out.some((e, i) => e !== expr[i]) ? out : expr;
  }
  if (!isDoc(expr)) return expr;
  const keys = Object.keys(expr);
  if (keys.length === 1 && keys[0] === '$literal') return expr;
  if (keys.length === 1 && keys[0] === '$getField') {
    // `{$getField: name}` and `{$getField: {field}}` read $$CURRENT.
    const arg = expr.$getField;
    const spec: Doc = isDoc(arg) && 'field' in arg ? { ...arg } : { field: arg };
    spec.input = spec.input === undefined ? without(tag, '$$CURRENT') : hide(tag, spec.input);
    spec.field = hide(tag, spec.field);
    return { $getField: spec };
  }
  let out: Doc | undefined;
  for (const key of keys) {
    const next = hide(tag, expr[key]);
    if (next !== expr[key]) (out ??= { ...expr })[key] = next;
  }
  return out ?? expr;
}

function hidePath(tag: string, s: string): unknown {
  if (!s.startsWith('$')) return s;
  for (const root of ['$$ROOT', '$$CURRENT']) {
    if (s === root) return without(tag, root);
    if (s === `${root}.${tag}` || s.startsWith(`${root}.${tag}.`)) return '$$REMOVE';
  }
  if (s === `$${tag}` || s.startsWith(`$${tag}.`)) return '$$REMOVE';
  return s;
}

/** A filter's `$expr` conditions (at the top level and under $and/$or/$nor) made to see the app's documents. */
export function hideTagInFilter(scope: AppScope, filter: unknown): unknown {
  if (scope.exposeTag || !isDoc(filter)) return filter;
  let out: Doc | undefined;
  for (const [key, value] of Object.entries(filter)) {
    let next = value;
    if (key === '$expr') next = hide(scope.tagField, value);
    else if ((key === '$and' || key === '$or' || key === '$nor') && Array.isArray(value)) {
      const list = value.map((v) => hideTagInFilter(scope, v));
      if (list.some((v, i) => v !== value[i])) next = list;
    }
    if (next !== value) (out ??= { ...filter })[key] = next;
  }
  return out ?? filter;
}

/** Projection operators of find whose arguments are not aggregation expressions. */
const PROJECTION_OPERATORS = new Set(['$slice', '$elemMatch', '$meta']);

/** A find projection's computed fields made to see the app's documents. */
export function hideTagInProjection(scope: AppScope, projection: unknown): unknown {
  if (scope.exposeTag || !isDoc(projection)) return projection;
  let out: Doc | undefined;
  for (const [key, value] of Object.entries(projection)) {
    let next = value;
    if (typeof value === 'string') next = hide(scope.tagField, value);
    else if (isDoc(value)) {
      const first = Object.keys(value)[0];
      if (first === undefined || PROJECTION_OPERATORS.has(first)) continue;
      next = first.startsWith('$') ? hide(scope.tagField, value) : hideTagInProjection(scope, value);
    } else if (Array.isArray(value)) next = hide(scope.tagField, value);
    if (next !== value) (out ??= { ...projection })[key] = next;
  }
  return out ?? projection;
}
