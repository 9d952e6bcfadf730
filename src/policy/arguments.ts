import { commandError, unknownFieldError } from './errors.js';

/**
 * Generic command arguments (mongodb/specifications: generic-command-arguments) the proxy passes on.
 * Anything else that is not one of a command's own fields is refused (docs/security.md).
 */
export const GENERIC_ARGUMENTS: ReadonlySet<string> = new Set([
  '$db', 'lsid', 'txnNumber', 'autocommit', 'startTransaction', '$readPreference', 'readConcern',
  'writeConcern', 'maxTimeMS', 'comment', '$clusterTime', 'apiVersion', 'apiStrict', 'apiDeprecationErrors',
]);

/**
 * Arguments that exist on the server but would let an app step outside its sandbox or the operator's
 * guards: refused with Unauthorized rather than "unknown field", so the reason is clear.
 */
const REFUSED_ARGUMENTS: ReadonlyMap<string, string> = new Map([
  ['bypassDocumentValidation', 'would bypass the validators the operator installs on app collections'],
  ['collectionUUID', 'names a collection by UUID'],
  ['mayBypassWriteBlocking', 'is an internal argument'],
  ['$audit', 'is an internal argument'],
  ['$client', 'is handshake metadata'],
  ['$configServerState', 'is an internal argument'],
  ['$queryOptions', 'is a legacy internal argument'],
  ['maxTimeMSOpOnly', 'is an internal argument'],
  ['encryptionInformation', 'is an internal argument'],
  ['databaseVersion', 'is an internal argument'],
  ['shardVersion', 'is an internal argument'],
  ['$tenant', 'is an internal argument'],
  ['expectPrefix', 'is an internal argument'],
]);

/** Refuses any top-level field that is neither generic nor one of the command's own `fields`. */
export function checkArguments(command: string, body: Record<string, unknown>, fields: ReadonlySet<string>): void {
  let first = true;
  for (const key of Object.keys(body)) {
    if (first) {
      first = false; // the command name itself
      continue;
    }
    if (fields.has(key) || GENERIC_ARGUMENTS.has(key)) continue;
    const refused = REFUSED_ARGUMENTS.get(key);
    if (refused) throw commandError('Unauthorized', `${command}.${key} is not allowed by mdb-runtime: it ${refused}`);
    throw unknownFieldError(command, key);
  }
}
