import { commandError, locationError, unknownFieldError } from './errors.js';
import { physicalCollection, sameDatabase, typeName } from './namespace.js';
import { hideTagInExpression } from './expression.js';
import { scopeFilter, tagCondition } from './filter.js';
import { isDoc, type Access, type AppScope, type Doc } from './scope.js';

/** What rewriting a pipeline needs and what it learns (collections touched, for RBAC). */
export interface PipelineContext {
  readonly scope: AppScope;
  /** The database the app named in `$db`: targets must stay in it. */
  readonly appDb: string;
  readonly access: Access[];
}

type StageRewriter = (ctx: PipelineContext, arg: unknown, where: string) => Doc[];

/** Stages that transform the documents flowing through and touch no collection: allowed as they are. */
const PASS_THROUGH = [
  '$match', '$project', '$addFields', '$set', '$unset', '$group', '$sort', '$limit', '$skip', '$unwind',
  '$count', '$bucket', '$bucketAuto', '$sortByCount', '$replaceRoot', '$replaceWith', '$sample', '$redact',
  '$densify', '$fill', '$setWindowFields', '$documents', '$indexStats',
];

/** Stages that read or write other collections get their names mapped and their reads scoped. */
const STAGES: ReadonlyMap<string, StageRewriter> = new Map<string, StageRewriter>([
  ...PASS_THROUGH.map((name): [string, StageRewriter] => [name, (_ctx, arg) => [{ [name]: arg }]]),
  ['$lookup', rewriteLookup],
  ['$graphLookup', rewriteGraphLookup],
  ['$unionWith', rewriteUnionWith],
  ['$facet', rewriteFacet],
  ['$out', rewriteOut],
  ['$merge', rewriteMerge],
  ['$geoNear', checkGeoNear],
  ['$search', (_ctx, arg, where) => [{ $search: firstStageArg('$search', arg, where) }]],
  ['$vectorSearch', checkVectorSearch],
  ['$changeStream', rewriteChangeStream],
]);

/** Stages that are refused outright: they see other apps, the server, or its sessions (docs/security.md, "Refused stages"). */
const REFUSED_STAGES = new Set([
  '$currentOp', '$listSessions', '$listLocalSessions', '$planCacheStats', '$collStats', '$listSearchIndexes',
  '$shardedDataDistribution', '$listCatalog', '$listClusterCatalog', '$querySettings', '$queryStats',
  '$listSampledQueries', '$backupCursor', '$backupCursorExtend', '$changeStreamSplitLargeEvent',
  // Its result is metadata over every document the search matched: nothing can filter it afterwards,
  // wherever it appears (first in a pipeline, or inside a $facet, which gets no tag filter of its own).
  '$searchMeta',
]);

/** Stages the server requires first in a pipeline: the tag filter goes inside them, not before. */
const MUST_BE_FIRST = new Set(['$geoNear', '$search', '$vectorSearch', '$documents', '$changeStream']);

/**
 * First stages that read the collection themselves: only where the pipeline reads one, which is where
 * addTagFilter scopes them. Elsewhere ($facet, a sub-pipeline on $documents) nothing would.
 */
const READS_COLLECTION_ITSELF = new Set(['$geoNear', '$search', '$vectorSearch', '$changeStream']);

export interface ScopePipelineOptions {
  /** True when the pipeline reads a collection (aggregate on a collection, a $lookup sub-pipeline...). */
  readsCollection: boolean;
  /** True for the pipeline of an aggregate command on a collection: the only place a change stream may open. */
  changeStream?: boolean;
  /**
   * A view's stored pipeline keeps the tag in its output (queries on the view are scoped by it, and
   * the reply strips it); every other pipeline drops the tag right where documents enter, so no stage
   * ($group with $$ROOT, $facet, $lookup results...) ever shows it, unless the manifest exposes it.
   */
  view?: boolean;
}

/**
 * Rewrites an aggregation pipeline: every stage checked against the allow-list, every collection it
 * names mapped, and the tag filter put where documents enter from a collection (docs/security.md,
 * "Logical scoping, reads").
 */
