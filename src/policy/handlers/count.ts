import { fieldSet, type CommandHandler } from '../handler.js';
import { onCollection } from './common.js';

/** count: counts only the app's documents. */
export const count: CommandHandler = {
  fields: fieldSet('query', 'limit', 'skip', 'hint', 'collation', 'fields'),
  rewrite: (input) => onCollection(input, 'read', { filter: 'query' }),
};

/**
 * distinct: distinct values over the app's documents only. The values of the hidden tag are none, as
 * for a field the app's documents do not have: the query then also asks for documents without the tag.
 */
export const distinct: CommandHandler = {
  fields: fieldSet('key', 'query', 'collation', 'hint'),
  rewrite(input) {
    const out = onCollection(input, 'read', { filter: 'query' });
    const { key } = input.body;
    const tag = input.scope.tagField;
    if (!input.scope.exposeTag && typeof key === 'string' && (key === tag || key.startsWith(`${tag}.`))) {
      out.body.query = { $and: [out.body.query, { [tag]: { $exists: false } }], [tag]: input.scope.slug };
    }
    return out;
  },
};
