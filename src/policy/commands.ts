import type { Document } from 'bson';
import { commandError } from './errors.js';
import type { CommandHandler } from './handler.js';
import { aggregate } from './handlers/aggregate.js';
import { create, drop, listCollections, renameCollection } from './handlers/collections.js';
import { count, distinct } from './handlers/count.js';
import { getMore, killCursorsHandler } from './handlers/cursors.js';
import { deleteCommand } from './handlers/delete.js';
import { explainHandler } from './handlers/explain.js';
import { find } from './handlers/find.js';
import { findAndModify } from './handlers/find-and-modify.js';
import { createIndexes, dropIndexes, listIndexes } from './handlers/indexes.js';
import { insert } from './handlers/insert.js';
import { buildInfo, sessionList, transactionControl } from './handlers/sessions.js';
import { update } from './handlers/update.js';
import {
  connectionStatusReply,
  helloReply,
  hostInfoReply,
  pingReply,
  whatsmyuriReply,
  type LocalAnswer,
} from './local/answers.js';

/**
 * The command registry: every command the proxy accepts, by exact (case-sensitive) name, aliases
 * included; anything not named here is CommandNotFound (59). One entry per command holds all the proxy
 * knows of it: its spec (help, flags, routing), and how it is answered — the policy handler of a
 * forwarded command (src/policy/handlers), the answer of a command the proxy answers itself
 * (src/policy/local), or its refusal. docs/architecture.md ("The request path") and docs/security.md.
 */

/**
 * Commands the proxy answers itself, each tagged with its own canonical name ('sasl' is answered by
 * the connection's authenticator, src/session/authentication.ts; the others by the entry's `answer`).
 */
export type LocalHandler = 'hello' | 'ping' | 'connectionStatus' | 'hostInfo' | 'whatsmyuri' | 'sasl';

/** Which upstream server a forwarded command goes to. */
export type UpstreamTarget =
  /** The primary / standalone / a mongos (or the server a transaction is pinned to). */
  | 'primary'
  /** The server that created the cursor named in the command (getMore, killCursors). */
  | 'cursor';

/** What the reply means for the cursor registry. */
export type CursorEffect = 'opens' | 'continues' | 'kills';

export interface CommandSpec {
  /** Canonical name (aliases resolve to it). */
  readonly name: string;
  readonly help: string;
  readonly aliases?: readonly string[];
  readonly local?: LocalHandler;
  readonly target?: UpstreamTarget;
  readonly cursor?: CursorEffect;
  /**
   * Accepted before the connection has authenticated (and after its token expired): exactly hello,
   * ping, buildInfo, saslStart, saslContinue and endSessions (docs/security.md).
   */
  readonly preAuth?: boolean;
  /** Must be sent to the admin database, as on a real server. */
  readonly adminOnly?: boolean;
  /** Ends or continues a transaction: route to the server the transaction is pinned to. */
  readonly transactionControl?: boolean;
  /** Refuses forms of the command the proxy does not allow (throws a CommandError). */
  readonly check?: (cmd: Document) => void;
  /**
   * Known to the server but refused by the proxy, with the server's code for a command it does not
   * let this user run (13) or for server-side JavaScript (224); `help` says why.
   */
  readonly refused?: 'Unauthorized' | 'QueryFeatureNotAllowed';
  /** A forwarded command's policy: its fields, kind-1 sequences and rewrite (which yields the reply plan). */
  readonly handler?: CommandHandler;
  /** The reply of a command the proxy answers itself (`local` names it, 'sasl' excepted). */
  readonly answer?: LocalAnswer;
}

