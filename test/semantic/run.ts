/**
 * Running oracle properties: case counts for `npm test` and for the long mode (`MDB_TEST_LONG=1`, which
 * `npm run test:long` sets), a tally of what ran and what the proxy refused, printed once per file.
 * A failure prints fast-check's seed and path; `MDB_TEST_SEED=<seed>` runs the same cases again.
 */
import fc from 'fast-check';
import { afterAll, expect, it } from 'vitest';
import { checkCase, DOCUMENTED_REFUSALS, type OracleCase } from '../helpers/mingo-oracle.js';

export const LONG = process.env.MDB_TEST_LONG === '1';
/** Long tests run for minutes on two cores. */
export const LONG_TIMEOUT = 3_600_000;

export class Tally {
  cases = 0;
  /** Cases whose command failed on both servers alike (an error is a result too, but a weaker one). */
  failed = 0;
  readonly refused = new Map<number, number>();

  constructor(readonly file: string) {
    afterAll(() => {
      const refusals = [...this.refused].map(([code, n]) => `${code}×${n}`).join(' ') || 'none';
      console.log(
        `[semantic] ${this.file}: ${this.cases} generated cases ran through the oracle (failed alike on both servers: ${this.failed}; refused by the proxy: ${refusals})`,
      );
    });
  }
}

/**
 * One oracle property: `runs` cases (`longRuns` in the long mode). A refusal must be one the proxy
 * documents, and at most `maxRefused` of the cases may be refused (a generator whose cases are all
 * refused would prove nothing).
 */
export function property(
  tally: Tally,
  name: string,
  arb: fc.Arbitrary<OracleCase>,
  options: { runs: number; longRuns: number; maxRefused?: number; maxFailed?: number },
): void {
  const numRuns = LONG ? options.longRuns : options.runs;
  it(
    `${name} (${numRuns} cases)`,
    async () => {
      let refused = 0;
      let ran = 0;
      let failed = 0;
      const codes = new Map<number, number>();
      const seed = process.env.MDB_TEST_SEED === undefined ? undefined : Number(process.env.MDB_TEST_SEED);
      await fc.assert(
        fc.asyncProperty(arb, async (c) => {
          // Long runs take minutes: let the worker answer the test runner between batches of cases.
          if (ran % 500 === 499) await new Promise<void>((resolve) => setImmediate(resolve));
          const result = checkCase(c);
          ran++;
          if (result.refused) {
            refused++;
            const code = result.refused.code;
            codes.set(code, (codes.get(code) ?? 0) + 1);
            if (!DOCUMENTED_REFUSALS.has(code)) throw new Error(`undocumented refusal ${code}: ${result.refused.message}`);
          } else if (result.replies[0]?.ok !== 1 && Number(result.replies[0]?.ok) !== 1) failed++;
        }),
        { numRuns, ...(seed === undefined ? {} : { seed }) },
      );
      tally.cases += ran;
      tally.failed += failed;
      for (const [code, n] of codes) tally.refused.set(code, (tally.refused.get(code) ?? 0) + n);
      expect(ran).toBe(numRuns);
      expect(refused / ran).toBeLessThanOrEqual(options.maxRefused ?? 0.3);
      // Most generated commands must run: errors alike on both sides prove less than results.
      expect(failed / ran).toBeLessThanOrEqual(options.maxFailed ?? 0.25);
    },
    LONG ? LONG_TIMEOUT : 60_000,
  );
}
