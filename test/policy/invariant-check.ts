/**
 * The sandbox's invariant, checked on the BYTES of a rewritten command (what the proxy sends
 * upstream), never on the objects the policy layer built: the body is encoded, then walked with the
 * byte-level cursor of src/wire/bson-bytes.ts, which decodes nothing and so cannot promote a document
 * into anything else. Kind-1 documents are walked as they are.
 *
 * For an app with tag field `T` and slug `S`:
 * - every namespace is the app's: the command's collection and every collection a pipeline names
 *   start with `S_`; `$db` is the shared database; `$out`/`$merge` write there;
 * - every write keeps the tag: inserted and replacement documents hold exactly one top-level `T`, the
 *   string `S`; operator updates name no path whose first segment is `T` (nor `$rename` onto one),
 *   except `$set`/`$setOnInsert` of `T` to `S` itself; pipeline updates, `$merge`'s whenMatched
 *   pipelines end with the stage that sets it; `$out`/`$merge` are preceded by it;
 * - every read filters by it: every filter (find, count, distinct, update and delete statements,
 *   findAndModify, `$graphLookup`'s restrictSearchWithMatch) holds exactly one top-level `T`, the string
 *   `S`, so upserts take it too; every pipeline that reads a collection (sub-pipelines included)
 *   starts with `{$match}` holding it, or with `$geoNear` whose query holds it, or `$search` /
 *   `$vectorSearch` (whose filter holds it) followed by such a `$match`; the exceptions are a leading
 *   `$documents` (no collection is read) and a collection change stream at the top of an aggregate
 *   (it reads the app's own physical collection only); a pipeline that reads no collection has no
 *   stage that reads one itself;
 * - the exact-`_id` find is the one read sent without the tag, and only with the reply checked
 *   (`checkTag`, docs/security.md "Why point reads may check the tag on the reply");
 * - no Code or CodeWScope value and no `$where`/`$function`/`$accumulator` key anywhere.
 */
import type { RewrittenCommand } from '../../src/policy/handler.js';
import type { AppScope } from '../../src/policy/scope.js';
import { BsonType, ElementCursor } from '../../src/wire/bson-bytes.js';

/** A BSON value as the bytes hold it: its type, a document's or array's elements in order, a string's text. */
export interface N {
  readonly type: number;
  readonly entries?: readonly (readonly [string, N])[];
  readonly s?: string;
}

/** The tree of the document at `offset`: every element, duplicates and order kept. */
export function parse(buf: Buffer, offset = 0, type: number = BsonType.DOCUMENT): N {
  const entries: [string, N][] = [];
  const el = new ElementCursor(buf, offset);
  while (el.next()) {
    const name = buf.toString('utf8', el.nameStart, el.nameEnd);
    if (el.type === BsonType.DOCUMENT || el.type === BsonType.ARRAY) entries.push([name, parse(buf, el.valueStart, el.type)]);
    else if (el.type === BsonType.STRING) entries.push([name, { type: el.type, s: buf.toString('utf8', el.valueStart + 4, el.valueEnd - 1) }]);
    else entries.push([name, { type: el.type }]);
  }
  return { type, entries };
}

const isDocNode = (n: N | undefined): n is N & { entries: readonly (readonly [string, N])[] } => n?.type === BsonType.DOCUMENT;
const isArrayNode = (n: N | undefined): n is N & { entries: readonly (readonly [string, N])[] } => n?.type === BsonType.ARRAY;

/** The value of the last element named `name` (what a server reads), or undefined. */
function get(n: N, name: string): N | undefined {
  let found: N | undefined;
  for (const [k, v] of n.entries ?? []) if (k === name) found = v;
  return found;
}

const items = (n: N | undefined): N[] => (n?.entries ?? []).map(([, v]) => v);
const firstKey = (n: N | undefined): string | undefined => n?.entries?.[0]?.[0];

export class Violations {
  readonly list: string[] = [];
  constructor(private readonly scope: AppScope) {}

  add(what: string): void {
    this.list.push(what);
  }

  /** Exactly one top-level element named the tag, a string equal to the slug. */
  carriesTag(n: N | undefined, where: string): void {
    if (!isDocNode(n)) return this.add(`${where}: not a document`);
    const tags = n.entries.filter(([k]) => k === this.scope.tagField);
    if (tags.length !== 1) return this.add(`${where}: ${tags.length} top-level '${this.scope.tagField}' elements`);
    const [, v] = tags[0]!;
    if (v.type !== BsonType.STRING || v.s !== this.scope.slug) this.add(`${where}: the tag is not the string '${this.scope.slug}'`);
  }

  namespace(n: N | undefined, where: string): void {
    if (n?.type !== BsonType.STRING || !n.s!.startsWith(this.scope.prefix)) this.add(`${where}: collection not prefixed with '${this.scope.prefix}'`);
  }

