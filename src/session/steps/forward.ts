import type { Document } from 'bson';
import { numberOf } from '../../policy/bson-order.js';
import { MsgFlag } from '../../wire/constants.js';
import { encodeOpMsg, parseOpMsg } from '../../wire/opmsg.js';
import { encodeDocument } from '../../policy/decode.js';
import { commandError } from '../../policy/errors.js';
import type { CursorView } from '../../policy/handler.js';
import { cursorId, endSessionCursors } from '../../upstream/index.js';
import { ReplyView } from '../../wire/reply-status.js';
import { fairUpstreamShare } from '../context.js';
import { Rejected, clientErrorOf } from '../rejection.js';
import { AppShare, type Request } from '../request.js';
import { killCursors } from './kill-cursors.js';
import type { StepContext, StepResult } from './step.js';

/**
 * Route and round trip: the app's upstream share is fixed, the command goes to the server holding its
 * cursor (only if the app owns it), to its transaction's pinned server, or to the writable one; the
 * re-encoded command is sent and its reply walked once into a view (src/wire/reply-status.ts).
 */
export async function forward(req: Request, s: StepContext): Promise<StepResult> {
  const { ctx } = s;
  const app = req.live!.manifest;
  const spec = req.spec!;
  const cmd = req.cmd!;
  const scope = req.scope!;
  const rewritten = req.rewritten!;
  req.share = new AppShare(
    req.usage!,
    app.limits.upstreamConnections ?? fairUpstreamShare(ctx.limits.upstreamPoolSize, ctx.apps.current.size),
    app.limits.openCursors ?? ctx.limits.openCursorsPerApp,
    ctx.limits.upstreamWaitQueueTimeoutMS,
  );
  if (spec.cursor === 'kills') return killCursors(req, s);
  const upstream = ctx.upstream;
  let address: string;
  if (spec.target === 'cursor') {
    const id = cursorId(cmd.getMore);
    // Another app's cursor does not exist for this one (docs/security.md).
    const entry = id === undefined ? undefined : upstream.cursors.lookup(id, scope.slug);
    if (!entry) throw new Rejected('cursor_not_found', commandError('CursorNotFound', `cursor id ${String(id ?? cmd.getMore)} not found`));
    address = entry.address;
    req.rewritten = { ...rewritten, reply: { kind: 'cursor', view: entry.view as CursorView, collections: rewritten.reply.collections } };
    if (entry.awaitData) capAwaitTime(req, s, rewritten.body);
  } else {
    const now = upstream.router.routeNow(cmd, spec.transactionControl === true);
    if (now !== undefined) address = now;
    else {
      try {
        address = await upstream.router.route({ cmd, transactionControl: spec.transactionControl === true, owner: scope.slug });
      } catch (err) {
        throw clientErrorOf(err);
      }
    }
  }
  if (spec.name === 'endSessions' || spec.name === 'killSessions') {
    endSessionCursors(upstream.cursors, (t, r) => void upstream.killCursors(t, r), scope.slug, rewritten.body[spec.name]);
  }
  const out = encodeOpMsg(0, 0, req.parsed!.flags & MsgFlag.MORE_TO_COME, encodeDocument(rewritten.body), rewritten.sequences);
  let reply: Buffer | undefined;
  try {
    reply = await s.exchange.send(address, out, req.moreToCome, requestTimeout(ctx.limits.upstreamRequestTimeoutMS, rewritten.body.maxTimeMS), req.share, req);
  } catch (err) {
    throw clientErrorOf(err);
  }
  if (!reply) return 'done';
  req.upstreamReply = reply;
  req.upstreamAddress = address;
  req.reply = new ReplyView(parseOpMsg(reply).body);
  return 'next';
}

/**
 * A getMore of an awaitData cursor (tailable, change stream) waits upstream for its maxTimeMS while
 * it holds an upstream connection: the wait is capped (upstream.max_await_time_ms). The server may
 * answer an awaitData getMore early with an empty batch at any time, so drivers just ask again.
 */
function capAwaitTime(req: Request, s: StepContext, body: Document): void {
  const cap = s.ctx.limits.maxAwaitTimeMS;
  const asked = numberOf(body.maxTimeMS);
  if (asked === undefined || asked <= cap) return;
  body.maxTimeMS = cap;
  req.share!.usage.awaitCapped++;
}

/** How long a request may wait for its reply: the runtime's bound, or the command's own maxTimeMS and a second. */
function requestTimeout(bound: number, maxTimeMS: unknown): number {
  const asked = numberOf(maxTimeMS);
  return asked !== undefined && asked + 1000 > bound ? asked + 1000 : bound;
}
