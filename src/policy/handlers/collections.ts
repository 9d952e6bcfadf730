import { BSONRegExp } from 'bson';
import { commandError, locationError } from '../errors.js';
import { fieldSet, type CommandHandler, type NameFilter } from '../handler.js';
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
 * listCollections: the upstream lists only the app's physical collections (a prefix regex); conditions
 * the app puts on `name` are evaluated by the proxy against the app's own names, the rest upstream.
 */
export const listCollections: CommandHandler = {
  fields: fieldSet('filter', 'nameOnly', 'authorizedCollections', 'cursor'),
  rewrite(input) {
    const { scope, body: cmd } = input;
    const filter = cmd.filter ?? {};
    if (!isDoc(filter)) throw commandError('TypeMismatch', `BSON field 'listCollections.filter' is the wrong type '${typeName(filter)}', expected type 'object'`);
    const { name, ...rest } = filter;
    refuseNestedName(rest);
    const ours: Doc = { name: new BSONRegExp(`^${escapeRegex(scope.prefix)}`) };
    const upstreamFilter = Object.keys(rest).length === 0 ? ours : { $and: [rest, ours] };
    return {
      body: { ...cmd, filter: upstreamFilter },
      sequences: [],
      access: [],
      reply: {
        kind: 'cursor',
        view: name === undefined ? { kind: 'collections', appDb: input.appDb } : { kind: 'collections', appDb: input.appDb, names: nameFilter(name) },
        collections: [],
      },
    };
  },
};

function escapeRegex(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** `name` nested in $and/$or/$nor would be compared with physical names: refuse rather than mislead. */
function refuseNestedName(value: unknown): void {
  const stack: unknown[] = [value];
  while (stack.length) {
    const v = stack.pop();
    if (Array.isArray(v)) stack.push(...v);
    else if (isDoc(v)) {
      for (const [k, child] of Object.entries(v)) {
        if (k === 'name') throw commandError('BadValue', "listCollections: conditions on 'name' are supported only at the top level of the filter");
        stack.push(child);
      }
    }
  }
}

function toRegExp(v: unknown, options = ''): RegExp {
  const [pattern, flags] =
    v instanceof BSONRegExp ? [v.pattern, v.options] : typeof v === 'string' ? [v, options] : [undefined, ''];
  if (pattern === undefined) throw commandError('BadValue', `listCollections: $regex must be a string or regular expression, found ${typeName(v)}`);
  try {
    return new RegExp(pattern, flags.replace(/[^imsu]/g, ''));
  } catch (err) {
    // The server's answer to a pattern it cannot compile (not an internal error of the proxy).
    throw locationError(51091, `Regular expression is invalid: ${(err as Error).message}`);
  }
}

/** The proxy-side test for a listCollections condition on `name`. */
function nameFilter(cond: unknown): NameFilter {
  if (typeof cond === 'string') return (n) => n === cond;
  if (cond instanceof BSONRegExp) {
    const re = toRegExp(cond);
    return (n) => re.test(n);
  }
  if (!isDoc(cond)) throw commandError('BadValue', `listCollections: unsupported condition on name: ${typeName(cond)}`);
  const tests: NameFilter[] = [];
  const strings = (v: unknown, op: string): string[] => {
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw commandError('BadValue', `listCollections: ${op} on name needs an array of strings`);
    return v as string[];
  };
  for (const [op, v] of Object.entries(cond)) {
    switch (op) {
      case '$eq':
        tests.push((n) => n === v);
        break;
      case '$ne':
        tests.push((n) => n !== v);
        break;
      case '$in': {
        const set = new Set(strings(v, op));
        tests.push((n) => set.has(n));
        break;
      }
      case '$nin': {
        const set = new Set(strings(v, op));
        tests.push((n) => !set.has(n));
        break;
      }
      case '$regex': {
        const re = toRegExp(v, typeof cond.$options === 'string' ? cond.$options : '');
        tests.push((n) => re.test(n));
        break;
      }
      case '$options':
        break;
      case '$exists':
        tests.push(() => Number(v) !== 0);
        break;
      default:
        throw commandError('BadValue', `listCollections: ${op} on name is not supported by mdb-runtime (use $eq, $ne, $in, $nin, $regex)`);
    }
  }
  return (n) => tests.every((t) => t(n));
}
