import type { Document } from 'bson';
import { MAX_BSON_OBJECT_SIZE, MAX_WRITE_BATCH_SIZE } from '../../wire/constants.js';
import { OK } from '../errors.js';

/**
 * The replies of the commands the proxy answers itself (README "How an app connects"). Pure: every
 * fact a reply states, the clock and the host included, comes in the context; the session layer reads
 * them (src/session/local-commands.ts).
 */

/** The highest wire version whose commands the policy layer fully understands (MongoDB 7.0). */
export const MAX_POLICY_WIRE_VERSION = 21;

/** What a local command may know about the connection it runs on. */
export interface LocalCommandContext {
  connectionId: number;
  remoteAddress: string;
  upstreamMaxWireVersion: number;
  /** The upstream is a standalone server (no replica set, no mongos): what it cannot back is not advertised. */
  upstreamStandalone: boolean;
  maxMessageSize: number;
  logicalSessionTimeoutMinutes: number;
  authenticatedUser: { user: string; db: string } | undefined;
  authenticatedUserRoles: { role: string; db: string }[];
}

/** Facts about the proxy's host (not the upstream's), as hostInfo reports them. */
export interface HostFacts {
  readonly hostname: string;
  readonly cpuAddrSize: 32 | 64;
  readonly memSizeMB: number;
  readonly numCores: number;
  readonly cpuArch: string;
  readonly osType: string;
  readonly osVersion: string;
}

/** Everything a local answer reads: the connection, the time of the request and the host. */
export interface LocalAnswerContext extends LocalCommandContext {
  readonly now: Date;
  readonly host: HostFacts;
}

/** A local command's answer: (command, the name the client used, context) → reply. */
export type LocalAnswer = (cmd: Document, commandName: string, ctx: LocalAnswerContext) => Document;

/**
 * The handshake reply, as a mongos (msg "isdbgrid", so drivers pin transactions and keep retryable
 * writes on) when the upstream is a replica set or a sharded cluster; as a standalone when it is one, so
 * that drivers neither retry writes nor start transactions it cannot back (README, "How an app
 * connects"). No topologyVersion (no streaming monitoring through the proxy); no compression;
 * maxWireVersion capped at what the policy layer understands.
 */
export const helloReply: LocalAnswer = (cmd, commandName, ctx) => {
  const reply: Document = {};
  if (cmd.helloOk === true) reply.helloOk = true;
  if (commandName === 'hello') reply.isWritablePrimary = true;
  else reply.ismaster = true;
  if (!ctx.upstreamStandalone) reply.msg = 'isdbgrid';
  Object.assign(reply, {
    maxBsonObjectSize: MAX_BSON_OBJECT_SIZE,
    maxMessageSizeBytes: ctx.maxMessageSize,
    maxWriteBatchSize: MAX_WRITE_BATCH_SIZE,
    localTime: ctx.now,
    logicalSessionTimeoutMinutes: ctx.logicalSessionTimeoutMinutes,
    connectionId: ctx.connectionId,
    minWireVersion: 0,
    maxWireVersion: Math.min(ctx.upstreamMaxWireVersion, MAX_POLICY_WIRE_VERSION),
    readOnly: false,
    ok: OK,
  });
  return reply;
};

export const pingReply: LocalAnswer = () => ({ ok: OK });

export const connectionStatusReply: LocalAnswer = (cmd, _name, ctx) => {
  const users = ctx.authenticatedUser ? [ctx.authenticatedUser] : [];
  const authInfo: Document = { authenticatedUsers: users, authenticatedUserRoles: ctx.authenticatedUserRoles };
  if (cmd.showPrivileges === true) authInfo.authenticatedUserPrivileges = [];
  return { authInfo, ok: OK };
};

export const hostInfoReply: LocalAnswer = (_cmd, _name, { now, host }) => ({
  system: {
    currentTime: now,
    hostname: host.hostname,
    cpuAddrSize: host.cpuAddrSize,
    memSizeMB: host.memSizeMB,
    numCores: host.numCores,
    cpuArch: host.cpuArch,
    numaEnabled: false,
  },
  os: { type: host.osType, name: host.osType, version: host.osVersion },
  extra: { note: 'mdb-runtime proxy host' },
  ok: OK,
});

export const whatsmyuriReply: LocalAnswer = (_cmd, _name, ctx) => ({ you: ctx.remoteAddress, ok: OK });
