import { scopeFilter } from '../filter.js';
import { fieldSet, type CommandHandler } from '../handler.js';
import { targetOf, withCollection } from './common.js';

/** find: the filter is scoped to the app's documents; the reply is a cursor over them. */
export const find: CommandHandler = {
  fields: fieldSet(
    'filter', 'sort', 'projection', 'hint', 'skip', 'limit', 'batchSize', 'singleBatch', 'max', 'min', 'returnKey',
    'showRecordId', 'tailable', 'noCursorTimeout', 'awaitData', 'allowPartialResults', 'collation', 'allowDiskUse', 'let',
  ),
  rewrite(input) {
    const { logical, physical } = targetOf(input);
    return {
      body: { ...withCollection(input, physical), filter: scopeFilter(input.scope, input.body.filter, 'find.filter') },
      sequences: [],
      access: [{ action: 'read', collection: logical }],
      reply: { kind: 'cursor', view: { kind: 'documents', appDb: input.appDb }, collections: [logical] },
    };
  },
};
