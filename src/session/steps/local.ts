import type { Document } from 'bson';
import { OK } from '../../policy/errors.js';
import { MsgFlag } from '../../wire/constants.js';
import { encodeOpMsg, parseOpMsg, readdressOpMsg } from '../../wire/opmsg.js';
import { encodeDocument } from '../../policy/decode.js';
import type { LocalHandler } from '../../policy/commands.js';
import { ReplyView } from '../../wire/reply-status.js';
import { Outcome } from '../../observability/metrics.js';
import { MAX_POLICY_WIRE_VERSION, runLocalCommand, type LocalCommandContext } from '../local-commands.js';
import { clientErrorOf } from '../rejection.js';
import type { Request } from '../request.js';
import type { StepContext, StepResult } from './step.js';

/** Commands the proxy answers itself (hello, ping, saslStart, ...): answered here, and the request ends. */
export function local(req: Request, s: StepContext): StepResult | Promise<StepResult> {
  const handler = req.spec!.local;
  return handler ? answerLocal(req, s, handler) : 'next';
}

async function answerLocal(req: Request, s: StepContext, handler: LocalHandler): Promise<StepResult> {
  const cmd = req.cmd!;
  let reply;
  if (handler === 'sasl') reply = req.name === 'saslStart' ? await s.auth.saslStart(cmd) : s.auth.saslContinue(cmd);
  else if (handler === 'hello') reply = await answerHello(cmd, req.name, s);
  else reply = runLocalCommand(handler, cmd, req.name, localContext(s));
  if (!req.moreToCome) s.reply(req, reply);
  return 'done';
}

/**
 * The handshake's answer, for OP_MSG and the legacy OP_QUERY alike: its fields (appName,
 * speculativeAuthenticate) are taken first, then the reply that reflects them.
 */
export async function answerHello(cmd: Document, name: string, s: StepContext): Promise<Document> {
  const extra = await s.auth.onHello(cmd);
  return { ...runLocalCommand('hello', cmd, name, localContext(s)), ...extra };
}

/**
 * The two forwarded commands allowed before authentication: buildInfo holds no app data and goes
 * upstream as a fresh command (nothing of an unauthenticated client, session ids, transaction numbers,
 * kind-1 sections, reaches the upstream); endSessions has no app's sessions to end.
 */
export function anonymous(req: Request, s: StepContext): StepResult | Promise<StepResult> {
  return s.auth.identity && req.live ? 'next' : forwardAnonymous(req, s);
}

async function forwardAnonymous(req: Request, s: StepContext): Promise<StepResult> {
  if (req.spec!.name === 'endSessions') {
    if (!req.moreToCome) s.reply(req, { ok: OK });
    return 'done';
  }
  const out = encodeOpMsg(0, 0, req.parsed!.flags & MsgFlag.MORE_TO_COME, encodeDocument({ buildInfo: 1, $db: 'admin' }));
  let reply: Buffer | undefined;
  try {
    const address = await s.ctx.upstream.router.route({ cmd: {}, transactionControl: false, owner: '' });
    reply = await s.exchange.send(address, out, req.moreToCome, s.ctx.limits.upstreamRequestTimeoutMS, undefined, req);
  } catch (err) {
    throw clientErrorOf(err);
  }
  if (reply && s.timed) {
    try {
      req.reply = new ReplyView(parseOpMsg(reply).body);
    } catch {
      // A reply the proxy cannot read is still the upstream's answer: relayed, and counted an error.
      req.outcome = Outcome.ERROR;
    }
  }
  if (reply && !s.closed) s.send(req, readdressOpMsg(reply, s.nextReplyId(), req.id));
  return 'done';
}

/** What the local commands say of the connection (its id, address, user and roles, the limits). */
export function localContext(s: StepContext): LocalCommandContext {
  const identity = s.auth.identity;
  const roles = s.binding.live?.roles ?? identity?.roles;
  return {
    connectionId: s.id,
    // Only whatsmyuri says it: read then (a getpeername system call otherwise made per connection).
    get remoteAddress() {
      return s.remoteAddress;
    },
    upstreamMaxWireVersion: s.ctx.upstream.topology.maxWireVersion() ?? MAX_POLICY_WIRE_VERSION,
    upstreamStandalone: s.ctx.upstream.topology.isStandalone(),
    maxMessageSize: s.ctx.limits.maxMessageSize,
    logicalSessionTimeoutMinutes: s.ctx.limits.logicalSessionTimeoutMinutes,
    authenticatedUser: identity ? { user: identity.sub ?? identity.app.slug, db: '$external' } : undefined,
    authenticatedUserRoles: roles ? roles.names.map((role) => ({ role, db: '$external' })) : [],
  };
}
