import os from 'node:os';
import crypto from 'node:crypto';

/**
 * Index reconciliation: the public API for the runtime, `/apps` and the CLI.
 *
 * The runtime creates one reconciler once the upstream is connected, feeds it the apps on start and on
 * every manifest reload, shows `stateOf(slug)` in `/apps`, and stops it before closing the upstream:
 *
 *     const indexes = new IndexReconciler({
 *       client: upstream.topology.client,        // a connected MongoClient
 *       database: config.upstream.database,
 *       tagField: config.tagField,
 *       logger,
 *       defaults: config.indexes,                // { reconcile, prune, intervalMS, leaseTtlMS }
 *       holderId: defaultHolderId(),             // unique per process
 *     });
 *     indexes.update(apps);                      // start, and after every reload (all apps each time)
 *     indexes.stateOf('task_manager');           // AppIndexState for /apps
 *     await indexes.stop();                      // on shutdown, before upstream.close()
 *
 * Nothing the reconciler does throws into the caller; failures are logged (with app_id) and shown in
 * the state.
 */
export { IndexReconciler, type IndexDefaults, type IndexReconcilerOptions } from './reconciler.js';
export type { AppIndexState, IndexAction, IndexStatus, UpstreamRefusal } from './types.js';
export { UNSUPPORTED_COLLECTION, unsupportedRefusal, upstreamIdentity, type UnsupportedRecord } from './unsupported.js';
export { LEASE_COLLECTION, LeaseManager, type LeaseDocument } from './lease.js';
export { planIndexes, effectivePolicy, createIndexSpec, type EffectivePolicy, type IndexPlan, type PlannedIndex } from './plan.js';
export { planApp, applyPlan } from './apply.js';

/** A holder id for this process's leases: `<hostname>:<pid>:<random>` (readable in the lease collection and logs). */
export function defaultHolderId(): string {
  return `${os.hostname()}:${process.pid}:${crypto.randomBytes(3).toString('hex')}`;
}
