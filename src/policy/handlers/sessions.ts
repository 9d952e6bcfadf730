import { commandError } from '../errors.js';
import { fieldSet, type CommandHandler } from '../handler.js';
import { mapLsid } from '../session-ids.js';
import { arrayField } from './common.js';

/**
 * endSessions, killSessions, refreshSessions: each session id is mapped like every lsid, so an app can
 * only reach its own sessions.
 */
export const sessionList: CommandHandler = {
  fields: fieldSet(),
  rewrite(input) {
    const ids = arrayField(input.name, input.body, input.name);
    if (!ids) throw commandError('TypeMismatch', `BSON field '${input.name}' is the wrong type, expected type 'array'`);
    if (ids.length === 0 && input.name === 'killSessions') {
      // The server reads an empty list as "every session of the user", and every app reaches the
      // upstream as the proxy's one user: it would kill the sessions (and transactions) of all apps.
      throw commandError('Unauthorized', 'killSessions with an empty list would kill the sessions of every app; name the sessions to kill');
    }
    return {
      body: { ...input.body, [input.name]: ids.map((id, i) => mapLsid(input.scope, id, `${input.name}.${i}`)) },
      sequences: [],
      access: [],
      reply: { kind: 'plain', appDb: input.appDb, collections: [] },
    };
  },
};

/** commitTransaction / abortTransaction: the session's lsid is mapped by the orchestrator. */
export const transactionControl: CommandHandler = {
  fields: fieldSet('recoveryToken'),
  rewrite(input) {
    return { body: { ...input.body }, sequences: [], access: [], reply: { kind: 'plain', appDb: input.appDb, collections: [] } };
  },
};

/** buildInfo: no app data; forwarded for the real server version. */
export const buildInfo: CommandHandler = {
  fields: fieldSet(),
  rewrite(input) {
    return { body: { ...input.body }, sequences: [], access: [], reply: { kind: 'plain', appDb: input.appDb, collections: [] } };
  },
};
