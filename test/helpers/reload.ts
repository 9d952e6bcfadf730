import fs from 'node:fs';
import path from 'node:path';
import type { AppDirectory, ReloadEvent } from '../../src/apps/watcher.js';

/**
 * Hot-reload test helpers: synchronise on the proxy's reload events (never on sleeps), and read its
 * HTTP endpoints.
 */

/** The next reload event matching `predicate`; rejects after `ms` (the 2-second pledge by default). */
export function nextReload(directory: AppDirectory, predicate: (e: ReloadEvent) => boolean = () => true, ms = 2000): Promise<ReloadEvent> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      directory.off('reload', listener);
      reject(new Error(`no matching manifest reload within ${ms} ms`));
    }, ms);
    const listener = (e: ReloadEvent) => {
      if (!predicate(e)) return;
      clearTimeout(timer);
      directory.off('reload', listener);
      resolve(e);
    };
    directory.on('reload', listener);
  });
}

/**
 * Runs `edit` (file changes under the proxy's config dir) and waits for the reload that `predicate`
 * recognises; returns it with the time from the edit to the reload.
 */
export async function afterEdit(
  directory: AppDirectory,
  edit: () => void,
  predicate: (e: ReloadEvent) => boolean,
  ms = 2000,
): Promise<{ event: ReloadEvent; elapsedMS: number }> {
  const started = Date.now();
  const reloaded = nextReload(directory, predicate, ms);
  edit();
  const event = await reloaded;
  return { event, elapsedMS: Date.now() - started };
}

/** Writes a manifest as many editors save: a temporary file renamed over the target. */
export function writeManifest(configDir: string, file: string, text: string): void {
  const target = path.join(configDir, 'apps', file);
  const tmp = path.join(configDir, 'apps', `.${file}.swp`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, target);
}

export async function httpJson<T = Record<string, unknown>>(port: number, urlPath: string): Promise<{ status: number; body: T }> {
  const res = await fetch(`http://127.0.0.1:${port}${urlPath}`);
  return { status: res.status, body: (await res.json()) as T };
}
