import { stampAll } from '../../wire/bson-edit.js';
import { FieldConflictError } from '../../wire/errors.js';
import { commandError } from '../errors.js';
import { calculateObjectSize } from 'bson';
import { fieldSet, WrittenTally, type CommandHandler } from '../handler.js';
import { isDoc } from '../scope.js';
import { refuseServerJavaScriptBytes } from '../server-js.js';
import { stampReplacement } from '../update.js';
import { arrayField, targetOf, withCollection } from './common.js';

/**
 * insert: every document gets the app's tag, or is refused (BadValue) if it carries another value.
 * Documents in a kind-1 sequence (what drivers send) are stamped and checked for server-side JavaScript
 * at the byte level, never decoded.
 */
export const insert: CommandHandler = {
  fields: fieldSet('documents', 'ordered'),
  sequences: fieldSet('documents'),
  rewrite(input) {
    const { scope } = input;
    const { logical, physical } = targetOf(input);
    const body = withCollection(input, physical);
    // Every document, sized as the app sent it (before the tag), for the session's limits.
    const written = new WrittenTally();
    const documents = arrayField('insert', input.body, 'documents');
    if (documents) {
      body.documents = documents.map((doc, i) => {
        if (!isDoc(doc)) throw commandError('TypeMismatch', `insert.documents.${i} must be an object`);
        written.add(calculateObjectSize(doc), `documents.${i}`);
        return stampReplacement(scope, doc, 'BadValue');
      });
    }
    const sequences = input.sequences.map((seq) => {
      // Never decoded, so never seen by the walk over the command: checked as bytes.
      seq.documents.forEach((doc, i) => {
        refuseServerJavaScriptBytes(doc, `insert.${seq.identifier}`);
        written.add(doc.readInt32LE(0), `${seq.identifier}.${i}`);
      });
      try {
        return { identifier: seq.identifier, documents: stampAll(seq.documents, scope.tagField, scope.slug) };
      } catch (err) {
        if (err instanceof FieldConflictError) {
          throw commandError('BadValue', `field '${scope.tagField}' is set by mdb-runtime and must be '${scope.slug}' or absent`);
        }
        throw err;
      }
    });
    return {
      body,
      sequences,
      access: [{ action: 'write', collection: logical }],
      reply: { kind: 'plain', appDb: input.appDb, collections: [logical] },
      ...written.field(),
    };
  },
};
