import { scopeFilter } from '../filter.js';
import { fieldSet, type CommandHandler } from '../handler.js';
import { guardUpdate } from '../update.js';
import { checkStatement, mapStatements, targetOf } from './common.js';

const STATEMENT_FIELDS = fieldSet('q', 'u', 'c', 'upsert', 'multi', 'arrayFilters', 'collation', 'hint', 'sort');

/** update: each statement's filter is scoped and its update guarded (the tag cannot change). */
export const update: CommandHandler = {
  fields: fieldSet('updates', 'ordered', 'let'),
  sequences: fieldSet('updates'),
  rewrite(input) {
    const { scope } = input;
    const { logical, physical } = targetOf(input);
    const { body, sequences } = mapStatements(input, 'updates', (raw, i) => {
      const st = checkStatement('update', 'updates', raw, STATEMENT_FIELDS);
      return { ...st, q: scopeFilter(scope, st.q, `update.updates.${i}.q`), u: guardUpdate(scope, st.u, `update.updates.${i}.u`) };
    });
    body.update = physical;
    return {
      body,
      sequences,
      access: [{ action: 'write', collection: logical }],
      reply: { kind: 'plain', appDb: input.appDb, collections: [logical] },
    };
  },
};
