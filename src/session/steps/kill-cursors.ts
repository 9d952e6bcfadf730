import type { Document } from 'bson';
import { OK } from '../../policy/errors.js';
import { MsgFlag } from '../../wire/constants.js';
import { encodeOpMsg, parseOpMsg } from '../../wire/opmsg.js';
import { decodeDocument, encodeDocument } from '../../policy/decode.js';
import { rewriteReply } from '../../policy/reply.js';
import { ClientGoneError, killDeparted, planKill, type CursorKillReason, type CursorTarget } from '../../upstream/index.js';
import { Outcome } from '../../observability/metrics.js';
import { clientErrorOf } from '../rejection.js';
import type { Request } from '../request.js';
import type { StepContext, StepResult } from './step.js';

/**
 * killCursors, intercepted: only cursors the app holds reach the upstream (one killCursors per server
 * that opened them); any other id is reported not found, as if it did not exist. The replies are merged.
 */
export async function killCursors(req: Request, s: StepContext): Promise<StepResult> {
  const upstream = s.ctx.upstream;
  const rewritten = req.rewritten!;
  const cmd = req.cmd!;
  const scope = req.scope!;
  const kill = (t: CursorTarget[], r: CursorKillReason) => void upstream.killCursors(t, r);
  const { byAddress, notFound } = planKill(upstream.cursors, scope.slug, Array.isArray(cmd.cursors) ? cmd.cursors : []);
  const merged: Document = { cursorsKilled: [], cursorsNotFound: notFound, cursorsAlive: [], cursorsUnknown: [], ok: OK };
  for (const [address, group] of byAddress) {
    const body = encodeDocument({ ...rewritten.body, cursors: group });
    let reply: Buffer | undefined;
    try {
      reply = await s.exchange.send(address, encodeOpMsg(0, 0, req.parsed!.flags & MsgFlag.MORE_TO_COME, body), req.moreToCome, s.ctx.limits.upstreamRequestTimeoutMS, req.share, req);
    } catch (err) {
      // The client left before its killCursors went out: the cursors, already forgotten, are killed anyway.
      if (err instanceof ClientGoneError) killDeparted(kill, byAddress, `${String(rewritten.body.$db)}.${String(rewritten.body.killCursors)}`);
      throw clientErrorOf(err);
    }
    byAddress.delete(address);
    if (!reply) continue;
    const doc = decodeDocument(rewriteReply(scope, rewritten.reply, parseOpMsg(reply).body));
    if (Number(doc.ok) !== 1) {
      req.outcome = Outcome.ERROR;
      if (!req.moreToCome) s.reply(req, doc);
      return 'done';
    }
    for (const key of ['cursorsKilled', 'cursorsNotFound', 'cursorsAlive', 'cursorsUnknown']) {
      if (Array.isArray(doc[key])) (merged[key] as unknown[]).push(...(doc[key] as unknown[]));
    }
  }
  if (!req.moreToCome) s.reply(req, merged);
  return 'done';
}
