import { EventEmitter } from 'node:events';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../observability/logger.js';
import { ConfigError } from '../config/source.js';
import { MANIFEST_EXTENSIONS, parseManifest, type AppManifest } from './manifests.js';
import { AppRegistry } from './registry.js';

/**
 * The live set of apps: `config/apps` is read at start and again whenever it changes,
 * and the registry the data plane uses is swapped in one assignment.
 *
 * Reload semantics (README "Hot reload"):
 * - Every change re-reads every manifest file of the directory (fs.watch on the directory, so editors
 *   that write a temporary file and rename it over the manifest are seen; events are debounced; a cheap
 *   stat-only rescan every second catches what fs.watch misses, e.g. network filesystems or a replaced
 *   directory). Nothing is re-read when no manifest file changed (names, sizes, mtimes, inodes).
 * - Per file, last good: a file whose new version is invalid (YAML, schema, semantic error) keeps its
 *   last good version in force; the error is logged and shown in /apps and /readyz. Other files'
 *   changes still apply. A file that never loaded has no app until it is fixed.
 * - Slug rules (README, "App manifests") are checked on every reload. Apps already serving are admitted first,
 *   so a new file whose slug conflicts with a running app is refused, never the running app.
 * - A deleted file removes its app; the session layer closes that app's connections.
 * - Touching a manifest (new mtime, same text) re-reads it, and so re-reads the key files and
 *   environment variables it names: the way to pick up a rotated public_key_file.
 */

/** Why a manifest file's latest version is not serving. */
export interface ManifestProblem {
  readonly file: string;
  /** The message as a person reads it: `file:line:col: key: expected ..., found ...`. */
  readonly message: string;
  readonly line: number | undefined;
  readonly column: number | undefined;
  /** 'invalid': the file itself; 'conflict': its slug clashes with another app's (the slug rules). */
  readonly kind: 'invalid' | 'conflict';
  /** When this problem was first seen (ms since the epoch). */
  readonly since: number;
}

/** One manifest file as the directory last saw it. */
export interface ManifestFileStatus {
  readonly file: string;
  /** The slug the file is for (its base name: manifests must be named after their slug). */
  readonly slug: string;
  /** The version serving: the latest one, or the last good one when the latest was refused. */
  readonly inForce: AppManifest | undefined;
  /** Why the latest version is not serving; undefined when it is. */
  readonly error: ManifestProblem | undefined;
  /** Failing since the proxy started, with no version ever in force (the proxy is not ready). */
  readonly failedAtStart: boolean;
  /** When the version in force was loaded (ms since the epoch). */
  readonly loadedAt: number | undefined;
}

export type ReloadCause = 'start' | 'watch' | 'rescan' | 'manual';

/** What one reload changed; emitted as 'reload' (the index reconciler and the session layer listen). */
export interface ReloadEvent {
  readonly cause: ReloadCause;
  readonly registry: AppRegistry;
  readonly previous: AppRegistry;
  /** Slugs now registered that were not. */
  readonly added: readonly string[];
  /** Slugs whose manifest in force was replaced by a new version. */
  readonly changed: readonly string[];
  /** Slugs no longer registered (their file was deleted). */
  readonly removed: readonly string[];
  /** Problems first seen in this reload (files refused now). */
  readonly refused: readonly ManifestProblem[];
  readonly files: readonly ManifestFileStatus[];
}

export interface AppDirectoryOptions {
  /** Where secret_env variables are read (default process.env). */
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** Wall clock for timestamps (default Date.now). */
  now?: () => number;
  /** Parses one manifest file (default: the manifest loader's parseManifest). */
  parse?: (file: string, text: string) => AppManifest;
}

export interface WatchOptions {
  /** Quiet time after the last file event before reloading (default 150 ms). */
  debounceMS?: number;
  /** The stat-only fallback rescan period (default 1000 ms). */
  rescanMS?: number;
}

interface FileRecord extends ManifestFileStatus {
  /** Stat fingerprint and text of the latest version read. */
  readonly stamp: string;
  readonly text: string;
  /** The latest version, when it parsed (it may still be refused for a slug conflict). */
  readonly latest: AppManifest | undefined;
  readonly parseError: ManifestProblem | undefined;
}