  /** `{$set: {<tag>: {$literal: <slug>}}}`, exactly. */
  isStampStage(n: N | undefined): boolean {
    if (!isDocNode(n) || n.entries.length !== 1 || firstKey(n) !== '$set') return false;
    const set = get(n, '$set');
    if (!isDocNode(set) || set.entries.length !== 1 || firstKey(set) !== this.scope.tagField) return false;
    const lit = get(set, this.scope.tagField);
    if (!isDocNode(lit) || lit.entries.length !== 1 || firstKey(lit) !== '$literal') return false;
    const v = get(lit, '$literal');
    return v?.type === BsonType.STRING && v.s === this.scope.slug;
  }

  touchesTag(path: string): boolean {
    return path.split('.')[0] === this.scope.tagField;
  }

  /** An update's `u` (or findAndModify's `update`) as sent. */
  update(u: N | undefined, where: string): void {
    if (isArrayNode(u)) {
      if (!this.isStampStage(items(u).at(-1))) this.add(`${where}: pipeline update does not end with the stage setting the tag`);
      return;
    }
    if (!isDocNode(u)) return this.add(`${where}: update is neither a document nor a pipeline`);
    const first = firstKey(u);
    if (first === undefined || !first.startsWith('$')) return this.carriesTag(u, `${where} (replacement)`);
    for (const [op, operand] of u.entries) {
      if (!op.startsWith('$')) this.add(`${where}: '${op}' beside operators`);
      if (!isDocNode(operand)) {
        this.add(`${where}.${op}: operand is not a document`);
        continue;
      }
      for (const [path, v] of operand.entries) {
        if (op === '$rename' && (v.type !== BsonType.STRING || this.touchesTag(v.s!))) this.add(`${where}.$rename: renames onto the tag or to a non-path`);
        if (!this.touchesTag(path)) continue;
        const ownValue = (op === '$set' || op === '$setOnInsert') && path === this.scope.tagField && v.type === BsonType.STRING && v.s === this.scope.slug;
        if (!ownValue) this.add(`${where}.${op}: names the path '${path}'`);
      }
    }
  }

  /**
   * A pipeline as sent; `reads`: it reads a collection; `top`: the pipeline of an aggregate on a
   * collection (where a change stream may open).
   */
  pipeline(p: N | undefined, where: string, reads: boolean, top = false): void {
    if (!isArrayNode(p)) return this.add(`${where}: pipeline is not an array`);
    const stages = items(p);
    const name = (i: number) => firstKey(stages[i]);
    if (reads) {
      const head = name(0);
      const matchAt = (i: number) => {
        if (name(i) !== '$match') return false;
        const m = get(stages[i]!, '$match');
        const before = this.list.length;
        this.carriesTag(m, `${where}[${i}].$match`);
        return this.list.length === before;
      };
      if (head === '$geoNear') this.carriesTag(get(get(stages[0]!, '$geoNear')!, 'query'), `${where}[0].$geoNear.query`);
      else if (head === '$vectorSearch') {
        this.carriesTag(get(get(stages[0]!, '$vectorSearch')!, 'filter'), `${where}[0].$vectorSearch.filter`);
        if (!matchAt(1)) this.add(`${where}: $vectorSearch not followed by the tag $match`);
      } else if (head === '$search') {
        if (!matchAt(1)) this.add(`${where}: $search not followed by the tag $match`);
      } else if (head === '$documents' || (head === '$changeStream' && top)) {
        // No collection read, or the app's own physical collection's events (see above).
      } else if (!matchAt(0)) this.add(`${where}: reads a collection without the tag $match first`);
    }
    stages.forEach((stage, i) => this.stage(stage, `${where}[${i}]`, reads, stages[i - 1]));
  }

