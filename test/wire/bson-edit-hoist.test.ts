import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { deserialize, serialize, type Document } from 'bson';
import { hoistDocumentArray } from '../../src/wire/bson-edit.js';
import { WireError } from '../../src/wire/errors.js';

/**
 * hoistDocumentArray: an insert's `documents` array taken out of the body as kind-1 documents (the
 * Node driver's insert made into PyMongo's), so that the proxy stamps them as bytes.
 */

const bytes = (doc: Document): Buffer => Buffer.from(serialize(doc));

/** A document of raw elements (duplicate keys allowed). */
function rawDoc(...elements: Buffer[]): Buffer {
  const body = Buffer.concat([...elements, Buffer.from([0])]);
  const out = Buffer.alloc(4 + body.length);
  out.writeInt32LE(out.length, 0);
  body.copy(out, 4);
  return out;
}

function element(name: string, value: unknown): Buffer {
  const doc = bytes({ [name]: value });
  return doc.subarray(4, doc.length - 1);
}

describe('hoistDocumentArray', () => {
  it('moves the documents out of the body, byte for byte, and leaves the rest in order', () => {
    const docs = [{ _id: 1, a: 'x' }, { _id: 2, nested: { b: [1, 2] } }];
    const body = bytes({ insert: 'tasks', documents: docs, ordered: true, $db: 'app' });
    const out = hoistDocumentArray(body, 'documents')!;
    expect(out.documents.map((d) => Buffer.from(d))).toEqual(docs.map((d) => bytes(d)));
    expect(out.body).toEqual(bytes({ insert: 'tasks', ordered: true, $db: 'app' }));
    expect(deserialize(out.body)).toEqual({ insert: 'tasks', ordered: true, $db: 'app' });
  });

  it('works with the array last and first', () => {
    expect(hoistDocumentArray(bytes({ insert: 'c', documents: [{ a: 1 }] }), 'documents')!.body).toEqual(bytes({ insert: 'c' }));
    expect(hoistDocumentArray(bytes({ documents: [{ a: 1 }], insert: 'c' }), 'documents')!.body).toEqual(bytes({ insert: 'c' }));
  });

  it.each([
    ['no such field', { insert: 'c', ordered: true }],
    ['an empty array', { insert: 'c', documents: [] }],
    ['a document instead of an array', { insert: 'c', documents: { a: 1 } }],
    ['an array holding a number', { insert: 'c', documents: [{ a: 1 }, 2] }],
    ['an array holding an array', { insert: 'c', documents: [[{ a: 1 }]] }],
    ['an array holding null', { insert: 'c', documents: [null] }],
  ])('leaves the body as sent with %s', (_what, doc) => {
    expect(hoistDocumentArray(bytes(doc), 'documents')).toBeUndefined();
  });

  it('leaves the body as sent when the field appears twice', () => {
    const body = rawDoc(element('insert', 'c'), element('documents', [{ a: 1 }]), element('documents', [{ b: 2 }]));
    expect(hoistDocumentArray(body, 'documents')).toBeUndefined();
  });

  it('answers malformed bytes with InvalidBSON (22), never another error', () => {
    const body = bytes({ insert: 'c', documents: [{ a: 'xyz' }, { b: 2 }], $db: 'app' });
    for (let cut = 0; cut < body.length; cut++) {
      const truncated = Buffer.from(body.subarray(0, cut));
      if (truncated.length >= 4) truncated.writeInt32LE(truncated.length, 0);
      try {
        hoistDocumentArray(truncated, 'documents');
      } catch (err) {
        expect(err, `cut at ${cut}`).toBeInstanceOf(WireError);
        expect((err as WireError).code).toBe(22);
      }
    }
    fc.assert(
      fc.property(fc.integer({ min: 4, max: body.length - 1 }), fc.integer({ min: 0, max: 255 }), (at, value) => {
        const corrupt = Buffer.from(body);
        corrupt[at] = value;
        try {
          const out = hoistDocumentArray(corrupt, 'documents');
          if (out) {
            // Whatever was accepted is whole documents and a body of the right size.
            expect(out.body.readInt32LE(0)).toBe(out.body.length);
            for (const d of out.documents) expect(d.readInt32LE(0)).toBe(d.length);
          }
        } catch (err) {
          expect(err).toBeInstanceOf(WireError);
          expect((err as WireError).code).toBe(22);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('agrees with decoding: body without the field, and the documents in order', () => {
    fc.assert(
      fc.property(
        fc.array(fc.record({ n: fc.integer(), s: fc.string(), b: fc.boolean() }), { minLength: 1, maxLength: 20 }),
        fc.boolean(),
        (docs, ordered) => {
          const out = hoistDocumentArray(bytes({ insert: 'c', documents: docs, ordered, $db: 'x' }), 'documents')!;
          expect(deserialize(out.body)).toEqual({ insert: 'c', ordered, $db: 'x' });
          expect(out.documents.map((d) => deserialize(d))).toEqual(docs);
        },
      ),
    );
  });
});
