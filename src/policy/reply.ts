import { ReplyView } from '../wire/reply-status.js';
import { rewriteCursorReply, rewriteDocumentField, stripField } from '../wire/bson-edit.js';
import { decodeDocument, encodeDocument } from './decode.js';
import type { CursorView, ReplyPlan } from './handler.js';
import { logicalCollection, logicalNamespace } from './namespace.js';
import { isDoc, type AppScope, type Doc } from './scope.js';
import { appViewPipeline } from './view-pipeline.js';

/**
 * Rewrites a reply body for the app (pure; the data plane swaps the body). Replies that carry documents
 * (cursor batches, findAndModify's `value`) are edited at the byte level; the rare replies that need a
 * structural change (errors naming physical collections, listCollections, listIndexes) are decoded.
 * Returns `body` itself when nothing changes. `view`: the reply read once (src/wire/reply-status.ts),
 * when the caller has it already.
 */
export function rewriteReply(scope: AppScope, plan: ReplyPlan, body: Buffer, view = new ReplyView(body)): Buffer {
  if (view.failed) return mapErrors(scope, plan, body);
  switch (plan.kind) {
    case 'plain':
      return mapNames(scope, plan.appDb, plan.collections, body);
    case 'findAndModify':
      return scope.exposeTag ? body : rewriteDocumentField(body, 'value', (doc) => stripField(doc, scope.tagField));
    case 'cursor':
      return rewriteDocuments(scope, plan.view, body, view.cursorNs);
    case 'explain':
      return mapExplain(scope, plan.appDb, plan.collections, body);
  }
}

/**
 * Physical names back to the app's, in any string of a reply. The command's collections come from the
 * app (a pipeline may name thousands) and so may the text (a server error can quote the command): one
 * pass over the text, taking at each occurrence of the prefix the longest of the names that follows it
 * (a trie walk of at most one name's length, which the namespace limit bounds), never a pass per name.
 */
function nameMapper(scope: AppScope, appDb: string, collections: readonly string[]): (text: string) => string {
  const trie = new NameTrie(collections);
  const prefix = scope.prefix;
  return (text) => {
    const mapped = text.split(`${scope.database}.${prefix}`).join(`${appDb}.`);
    let out = '';
    let from = 0;
    for (let at = mapped.indexOf(prefix); at >= 0; at = mapped.indexOf(prefix, at)) {
      const length = trie.longestAt(mapped, at + prefix.length);
      if (length === 0) {
        at += 1;
        continue;
      }
      out += mapped.slice(from, at) + mapped.substr(at + prefix.length, length);
      at += prefix.length + length;
      from = at;
    }
    out += mapped.slice(from);
    return out.split(`${scope.database}.`).join(`${appDb}.`);
  };
}

/** The app's collection names by character, for longest-match lookups. */
class NameTrie {
  private readonly root: TrieNode = { next: new Map(), end: false };

  constructor(names: readonly string[]) {
    for (const name of names) {
      let node = this.root;
      for (let i = 0; i < name.length; i++) {
        const ch = name[i]!;
        let child = node.next.get(ch);
        if (!child) node.next.set(ch, (child = { next: new Map(), end: false }));
        node = child;
      }
      node.end = true;
    }
  }

  /** The length (UTF-16 units) of the longest name starting at `at` in `text`, 0 when none does. */
  longestAt(text: string, at: number): number {
    let node: TrieNode | undefined = this.root;
    let longest = 0;
    for (let i = at; i < text.length; i++) {
      node = node.next.get(text[i]!);
      if (!node) break;
      if (node.end) longest = i + 1 - at;
    }
    return longest;
  }
}

interface TrieNode {
  readonly next: Map<string, TrieNode>;
  end: boolean;
}

/** An explain reply names the physical namespace in many places (queryPlanner, stages, shards): map every string. */
function mapExplain(scope: AppScope, appDb: string, collections: readonly string[], body: Buffer): Buffer {
  const map = nameMapper(scope, appDb, collections);
  const visit = (v: unknown): unknown => {
    if (typeof v === 'string') return v === scope.database ? appDb : map(v);
    if (Array.isArray(v)) return v.map(visit);
    if (isDoc(v)) {
      const out: Doc = {};
      for (const [k, child] of Object.entries(v)) out[k] = visit(child);
      return out;
    }
    return v;
  };
  return encodeDocument(visit(decodeDocument(body)) as Doc);
}

/** The reply to a cursor-opening command or a getMore, shown as the cursor's view says. */
export function rewriteCursorBatch(scope: AppScope, view: CursorView, body: Buffer): Buffer {
  return rewriteReply(scope, { kind: 'cursor', view, collections: [] }, body);
}

/** A cursor reply known not to be an error; `ns`: its cursor's namespace, as the reply view read it. */
function rewriteDocuments(scope: AppScope, view: CursorView, body: Buffer, ns: string | undefined): Buffer {
  if (view.kind === 'documents') {
    return rewriteCursorReply(body, {
      ns: ns === undefined ? undefined : logicalNamespace(scope, view.appDb, ns) ?? `${view.appDb}.$cmd`,
      stripField: scope.exposeTag && view.hideTag !== true ? undefined : scope.tagField,
      keepOnly: view.checkTag === true ? { field: scope.tagField, value: scope.slug } : undefined,
    });
  }
  const reply = decodeDocument(body);
  const cursor = reply.cursor;
  if (!isDoc(cursor)) return body;
  if (typeof cursor.ns === 'string') cursor.ns = logicalNamespace(scope, view.appDb, cursor.ns) ?? `${view.appDb}.$cmd`;
  for (const key of ['firstBatch', 'nextBatch']) {
    const batch = cursor[key];
    if (!Array.isArray(batch)) continue;
    cursor[key] =
      view.kind === 'collections'
        ? showCollections(scope, view, batch)
        : view.kind === 'indexes'
          ? showIndexes(scope, view.appDb, batch)
          : showChangeEvents(scope, view.appDb, batch);
  }
  return encodeDocument(reply);
}

