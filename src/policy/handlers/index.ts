import type { CommandHandler } from '../handler.js';
import { aggregate } from './aggregate.js';
import { create, drop, listCollections, renameCollection } from './collections.js';
import { count, distinct } from './count.js';
import { getMore, killCursors } from './cursors.js';
import { deleteCommand } from './delete.js';
import { explain } from './explain.js';
import { find } from './find.js';
import { findAndModify } from './find-and-modify.js';
import { createIndexes, dropIndexes, listIndexes } from './indexes.js';
import { insert } from './insert.js';
import { buildInfo, sessionList, transactionControl } from './sessions.js';
import { update } from './update.js';

/** The policy of every forwarded command, by canonical name (src/policy/commands.ts). */
export const HANDLERS: ReadonlyMap<string, CommandHandler> = new Map<string, CommandHandler>([
  ['buildInfo', buildInfo],
  ['endSessions', sessionList],
  ['killSessions', sessionList],
  ['refreshSessions', sessionList],
  ['insert', insert],
  ['find', find],
  ['getMore', getMore],
  ['killCursors', killCursors],
  ['update', update],
  ['delete', deleteCommand],
  ['findAndModify', findAndModify],
  ['count', count],
  ['distinct', distinct],
  ['aggregate', aggregate],
  ['createIndexes', createIndexes],
  ['listIndexes', listIndexes],
  ['dropIndexes', dropIndexes],
  ['create', create],
  ['listCollections', listCollections],
  ['drop', drop],
  ['renameCollection', renameCollection],
  ['commitTransaction', transactionControl],
  ['abortTransaction', transactionControl],
  ['explain', explain],
]);
