import { logicalCollection } from './namespace.js';
import { isDoc, type AppScope, type Doc } from './scope.js';

/**
 * A view's pipeline as the app wrote it, from the one stored upstream: the inverse of what `create`
 * does to it (handlers/collections.ts, pipeline.ts `scopePipeline`) — the tag `$match` where documents
 * enter (or the tag condition joined to the app's own leading `$match`), the `$unset` of the tag after
 * it in sub-pipelines, the `$set` of the tag that ends the view, and physical collection names. So
 * listCollections shows, and its filter sees, what a dedicated database would hold.
 *
 * A few inputs have the same stored form and come back as one of them: `[{$match: {}}]` as `[]`, a
 * `$unionWith` without a sub-pipeline as its string form, a condition on the tag equal to the app's own
 * slug as no condition. A pipeline that does not end with the proxy's `$set` (a view created around
 * the proxy) is returned as stored.
 */
export function appViewPipeline(scope: AppScope, stored: unknown): unknown {
  if (!Array.isArray(stored) || stored.length === 0 || !isStamp(scope, stored[stored.length - 1])) return stored;
  return unscope(scope, stored.slice(0, -1), { readsCollection: true, unsetAfterEntry: false });
}

interface Options {
  readsCollection: boolean;
  /** Sub-pipelines dropped the tag right after it was checked (unless the manifest exposed it then). */
  unsetAfterEntry: boolean;
}

function isStamp(scope: AppScope, stage: unknown): boolean {
  if (!isDoc(stage) || Object.keys(stage).length !== 1 || !isDoc(stage.$set)) return false;
  const set = stage.$set;
  const value = set[scope.tagField];
  return Object.keys(set).length === 1 && isDoc(value) && Object.keys(value).length === 1 && value.$literal === scope.slug;
}

function isTagMatch(scope: AppScope, stage: unknown): boolean {
  if (!isDoc(stage) || Object.keys(stage).length !== 1 || !isDoc(stage.$match)) return false;
  const keys = Object.keys(stage.$match);
  return keys.length === 1 && keys[0] === scope.tagField && stage.$match[scope.tagField] === scope.slug;
}

const isTagUnset = (scope: AppScope, stage: unknown, field = scope.tagField): boolean =>
  isDoc(stage) && Object.keys(stage).length === 1 && stage.$unset === field;

const stageName = (stage: unknown): string => (isDoc(stage) ? (Object.keys(stage)[0] ?? '') : '');

function unscope(scope: AppScope, stages: unknown[], options: Options): unknown[] {
  let rest = stages;
  if (options.readsCollection) rest = unscopeEntry(scope, rest, options.unsetAfterEntry);
  const out: unknown[] = [];
  for (let i = 0; i < rest.length; i++) {
    const stage = rest[i];
    out.push(unscopeStage(scope, stage));
    // $graphLookup's results lose the tag in the stage the proxy put after it.
    if (stageName(stage) === '$graphLookup') {
      const as = (stage as Doc).$graphLookup;
      if (isDoc(as) && typeof as.as === 'string' && isTagUnset(scope, rest[i + 1], `${as.as}.${scope.tagField}`)) i++;
    }
  }
  return out;
}

/** The stages where documents enter, without the tag condition the proxy put there. */
function unscopeEntry(scope: AppScope, stages: unknown[], unsetAfter: boolean): unknown[] {
  const dropUnset = (rest: unknown[]): unknown[] => (unsetAfter && isTagUnset(scope, rest[0]) ? rest.slice(1) : rest);
  const first = stages[0];
  switch (stageName(first)) {
    case '$match': {
      if (isTagMatch(scope, first)) return dropUnset(stages.slice(1));
      const match = (first as Doc).$match as Doc;
      if (match[scope.tagField] !== scope.slug) return stages;
      return [{ $match: unscopeFilter(scope, match) ?? {} }, ...dropUnset(stages.slice(1))];
    }
    case '$geoNear': {
      const spec = (first as Doc).$geoNear;
      if (!isDoc(spec)) return stages;
      return [{ $geoNear: withFilter(spec, 'query', unscopeFilter(scope, spec.query)) }, ...dropUnset(stages.slice(1))];
    }
    case '$vectorSearch': {
      const spec = (first as Doc).$vectorSearch;
      if (!isDoc(spec) || !isTagMatch(scope, stages[1])) return stages;
      return [{ $vectorSearch: withFilter(spec, 'filter', unscopeFilter(scope, spec.filter)) }, ...dropUnset(stages.slice(2))];
    }
    case '$search':
      return isTagMatch(scope, stages[1]) ? [first, ...dropUnset(stages.slice(2))] : stages;
    default:
      return stages;
  }
}

function withFilter(spec: Doc, field: string, filter: Doc | undefined): Doc {
  const out: Doc = { ...spec };
  if (filter === undefined) delete out[field];
  else out[field] = filter;
  return out;
}

/** A filter without the tag equality the proxy added at its top level (`filter.ts` scopeFilter). */
function unscopeFilter(scope: AppScope, filter: unknown): Doc | undefined {
  if (!isDoc(filter)) return undefined;
  if (filter[scope.tagField] !== scope.slug) return filter;
  const { [scope.tagField]: _tag, ...rest } = filter;
  return Object.keys(rest).length === 0 ? undefined : rest;
}

function logicalName(scope: AppScope, name: unknown): unknown {
  return typeof name === 'string' ? (logicalCollection(scope, name) ?? name) : name;
}

function unscopeStage(scope: AppScope, stage: unknown): unknown {
  const name = stageName(stage);
  const spec = isDoc(stage) ? stage[name] : undefined;
  if (!isDoc(spec)) return stage;
  switch (name) {
    case '$lookup': {
      const out: Doc = { ...spec };
      if (spec.from !== undefined) out.from = logicalName(scope, spec.from);
      if (Array.isArray(spec.pipeline)) {
        const pipeline = unscope(scope, spec.pipeline, { readsCollection: spec.from !== undefined, unsetAfterEntry: true });
        // The proxy gives the equality form a sub-pipeline it did not have.
        if (pipeline.length === 0 && spec.localField !== undefined) delete out.pipeline;
        else out.pipeline = pipeline;
      }
      return { $lookup: out };
    }
    case '$graphLookup': {
      const out: Doc = { ...spec, from: logicalName(scope, spec.from) };
      return { $graphLookup: withFilter(out, 'restrictSearchWithMatch', unscopeFilter(scope, spec.restrictSearchWithMatch)) };
    }
    case '$unionWith': {
      const out: Doc = { ...spec };
      if (spec.coll !== undefined) out.coll = logicalName(scope, spec.coll);
      if (!Array.isArray(spec.pipeline)) return { $unionWith: out };
      out.pipeline = unscope(scope, spec.pipeline, { readsCollection: spec.coll !== undefined, unsetAfterEntry: true });
      // `{$unionWith: 'c'}` is stored with an added sub-pipeline holding only the tag filter.
      if ((out.pipeline as unknown[]).length === 0 && typeof out.coll === 'string' && Object.keys(out).length === 2) return { $unionWith: out.coll };
      return { $unionWith: out };
    }
    case '$facet': {
      const out: Doc = {};
      for (const [k, sub] of Object.entries(spec)) {
        out[k] = Array.isArray(sub) ? unscope(scope, sub, { readsCollection: false, unsetAfterEntry: false }) : sub;
      }
      return { $facet: out };
    }
    default:
      return stage;
  }
}
