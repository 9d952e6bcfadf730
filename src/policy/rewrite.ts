import type { DocumentSequence } from '../wire/opmsg.js';
import { checkArguments } from './arguments.js';
import type { CommandSpec } from './commands.js';
import { commandError, unknownFieldError } from './errors.js';
import type { RewrittenCommand } from './handler.js';
import { checkAppDatabase } from './namespace.js';
import type { AppScope, Doc } from './scope.js';
import { refuseServerJavaScript } from './server-js.js';
import { mapLsid } from './session-ids.js';

/**
 * The policy layer's entry point for a forwarded command: `(app, command) → rewritten command | error`.
 * Pure: no I/O, no clock. Steps common to every command happen here — the app's `$db`, the argument
 * allow-list, kind-1 identifiers, server-side JavaScript, the session id — and the command's own
 * handler, from its registry entry (commands.ts), does the rest (src/policy/handlers).
 */
export function rewriteCommand(
  scope: AppScope,
  spec: CommandSpec,
  name: string,
  body: Doc,
  sequences: readonly DocumentSequence[],
): RewrittenCommand {
  const handler = spec.handler;
  if (!handler) throw commandError('CommandNotFound', `no such command: '${name}'`);
  const appDb = checkAppDatabase(body.$db, '$db');
  checkArguments(name, body, handler.fields);
  for (const seq of sequences) {
    if (!handler.sequences?.has(seq.identifier)) throw unknownFieldError(name, seq.identifier);
  }
  refuseServerJavaScript(body, name);
  const out = handler.rewrite({ scope, name, body, appDb, sequences });
  // Aliases go upstream under the canonical name: every server knows it (not every one the alias).
  if (name !== spec.name) out.body = renameFirstKey(out.body, name, spec.name);
  // Admin-only commands (renameCollection, transactions) run where the server wants them; everything
  // else runs in the shared physical database, whatever database the app named.
  out.body.$db = spec.adminOnly ? 'admin' : scope.database;
  if (body.lsid !== undefined) out.body.lsid = mapLsid(scope, body.lsid, 'lsid');
  return out;
}

function renameFirstKey(body: Doc, from: string, to: string): Doc {
  const renamed: Doc = {};
  for (const [key, value] of Object.entries(body)) renamed[key === from ? to : key] = value;
  return renamed;
}