interface Listed {
  file: string;
  stamp: string;
}

/** The live registry and the state of every manifest file; see the module comment for the rules. */
export class AppDirectory extends EventEmitter<{ reload: [ReloadEvent] }> {
  readonly appsDir: string;
  private registry = AppRegistry.empty();
  private records = new Map<string, FileRecord>();
  private signature: string | undefined;
  private readonly logger: Logger | undefined;
  private readonly now: () => number;
  private readonly parse: (file: string, text: string) => AppManifest;
  private watcher: fs.FSWatcher | undefined;
  private watchedIno: number | undefined;
  private rescanTimer: NodeJS.Timeout | undefined;
  private debounceTimer: NodeJS.Timeout | undefined;
  private firstPendingEvent: number | undefined;
  private debounceMS = 150;
  private closed = false;
  private lastReload: number | undefined;

  /** Reads the directory once (no watching yet); problems are recorded, not thrown. */
  constructor(
    readonly configDir: string,
    options: AppDirectoryOptions = {},
  ) {
    super();
    this.appsDir = path.join(configDir, 'apps');
    this.logger = options.logger;
    this.now = options.now ?? Date.now;
    const env = options.env ?? process.env;
    this.parse = options.parse ?? ((file, text) => parseManifest(file, text, { env, configDir }));
    this.reload('start');
  }

  /** The registry in force: what authentication and every request resolve apps against. */
  get current(): AppRegistry {
    return this.registry;
  }

  /** Every manifest file, in file-name order. */
  get files(): ManifestFileStatus[] {
    return [...this.records.values()].map(publicStatus);
  }

  /** Files whose latest version is not serving. */
  get problems(): ManifestProblem[] {
    return [...this.records.values()].flatMap((r) => (r.error ? [r.error] : []));
  }

  /** Files failing since start with no version in force: while there are any, the proxy is not ready. */
  get startFailures(): ManifestProblem[] {
    return [...this.records.values()].flatMap((r) => (r.failedAtStart && r.error ? [r.error] : []));
  }

  /** When the last reload that changed anything ran (ms since the epoch). */
  get reloadedAt(): number | undefined {
    return this.lastReload;
  }

  /** The status of the file that holds (or would hold) `slug`. */
  fileOf(slug: string): ManifestFileStatus | undefined {
    const inForce = this.registry.get(slug);
    if (inForce) {
      const r = this.records.get(inForce.file);
      if (r) return publicStatus(r);
    }
    for (const r of this.records.values()) if (r.slug === slug) return publicStatus(r);
    return undefined;
  }

