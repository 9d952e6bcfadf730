/**
 * A small in-memory MongoDB "server" over mingo: bytes in (an OP_MSG body and its kind-1 sections), bytes
 * out (the reply body a server would send). It runs the commands the proxy forwards — find, getMore,
 * aggregate (with $lookup/$graphLookup/$unionWith reading sibling collections and $out/$merge writing
 * them), count, distinct, insert, update, delete, findAndModify — over databases held as maps of
 * collection name → BSON documents, so that "unchanged" can be checked byte for byte.
 *
 * It is the oracle of test/semantic: the same server runs the app's original command over a dedicated
 * database and the proxy's rewritten command over the shared one. Where mingo's behaviour differs from
 * MongoDB's in a way the proxy's rewrites depend on, this file implements the stage itself (marked
 * "mingo differs" below); everything else is mingo's.
 */
import { deserialize, Long, ObjectId, serialize, type Document } from 'bson';
import { Aggregator } from 'mingo/aggregator';
import { Context, evalExpr } from 'mingo/core';
import type { Iterator } from 'mingo/lazy';
import * as accumulatorOperators from 'mingo/operators/accumulator';
import * as expressionOperators from 'mingo/operators/expression';
import * as pipelineOperators from 'mingo/operators/pipeline';
import * as projectionOperators from 'mingo/operators/projection';
import * as queryOperators from 'mingo/operators/query';
import * as windowOperators from 'mingo/operators/window';
import { Query } from 'mingo/query';
import type { AnyObject, CollationSpec, Options } from 'mingo/types';
import { update as applyOperators } from 'mingo/updater';
import { isEqual, resolve, setValue } from 'mingo/util';
import type { DocumentSequence } from '../../src/wire/opmsg.js';

export type Doc = Record<string, unknown>;

/** An error the server answers with `{ok: 0, errmsg, code, codeName}`. */
export class ServerError extends Error {
  constructor(
    readonly code: number,
    readonly codeName: string,
    message: string,
  ) {
    super(message);
  }
}

const fail = (code: number, codeName: string, message: string): never => {
  throw new ServerError(code, codeName, message);
};

export const isPlainDoc = (v: unknown): v is Doc =>
  typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof Date) && !(v instanceof RegExp) && !('_bsontype' in v);

/** What a server does with documents: JS values (promoted), as mingo wants them. */
export function decodeStored(bytes: Buffer): Doc {
  return deserialize(bytes) as Doc;
}

export function encode(doc: Doc): Buffer {
  return Buffer.from(serialize(doc, { ignoreUndefined: true }));
}

// ---- mingo's context, with the stages this file implements itself ----------------------------------

/**
 * mingo differs: its `$lookup` with both localField/foreignField and a pipeline runs the pipeline over
 * the whole foreign collection instead of over the documents the equality matched (MongoDB 5.0+ runs it
 * over the matched ones), and its variables replace the enclosing `$lookup`'s instead of adding to them.
 * The proxy always gives the equality form a (tag) pipeline, so this matters: MongoDB's semantics here.
 */
