import { scopeFilter } from '../filter.js';
import { calculateObjectSize } from 'bson';
import { BsonType, findElement } from '../../wire/bson-bytes.js';
import { fieldSet, WrittenTally, type CommandHandler } from '../handler.js';
import { guardUpdate, isReplacement } from '../update.js';
import type { Doc } from '../scope.js';
import { checkStatement, mapStatements, targetOf } from './common.js';

const STATEMENT_FIELDS = fieldSet('q', 'u', 'c', 'upsert', 'multi', 'arrayFilters', 'collation', 'hint', 'sort');

/** update: each statement's filter is scoped and its update guarded (the tag cannot change). */
export const update: CommandHandler = {
  fields: fieldSet('updates', 'ordered', 'let'),
  sequences: fieldSet('updates'),
  rewrite(input) {
    const { scope } = input;
    const { logical, physical } = targetOf(input);
    // Replacements (and replacement upserts), sized as the app sent them, for the session's limits.
    const written = new WrittenTally();
    const { body, sequences } = mapStatements(input, 'updates', (raw, i, bytes) => {
      const st = checkStatement('update', 'updates', raw, STATEMENT_FIELDS);
      if (isReplacement(st.u)) written.add(replacementSize(st.u, bytes), `updates.${i}.u`);
      return { ...st, q: scopeFilter(scope, st.q, `update.updates.${i}.q`), u: guardUpdate(scope, st.u, `update.updates.${i}.u`) };
    });
    body.update = physical;
    return {
      body,
      sequences,
      access: [{ action: 'write', collection: logical }],
      reply: { kind: 'plain', appDb: input.appDb, collections: [logical] },
      ...written.field(),
    };
  },
};

/** A statement's replacement in bytes: its length in the statement's bytes (kind-1), else its encoded size. */
function replacementSize(u: Doc, statement: Buffer | undefined): number {
  if (statement) {
    const element = findElement(statement, 0, 'u');
    if (element?.type === BsonType.DOCUMENT) return statement.readInt32LE(element.valueStart);
  }
  return calculateObjectSize(u);
}
