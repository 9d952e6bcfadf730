/** The oracle property for reads: find (filter, projection, sort, skip, limit, batches), count, distinct. */
import fc from 'fast-check';
import { describe } from 'vitest';
import { collection, filter, oracleCase, projection, readIds, sort } from './arbitraries.js';
import { property, Tally } from './run.js';

const tally = new Tally('reads.property');

describe('reads mean the same through the proxy as on a database of the app\'s own', () => {
  property(
    tally,
    'find',
    oracleCase(() =>
      fc
        .record(
          {
            filter: filter({ ids: readIds }),
            projection,
            sort,
            skip: fc.integer({ min: 0, max: 2 }),
            limit: fc.integer({ min: -2, max: 3 }),
            batchSize: fc.integer({ min: 1, max: 3 }),
          },
          { requiredKeys: [] },
        )
        .chain((opts) => collection.map((find) => ({ command: { find, ...opts } }))),
    ),
    { runs: 600, longRuns: 20_000, maxRefused: 0 },
  );

  property(
    tally,
    'find by exact _id (the point-read fast path)',
    oracleCase(() =>
      fc
        .tuple(collection, fc.constantFrom(...readIds), fc.option(projection, { nil: undefined }))
        .map(([find, id, p]) => ({ command: { find, filter: { _id: id }, ...(p ? { projection: p } : {}) } })),
    ),
    { runs: 200, longRuns: 5_000, maxRefused: 0 },
  );

  property(
    tally,
    'count',
    oracleCase(() =>
      fc
        .tuple(collection, filter({ ids: readIds }), fc.option(fc.integer({ min: 0, max: 2 }), { nil: undefined }), fc.option(fc.integer({ min: 1, max: 3 }), { nil: undefined }))
        .map(([count, query, skip, limit]) => ({ command: { count, query, ...(skip === undefined ? {} : { skip }), ...(limit === undefined ? {} : { limit }) } })),
    ),
    { runs: 200, longRuns: 5_000, maxRefused: 0 },
  );

  property(
    tally,
    'distinct',
    oracleCase(() =>
      fc
        .tuple(collection, fc.constantFrom('a', 'b', 'k', 'c.q', 'c.app_id', 'arr.q', 'arr.app_id', 's'), filter())
        .map(([distinct, key, query]) => ({ command: { distinct, key, query } })),
    ),
    { runs: 200, longRuns: 5_000, maxRefused: 0 },
  );
});
