/**
 * The semantic oracle of test/semantic: what an app sees through the proxy must be what it would see on
 * a database of its own.
 *
 * For one app (the subject) and one command:
 *  (a) the app's ORIGINAL command runs on a dedicated server holding the subject's documents as a
 *      database of its own would (plain collection names, no tag);
 *  (b) the command goes through the real policy layer (rewriteCommand, after the bytes are decoded the
 *      way the proxy decodes them) and the REWRITTEN command runs on a physical server holding several
 *      apps (each collection `<slug>_<name>`, every document tagged), plus documents planted in the
 *      subject's own collections with no tag, another app's tag or a tag of another BSON type;
 *  (c) the physical server's reply (and every getMore batch) goes back through the real reply rewrite.
 * Then: the same replies; the subject's physical collections, less the tag, equal the dedicated ones;
 * every document the command wrote there carries the subject's tag; every other app's collection and
 * every planted document is byte-for-byte what it was.
 *
 * The tag field is reserved in the app's model of its database (docs/security.md, "Tag hidden"): the
 * dedicated server never stores nor returns a top-level `app_id`.
 */
import { deserialize, EJSON, Long, serialize } from 'bson';
import { lookupCommand } from '../../src/policy/commands.js';
import { CommandError } from '../../src/policy/errors.js';
import type { CursorView, RewrittenCommand } from '../../src/policy/handler.js';
import { rewriteCursorBatch, rewriteReply } from '../../src/policy/reply.js';
import { rewriteCommand } from '../../src/policy/rewrite.js';
import { makeScope, type AppScope } from '../../src/policy/scope.js';
import { decodeDocument, encodeDocument } from '../../src/policy/decode.js';
import type { DocumentSequence } from '../../src/wire/opmsg.js';
import { decodeStored, encode, MingoServer, type Doc } from './mingo-server.js';

export const DATABASE = 'mdb_runtime';
export const TAG = 'app_id';
/** The database name the app uses (`$db`); the dedicated server holds it. */
export const APP_DB = 'appdb';

export interface World {
  /** Every app's documents as the app wrote them (no tag), by logical collection. */
  readonly apps: Readonly<Record<string, Readonly<Record<string, readonly Doc[]>>>>;
  /**
   * Documents written around the proxy into the subject's own physical collections, with their raw
   * tag (absent, another app's, another BSON type). Their `_id`s are their own (see PLANTED_ID).
   */
  readonly planted: Readonly<Record<string, readonly Doc[]>>;
}

export interface OracleCase {
  readonly subject: string;
  readonly world: World;
  /** The app's command, without `$db`. */
  readonly command: Doc;
  readonly sequences?: readonly { identifier: string; documents: readonly Doc[] }[];
}

export interface OracleResult {
  /** Set when the proxy refused the command (then nothing ran anywhere). */
  readonly refused?: CommandError;
  /** The replies the app got (the command's, then each getMore's), decoded. */
  readonly replies: readonly Doc[];
}

/** `_id`s of planted documents start with this: the apps' own documents never use it. */
export const PLANTED_ID = 'planted-';

/**
 * Refusals the proxy documents (docs/security.md): a generated command may be refused only with one of
 * these codes (writes of another tag, touching the tag, refused stages and namespaces, bad shapes).
 */
export const DOCUMENTED_REFUSALS: ReadonlyMap<number, string> = new Map([
  [2, 'BadValue: an inserted document carries another tag'],
  [66, 'ImmutableField: an update touches the tag'],
  [72, 'InvalidOptions: a stage not allowed in an update pipeline'],
  [9, 'FailedToParse: a malformed update or stage'],
  [13, 'Unauthorized: a refused stage, database or argument'],
  [14, 'TypeMismatch: a malformed field'],
  [73, 'InvalidNamespace'],
  [224, 'QueryFeatureNotAllowed: server-side JavaScript'],
  [40323, 'a stage with several names'],
  [40324, 'an unknown stage'],
  [40415, 'an unknown field'],
  [40602, 'a stage that must be first'],
]);

const canonical = (bytes: Buffer): string => EJSON.stringify(deserialize(bytes, { promoteValues: false }), { relaxed: false });
const show = (bytes: Buffer): string => EJSON.stringify(deserialize(bytes, { promoteValues: false }), { relaxed: true });

/** A document's bytes less its top-level tag (types kept exactly), canonical. */
function withoutTag(bytes: Buffer): string {
  const doc = deserialize(bytes, { promoteValues: false }) as Doc;
  delete doc[TAG];
  return EJSON.stringify(doc, { relaxed: false });
}

function taggedFor(bytes: Buffer, slug: string): boolean {
  const doc = deserialize(bytes, { promoteValues: false }) as Doc;
  return doc[TAG] === slug;
}

export class OracleMismatch extends Error {}

function mismatch(what: string, c: OracleCase, details: string): never {
  throw new OracleMismatch(`${what}\n  subject: ${c.subject}\n  command: ${EJSON.stringify(c.command)}\n${details}`);
}

