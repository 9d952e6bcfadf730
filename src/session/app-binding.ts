import type { AppManifest } from '../apps/manifests.js';
import type { AppRegistry } from '../apps/registry.js';
import { RoleError, resolveRoles, type ResolvedRoles } from '../policy/rbac.js';
import { commandError } from '../policy/errors.js';
import { makeScope, type AppScope } from '../policy/scope.js';
import type { AppEntry } from './app-usage.js';
import type { Identity } from './authentication.js';
import type { ProxyContext } from './context.js';
import { ClosingError, Rejected } from './rejection.js';

/** After its app is removed, how long an idle connection stays open to tell its next request why. */
const DEFAULT_REMOVED_APP_GRACE_MS = 2000;

/** The app a request runs as: the manifest in force now and the identity's roles resolved against it. */
export interface LiveApp {
  readonly manifest: AppManifest;
  readonly roles: ResolvedRoles;
}

/** What the binding asks of its connection: a warn line, and to drain when a revoked app's grace is over. */
export interface BindingHost {
  warn(fields: Record<string, unknown>, message: string): void;
  drain(): void;
  readonly closed: boolean;
}

/**
 * A connection's binding to its app: the identity's live manifest and roles (a reload applies to the
 * next request), revocation when the app is removed (README "Hot reload"), and the app's connection counts
 * (limits.connections counts connections that sent an app command).
 */
export class AppBinding {
  /** The app's entry (the connection's own, counted in its connections while it is authenticated). */
  usage: AppEntry | undefined;
  /** Counted in the app's active connections (limits.connections) since its first app command. */
  private active = false;
  /** The manifest the last request ran with, and the roles resolved against it (re-resolved on change). */
  live: LiveApp | undefined;
  /** Set when the app was removed (or its dev identity no longer allowed): why. */
  private revoked: string | undefined;
  private revokeTimer: NodeJS.Timeout | undefined;
  private scope: AppScope | undefined;

  constructor(
    private readonly ctx: ProxyContext,
    private readonly host: BindingHost,
  ) {}

  /** The connection authenticated (again) as `entry`'s app (the connection counts it); roles resolve on the next request. */
  bind(entry: AppEntry): void {
    this.live = undefined;
    this.usage ??= entry;
  }

  /**
   * The app this request runs as: the manifest in force now, looked up by slug, with the token's roles
   * claim resolved against its roles. Refuses (app_removed) when the app was removed, and (rbac) when
   * the token's roles no longer exist.
   */
  liveApp(identity: Identity): LiveApp {
    if (this.revoked) throw new ClosingError('Unauthorized', this.revoked, 13, undefined, {}, 'app_removed');
    const manifest = this.ctx.apps.current.get(identity.app.slug);
    const gone = revocationReason(identity, manifest);
    if (gone !== undefined || manifest === undefined) {
      this.revoke(identity, gone ?? `app '${identity.app.slug}' was removed`);
      throw new ClosingError('Unauthorized', this.revoked!, 13, undefined, {}, 'app_removed');
    }
    if (this.live?.manifest === manifest) return this.live;
    let roles: ResolvedRoles;
    if (manifest === identity.app) roles = identity.roles;
    else {
      try {
        roles = resolveRoles(manifest.rbac, identity.rolesClaim);
      } catch (err) {
        if (!(err instanceof RoleError)) throw err;
        throw new Rejected(
          'rbac',
          commandError('Unauthorized', `the roles of this connection's token are no longer valid for app '${manifest.slug}': ${err.message}; connect with a new token`),
        );
      }
    }
    this.live = { manifest, roles };
    return this.live;
  }

  /**
   * limits.connections counts the app's active connections: those that have sent an app command.
   * Driver monitoring connections (hello only, authenticated by an appName token) do not count. The
   * first app command of a connection beyond the limit is answered AuthenticationFailed (18) with the
   * reason, and the connection closes; a lowered limit leaves the connections already counted open.
   */
  activate(app: AppManifest, usage: AppEntry): void {
    if (this.active) return;
    const limit = app.limits.connections;
    if (limit !== undefined && usage.activeConnections >= limit) {
      usage.refused++;
      throw new ClosingError(
        'AuthenticationFailed',
        `app '${app.slug}' has reached its limit of ${limit} connections (limits.connections); this connection is closed. ` +
          "Close idle clients, or keep the driver's maxPoolSize within the limit",
        18,
        undefined,
        {},
        'connection_limit',
      );
    }
    usage.activeConnections++;
    this.active = true;
  }

  /** The app's scope, built once per connection (a connection never changes app; exposeTag may change on reload). */
  scopeFor(slug: string, exposeTag: boolean): AppScope {
    if (this.scope?.slug !== slug || this.scope.exposeTag !== exposeTag) {
      this.scope = makeScope(slug, this.ctx.scoping.database, this.ctx.scoping.tagField, exposeTag);
    }
    return this.scope;
  }

  /** After a manifest reload: starts closing the connection if its app is gone. */
  appsChanged(identity: Identity | undefined, registry: AppRegistry): void {
    if (!identity || this.host.closed || this.revoked) return;
    const reason = revocationReason(identity, registry.get(identity.app.slug));
    if (reason) this.revoke(identity, reason);
  }

  /** The connection closed: it leaves its app's active connections (the connection leaves its connections). */
  release(): void {
    clearTimeout(this.revokeTimer);
    if (this.usage) {
      if (this.active) this.usage.activeConnections--;
      this.usage = undefined;
      this.active = false;
    }
  }

  /**
   * Stops serving the app: the request in progress finishes; the next request is answered with the
   * reason (Unauthorized) and the connection closes; an idle connection closes after a short grace.
   */
  private revoke(identity: Identity, reason: string): void {
    if (this.revoked || this.host.closed) return;
    this.revoked = reason;
    this.host.warn({ reason, file: identity.app.file }, `closing connection: ${reason}`);
    this.revokeTimer = setTimeout(() => this.host.drain(), this.ctx.limits.removedAppGraceMS ?? DEFAULT_REMOVED_APP_GRACE_MS);
    this.revokeTimer.unref();
  }
}

/** Why a connection may no longer act as its app under `manifest` (undefined: it may). */
function revocationReason(identity: Identity, manifest: AppManifest | undefined): string | undefined {
  if (!manifest) return `app '${identity.app.slug}' was removed from the configuration; this connection is closed`;
  if (identity.transport === 'dev' && manifest.authRequired) {
    return `app '${manifest.slug}' now requires authentication (auth_required: true); this connection selected it by appName only and is closed`;
  }
  return undefined;
}
