import type { DocumentSequence } from '../wire/opmsg.js';
import type { Access, AppScope, Doc } from './scope.js';

/** A command as the policy layer receives it. */
export interface CommandInput {
  readonly scope: AppScope;
  /** The name the client used (an alias resolves to the same handler). */
  readonly name: string;
  readonly body: Doc;
  /** The app's `$db`, remembered to map names back in replies. */
  readonly appDb: string;
  /** Kind-1 sections, raw. */
  readonly sequences: readonly DocumentSequence[];
  /** Set when the command is rewritten to be explained, not run (its plan must be the scoped command's). */
  readonly explained?: boolean;
}

/**
 * How the data plane treats the reply (and, for cursors, every later getMore batch):
 * - `plain`: names in error messages and writeErrors mapped back;
 * - `cursor`: cursor.ns mapped back and the tag stripped from each document (`view` says which kind of
 *   documents the cursor returns);
 * - `findAndModify`: the tag stripped from `value`;
 * - `explain`: every namespace in the plan mapped back.
 */
export type ReplyPlan =
  | { readonly kind: 'plain'; readonly appDb: string; readonly collections: readonly string[] }
  | { readonly kind: 'cursor'; readonly view: CursorView; readonly collections: readonly string[] }
  | { readonly kind: 'findAndModify'; readonly appDb: string; readonly collections: readonly string[] }
  | { readonly kind: 'explain'; readonly appDb: string; readonly collections: readonly string[] };

/** What a cursor's batches hold, and how to show them to the app. */
export type CursorView =
  /**
   * Documents of the app's collections: the tag is stripped unless exposed. `checkTag`: the upstream
   * filter did not hold the tag condition (find's exact-_id fast path), so every batch of the cursor
   * keeps only the documents whose tag is exactly the app's slug. `hideTag`: the tag was only asked for
   * to be checked (added to the app's projection), so it is stripped even when exposed.
   */
  | { readonly kind: 'documents'; readonly appDb: string; readonly checkTag?: boolean; readonly hideTag?: boolean }
  /**
   * listCollections entries, shown as the app's own (names, view sources and pipelines mapped back);
   * `names`: the app's collections it may list (data_access); `entries`: the listCollections filter,
   * evaluated by the proxy over each entry as shown (may throw a CommandError: its budget, $expr errors);
   * `nameOnly`: entries are reduced to `{name, type}` by the proxy, before the filter sees them.
   */
  | {
      readonly kind: 'collections';
      readonly appDb: string;
      readonly names?: NameFilter;
      readonly entries?: EntryFilter;
      readonly nameOnly?: boolean;
    }
  /** listIndexes entries: `ns` mapped back. */
  | { readonly kind: 'indexes'; readonly appDb: string }
  /** Change events of a collection change stream: `ns`/`to` mapped back, the tag stripped from documents. */
  | { readonly kind: 'changeEvents'; readonly appDb: string };

/** A condition on collection names the proxy evaluates itself (the upstream only sees physical names). */
export type NameFilter = (name: string) => boolean;

/** A condition on whole listCollections entries the proxy evaluates itself. */
export type EntryFilter = (entry: Doc) => boolean;

export interface RewrittenCommand {
  /** The body to send, `$db` and `lsid` still to be set by the orchestrator. */
  body: Doc;
  sequences: readonly DocumentSequence[];
  /** Collections the command reads, writes or indexes (RBAC). */
  access: Access[];
  reply: ReplyPlan;
  /**
   * The documents the command writes whole, as the app sent them (before the proxy's tag): inserted
   * documents, replacement updates and upserts, a findAndModify replacement. Set by those handlers,
   * which walk them anyway, when there is at least one; the session's limits read it
   * (limits.max_document_bytes, limits.max_documents_per_collection) instead of parsing the command again.
   * Operator and pipeline updates are not among them: the size of their result is known only to the server.
   */
  written?: WrittenDocuments;
}

/** How many documents a command writes whole, and the largest of them. */
export interface WrittenDocuments {
  readonly documents: number;
  /** The largest one's size in bytes as the app sent it, and where it is: 'documents.3', 'updates.0.u', 'update'. */
  readonly largest: number;
  readonly largestAt: string;
}

/** Counts the documents a handler sees the command write whole (the first of equally large ones is kept). */
export class WrittenTally {
  private documents = 0;
  private largest = -1;
  private largestAt = '';

  add(bytes: number, where: string): void {
    this.documents++;
    if (bytes > this.largest) {
      this.largest = bytes;
      this.largestAt = where;
    }
  }

  /** The rewrite's `written` field, spread into it: absent when the command writes no whole document. */
  field(): { written?: WrittenDocuments } {
    return this.documents === 0 ? {} : { written: { documents: this.documents, largest: this.largest, largestAt: this.largestAt } };
  }
}

/** One command's policy: its own fields (generic arguments are common) and its pure rewrite. */
export interface CommandHandler {
  readonly fields: ReadonlySet<string>;
  /** Kind-1 sequence identifiers the command accepts. */
  readonly sequences?: ReadonlySet<string>;
  rewrite(input: CommandInput): RewrittenCommand;
}

/**
 * Finds a command by the name a client used: its canonical name and, for a forwarded command, its
 * handler. The registry (commands.ts) answers it; a handler that needs other commands' handlers
 * (explain) is given this rather than importing the registry that lists it.
 */
export type HandlerLookup = (name: string) => { readonly name: string; readonly handler?: CommandHandler } | undefined;

export const fieldSet = (...names: string[]): ReadonlySet<string> => new Set(names);
