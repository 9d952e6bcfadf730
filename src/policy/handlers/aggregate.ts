import { commandError } from '../errors.js';
import { fieldSet, type CommandHandler } from '../handler.js';
import { scopePipeline, type PipelineContext } from '../pipeline.js';
import { isDoc, type Access } from '../scope.js';
import { targetOf, withCollection } from './common.js';

/**
 * aggregate: the pipeline is rewritten stage by stage (pipeline.ts); on a collection it starts with the
 * tag filter. `aggregate: 1` (database-level) is allowed only for pipelines that start with $documents:
 * the others ($currentOp, database change streams...) see beyond the app.
 */
export const aggregate: CommandHandler = {
  fields: fieldSet('pipeline', 'explain', 'allowDiskUse', 'cursor', 'collation', 'hint', 'let'),
  rewrite(input) {
    const { scope, body: cmd } = input;
    if (cmd.explain !== undefined && cmd.explain !== false) {
      throw commandError('Unauthorized', 'aggregate with explain is not allowed by mdb-runtime (plans name physical collections)');
    }
    const access: Access[] = [];
    const ctx: PipelineContext = { scope, appDb: input.appDb, access };
    const collections: string[] = [];
    let body;
    if (typeof cmd.aggregate === 'string') {
      const { logical, physical } = targetOf(input);
      access.push({ action: 'read', collection: logical });
      collections.push(logical);
      body = { ...withCollection(input, physical), pipeline: scopePipeline(ctx, cmd.pipeline, 'aggregate.pipeline', { readsCollection: true, changeStream: true }) };
    } else {
      const head = Array.isArray(cmd.pipeline) ? cmd.pipeline[0] : undefined;
      if (Number(cmd.aggregate) !== 1 || !isDoc(head) || !('$documents' in head)) {
        throw commandError('Unauthorized', 'database-level aggregate is allowed only for pipelines that start with $documents');
      }
      body = { ...cmd, pipeline: scopePipeline(ctx, cmd.pipeline, 'aggregate.pipeline', { readsCollection: false }) };
    }
    // A Set, not includes(): a pipeline may name a collection per stage, hundreds of thousands of them.
    const seen = new Set(collections);
    for (const a of access) {
      if (seen.has(a.collection)) continue;
      seen.add(a.collection);
      collections.push(a.collection);
    }
    const first = Array.isArray(cmd.pipeline) ? cmd.pipeline[0] : undefined;
    const changeStream = isDoc(first) && '$changeStream' in first;
    return {
      body,
      sequences: [],
      access,
      reply: { kind: 'cursor', view: { kind: changeStream ? 'changeEvents' : 'documents', appDb: input.appDb }, collections },
    };
  },
};
