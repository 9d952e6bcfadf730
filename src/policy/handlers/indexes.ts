import { fieldSet, type CommandHandler } from '../handler.js';
import { onCollection } from './common.js';

/** createIndexes: on the app's physical collection (index options were checked for server JS). */
export const createIndexes: CommandHandler = {
  fields: fieldSet('indexes', 'commitQuorum'),
  rewrite: (input) => onCollection(input, 'indexes'),
};

/** listIndexes: a cursor over index descriptions whose `ns` is mapped back. */
export const listIndexes: CommandHandler = {
  fields: fieldSet('cursor'),
  rewrite: (input) => onCollection(input, 'read', { reply: 'indexes' }),
};

/** dropIndexes (and deleteIndexes). */
export const dropIndexes: CommandHandler = {
  fields: fieldSet('index'),
  rewrite: (input) => onCollection(input, 'indexes'),
};
