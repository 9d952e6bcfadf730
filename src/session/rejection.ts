import { BSONError } from 'bson';
import { CommandError } from '../policy/errors.js';
import { ServerJavaScriptError } from '../policy/server-js.js';
import { WireError } from '../wire/errors.js';
import { Outcome, type OutcomeCode, type RejectReason } from '../observability/metrics.js';
import { ClientGoneError as UpstreamClientGone, UnreachableError as UpstreamUnreachable, UpstreamError, UpstreamTimeoutError } from '../upstream/index.js';
import { LimitError } from './app-limits.js';

/**
 * A request refused before it ran, and why (the metrics' rejection reason). The step that refuses it
 * says why: it throws this around the error the client is answered with.
 */
export class Rejected extends Error {
  constructor(
    readonly reason: RejectReason,
    readonly error: CommandError | WireError | BSONError,
  ) {
    super(error.message);
  }
}

/** A refusal of the client's input (an error the client is answered with), as a rejection for `reason`; anything else unchanged. */
export function rejectedAs(reason: RejectReason, err: unknown): unknown {
  return err instanceof CommandError || err instanceof WireError || err instanceof BSONError ? new Rejected(reason, err) : err;
}

/**
 * Why the policy layer refused a command: it refuses server-side JavaScript with
 * QueryFeatureNotAllowed (docs/security.md), anything else is the scoping policy's refusal.
 */
export function policyReason(err: unknown): RejectReason {
  return err instanceof ServerJavaScriptError ? 'server_js' : 'policy';
}

/** An error answered before the connection closes (its app was removed, or it is over the connection limit). */
export class ClosingError extends LimitError {}

/** The upstream could not be reached before anything was sent (the driver may retry). */
export class UnreachableError extends CommandError {}

/**
 * The client closed before its request was sent upstream: it is not sent (its reply could never be
 * delivered). For a write this is one of the outcomes the client must already allow for: it saw a
 * network error, so the write's outcome is unknown to it (a retryable write is retried by the driver).
 */
export class ClientDisconnectError extends UnreachableError {
  constructor() {
    super('ClientDisconnect', 'the client closed its connection before the request was sent upstream; it was not sent', 279);
  }
}

/** An error a driver retries (the upstream was not reached, so no command ran). */
export function retryableUnavailable(detail: string): CommandError {
  return new UnreachableError('HostUnreachable', `mdb-runtime could not reach the upstream: ${detail}`, 6, ['RetryableWriteError']);
}

/**
 * The upstream did not answer in time: the request may or may not have run there (as after a network
 * timeout), so drivers retry it as they would one (NetworkTimeout is a retryable code).
 */
export function upstreamTimedOut(timeoutMS: number): CommandError {
  return new UnreachableError(
    'NetworkTimeout',
    `mdb-runtime: the upstream did not answer within ${timeoutMS} ms (upstream.request_timeout_ms); the request was abandoned and its upstream connection closed`,
    89,
    ['RetryableWriteError'],
  );
}

/** An upstream round trip's failure as the client is answered about it (an UpstreamError mid-request stays: it closes the connection). */
export function clientErrorOf(err: unknown): unknown {
  if (err instanceof UpstreamClientGone) return new ClientDisconnectError();
  if (err instanceof UpstreamUnreachable) return retryableUnavailable(err.detail);
  if (err instanceof UpstreamTimeoutError) return upstreamTimedOut(err.timeoutMS);
  return err;
}

/** What an error that ended a request means for the metrics: its outcome, rejection reason and code. */
export interface Verdict {
  outcome: OutcomeCode;
  reason: RejectReason | undefined;
  code: number | undefined;
}

export function verdictOf(err: unknown): Verdict {
  if (err instanceof Rejected) return { outcome: Outcome.REJECTED, reason: err.reason, code: codeOf(err.error) };
  const code = codeOf(err);
  if (err instanceof LimitError && err.reason !== undefined) return { outcome: Outcome.REJECTED, reason: err.reason, code };
  if (err instanceof UpstreamError || err instanceof UnreachableError) return { outcome: Outcome.FAILED, reason: undefined, code };
  return { outcome: Outcome.ERROR, reason: undefined, code };
}

function codeOf(err: unknown): number | undefined {
  return err instanceof CommandError || err instanceof WireError ? err.code : undefined;
}
