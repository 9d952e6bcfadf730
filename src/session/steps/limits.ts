import { RATE_EXEMPT, rateLimited } from '../app-limits.js';
import type { Request } from '../request.js';
import type { StepContext, StepResult } from './step.js';

/**
 * limits.connections (the connection's first app command counts it active) and
 * limits.operations_per_second (one bucket per app), before any work is done for the command.
 */
export function limits(req: Request, s: StepContext): StepResult {
  const app = req.live!.manifest;
  const usage = (req.usage = s.binding.usage ?? s.ctx.usage.get(app.slug));
  s.binding.activate(app, usage);
  const rate = app.limits.operationsPerSecond;
  if (rate !== undefined && !RATE_EXEMPT.has(req.spec!.name)) {
    const wait = usage.admit(rate);
    if (wait > 0) {
      usage.refused++;
      throw rateLimited(app, rate, wait);
    }
  }
  return 'next';
}
