import type { Request } from '../request.js';
import { answerError } from './answer.js';
import { forward } from './forward.js';
import { gate } from './gate.js';
import { limits } from './limits.js';
import { anonymous, local } from './local.js';
import { parse } from './parse.js';
import { policy } from './policy.js';
import { reply } from './reply.js';
import type { StepContext, Step } from './step.js';

export type { StepContext, Step, StepResult } from './step.js';
export { observe, type Observer } from './observe.js';

/** The request path, in order (docs/architecture.md "One request, step by step"). */
export const STEPS: readonly Step[] = [parse, gate, local, anonymous, limits, policy, forward, reply];

/** Runs the request through `steps` until one answers it; an error is answered (and counted) as it says. Never throws. */
export async function run(req: Request, s: StepContext, steps: readonly Step[] = STEPS): Promise<void> {
  try {
    for (const step of steps) {
      let result = step(req, s);
      if (typeof result !== 'string') result = await result;
      if (result === 'done') break;
    }
    // An app's command that went upstream counts as served (limits, /apps).
    if (req.share) req.share.usage.served(s.timed ? req.start : undefined);
  } catch (err) {
    answerError(req, s, err);
  } finally {
    // An admitted insert is answered (or failed): the document counts may now trust an upstream count.
    req.settleCount?.();
  }
}