function $lookup(coll: Iterator, expr: AnyObject, options: Options): Iterator {
  const resolver = options.collectionResolver;
  const pipeline = (expr.pipeline as AnyObject[] | undefined) ?? [];
  const first = pipeline[0];
  let foreign: AnyObject[];
  let stages = pipeline;
  if (typeof expr.from === 'string') {
    if (!resolver) fail(2, 'BadValue', '$lookup needs a collection resolver');
    foreign = resolver!(expr.from);
  } else if (expr.from === undefined && first && '$documents' in first) {
    foreign = evalExpr(null, first.$documents, options) as AnyObject[];
    stages = pipeline.slice(1);
  } else {
    return fail(9, 'FailedToParse', "$lookup: 'from' is required unless the pipeline starts with $documents");
  }
  const as = expr.as;
  if (typeof as !== 'string') fail(9, 'FailedToParse', "$lookup: 'as' must be a string");
  const equality = expr.localField !== undefined || expr.foreignField !== undefined;
  if (equality && (typeof expr.localField !== 'string' || typeof expr.foreignField !== 'string')) {
    fail(9, 'FailedToParse', '$lookup: localField and foreignField go together');
  }
  const outer = outerVariables(options);
  return coll.map((obj) => {
    const doc = obj as AnyObject;
    let matched = foreign;
    if (equality) {
      const local = resolvePath(doc, expr.localField as string);
      // As MongoDB: an array local value matches any of its elements; missing matches null and missing.
      const values = local === undefined ? [null] : Array.isArray(local) ? local : [local];
      const q = new Query({ [expr.foreignField as string]: { $in: values } }, options);
      matched = foreign.filter((f) => q.test(f));
    }
    let joined: AnyObject[] = matched.map((d) => cloneValue(d) as AnyObject);
    if (stages.length > 0 || expr.let !== undefined) {
      const letVars = expr.let === undefined ? {} : (evalExpr(doc, expr.let, options) as AnyObject);
      joined = new Aggregator(stages, { ...plainOptions(options), variables: { ...outer, ...letVars } }).run(joined);
    }
    const out = { ...doc };
    setValue(out, as as string, joined);
    return out;
  });
}

/** A dotted path's value, read through arrays of documents as MongoDB reads it. */
const resolvePath = (doc: AnyObject, path: string): unknown => resolve(doc, path);

function outerVariables(options: Options): AnyObject {
  const o = options as Options & { local?: { variables?: AnyObject } };
  return { ...(options.variables ?? {}), ...(o.local?.variables ?? {}) };
}

/** Stages get mingo's ComputeOptions (its own options under `.options`, not exported as a class). */
function plainOptions(options: Options): Partial<Options> {
  const o = options as Options & { options?: Options };
  return { ...(o.options ?? options) };
}

/** $out and $merge are the aggregate command's (they write); anywhere else they are refused, as by MongoDB. */
const misplacedOutput = (name: string) => (): never =>
  fail(40601, 'Location40601', `${name} can only be the final stage in the pipeline`);

export const CONTEXT = Context.init({
  accumulator: accumulatorOperators as never,
  expression: expressionOperators as never,
  pipeline: { ...(pipelineOperators as unknown as Record<string, unknown>), $lookup, $out: misplacedOutput('$out'), $merge: misplacedOutput('$merge') } as never,
  projection: projectionOperators as never,
  query: queryOperators as never,
  window: windowOperators as never,
});

/** Stages MongoDB accepts in an update pipeline. */
const UPDATE_STAGES = new Set(['$addFields', '$set', '$project', '$unset', '$replaceRoot', '$replaceWith']);

function cloneValue<T>(v: T): T {
  if (isPlainDoc(v)) return decodeStored(encode(v as Doc)) as T;
  return (decodeStored(encode({ v })) as { v: T }).v;
}

// ---- the server ------------------------------------------------------------------------------------

export interface ServerOptions {
  /**
   * A top-level field the database never holds nor returns (the dedicated model of an app behind the
   * proxy, whose tag field is reserved: writes of it are dropped, reads never show it).
   */
  reservedField?: string;
  /** Documents per batch of a cursor when the command does not say (small, so getMore is exercised). */
  defaultBatchSize?: number;
}

interface OpenCursor {
  ns: string;
  docs: Doc[];
}

export type Collections = Map<string, Buffer[]>;

export class MingoServer {
  /** database → collection → documents (BSON bytes, in natural order). */
  readonly databases = new Map<string, Collections>();
  private nextId = 1;
  private nextCursor = 1000n;
  private readonly cursors = new Map<bigint, OpenCursor>();
  private readonly reserved: string | undefined;
  private readonly batchSize: number;

  constructor(options: ServerOptions = {}) {
    this.reserved = options.reservedField;
    this.batchSize = options.defaultBatchSize ?? 101;
  }

  database(name: string): Collections {
    let db = this.databases.get(name);
    if (!db) {
      db = new Map();
      this.databases.set(name, db);
    }
    return db;
  }

  /** Documents as the server stores them: `_id` first (generated when missing), the reserved field dropped. */
  private normalize(doc: Doc): Doc {
    const { _id, ...rest } = doc;
    if (this.reserved !== undefined) delete rest[this.reserved];
    return { _id: _id === undefined ? this.objectId() : _id, ...rest };
  }

