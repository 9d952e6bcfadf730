import type { Logger } from '../observability/logger.js';
import type { Upstream } from '../upstream/index.js';
import type { AppManifest } from '../apps/manifests.js';

/** What every client connection shares: the upstream, the apps, limits and the logger. */
export interface ProxyContext {
  readonly upstream: Upstream;
  readonly logger: Logger;
  /** The app a connection acts as when it names one with `appName` (only apps without required auth). */
  findApp(slug: string): AppManifest | undefined;
  readonly limits: SessionLimits;
}

export interface SessionLimits {
  maxMessageSize: number;
  logicalSessionTimeoutMinutes: number;
}
