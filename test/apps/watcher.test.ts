import fs from 'node:fs';
import path from 'node:path';
import { Writable } from 'node:stream';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import { AppDirectory, type ReloadEvent } from '../../src/apps/watcher.js';
import { createLogger } from '../../src/observability/logger.js';
import { configDirWith, removeConfigDirs } from '../helpers/apps.js';
import { nextReload } from '../helpers/reload.js';

/**
 * The live app directory without a proxy: per-file last good, slug conflicts on reload, removal,
 * touch, and the watcher itself on real files (write-and-rename, debounce, the fallback rescan).
 */

afterAll(() => removeConfigDirs());

const dirs: AppDirectory[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) d.close();
});

const dev = (slug: string, extra = ''): string => `slug: ${slug}\nauth_required: false\n${extra}`;

function open(files: Record<string, string>): { directory: AppDirectory; dir: string; logs: Record<string, unknown>[] } {
  const dir = configDirWith(files);
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const directory = new AppDirectory(dir, { env: {}, logger: createLogger('info', sink) });
  dirs.push(directory);
  return { directory, dir, logs };
}

/** Writes a file the way many editors do: a temporary file renamed over the target. */
function writeAtomic(file: string, text: string): void {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}`);
  fs.writeFileSync(tmp, text);
  fs.renameSync(tmp, file);
}

describe('AppDirectory: loading and per-file last good', () => {
  it('loads every valid manifest and records each invalid one as failing since start', () => {
    const { directory, dir, logs } = open({ 'apps/a.yaml': dev('a'), 'apps/b.yaml': 'slug: b\nauth_required: maybe\n', 'apps/notes.txt': 'ignored' });
    expect(directory.current.slugs).toEqual(['a']);
    const [problem] = directory.startFailures;
    expect(problem).toMatchObject({ file: path.join(dir, 'apps/b.yaml'), line: 2, kind: 'invalid' });
    expect(problem!.message).toContain(`${dir}/apps/b.yaml:2:`);
    expect(directory.fileOf('b')).toMatchObject({ inForce: undefined, failedAtStart: true });
    expect(logs.some((l) => l.level === 50 && String(l.msg).startsWith('manifest refused:') && l.file === problem!.file)).toBe(true);
  });

  it('keeps the last good version of a file whose new version is invalid, while other files change', () => {
    const { directory, dir } = open({ 'apps/a.yaml': dev('a', 'name: First\n'), 'apps/b.yaml': dev('b') });
    const first = directory.current.get('a')!;
    fs.writeFileSync(path.join(dir, 'apps/a.yaml'), 'slug: a\nauth_required: false\nname: [unclosed\n');
    fs.writeFileSync(path.join(dir, 'apps/b.yaml'), dev('b', 'name: Changed\n'));
    const event = directory.reload()!;
    expect(event.changed).toEqual(['b']);
    expect(event.refused.map((p) => p.file)).toEqual([path.join(dir, 'apps/a.yaml')]);
    expect(directory.current.get('a')).toBe(first);
    expect(directory.current.get('b')!.name).toBe('Changed');
    const a = directory.fileOf('a')!;
    expect(a.inForce).toBe(first);
    expect(a.error?.message).toMatch(/apps\/a\.yaml:3:\d+: invalid YAML/);
    expect(a.failedAtStart).toBe(false);
    expect(directory.startFailures).toEqual([]);

    // Fixed: the new version serves and the error is gone.
    fs.writeFileSync(path.join(dir, 'apps/a.yaml'), dev('a', 'name: Second\n'));
    const fixed = directory.reload()!;
    expect(fixed.changed).toEqual(['a']);
    expect(directory.current.get('a')!.name).toBe('Second');
    expect(directory.problems).toEqual([]);
  });

  it('a file failing since start clears its start failure once fixed, and a new invalid file is not a start failure', () => {
    const { directory, dir } = open({ 'apps/a.yaml': 'slug: A\n' });
    expect(directory.startFailures).toHaveLength(1);
    fs.writeFileSync(path.join(dir, 'apps/a.yaml'), dev('a'));
    expect(directory.reload()!.added).toEqual(['a']);
    expect(directory.startFailures).toEqual([]);
    fs.writeFileSync(path.join(dir, 'apps/c.yaml'), 'slug: c\nbogus_key: 1\n');
    const event = directory.reload()!;
    expect(event.refused).toHaveLength(1);
    expect(directory.startFailures).toEqual([]);
    expect(directory.problems).toHaveLength(1);
  });

  it('refuses a new file whose slug conflicts with a running app, never the running app', () => {
    const { directory, dir } = open({ 'apps/shop.yaml': dev('shop') });
    fs.writeFileSync(path.join(dir, 'apps/shop_admin.yaml'), dev('shop_admin'));
    fs.writeFileSync(path.join(dir, 'apps/sh_op.yaml'), dev('sh_op'));
    const event = directory.reload()!;
    expect(event.added).toEqual([]);
    expect(directory.current.slugs).toEqual(['shop']);
    const conflicts = directory.problems;
    expect(conflicts.map((p) => [path.basename(p.file), p.kind])).toEqual([
      ['sh_op.yaml', 'conflict'],
      ['shop_admin.yaml', 'conflict'],
    ]);
    expect(conflicts[1]!.message).toContain("slug: 'shop_admin' conflicts with 'shop'");
    // The same slug in a second file (.yml next to .yaml) is refused too.
    fs.writeFileSync(path.join(dir, 'apps/shop.yml'), dev('shop', 'name: Impostor\n'));
    directory.reload();
    expect(directory.current.get('shop')!.file).toBe(path.join(dir, 'apps/shop.yaml'));
    expect(directory.fileOf('shop')!.file).toBe(path.join(dir, 'apps/shop.yaml'));
    // Once the running app is gone, the refused file is admitted on the next reload.
    fs.rmSync(path.join(dir, 'apps/shop.yaml'));
    fs.rmSync(path.join(dir, 'apps/shop.yml'));
    fs.rmSync(path.join(dir, 'apps/sh_op.yaml'));
    const after = directory.reload()!;
    expect(after.removed).toEqual(['shop']);
    expect(after.added).toEqual(['shop_admin']);
  });

  it('removes the app of a deleted file, and re-reads a touched file (new mtime, same text)', () => {
    const { directory, dir } = open({ 'apps/a.yaml': dev('a'), 'apps/b.yaml': dev('b') });
    const before = directory.current.get('a')!;
    const file = path.join(dir, 'apps/a.yaml');
    const later = new Date(Date.now() + 5000);
    fs.utimesSync(file, later, later);
    fs.rmSync(path.join(dir, 'apps/b.yaml'));
    const event = directory.reload()!;
    expect(event.removed).toEqual(['b']);
    expect(event.changed).toEqual(['a']);
    expect(directory.current.get('a')).not.toBe(before);
    // Nothing changed on disk: a rescan does nothing (no event), a manual reload keeps the same objects.
    expect(directory.reload('rescan')).toBeUndefined();
    const same = directory.current.get('a');
    expect(directory.reload('manual')!.changed).toEqual([]);
    expect(directory.current.get('a')).toBe(same);
  });

  it('starts empty without an apps directory and picks it up when it appears', () => {
    const { directory, dir } = open({});
    fs.rmSync(path.join(dir, 'apps'), { recursive: true });
    expect(directory.reload()!.registry.size).toBe(0);
    fs.mkdirSync(path.join(dir, 'apps'));
    fs.writeFileSync(path.join(dir, 'apps/a.yaml'), dev('a'));
    expect(directory.reload('rescan')!.added).toEqual(['a']);
  });
});

describe('AppDirectory: watching real files', () => {
  it('applies an editor-style write-and-rename within 2 s, coalescing a burst of writes into one reload', async () => {
    const { directory, dir } = open({ 'apps/a.yaml': dev('a') });
    directory.watch({ debounceMS: 100, rescanMS: 60_000 });
    const events: ReloadEvent[] = [];
    directory.on('reload', (e) => events.push(e));
    const started = Date.now();
    const reloaded = nextReload(directory, (e) => e.added.includes('b'));
    for (let i = 0; i < 5; i++) writeAtomic(path.join(dir, 'apps/b.yaml'), dev('b', `name: B${i}\n`));
    const event = await reloaded;
    expect(Date.now() - started).toBeLessThan(2000);
    expect(event.cause).toBe('watch');
    expect(directory.current.get('b')!.name).toBe('B4');
    expect(events).toHaveLength(1);
  });

  it('notices an in-place edit and a deletion', async () => {
    const { directory, dir } = open({ 'apps/a.yaml': dev('a'), 'apps/b.yaml': dev('b') });
    directory.watch({ debounceMS: 50, rescanMS: 60_000 });
    let reloaded = nextReload(directory, (e) => e.changed.includes('a'));
    fs.appendFileSync(path.join(dir, 'apps/a.yaml'), 'name: Edited\n');
    await reloaded;
    expect(directory.current.get('a')!.name).toBe('Edited');
    reloaded = nextReload(directory, (e) => e.removed.includes('b'));
    fs.rmSync(path.join(dir, 'apps/b.yaml'));
    await reloaded;
    expect(directory.current.slugs).toEqual(['a']);
  });

  it('falls back to the periodic rescan when the directory is replaced', async () => {
    const { directory, dir } = open({ 'apps/a.yaml': dev('a') });
    directory.watch({ debounceMS: 50, rescanMS: 200 });
    const reloaded = nextReload(directory, (e) => e.added.includes('z') && e.removed.includes('a'));
    // A whole new apps/ directory swapped in (as deployment tools do): the old watch sees nothing more.
    const staging = path.join(dir, 'apps.new');
    fs.mkdirSync(staging);
    fs.writeFileSync(path.join(staging, 'z.yaml'), dev('z'));
    fs.rmSync(path.join(dir, 'apps'), { recursive: true });
    fs.renameSync(staging, path.join(dir, 'apps'));
    await reloaded;
    // And the new directory is watched: a later change is seen too.
    const again = nextReload(directory, (e) => e.added.includes('y'));
    writeAtomic(path.join(dir, 'apps/y.yaml'), dev('y'));
    await again;
  });
});
