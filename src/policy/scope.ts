import { Binary, BSONRegExp, BSONSymbol, Code, DBRef, Decimal128, Double, Int32, Long, MaxKey, MinKey, ObjectId, Timestamp, UUID } from 'bson';

/**
 * What the policy layer knows about the app a command runs as. Pure data: the rewrite functions take
 * it as an argument and never look anything up.
 */
export interface AppScope {
  readonly slug: string;
  /** `<slug>_`: every physical collection of the app starts with it (docs/security.md, "Physical scoping"). */
  readonly prefix: string;
  /** The shared physical database (`upstream.database`). */
  readonly database: string;
  /** The field every document of the app carries (`app_id` by default). */
  readonly tagField: string;
  /** Whether reads return the tag field (manifest `expose_tag`). */
  readonly exposeTag: boolean;
}

export const PREFIX_SEPARATOR = '_';

export function makeScope(slug: string, database: string, tagField: string, exposeTag = false): AppScope {
  return { slug, prefix: slug + PREFIX_SEPARATOR, database, tagField, exposeTag };
}

/** One collection a command reads, writes or indexes: what RBAC checks. Names are the app's own. */
export interface Access {
  action: 'read' | 'write' | 'indexes';
  collection: string;
}

/** A BSON document as the policy layer sees it: values are unknown until checked. */
export type Doc = Record<string, unknown>;

/**
 * Whether `v` is a BSON document: a plain object, as the decoder (decode.ts) makes every embedded
 * document and the proxy builds its own. Decided by the prototype, never by the keys: a document with
 * a field named `_bsontype` is still a document, and an instance of a BSON class is not one.
 */
export function isDoc(v: unknown): v is Doc {
  if (typeof v !== 'object' || v === null) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** The classes js-bson decodes the BSON scalar types into (promoteValues: false, bsonRegExp: true). */
const SCALAR_PROTOTYPES: ReadonlySet<unknown> = new Set<unknown>(
  [ObjectId, Binary, UUID, Long, Int32, Double, Decimal128, Timestamp, MinKey, MaxKey, BSONRegExp, BSONSymbol, Date].map((c) => c.prototype),
);

/**
 * Whether `v` is a BSON value with no keys a guard must see: a JS string, number, bigint, boolean, null
 * or undefined, an instance of the class of a scalar type, or a RegExp or byte array (which the proxy's
 * own commands may hold; js-bson encodes them as a regex and binary). Not a document, an array, code
 * (Code and CodeWScope) or a DBRef instance (what js-bson makes of a DBPointer).
 */
export function isBsonScalar(v: unknown): boolean {
  if (v === null || v === undefined) return true;
  switch (typeof v) {
    case 'string':
    case 'number':
    case 'bigint':
    case 'boolean':
      return true;
    case 'object':
      return SCALAR_PROTOTYPES.has(Object.getPrototypeOf(v)) || v instanceof RegExp || v instanceof Uint8Array;
    default:
      return false;
  }
}

/** The server's name of a value's BSON type, for error messages (`int`, `objectId`, `javascript`...). */
export function bsonTypeName(v: unknown): string {
  if (v === null) return 'null';
  if (v === undefined) return 'undefined';
  if (Array.isArray(v)) return 'array';
  if (isDoc(v)) return 'object';
  switch (typeof v) {
    case 'string':
      return 'string';
    case 'number':
      return Number.isInteger(v) && Math.abs(v) < 2 ** 31 ? 'int' : 'double';
    case 'bigint':
      return 'long';
    case 'boolean':
      return 'bool';
    case 'object':
      break;
    default:
      return typeof v;
  }
  if (v instanceof Date) return 'date';
  if (v instanceof RegExp) return 'regex';
  if (v instanceof Uint8Array) return 'binData';
  if (v instanceof Code) return v.scope ? 'javascriptWithScope' : 'javascript';
  const names: [abstract new (...args: never[]) => unknown, string][] = [
    [Int32, 'int'], [Double, 'double'], [Timestamp, 'timestamp'], [Long, 'long'], [Decimal128, 'decimal'], [ObjectId, 'objectId'],
    [Binary, 'binData'], [BSONRegExp, 'regex'], [BSONSymbol, 'symbol'], [MinKey, 'minKey'], [MaxKey, 'maxKey'], [DBRef, 'dbPointer'],
  ];
  for (const [cls, name] of names) if (v instanceof cls) return name;
  return 'unknown';
}