  /** Deterministic ObjectIds: two servers fed the same commands generate the same ids. */
  private objectId(): ObjectId {
    return new ObjectId((this.nextId++).toString(16).padStart(24, '0'));
  }

  private shown(doc: Doc): Doc {
    if (this.reserved === undefined || !(this.reserved in doc)) return doc;
    const { [this.reserved]: _hidden, ...rest } = doc;
    return rest;
  }

  /** Runs one command; always answers a reply body (errors as `{ok: 0}`), never throws. */
  run(body: Buffer, sequences: readonly DocumentSequence[] = []): Buffer {
    let reply: Doc;
    try {
      const cmd = decodeStored(body);
      for (const seq of sequences) {
        const docs = seq.documents.map((b) => decodeStored(b));
        cmd[seq.identifier] = [...((cmd[seq.identifier] as unknown[] | undefined) ?? []), ...docs];
      }
      reply = this.dispatch(cmd);
    } catch (err) {
      reply = errorReply(err);
    }
    return encode(reply);
  }

  private dispatch(cmd: Doc): Doc {
    const name = Object.keys(cmd)[0]!;
    const db = cmd.$db;
    if (typeof db !== 'string') return fail(73, 'InvalidNamespace', '$db is required');
    switch (name) {
      case 'find':
        return this.find(db, cmd);
      case 'getMore':
        return this.getMore(cmd);
      case 'aggregate':
        return this.aggregate(db, cmd);
      case 'count':
        return this.count(db, cmd);
      case 'distinct':
        return this.distinct(db, cmd);
      case 'insert':
        return this.insert(db, cmd);
      case 'update':
        return this.update(db, cmd);
      case 'delete':
        return this.delete(db, cmd);
      case 'findAndModify':
      case 'findandmodify':
        return this.findAndModify(db, cmd, name);
      default:
        return fail(59, 'CommandNotFound', `no such command: '${name}'`);
    }
  }

  private collectionName(cmd: Doc, name: string): string {
    const coll = cmd[name];
    if (typeof coll !== 'string' || coll.length === 0) fail(73, 'InvalidNamespace', `${name}: collection name must be a string`);
    return coll as string;
  }

  /** The documents of a collection, decoded afresh (mingo may mutate what it is given). */
  docs(db: string, coll: string): Doc[] {
    return (this.database(db).get(coll) ?? []).map(decodeStored);
  }

  private options(cmd: Doc, extra: Partial<Options> = {}): Partial<Options> {
    const collation = cmd.collation as CollationSpec | undefined;
    return { context: CONTEXT, ...(collation ? { collation } : {}), ...extra };
  }

  private cursorReply(ns: string, docs: Doc[], batchSize: unknown, single = false): Doc {
    const size = typeof batchSize === 'number' && batchSize > 0 ? batchSize : this.batchSize;
    const shown = docs.map((d) => this.shown(d));
    const first = shown.slice(0, size);
    let id = 0n;
    if (shown.length > size && !single) {
      id = this.nextCursor++;
      this.cursors.set(id, { ns, docs: shown.slice(size) });
    }
    return { cursor: { firstBatch: first, id: Long.fromBigInt(id), ns }, ok: 1 };
  }

  private getMore(cmd: Doc): Doc {
    const raw = cmd.getMore;
    const id = typeof raw === 'bigint' ? raw : BigInt(Number(raw));
    const cursor = this.cursors.get(id);
    if (!cursor) return fail(43, 'CursorNotFound', `cursor id ${id} not found`);
    const size = typeof cmd.batchSize === 'number' && cmd.batchSize > 0 ? cmd.batchSize : this.batchSize;
    const batch = cursor.docs.splice(0, size);
    const more = cursor.docs.length > 0;
    if (!more) this.cursors.delete(id);
    return { cursor: { nextBatch: batch, id: Long.fromBigInt(more ? id : 0n), ns: cursor.ns }, ok: 1 };
  }

  // ---- reads --------------------------------------------------------------------------------------

