import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { Long, deserialize, serialize, type Document } from 'bson';
import { rewriteCursorReply } from '../../src/wire/bson-edit.js';
import { WireError } from '../../src/wire/errors.js';

/**
 * rewriteCursorReply's `keepOnly`: the byte-level tag check of find's exact-_id fast path. Batch documents
 * whose tag is not exactly the app's slug (missing, another string, another type, any one of duplicate
 * occurrences wrong) are removed and the array renumbered; the rest is byte-identical.
 */

const TAG = 'app_id';
const SLUG = 'task_manager';
const KEEP = { field: TAG, value: SLUG };

type Entry = readonly [string, unknown];

/** One element, as bson encodes `{[name]: value}`. */
function elem(name: string, value: unknown): Buffer {
  const doc = Buffer.from(serialize(new Map([[name, value]])));
  return doc.subarray(4, doc.length - 1);
}

/** One element from raw parts. */
function rawElem(type: number, name: string, value: Buffer): Buffer {
  return Buffer.concat([Buffer.from([type]), Buffer.from(`${name}\0`, 'utf8'), value]);
}

/** A document of raw elements (duplicate keys allowed). */
function docOf(elements: Buffer[]): Buffer {
  const body = Buffer.concat(elements);
  const out = Buffer.alloc(4 + body.length + 1);
  out.writeInt32LE(out.length, 0);
  body.copy(out, 4);
  return out;
}

const docOfEntries = (entries: readonly Entry[]): Buffer => docOf(entries.map(([k, v]) => elem(k, v)));

/** A batch item: a raw document, or any other value (which is not a document). */
type Item = { doc: Buffer } | { value: unknown };

function arrayOf(items: readonly Item[]): Buffer {
  return docOf(items.map((item, i) => ('doc' in item ? rawElem(0x03, String(i), item.doc) : elem(String(i), item.value))));
}

function replyOf(items: readonly Item[], batchName: 'firstBatch' | 'nextBatch' = 'firstBatch', ns = 'db.c'): Buffer {
  const cursor = docOf([rawElem(0x04, batchName, arrayOf(items)), elem('id', Long.fromNumber(42)), elem('ns', ns)]);
  return docOf([rawElem(0x03, 'cursor', cursor), elem('ok', 1)]);
}

function expectInvalidBson(fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(WireError);
    expect((err as WireError).code).toBe(22);
    return;
  }
  throw new Error('expected InvalidBSON');
}

const batch = (body: Buffer, key = 'firstBatch') => deserialize(body).cursor[key] as Document[];

