/**
 * The oracle property for writes: insert (body documents and kind-1 sequences, documents carrying the
 * tag's name), update (operator, replacement and pipeline updates, upserts of all three kinds,
 * arrayFilters, multi), delete, and findAndModify in both spellings (upsert, new, fields, sort, remove,
 * arrayFilters, pipeline updates).
 */
import fc from 'fast-check';
import { describe } from 'vitest';
import { TAG } from '../helpers/mingo-oracle.js';
import type { Doc } from '../helpers/mingo-server.js';
import { collection, document, filter, oracleCase, projection, readIds, SLUGS, sort, update } from './arbitraries.js';
import { property, Tally } from './run.js';

const tally = new Tally('writes.property');

/** `_id`s an upsert may name: the apps' own space (a planted `_id` is a duplicate key only physically). */
const upsertIds = [1, 2, 3, 7, 'u'];

/** A document to insert, sometimes with the tag's name: the app's own slug (allowed) or another (refused). */
function insertable(subject: string): fc.Arbitrary<Doc> {
  return fc.tuple(document(fc.integer({ min: 1, max: 9 })), fc.constantFrom<unknown>(undefined, undefined, undefined, undefined, undefined, undefined, subject, subject, SLUGS.find((s) => s !== subject))).map(([d, tag]) => {
    const doc: Doc = { ...d };
    if (tag !== undefined) doc[TAG] = tag;
    return doc;
  });
}

function statement(subject: string): fc.Arbitrary<Doc> {
  return fc.tuple(update(subject), fc.boolean(), fc.boolean()).chain(([u, upsert, multi]) =>
    filter({ ids: upsert ? upsertIds : readIds }).map((q): Doc => ({ q, ...u, ...(upsert ? { upsert } : {}), ...(multi ? { multi } : {}) })),
  );
}

describe('writes mean the same through the proxy as on a database of the app\'s own', () => {
  property(
    tally,
    'insert, documents in the body',
    oracleCase((s) =>
      fc.tuple(collection, fc.array(insertable(s), { minLength: 1, maxLength: 4 }), fc.boolean()).map(([insert, documents, ordered]) => ({
        command: { insert, documents, ordered },
      })),
    ),
    { runs: 400, longRuns: 10_000, maxRefused: 0.6 },
  );

  property(
    tally,
    'insert, documents as a kind-1 sequence',
    oracleCase((s) =>
      fc.tuple(collection, fc.array(insertable(s), { minLength: 1, maxLength: 4 })).map(([insert, documents]) => ({
        command: { insert },
        sequences: [{ identifier: 'documents', documents }],
      })),
    ),
    { runs: 400, longRuns: 10_000, maxRefused: 0.6 },
  );

  property(
    tally,
    'update (operators, replacements, pipelines, upserts, arrayFilters, multi)',
    oracleCase((s) =>
      fc.tuple(collection, fc.array(statement(s), { minLength: 1, maxLength: 2 }), fc.boolean()).map(([coll, updates, ordered]) => ({
        command: { update: coll, updates, ordered },
      })),
    ),
    { runs: 1200, longRuns: 30_000 },
  );

  property(
    tally,
    'update statements as a kind-1 sequence',
    oracleCase((s) =>
      fc.tuple(collection, fc.array(statement(s), { minLength: 1, maxLength: 2 })).map(([coll, updates]) => ({
        command: { update: coll },
        sequences: [{ identifier: 'updates', documents: updates }],
      })),
    ),
    { runs: 300, longRuns: 5_000 },
  );

  property(
    tally,
    'delete',
    oracleCase(() =>
      fc.tuple(collection, fc.array(fc.record({ q: filter({ ids: readIds }), limit: fc.constantFrom(0, 1) }), { minLength: 1, maxLength: 2 })).map(([coll, deletes]) => ({
        command: { delete: coll, deletes },
      })),
    ),
    { runs: 300, longRuns: 10_000, maxRefused: 0 },
  );

  property(
    tally,
    'findAndModify (both spellings)',
    oracleCase((s) =>
      fc
        .tuple(
          fc.constantFrom('findAndModify', 'findandmodify'),
          collection,
          fc.boolean(),
          update(s),
          fc.record({ sort, fields: projection, new: fc.boolean() }, { requiredKeys: [] }),
          fc.boolean(),
        )
        .chain(([name, coll, remove, u, opts, upsert]) =>
          filter({ ids: upsert && !remove ? upsertIds : readIds }).map((query) => ({
            command: {
              [name]: coll,
              query,
              ...(remove ? { remove: true } : { update: u.u, ...(u.arrayFilters ? { arrayFilters: u.arrayFilters } : {}), ...(upsert ? { upsert } : {}) }),
              ...opts,
            },
          })),
        ),
    ),
    { runs: 1000, longRuns: 30_000 },
  );
});
