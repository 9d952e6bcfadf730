/**
 * The oracle property for aggregation: generated pipelines over a collection ($match, $project,
 * $addFields over $$ROOT, $group, $replaceRoot/$replaceWith, ...), with stages that read other
 * collections ($lookup in every form, nested, $unionWith with and without a collection, $graphLookup,
 * $facet) and a final $out or $merge in every form; and database-level $documents pipelines.
 */
import fc from 'fast-check';
import { describe } from 'vitest';
import { collection, document, oracleCase, outputStage, pipeline } from './arbitraries.js';
import { property, Tally } from './run.js';

const tally = new Tally('pipelines.property');

describe('pipelines mean the same through the proxy as on a database of the app\'s own', () => {
  property(
    tally,
    'aggregate over a collection, sub-pipelines two deep',
    oracleCase(() =>
      fc.tuple(collection, pipeline(2), fc.integer({ min: 1, max: 3 })).map(([aggregate, p, batchSize]) => ({
        command: { aggregate, pipeline: p, cursor: { batchSize } },
      })),
    ),
    { runs: 1500, longRuns: 30_000, maxRefused: 0 },
  );

  property(
    tally,
    'aggregate ending in $out or $merge',
    oracleCase(() =>
      fc.tuple(collection, pipeline(1), outputStage).map(([aggregate, p, out]) => ({
        command: { aggregate, pipeline: [...p, out], cursor: {} },
      })),
    ),
    { runs: 1000, longRuns: 20_000, maxRefused: 0 },
  );

  property(
    tally,
    'database-level aggregate over $documents',
    oracleCase(() =>
      fc.tuple(fc.array(document(fc.integer({ min: 1, max: 9 })), { maxLength: 4 }), pipeline(1), fc.option(outputStage, { nil: undefined })).map(([docs, p, out]) => ({
        command: { aggregate: 1, pipeline: [{ $documents: docs }, ...p, ...(out ? [out] : [])], cursor: {} },
      })),
    ),
    { runs: 300, longRuns: 10_000, maxRefused: 0 },
  );
});