  /** The matching documents of a collection with their positions, in natural order. */
  private matching(db: string, coll: string, filter: unknown, opts: Partial<Options>): { doc: Doc; index: number }[] {
    const q = new Query(asFilter(filter), opts);
    const all = this.docs(db, coll);
    const out: { doc: Doc; index: number }[] = [];
    all.forEach((doc, index) => {
      if (q.test(doc)) out.push({ doc, index });
    });
    return out;
  }

  private find(db: string, cmd: Doc): Doc {
    const coll = this.collectionName(cmd, 'find');
    const opts = this.options(cmd, cmd.let ? { variables: cmd.let as AnyObject } : {});
    const q = new Query(asFilter(cmd.filter), opts);
    let cursor = q.find<Doc>(this.docs(db, coll), (cmd.projection as AnyObject | undefined) ?? {});
    if (isPlainDoc(cmd.sort) && Object.keys(cmd.sort).length > 0) cursor = cursor.sort(cmd.sort);
    if (typeof cmd.skip === 'number' && cmd.skip > 0) cursor = cursor.skip(cmd.skip);
    let single = cmd.singleBatch === true;
    if (typeof cmd.limit === 'number' && cmd.limit !== 0) {
      if (cmd.limit < 0) single = true;
      cursor = cursor.limit(Math.abs(cmd.limit));
    }
    const docs = cursor.all();
    return this.cursorReply(`${db}.${coll}`, docs, cmd.batchSize, single);
  }

  private count(db: string, cmd: Doc): Doc {
    const coll = this.collectionName(cmd, 'count');
    let n = this.matching(db, coll, cmd.query, this.options(cmd)).length;
    if (typeof cmd.skip === 'number') n = Math.max(0, n - cmd.skip);
    if (typeof cmd.limit === 'number' && cmd.limit !== 0) n = Math.min(n, Math.abs(cmd.limit));
    return { n, ok: 1 };
  }

  private distinct(db: string, cmd: Doc): Doc {
    const coll = this.collectionName(cmd, 'distinct');
    if (typeof cmd.key !== 'string') return fail(14, 'TypeMismatch', "distinct: 'key' must be a string");
    const values: unknown[] = [];
    for (const { doc } of this.matching(db, coll, cmd.query, this.options(cmd))) {
      const shown = this.shown(doc);
      const v = resolvePath(shown, cmd.key);
      // As MongoDB: an array contributes its elements (one level), a missing value nothing.
      for (const x of v === undefined ? [] : Array.isArray(v) ? v : [v]) {
        if (!values.some((y) => isEqual(x, y))) values.push(x);
      }
    }
    return { values, ok: 1 };
  }

  private aggregate(db: string, cmd: Doc): Doc {
    const pipeline = cmd.pipeline;
    if (!Array.isArray(pipeline)) return fail(14, 'TypeMismatch', "'pipeline' must be an array");
    const onCollection = typeof cmd.aggregate === 'string';
    const coll = onCollection ? (cmd.aggregate as string) : undefined;
    const last = pipeline[pipeline.length - 1] as Doc | undefined;
    const output = last && ('$out' in last || '$merge' in last) ? last : undefined;
    const stages = (output ? pipeline.slice(0, -1) : pipeline) as AnyObject[];
    const opts = this.options(cmd, {
      collectionResolver: (name: string) => this.docs(db, name),
      ...(cmd.let ? { variables: cmd.let as AnyObject } : {}),
    });
    const input = coll === undefined ? [] : this.docs(db, coll);
    const results = new Aggregator(stages, opts).run(input) as Doc[];
    const ns = coll === undefined ? `${db}.$cmd.aggregate` : `${db}.${coll}`;
    if (output) {
      if ('$out' in output) this.out(db, output.$out, results);
      else this.merge(db, output.$merge, results, opts);
      return this.cursorReply(ns, [], undefined);
    }
    const cursorOpt = cmd.cursor as Doc | undefined;
    return this.cursorReply(ns, results, cursorOpt?.batchSize);
  }