/**
 * listCollections entries: only the app's, as a dedicated database would hold them (its names, a view's
 * source and pipeline as the app wrote them, view-pipeline.ts); then the app's filter, evaluated here
 * over these entries alone (the upstream got only the prefix condition).
 */
function showCollections(scope: AppScope, view: Extract<CursorView, { kind: 'collections' }>, batch: unknown[]): Doc[] {
  const out: Doc[] = [];
  for (const entry of batch) {
    if (!isDoc(entry) || typeof entry.name !== 'string') continue;
    const name = logicalCollection(scope, entry.name);
    if (name === undefined || (view.names && !view.names(name))) continue;
    if (view.nameOnly) {
      const reduced: Doc = { name };
      if (entry.type !== undefined) reduced.type = entry.type;
      if (view.entries && !view.entries(reduced)) continue;
      out.push(reduced);
      continue;
    }
    const shown: Doc = { ...entry, name };
    if (isDoc(entry.options) && (typeof entry.options.viewOn === 'string' || entry.options.pipeline !== undefined)) {
      const options: Doc = { ...entry.options };
      if (typeof options.viewOn === 'string') options.viewOn = logicalCollection(scope, options.viewOn) ?? options.viewOn;
      if (options.pipeline !== undefined) options.pipeline = appViewPipeline(scope, options.pipeline);
      shown.options = options;
    }
    if (isDoc(entry.idIndex) && typeof entry.idIndex.ns === 'string') {
      shown.idIndex = { ...entry.idIndex, ns: logicalNamespace(scope, view.appDb, entry.idIndex.ns) ?? entry.idIndex.ns };
    }
    if (view.entries && !view.entries(shown)) continue;
    out.push(shown);
  }
  return out;
}

/** Change events name the physical namespace (`ns`, and `to` for renames) and carry whole documents. */
function showChangeEvents(scope: AppScope, appDb: string, batch: unknown[]): unknown[] {
  const namespace = (ns: unknown): unknown =>
    isDoc(ns) && typeof ns.coll === 'string' ? { ...ns, db: appDb, coll: logicalCollection(scope, ns.coll) ?? ns.coll } : isDoc(ns) ? { ...ns, db: appDb } : ns;
  const hide = (doc: unknown): unknown => {
    if (scope.exposeTag || !isDoc(doc)) return doc;
    const { [scope.tagField]: _tag, ...rest } = doc;
    return rest;
  };
  return batch.map((event) => {
    if (!isDoc(event)) return event;
    const shown: Doc = { ...event };
    if (event.ns !== undefined) shown.ns = namespace(event.ns);
    if (event.to !== undefined) shown.to = namespace(event.to);
    if (event.fullDocument !== undefined) shown.fullDocument = hide(event.fullDocument);
    if (event.fullDocumentBeforeChange !== undefined) shown.fullDocumentBeforeChange = hide(event.fullDocumentBeforeChange);
    return shown;
  });
}

function showIndexes(scope: AppScope, appDb: string, batch: unknown[]): unknown[] {
  return batch.map((index) =>
    isDoc(index) && typeof index.ns === 'string' ? { ...index, ns: logicalNamespace(scope, appDb, index.ns) ?? index.ns } : index,
  );
}

/**
 * Replaces physical names in error messages with the app's: "<db>.<slug>_tasks" becomes
 * "<appDb>.tasks", and a bare "<slug>_tasks" of a collection this command used becomes "tasks".
 */
function mapErrors(scope: AppScope, plan: ReplyPlan, body: Buffer): Buffer {
  return mapNames(scope, plan.kind === 'cursor' ? plan.view.appDb : plan.appDb, plan.collections, body);
}

/**
 * Reply fields that hold the app's own data (distinct's values, upserted ids, a duplicate key's value, a
 * findAndModify's document, cursor batches): their strings are the app's and are never mapped.
 */
const DATA_FIELDS: ReadonlySet<string> = new Set(['values', 'upserted', 'value', 'lastErrorObject', 'keyValue', 'failingDocumentId', 'cursor']);

/** The bytes that give a physical name away, per scope: searched in every reply before anything is decoded. */
const givenAway = new WeakMap<AppScope, { database: Buffer; prefix: Buffer }>();

/**
 * Physical names back to the app's in every string of a reply outside its data fields: a drop's `ns`,
 * error messages at any depth (writeErrors, writeConcernError, errInfo), whatever else a server adds. A
 * reply that mentions neither the shared database nor the app's prefix (a byte search) is left as it is.
 */
function mapNames(scope: AppScope, appDb: string, collections: readonly string[], body: Buffer): Buffer {
  let marks = givenAway.get(scope);
  if (!marks) givenAway.set(scope, (marks = { database: Buffer.from(scope.database), prefix: Buffer.from(scope.prefix) }));
  if (body.indexOf(marks.database) < 0 && body.indexOf(marks.prefix) < 0) return body;
  const map = nameMapper(scope, appDb, collections);
  const visit = (v: unknown): unknown => {
    if (typeof v === 'string') return v === scope.database ? appDb : map(v).split(scope.database).join(appDb);
    if (Array.isArray(v)) return v.map(visit);
    if (isDoc(v)) {
      for (const [k, child] of Object.entries(v)) if (!DATA_FIELDS.has(k)) v[k] = visit(child);
    }
    return v;
  };
  return encodeDocument(visit(decodeDocument(body)) as Doc);
}
