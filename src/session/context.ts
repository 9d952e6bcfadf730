import type { Logger } from '../observability/logger.js';
import type { ProxyMetrics } from '../observability/metrics.js';
import type { Upstream } from '../upstream/index.js';
import type { AppRegistry } from '../apps/registry.js';
import type { VerifiedTokenCache } from '../apps/tokens.js';
import type { AppTable } from './app-usage.js';
import type { DocumentCounts } from './document-counts.js';

/** Where the registry in force is read: swapped whole on every manifest reload (src/apps/watcher.ts). */
export interface AppSource {
  readonly current: AppRegistry;
}

/** What every client connection shares: the upstream, the apps, limits, the clock and the logger. */
export interface ProxyContext {
  readonly upstream: Upstream;
  readonly logger: Logger;
  /**
   * The registered apps, live: connections authenticate against `apps.current`, and each request
   * resolves its app's current manifest there by slug (a reload applies to the next request).
   */
  readonly apps: AppSource;
  /** The one per-app table: each app's usage (connections, commands served, buckets, upstream slots) and meter. */
  readonly usage: AppTable;
  /** Document counts for limits.max_documents_per_collection; undefined: that limit is not enforced. */
  readonly documentCounts: DocumentCounts | undefined;
  readonly limits: SessionLimits;
  /** Where apps' data lives and how it is tagged (the policy layer's AppScope is built from it). */
  readonly scoping: { readonly database: string; readonly tagField: string };
  /** Milliseconds since the epoch; token expiry is judged by it (tests substitute a clock they move). */
  readonly now: () => number;
  /** Whether request-path instrumentation is on (`metrics.enabled`), and authentication counts; the per-app meters are in `usage`. */
  readonly metrics: ProxyMetrics;
  /** Tokens verified by earlier connections (src/apps/tokens.ts); undefined: every token is verified. */
  readonly tokenCache?: VerifiedTokenCache | undefined;
  /** runtime.yaml slow_operation_ms: slower commands are logged at warn (a manifest's observability overrides; 0: none). */
  readonly slowOperationMS: number;
}

export interface SessionLimits {
  maxMessageSize: number;
  /** The largest message accepted before the connection has authenticated (docs/security.md). */
  preAuthMaxMessageSize: number;
  /** An unauthenticated connection that sends no message for this long is closed (0: never). */
  preAuthIdleTimeoutMS: number;
  logicalSessionTimeoutMinutes: number;
  /**
   * After its app is removed from the configuration, a connection answers its next request with an
   * error saying so and closes; one that stays idle this long is closed without a word (default 2000).
   */
  removedAppGraceMS?: number;
  /** upstream.pool.max_size: an app whose manifest sets no limits.upstream_connections gets a fair share of it. */
  upstreamPoolSize: number;
  /** limits.open_cursors of an app whose manifest does not set it. */
  openCursorsPerApp: number;
  /** How long a request waits for one of its app's upstream slots (upstream.pool.wait_queue_timeout_ms). */
  upstreamWaitQueueTimeoutMS: number;
  /** upstream.request_timeout_ms. */
  upstreamRequestTimeoutMS: number;
  /** upstream.max_await_time_ms. */
  maxAwaitTimeMS: number;
}

/**
 * The upstream connections an app may hold when its manifest does not say: the pool shared by the
 * registered apps, but never less than a quarter of it (apps are rarely all busy at once), nor than 2.
 */
export function fairUpstreamShare(poolMaxSize: number, apps: number): number {
  return Math.max(2, Math.ceil(poolMaxSize / Math.min(4, Math.max(1, apps))));
}

/** limits.open_cursors when a manifest does not set it. */
export const DEFAULT_OPEN_CURSORS = 1000;
