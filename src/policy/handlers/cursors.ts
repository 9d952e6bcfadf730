import { fieldSet, type CommandHandler } from '../handler.js';
import { physicalCollection } from '../namespace.js';
import { locationError } from '../errors.js';
import { arrayField } from './common.js';

const DATABASE_AGGREGATE = '$cmd.aggregate';

/**
 * getMore: the collection is mapped; ownership of the cursor and how its batches are shown come from
 * the cursor registry (the data plane replaces the reply plan with the cursor's own).
 */
export const getMore: CommandHandler = {
  fields: fieldSet('collection', 'batchSize', 'maxTimeMS'),
  rewrite(input) {
    const { body } = input;
    const logical = body.collection as string;
    // A database-level aggregate's cursor (`aggregate: 1`, $documents) is named "$cmd.aggregate": not a
    // collection, and the cursor registry decides whose it is.
    const collection = logical === DATABASE_AGGREGATE ? logical : physicalCollection(input.scope, body.collection, 'getMore.collection');
    return {
      body: { ...body, collection },
      sequences: [],
      access: [{ action: 'read', collection: logical }],
      reply: { kind: 'cursor', view: { kind: 'documents', appDb: input.appDb }, collections: [logical] },
    };
  },
};

/**
 * The policy of killCursors (closing the cursors is the data plane's, src/session and src/upstream):
 * the collection is mapped; which ids reach the upstream is decided by the cursor registry.
 */
export const killCursorsHandler: CommandHandler = {
  fields: fieldSet('cursors'),
  rewrite(input) {
    const logical = input.body.killCursors as string;
    if (arrayField('killCursors', input.body, 'cursors') === undefined) {
      throw locationError(40414, "BSON field 'killCursors.cursors' is missing but a required field");
    }
    return {
      body: { ...input.body, killCursors: physicalCollection(input.scope, logical, 'killCursors') },
      sequences: [],
      access: [{ action: 'read', collection: logical }],
      reply: { kind: 'plain', appDb: input.appDb, collections: [logical] },
    };
  },
};
