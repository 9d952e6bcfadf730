import type { Document } from 'bson';
import { commandError } from './errors.js';

/**
 * The command table: every command the proxy accepts, by exact (case-sensitive) name, aliases
 * included. Anything not named here is CommandNotFound (59). DESIGN.md rule 2.
 *
 * Each spec says where the command is answered and what the data plane must track about its reply.
 * Scoping (namespaces, filters, pipelines, documents) attaches to these same entries.
 */

/**
 * Commands the proxy answers itself, by handler name (src/session/local-commands.ts; 'sasl' is
 * answered by the connection's authenticator, src/session/authentication.ts).
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
   * ping, buildInfo, saslStart, saslContinue and endSessions (issue 3).
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

const TABLE: readonly CommandSpec[] = [
  // Handshake and connection state: answered by the proxy, never forwarded (DESIGN.md rule 1).
  { name: 'hello', help: 'Handshake: describes the proxy as a mongos.', local: 'hello', preAuth: true, aliases: ['isMaster', 'ismaster'] },
  { name: 'ping', help: 'Liveness check, answered by the proxy.', local: 'ping', preAuth: true },
  { name: 'connectionStatus', help: 'The authenticated identity of this connection.', local: 'connectionStatus' },
  { name: 'hostInfo', help: 'Host facts about the proxy process (not the upstream).', local: 'hostInfo' },
  { name: 'whatsmyuri', help: 'The client address as the proxy sees it.', local: 'whatsmyuri' },
  { name: 'buildInfo', help: 'Upstream server version and build facts.', aliases: ['buildinfo'], preAuth: true },
  { name: 'endSessions', help: 'Ends logical sessions.', preAuth: true },
  // Authentication ends at the proxy too: PLAIN and MONGODB-OIDC with an app token, never forwarded.
  { name: 'saslStart', help: 'Authenticates with an app token (PLAIN or MONGODB-OIDC), answered by the proxy.', local: 'sasl', preAuth: true },
  { name: 'saslContinue', help: 'Continues a SASL conversation (none is ever pending: every mechanism is one step).', local: 'sasl', preAuth: true },

  // CRUD.
  { name: 'insert', help: 'Inserts documents.' },
  { name: 'find', help: 'Queries documents; opens a cursor.', cursor: 'opens' },
  { name: 'getMore', help: 'Continues a cursor on the server that opened it.', target: 'cursor', cursor: 'continues' },
  { name: 'killCursors', help: 'Closes cursors on the servers that opened them.', target: 'cursor', cursor: 'kills' },
  { name: 'update', help: 'Updates documents.' },
  { name: 'delete', help: 'Deletes documents.' },
  { name: 'findAndModify', help: 'Updates or deletes one document and returns it.', aliases: ['findandmodify'] },
  { name: 'count', help: 'Counts documents matching a query.' },
  { name: 'distinct', help: 'Distinct values of a field.' },
  { name: 'aggregate', help: 'Runs an aggregation pipeline; opens a cursor.', cursor: 'opens' },

  // Indexes.
  { name: 'createIndexes', help: 'Builds indexes on a collection.' },
  { name: 'listIndexes', help: 'Lists the indexes of a collection; opens a cursor.', cursor: 'opens' },
  { name: 'dropIndexes', help: 'Drops indexes of a collection.', aliases: ['deleteIndexes'] },

  // Collections.
  { name: 'create', help: 'Creates a collection or view.' },
  { name: 'listCollections', help: 'Lists the collections of the database; opens a cursor.', cursor: 'opens' },
  { name: 'drop', help: 'Drops a collection.' },
  { name: 'renameCollection', help: 'Renames a collection within its database.', adminOnly: true, check: checkRenameWithinDatabase },

  { name: 'explain', help: 'Explains a find, aggregate, count, distinct, update, delete or findAndModify as the app would run it.' },
  { name: 'killSessions', help: 'Kills logical sessions (the app\'s own, mapped like every lsid).' },
  { name: 'refreshSessions', help: 'Keeps logical sessions alive (the app\'s own, mapped like every lsid).' },

  // Server-side JavaScript (DESIGN.md rule 6).
  { name: 'mapReduce', help: 'Refused: runs JavaScript on the server.', aliases: ['mapreduce'], refused: 'QueryFeatureNotAllowed' },
  { name: 'eval', help: 'Refused: runs JavaScript on the server.', aliases: ['$eval'], refused: 'QueryFeatureNotAllowed' },

  // Server-wide and administrative commands (DESIGN.md rule 6).
  ...REFUSED_SERVER_WIDE.map(([name, what]): CommandSpec => ({ name, help: `Refused: reaches ${what}.`, refused: 'Unauthorized' })),

  // Transactions (drivers pin them to one mongos).
  { name: 'commitTransaction', help: 'Commits a multi-document transaction.', adminOnly: true, transactionControl: true },
  { name: 'abortTransaction', help: 'Aborts a multi-document transaction.', adminOnly: true, transactionControl: true },
];

function buildIndex(table: readonly CommandSpec[]): ReadonlyMap<string, CommandSpec> {
  const index = new Map<string, CommandSpec>();
  for (const spec of table) {
    for (const name of [spec.name, ...(spec.aliases ?? [])]) {
      if (index.has(name)) throw new Error(`command table names '${name}' twice`);
      index.set(name, spec);
    }
  }
  return index;
}

export const COMMANDS: ReadonlyMap<string, CommandSpec> = buildIndex(TABLE);

/** The spec of an allowed command by exact name, or undefined (CommandNotFound). */
export function lookupCommand(name: string): CommandSpec | undefined {
  return COMMANDS.get(name);
}

/** Every allowed command with its help text, for docs and `--help`. */
export function commandHelp(): { name: string; aliases: readonly string[]; help: string }[] {
  return TABLE.map((s) => ({ name: s.name, aliases: s.aliases ?? [], help: s.help }));
}
