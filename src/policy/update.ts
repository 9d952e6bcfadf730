import { commandError } from './errors.js';
import { hideTagInExpression } from './expression.js';
import { bsonTypeName, isDoc, type AppScope, type Doc } from './scope.js';

/** Stages the server accepts in an update pipeline. */
const UPDATE_PIPELINE_STAGES = new Set(['$addFields', '$set', '$project', '$unset', '$replaceRoot', '$replaceWith']);

/**
 * Every update operator the server knows. Each takes a document of paths; `$rename`'s values are
 * paths too.
 */
const UPDATE_OPERATORS = new Set([
  '$set', '$setOnInsert', '$unset', '$inc', '$mul', '$min', '$max', '$rename', '$currentDate',
  '$push', '$addToSet', '$pop', '$pull', '$pullAll', '$bit',
]);

/**
 * Whether an update path touches the top-level tag: its first segment is the tag field, which covers
 * "app_id", "app_id.x", and the positional forms "app_id.$", "app_id.$[]", "app_id.$[id]".
 */
function touchesTag(scope: AppScope, path: string): boolean {
  return path === scope.tagField || path.startsWith(scope.tagField + '.');
}

function immutable(scope: AppScope): never {
  throw commandError(
    'ImmutableField',
    `Performing an update on the path '${scope.tagField}' would modify the immutable field '${scope.tagField}'`,
  );
}

/**
 * Guards the `u` of an update statement (or findAndModify's `update`) so the write keeps the app's tag:
 * - operator updates may not touch the tag, except setting it to the app's own value;
 * - replacement documents get the tag (or must already carry the app's value);
 * - pipeline updates end with a stage that sets the tag, whatever the stages before did; their
 *   expressions see the document as the app does (expression.ts).
 * An operand it cannot read as the server would (not a document, a `$rename` target that is not a
 * string) is refused here with the server's error, never passed on unchecked.
 */
export function guardUpdate(scope: AppScope, u: unknown, field: string): Doc | Doc[] {
  if (Array.isArray(u)) return guardPipelineUpdate(scope, u, field);
  if (isReplacement(u)) return stampReplacement(scope, u, 'ImmutableField');
  if (!isDoc(u)) {
    throw commandError('FailedToParse', `${field}: update must be an object or a pipeline, found ${bsonTypeName(u)}`);
  }
  return guardOperatorUpdate(scope, u, field);
}

/**
 * Whether an update's `u` is a replacement document rather than operators or a pipeline: a document
 * whose first field is not an operator (`{}` replaces too), as the server decides. The one test for
 * it: the policy's guard and the handlers sizing replacements for the session's limits ask it.
 */
export function isReplacement(u: unknown): u is Doc {
  if (!isDoc(u)) return false;
  const first = Object.keys(u)[0];
  return first === undefined || !first.startsWith('$');
}

function guardOperatorUpdate(scope: AppScope, u: Doc, field: string): Doc {
  for (const [op, args] of Object.entries(u)) {
    if (!op.startsWith('$')) {
      throw commandError('FailedToParse', `${field}: unknown modifier: ${op}. Expected a valid update modifier or pipeline-style update specified as an array`);
    }
    if (!UPDATE_OPERATORS.has(op)) throw commandError('FailedToParse', `${field}: Unknown modifier: ${op}`);
    if (!isDoc(args)) {
      throw commandError(
        'FailedToParse',
        `Modifiers operate on fields but we found type ${bsonTypeName(args)} instead. For example: {$mod: {<field>: ...}} not {${op}: ...}`,
      );
    }
    for (const [path, value] of Object.entries(args)) {
      if (op === '$rename') {
        if (typeof value !== 'string') throw commandError('BadValue', `The 'to' field for $rename must be a string: ${path}: ${bsonTypeName(value)}`);
        if (touchesTag(scope, value)) immutable(scope);
      }
      if (!touchesTag(scope, path)) continue;
      // Setting the tag to the app's own value changes nothing and is what an honest replacement-by-$set does.
      const setsOwnValue = (op === '$set' || op === '$setOnInsert') && path === scope.tagField && value === scope.slug;
      if (!setsOwnValue) immutable(scope);
    }
  }
  return u;
}

function guardPipelineUpdate(scope: AppScope, stages: unknown[], field: string): Doc[] {
  const out: Doc[] = [];
  for (const stage of stages) {
    if (!isDoc(stage)) throw commandError('FailedToParse', `${field}: each update pipeline stage must be an object`);
    const names = Object.keys(stage);
    if (names.length !== 1 || !UPDATE_PIPELINE_STAGES.has(names[0]!)) {
      throw commandError(
        'InvalidOptions',
        `${field}: ${names.join(', ') || 'an empty stage'} is not allowed to be used within an update`,
      );
    }
    out.push(hideTagInStage(scope, names[0]!, stage));
  }
  // Whatever the stages did to the tag (set, unset, replaced the root), the document leaves with ours.
  out.push({ $set: { [scope.tagField]: { $literal: scope.slug } } });
  return out;
}

/**
 * An update pipeline stage whose expressions see the document without the tag. The tag itself stays
 * where it is in the document (an update that changes nothing for the app changes nothing stored, and
 * nModified says so): a new root that is the document itself, or merges it at the top level, keeps it
 * there for the final stage to set.
 */
function hideTagInStage(scope: AppScope, name: string, stage: Doc): Doc {
  const arg = stage[name];
  switch (name) {
    case '$unset':
      return stage; // field names, not expressions
    case '$replaceWith':
      return { $replaceWith: hideTagInRoot(scope, arg) };
    case '$replaceRoot':
      return isDoc(arg) ? { $replaceRoot: { ...arg, newRoot: hideTagInRoot(scope, arg.newRoot) } } : stage;
    default: {
      const hidden = hideTagInExpression(scope, arg);
      return hidden === arg ? stage : { [name]: hidden };
    }
  }
}

function hideTagInRoot(scope: AppScope, root: unknown): unknown {
  if (root === '$$ROOT' || root === '$$CURRENT') return root;
  if (isDoc(root) && Object.keys(root).length === 1 && Array.isArray(root.$mergeObjects)) {
    return { $mergeObjects: root.$mergeObjects.map((r) => hideTagInRoot(scope, r)) };
  }
  return hideTagInExpression(scope, root);
}

/**
 * Adds the tag to a document the app writes whole (replacement, upsert replacement), or checks that the
 * tag it carries is the app's own. `code` is ImmutableField for updates, BadValue for inserts.
 */
export function stampReplacement(scope: AppScope, doc: Doc, code: 'ImmutableField' | 'BadValue'): Doc {
  if (!Object.prototype.hasOwnProperty.call(doc, scope.tagField)) return { ...doc, [scope.tagField]: scope.slug };
  if (doc[scope.tagField] === scope.slug) return doc;
  if (code === 'ImmutableField') immutable(scope);
  throw commandError('BadValue', `field '${scope.tagField}' is set by mdb-runtime and must be '${scope.slug}' or absent`);
}