  /** `$out` per the manual: replaces the target collection with the results, all or nothing. */
  private out(db: string, spec: unknown, results: Doc[]): void {
    const target = typeof spec === 'string' ? { db, coll: spec } : (spec as { db?: string; coll: string });
    const targetDb = target.db ?? db;
    const stored: Buffer[] = [];
    const ids: unknown[] = [];
    for (const doc of results) {
      const normal = this.normalize(doc);
      if (ids.some((id) => isEqual(id, normal._id))) {
        fail(11000, 'DuplicateKey', `E11000 duplicate key error collection: ${targetDb}.${target.coll} index: _id_ dup key`);
      }
      ids.push(normal._id);
      stored.push(encode(normal));
    }
    this.database(targetDb).set(target.coll, stored);
  }

  /**
   * `$merge` per the manual: for each result, the target document whose `on` fields equal the result's
   * (default `_id`), then `whenMatched` (replace, keepExisting, merge, fail, or a pipeline over the target
   * document with `$$new` and the `let` variables) or `whenNotMatched` (insert, discard, fail). Writes
   * already done stay when a later document fails, as on a server.
   */
  private merge(db: string, raw: unknown, results: Doc[], opts: Partial<Options>): void {
    const spec: Doc = typeof raw === 'string' ? { into: raw } : (raw as Doc);
    const into = typeof spec.into === 'string' ? { db, coll: spec.into } : (spec.into as { db?: string; coll: string });
    const targetDb = into.db ?? db;
    const ns = `${targetDb}.${into.coll}`;
    const on = spec.on === undefined ? ['_id'] : Array.isArray(spec.on) ? (spec.on as string[]) : [spec.on as string];
    const whenMatched = spec.whenMatched ?? 'merge';
    const whenNotMatched = spec.whenNotMatched ?? 'insert';
    const collections = this.database(targetDb);
    const target = collections.get(into.coll) ?? [];
    collections.set(into.coll, target);
    for (const result of results) {
      const incoming = { ...result };
      // The reserved field never reaches the database: not even as $$new of a whenMatched pipeline.
      if (this.reserved !== undefined) delete incoming[this.reserved];
      for (const field of on) {
        const v = resolvePath(incoming, field);
        if (field === '_id' && v === undefined) continue;
        if (v === undefined || v === null || Array.isArray(v)) {
          fail(51132, 'Location51132', `$merge write error: 'on' field '${field}' cannot be missing, null, undefined or an array`);
        }
      }
      const index = incoming._id === undefined && on.includes('_id')
        ? -1
        : target.findIndex((bytes) => {
            const t = decodeStored(bytes);
            return on.every((f) => isEqual(resolvePath(t, f), resolvePath(incoming, f)));
          });
      if (index < 0) {
        if (whenNotMatched === 'discard') continue;
        if (whenNotMatched === 'fail') fail(13113, 'MergeStageNoMatchingDocument', `$merge could not find a matching document in the target collection ${ns}`);
        target.push(encode(this.normalize(incoming)));
        continue;
      }
      const existing = decodeStored(target[index]!);
      let next: Doc;
      if (Array.isArray(whenMatched)) {
        const letSpec = (spec.let as AnyObject | undefined) ?? { new: '$$ROOT' };
        const vars = evalExpr(incoming, letSpec, { ...opts, context: CONTEXT } as Options) as AnyObject;
        for (const stage of whenMatched as Doc[]) {
          if (!UPDATE_STAGES.has(Object.keys(stage)[0]!)) fail(72, 'InvalidOptions', `$merge: ${Object.keys(stage)[0]} is not allowed in whenMatched`);
        }
        const [updated] = new Aggregator(whenMatched as AnyObject[], { ...opts, variables: { ...(opts.variables ?? {}), ...vars } }).run([existing]) as Doc[];
        next = { ...updated! };
      } else if (whenMatched === 'replace') {
        next = { ...incoming };
      } else if (whenMatched === 'keepExisting') {
        continue;
      } else if (whenMatched === 'merge') {
        next = { ...existing, ...incoming };
      } else if (whenMatched === 'fail') {
        return fail(11000, 'DuplicateKey', `E11000 duplicate key error collection: ${ns} (whenMatched: fail)`);
      } else {
        return fail(9, 'FailedToParse', `$merge: unknown whenMatched ${String(whenMatched)}`);
      }
      if (next._id === undefined) next._id = existing._id;
      if (!isEqual(next._id, existing._id)) {
        fail(66, 'ImmutableField', `$merge failed to update the matching document, Performing an update on the path '_id' would modify the immutable field '_id'`);
      }
      target[index] = this.storeIfChanged(target[index]!, next);
    }
  }

