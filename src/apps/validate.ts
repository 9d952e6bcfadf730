import path from 'node:path';
import { ConfigError } from '../config/source.js';
import { checkManifestDir, type AppManifest } from './manifests.js';
import { AppRegistry } from './registry.js';
import { findRuntimeFile, loadRuntimeConfig, resolveConfigDir, runtimeFileProblems } from '../config/runtime-config.js';

/**
 * `mdb-runtime validate`: everything the proxy would refuse in a config directory, found at once
 *: runtime.yaml (with the environment's overrides, as `serve` would see it) and every
 * manifest (YAML, version and migration, schema, semantic rules), then the slug registry rules across
 * the manifests that passed. Problems stop the proxy; warnings do not.
 */
export interface ValidationReport {
  configDir: string;
  /** The runtime.yaml checked, if there is one. */
  runtimeFile: string | undefined;
  /** The manifest files checked. */
  manifestFiles: string[];
  /** The apps that would serve (valid and registered). */
  apps: string[];
  /** One entry per problem: `file:line:col: key: expected ..., found ...` (some span several lines). */
  problems: string[];
  warnings: string[];
}

export function validateConfigDir(config: string | undefined, env: NodeJS.ProcessEnv = process.env): ValidationReport {
  const report: ValidationReport = { configDir: '', runtimeFile: undefined, manifestFiles: [], apps: [], problems: [], warnings: [] };
  try {
    report.configDir = resolveConfigDir(config === undefined ? {} : { config }, env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    report.configDir = path.resolve(config ?? env.MDB_CONFIG ?? './config');
    report.problems.push(err.message);
    return report;
  }
  const dir = report.configDir;

  // runtime.yaml: the loader's first complaint (it also covers env variables), then every problem of
  // the file itself that it did not already name.
  try {
    report.runtimeFile = findRuntimeFile(dir);
    loadRuntimeConfig({ config: dir }, env);
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    report.problems.push(...splitProblems(err.message));
  }
  const fileProblems = runtimeFileProblems(dir);
  for (const p of fileProblems) {
    if (!report.problems.some((q) => q === p || samePlace(q, p))) report.problems.push(p);
  }

  const manifests: AppManifest[] = [];
  for (const check of checkManifestDir(dir, env)) {
    report.manifestFiles.push(check.file);
    report.problems.push(...check.problems);
    const m = check.manifest;
    if (!m) continue;
    manifests.push(m);
    report.warnings.push(...m.warnings);
    if (m.unavailable) report.warnings.push(`${m.unavailable}; until then app '${m.slug}' is unavailable (its clients fail authentication)`);
    if (!m.authRequired) {
      report.warnings.push(`${m.file}: auth_required: false: any client can select app '${m.slug}' with appName=${m.slug}, without a token (local development only)`);
    }
  }
  try {
    report.apps = AppRegistry.build(manifests).slugs;
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    report.problems.push(...splitProblems(err.message));
  }
  return report;
}

/** A message holding several problems, one each: a problem starts with `file:line:col: ` (code frames follow it). */
function splitProblems(message: string): string[] {
  const out: string[] = [];
  for (const line of message.split('\n')) {
    if (out.length === 0 || /^\S+:\d+:\d+: /.test(line)) out.push(line);
    else out[out.length - 1] += `\n${line}`;
  }
  return out;
}

/** Two messages about the same place of the same file (`file:line:col: `). */
function samePlace(a: string, b: string): boolean {
  const place = (m: string) => /^(\S+:\d+:\d+): /.exec(m)?.[1];
  const pa = place(a);
  return pa !== undefined && pa === place(b);
}

/** The report as printed by `mdb-runtime validate`, and its exit status (1 when there is a problem). */
export function formatReport(report: ValidationReport): { text: string; status: number } {
  const lines = [...report.problems];
  for (const w of report.warnings) {
    const m = /^((?:(?!: ).)+?\.(?:ya?ml|json)(?::\d+:\d+)?): /.exec(w);
    lines.push(m ? `${m[1]}: warning: ${w.slice(m[0].length)}` : `warning: ${w}`);
  }
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
  const checked = [report.runtimeFile ? 'runtime.yaml' : 'no runtime.yaml (defaults)', plural(report.manifestFiles.length, 'manifest')].join(' and ');
  const summary =
    report.problems.length > 0
      ? `${report.configDir}: ${plural(report.problems.length, 'problem')}, ${plural(report.warnings.length, 'warning')} (checked ${checked})`
      : `${report.configDir}: ok: ${checked}; apps: ${report.apps.join(', ') || 'none'}${report.warnings.length ? `; ${plural(report.warnings.length, 'warning')}` : ''}`;
  lines.push(summary);
  return { text: `${lines.join('\n')}\n`, status: report.problems.length > 0 ? 1 : 0 };
}
