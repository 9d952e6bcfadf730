import { scopeFilter } from '../filter.js';
import { fieldSet, WrittenTally, type CommandHandler } from '../handler.js';
import { hideTagInProjection } from '../expression.js';
import { calculateObjectSize } from 'bson';
import { guardUpdate, isReplacement } from '../update.js';
import { targetOf, withCollection } from './common.js';
import type { Doc } from '../scope.js';

/** findAndModify (and its alias): scoped query, guarded update, the tag stripped from `value`. */
export const findAndModify: CommandHandler = {
  fields: fieldSet('query', 'sort', 'remove', 'update', 'new', 'fields', 'upsert', 'collation', 'arrayFilters', 'hint', 'let'),
  rewrite(input) {
    const { scope, body: cmd } = input;
    const { logical, physical } = targetOf(input);
    const body: Doc = { ...withCollection(input, physical), query: scopeFilter(scope, cmd.query, `${input.name}.query`) };
    // A replacement (or replacement upsert), sized as the app sent it, for the session's limits.
    const written = new WrittenTally();
    if (isReplacement(cmd.update)) written.add(calculateObjectSize(cmd.update), 'update');
    if (cmd.update !== undefined) body.update = guardUpdate(scope, cmd.update, `${input.name}.update`);
    if (cmd.fields !== undefined) body.fields = hideTagInProjection(scope, cmd.fields);
    return {
      body,
      sequences: [],
      access: [{ action: cmd.update !== undefined || cmd.remove !== undefined ? 'write' : 'read', collection: logical }],
      reply: { kind: 'findAndModify', appDb: input.appDb, collections: [logical] },
      ...written.field(),
    };
  },
};
