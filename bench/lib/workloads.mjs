// The workloads a load worker can run, by name. Each has a collection, an optional `prepare` run once
// through the target before the workers start (seeding), and `op`, which builds the function one
// client loop calls repeatedly. Issue 6 adds insert_many, scan, aggregate and the YCSB-B mix here.

/** A small document of the kind an app inserts (~100 bytes with its _id). */
function smallDocument(n) {
  return { title: 'benchmark task', n, done: false, at: new Date(), tags: ['a', 'b'] };
}

export const WORKLOADS = {
  /** findOne by _id among `seedCount` documents (default 1,000). */
  point_read: {
    collection: 'bench_point',
    async prepare(coll, options) {
      const n = options.seedCount ?? 1000;
      if ((await coll.estimatedDocumentCount()) >= n) return;
      await coll.drop().catch(() => undefined);
      const docs = Array.from({ length: n }, (_, i) => ({ _id: i, ...smallDocument(i), name: `user ${i}`, email: `user${i}@example.com` }));
      for (let i = 0; i < docs.length; i += 1000) await coll.insertMany(docs.slice(i, i + 1000));
    },
    op(coll, options) {
      const n = options.seedCount ?? 1000;
      return () => coll.findOne({ _id: Math.floor(Math.random() * n) });
    },
  },
  /** insertOne of a small document (the driver adds an ObjectId _id). */
  insert: {
    collection: 'bench_insert',
    op(coll) {
      let n = 0;
      return () => coll.insertOne(smallDocument(n++));
    },
  },
};
