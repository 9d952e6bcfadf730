/**
 * The normalized form of a manifest's data-plane and control-plane sections. The loader
 * (manifests.ts, validated by schema/manifest.schema.json) produces these; the reconciler
 * (src/indexes), the session (limits) and the HTTP side read them.
 */

/** One key of an index, in order: `[field, direction or type]`. */
export type IndexKey = readonly [field: string, kind: 1 | -1 | 'text' | '2dsphere' | '2d' | 'hashed'];

/** An index the manifest manages on one of the app's collections (names are the app's own). */
export interface ManagedIndex {
  /** The index name (generated from the keys, as the server does, when the manifest gives none). */
  readonly name: string;
  /** Ordered keys; a wildcard index is `[['$**', 1]]` or `[['path.$**', 1]]`. */
  readonly keys: readonly IndexKey[];
  /**
   * createIndexes options exactly as the server takes them: unique, sparse, expireAfterSeconds,
   * partialFilterExpression (as the app wrote it: the reconciler scopes it), collation, weights,
   * default_language, language_override, textIndexVersion, 2dsphereIndexVersion, bits, min, max,
   * wildcardProjection, hidden.
   */
  readonly options: Readonly<Record<string, unknown>>;
}

/** How the reconciler treats indexes that differ from the manifest, and indexes it does not manage. */
export interface IndexPolicy {
  /** 'report': drift is reported only; 'replace': a drifted index is dropped and rebuilt. */
  readonly reconcile: 'report' | 'replace';
  /** Drop indexes on managed collections that the manifest does not list (never `_id_`). */
  readonly prune: boolean;
}

/** Per-app resource limits; an absent field means no limit. */
export interface AppLimits {
  /** Concurrent authenticated client connections. */
  readonly connections?: number;
  /** Commands per second, across the app's connections (token bucket, burst = one second's worth). */
  readonly operationsPerSecond?: number;
  /** Largest document the app may write, in bytes (inserts and replacements). */
  readonly maxDocumentBytes?: number;
  /** Most documents a collection of the app may hold (checked against a periodically refreshed count). */
  readonly maxDocumentsPerCollection?: number;
  /** Upstream connections the app's requests hold at once; absent: the runtime's fair share of the pool. */
  readonly upstreamConnections?: number;
  /** Upstream cursors the app may keep open at once; absent: the runtime's default. */
  readonly openCursors?: number;
}

export interface DataAccess {
  /** Every write is refused (Unauthorized). */
  readonly readOnly: boolean;
  /** When set, only these collections (the app's names) may be used; others are Unauthorized. */
  readonly collections: readonly string[] | undefined;
}

export interface ObservabilitySettings {
  /** Operations slower than this are logged at warn (overrides the runtime default). */
  readonly slowOperationMs: number | undefined;
}

/** A realtime endpoint the manifest declares (served on the HTTP port when websockets land). */
export interface WebsocketEndpoint {
  readonly path: string;
  readonly collection: string;
  readonly filter: Readonly<Record<string, unknown>> | undefined;
}

/** The current manifest format; older ones (the ancestor's manifest.json) are migrated on load. */
export const MANIFEST_SCHEMA_VERSION = 3;
