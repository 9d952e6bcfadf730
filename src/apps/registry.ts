import { ConfigError } from '../config/source.js';
import { SLUG_PATTERN, loadManifests, type AppManifest } from './manifests.js';

/** The separator between an app's slug and its collection names: `task_manager_tasks`. */
export const PREFIX_SEPARATOR = '_';

/**
 * The registered apps by slug, with the slug rules (README, "App manifests"; docs/security.md) enforced when it is built: the slug → prefix
 * mapping (`<slug>_`) is injective.
 *
 * - No slug may equal another slug + '_' + anything: with apps `a` and `a_b`, `a`'s collection `b_x`
 *   and `a_b`'s collection `x` are both `a_b_x`.
 * - Slugs stay distinct after case-folding and removing '_' (`ab` vs `a_b`): names that differ only
 *   there are confusable in logs and in stores that fold case, and the rule keeps the first one safe.
 */
export class AppRegistry implements Iterable<AppManifest> {
  private constructor(
    private readonly apps: ReadonlyMap<string, AppManifest>,
    readonly separator: string,
  ) {}

  /** Throws a ConfigError listing every conflict, each naming both files. */
  static build(manifests: readonly AppManifest[], separator = PREFIX_SEPARATOR): AppRegistry {
    const { registry, refused } = AppRegistry.admit(manifests, separator);
    if (refused.length > 0) throw new ConfigError(refused.map((r) => r.reason).join('\n'));
    return registry;
  }

  /**
   * Registers manifests in order, refusing (instead of throwing for) each one that breaks the slug
   * rules next to those already admitted: the earlier manifest wins a conflict. Hot reload passes the
   * apps already serving first, so a new file can never push out a running app.
   */
  static admit(
    manifests: readonly AppManifest[],
    separator = PREFIX_SEPARATOR,
  ): { registry: AppRegistry; refused: { manifest: AppManifest; reason: string }[] } {
    const refused: { manifest: AppManifest; reason: string }[] = [];
    const apps = new Map<string, AppManifest>();
    for (const m of manifests) {
      if (!SLUG_PATTERN.test(m.slug)) {
        refused.push({ manifest: m, reason: `${m.file}: slug: '${m.slug}' does not match ${SLUG_PATTERN.source}` });
        continue;
      }
      let conflict: string | undefined;
      for (const other of apps.values()) {
        conflict = conflictBetween(other, m, separator);
        if (conflict) break;
      }
      if (conflict) refused.push({ manifest: m, reason: conflict });
      else apps.set(m.slug, m);
    }
    return { registry: new AppRegistry(apps, separator), refused };
  }

  /** An empty registry (no app can connect). */
  static empty(separator = PREFIX_SEPARATOR): AppRegistry {
    return new AppRegistry(new Map(), separator);
  }

  get(slug: string): AppManifest | undefined {
    return this.apps.get(slug);
  }

  get size(): number {
    return this.apps.size;
  }

  get slugs(): string[] {
    return [...this.apps.keys()];
  }

  [Symbol.iterator](): Iterator<AppManifest> {
    return this.apps.values();
  }
}

/** Why `b` cannot be registered next to `a`, or undefined. */
function conflictBetween(a: AppManifest, b: AppManifest, separator: string): string | undefined {
  if (a.slug === b.slug) return `${b.file}: slug: '${b.slug}' is already declared by ${a.file}; keep one of the two files`;
  const [short, long] = a.slug.length <= b.slug.length ? [a, b] : [b, a];
  if (long.slug.startsWith(short.slug + separator)) {
    const rest = long.slug.slice(short.slug.length + separator.length);
    return (
      `${b.file}: slug: '${b.slug}' conflicts with '${a.slug}' (${a.file}): the collections of '${short.slug}' are stored as ` +
      `'${short.slug}${separator}<name>', so '${short.slug}' naming a collection '${rest}${separator}x' would reach '${long.slug}'s ` +
      `collection 'x'; rename one of the two apps`
    );
  }
  const fold = (s: string) => s.toLowerCase().split(separator).join('');
  if (fold(a.slug) === fold(b.slug)) {
    return (
      `${b.file}: slug: '${b.slug}' conflicts with '${a.slug}' (${a.file}): they differ only by case or '${separator}' ` +
      `(both are '${fold(a.slug)}' without them); rename one of the two apps`
    );
  }
  return undefined;
}

/** Loads every manifest of `<configDir>/apps` and builds the registry (throws ConfigError). */
export function loadApps(configDir: string, env: NodeJS.ProcessEnv = process.env): AppRegistry {
  return AppRegistry.build(loadManifests(configDir, env));
}
