import { scopeFilter } from '../filter.js';
import { fieldSet, type CommandHandler } from '../handler.js';
import { checkStatement, mapStatements, targetOf } from './common.js';

const STATEMENT_FIELDS = fieldSet('q', 'limit', 'collation', 'hint');

/** delete: each statement's filter is scoped to the app's documents. */
export const deleteCommand: CommandHandler = {
  fields: fieldSet('deletes', 'ordered', 'let'),
  sequences: fieldSet('deletes'),
  rewrite(input) {
    const { logical, physical } = targetOf(input);
    const { body, sequences } = mapStatements(input, 'deletes', (raw, i) => {
      const st = checkStatement('delete', 'deletes', raw, STATEMENT_FIELDS);
      return { ...st, q: scopeFilter(input.scope, st.q, `delete.deletes.${i}.q`) };
    });
    body.delete = physical;
    return {
      body,
      sequences,
      access: [{ action: 'write', collection: logical }],
      reply: { kind: 'plain', appDb: input.appDb, collections: [logical] },
    };
  },
};
