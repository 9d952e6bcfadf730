import { checkArguments } from '../arguments.js';
import { commandError } from '../errors.js';
import { fieldSet, type CommandHandler, type HandlerLookup } from '../handler.js';
import { isDoc, type Doc } from '../scope.js';
import { mapLsid } from '../session-ids.js';

/** Commands whose plans may be explained: the reads and writes the app can run itself. */
const EXPLAINABLE = new Set(['find', 'aggregate', 'count', 'distinct', 'update', 'delete', 'findAndModify']);

/**
 * explain: the explained command is rewritten by its own handler exactly as if it ran (so the plan is
 * the plan of the scoped command), and the reply's namespaces are mapped back. Explaining never writes,
 * so RBAC asks for read access to what the command touches. The registry that holds this handler
 * (commands.ts) is passed in as `lookup`: imported, it would make an import cycle.
 */
export const explainHandler = (lookup: HandlerLookup): CommandHandler => ({
  fields: fieldSet('verbosity'),
  rewrite(input) {
    const inner = input.body.explain;
    if (!isDoc(inner)) throw commandError('TypeMismatch', "BSON field 'explain' is the wrong type, expected type 'object'");
    const innerName = Object.keys(inner)[0] ?? '';
    const spec = lookup(innerName);
    const handler = spec?.handler;
    if (!spec || !handler || !EXPLAINABLE.has(spec.name)) {
      throw commandError('Unauthorized', `explain of '${innerName}' is not allowed by mdb-runtime`);
    }
    const innerBody: Doc = { ...inner, $db: input.appDb };
    checkArguments(innerName, innerBody, handler.fields);
    const rewritten = handler.rewrite({ ...input, name: innerName, body: innerBody, sequences: [], explained: true });
    const { $db: _db, ...explained } = rewritten.body;
    // Generic arguments of the explained command are the app's too: its session id is mapped like every lsid.
    if (inner.lsid !== undefined) explained.lsid = mapLsid(input.scope, inner.lsid, 'explain.lsid');
    return {
      body: { ...input.body, explain: explained },
      sequences: [],
      access: rewritten.access.map((a) => ({ action: 'read', collection: a.collection })),
      reply: { kind: 'explain', appDb: input.appDb, collections: rewritten.access.map((a) => a.collection) },
    };
  },
});