  /** The bytes to keep for a rewritten document: the old ones when nothing changed (as nModified reads). */
  private storeIfChanged(old: Buffer, doc: Doc): Buffer {
    const bytes = encode(this.normalize(doc));
    return bytes.equals(old) ? old : bytes;
  }

  // ---- writes -------------------------------------------------------------------------------------

  private insert(db: string, cmd: Doc): Doc {
    const coll = this.collectionName(cmd, 'insert');
    const docs = (cmd.documents as Doc[] | undefined) ?? [];
    const target = this.database(db).get(coll) ?? [];
    this.database(db).set(coll, target);
    const ordered = cmd.ordered !== false;
    const writeErrors: Doc[] = [];
    let n = 0;
    for (const [i, raw] of docs.entries()) {
      const doc = this.normalize(raw);
      if (target.some((b) => isEqual(decodeStored(b)._id, doc._id))) {
        writeErrors.push({ index: i, code: 11000, errmsg: `E11000 duplicate key error collection: ${db}.${coll} index: _id_ dup key` });
        if (ordered) break;
        continue;
      }
      target.push(encode(doc));
      n++;
    }
    return writeErrors.length ? { n, writeErrors, ok: 1 } : { n, ok: 1 };
  }

  private delete(db: string, cmd: Doc): Doc {
    const coll = this.collectionName(cmd, 'delete');
    let n = 0;
    for (const st of (cmd.deletes as Doc[] | undefined) ?? []) {
      const matched = this.matching(db, coll, st.q, this.options(st, cmd.let ? { variables: cmd.let as AnyObject } : {}));
      const chosen = st.limit === 1 || st.limit === true ? matched.slice(0, 1) : matched;
      const gone = new Set(chosen.map((m) => m.index));
      const target = this.database(db).get(coll) ?? [];
      this.database(db).set(coll, target.filter((_, i) => !gone.has(i)));
      n += chosen.length;
    }
    return { n, ok: 1 };
  }

  /**
   * One update of one document. `insert`: the document is a new upsert (so $setOnInsert applies).
   * Throws ServerError for what MongoDB refuses (changing _id, unknown pipeline stages).
   */
  private applyUpdate(doc: Doc, u: unknown, ctx: { query: Doc; arrayFilters?: AnyObject[]; variables?: AnyObject; insert: boolean; opts: Partial<Options> }): Doc {
    const before = doc._id;
    let next: Doc;
    if (Array.isArray(u)) {
      for (const stage of u as Doc[]) {
        const name = Object.keys(stage)[0]!;
        if (!UPDATE_STAGES.has(name)) fail(72, 'InvalidOptions', `${name} is not allowed to be used within an update`);
      }
      const opts = { ...ctx.opts, ...(ctx.variables ? { variables: ctx.variables } : {}) };
      const [out] = new Aggregator(u as AnyObject[], opts).run([doc]) as Doc[];
      next = { ...out! };
    } else if (isPlainDoc(u) && Object.keys(u).some((k) => k.startsWith('$'))) {
      const { $setOnInsert, ...ops } = u as Doc;
      const modifier: Doc = { ...ops };
      if (ctx.insert && isPlainDoc($setOnInsert)) modifier.$set = { ...((modifier.$set as Doc | undefined) ?? {}), ...$setOnInsert };
      next = cloneValue(doc);
      if (Object.keys(modifier).length > 0) {
        try {
          applyOperators(next as AnyObject, modifier as never, ctx.arrayFilters, ctx.insert ? {} : (ctx.query as never), { cloneMode: 'deep', queryOptions: ctx.opts });
        } catch (err) {
          if (err instanceof ServerError) throw err;
          fail(2, 'BadValue', (err as Error).message);
        }
      }
    } else if (isPlainDoc(u)) {
      next = { _id: before, ...u };
      if (u._id !== undefined) next._id = u._id;
    } else {
      return fail(9, 'FailedToParse', 'update must be an object or a pipeline');
    }
    if (!ctx.insert && before !== undefined && !isEqual(next._id, before)) {
      fail(66, 'ImmutableField', "Performing an update on the path '_id' would modify the immutable field '_id'");
    }
    if (next._id === undefined && before !== undefined) next._id = before;
    return next;
  }