export function scopePipeline(ctx: PipelineContext, pipeline: unknown, where: string, options: ScopePipelineOptions): Doc[] {
  if (!Array.isArray(pipeline)) {
    throw commandError('TypeMismatch', `${where}: pipeline must be an array, found ${typeName(pipeline)}`);
  }
  const out: Doc[] = [];
  pipeline.forEach((stage, i) => {
    const at = `${where}[${i}]`;
    if (!isDoc(stage)) throw commandError('TypeMismatch', `${at}: each pipeline stage must be an object`);
    const names = Object.keys(stage);
    if (names.length !== 1) {
      throw locationError(40323, `${at}: A pipeline stage specification object must contain exactly one field.`);
    }
    const name = names[0]!;
    if (REFUSED_STAGES.has(name)) throw commandError('Unauthorized', `${at}: ${name} is not allowed by mdb-runtime`);
    const rewrite = STAGES.get(name);
    if (!rewrite) throw locationError(40324, `${at}: Unrecognized pipeline stage name: '${name}'`);
    if (i > 0 && MUST_BE_FIRST.has(name)) {
      throw locationError(40602, `${at}: ${name} is only valid as the first stage in a pipeline`);
    }
    if (READS_COLLECTION_ITSELF.has(name) && !options.readsCollection) {
      throw locationError(40600, `${at}: ${name} is not allowed to be used here: it reads a collection and this pipeline reads none`);
    }
    if (name === '$changeStream' && options.changeStream !== true) {
      throw locationError(40600, `${at}: $changeStream is only valid as the first stage of an aggregate on a collection`);
    }
    out.push(...rewrite(ctx, stage[name], at));
  });
  if (!options.readsCollection) return out;
  return addTagFilter(ctx.scope, out, !options.view && !ctx.scope.exposeTag);
}

/**
 * Puts the tag condition where documents enter (a leading $match, or inside a stage that must be
 * first) and, with `hide`, drops the tag right after it.
 */
function addTagFilter(scope: AppScope, stages: Doc[], hide: boolean): Doc[] {
  const first = stages[0];
  const firstName = first ? Object.keys(first)[0]! : '';
  const match = { $match: tagCondition(scope) };
  const entering = (...head: Doc[]): Doc[] => [...head, ...(hide ? [{ $unset: scope.tagField }] : []), ...stages.slice(1)];
  switch (firstName) {
    case '$documents':
      return stages; // documents come from the pipeline itself, not a collection
    case '$geoNear': {
      const arg = firstStageArg(firstName, first![firstName], '$geoNear');
      return entering({ $geoNear: { ...arg, query: scopeFilter(scope, arg.query, '$geoNear.query') } });
    }
    case '$vectorSearch': {
      const arg = firstStageArg(firstName, first![firstName], '$vectorSearch');
      return entering({ $vectorSearch: { ...arg, filter: scopeFilter(scope, arg.filter, '$vectorSearch.filter') } }, match);
    }
    case '$search':
      // Atlas Search matches on its own index; the $match right after keeps only the app's documents.
      return entering(first!, match);
    case '$changeStream':
      // A collection-level change stream only sees the app's own physical collection.
      return stages;
    case '$match': {
      // The app's own leading $match takes the tag condition, before the tag is hidden: what MongoDB's
      // optimizer does anyway (adjacent $match stages coalesce, $match moves before $unset), done here
      // for upstreams that run every stage on every document (FerretDB). Not when the condition names
      // the tag: it must see documents as the app does, without one.
      const arg = first![firstName];
      if (!isDoc(arg) || mentions(arg, scope.tagField)) return [match, ...(hide ? [{ $unset: scope.tagField }] : []), ...stages];
      return entering({ $match: scopeFilter(scope, arg, '$match') });
    }
    default:
      return [match, ...(hide ? [{ $unset: scope.tagField }] : []), ...stages];
  }
}

/** Whether a $match condition may refer to `field`: as a key or path, or in a string ($expr paths). */
function mentions(value: unknown, field: string): boolean {
  if (typeof value === 'string') return value.includes(field);
  if (Array.isArray(value)) return value.some((v) => mentions(v, field));
  if (!isDoc(value)) return false;
  for (const key in value) if (key.includes(field) || mentions(value[key], field)) return true;
  return false;
}