  private stage(stage: N, where: string, reads: boolean, previous: N | undefined): void {
    const name = firstKey(stage);
    const arg = name === undefined ? undefined : get(stage, name);
    switch (name) {
      case '$geoNear':
      case '$search':
      case '$vectorSearch':
      case '$changeStream':
      case '$searchMeta':
        if (!reads) this.add(`${where}: ${name} in a pipeline that reads no collection`);
        if (name === '$searchMeta') this.add(`${where}: $searchMeta sent`);
        break;
      case '$lookup': {
        const from = get(arg!, 'from');
        if (from !== undefined) this.namespace(from, `${where}.from`);
        this.pipeline(get(arg!, 'pipeline'), `${where}.pipeline`, from !== undefined);
        break;
      }
      case '$graphLookup':
        this.namespace(get(arg!, 'from'), `${where}.from`);
        this.carriesTag(get(arg!, 'restrictSearchWithMatch'), `${where}.restrictSearchWithMatch`);
        break;
      case '$unionWith': {
        if (!isDocNode(arg)) return this.add(`${where}: $unionWith not rewritten to a document`);
        const coll = get(arg, 'coll');
        if (coll !== undefined) this.namespace(coll, `${where}.coll`);
        if (get(arg, 'db') !== undefined) this.add(`${where}: $unionWith names a database`);
        this.pipeline(get(arg, 'pipeline'), `${where}.pipeline`, coll !== undefined);
        break;
      }
      case '$facet':
        for (const [k, sub] of arg?.entries ?? []) this.pipeline(sub, `${where}.${k}`, false);
        break;
      case '$out':
        if (!this.isStampStage(previous)) this.add(`${where}: $out not preceded by the stage setting the tag`);
        this.namespace(get(arg!, 'coll'), `${where}.coll`);
        this.database(get(arg!, 'db'), `${where}.db`);
        break;
      case '$merge': {
        if (!this.isStampStage(previous)) this.add(`${where}: $merge not preceded by the stage setting the tag`);
        const into = get(arg!, 'into');
        this.namespace(get(into ?? { type: 0 }, 'coll'), `${where}.into.coll`);
        this.database(get(into ?? { type: 0 }, 'db'), `${where}.into.db`);
        const whenMatched = get(arg!, 'whenMatched');
        if (isArrayNode(whenMatched) && !this.isStampStage(items(whenMatched).at(-1))) this.add(`${where}.whenMatched: does not end with the stage setting the tag`);
        break;
      }
      default:
        break;
    }
  }

  database(n: N | undefined, where: string): void {
    if (n?.type !== BsonType.STRING || n.s !== this.scope.database) this.add(`${where}: not the shared database`);
  }

  /** No Code, no JavaScript operator key, at any depth. */
  noJavaScript(n: N, where: string): void {
    const stack: N[] = [n];
    while (stack.length > 0) {
      const v = stack.pop()!;
      if (v.type === BsonType.CODE || v.type === BsonType.CODE_W_SCOPE) this.add(`${where}: a Code value`);
      for (const [k, child] of v.entries ?? []) {
        if (k === '$where' || k === '$function' || k === '$accumulator') this.add(`${where}: a ${k} key`);
        stack.push(child);
      }
    }
  }
}

/** Everything the invariant says about one rewritten command of `canonical` (its handler's name). */
export function violations(scope: AppScope, canonical: string, out: RewrittenCommand, bodyBytes: Buffer): string[] {
  const v = new Violations(scope);
  const body = parse(bodyBytes);
  const sequences = out.sequences.map((s) => ({ identifier: s.identifier, documents: s.documents.map((d) => parse(d)) }));
  v.noJavaScript(body, 'body');
  for (const s of sequences) for (const d of s.documents) v.noJavaScript(d, `kind-1 ${s.identifier}`);
  v.database(get(body, '$db'), '$db');
  if (firstKey(body) !== canonical) v.add(`the command is '${firstKey(body)}', not '${canonical}'`);
  v.namespace(get(body, canonical), canonical);
  const inSequence = (id: string) => sequences.filter((s) => s.identifier === id).flatMap((s) => s.documents);
  switch (canonical) {
    case 'insert':
      items(get(body, 'documents')).forEach((d, i) => v.carriesTag(d, `documents.${i}`));
      inSequence('documents').forEach((d, i) => v.carriesTag(d, `kind-1 documents.${i}`));
      break;
    case 'update':
      [...items(get(body, 'updates')), ...inSequence('updates')].forEach((st, i) => {
        v.carriesTag(get(st, 'q'), `updates.${i}.q`);
        v.update(get(st, 'u'), `updates.${i}.u`);
      });
      break;
    case 'delete':
      [...items(get(body, 'deletes')), ...inSequence('deletes')].forEach((st, i) => v.carriesTag(get(st, 'q'), `deletes.${i}.q`));
      break;
    case 'findAndModify': {
      v.carriesTag(get(body, 'query'), 'query');
      const u = get(body, 'update');
      if (u !== undefined) v.update(u, 'update');
      break;
    }
    case 'find': {
      const fastPath = out.reply.kind === 'cursor' && out.reply.view.kind === 'documents' && out.reply.view.checkTag === true;
      if (fastPath) {
        const filter = get(body, 'filter');
        if (!isDocNode(filter) || filter.entries.length !== 1 || firstKey(filter) !== '_id') v.add('filter: sent without the tag but not an exact _id');
      } else v.carriesTag(get(body, 'filter'), 'filter');
      break;
    }
    case 'count':
    case 'distinct':
      v.carriesTag(get(body, 'query'), 'query');
      break;
    case 'aggregate':
      v.pipeline(get(body, 'pipeline'), 'pipeline', true, true);
      break;
    default:
      v.add(`no invariant for '${canonical}'`);
  }
  return v.list;
}
