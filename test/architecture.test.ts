import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { cruise, type ICruiseOptions, type ICruiseResult, type IViolation } from 'dependency-cruiser';
import extractDepcruiseOptions from 'dependency-cruiser/config-utl/extract-depcruise-options';
import extractTSConfig from 'dependency-cruiser/config-utl/extract-ts-config';

/**
 * The layering of docs/architecture.md, checked: dependency-cruiser runs over src/ with the rules of
 * .dependency-cruiser.cjs (no import cycles, each layer imports only what it may). The rules are also
 * run over a small tree that breaks each of them, so a rule that stopped matching would fail here too.
 */

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const tsConfig = extractTSConfig(path.join(root, 'tsconfig.json'));
const temps: string[] = [];

afterAll(() => {
  for (const dir of temps) fs.rmSync(dir, { recursive: true, force: true });
});

async function rules(): Promise<ICruiseOptions> {
  return extractDepcruiseOptions(path.join(root, '.dependency-cruiser.cjs'));
}

async function run(baseDir: string, options: ICruiseOptions): Promise<ICruiseResult> {
  const { output } = await cruise(['src'], { ...options, baseDir }, undefined, { tsConfig });
  if (typeof output === 'string') throw new Error(`dependency-cruiser answered text, not a result: ${output.slice(0, 200)}`);
  return output;
}

const describeViolation = (v: IViolation) =>
  `${v.rule.name}: ${v.from} -> ${v.to}${v.cycle ? ` (cycle ${v.cycle.map((c) => c.name).join(' -> ')})` : ''}`;

describe('the layering of src/ (docs/architecture.md)', () => {
  it('has no import cycle and no import against the layer order', async () => {
    const result = await run(root, await rules());
    expect(result.summary.totalCruised).toBeGreaterThan(100);
    const broken = result.summary.violations.filter((v) => v.rule.severity !== 'ignore').map(describeViolation);
    expect(broken, 'see docs/architecture.md for what each layer may import').toEqual([]);
  });

  it('lists as known exceptions only violations that still occur', async () => {
    const options = await rules();
    const known = options.knownViolations ?? [];
    // The list is short on purpose; each entry says why and that it is to be removed.
    expect(known.length).toBeLessThanOrEqual(3);
    for (const k of known) expect(k.comment ?? '').toMatch(/to be removed/);
    const result = await run(root, options);
    const ignored = result.summary.violations.filter((v) => v.rule.severity === 'ignore');
    for (const k of known) {
      const still = ignored.some((v) => v.rule.name === k.rule.name && v.from === k.from && v.to === k.to);
      expect(still, `known exception ${describeViolation(k)} no longer occurs: remove it from .dependency-cruiser.cjs`).toBe(true);
    }
    expect(ignored.length).toBe(known.length);
  });

  it('fails a tree that breaks each rule, and passes the imports the layers may make', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mdb-architecture-'));
    temps.push(dir);
    const files: Record<string, string> = {
      // Broken: wire imports policy; policy imports indexes (a type import counts too).
      'src/wire/frame.ts': "import { p } from '../policy/p.js';\nexport const w = p;\n",
      'src/policy/p.ts': "import type { I } from '../indexes/i.js';\nexport const p: I = 1;\n",
      'src/indexes/i.ts': 'export type I = number;\n',
      // Broken: observability imports policy and upstream internals.
      'src/observability/metrics.ts': "import { p } from '../policy/p.js';\nimport { b } from '../upstream/pool.js';\nexport const m = p + b;\n",
      'src/upstream/pool.ts': "import { w } from '../wire/frame.js';\nexport const b = w;\n",
      // Broken: a cycle inside config, and config importing apps.
      'src/config/one.ts': "import { two } from './two.js';\nexport const one = () => two;\n",
      'src/config/two.ts': "import { one } from './one.js';\nimport { y } from '../apps/y.js';\nexport const two = () => [one, y];\n",
      'src/apps/y.ts': 'export const y = 1;\n',
      // Broken: an import of a file that does not exist.
      'src/apps/z.ts': "import { gone } from './missing.js';\nexport const z = gone;\n",
      // Broken: the cli reaching into the session layer.
      'src/cli/main.ts': "import type { S } from '../session/s.js';\nexport type K = S;\n",
      // Broken: the composition root importing a test helper (it may import any part of the product).
      'src/testing/helper.ts': "import { m } from '../observability/metrics.js';\nexport const h = m;\n",
      // Allowed: the session uses wire, policy, upstream, apps and the meters; the root imports anything.
      'src/session/s.ts':
        "import { w } from '../wire/frame.js';\nimport { b } from '../upstream/pool.js';\nimport { y } from '../apps/y.js';\nimport { m } from '../observability/metrics.js';\nexport interface S { n: typeof w | typeof b | typeof y | typeof m }\n",
      'src/runtime.ts':
        "import { m } from './observability/metrics.js';\nimport type { K } from './cli/main.js';\nimport { h } from './testing/helper.js';\nexport const r: K | number = m + h;\n",
    };
    for (const [file, text] of Object.entries(files)) {
      fs.mkdirSync(path.dirname(path.join(dir, file)), { recursive: true });
      fs.writeFileSync(path.join(dir, file), text);
    }
    const options = await rules();
    const result = await run(dir, { ...options, knownViolations: [] });
    const found = result.summary.violations.map((v) => `${v.rule.name}: ${v.from} -> ${v.to}`).sort();
    expect(found).toEqual(
      [
        'layer-wire: src/wire/frame.ts -> src/policy/p.ts',
        'layer-policy: src/policy/p.ts -> src/indexes/i.ts',
        'layer-observability: src/observability/metrics.ts -> src/policy/p.ts',
        'layer-observability: src/observability/metrics.ts -> src/upstream/pool.ts',
        'layer-config: src/config/two.ts -> src/apps/y.ts',
        'no-circular: src/config/one.ts -> src/config/two.ts',
        'no-unresolvable: src/apps/z.ts -> ./missing.js',
        'layer-cli: src/cli/main.ts -> src/session/s.ts',
        'no-test-helpers: src/runtime.ts -> src/testing/helper.ts',
      ].sort(),
    );
  });
});