/** The documents a database of its own holds for the subject, and the physical documents of every app. */
export function buildServers(c: OracleCase): { dedicated: MingoServer; physical: MingoServer } {
  const dedicated = new MingoServer({ reservedField: TAG, defaultBatchSize: 2 });
  const physical = new MingoServer({ defaultBatchSize: 2 });
  const own = c.world.apps[c.subject] ?? {};
  for (const [coll, docs] of Object.entries(own)) {
    dedicated.database(APP_DB).set(coll, docs.map((d) => encode(storedForm(d))));
  }
  for (const [slug, colls] of Object.entries(c.world.apps)) {
    for (const [coll, docs] of Object.entries(colls)) {
      const stored = docs.map((d) => encode({ ...storedForm(d), [TAG]: slug }));
      if (slug === c.subject) {
        // Planted documents interleave with the app's own, so that natural order is exercised too.
        const planted = (c.world.planted[coll] ?? []).map((d) => encode(d));
        const mixed: Buffer[] = [];
        for (let i = 0; i < Math.max(stored.length, planted.length); i++) {
          if (i < planted.length) mixed.push(planted[i]!);
          if (i < stored.length) mixed.push(stored[i]!);
        }
        physical.database(DATABASE).set(`${slug}_${coll}`, mixed);
      } else physical.database(DATABASE).set(`${slug}_${coll}`, stored);
    }
  }
  for (const [coll, docs] of Object.entries(c.world.planted)) {
    const name = `${c.subject}_${coll}`;
    if (!physical.database(DATABASE).has(name)) physical.database(DATABASE).set(name, docs.map((d) => encode(d)));
  }
  return { dedicated, physical };
}

/** A seeded document as a server stores it: `_id` first, no top-level tag (the app never wrote one). */
function storedForm(doc: Doc): Doc {
  const { _id, [TAG]: _tag, ...rest } = doc;
  return _id === undefined ? rest : { _id, ...rest };
}

interface Snapshot {
  readonly collections: Map<string, Buffer[]>;
}

function snapshot(server: MingoServer, db: string): Snapshot {
  return { collections: new Map([...server.database(db)].map(([k, v]) => [k, [...v]])) };
}

interface Proxied {
  readonly refused?: CommandError;
  /** The reply bodies the app gets. */
  readonly replies: Buffer[];
}

/** The replies the proxy would send the app, for one command and its cursor's getMores. */
function throughProxy(scope: AppScope, c: OracleCase, physical: MingoServer, body: Buffer): Proxied {
  const sequences: DocumentSequence[] = (c.sequences ?? []).map((s) => ({
    identifier: s.identifier,
    documents: s.documents.map((d) => Buffer.from(serialize(d))),
  }));
  const name = Object.keys(c.command)[0]!;
  const spec = lookupCommand(name);
  if (!spec) throw new Error(`no command ${name}`);
  let rewritten: RewrittenCommand;
  try {
    // As the proxy: the body decoded without promoting values (src/session/client-connection.ts).
    rewritten = rewriteCommand(scope, spec, name, decodeDocument(body), sequences);
  } catch (err) {
    if (err instanceof CommandError) return { refused: err, replies: [] };
    throw err;
  }
  const first = rewriteReply(scope, rewritten.reply, physical.run(encodeDocument(rewritten.body), rewritten.sequences));
  const replies = [first];
  const view: CursorView | undefined = rewritten.reply.kind === 'cursor' ? rewritten.reply.view : undefined;
  let id = cursorId(first);
  for (let i = 0; id !== 0n && view && i < 1000; i++) {
    const getMore = encode({ getMore: toLong(id), collection: cursorCollection(first), $db: APP_DB });
    let more: RewrittenCommand;
    try {
      more = rewriteCommand(scope, lookupCommand('getMore')!, 'getMore', decodeDocument(getMore), []);
    } catch (err) {
      if (err instanceof CommandError) {
        throw new OracleMismatch(`the proxy refused the getMore of a cursor it opened: ${err.code} ${err.message}\n  command: ${EJSON.stringify(c.command)}`);
      }
      throw err;
    }
    const reply = rewriteCursorBatch(scope, view, physical.run(encodeDocument(more.body), []));
    replies.push(reply);
    id = cursorId(reply);
  }
  return { replies };
}

function dedicatedReplies(dedicated: MingoServer, body: Buffer, c: OracleCase): Buffer[] {
  const sequences: DocumentSequence[] = (c.sequences ?? []).map((s) => ({
    identifier: s.identifier,
    documents: s.documents.map((d) => Buffer.from(serialize(d))),
  }));
  const first = dedicated.run(body, sequences);
  const replies = [first];
  let id = cursorId(first);
  for (let i = 0; id !== 0n && i < 1000; i++) {
    const reply = dedicated.run(encode({ getMore: toLong(id), collection: cursorCollection(first), $db: APP_DB }));
    replies.push(reply);
    id = cursorId(reply);
  }
  return replies;
}

const toLong = (id: bigint): Long => Long.fromBigInt(id);

