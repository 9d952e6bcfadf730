import os from 'node:os';
import type { Document } from 'bson';
import { MAX_BSON_OBJECT_SIZE, MAX_WRITE_BATCH_SIZE } from '../wire/constants.js';
import type { LocalHandler } from '../policy/commands.js';

/** The highest wire version whose commands the policy layer fully understands (MongoDB 7.0). */
export const MAX_POLICY_WIRE_VERSION = 21;

/** What a local command may know about the connection it runs on. */
export interface LocalCommandContext {
  connectionId: number;
  remoteAddress: string;
  upstreamMaxWireVersion: number;
  maxMessageSize: number;
  logicalSessionTimeoutMinutes: number;
  authenticatedUser: { user: string; db: string } | undefined;
  authenticatedUserRoles: { role: string; db: string }[];
}

/** Local commands answered here; 'sasl' goes to the connection's authenticator. */
export type SyncLocalHandler = Exclude<LocalHandler, 'sasl'>;

/**
 * The handshake reply, as a mongos (DESIGN.md rule 1): msg "isdbgrid" so drivers pin transactions and
 * keep retryable writes on; no topologyVersion (no streaming monitoring through the proxy); no
 * compression; maxWireVersion capped at what the policy layer understands.
 */
export function helloReply(cmd: Document, commandName: string, ctx: LocalCommandContext): Document {
  const reply: Document = {};
  if (cmd.helloOk === true) reply.helloOk = true;
  if (commandName === 'hello') reply.isWritablePrimary = true;
  else reply.ismaster = true;
  Object.assign(reply, {
    msg: 'isdbgrid',
    maxBsonObjectSize: MAX_BSON_OBJECT_SIZE,
    maxMessageSizeBytes: ctx.maxMessageSize,
    maxWriteBatchSize: MAX_WRITE_BATCH_SIZE,
    localTime: new Date(),
    logicalSessionTimeoutMinutes: ctx.logicalSessionTimeoutMinutes,
    connectionId: ctx.connectionId,
    minWireVersion: 0,
    maxWireVersion: Math.min(ctx.upstreamMaxWireVersion, MAX_POLICY_WIRE_VERSION),
    readOnly: false,
    ok: 1,
  });
  return reply;
}

const HANDLERS: Record<SyncLocalHandler, (cmd: Document, name: string, ctx: LocalCommandContext) => Document> = {
  hello: helloReply,
  ping: () => ({ ok: 1 }),
  connectionStatus: (cmd, _name, ctx) => {
    const users = ctx.authenticatedUser ? [ctx.authenticatedUser] : [];
    const reply: Document = { authInfo: { authenticatedUsers: users, authenticatedUserRoles: ctx.authenticatedUserRoles }, ok: 1 };
    if (cmd.showPrivileges === true) (reply.authInfo as Document).authenticatedUserPrivileges = [];
    return reply;
  },
  hostInfo: () => ({
    system: {
      currentTime: new Date(),
      hostname: os.hostname(),
      cpuAddrSize: process.arch.endsWith('64') ? 64 : 32,
      memSizeMB: Math.round(os.totalmem() / 1024 / 1024),
      numCores: os.cpus().length,
      cpuArch: process.arch,
      numaEnabled: false,
    },
    os: { type: os.type(), name: os.type(), version: os.release() },
    extra: { note: 'mdb-runtime proxy host' },
    ok: 1,
  }),
  whatsmyuri: (_cmd, _name, ctx) => ({ you: ctx.remoteAddress, ok: 1 }),
};

export function runLocalCommand(handler: SyncLocalHandler, cmd: Document, name: string, ctx: LocalCommandContext): Document {
  return HANDLERS[handler](cmd, name, ctx);
}
