import { commandError } from './errors.js';

/**
 * Role-based access control inside one app (README "Roles"). Pure: no I/O.
 *
 * A manifest may define roles, each granting actions on collections (the app's own, unprefixed names;
 * '*' = every collection):
 *
 *   roles:
 *     reader: { read: ['*'] }
 *     editor: { read: ['*'], write: ['tasks'], indexes: ['tasks'] }
 *   default_role: editor
 *
 * Rules (decided here, documented in README "Roles"):
 * - A manifest without `roles` does not restrict its app: every identity may do everything (the roles
 *   claim of its tokens is then informational only).
 * - With `roles`, a token's `roles` claim selects roles by name. An absent claim means `default_role`
 *   (or no role at all when there is none); an empty list means no role.
 * - A role name the manifest does not define fails the authentication (the token was minted for a
 *   configuration that no longer exists; silently dropping the role would hide that).
 * - Grants add up over the selected roles; nothing is implied (`write` does not grant `read`).
 */

export type Action = 'read' | 'write' | 'indexes';
export const ACTIONS: readonly Action[] = ['read', 'write', 'indexes'];

/** The wildcard collection: every collection of the app. */
export const ALL_COLLECTIONS = '*';

/** One role of a manifest: collections per action. */
export type RoleDefinition = Readonly<Record<Action, readonly string[]>>;

/** The roles section of a manifest. */
export interface RbacConfig {
  readonly roles: ReadonlyMap<string, RoleDefinition>;
  readonly defaultRole: string | undefined;
}

/** What an identity may do, resolved once at authentication. */
export interface ResolvedRoles {
  /** The role names granted (for connectionStatus and logs); empty when the manifest has no roles. */
  readonly names: readonly string[];
  /** True when the manifest defines no roles: every access is allowed. */
  readonly unrestricted: boolean;
  /** Collections allowed per action (may contain '*'). Ignored when unrestricted. */
  readonly allowed: Readonly<Record<Action, ReadonlySet<string>>>;
}

/** The roles of an identity of an app whose manifest defines none. */
export const UNRESTRICTED: ResolvedRoles = Object.freeze({
  names: [],
  unrestricted: true,
  allowed: { read: new Set([ALL_COLLECTIONS]), write: new Set([ALL_COLLECTIONS]), indexes: new Set([ALL_COLLECTIONS]) },
});

/** A roles claim that cannot be resolved against the manifest (the authentication fails). */
export class RoleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RoleError';
  }
}

/**
 * Resolves a token's `roles` claim (undefined when the token has none) against the manifest's roles.
 * Throws RoleError for a role the manifest does not define.
 */
export function resolveRoles(config: RbacConfig | undefined, claim: readonly string[] | undefined): ResolvedRoles {
  if (!config) return UNRESTRICTED;
  const names = claim ?? (config.defaultRole !== undefined ? [config.defaultRole] : []);
  const allowed: Record<Action, Set<string>> = { read: new Set(), write: new Set(), indexes: new Set() };
  for (const name of names) {
    const role = config.roles.get(name);
    if (!role) {
      const defined = [...config.roles.keys()].join(', ') || 'none';
      throw new RoleError(`the token names the role '${name}', which the manifest does not define (defined: ${defined})`);
    }
    for (const action of ACTIONS) for (const coll of role[action]) allowed[action].add(coll);
  }
  return { names: [...new Set(names)], unrestricted: false, allowed };
}

export function isAllowed(roles: ResolvedRoles, action: Action, collection: string): boolean {
  if (roles.unrestricted) return true;
  const set = roles.allowed[action];
  return set.has(ALL_COLLECTIONS) || set.has(collection);
}

/**
 * Throws Unauthorized (13) unless the roles allow every access. `collection` is the app's own
 * (unprefixed) name; `commandName` only improves the message.
 */
export function authorize(
  roles: ResolvedRoles,
  access: readonly { action: Action; collection: string }[],
  commandName?: string,
): void {
  for (const { action, collection } of access) {
    if (isAllowed(roles, action, collection)) continue;
    const held = roles.names.length ? `roles: ${roles.names.join(', ')}` : 'no role';
    throw commandError(
      'Unauthorized',
      `not authorized on ${collection} to execute command ${commandName ?? action} (needs ${action} on ${collection}; ${held})`,
    );
  }
}
