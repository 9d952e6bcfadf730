import { commandError, unknownFieldError } from '../errors.js';
import { physicalCollection, typeName } from '../namespace.js';
import { isDoc, type Doc } from '../scope.js';
import type { CommandInput } from '../handler.js';
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
  rewrite: (statement: unknown, index: number) => Doc,
): { body: Doc; sequences: DocumentSequence[] } {
  const body: Doc = { ...input.body };
  const inBody = arrayField(input.name, input.body, list);
  if (inBody) body[list] = inBody.map(rewrite);
  const sequences = input.sequences.map((seq) => ({
    identifier: seq.identifier,
    documents: seq.documents.map((bytes, i) => encodeDocument(rewrite(decodeDocument(bytes), i))),
  }));
  return { body, sequences };
}
