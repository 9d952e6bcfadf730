import { Binary } from 'bson';
import { commandError } from './errors.js';
import type { AppScope } from './scope.js';

/**
 * The one namespace resolver (docs/security.md, "Physical scoping"): every namespace-bearing field of every command goes
 * through `physicalCollection`, and every name in a reply comes back through `logicalCollection` /
 * `logicalNamespace`. Whatever `$db` an app uses, its collections live in the shared physical database
 * as `<slug>_<collection>`.
 */

/** The server's limit on "database.collection" (MongoDB 4.4+), in bytes. */
export const MAX_NAMESPACE_BYTES = 255;

/** The physical name of the app's collection `name`, or InvalidNamespace (73). */
export function physicalCollection(scope: AppScope, name: unknown, field: string): string {
  // Every request names a collection: the checks below ran once for a name this scope already accepted.
  let known = accepted.get(scope);
  if (known === undefined) {
    known = new Map();
    accepted.set(scope, known);
  }
  if (typeof name === 'string') {
    const physical = known.get(name);
    if (physical !== undefined) return physical;
  }
  const physical = checkCollection(scope, name, field);
  if (known.size < ACCEPTED_NAMES_CACHED) known.set(physical.slice(scope.prefix.length), physical);
  return physical;
}

/** Names each scope accepted (scopes are per connection and app; the entries go with them). */
const accepted = new WeakMap<AppScope, Map<string, string>>();
const ACCEPTED_NAMES_CACHED = 1000;

function checkCollection(scope: AppScope, name: unknown, field: string): string {
  if (name instanceof Binary) {
    throw commandError('InvalidNamespace', `${field}: collection UUIDs are not accepted by mdb-runtime; name the collection`);
  }
  if (typeof name !== 'string') {
    throw commandError('InvalidNamespace', `${field}: collection name must be a string, found ${typeName(name)}`);
  }
  if (name.length === 0) throw commandError('InvalidNamespace', `${field}: Invalid empty namespace specified`);
  if (name.includes('$')) throw commandError('InvalidNamespace', `${field}: collection name '${name}' may not contain '$'`);
  if (name.includes('\0')) throw commandError('InvalidNamespace', `${field}: collection name may not contain a NUL byte`);
  if (name.startsWith('system.')) {
    throw commandError('InvalidNamespace', `${field}: system collections ('${name}') are not available to apps`);
  }
  const physical = scope.prefix + name;
  if (Buffer.byteLength(`${scope.database}.${physical}`) > MAX_NAMESPACE_BYTES) {
    throw commandError(
      'InvalidNamespace',
      `${field}: collection name '${name}' is too long: with the app prefix the namespace exceeds ${MAX_NAMESPACE_BYTES} bytes`,
    );
  }
  return physical;
}

/** The app's name for a physical collection, or undefined when it is not the app's. */
export function logicalCollection(scope: AppScope, physical: string): string | undefined {
  return physical.startsWith(scope.prefix) && physical.length > scope.prefix.length ? physical.slice(scope.prefix.length) : undefined;
}

/**
 * Maps a physical "db.collection" back to "<appDb>.<collection>". Command namespaces such as
 * "db.$cmd.aggregate" keep their suffix. Anything outside the app's space is returned as undefined.
 */
export function logicalNamespace(scope: AppScope, appDb: string, ns: string): string | undefined {
  const dbPrefix = scope.database + '.';
  if (!ns.startsWith(dbPrefix)) return undefined;
  const coll = ns.slice(dbPrefix.length);
  if (coll.startsWith('$cmd')) return `${appDb}.${coll}`;
  const logical = logicalCollection(scope, coll);
  return logical === undefined ? undefined : `${appDb}.${logical}`;
}

/**
 * An app database name (the `$db` of a command, or the database part of a target): checked like the
 * server does, then only remembered to map names back; it never reaches the upstream.
 */
export function checkAppDatabase(db: unknown, field: string): string {
  if (typeof db !== 'string' || db.length === 0) throw commandError('InvalidNamespace', `${field}: database name must be a non-empty string`);
  if (/[/\\. "$*<>:|?\0]/.test(db) || Buffer.byteLength(db) > 63) {
    throw commandError('InvalidNamespace', `${field}: Invalid database name: '${db}'`);
  }
  return db;
}

/**
 * A target in another database (`{db, coll}` of $lookup/$out/$merge, renameCollection's `to`) is
 * refused: an app lives in one logical database per command.
 */
export function sameDatabase(appDb: string, targetDb: unknown, field: string): void {
  if (targetDb === undefined) return;
  const db = checkAppDatabase(targetDb, field);
  if (db !== appDb) {
    throw commandError('Unauthorized', `${field}: cross-database target '${db}' refused; mdb-runtime keeps a command within its database ('${appDb}')`);
  }
}

/** Splits "db.collection" (the form renameCollection uses). */
export function splitNamespace(ns: unknown, field: string): { db: string; coll: string } {
  if (typeof ns !== 'string') throw commandError('InvalidNamespace', `${field}: namespace must be a string, found ${typeName(ns)}`);
  const dot = ns.indexOf('.');
  if (dot <= 0) throw commandError('InvalidNamespace', `${field}: Invalid namespace specified '${ns}'`);
  return { db: checkAppDatabase(ns.slice(0, dot), field), coll: ns.slice(dot + 1) };
}

export function typeName(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'missing';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'object' && '_bsontype' in v) return String((v as { _bsontype: unknown })._bsontype).toLowerCase();
  return typeof v;
}
