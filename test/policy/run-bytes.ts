/**
 * One generated command through the request path of the policy layer, from the bytes a client sends:
 * the data plane's hoisting of an insert's body documents into a kind-1 sequence, the decoder
 * (src/policy/decode.ts), the command's own check, `rewriteCommand`, and the encoding of what goes
 * upstream. The outcome is the bytes sent, or the refusal the client gets.
 */
import { BSONError } from 'bson';
import { lookupCommand } from '../../src/policy/commands.js';
import { decodeDocument, encodeDocument } from '../../src/policy/decode.js';
import { CommandError } from '../../src/policy/errors.js';
import type { RewrittenCommand } from '../../src/policy/handler.js';
import { rewriteCommand } from '../../src/policy/rewrite.js';
import type { AppScope } from '../../src/policy/scope.js';
import { hoistDocumentArray } from '../../src/wire/bson-edit.js';
import { WireError } from '../../src/wire/errors.js';
import type { DocumentSequence } from '../../src/wire/opmsg.js';
import { encode, type GeneratedCommand } from './arbitraries-bson.js';

export type Outcome =
  | { readonly sent: RewrittenCommand; readonly bodyBytes: Buffer; readonly canonical: string; readonly refused?: undefined }
  | { readonly refused: { readonly code: number; readonly codeName: string; readonly message: string } };

export function runBytes(scope: AppScope, cmd: GeneratedCommand): Outcome {
  let body = encode(cmd.body);
  let sequences: DocumentSequence[] = cmd.sequences.map((s) => ({ identifier: s.identifier, documents: s.documents.map(encode) }));
  if (cmd.hoist && sequences.length === 0) {
    const hoisted = hoistDocumentArray(body, 'documents');
    if (hoisted) {
      body = hoisted.body;
      sequences = [{ identifier: 'documents', documents: hoisted.documents }];
    }
  }
  try {
    const decoded = decodeDocument(body);
    const name = Object.keys(decoded)[0] ?? '';
    const spec = lookupCommand(name);
    if (!spec) throw new Error(`generated an unknown command '${name}'`);
    spec.check?.(decoded);
    const sent = rewriteCommand(scope, spec, name, decoded, sequences);
    return { sent, bodyBytes: encodeDocument(sent.body), canonical: spec.name };
  } catch (err) {
    // What the client connection answers for each (src/session/client-connection.ts): the error in the
    // server's shape. Anything else would be an internal error: a bug, rethrown.
    if (err instanceof CommandError) return { refused: { code: err.code, codeName: err.codeName, message: err.message } };
    if (err instanceof WireError && err.disposition === 'reply') return { refused: { code: err.code, codeName: err.codeName, message: err.message } };
    if (err instanceof BSONError) return { refused: { code: 22, codeName: 'InvalidBSON', message: err.message } };
    throw err;
  }
}
