import { performance } from 'node:perf_hooks';
import type { Document } from 'bson';
import type { Logger } from '../../observability/logger.js';
import { OUTCOME_LABELS, Outcome, type AppMeter } from '../../observability/metrics.js';
import { isDoc } from '../../policy/scope.js';
import type { Request } from '../request.js';

/** What observing a request needs: the connection's logger, and which outputs are on. */
export interface Observer {
  /** The `metrics` setting. */
  readonly instrumented: boolean;
  readonly debugEnabled: boolean;
  readonly warnEnabled: boolean;
  log(): Logger;
}

/**
 * Meter and log a finished request: the outcome, the time at the proxy and upstream and the bytes go
 * to the app's meter; a debug line per command and a warn line when it was slower than the app's
 * slow_operation_ms (docs/architecture.md "One request, step by step").
 */
export function observe(req: Request, o: Observer, meter: AppMeter, received: number): void {
  const end = performance.now();
  const ms = end - req.start;
  const slow = req.slowMS > 0 && ms > req.slowMS && o.warnEnabled;
  let outcome = req.outcome;
  if (outcome === Outcome.OK && req.reply && req.reply.failed) outcome = Outcome.ERROR;
  if (o.instrumented) {
    meter.bytesReceived += received;
    meter.bytesSent += req.sent;
    meter.request(meter.cell(req.command), outcome, ms, req.upstreamMS, end);
    if (outcome === Outcome.REJECTED && req.reason !== undefined) meter.reject(req.reason);
  }
  if (o.debugEnabled) {
    o.log().debug(
      {
        req: req.id,
        cmd: req.command,
        collection: collectionOf(req.cmd),
        duration_ms: round3(ms),
        ...(req.upstreamMS >= 0 ? { upstream_ms: round3(req.upstreamMS) } : {}),
        outcome: OUTCOME_LABELS[outcome],
        ...(req.reason !== undefined ? { reason: req.reason } : {}),
        ...(req.errorCode !== undefined ? { code: req.errorCode } : {}),
      },
      'command',
    );
  }
  if (slow) {
    let docs: number | undefined;
    try {
      docs = req.reply?.documents;
    } catch {
      docs = undefined;
    }
    o.log().warn(
      {
        req: req.id,
        cmd: req.command,
        collection: collectionOf(req.cmd),
        duration_ms: round3(ms),
        ...(req.upstreamMS >= 0 ? { upstream_ms: round3(req.upstreamMS) } : {}),
        docs,
        outcome: OUTCOME_LABELS[outcome],
        threshold_ms: req.slowMS,
      },
      'slow operation',
    );
  }
}

function round3(ms: number): number {
  return Math.round(ms * 1000) / 1000;
}

/** The collection a command names, as the app named it (the first field's value; getMore's `collection`). */
export function collectionOf(cmd: Document | undefined): string | undefined {
  if (!cmd) return undefined;
  let first: string | undefined;
  for (const key in cmd) {
    first = key;
    break;
  }
  if (first === undefined) return undefined;
  const value: unknown = cmd[first];
  if (typeof value === 'string') return value;
  if (typeof cmd.collection === 'string') return cmd.collection;
  // explain: the explained command's collection.
  if (first === 'explain' && isDoc(value)) return collectionOf(value);
  return undefined;
}
