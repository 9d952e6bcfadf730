#!/usr/bin/env node
// Writes the files generated from the schemas: schema/*.schema.json and docs/*-reference.md.
// Run through `npm run docs` (which builds first: this imports the compiled dist/apps/reference.js).
// test/docs/reference.test.ts fails when a committed file differs from what this writes.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const { generatedFiles } = await import(path.join(root, 'dist/apps/reference.js'));

for (const [file, text] of Object.entries(generatedFiles())) {
  const target = path.join(root, file);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  const before = fs.existsSync(target) ? fs.readFileSync(target, 'utf8') : undefined;
  if (before === text) {
    console.log(`unchanged ${file}`);
    continue;
  }
  fs.writeFileSync(target, text);
  console.log(`${before === undefined ? 'created' : 'updated'} ${file}`);
}
