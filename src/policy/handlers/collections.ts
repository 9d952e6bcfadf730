import { BSONRegExp } from 'bson';
import { commandError } from '../errors.js';
import { fieldSet, type CommandHandler, type EntryFilter } from '../handler.js';
import { numberOf } from '../bson-order.js';
import { compileQuery, StepBudget } from '../match.js';
import { physicalCollection, sameDatabase, splitNamespace, typeName } from '../namespace.js';
import { scopePipeline } from '../pipeline.js';
import { isDoc, type Access, type Doc } from '../scope.js';
import { onCollection, targetOf, withCollection } from './common.js';

/** create: a collection or a view; a view's source and pipeline are scoped like an aggregate's. */
export const create: CommandHandler = {
  fields: fieldSet(
    'capped', 'size', 'max', 'validator', 'validationLevel', 'validationAction', 'viewOn', 'pipeline', 'collation',
    'timeseries', 'clusteredIndex', 'changeStreamPreAndPostImages', 'expireAfterSeconds', 'indexOptionDefaults', 'storageEngine',
  ),
  rewrite(input) {
    const { scope, body: cmd } = input;
    const { logical, physical } = targetOf(input);
    const access: Access[] = [{ action: 'write', collection: logical }];
    const body = withCollection(input, physical);
    if (cmd.viewOn !== undefined) {
      body.viewOn = physicalCollection(scope, cmd.viewOn, 'create.viewOn');
      access.push({ action: 'read', collection: String(cmd.viewOn) });
      // The view keeps the tag, set last so that stages dropping fields cannot make the view's documents
      // invisible to the tag filter every query on the view carries.
      body.pipeline = [
        ...scopePipeline({ scope, appDb: input.appDb, access }, cmd.pipeline ?? [], 'create.pipeline', { readsCollection: true, view: true }),
        { $set: { [scope.tagField]: { $literal: scope.slug } } },
      ];
    } else if (cmd.pipeline !== undefined) {
      throw commandError('BadValue', "'pipeline' requires 'viewOn' to also be specified");
    }
    return { body, sequences: [], access, reply: { kind: 'plain', appDb: input.appDb, collections: access.map((a) => a.collection) } };
  },
};

/** drop. */
export const drop: CommandHandler = {
  fields: fieldSet(),
  rewrite: (input) => onCollection(input, 'write'),
};

/** renameCollection: both namespaces in one app database, both mapped; run on admin as the server wants. */
export const renameCollection: CommandHandler = {
  fields: fieldSet('to', 'dropTarget', 'stayTemp'),
  rewrite(input) {
    const { scope, body: cmd } = input;
    const from = splitNamespace(cmd.renameCollection, 'renameCollection');
    const to = splitNamespace(cmd.to, 'to');
    sameDatabase(from.db, to.db, 'to');
    const body = {
      ...cmd,
      renameCollection: `${scope.database}.${physicalCollection(scope, from.coll, 'renameCollection')}`,
      to: `${scope.database}.${physicalCollection(scope, to.coll, 'to')}`,
    };
    return {
      body,
      sequences: [],
      access: [
        { action: 'write', collection: from.coll },
        { action: 'write', collection: to.coll },
      ],
      reply: { kind: 'plain', appDb: from.db, collections: [from.coll, to.coll] },
    };
  },
};

/**
 * listCollections. The upstream is asked for the app's physical collections and nothing else: its filter
 * is only the prefix condition, so no condition of the app is ever evaluated over the shared catalogue
 * (docs/security.md, "The shared catalogue as an oracle"). The app's whole filter is evaluated by the
 * proxy over the app's own entries, as the app sees them (reply.ts), with the bounded evaluator
 * (match.ts): a step budget for the whole listing, RE2 for regular expressions.
 *
 * With `nameOnly`, MongoDB evaluates the filter over `{name, type}` alone. The proxy does the same, but
 * over full entries it asks for and reduces itself: not every upstream includes `type` in name-only
 * entries (FerretDB sends `{name}`).
 */
export const listCollections: CommandHandler = {
  fields: fieldSet('filter', 'nameOnly', 'authorizedCollections', 'cursor'),
  rewrite(input) {
    const { scope, body: cmd } = input;
    const filter = cmd.filter ?? {};
    if (!isDoc(filter)) throw commandError('TypeMismatch', `BSON field 'listCollections.filter' is the wrong type '${typeName(filter)}', expected type 'object'`);
    const body: Doc = { ...cmd, filter: { name: new BSONRegExp(`^${escapeRegex(scope.prefix)}`) } };
    if (Object.keys(filter).length === 0) {
      return { body, sequences: [], access: [], reply: { kind: 'cursor', view: { kind: 'collections', appDb: input.appDb }, collections: [] } };
    }
    const entries = listingFilter(filter);
    const nameOnly = truthyFlag(cmd.nameOnly);
    if (nameOnly) {
      // authorizedCollections only means something with nameOnly (the proxy's user may list them all).
      delete body.nameOnly;
      delete body.authorizedCollections;
    }
    return {
      body,
      sequences: [],
      access: [],
      reply: { kind: 'cursor', view: { kind: 'collections', appDb: input.appDb, entries, ...(nameOnly ? { nameOnly } : {}) }, collections: [] },
    };
  },
};

/** A boolean command flag as the server reads it (true, or a non-zero number). */
function truthyFlag(v: unknown): boolean {
  if (typeof v === 'boolean') return v;
  const n = numberOf(v);
  return n !== undefined && n !== 0;
}

/** Evaluation steps one listCollections may spend on its filter, over all its entries (every batch). */
export const LIST_COLLECTIONS_STEPS = 100_000;

/** The size of filter the proxy accepts to evaluate (the server's query depth limit is 100). */
const LIST_FILTER_LIMITS = { maxDepth: 100, maxNodes: 10_000 };

/** The app's filter, compiled now (its parse errors answer the command), metered when it runs. */
function listingFilter(filter: Doc): EntryFilter {
  const matches = compileQuery(filter, LIST_FILTER_LIMITS);
  const budget = new StepBudget(LIST_COLLECTIONS_STEPS, () =>
    commandError(
      'BadValue',
      `listCollections: the filter needs more than ${LIST_COLLECTIONS_STEPS} evaluation steps over this app's collections, mdb-runtime's limit; simplify the filter`,
    ),
  );
  return (entry) => matches(entry, budget);
}

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
