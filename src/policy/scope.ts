/**
 * What the policy layer knows about the app a command runs as. Pure data: the rewrite functions take
 * it as an argument and never look anything up.
 */
export interface AppScope {
  readonly slug: string;
  /** `<slug>_`: every physical collection of the app starts with it (DESIGN.md rule 3). */
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

export function isDoc(v: unknown): v is Doc {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !('_bsontype' in v) && !(v instanceof Date) && !(v instanceof Uint8Array);
}
