import fs from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { ConfigError } from './runtime-config.js';

/** What the data plane needs of an app's manifest (config/apps/<slug>.yaml). */
export interface AppManifest {
  slug: string;
  name: string;
  authRequired: boolean;
  file: string;
}

export const SLUG_PATTERN = /^[a-z][a-z0-9_]{0,31}$/;
const MANIFEST_EXTENSIONS = ['.yaml', '.yml', '.json'];

/** Reads every manifest in `<configDir>/apps`. Problems are collected and thrown together. */
export function loadManifests(configDir: string): AppManifest[] {
  const dir = path.join(configDir, 'apps');
  if (!fs.existsSync(dir)) return [];
  const problems: string[] = [];
  const manifests: AppManifest[] = [];
  const files = fs
    .readdirSync(dir)
    .filter((f) => MANIFEST_EXTENSIONS.includes(path.extname(f)))
    .sort();
  for (const name of files) {
    const file = path.join(dir, name);
    try {
      manifests.push(parseManifest(file, fs.readFileSync(file, 'utf8')));
    } catch (err) {
      problems.push((err as Error).message);
    }
  }
  const seen = new Map<string, string>();
  for (const m of manifests) {
    const other = seen.get(m.slug);
    if (other) problems.push(`${m.file}: slug '${m.slug}' is already declared by ${other}`);
    seen.set(m.slug, m.file);
  }
  if (problems.length > 0) throw new ConfigError(problems.join('\n'));
  return manifests;
}

export function parseManifest(file: string, text: string): AppManifest {
  const doc = YAML.parseDocument(text); // JSON is YAML too
  if (doc.errors.length > 0) {
    const e = doc.errors[0]!;
    const at = e.linePos?.[0];
    throw new ConfigError(`${file}${at ? `:${at.line}:${at.col}` : ''}: ${e.message}`);
  }
  const value: unknown = doc.toJS();
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(`${file}: expected a mapping with at least 'slug', found ${JSON.stringify(value)}`);
  }
  const raw = value as Record<string, unknown>;
  const slug = raw.slug;
  if (typeof slug !== 'string' || !SLUG_PATTERN.test(slug)) {
    throw new ConfigError(`${file}: slug: expected a string matching ${SLUG_PATTERN.source}, found ${JSON.stringify(slug)}`);
  }
  const base = path.basename(file, path.extname(file));
  if (base !== slug) throw new ConfigError(`${file}: slug '${slug}' must match the file name ('${base}')`);
  const authRequired = raw.auth_required ?? true;
  if (typeof authRequired !== 'boolean') {
    throw new ConfigError(`${file}: auth_required: expected true or false, found ${JSON.stringify(authRequired)}`);
  }
  const name = raw.name ?? slug;
  if (typeof name !== 'string') throw new ConfigError(`${file}: name: expected a string, found ${JSON.stringify(name)}`);
  return { slug, name, authRequired, file };
}
