import type { Document } from 'bson';
import type { CommandSpec } from '../policy/commands.js';
import type { RewrittenCommand } from '../policy/handler.js';
import type { AppScope } from '../policy/scope.js';
import type { OpMsg } from '../wire/opmsg.js';
import type { UpstreamShare } from '../upstream/index.js';
import type { ReplyView } from '../wire/reply-status.js';
import { Outcome, UNKNOWN_COMMAND, type OutcomeCode, type RejectReason } from '../observability/metrics.js';
import type { AppEntry } from './app-usage.js';
import type { LiveApp } from './app-binding.js';
import { overUpstreamShare } from './app-limits.js';

/** The app's share of the upstream a request runs under (limits.upstream_connections, limits.open_cursors). */
export class AppShare implements UpstreamShare {
  constructor(
    readonly usage: AppEntry,
    readonly connections: number,
    readonly cursors: number,
    readonly waitMS: number,
  ) {}

  overShare(): Error {
    return overUpstreamShare(this.usage.slug, this.connections, this.waitMS);
  }
}

/**
 * One request, from its message to its metrics and log line: what the steps learn of it as it goes
 * (the decoded command, its app, its rewrite, the reply) and how it ended. Made per message, dropped
 * once it is counted.
 */
export class Request {
  /** The client's requestId (logged as `req`). */
  readonly id: number;
  /** The message's opcode (the inner one once an OP_COMPRESSED is unwrapped). */
  opCode: number;
  /** performance.now() when it arrived (0 when nothing is timed). */
  readonly start: number;
  /** A moreToCome message: no reply, not even an error. */
  moreToCome = false;
  /** The command label: a canonical name of the command table, or 'unknown'. */
  command = UNKNOWN_COMMAND;
  /** The command's name as sent (an alias stays an alias). */
  name = '';
  parsed: OpMsg | undefined = undefined;
  cmd: Document | undefined = undefined;
  spec: CommandSpec | undefined = undefined;
  /** The app it runs as (undefined: not authenticated). */
  live: LiveApp | undefined = undefined;
  usage: AppEntry | undefined = undefined;
  scope: AppScope | undefined = undefined;
  rewritten: RewrittenCommand | undefined = undefined;
  /** The app's upstream share its round trips count against (undefined: not an app's command). */
  share: AppShare | undefined = undefined;
  /** Settles an insert admitted by limits.max_documents_per_collection once it is answered (src/session/document-counts.ts). */
  settleCount: (() => void) | undefined = undefined;
  /** The upstream reply's bytes, and the server that sent it. */
  upstreamReply: Buffer | undefined = undefined;
  upstreamAddress = '';
  /** The upstream reply, walked once (for the rewrite, cursors and the metrics). */
  reply: ReplyView | undefined = undefined;
  outcome: OutcomeCode = Outcome.OK;
  reason: RejectReason | undefined = undefined;
  errorCode: number | undefined = undefined;
  /** Time waiting for upstream replies (ms); < 0: nothing was sent upstream. */
  upstreamMS = -1;
  /** Bytes written to the client for it. */
  sent = 0;
  /** The slow-operation threshold in force for it (ms; 0: none). */
  slowMS: number;

  constructor(
    public msg: Buffer,
    slowMS: number,
    start: number,
  ) {
    this.id = msg.readInt32LE(4);
    this.opCode = msg.readInt32LE(12);
    this.slowMS = slowMS;
    this.start = start;
  }
}
