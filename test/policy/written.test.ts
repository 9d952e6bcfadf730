import { serialize, type Document } from 'bson';
import { describe, expect, it } from 'vitest';
import { lookupCommand } from '../../src/policy/commands.js';
import { rewriteCommand } from '../../src/policy/rewrite.js';
import { makeScope, type Doc } from '../../src/policy/scope.js';
import type { DocumentSequence } from '../../src/wire/opmsg.js';
import type { RewrittenCommand } from '../../src/policy/handler.js';

/**
 * The rewrite reports the documents a command writes whole (`written`), sized as the app sent them:
 * the session's limits (max_document_bytes, max_documents_per_collection) read it.
 */

const scope = makeScope('app1', 'mdb_runtime', 'app_id');

function rw(body: Doc, sequences: DocumentSequence[] = []): RewrittenCommand {
  const name = Object.keys(body)[0]!;
  const spec = lookupCommand(name);
  if (!spec) throw new Error(`no spec for ${name}`);
  return rewriteCommand(scope, spec, name, { ...body, $db: 'shop' }, sequences);
}

const size = (doc: Document): number => serialize(doc).length;
const seq = (identifier: string, docs: Document[]): DocumentSequence => ({ identifier, documents: docs.map((d) => Buffer.from(serialize(d))) });

const small = { _id: 2, v: 1 };
const big = { _id: 1, blob: 'x'.repeat(200) };
const bigger = { _id: 3, blob: 'y'.repeat(300) };

describe('written: what a rewrite says the command writes whole', () => {
  it('insert: every document of the body, sized before the tag, the largest and where it is', () => {
    const out = rw({ insert: 'c', documents: [small, bigger, big] });
    expect(out.written).toEqual({ documents: 3, largest: size(bigger), largestAt: 'documents.1' });
    // The rewrite tagged them: the sizes are the app's, smaller than what goes upstream.
    expect(size((out.body.documents as Doc[])[1]!)).toBeGreaterThan(size(bigger));
  });

  it('insert: every document of a kind-1 section, by its length', () => {
    const out = rw({ insert: 'c' }, [seq('documents', [small, small, big])]);
    expect(out.written).toEqual({ documents: 3, largest: size(big), largestAt: 'documents.2' });
    expect(out.sequences[0]!.documents[2]!.length).toBeGreaterThan(size(big));
  });

  it('insert: the first of equally large documents; none without documents', () => {
    expect(rw({ insert: 'c', documents: [big, { ...big, _id: 9 }] }).written).toEqual({ documents: 2, largest: size(big), largestAt: 'documents.0' });
    expect(rw({ insert: 'c', documents: [] }).written).toBeUndefined();
  });

  it('update: replacements and replacement upserts, not operator or pipeline updates (body and kind-1)', () => {
    const statements = [
      { q: {}, u: { $set: { blob: bigger.blob } } },
      { q: {}, u: [{ $set: { blob: bigger.blob } }] },
      { q: { _id: 1 }, u: big, upsert: true },
      { q: { _id: 2 }, u: small },
    ];
    const expected = { documents: 2, largest: size(big), largestAt: 'updates.2.u' };
    expect(rw({ update: 'c', updates: statements }).written).toEqual(expected);
    expect(rw({ update: 'c' }, [seq('updates', statements)]).written).toEqual(expected);
    expect(rw({ update: 'c', updates: statements.slice(0, 2) }).written).toBeUndefined();
  });

  it('findAndModify (and its alias): a replacement, not an operator update or a remove', () => {
    expect(rw({ findAndModify: 'c', query: {}, update: big, upsert: true }).written).toEqual({ documents: 1, largest: size(big), largestAt: 'update' });
    expect(rw({ findandmodify: 'c', query: {}, update: small }).written).toEqual({ documents: 1, largest: size(small), largestAt: 'update' });
    expect(rw({ findAndModify: 'c', query: {}, update: { $set: big } }).written).toBeUndefined();
    expect(rw({ findAndModify: 'c', query: {}, remove: true }).written).toBeUndefined();
  });

  it('commands that write no whole document, and explain, report none', () => {
    expect(rw({ delete: 'c', deletes: [{ q: {}, limit: 0 }] }).written).toBeUndefined();
    expect(rw({ find: 'c', filter: {} }).written).toBeUndefined();
    expect(rw({ explain: { update: 'c', updates: [{ q: {}, u: big }] } }).written).toBeUndefined();
  });
});
