/**
 * The sandbox fails closed on every BSON value shape: for generated commands with every BSON type at
 * every position (arbitraries-bson.ts), everything the policy layer sends upstream satisfies the
 * invariant of invariant-check.ts, checked on the bytes — or the command is refused in the server's
 * error shape. A few thousand cases in `npm test`; `MDB_TEST_LONG=1` (`npm run test:long`) runs
 * over 100,000. `MDB_TEST_SEED=<seed>` replays a failure.
 */
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { makeScope } from '../../src/policy/scope.js';
import {
  aggregateCommand,
  countCommand,
  deleteCommand,
  distinctCommand,
  findAndModifyCommand,
  findCommand,
  insertCommand,
  SLUG,
  TAG,
  updateCommand,
  type GeneratedCommand,
} from './arbitraries-bson.js';
import { violations } from './invariant-check.js';
import { runBytes } from './run-bytes.js';

const LONG = process.env.MDB_TEST_LONG === '1';
const SEED = process.env.MDB_TEST_SEED === undefined ? undefined : Number(process.env.MDB_TEST_SEED);
const scope = makeScope(SLUG, 'mdb_runtime', TAG);

let total = 0;
const started = Date.now();
afterAll(() => {
  console.log(`[invariants] ${total} generated commands checked on their bytes in ${((Date.now() - started) / 1000).toFixed(1)} s`);
});

/**
 * One property: `runs` commands (`longRuns` in the long mode). At least `minAccepted` of them must get
 * through (a generator whose commands are all refused would prove nothing), and at least one must be
 * refused (the generator reaches the shapes the guards stop).
 */
function property(name: string, arb: fc.Arbitrary<GeneratedCommand>, runs: number, longRuns: number, minAccepted = 0.1): void {
  const numRuns = LONG ? longRuns : runs;
  it(
    `${name} (${numRuns} cases)`,
    () => {
      let accepted = 0;
      let refused = 0;
      const codes = new Map<string, number>();
      fc.assert(
        fc.property(arb, (cmd) => {
          const outcome = runBytes(scope, cmd);
          if (outcome.refused) {
            refused++;
            codes.set(outcome.refused.codeName, (codes.get(outcome.refused.codeName) ?? 0) + 1);
            expect(outcome.refused.code, outcome.refused.message).toBeGreaterThan(0);
            expect(outcome.refused.message.length).toBeGreaterThan(0);
            return;
          }
          accepted++;
          expect(violations(scope, outcome.canonical, outcome.sent, outcome.bodyBytes)).toEqual([]);
        }),
        { numRuns, ...(SEED === undefined ? {} : { seed: SEED }) },
      );
      total += accepted + refused;
      const refusals = [...codes].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c}×${n}`).join(' ');
      console.log(`[invariants] ${name}: ${accepted} sent upstream, ${refused} refused (${refusals})`);
      expect(accepted + refused).toBe(numRuns);
      expect(accepted / numRuns).toBeGreaterThanOrEqual(minAccepted);
      expect(refused).toBeGreaterThan(0);
    },
    LONG ? 3_600_000 : 60_000,
  );
}

describe('every command sent upstream keeps the sandbox, whatever BSON it was made of', () => {
  property('insert (body, hoisted into kind-1 as the data plane does, kind-1)', insertCommand, 1_200, 16_000);
  property('update (body and kind-1 statements; operator, replacement, pipeline; upserts)', updateCommand, 2_000, 30_000, 0.05);
  property('delete (body and kind-1 statements)', deleteCommand, 600, 8_000);
  property('findAndModify and findandmodify', findAndModifyCommand, 1_200, 16_000, 0.05);
  property('find', findCommand, 1_000, 14_000);
  property('count', countCommand, 500, 6_000);
  property('distinct', distinctCommand, 500, 6_000);
  property('aggregate, with sub-pipelines', aggregateCommand, 2_000, 30_000, 0.05);
});
