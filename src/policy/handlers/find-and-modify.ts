import { scopeFilter } from '../filter.js';
import { fieldSet, type CommandHandler } from '../handler.js';
import { hideTagInProjection } from '../expression.js';
import { guardUpdate } from '../update.js';
import { targetOf, withCollection } from './common.js';
import type { Doc } from '../scope.js';

/** findAndModify (and its alias): scoped query, guarded update, the tag stripped from `value`. */
export const findAndModify: CommandHandler = {
  fields: fieldSet('query', 'sort', 'remove', 'update', 'new', 'fields', 'upsert', 'collation', 'arrayFilters', 'hint', 'let'),
  rewrite(input) {
    const { scope, body: cmd } = input;
    const { logical, physical } = targetOf(input);
    const body: Doc = { ...withCollection(input, physical), query: scopeFilter(scope, cmd.query, `${input.name}.query`) };
    if (cmd.update !== undefined) body.update = guardUpdate(scope, cmd.update, `${input.name}.update`);
    if (cmd.fields !== undefined) body.fields = hideTagInProjection(scope, cmd.fields);
    return {
      body,
      sequences: [],
      access: [{ action: cmd.update !== undefined || cmd.remove !== undefined ? 'write' : 'read', collection: logical }],
      reply: { kind: 'findAndModify', appDb: input.appDb, collections: [logical] },
    };
  },
};