  /**
   * Re-reads the directory when a manifest file changed (always at 'start' and 'manual'); applies the
   * result and emits 'reload'. Returns the event, or undefined when nothing changed. Never throws.
   */
  reload(cause: ReloadCause = 'manual'): ReloadEvent | undefined {
    if (this.closed && cause !== 'start') return undefined;
    let listing: Listed[];
    try {
      listing = this.list();
    } catch (err) {
      this.logger?.error({ dir: this.appsDir, err: (err as Error).message }, 'cannot read the manifest directory; keeping the apps in force');
      return undefined;
    }
    const signature = listing.map((l) => `${l.file}\0${l.stamp}`).join('\n');
    if (cause !== 'start' && cause !== 'manual' && signature === this.signature) return undefined;
    this.signature = signature;

    const now = this.now();
    const read = new Map<string, Omit<FileRecord, 'inForce' | 'error' | 'failedAtStart' | 'loadedAt'>>();
    for (const { file, stamp } of listing) {
      const prev = this.records.get(file);
      let text: string;
      try {
        text = fs.readFileSync(file, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue; // deleted since the listing
        const problem = makeProblem(file, `${file}: cannot read the file: ${(err as Error).message}`, 'invalid', prev, now);
        read.set(file, { file, slug: slugOf(file), stamp, text: '', latest: undefined, parseError: problem });
        continue;
      }
      if (prev && prev.stamp === stamp && prev.text === text) {
        // Unchanged: keep the parsed version (and its identity: connections keep their cached roles).
        read.set(file, { file, slug: prev.slug, stamp, text, latest: prev.latest, parseError: prev.parseError });
        continue;
      }
      try {
        const latest = this.parse(file, text);
        read.set(file, { file, slug: latest.slug, stamp, text, latest, parseError: undefined });
      } catch (err) {
        const message = err instanceof ConfigError ? err.message : `${file}: ${(err as Error).message}`;
        read.set(file, { file, slug: slugOf(file), stamp, text, latest: undefined, parseError: makeProblem(file, message, 'invalid', prev, now) });
      }
    }

    // Admission: apps serving now first (file order), then the others; the earlier one wins a conflict.
    const candidates: { file: string; manifest: AppManifest; incumbent: boolean }[] = [];
    for (const r of read.values()) {
      const lastGood = this.records.get(r.file)?.inForce;
      const manifest = r.latest ?? lastGood;
      if (manifest) candidates.push({ file: r.file, manifest, incumbent: lastGood !== undefined });
    }
    candidates.sort((a, b) => Number(b.incumbent) - Number(a.incumbent) || compare(a.file, b.file));
    const { registry, refused } = AppRegistry.admit(candidates.map((c) => c.manifest));
    const refusedBy = new Map(refused.map((r) => [r.manifest.file, r.reason]));

    const records = new Map<string, FileRecord>();
    for (const r of read.values()) {
      const prev = this.records.get(r.file);
      const candidate = r.latest ?? prev?.inForce;
      const conflict = candidate ? refusedBy.get(candidate.file) : undefined;
      const inForce = candidate && conflict === undefined ? candidate : undefined;
      const error = r.parseError ?? (conflict !== undefined ? makeProblem(r.file, conflict, 'conflict', prev, now) : undefined);
      const failedAtStart = inForce === undefined && error !== undefined && (cause === 'start' || prev?.failedAtStart === true);
      const loadedAt = inForce === undefined ? undefined : inForce === prev?.inForce ? prev.loadedAt : now;
      records.set(r.file, { ...r, inForce, error, failedAtStart, loadedAt });
    }

    const previous = this.registry;
    const added = registry.slugs.filter((s) => !previous.get(s));
    const removed = previous.slugs.filter((s) => !registry.get(s));
    const changed = registry.slugs.filter((s) => previous.get(s) !== undefined && previous.get(s) !== registry.get(s));
    const newProblems = [...records.values()].flatMap((r) => {
      const before = this.records.get(r.file)?.error;
      return r.error && r.error.message !== before?.message ? [r.error] : [];
    });
    const resolved = [...this.records.values()].filter((r) => r.error && records.has(r.file) && !records.get(r.file)?.error).map((r) => r.file);

    this.records = records;
    this.registry = registry;
    this.lastReload = now;
    const event: ReloadEvent = { cause, registry, previous, added, changed, removed, refused: newProblems, files: this.files };
    this.logReload(event, resolved);
    try {
      this.emit('reload', event);
    } catch (err) {
      this.logger?.error({ err }, 'a manifest reload listener failed');
    }
    return event;
  }

  /** Watches the directory (and rescans it periodically) until close(). */
  watch(options: WatchOptions = {}): void {
    if (this.closed || this.rescanTimer) return;
    this.debounceMS = options.debounceMS ?? 150;
    this.startWatcher();
    this.rescanTimer = setInterval(() => {
      // A directory that appeared, or was replaced (new inode), gets a new watcher.
      const ino = dirIno(this.appsDir);
      if (ino !== this.watchedIno || !this.watcher) this.startWatcher();
      this.reload('rescan');
    }, options.rescanMS ?? 1000);
    this.rescanTimer.unref();
  }

  close(): void {
    this.closed = true;
    clearInterval(this.rescanTimer);
    clearTimeout(this.debounceTimer);
    this.watcher?.close();
    this.watcher = undefined;
    this.removeAllListeners();
  }

  private startWatcher(): void {
    this.watcher?.close();
    this.watcher = undefined;
    this.watchedIno = dirIno(this.appsDir);
    if (this.watchedIno === undefined) return; // no directory yet: the rescan retries
    try {
      const watcher = fs.watch(this.appsDir, { persistent: false }, () => this.schedule());
      watcher.on('error', () => {
        // The directory went away (or the watch broke): fall back to the rescan, which re-watches.
        watcher.close();
        if (this.watcher === watcher) this.watcher = undefined;
        this.schedule();
      });
      this.watcher = watcher;
    } catch (err) {
      this.logger?.warn({ dir: this.appsDir, err: (err as Error).message }, 'cannot watch the manifest directory; relying on the periodic rescan');
    }
  }

  /** Debounced reload: waits for a quiet period, but never more than a second after the first event. */
  private schedule(): void {
    if (this.closed) return;
    const now = Date.now();
    this.firstPendingEvent ??= now;
    clearTimeout(this.debounceTimer);
    const wait = Math.max(0, Math.min(this.debounceMS, this.firstPendingEvent + 1000 - now));
    this.debounceTimer = setTimeout(() => {
      this.firstPendingEvent = undefined;
      this.reload('watch');
    }, wait);
    this.debounceTimer.unref();
  }

  /** Manifest files with their stat fingerprint, in name order. */
  private list(): Listed[] {
    let names: string[];
    try {
      names = fs.readdirSync(this.appsDir);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
      throw err;
    }
    const listed: Listed[] = [];
    for (const name of names.filter((n) => MANIFEST_EXTENSIONS.includes(path.extname(n)) && !n.startsWith('.')).sort(compare)) {
      const file = path.join(this.appsDir, name);
      try {
        const st = fs.statSync(file); // follows symlinks (Kubernetes ConfigMaps swap a ..data link)
        if (!st.isFile()) continue;
        listed.push({ file, stamp: `${st.size}:${st.mtimeMs}:${st.ino}` });
      } catch {
        // Deleted (or a dangling link) between readdir and stat: not a manifest now.
      }
    }
    return listed;
  }

  private logReload(event: ReloadEvent, resolved: string[]): void {
    const log = this.logger;
    if (!log) return;
    for (const p of event.refused) {
      const lastGood = event.registry.get(slugOf(p.file))?.file === p.file;
      log.error(
        { file: p.file, line: p.line, column: p.column, kind: p.kind, kept_last_good: lastGood },
        event.cause === 'start'
          ? `manifest refused: ${p.message}`
          : `manifest refused${lastGood ? '; the last good version stays in force' : ''}: ${p.message}`,
      );
    }
    for (const file of resolved) log.info({ file }, 'manifest problem resolved');
    for (const slug of [...event.added, ...event.changed]) {
      const m = event.registry.get(slug)!;
      if (!m.authRequired) log.warn({ app_id: slug }, `app '${slug}' has auth_required: false; any client naming it can act as it`);
      for (const w of m.warnings) log.warn({ app_id: slug }, w);
      // A missing secret makes one app unavailable (its clients fail authentication), not the proxy.
      if (m.unavailable) log.error({ app_id: slug }, `app '${slug}' is unavailable: ${m.unavailable}`);
    }
    if (event.cause !== 'start') {
      log.info(
        { cause: event.cause, added: event.added, changed: event.changed, removed: event.removed, refused: event.refused.map((p) => p.file), apps: event.registry.size },
        'manifests reloaded',
      );
    }
  }
}

function publicStatus(r: FileRecord): ManifestFileStatus {
  return { file: r.file, slug: r.slug, inForce: r.inForce, error: r.error, failedAtStart: r.failedAtStart, loadedAt: r.loadedAt };
}

/** The problem, keeping the first-seen time of the same problem already known for the file. */
function makeProblem(file: string, message: string, kind: ManifestProblem['kind'], prev: FileRecord | undefined, now: number): ManifestProblem {
  const first = message.split('\n', 1)[0] ?? '';
  const at = first.startsWith(`${file}:`) ? /^:(\d+):(\d+):/.exec(first.slice(file.length)) : null;
  const since = prev?.error?.message === message ? prev.error.since : now;
  return { file, message, line: at ? Number(at[1]) : undefined, column: at ? Number(at[2]) : undefined, kind, since };
}

function slugOf(file: string): string {
  return path.basename(file, path.extname(file));
}

function dirIno(dir: string): number | undefined {
  try {
    return fs.statSync(dir).ino;
  } catch {
    return undefined;
  }
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