function cursorId(reply: Buffer): bigint {
  const doc = deserialize(reply, { useBigInt64: true }) as Doc;
  const cursor = doc.cursor as Doc | undefined;
  const id = cursor?.id;
  return typeof id === 'bigint' ? id : 0n;
}

/** The collection part of a cursor's namespace, as drivers send it in getMore. */
function cursorCollection(reply: Buffer): string {
  const cursor = (decodeStored(reply).cursor ?? {}) as Doc;
  const ns = String(cursor.ns ?? '');
  return ns.slice(ns.indexOf('.') + 1);
}

/** The logical collection a pipeline's `$out` replaces, if any (its planted documents go with it). */
function outTarget(command: Doc): string | undefined {
  const pipeline = command.pipeline;
  if (command.aggregate === undefined || !Array.isArray(pipeline)) return undefined;
  const last = pipeline[pipeline.length - 1] as Doc | undefined;
  if (!last || !('$out' in last)) return undefined;
  const out = last.$out;
  return typeof out === 'string' ? out : String((out as Doc).coll);
}

/**
 * Runs the case through both worlds and checks the oracle property; throws OracleMismatch with the
 * details when it does not hold. Returns the refusal (nothing ran) or the app's replies.
 */
export function checkCase(c: OracleCase, options: { exposeTag?: boolean } = {}): OracleResult {
  const scope = makeScope(c.subject, DATABASE, TAG, options.exposeTag ?? false);
  const { dedicated, physical } = buildServers(c);
  const before = snapshot(physical, DATABASE);
  const body = encode({ ...c.command, $db: APP_DB });
  const proxied = throughProxy(scope, c, physical, body);
  if (proxied.refused) {
    checkUnchanged(c, before, snapshot(physical, DATABASE));
    return { refused: proxied.refused, replies: [] };
  }
  const expected = dedicatedReplies(dedicated, body, c);
  const got = proxied.replies;
  const exp = expected.map(canonical).join('\n');
  const act = got.map(canonical).join('\n');
  if (exp !== act) {
    mismatch('different replies', c, `  dedicated: ${expected.map(show).join('\n             ')}\n  proxied:   ${got.map(show).join('\n             ')}`);
  }
  checkEffects(c, before, snapshot(physical, DATABASE), snapshot(dedicated, APP_DB));
  return { replies: got.map((r) => deserialize(r, { promoteValues: false }) as Doc) };
}

function checkUnchanged(c: OracleCase, before: Snapshot, after: Snapshot): void {
  const names = new Set([...before.collections.keys(), ...after.collections.keys()]);
  for (const name of names) {
    const a = (before.collections.get(name) ?? []).map(canonical).join('\n');
    const b = (after.collections.get(name) ?? []).map(canonical).join('\n');
    if (a !== b) mismatch(`a refused command changed ${name}`, c, '');
  }
}

function checkEffects(c: OracleCase, before: Snapshot, after: Snapshot, dedicated: Snapshot): void {
  const prefix = `${c.subject}_`;
  const out = outTarget(c.command);
  const names = new Set([...before.collections.keys(), ...after.collections.keys()]);
  for (const name of names) {
    const was = before.collections.get(name) ?? [];
    const now = after.collections.get(name) ?? [];
    if (!name.startsWith(prefix)) {
      // Another app's collection (the look-alike slug's included): not a byte changed, none created.
      if (was.length !== now.length || was.some((b, i) => !b.equals(now[i]!))) {
        mismatch(`another app's collection ${name} changed`, c, `  before: ${was.map(show).join(' ')}\n  after:  ${now.map(show).join(' ')}`);
      }
      continue;
    }
    const logical = name.slice(prefix.length);
    // Planted documents: exactly the ones there before, byte for byte and in order (a $out replaces
    // its target collection whole, as it does on a server: nothing of it can stay).
    const plantedBefore = was.filter((b) => !taggedFor(b, c.subject));
    const plantedNow = now.filter((b) => !taggedFor(b, c.subject));
    const replaced = out === logical && plantedNow.length === 0;
    if (!replaced && (plantedBefore.length !== plantedNow.length || plantedBefore.some((b, i) => !b.equals(plantedNow[i]!)))) {
      mismatch(`documents planted in ${name} were touched, or an untagged document was written`, c, `  before: ${plantedBefore.map(show).join(' ')}\n  after:  ${plantedNow.map(show).join(' ')}`);
    }
    const own = now.filter((b) => taggedFor(b, c.subject)).map(withoutTag);
    const ded = (dedicated.collections.get(logical) ?? []).map(canonical);
    if (own.join('\n') !== ded.join('\n')) {
      mismatch(`collection ${logical} differs from the dedicated one`, c, `  dedicated: ${ded.join('\n             ')}\n  physical:  ${own.join('\n             ')}`);
    }
  }
  for (const [logical, docs] of dedicated.collections) {
    if (docs.length > 0 && !after.collections.has(prefix + logical)) mismatch(`collection ${logical} missing physically`, c, '');
  }
}
