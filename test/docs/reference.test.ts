import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { generatedFiles } from '../../src/apps/reference.js';
import { MANIFEST_SCHEMA } from '../../src/apps/manifest-schema.js';

/** The schemas drive the reference pages: the committed files are what `npm run docs` writes. */

const root = new URL('../../', import.meta.url);
const read = (file: string) => fs.readFileSync(new URL(file, root), 'utf8');

describe('generated reference files are current (run `npm run docs` after changing a schema or SETTINGS)', () => {
  it.each(Object.entries(generatedFiles()))('%s', (file, expected) => {
    expect(fs.existsSync(new URL(file, root)), `${file} is missing: run npm run docs`).toBe(true);
    // toBe, not a diff of the whole file: the message names the command that fixes it.
    expect(read(file) === expected, `${file} differs from what npm run docs generates: run npm run docs`).toBe(true);
  });

  it('the manifest reference names every key of the schema', () => {
    const page = read('docs/manifest-reference.md');
    for (const key of Object.keys(MANIFEST_SCHEMA.properties as object)) expect(page).toContain(`| \`${key}\``);
    for (const key of ['managed_indexes.<collection>[].expireAfterSeconds', 'auth.roles.<role>.read', 'limits.max_documents_per_collection']) {
      expect(page).toContain(`| \`${key}\``);
    }
  });

  it('the generator script writes exactly these files', () => {
    const script = read('scripts/gen-reference.mjs');
    expect(script).toContain('generatedFiles');
    const pkg = JSON.parse(read('package.json')) as { scripts: Record<string, string>; files: string[] };
    expect(pkg.scripts.docs).toContain('scripts/gen-reference.mjs');
    expect(pkg.files).toEqual(expect.arrayContaining(['schema', 'docs']));
  });

  it('README links both pages and names the validate command', () => {
    const readme = read('README.md');
    expect(readme).toContain('](docs/manifest-reference.md)');
    expect(readme).toContain('](docs/runtime-reference.md)');
    expect(readme).toContain('mdb-runtime validate');
  });
});
