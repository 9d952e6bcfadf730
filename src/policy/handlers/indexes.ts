import { fieldSet, type CommandHandler } from '../handler.js';
import { targetOf, withCollection } from './common.js';

/** createIndexes: on the app's physical collection (index options were checked for server JS). */
export const createIndexes: CommandHandler = {
  fields: fieldSet('indexes', 'commitQuorum'),
  rewrite(input) {
    const { logical, physical } = targetOf(input);
    return {
      body: withCollection(input, physical),
      sequences: [],
      access: [{ action: 'indexes', collection: logical }],
      reply: { kind: 'plain', appDb: input.appDb, collections: [logical] },
    };
  },
};

/** listIndexes: a cursor over index descriptions whose `ns` is mapped back. */
export const listIndexes: CommandHandler = {
  fields: fieldSet('cursor'),
  rewrite(input) {
    const { logical, physical } = targetOf(input);
    return {
      body: withCollection(input, physical),
      sequences: [],
      access: [{ action: 'read', collection: logical }],
      reply: { kind: 'cursor', view: { kind: 'indexes', appDb: input.appDb }, collections: [logical] },
    };
  },
};

/** dropIndexes (and deleteIndexes). */
export const dropIndexes: CommandHandler = {
  fields: fieldSet('index'),
  rewrite(input) {
    const { logical, physical } = targetOf(input);
    return {
      body: withCollection(input, physical),
      sequences: [],
      access: [{ action: 'indexes', collection: logical }],
      reply: { kind: 'plain', appDb: input.appDb, collections: [logical] },
    };
  },
};