  /** The document an upsert starts from: the filter's equality conditions (top level and `$and`), as MongoDB. */
  private upsertSeed(q: Doc, u: unknown): Doc {
    const seed: Doc = {};
    const visit = (filter: Doc): void => {
      for (const [key, value] of Object.entries(filter)) {
        if (key === '$and' && Array.isArray(value)) {
          for (const sub of value) if (isPlainDoc(sub)) visit(sub);
          continue;
        }
        if (key.startsWith('$')) continue;
        if (isPlainDoc(value) && Object.keys(value).some((k) => k.startsWith('$'))) {
          if ('$eq' in value) setValue(seed as AnyObject, key, cloneValue(value.$eq));
          continue;
        }
        setValue(seed as AnyObject, key, cloneValue(value));
      }
    };
    // A replacement keeps only the filter's _id; operator and pipeline updates start from every equality.
    const replacement = isPlainDoc(u) && !Object.keys(u).some((k) => k.startsWith('$'));
    visit(q);
    if (replacement) return seed._id === undefined ? {} : { _id: seed._id };
    return seed;
  }

  private update(db: string, cmd: Doc): Doc {
    const coll = this.collectionName(cmd, 'update');
    const statements = (cmd.updates as Doc[] | undefined) ?? [];
    const ordered = cmd.ordered !== false;
    let n = 0;
    let nModified = 0;
    const upserted: Doc[] = [];
    const writeErrors: Doc[] = [];
    for (const [i, st] of statements.entries()) {
      try {
        const r = this.updateOne(db, coll, st, cmd);
        n += r.n;
        nModified += r.nModified;
        if (r.upserted !== undefined) upserted.push({ index: i, _id: r.upserted });
      } catch (err) {
        if (!(err instanceof ServerError)) throw err;
        writeErrors.push({ index: i, code: err.code, errmsg: err.message });
        if (ordered) break;
      }
    }
    const reply: Doc = { n, nModified };
    if (upserted.length) reply.upserted = upserted;
    if (writeErrors.length) reply.writeErrors = writeErrors;
    reply.ok = 1;
    return reply;
  }

  private updateOne(db: string, coll: string, st: Doc, cmd: Doc): { n: number; nModified: number; upserted?: unknown } {
    const variables = { ...((cmd.let as AnyObject | undefined) ?? {}), ...((st.c as AnyObject | undefined) ?? {}) };
    const opts = this.options(st, Object.keys(variables).length ? { variables } : {});
    const q = asFilter(st.q);
    let matched = this.matching(db, coll, q, opts);
    if (st.multi !== true) {
      if (isPlainDoc(st.sort) && Object.keys(st.sort).length > 0) {
        const sorted = new Query({}, opts).find<Doc>(matched.map((m) => m.doc)).sort(st.sort).all();
        matched = sorted.length ? [matched.find((m) => isEqual(m.doc._id, sorted[0]!._id))!] : [];
      } else matched = matched.slice(0, 1);
    }
    const target = this.database(db).get(coll) ?? [];
    this.database(db).set(coll, target);
    const ctx = { query: q, arrayFilters: st.arrayFilters as AnyObject[] | undefined, variables, opts };
    if (matched.length === 0) {
      if (st.upsert !== true) return { n: 0, nModified: 0 };
      const seed = this.upsertSeed(q, st.u);
      const doc = this.normalize(this.applyUpdate(seed, st.u, { ...ctx, insert: true }));
      if (target.some((b) => isEqual(decodeStored(b)._id, doc._id))) {
        fail(11000, 'DuplicateKey', `E11000 duplicate key error collection: ${db}.${coll} index: _id_ dup key`);
      }
      target.push(encode(doc));
      return { n: 1, nModified: 0, upserted: doc._id };
    }
    // Every document is computed first: a failing one leaves the statement without effect.
    const next = matched.map((m) => this.applyUpdate(m.doc, st.u, { ...ctx, insert: false }));
    let nModified = 0;
    matched.forEach((m, k) => {
      const bytes = this.storeIfChanged(target[m.index]!, next[k]!);
      if (bytes !== target[m.index]) nModified++;
      target[m.index] = bytes;
    });
    return { n: matched.length, nModified };
  }

