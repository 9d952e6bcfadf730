import { commandError, unknownFieldError } from '../errors.js';
import { physicalCollection, typeName } from '../namespace.js';
import { isDoc, type Access, type Doc } from '../scope.js';
import type { CommandInput, RewrittenCommand } from '../handler.js';
import { scopeFilter } from '../filter.js';
import type { DocumentSequence } from '../../wire/opmsg.js';
import { decodeDocument, encodeDocument } from '../decode.js';
import { refuseServerJavaScript } from '../server-js.js';

/** The app's collection named by the command's first field, and its physical name. */
export function targetOf(input: CommandInput): { logical: string; physical: string } {
  const logical = input.body[input.name];
  const physical = physicalCollection(input.scope, logical, input.name);
  return { logical: logical as string, physical };
}

/** The body with the command's collection replaced by its physical name (key order kept). */
export function withCollection(input: CommandInput, physical: string): Doc {
  return { ...input.body, [input.name]: physical };
}

/** Checks the fields of one statement (an update or delete) against its allow-list. */
export function checkStatement(command: string, list: string, statement: unknown, fields: ReadonlySet<string>): Doc {
  if (!isDoc(statement)) {
    throw commandError('TypeMismatch', `BSON field '${command}.${list}' element is the wrong type '${typeName(statement)}', expected type 'object'`);
  }
  for (const key of Object.keys(statement)) if (!fields.has(key)) throw unknownFieldError(`${command}.${list}`, key);
  // Statements that came as a kind-1 sequence were not part of the body the orchestrator scanned.
  refuseServerJavaScript(statement, `${command}.${list}`);
  return statement;
}

/** The array under `field`, or a TypeMismatch in the server's words. */
export function arrayField(command: string, body: Doc, field: string): unknown[] | undefined {
  const v = body[field];
  if (v === undefined) return undefined;
  if (!Array.isArray(v)) throw commandError('TypeMismatch', `BSON field '${command}.${field}' is the wrong type '${typeName(v)}', expected type 'array'`);
  return v;
}

/**
 * Applies `rewrite` to each statement of a write command (`updates`, `deletes`), whether it came in the
 * body or as a kind-1 sequence (decoded one statement at a time, and encoded back).
 */
export function mapStatements(
  input: CommandInput,
  list: string,
  rewrite: (statement: unknown, index: number, bytes?: Buffer) => Doc,
): { body: Doc; sequences: DocumentSequence[] } {
  const body: Doc = { ...input.body };
  const inBody = arrayField(input.name, input.body, list);
  if (inBody) body[list] = inBody.map((statement, i) => rewrite(statement, i));
  const sequences = input.sequences.map((seq) => ({
    identifier: seq.identifier,
    documents: seq.documents.map((bytes, i) => encodeDocument(rewrite(decodeDocument(bytes), i, bytes))),
  }));
  return { body, sequences };
}

/**
 * The common shape of a command on one collection: the collection mapped, an optional filter field
 * scoped to the app, one access for RBAC, and how the reply is shown.
 */
export function onCollection(
  input: CommandInput,
  action: Access['action'],
  options: { filter?: string; reply?: 'plain' | 'documents' | 'indexes' } = {},
): RewrittenCommand {
  const { logical, physical } = targetOf(input);
  const body = withCollection(input, physical);
  if (options.filter) body[options.filter] = scopeFilter(input.scope, input.body[options.filter], `${input.name}.${options.filter}`);
  const reply = options.reply ?? 'plain';
  return {
    body,
    sequences: [],
    access: [{ action, collection: logical }],
    reply:
      reply === 'plain'
        ? { kind: 'plain', appDb: input.appDb, collections: [logical] }
        : { kind: 'cursor', view: { kind: reply, appDb: input.appDb }, collections: [logical] },
  };
}
