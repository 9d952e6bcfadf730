import os from 'node:os';
import type { Document } from 'bson';
import {
  runLocalCommand as answerLocal,
  type HostFacts,
  type LocalAnswerContext,
  type LocalCommandContext,
  type SyncLocalHandler,
} from '../policy/local/index.js';

/**
 * The local commands' answers are pure and live with the command registry (src/policy/local); what
 * they report of the clock and the host is read here.
 */
export { MAX_POLICY_WIRE_VERSION, type LocalCommandContext, type SyncLocalHandler } from '../policy/local/index.js';

let host: HostFacts | undefined;

function answerContext(ctx: LocalCommandContext): LocalAnswerContext {
  host ??= {
    hostname: os.hostname(),
    cpuAddrSize: process.arch.endsWith('64') ? 64 : 32,
    memSizeMB: Math.round(os.totalmem() / 1024 / 1024),
    numCores: os.cpus().length,
    cpuArch: process.arch,
    osType: os.type(),
    osVersion: os.release(),
  };
  return { ...ctx, now: new Date(), host };
}

export function runLocalCommand(handler: SyncLocalHandler, cmd: Document, name: string, ctx: LocalCommandContext): Document {
  return answerLocal(handler, cmd, name, answerContext(ctx));
}
