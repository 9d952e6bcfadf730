import { fieldSet, type CommandHandler } from '../handler.js';
import { physicalCollection } from '../namespace.js';

/**
 * getMore: the collection is mapped; ownership of the cursor and how its batches are shown come from
 * the cursor registry (the data plane replaces the reply plan with the cursor's own).
 */
export const getMore: CommandHandler = {
  fields: fieldSet('collection', 'batchSize', 'maxTimeMS'),
  rewrite(input) {
    const { body } = input;
    const logical = body.collection as string;
    return {
      body: { ...body, collection: physicalCollection(input.scope, body.collection, 'getMore.collection') },
      sequences: [],
      access: [{ action: 'read', collection: logical }],
      reply: { kind: 'cursor', view: { kind: 'documents', appDb: input.appDb }, collections: [logical] },
    };
  },
};

/** killCursors: the collection is mapped; which ids reach the upstream is decided by the registry. */
export const killCursors: CommandHandler = {
  fields: fieldSet('cursors'),
  rewrite(input) {
    const logical = input.body.killCursors as string;
    return {
      body: { ...input.body, killCursors: physicalCollection(input.scope, logical, 'killCursors') },
      sequences: [],
      access: [{ action: 'read', collection: logical }],
      reply: { kind: 'plain', appDb: input.appDb, collections: [logical] },
    };
  },
};