function targetCollection(ctx: PipelineContext, target: unknown, where: string): string {
  if (isDoc(target)) {
    sameDatabase(ctx.appDb, target.db, `${where}.db`);
    return physicalCollection(ctx.scope, target.coll, `${where}.coll`);
  }
  return physicalCollection(ctx.scope, target, where);
}

function logical(target: unknown): string {
  return String(isDoc(target) ? target.coll : target);
}

function stageArg(arg: unknown, where: string): Doc {
  if (!isDoc(arg)) throw commandError('FailedToParse', `${where}: the stage argument must be an object, found ${typeName(arg)}`);
  return arg;
}

function rewriteLookup(ctx: PipelineContext, arg: unknown, where: string): Doc[] {
  const spec = stageArg(arg, where);
  const out: Doc = { ...spec };
  if (spec.from !== undefined) {
    out.from = targetCollection(ctx, spec.from, `${where}.from`);
    ctx.access.push({ action: 'read', collection: logical(spec.from) });
  }
  // Both forms (localField/foreignField and pipeline) get a scoped sub-pipeline: the equality form
  // with a pipeline is MongoDB 5.0+; a lookup without `from` reads only its own $documents.
  out.pipeline = scopePipeline(ctx, spec.pipeline ?? [], `${where}.pipeline`, { readsCollection: spec.from !== undefined });
  return [{ $lookup: out }];
}

function rewriteGraphLookup(ctx: PipelineContext, arg: unknown, where: string): Doc[] {
  const spec = stageArg(arg, where);
  ctx.access.push({ action: 'read', collection: logical(spec.from) });
  const stage = {
    $graphLookup: {
      ...spec,
      from: targetCollection(ctx, spec.from, `${where}.from`),
      restrictSearchWithMatch: scopeFilter(ctx.scope, spec.restrictSearchWithMatch, `${where}.restrictSearchWithMatch`),
    },
  };
  // Its results have no sub-pipeline to drop the tag in: drop it from the array it fills.
  const hide = !ctx.scope.exposeTag && typeof spec.as === 'string';
  return hide ? [stage, { $unset: `${String(spec.as)}.${ctx.scope.tagField}` }] : [stage];
}

function rewriteUnionWith(ctx: PipelineContext, arg: unknown, where: string): Doc[] {
  const spec: Doc = typeof arg === 'string' ? { coll: arg } : stageArg(arg, where);
  const out: Doc = { ...spec };
  if (spec.coll !== undefined) {
    out.coll = physicalCollection(ctx.scope, spec.coll, `${where}.coll`);
    ctx.access.push({ action: 'read', collection: String(spec.coll) });
  }
  if (spec.db !== undefined) sameDatabase(ctx.appDb, spec.db, `${where}.db`);
  delete out.db;
  out.pipeline = scopePipeline(ctx, spec.pipeline ?? [], `${where}.pipeline`, { readsCollection: spec.coll !== undefined });
  return [{ $unionWith: out }];
}

function rewriteFacet(ctx: PipelineContext, arg: unknown, where: string): Doc[] {
  const spec = stageArg(arg, where);
  const out: Doc = {};
  for (const [name, sub] of Object.entries(spec)) {
    // Facet pipelines work on the documents already in the pipeline; their own $lookups are scoped.
    out[name] = scopePipeline(ctx, sub, `${where}.${name}`, { readsCollection: false });
  }
  return [{ $facet: out }];
}

/** Before any stage that writes documents, the tag is forced to the app's value. */
function stampStage(scope: AppScope): Doc {
  return { $set: { [scope.tagField]: { $literal: scope.slug } } };
}

function rewriteOut(ctx: PipelineContext, arg: unknown, where: string): Doc[] {
  const spec: Doc = typeof arg === 'string' ? { coll: arg } : stageArg(arg, where);
  sameDatabase(ctx.appDb, spec.db, `${where}.db`);
  const coll = physicalCollection(ctx.scope, spec.coll, `${where}.coll`);
  ctx.access.push({ action: 'write', collection: String(spec.coll) });
  const out: Doc = { ...spec, db: ctx.scope.database, coll };
  return [stampStage(ctx.scope), { $out: out }];
}