/** Server-wide, cross-app and administrative commands: named so their refusal is Unauthorized, not 59. */
const REFUSED_SERVER_WIDE: readonly [string, string][] = [
  ['serverStatus', 'server-wide statistics'],
  ['currentOp', "every app's operations"],
  ['killOp', "other apps' operations"],
  ['listDatabases', 'every database of the cluster'],
  ['dropDatabase', 'the shared database of every app'],
  ['dbHash', 'a hash over every app in the database'],
  ['dbStats', 'statistics over every app in the database'],
  ['collStats', 'physical storage details'],
  ['dataSize', 'physical storage details'],
  ['profile', 'the profiler of the shared database'],
  ['top', 'server-wide usage'],
  ['applyOps', 'raw oplog entries'],
  ['fsync', 'the whole server'],
  ['fsyncUnlock', 'the whole server'],
  ['setParameter', 'server parameters'],
  ['getParameter', 'server parameters'],
  ['getCmdLineOpts', 'the server command line'],
  ['getLog', 'the server log'],
  ['logRotate', 'the server log'],
  ['shutdown', 'the whole server'],
  ['killAllSessions', "every app's sessions"],
  ['killAllSessionsByPattern', "every app's sessions"],
  ['createUser', 'database users'],
  ['updateUser', 'database users'],
  ['dropUser', 'database users'],
  ['dropAllUsersFromDatabase', 'database users'],
  ['usersInfo', 'database users'],
  ['grantRolesToUser', 'database users'],
  ['revokeRolesFromUser', 'database users'],
  ['createRole', 'database roles'],
  ['updateRole', 'database roles'],
  ['dropRole', 'database roles'],
  ['dropAllRolesFromDatabase', 'database roles'],
  ['rolesInfo', 'database roles'],
  ['grantPrivilegesToRole', 'database roles'],
  ['revokePrivilegesFromRole', 'database roles'],
  ['grantRolesToRole', 'database roles'],
  ['revokeRolesFromRole', 'database roles'],
  ['authenticate', 'upstream authentication (apps authenticate to the proxy with saslStart)'],
  ['logout', 'upstream authentication'],
  ['replSetGetStatus', 'the replica set'],
  ['replSetGetConfig', 'the replica set'],
  ['setFeatureCompatibilityVersion', 'the whole cluster'],
  ['compact', 'physical storage'],
  ['validate', 'physical storage'],
  ['reIndex', 'physical storage'],
  ['cloneCollectionAsCapped', 'copies between collections outside the namespace resolver'],
  ['convertToCapped', 'physical storage'],
];

/** renameCollection stays inside one database: `db.a` → `db.b`. */
function checkRenameWithinDatabase(cmd: Document): void {
  const from = cmd.renameCollection;
  const to = cmd.to;
  if (typeof from !== 'string' || typeof to !== 'string') {
    throw commandError('TypeMismatch', "renameCollection and 'to' must be namespace strings");
  }
  const dbOf = (ns: string) => ns.slice(0, Math.max(0, ns.indexOf('.')));
  if (!dbOf(from) || dbOf(from) !== dbOf(to)) {
    throw commandError('Unauthorized', `renameCollection from '${from}' to '${to}' leaves its database; mdb-runtime only renames within a database`);
  }
}

