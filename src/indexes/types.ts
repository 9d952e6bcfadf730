import type { IndexKey } from '../apps/manifest-types.js';

/**
 * The reconciler's view of one managed index, as `/apps` and `mdb-runtime indexes` show it.
 * - ok: present with the manifest's keys and options;
 * - create: missing, to be built (or being built);
 * - drift: an index of that name exists with other keys or options (replaced only under reconcile: replace);
 * - prune: present, not in the manifest, and prune is on (will be dropped);
 * - unsupported: the upstream cannot build it as the manifest says (FerretDB answers TTL, partial, text
 *   or collation indexes with NotImplemented; see src/indexes/unsupported.ts): `detail` and `reason` say
 *   what it answered. Not an error of the app, and not tried again until the index's spec, the upstream
 *   or the proxy changes;
 * - error: the last attempt failed (e.g. a unique index over duplicates); `error` says why.
 */
export type IndexAction = 'ok' | 'create' | 'drift' | 'prune' | 'unsupported' | 'error';

/** What the upstream answered to a build it cannot do: its errmsg, and its code when it answered with an error. */
export interface UpstreamRefusal {
  code?: number;
  codeName?: string;
  errmsg: string;
}

export interface IndexStatus {
  /** The app's collection name. */
  collection: string;
  index: string;
  action: IndexAction;
  keys?: readonly IndexKey[];
  /** What differs, for drift ("unique: manifest true, upstream false"). */
  detail?: string;
  error?: string;
  /** For unsupported: the upstream's answer (absent when it accepted the index but lists it otherwise). */
  reason?: UpstreamRefusal;
  /** The physical collection (`<slug>_<collection>` in the shared database). */
  physicalCollection?: string;
}

/** An app's index state as last reconciled. */
export interface AppIndexState {
  /** 'idle' before the first pass; 'reconciling' while this proxy holds the app's lease and works. */
  phase: 'idle' | 'reconciling' | 'done' | 'failed' | 'waiting-for-lease';
  /** When the last pass finished (ms since epoch). */
  lastRun?: number;
  /** The proxy instance holding the app's lease, when known. */
  leaseHolder?: string;
  /** Why the last pass failed as a whole (phase 'failed': e.g. the upstream could not be reached). */
  error?: string;
  indexes: IndexStatus[];
}
