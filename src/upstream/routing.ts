import type { SelectedServer } from './topology.js';
import type { TransactionPins } from './pins.js';
import { sessionKey } from './cursors.js';
import type { ReplyView } from '../wire/reply-status.js';
import { UnreachableError } from './errors.js';

/** What routing needs of a command: its transaction fields and whether it ends or continues one. */
export interface RoutedCommand {
  /** The command as the client sent it (startTransaction, autocommit, lsid are read). */
  readonly cmd: { readonly startTransaction?: unknown; readonly autocommit?: unknown; readonly lsid?: unknown };
  /** commitTransaction / abortTransaction: routed to the server the transaction is pinned to. */
  readonly transactionControl: boolean;
  /** The app the command runs for (pins are per app and session). */
  readonly owner: string;
}

interface Servers {
  selectNow(): SelectedServer | undefined;
  select(): Promise<SelectedServer>;
  readonly pins: TransactionPins;
}

/**
 * Where a command goes: the writable server, or the one its transaction is pinned to (several mongos:
 * every statement and the commit must reach the server that started it). A transaction's pin is
 * released when its commitTransaction succeeds or its abortTransaction is answered (see settle).
 */
export class Router {
  constructor(private readonly servers: Servers) {}

  /**
   * The server at once, without a promise, when nothing is pinned or to pin and a writable server is
   * known: the common case of every request. Undefined: ask route().
   */
  routeNow(cmd: RoutedCommand['cmd'], transactionControl: boolean): string | undefined {
    if (cmd.startTransaction === true || cmd.autocommit === false || transactionControl) return undefined;
    return this.servers.selectNow()?.address;
  }

  /** The writable server, or the pinned one; throws UnreachableError when none can be selected. */
  async route(c: RoutedCommand): Promise<string> {
    const pins = this.servers.pins;
    // Only commands of a transaction are pinned or pin: the key (hex of the session id) is made for them alone.
    const key = inTransaction(c) ? pinKey(c) : undefined;
    if (key !== undefined && c.cmd.startTransaction !== true) {
      const pinned = pins.lookup(key);
      if (pinned) return pinned;
    }
    let address: string;
    try {
      address = (await this.servers.select()).address;
    } catch (err) {
      throw new UnreachableError((err as Error).message);
    }
    if (key !== undefined && c.cmd.startTransaction === true) pins.pin(key, address);
    return address;
  }

  /**
   * After a transaction-control reply: a committed or aborted transaction is over, so its pin goes.
   * A failed commit keeps it: the driver retries commitTransaction, which must reach the same server.
   */
  settle(c: RoutedCommand, commandName: string, reply: ReplyView): void {
    if (!c.transactionControl) return;
    if (commandName === 'commitTransaction' && reply.failed) return;
    const key = pinKey(c);
    if (key !== undefined) this.servers.pins.unpin(key);
  }
}

function inTransaction(c: RoutedCommand): boolean {
  return c.cmd.startTransaction === true || c.cmd.autocommit === false || c.transactionControl;
}

function pinKey(c: RoutedCommand): string | undefined {
  const session = sessionKey(c.cmd.lsid);
  return session === undefined ? undefined : `${c.owner}\0${session}`;
}