  private findAndModify(db: string, cmd: Doc, name: string): Doc {
    const coll = this.collectionName(cmd, name);
    if (cmd.remove === true && cmd.update !== undefined) return fail(9, 'FailedToParse', 'Cannot specify both an update and remove=true');
    if (cmd.remove !== true && cmd.update === undefined) return fail(9, 'FailedToParse', 'Either an update or remove=true must be specified');
    const opts = this.options(cmd, cmd.let ? { variables: cmd.let as AnyObject } : {});
    const q = asFilter(cmd.query);
    const matched = this.matching(db, coll, q, opts);
    let chosen: { doc: Doc; index: number } | undefined = matched[0];
    if (isPlainDoc(cmd.sort) && Object.keys(cmd.sort).length > 0 && matched.length > 0) {
      const [first] = new Query({}, opts).find<Doc>(matched.map((m) => m.doc)).sort(cmd.sort).all();
      chosen = matched.find((m) => isEqual(m.doc._id, first!._id));
    }
    const target = this.database(db).get(coll) ?? [];
    this.database(db).set(coll, target);
    const project = (doc: Doc | null): Doc | null => {
      if (doc === null) return null;
      const fields = cmd.fields as AnyObject | undefined;
      const [out] = fields && Object.keys(fields).length ? new Query({}, opts).find<Doc>([doc], fields).all() : [doc];
      return this.shown(out!);
    };
    if (cmd.remove === true) {
      if (!chosen) return { lastErrorObject: { n: 0 }, value: null, ok: 1 };
      target.splice(chosen.index, 1);
      return { lastErrorObject: { n: 1 }, value: project(chosen.doc), ok: 1 };
    }
    const ctx = { query: q, arrayFilters: cmd.arrayFilters as AnyObject[] | undefined, opts };
    if (!chosen) {
      if (cmd.upsert !== true) return { lastErrorObject: { n: 0, updatedExisting: false }, value: null, ok: 1 };
      const doc = this.normalize(this.applyUpdate(this.upsertSeed(q, cmd.update), cmd.update, { ...ctx, insert: true }));
      if (target.some((b) => isEqual(decodeStored(b)._id, doc._id))) {
        fail(11000, 'DuplicateKey', `E11000 duplicate key error collection: ${db}.${coll} index: _id_ dup key`);
      }
      target.push(encode(doc));
      return { lastErrorObject: { n: 1, updatedExisting: false, upserted: doc._id }, value: cmd.new === true ? project(doc) : null, ok: 1 };
    }
    const updated = this.normalize(this.applyUpdate(chosen.doc, cmd.update, { ...ctx, insert: false }));
    target[chosen.index] = this.storeIfChanged(target[chosen.index]!, updated);
    const after = decodeStored(target[chosen.index]!);
    return { lastErrorObject: { n: 1, updatedExisting: true }, value: project(cmd.new === true ? after : chosen.doc), ok: 1 };
  }
}

function asFilter(filter: unknown): AnyObject {
  if (filter === undefined || filter === null) return {};
  if (!isPlainDoc(filter)) return fail(14, 'TypeMismatch', 'filter must be an object');
  return filter as AnyObject;
}

function errorReply(err: unknown): Doc {
  if (err instanceof ServerError) return { ok: 0, errmsg: err.message, code: err.code, codeName: err.codeName };
  // An error of mingo's own (a bad operator, a type it refuses): what a server answers for bad input.
  return { ok: 0, errmsg: (err as Error).message, code: 2, codeName: 'BadValue' };
}

export type { Document };
