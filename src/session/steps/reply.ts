import { encodeOpMsg, readdressOpMsg } from '../../wire/opmsg.js';
import { OK } from '../../policy/errors.js';
import { rewriteReply } from '../../policy/reply.js';
import { cursorId, trackCursor } from '../../upstream/index.js';
import { tooManyCursors } from '../app-limits.js';
import type { Request } from '../request.js';
import type { StepContext, StepResult } from './step.js';

/**
 * The reply: cursors it opened are recorded for the app (one past limits.open_cursors is killed and
 * the command refused), a finished transaction's pin released, and the reply rewritten for the app
 * (physical names mapped back, the tag hidden) and written, readdressed to the client's request.
 */
export function reply(req: Request, s: StepContext): StepResult {
  const view = req.reply!;
  const spec = req.spec!;
  const cmd = req.cmd!;
  const scope = req.scope!;
  const rewritten = req.rewritten!;
  const plan = rewritten.reply;
  const upstream = s.ctx.upstream;
  if (spec.cursor && spec.cursor !== 'kills' && plan.kind === 'cursor') {
    const share = req.share!;
    const tracked = trackCursor(
      upstream.cursors,
      (t, r) => void upstream.killCursors(t, r),
      {
        effect: spec.cursor,
        requested: spec.cursor === 'continues' ? cursorId(cmd.getMore) : undefined,
        address: req.upstreamAddress,
        owner: scope.slug,
        view: plan.view,
        lsid: spec.cursor === 'opens' ? rewritten.body.lsid : undefined,
        // Tailable awaitData cursors and change streams wait upstream on every getMore (forward's capAwaitTime).
        awaitData: plan.view.kind === 'changeEvents' || (cmd.tailable === true && cmd.awaitData === true),
        clientGone: s.gone,
        limit: share.cursors,
      },
      view,
    );
    if (tracked === 'orphaned' && s.ctx.logger.isLevelEnabled('debug')) {
      s.log().debug({ cursor: String(view.cursorId), ns: view.cursorNs }, 'killing a cursor opened for a client that closed');
    } else if (tracked === 'over_limit') {
      share.usage.cursorRefusals++;
      share.usage.refused++;
      throw tooManyCursors(scope.slug, share.cursors);
    }
  }
  if (spec.transactionControl) upstream.router.settle({ cmd, transactionControl: true, owner: scope.slug }, spec.name, view);
  if (s.closed) return 'done';
  if (spec.name === 'endSessions' && view.code === 59) {
    // An upstream without sessions (FerretDB v1): the proxy advertises sessions and has ended what it
    // tracks of them (their cursors), so the command succeeded as far as the client can tell.
    req.reply = undefined;
    s.reply(req, { ok: OK });
    return 'done';
  }
  const raw = req.upstreamReply!;
  const body = rewriteReply(scope, plan, view.body, view);
  s.send(req, body === view.body ? readdressOpMsg(raw, s.nextReplyId(), req.id) : encodeOpMsg(s.nextReplyId(), req.id, 0, body));
  return 'done';
}
