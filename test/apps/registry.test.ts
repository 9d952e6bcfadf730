import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/config/source.js';
import { AppRegistry, loadApps } from '../../src/apps/registry.js';
import { manifestDefaults, type AppManifest } from '../../src/apps/manifests.js';
import { configDirWith, removeConfigDirs } from '../helpers/apps.js';

/** The slug rules (README, "App manifests"): the slug → prefix mapping is injective, and slugs are not confusable. */

afterAll(() => removeConfigDirs());

const app = (slug: string): AppManifest => ({
  ...manifestDefaults(),
  slug,
  name: slug,
  authRequired: false,
  exposeTag: false,
  file: `/cfg/apps/${slug}.yaml`,
  jwt: undefined,
  rbac: undefined,
  unavailable: undefined,
  warnings: [],
});

function conflict(...slugs: string[]): string {
  try {
    AppRegistry.build(slugs.map(app));
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as Error).message;
  }
  throw new Error(`${slugs.join(', ')} were accepted`);
}

describe('AppRegistry', () => {
  it('registers distinct slugs and finds them by exact slug', () => {
    const apps = AppRegistry.build(['tasks', 'notes', 'a', 'b_c', 'ab1'].map(app));
    expect(apps.get('tasks')?.slug).toBe('tasks');
    expect(apps.get('Tasks')).toBeUndefined();
    expect(apps.get('task')).toBeUndefined();
    expect(apps.size).toBe(5);
    expect(apps.slugs).toEqual(['tasks', 'notes', 'a', 'b_c', 'ab1']);
    expect([...apps].map((m) => m.slug)).toEqual(apps.slugs);
  });

  it.each([
    ['a', 'a_b'],
    ['a_b', 'a'],
    ['shop', 'shop_admin'],
    ['x', 'x_'],
    ['task', 'task_manager_v2'],
  ])("refuses '%s' next to '%s': one is the other's prefix + '_'", (first, second) => {
    const message = conflict(first, second);
    expect(message).toContain(`/cfg/apps/${second}.yaml: slug: '${second}' conflicts with '${first}' (/cfg/apps/${first}.yaml)`);
    expect(message).toContain('rename one of the two apps');
  });

  it.each([
    ['ab', 'a_b'],
    ['a_bc', 'ab_c'],
    ['abc', 'a_b_c'],
    ['a__b', 'ab'],
  ])("refuses '%s' next to '%s': equal without '_'", (first, second) => {
    const message = conflict(first, second);
    expect(message).toContain(`/cfg/apps/${second}.yaml: slug: '${second}' conflicts with '${first}' (/cfg/apps/${first}.yaml)`);
    expect(message).toContain("they differ only by case or '_'");
  });

  it('accepts slugs that only share a prefix without the separator', () => {
    expect(AppRegistry.build(['ab', 'abc', 'a', 'ba'].map(app)).size).toBe(4);
  });

  it('reports every conflict at once, and a duplicate slug', () => {
    const message = conflict('a', 'a_b', 'xy', 'x_y', 'xy');
    expect(message.split('\n')).toHaveLength(3);
    expect(message).toContain("slug: 'xy' is already declared by /cfg/apps/xy.yaml");
  });

  it('refuses a slug outside the pattern even when built directly', () => {
    expect(conflict('Bad')).toContain("slug: 'Bad' does not match");
  });

  it('loadApps refuses conflicting manifest files, naming both', () => {
    const dir = configDirWith({
      'apps/shop.yaml': 'slug: shop\nauth_required: false\n',
      'apps/shop_admin.yaml': 'slug: shop_admin\nauth_required: false\n',
    });
    expect(() => loadApps(dir)).toThrow(ConfigError);
    expect(() => loadApps(dir)).toThrow(`${path.join(dir, 'apps', 'shop_admin.yaml')}: slug: 'shop_admin' conflicts with 'shop' (${path.join(dir, 'apps', 'shop.yaml')})`);
  });
});