const REGISTRY: readonly CommandSpec[] = [
  // Handshake and connection state: answered by the proxy, never forwarded (README "How an app connects").
  { name: 'hello', help: 'Handshake: describes the proxy as a mongos.', local: 'hello', answer: helloReply, preAuth: true, aliases: ['isMaster', 'ismaster'] },
  { name: 'ping', help: 'Liveness check, answered by the proxy.', local: 'ping', answer: pingReply, preAuth: true },
  { name: 'connectionStatus', help: 'The authenticated identity of this connection.', local: 'connectionStatus', answer: connectionStatusReply },
  { name: 'hostInfo', help: 'Host facts about the proxy process (not the upstream).', local: 'hostInfo', answer: hostInfoReply },
  { name: 'whatsmyuri', help: 'The client address as the proxy sees it.', local: 'whatsmyuri', answer: whatsmyuriReply },
  { name: 'buildInfo', help: 'Upstream server version and build facts.', aliases: ['buildinfo'], preAuth: true, handler: buildInfo },
  { name: 'endSessions', help: 'Ends logical sessions.', preAuth: true, handler: sessionList },
  // Authentication ends at the proxy too: PLAIN and MONGODB-OIDC with an app token, never forwarded.
  { name: 'saslStart', help: 'Authenticates with an app token (PLAIN or MONGODB-OIDC), answered by the proxy.', local: 'sasl', preAuth: true },
  { name: 'saslContinue', help: 'Continues a SASL conversation (none is ever pending: every mechanism is one step).', local: 'sasl', preAuth: true },

  // CRUD.
  { name: 'insert', help: 'Inserts documents.', handler: insert },
  { name: 'find', help: 'Queries documents; opens a cursor.', cursor: 'opens', handler: find },
  { name: 'getMore', help: 'Continues a cursor on the server that opened it.', target: 'cursor', cursor: 'continues', handler: getMore },
  { name: 'killCursors', help: 'Closes cursors on the servers that opened them.', target: 'cursor', cursor: 'kills', handler: killCursorsHandler },
  { name: 'update', help: 'Updates documents.', handler: update },
  { name: 'delete', help: 'Deletes documents.', handler: deleteCommand },
  { name: 'findAndModify', help: 'Updates or deletes one document and returns it.', aliases: ['findandmodify'], handler: findAndModify },
  { name: 'count', help: 'Counts documents matching a query.', handler: count },
  { name: 'distinct', help: 'Distinct values of a field.', handler: distinct },
  { name: 'aggregate', help: 'Runs an aggregation pipeline; opens a cursor.', cursor: 'opens', handler: aggregate },

  // Indexes.
  { name: 'createIndexes', help: 'Builds indexes on a collection.', handler: createIndexes },
  { name: 'listIndexes', help: 'Lists the indexes of a collection; opens a cursor.', cursor: 'opens', handler: listIndexes },
  { name: 'dropIndexes', help: 'Drops indexes of a collection.', aliases: ['deleteIndexes'], handler: dropIndexes },

  // Collections.
  { name: 'create', help: 'Creates a collection or view.', handler: create },
  { name: 'listCollections', help: 'Lists the collections of the database; opens a cursor.', cursor: 'opens', handler: listCollections },
  { name: 'drop', help: 'Drops a collection.', handler: drop },
  { name: 'renameCollection', help: 'Renames a collection within its database.', adminOnly: true, check: checkRenameWithinDatabase, handler: renameCollection },

  { name: 'explain', help: 'Explains a find, aggregate, count, distinct, update, delete or findAndModify as the app would run it.', handler: explainHandler((name) => COMMANDS.get(name)) },
  { name: 'killSessions', help: 'Kills logical sessions (the app\'s own, mapped like every lsid).', handler: sessionList },
  { name: 'refreshSessions', help: 'Keeps logical sessions alive (the app\'s own, mapped like every lsid).', handler: sessionList },

  // Server-side JavaScript (docs/security.md).
  { name: 'mapReduce', help: 'Refused: runs JavaScript on the server.', aliases: ['mapreduce'], refused: 'QueryFeatureNotAllowed' },
  { name: 'eval', help: 'Refused: runs JavaScript on the server.', aliases: ['$eval'], refused: 'QueryFeatureNotAllowed' },

  // Server-wide and administrative commands (docs/security.md).
  ...REFUSED_SERVER_WIDE.map(([name, what]): CommandSpec => ({ name, help: `Refused: reaches ${what}.`, refused: 'Unauthorized' })),

  // Transactions (drivers pin them to one mongos).
  { name: 'commitTransaction', help: 'Commits a multi-document transaction.', adminOnly: true, transactionControl: true, handler: transactionControl },
  { name: 'abortTransaction', help: 'Aborts a multi-document transaction.', adminOnly: true, transactionControl: true, handler: transactionControl },
];

/**
 * How an entry is answered: exactly one of a policy handler (forwarded), a local answer, the
 * authenticator ('sasl') or a refusal. Checked when the registry is built, so an entry cannot be
 * half-wired.
 */
function checkEntry(spec: CommandSpec): void {
  const ways = [spec.handler !== undefined, spec.answer !== undefined || spec.local === 'sasl', spec.refused !== undefined];
  if (ways.filter(Boolean).length !== 1) throw new Error(`command registry: '${spec.name}' needs exactly one of handler, answer or refused`);
  if ((spec.local !== undefined) !== (spec.answer !== undefined || spec.local === 'sasl')) {
    throw new Error(`command registry: '${spec.name}' has a local answer without being local, or the reverse`);
  }
  if (spec.local !== undefined && spec.local !== 'sasl' && spec.local !== spec.name) {
    throw new Error(`command registry: '${spec.name}' is tagged local '${spec.local}': a local command is tagged with its own name`);
  }
}

function buildIndex(registry: readonly CommandSpec[]): ReadonlyMap<string, CommandSpec> {
  const index = new Map<string, CommandSpec>();
  for (const spec of registry) {
    checkEntry(spec);
    for (const name of [spec.name, ...(spec.aliases ?? [])]) {
      if (index.has(name)) throw new Error(`command registry names '${name}' twice`);
      index.set(name, spec);
    }
  }
  return index;
}

/** Every accepted name (aliases included) → its entry. */
export const COMMANDS: ReadonlyMap<string, CommandSpec> = buildIndex(REGISTRY);

/** The entry of an allowed command by exact name, or undefined (CommandNotFound). */
export function lookupCommand(name: string): CommandSpec | undefined {
  return COMMANDS.get(name);
}

/** Every allowed command with its help text, for docs and `--help`. */
export function commandHelp(): { name: string; aliases: readonly string[]; help: string }[] {
  return REGISTRY.map((s) => ({ name: s.name, aliases: s.aliases ?? [], help: s.help }));
}
