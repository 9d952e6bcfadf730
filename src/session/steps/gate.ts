import { commandError } from '../../policy/errors.js';
import { Rejected, policyReason, rejectedAs } from '../rejection.js';
import type { Request } from '../request.js';
import type { StepContext, StepResult } from './step.js';

/**
 * The identity gate and the app in force: unauthenticated connections run only pre-auth commands (an
 * expired token gets ReauthenticationRequired or AuthenticationFailed); an authenticated one runs as
 * its app's manifest now (a removed app's request is refused and the connection closes). Then the
 * command table's own checks (admin-only commands, forms the proxy refuses).
 */
export function gate(req: Request, s: StepContext): StepResult {
  const spec = req.spec!;
  try {
    s.auth.check(spec.name, spec.preAuth === true);
  } catch (err) {
    throw rejectedAs('unauthenticated', err);
  }
  const identity = s.auth.identity;
  if (identity) {
    const live = s.binding.liveApp(identity);
    req.live = live;
    req.slowMS = live.manifest.observability.slowOperationMs ?? s.ctx.slowOperationMS;
  }
  if (spec.adminOnly && req.cmd!.$db !== 'admin') {
    throw new Rejected('invalid_request', commandError('Unauthorized', `${req.name} may only be run against the admin database.`));
  }
  try {
    spec.check?.(req.cmd!);
  } catch (err) {
    throw rejectedAs(policyReason(err), err);
  }
  return 'next';
}