function rewriteMerge(ctx: PipelineContext, arg: unknown, where: string): Doc[] {
  const spec: Doc = typeof arg === 'string' ? { into: arg } : stageArg(arg, where);
  const into = spec.into;
  const coll = targetCollection(ctx, into, `${where}.into`);
  ctx.access.push({ action: 'write', collection: logical(into) });
  const out: Doc = { ...spec, into: { db: ctx.scope.database, coll } };
  if (Array.isArray(spec.whenMatched)) {
    // A whenMatched pipeline rewrites the target document: it sees it without the tag, and it leaves
    // with the app's tag. Its variables ($$new by default) see the incoming document without the tag
    // stamped on it for the insert case.
    const hide = !ctx.scope.exposeTag;
    out.whenMatched = [...(hide ? [{ $unset: ctx.scope.tagField }] : []), ...(spec.whenMatched as unknown[]), stampStage(ctx.scope)];
    if (hide) out.let = isDoc(spec.let) ? hideTagInExpression(ctx.scope, spec.let) : { new: hideTagInExpression(ctx.scope, '$$ROOT') };
  }
  return [stampStage(ctx.scope), { $merge: out }];
}

/**
 * The argument of a stage the tag filter goes into (or right after): a document, or refused as the
 * server refuses a stage's non-object argument. addTagFilter rewrites only what this accepted.
 */
function firstStageArg(name: string, arg: unknown, where: string): Doc {
  if (!isDoc(arg)) throw locationError(10065, `${where}: invalid parameter: expected an object (${name})`);
  return arg;
}

/** Whether every key of `spec` is one of `known`, or the first that is not. */
function unknownKey(spec: Doc, known: ReadonlySet<string>): string | undefined {
  return Object.keys(spec).find((key) => !known.has(key));
}

/** The arguments $geoNear takes (MongoDB 8.0); any other is refused as the server refuses it. */
const GEO_NEAR_FIELDS = new Set(['near', 'distanceField', 'maxDistance', 'minDistance', 'distanceMultiplier', 'query', 'spherical', 'includeLocs', 'uniqueDocs', 'key']);

function checkGeoNear(_ctx: PipelineContext, arg: unknown, where: string): Doc[] {
  const spec = firstStageArg('$geoNear', arg, where);
  const unknown = unknownKey(spec, GEO_NEAR_FIELDS);
  if (unknown !== undefined) throw commandError('BadValue', `${where}: Unknown argument to $geoNear: ${unknown}`);
  if (spec.query !== undefined && !isDoc(spec.query)) throw commandError('TypeMismatch', `${where}: query must be an object`);
  return [{ $geoNear: spec }];
}

/** The fields of $vectorSearch (Atlas Vector Search). */
const VECTOR_SEARCH_FIELDS = new Set(['index', 'path', 'queryVector', 'numCandidates', 'limit', 'filter', 'exact']);

function checkVectorSearch(_ctx: PipelineContext, arg: unknown, where: string): Doc[] {
  const spec = firstStageArg('$vectorSearch', arg, where);
  const unknown = unknownKey(spec, VECTOR_SEARCH_FIELDS);
  if (unknown !== undefined) throw unknownFieldError('$vectorSearch', unknown);
  if (spec.filter !== undefined && !isDoc(spec.filter)) throw commandError('TypeMismatch', `${where}: $vectorSearch.filter must be an object`);
  return [{ $vectorSearch: spec }];
}

/**
 * The options of a collection change stream. `allChangesForCluster` may only say false; the server's
 * internal options (`allowToRunOnConfigDB`, `showSystemEvents`...) are refused as unknown.
 */
const CHANGE_STREAM_FIELDS = new Set([
  'resumeAfter', 'startAfter', 'startAtOperationTime', 'fullDocument', 'fullDocumentBeforeChange', 'showExpandedEvents',
  'allChangesForCluster',
]);

function rewriteChangeStream(_ctx: PipelineContext, arg: unknown, where: string): Doc[] {
  const spec = arg === undefined ? {} : firstStageArg('$changeStream', arg, where);
  if (spec.allChangesForCluster !== undefined && spec.allChangesForCluster !== false) {
    throw commandError('Unauthorized', `${where}: cluster-wide change streams are not allowed by mdb-runtime`);
  }
  const unknown = unknownKey(spec, CHANGE_STREAM_FIELDS);
  if (unknown !== undefined) throw unknownFieldError('$changeStream', unknown);
  return [{ $changeStream: spec }];
}
