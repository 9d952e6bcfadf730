import { fieldSet, type CommandHandler } from '../handler.js';
import { onCollection } from './common.js';

/** count: counts only the app's documents. */
export const count: CommandHandler = {
  fields: fieldSet('query', 'limit', 'skip', 'hint', 'collation', 'fields'),
  rewrite: (input) => onCollection(input, 'read', { filter: 'query' }),
};

/** distinct: distinct values over the app's documents only. */
export const distinct: CommandHandler = {
  fields: fieldSet('key', 'query', 'collation', 'hint'),
  rewrite: (input) => onCollection(input, 'read', { filter: 'query' }),
};
