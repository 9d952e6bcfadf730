import type { Document } from 'bson';
import type { Logger } from '../../observability/logger.js';
import type { Exchange } from '../../upstream/index.js';
import type { AppBinding } from '../app-binding.js';
import type { ConnectionAuthenticator } from '../authentication.js';
import type { ProxyContext } from '../context.js';
import type { Request } from '../request.js';

/**
 * What a step sees of its connection: the proxy's shared parts, the connection's identity and app
 * binding, its upstream round trips, and how to answer. Tests give steps a fake one (no socket).
 */
export interface StepContext {
  readonly ctx: ProxyContext;
  readonly auth: Pick<ConnectionAuthenticator, 'identity' | 'check' | 'onHello' | 'saslStart' | 'saslContinue'>;
  readonly binding: AppBinding;
  readonly exchange: Pick<Exchange, 'send'>;
  /** The client closed, or ended its side: nothing more is sent upstream for it. */
  readonly gone: boolean;
  /** The socket is closed: nothing more is written. */
  readonly closed: boolean;
  /** Requests are timed (metrics on, or a slow-operation line possible). */
  readonly timed: boolean;
  /** The largest message the connection reads now (small before authentication). */
  readonly maxMessageSize: number;
  /** The connection's id (connectionStatus, whatsmyuri) and the client's address. */
  readonly id: number;
  readonly remoteAddress: string;
  /** Answers the request with `doc` (an OP_REPLY to an OP_QUERY, else an OP_MSG). */
  reply(req: Request, doc: Document): void;
  /** Writes bytes of the request's reply (counted in its bytes sent). */
  send(req: Request, bytes: Buffer): void;
  /** Closes the connection (`graceful`: replies already written reach the client first). */
  close(reason: string, graceful?: boolean): void;
  /** A fresh requestId for a reply. */
  nextReplyId(): number;
  /** The logger for a line about the request (conn, app_id, req). */
  log(): Logger;
}

/** Whether the request goes on to the next step, or was answered (or intercepted) by this one. */
export type StepResult = 'next' | 'done';

/** One step of the request path (docs/architecture.md "One request, step by step"): reads and fills the request, or throws the error it is answered with. */
export type Step = (req: Request, s: StepContext) => StepResult | Promise<StepResult>;
