import fs from 'node:fs';
import path from 'node:path';
import { ConfigError, YamlFile, describeValue } from './config-source.js';

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
    if (other) problems.push(`${m.file}: slug: '${m.slug}' is already declared by ${other}; keep one of the two files`);
    seen.set(m.slug, m.file);
  }
  if (problems.length > 0) throw new ConfigError(problems.join('\n'));
  return manifests;
}

export function parseManifest(file: string, text: string): AppManifest {
  const yaml = YamlFile.parse(file, text); // JSON is YAML too
  const value = yaml.value;
  if (typeof value !== 'object' || value === null || Array.isArray(value)) {
    throw new ConfigError(`${yaml.at([])}: expected a mapping with at least 'slug: <slug>', found ${describeValue(value)}`);
  }
  const raw = value as Record<string, unknown>;
  const slug = raw.slug;
  if (slug === undefined || slug === null) {
    throw new ConfigError(`${yaml.at([])}: slug: missing; add 'slug: ${suggestSlug(file)}' (${SLUG_RULE})`);
  }
  if (typeof slug !== 'string' || !SLUG_PATTERN.test(slug)) {
    throw new ConfigError(`${yaml.at(['slug'])}: slug: expected ${SLUG_RULE}, found ${describeValue(slug)}`);
  }
  const base = path.basename(file, path.extname(file));
  if (base !== slug) {
    throw new ConfigError(
      `${yaml.at(['slug'])}: slug: '${slug}' must match the file name; rename the file to ${slug}${path.extname(file)} or set 'slug: ${base}'`,
    );
  }
  const authRequired = raw.auth_required ?? true;
  if (typeof authRequired !== 'boolean') {
    throw new ConfigError(`${yaml.at(['auth_required'])}: auth_required: expected true or false, found ${describeValue(authRequired)}`);
  }
  const name = raw.name ?? slug;
  if (typeof name !== 'string') {
    throw new ConfigError(`${yaml.at(['name'])}: name: expected a string, found ${describeValue(name)}`);
  }
  return { slug, name, authRequired, file };
}

const SLUG_RULE = `a lowercase name matching ${SLUG_PATTERN.source} (a letter, then up to 31 letters, digits or '_')`;

/** The file name turned into a valid slug, for the "missing slug" hint. */
function suggestSlug(file: string): string {
  const base = path.basename(file, path.extname(file)).toLowerCase().replace(/[^a-z0-9_]/g, '_');
  const slug = /^[a-z]/.test(base) ? base : `app_${base}`;
  return slug.slice(0, 32);
}
