import { scopeFilter } from '../filter.js';
import { fieldSet, type CommandHandler } from '../handler.js';
import { targetOf, withCollection } from './common.js';

/** count: counts only the app's documents. */
export const count: CommandHandler = {
  fields: fieldSet('query', 'limit', 'skip', 'hint', 'collation', 'fields'),
  rewrite(input) {
    const { logical, physical } = targetOf(input);
    return {
      body: { ...withCollection(input, physical), query: scopeFilter(input.scope, input.body.query, 'count.query') },
      sequences: [],
      access: [{ action: 'read', collection: logical }],
      reply: { kind: 'plain', appDb: input.appDb, collections: [logical] },
    };
  },
};

/** distinct: distinct values over the app's documents only. */
export const distinct: CommandHandler = {
  fields: fieldSet('key', 'query', 'collation', 'hint'),
  rewrite(input) {
    const { logical, physical } = targetOf(input);
    return {
      body: { ...withCollection(input, physical), query: scopeFilter(input.scope, input.body.query, 'distinct.query') },
      sequences: [],
      access: [{ action: 'read', collection: logical }],
      reply: { kind: 'plain', appDb: input.appDb, collections: [logical] },
    };
  },
};
