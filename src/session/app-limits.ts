import type { Document } from 'bson';
import type { AppManifest } from '../apps/manifests.js';
import type { DataAccess } from '../apps/manifest-types.js';
import type { ReplyPlan } from '../policy/handler.js';
import { CommandError } from '../policy/errors.js';
import type { Access } from '../policy/scope.js';
import type { RejectReason } from '../observability/metrics.js';

/**
 * The manifest's `limits` and `data_access`, applied per request by the session (README "Limits and data access"). Collections
 * come from the policy layer's `access` list (what the rewritten command reads, writes or indexes);
 * documents are the ones the app sent. Each refusal uses a server error shape (README "Limits and data access"):
 *
 * | rule | error |
 * |---|---|
 * | data_access.read_only: any write or index access | Unauthorized (13) |
 * | data_access.collections: any other collection | Unauthorized (13); listCollections lists only these |
 * | limits.operations_per_second | IngressRequestRateLimitExceeded (462), labels SystemOverloadedError and RetryableError, baseBackoffMS |
 * | limits.max_document_bytes | BSONObjectTooLarge (10334), the whole command refused |
 * | limits.max_documents_per_collection | OutOfDiskSpace (14031: the server's code for writes refused for lack of storage), the whole insert refused; not IllegalOperation (20), which the Node driver rewrites into a retryable-writes message |
 * | limits.connections (active connections: those that sent an app command) | AuthenticationFailed (18) with the reason on the first command of a connection beyond it, which then closes |
 */

/**
 * A refusal by the app's limits: its reply may carry extra fields (baseBackoffMS), and it names the
 * metrics' rejection reason itself.
 */
export class LimitError extends CommandError {
  constructor(
    codeName: string,
    message: string,
    code: number,
    errorLabels?: string[],
    readonly extra: Document = {},
    readonly reason?: RejectReason,
  ) {
    super(codeName, message, code, errorLabels);
  }
}

/**
 * The app's requests hold all of its upstream connections (limits.upstream_connections) and this one
 * waited its turn too long: retryable, as a server's ingress admission refuses work when overloaded.
 */
export function overUpstreamShare(slug: string, limit: number, waitedMS: number): LimitError {
  return new LimitError(
    'IngressRequestRateLimitExceeded',
    `app '${slug}' holds all of its ${limit} upstream connections (limits.upstream_connections) and this request waited ${waitedMS} ms for one; retry later`,
    462,
    ['SystemOverloadedError', 'RetryableError'],
    { baseBackoffMS: 100 },
    'upstream_connections',
  );
}

/** The command opened a cursor beyond limits.open_cursors (the cursor was killed). */
export function tooManyCursors(slug: string, limit: number): LimitError {
  return new LimitError(
    'OperationFailed',
    `app '${slug}' has ${limit} open cursors (limits.open_cursors): exhaust or close cursors (killCursors) before opening more; the cursor this command opened was closed`,
    96,
    undefined,
    {},
    'open_cursors',
  );
}

/** Commands that free server resources: never refused for the rate (refusing them would leak cursors and sessions). */
export const RATE_EXEMPT = new Set(['killCursors', 'endSessions']);

export function rateLimited(app: AppManifest, limit: number, retryAfterMS: number): LimitError {
  return new LimitError(
    'IngressRequestRateLimitExceeded',
    `app '${app.slug}' is over its limit of ${limit} operations per second (limits.operations_per_second); retry in ${retryAfterMS} ms`,
    462,
    ['SystemOverloadedError', 'RetryableError'],
    { baseBackoffMS: retryAfterMS },
    'rate_limit',
  );
}

const allowedSets = new WeakMap<DataAccess, ReadonlySet<string>>();

/** The data_access.collections set ('*' allows every collection), or undefined when unrestricted. */
export function allowedCollections(dataAccess: DataAccess): ReadonlySet<string> | undefined {
  const list = dataAccess.collections;
  if (list === undefined || list.includes('*')) return undefined;
  let set = allowedSets.get(dataAccess);
  if (!set) {
    set = new Set(list);
    allowedSets.set(dataAccess, set);
  }
  return set;
}

/** Throws Unauthorized when the command touches a collection data_access does not let the app use. */
export function checkDataAccess(app: AppManifest, access: readonly Access[], commandName: string): void {
  const { readOnly } = app.dataAccess;
  const allowed = allowedCollections(app.dataAccess);
  if (!readOnly && !allowed) return;
  for (const a of access) {
    if (readOnly && a.action !== 'read') {
      throw new LimitError(
        'Unauthorized',
        `not authorized on ${a.collection} to execute command ${commandName}: app '${app.slug}' is read-only (data_access.read_only)`,
        13,
        undefined,
        {},
        'data_access',
      );
    }
    if (allowed && !allowed.has(a.collection)) {
      throw new LimitError(
        'Unauthorized',
        `not authorized on ${a.collection} to execute command ${commandName}: app '${app.slug}' may only use ${[...allowed].join(', ') || 'no collection'} (data_access.collections)`,
        13,
        undefined,
        {},
        'data_access',
      );
    }
  }
}

/** listCollections of an app restricted to some collections lists only those. */
export function restrictListing(plan: ReplyPlan, allowed: ReadonlySet<string>): ReplyPlan {
  if (plan.kind !== 'cursor' || plan.view.kind !== 'collections') return plan;
  const names = plan.view.names;
  return { ...plan, view: { ...plan.view, names: (n: string) => allowed.has(n) && (names ? names(n) : true) } };
}

/** The largest whole document a command writes (inserts, replacement updates and upserts, findAndModify replacements), as the policy's rewrite sized it. */
export interface WrittenDocument {
  /** 'documents.3', 'updates.0.u', 'update'. */
  where: string;
  bytes: number;
}

export function documentTooLarge(app: AppManifest, doc: WrittenDocument, limit: number): LimitError {
  return new LimitError(
    'BSONObjectTooLarge',
    `object to insert too large. size in bytes: ${doc.bytes}, max size: ${limit} (${doc.where}; app '${app.slug}' limits.max_document_bytes); nothing was written`,
    10334,
    undefined,
    {},
    'document_size',
  );
}

export function tooManyDocuments(app: AppManifest, collection: string, count: number, adding: number, limit: number): LimitError {
  return new LimitError(
    'OutOfDiskSpace',
    `insert refused: collection '${collection}' of app '${app.slug}' holds about ${count} documents and may hold at most ${limit} ` +
      `(limits.max_documents_per_collection); this insert of ${adding} would pass it. Delete documents or raise the limit`,
    14031,
    undefined,
    {},
    'document_count',
  );
}

