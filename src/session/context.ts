import type { Logger } from '../observability/logger.js';
import type { Upstream } from '../upstream/index.js';
import type { AppRegistry } from '../apps/registry.js';

/** What every client connection shares: the upstream, the apps, limits, the clock and the logger. */
export interface ProxyContext {
  readonly upstream: Upstream;
  readonly logger: Logger;
  /** The registered apps; connections authenticate against them (src/session/authentication.ts). */
  readonly apps: AppRegistry;
  readonly limits: SessionLimits;
  /** Where apps' data lives and how it is tagged (the policy layer's AppScope is built from it). */
  readonly scoping: { readonly database: string; readonly tagField: string };
  /** Milliseconds since the epoch; token expiry is judged by it (tests substitute a clock they move). */
  readonly now: () => number;
}

export interface SessionLimits {
  maxMessageSize: number;
  /** The largest message accepted before the connection has authenticated (DESIGN.md rule 7). */
  preAuthMaxMessageSize: number;
  /** An unauthenticated connection that sends no message for this long is closed (0: never). */
  preAuthIdleTimeoutMS: number;
  logicalSessionTimeoutMinutes: number;
}
