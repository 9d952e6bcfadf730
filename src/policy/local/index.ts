import type { Document } from 'bson';
import { lookupCommand, type LocalHandler } from '../commands.js';
import type { LocalAnswerContext } from './answers.js';

export {
  MAX_POLICY_WIRE_VERSION,
  helloReply,
  type HostFacts,
  type LocalAnswer,
  type LocalAnswerContext,
  type LocalCommandContext,
} from './answers.js';

/** Local commands answered by their registry entry; 'sasl' goes to the connection's authenticator. */
export type SyncLocalHandler = Exclude<LocalHandler, 'sasl'>;

/** The reply of a command the proxy answers itself: its registry entry's answer (commands.ts). */
export function runLocalCommand(handler: SyncLocalHandler, cmd: Document, name: string, ctx: LocalAnswerContext): Document {
  const answer = lookupCommand(handler)?.answer;
  // Unreachable while the registry checks its entries (every local tag is its entry's own name).
  if (!answer) throw new Error(`command registry: no local answer for '${handler}'`);
  return answer(cmd, name, ctx);
}
