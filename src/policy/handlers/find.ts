import { fieldSet, type CommandHandler } from '../handler.js';
import { onCollection } from './common.js';

/** find: the filter is scoped to the app's documents; the reply is a cursor over them. */
export const find: CommandHandler = {
  fields: fieldSet(
    'filter', 'sort', 'projection', 'hint', 'skip', 'limit', 'batchSize', 'singleBatch', 'max', 'min', 'returnKey',
    'showRecordId', 'tailable', 'noCursorTimeout', 'awaitData', 'allowPartialResults', 'collation', 'allowDiskUse', 'let',
  ),
  rewrite: (input) => onCollection(input, 'read', { filter: 'filter', reply: 'documents' }),
};
