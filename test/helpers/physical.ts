import { expect } from 'vitest';
import type { Collection, Document, MongoClient, Sort } from 'mongodb';
import type { TestProxy } from './proxy.js';

/**
 * The physical side of an app's sandbox, for tests that read or seed the upstream directly (README;
 * docs/security.md): app `<slug>`'s collection `<name>`, whatever `$db` the app
 * named, is the collection `<slug>_<name>` of the one shared physical database (runtime.yaml
 * `upstream.database`), and every document in it carries `<tag_field>: <slug>`.
 *
 * The mapping is spelled out here from the contract rather than imported from src/policy, so that a
 * change in the proxy's mapping makes these tests fail instead of silently following it.
 */

/** The default shared physical database and tag field (README, "Configuration"). */
export const DEFAULT_DATABASE = 'mdb_runtime';
export const DEFAULT_TAG_FIELD = 'app_id';

/** Where one app's data lives on the upstream. */
export interface Sandbox {
  /** The shared physical database. */
  readonly database: string;
  /** The app's slug: the collection prefix and the tag value. */
  readonly app: string;
  /** The field every stored document of the app carries. */
  readonly tagField: string;
}

/** App `app`'s sandbox behind a test proxy (its configured database and tag field). */
export function sandboxOf(proxy: Pick<TestProxy, 'database' | 'tagField'>, app: string): Sandbox {
  return { database: proxy.database, app, tagField: proxy.tagField };
}

/** The physical collection name of app `app`'s collection `collection`: `<slug>_<name>`. */
export function physicalName(app: string, collection: string): string {
  return `${app}_${collection}`;
}

/** The physical collection of the app's `collection`, on a client connected directly to the upstream. */
export function physicalCollection<T extends Document = Document>(client: MongoClient, sandbox: Sandbox, collection: string): Collection<T> {
  return client.db(sandbox.database).collection<T>(physicalName(sandbox.app, collection));
}

/** Stores `docs` directly in the app's physical collection, tagged as the proxy would have stored them. */
export async function seedPhysical(client: MongoClient, sandbox: Sandbox, collection: string, docs: Document[]): Promise<void> {
  await physicalCollection(client, sandbox, collection).insertMany(docs.map((d) => ({ ...d, [sandbox.tagField]: sandbox.app })));
}

/**
 * Every document stored in the app's `collection`, read directly from the upstream. Asserts that each
 * one carries the app's tag (exactly: the string slug), and returns them without it so that they
 * compare equal to what the app wrote; `withoutId` drops `_id` too.
 */
export async function readPhysical(
  client: MongoClient,
  sandbox: Sandbox,
  collection: string,
  options: { sort?: Sort; withoutId?: boolean } = {},
): Promise<Document[]> {
  let cursor = physicalCollection(client, sandbox, collection).find({});
  if (options.sort) cursor = cursor.sort(options.sort);
  const docs = await cursor.toArray();
  const untagged = docs.filter((d) => d[sandbox.tagField] !== sandbox.app);
  expect(untagged, `documents of ${sandbox.database}.${physicalName(sandbox.app, collection)} without ${sandbox.tagField}: '${sandbox.app}'`).toEqual([]);
  return docs.map((d) => {
    const { [sandbox.tagField]: _tag, ...rest } = d;
    if (options.withoutId) delete rest._id;
    return rest;
  });
}

/** The app's collections as the upstream lists them in the physical database (prefix removed, sorted). */
export async function physicalCollectionsOf(client: MongoClient, sandbox: Sandbox): Promise<string[]> {
  const prefix = physicalName(sandbox.app, '');
  const names = (await client.db(sandbox.database).listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name);
  return names.filter((n) => n.startsWith(prefix)).map((n) => n.slice(prefix.length)).sort();
}

/**
 * Nothing was stored under the names the app used: the logical database `logicalDb` the app named has
 * no collections at all, and the physical database holds none of `collections` unprefixed.
 */
export async function expectNothingUnderLogicalNames(
  client: MongoClient,
  sandbox: Sandbox,
  logicalDb: string,
  collections: string[],
): Promise<void> {
  if (logicalDb !== sandbox.database) {
    const inLogical = (await client.db(logicalDb).listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name);
    expect(inLogical, `collections in the logical database ${logicalDb}`).toEqual([]);
  }
  const inPhysical = (await client.db(sandbox.database).listCollections({}, { nameOnly: true }).toArray()).map((c) => c.name);
  expect(
    inPhysical.filter((n) => collections.includes(n)),
    `unprefixed collections in ${sandbox.database}`,
  ).toEqual([]);
}