describe('rewriteCursorReply keepOnly', () => {
  const mine = (id: number, extra: Entry[] = []) => docOfEntries([['_id', id], ...extra, [TAG, SLUG]]);

  it('removes wrong-tag, missing-tag and non-string-tag documents, keeps the right ones, renumbers', () => {
    const items: Item[] = [
      { doc: docOfEntries([['_id', 0], [TAG, 'other_app']]) },
      { doc: mine(1, [['t', 'a']]) },
      { doc: docOfEntries([['_id', 2]]) },
      { doc: docOfEntries([['_id', 3], [TAG, 7]]) },
      { doc: docOfEntries([['_id', 4], [TAG, null]]) },
      { doc: docOfEntries([['_id', 5], [TAG, { x: SLUG }]]) },
      { doc: docOfEntries([['_id', 6], [TAG, [SLUG]]]) },
      { doc: docOfEntries([['_id', 7], [TAG, `${SLUG}x`]]) },
      { doc: docOfEntries([['_id', 8], [TAG, SLUG.slice(0, -1)]]) },
      { doc: docOfEntries([['_id', 9], [TAG, SLUG], [TAG, 'other_app']]) },
      { doc: docOfEntries([['_id', 10], ['sub', { [TAG]: SLUG }]]) },
      { value: 5 },
      { value: 'a string' },
      { doc: mine(11) },
      { doc: docOfEntries([['_id', 12], [TAG, SLUG], ['n', 1], [TAG, SLUG]]) },
    ];
    const body = replyOf(items);
    const kept = rewriteCursorReply(body, { keepOnly: KEEP });
    expect(batch(kept)).toEqual([
      { _id: 1, t: 'a', [TAG]: SLUG },
      { _id: 11, [TAG]: SLUG },
      { _id: 12, [TAG]: SLUG, n: 1 },
    ]);
    expect(kept.equals(replyOf([items[1]!, items[13]!, items[14]!]))).toBe(true);
    const stripped = rewriteCursorReply(body, { keepOnly: KEEP, stripField: TAG, ns: 'app.c' });
    expect(deserialize(stripped)).toEqual({
      cursor: { firstBatch: [{ _id: 1, t: 'a' }, { _id: 11 }, { _id: 12, n: 1 }], id: 42, ns: 'app.c' },
      ok: 1,
    });
  });

  it('checks one field and strips another', () => {
    const body = replyOf([{ doc: docOfEntries([['_id', 1], ['x', 1], [TAG, 'other']]) }, { doc: mine(2, [['x', 2]]) }, { doc: mine(3) }]);
    expect(batch(rewriteCursorReply(body, { keepOnly: KEEP, stripField: 'x' }))).toEqual([
      { _id: 2, [TAG]: SLUG },
      { _id: 3, [TAG]: SLUG },
    ]);
    expect(rewriteCursorReply(body, { keepOnly: KEEP, stripField: 'x' }).equals(replyOf([{ doc: mine(2) }, { doc: mine(3) }]))).toBe(true);
  });

  it('handles nextBatch like firstBatch', () => {
    const body = replyOf([{ doc: docOfEntries([['_id', 1]]) }, { doc: mine(2) }], 'nextBatch');
    expect(batch(rewriteCursorReply(body, { keepOnly: KEEP, stripField: TAG }), 'nextBatch')).toEqual([{ _id: 2 }]);
  });

  it('empty batches, and batches with nothing to drop, come back as they are', () => {
    const empty = replyOf([]);
    expect(rewriteCursorReply(empty, { keepOnly: KEEP })).toBe(empty);
    expect(rewriteCursorReply(empty, { keepOnly: KEEP, stripField: TAG })).toBe(empty);
    const all = replyOf([{ doc: mine(1) }, { doc: mine(2) }]);
    expect(rewriteCursorReply(all, { keepOnly: KEEP })).toBe(all);
    const none = replyOf([{ doc: docOfEntries([['_id', 1]]) }]);
    expect(deserialize(rewriteCursorReply(none, { keepOnly: KEEP })).cursor.firstBatch).toEqual([]);
  });

  it('leaves replies without a cursor (errors) alone', () => {
    const error = docOfEntries([['ok', 0], ['errmsg', 'boom'], ['code', 2]]);
    expect(rewriteCursorReply(error, { keepOnly: KEEP })).toBe(error);
  });

  it('a batch that is not an array is InvalidBSON', () => {
    const cursor = docOf([elem('firstBatch', { 0: { _id: 1 } }), elem('id', 0)]);
    expectInvalidBson(() => rewriteCursorReply(docOf([rawElem(0x03, 'cursor', cursor), elem('ok', 1)]), { keepOnly: KEEP }));
  });

  it('malformed and truncated replies are InvalidBSON, never a crash', () => {
    const body = replyOf([{ doc: docOfEntries([['_id', 1], [TAG, 'x']]) }, { doc: mine(2, [['t', 'abc']]) }, { doc: docOfEntries([['_id', 3]]) }]);
    for (let n = 0; n < body.length; n++) expectInvalidBson(() => rewriteCursorReply(body.subarray(0, n), { keepOnly: KEEP }));
    // A batch document claiming more bytes than its array holds.
    const firstDoc = body.indexOf(Buffer.from('0\0', 'latin1')) + 2;
    const bad = Buffer.from(body);
    bad.writeInt32LE(1000, firstDoc);
    expectInvalidBson(() => rewriteCursorReply(bad, { keepOnly: KEEP }));
    // A tag string whose length runs past the document.
    const tagAt = body.indexOf(Buffer.from(`${TAG}\0`, 'latin1')) + TAG.length + 1;
    const long = Buffer.from(body);
    long.writeInt32LE(500, tagAt);
    expectInvalidBson(() => rewriteCursorReply(long, { keepOnly: KEEP }));
  });

  it('random corruption: InvalidBSON or a well-formed result, never another error (property)', () => {
    const body = replyOf([{ doc: docOfEntries([['_id', 1], [TAG, 'x']]) }, { doc: mine(2, [['t', 'abc']]) }, { value: 3 }, { doc: mine(4) }]);
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(body.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), fc.boolean(), (flips, strip) => {
        const bad = Buffer.from(body);
        for (const [at, byte] of flips) bad[at] = byte;
        let out: Buffer;
        try {
          out = rewriteCursorReply(bad, { keepOnly: KEEP, stripField: strip ? TAG : undefined });
        } catch (err) {
          if (!(err instanceof WireError) || err.code !== 22) throw err;
          return;
        }
        expect(out.readInt32LE(0)).toBe(out.length);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('rewriteCursorReply keepOnly against oracles (property)', () => {
  const names = fc.constantFrom('_id', 'a', 'b', TAG, `${TAG}x`, 'app');
  const value = fc.oneof(
    fc.constant<unknown>(SLUG),
    fc.constant<unknown>(SLUG),
    fc.constant<unknown>('other'),
    fc.constant<unknown>(`${SLUG}x`),
    fc.constant<unknown>(''),
    fc.integer(),
    fc.constant<unknown>(null),
    fc.boolean(),
    fc.constant<unknown>({ [TAG]: SLUG }),
    fc.constant<unknown>([SLUG]),
    fc.string({ maxLength: 6 }),
  );
  const entries = fc.array(fc.tuple(names, value), { maxLength: 6 });
  const item: fc.Arbitrary<Item | Entry[]> = fc.oneof(
    { weight: 9, arbitrary: entries },
    { weight: 1, arbitrary: fc.oneof(fc.integer(), fc.string({ maxLength: 4 })).map((v) => ({ value: v })) },
  );
  const tagOk = (es: readonly Entry[]) => es.some(([k]) => k === TAG) && es.every(([k, v]) => k !== TAG || v === SLUG);

  it('byte-equal to the reply built from the documents that pass, renumbered (duplicate keys included)', () => {
    fc.assert(
      fc.property(fc.array(item, { maxLength: 12 }), fc.boolean(), fc.constantFrom<'firstBatch' | 'nextBatch'>('firstBatch', 'nextBatch'), (items, strip, key) => {
        const asItem = (i: Item | Entry[]): Item => (Array.isArray(i) ? { doc: docOfEntries(i) } : (i as Item));
        const body = replyOf(items.map(asItem), key);
        const out = rewriteCursorReply(body, { keepOnly: KEEP, stripField: strip ? TAG : undefined });
        const kept = items.filter((i): i is Entry[] => Array.isArray(i) && tagOk(i));
        const expected = replyOf(
          kept.map((es) => ({ doc: docOfEntries(strip ? es.filter(([k]) => k !== TAG) : es) })),
          key,
        );
        expect(out.equals(expected)).toBe(true);
        if (kept.length === items.length && (!strip || kept.length === 0)) expect(out).toBe(body);
      }),
      { numRuns: 1000 },
    );
  });

  it('equal to decode → filter → encode for documents without duplicate keys', () => {
    const unique = fc.uniqueArray(fc.tuple(names, value), { maxLength: 6, selector: ([k]) => k });
    fc.assert(
      fc.property(fc.array(unique, { maxLength: 10 }), fc.boolean(), (docs, strip) => {
        const reply = { cursor: { firstBatch: docs.map((es) => Object.fromEntries(es)), id: Long.fromNumber(7), ns: 'db.c' }, ok: 1 };
        const body = Buffer.from(serialize(reply));
        const out = rewriteCursorReply(body, { keepOnly: KEEP, stripField: strip ? TAG : undefined });
        // The oracle: decoded documents, filtered and edited as plain objects, encoded again.
        const want = deserialize(body, { promoteValues: false });
        want.cursor.firstBatch = (want.cursor.firstBatch as Document[])
          .filter((d) => d[TAG] === SLUG)
          .map((d) => {
            if (strip) delete d[TAG];
            return d;
          });
        expect(out.equals(Buffer.from(serialize(want)))).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });
});
