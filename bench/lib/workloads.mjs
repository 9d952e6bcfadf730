// The workloads a load worker can run, by name. Each has a collection (the app's logical name; every
// target of a run uses the same one, in a database of its own), an optional `prepare` run once through
// the target before the workers start (seeding), and `op(coll, options, progress)`, which builds the
// function one client loop calls repeatedly.
//
// A workload with `progressive: true` reports its work as it goes (`progress(n)`: n documents), and
// `unitsPerOp(options)` says how many units one whole operation is. Its throughput is measured from
// those units, not from whole operations completed in the window: a scan that takes longer than the
// measured window (FerretDB reads ~6,000 documents/s in all) still counts what it read.
//
// Options (all optional): seedCount (point_read: 1,000), scanDocs (10,000), scanBatchSize (1,000),
// insertManyDocs (1,000), aggregateDocs (1,000), ycsbRecords (1,000).

/**
 * The _id of the i-th seeded document: a string, as YCSB's keys ("user…"). Not a number: FerretDB's
 * SQLite backend uses its primary key only for a filter that is exactly {_id: <string or ObjectId>}
 * (any other _id type scans the table), and an app's ids are ObjectIds or strings.
 */
export function key(i) {
  return `user${String(i).padStart(6, '0')}`;
}

/** A small document of the kind an app inserts (~100 bytes with its _id). */
function smallDocument(n) {
  return { title: 'benchmark task', n, done: false, at: new Date(), tags: ['a', 'b'] };
}

/**
 * Fills `coll` with `n` documents from `make(i)` unless it already holds at least `n` (a target is
 * seeded once per run of the benchmark); inserts in batches of 1,000, as a bulk loader would.
 */
async function seed(coll, n, make) {
  const count = await coll.estimatedDocumentCount();
  if (count >= n) return;
  // Not dropped when empty: through the proxy, the reconciler may already have created the collection
  // with its managed index.
  if (count > 0) await coll.deleteMany({});
  for (let i = 0; i < n; i += 1000) {
    await coll.insertMany(Array.from({ length: Math.min(1000, n - i) }, (_, j) => make(i + j)));
  }
}

// ---- YCSB workload B: 95% reads, 5% updates, keys from a zipfian distribution (YCSB's default
// request distribution, constant 0.99), scrambled so that the hot keys are spread over the key space
// as YCSB's ScrambledZipfianGenerator does (here with a multiplicative permutation, not a hash).
const ZIPF_THETA = 0.99;

/** YCSB's ZipfianGenerator (Gray et al., "Quickly generating billion-record synthetic databases"). */
function zipfian(n, theta = ZIPF_THETA) {
  let zetan = 0;
  for (let i = 1; i <= n; i++) zetan += 1 / i ** theta;
  const zeta2 = 1 + 1 / 2 ** theta;
  const alpha = 1 / (1 - theta);
  const eta = (1 - (2 / n) ** (1 - theta)) / (1 - zeta2 / zetan);
  return () => {
    const u = Math.random();
    const uz = u * zetan;
    if (uz < 1) return 0;
    if (uz < 1 + 0.5 ** theta) return 1;
    return Math.min(n - 1, Math.floor(n * (eta * u - eta + 1) ** alpha));
  };
}

/** A prime step coprime with n: rank → (rank * step) mod n is a permutation of 0..n-1. */
function scrambleStep(n) {
  const gcd = (a, b) => (b === 0 ? a : gcd(b, a % b));
  for (const p of [7919, 104_729, 1_299_709, 15_485_863]) if (gcd(p, n) === 1) return p;
  return 1;
}

const FIELD_VALUE_LENGTH = 100; // YCSB: 10 fields of 100 bytes
const FIELD_VALUES = Array.from({ length: 64 }, (_, i) => `${i}`.padStart(4, '0').repeat(FIELD_VALUE_LENGTH / 4));
const fieldValue = () => FIELD_VALUES[Math.floor(Math.random() * FIELD_VALUES.length)];

function ycsbRecord(i) {
  const doc = { _id: key(i) };
  for (let f = 0; f < 10; f++) doc[`field${f}`] = fieldValue();
  return doc;
}

// ---- The orders the aggregate groups: 10 categories (indexed: the manifest's managed index, created
// through direct and relay targets by prepare), 5 statuses independent of the category.
const CATEGORIES = 10;
function order(i) {
  return {
    _id: i,
    category: `c${i % CATEGORIES}`,
    status: `s${Math.floor(i / CATEGORIES) % 5}`,
    amount: (i * 37) % 1000,
    customer: `customer ${i % 97}`,
    at: new Date(1_700_000_000_000 + i * 1000),
  };
}

export const WORKLOADS = {
  /** findOne by _id among `seedCount` documents (default 1,000), uniform keys. */
  point_read: {
    collection: 'bench_point',
    description: 'findOne by _id, uniform over 1,000 documents',
    async prepare(coll, options) {
      await seed(coll, options.seedCount ?? 1000, (i) => ({ _id: key(i), ...smallDocument(i), name: `user ${i}`, email: `user${i}@example.com` }));
    },
    op(coll, options) {
      const n = options.seedCount ?? 1000;
      return () => coll.findOne({ _id: key(Math.floor(Math.random() * n)) });
    },
  },
  /** insertOne of a small document (the driver adds an ObjectId _id). */
  insert: {
    collection: 'bench_insert',
    description: 'insertOne of a ~100-byte document',
    op(coll) {
      let n = 0;
      return () => coll.insertOne(smallDocument(n++));
    },
  },
  /** insertMany of 1,000 small documents in one command (ordered, the driver's default). */
  insert_many: {
    collection: 'bench_insert_many',
    description: 'insertMany of 1,000 ~100-byte documents (one insert command, ordered)',
    docsPerOp: (options) => options.insertManyDocs ?? 1000,
    op(coll, options) {
      const size = options.insertManyDocs ?? 1000;
      let n = 0;
      // Fresh objects every time: the driver writes the generated _id into each document.
      return () => coll.insertMany(Array.from({ length: size }, () => smallDocument(n++)));
    },
  },
  /**
   * A full scan of `scanDocs` (10,000) documents with batchSize `scanBatchSize` (1,000): one find and
   * nine getMores. Progressive: throughput is counted in documents read, one op = one whole scan.
   */
  scan: {
    collection: 'bench_scan',
    description: 'find({}) of 10,000 documents, batchSize 1,000 (find + 9 getMore)',
    progressive: true,
    docsPerOp: (options) => options.scanDocs ?? 10_000,
    unitsPerOp: (options) => options.scanDocs ?? 10_000,
    async prepare(coll, options) {
      await seed(coll, options.scanDocs ?? 10_000, (i) => ({ _id: i, ...smallDocument(i), name: `user ${i}`, email: `user${i}@example.com` }));
    },
    op(coll, options, progress) {
      const batchSize = options.scanBatchSize ?? 1000;
      return async () => {
        const cursor = coll.find({}, { batchSize });
        try {
          // Batch by batch: what the driver received (hasNext fetches the next batch with a getMore).
          while (await cursor.hasNext()) progress(cursor.readBufferedDocuments().length);
        } finally {
          await cursor.close();
        }
      };
    },
  },
  /** $match on the indexed category (1 of 10) then $group by status: 5 groups of ~100 orders. */
  aggregate: {
    collection: 'bench_orders',
    description: 'aggregate $match {category} (indexed, 1/10 of 1,000 orders) → $group by status (count, sum)',
    async prepare(coll, options) {
      await seed(coll, options.aggregateDocs ?? 1000, order);
      // The manifest's managed index; through the proxy the reconciler creates it (options.managedIndexes).
      if (!options.managedIndexes) await coll.createIndex({ category: 1 }, { name: 'category_1' });
    },
    op(coll) {
      return () =>
        coll
          .aggregate([
            { $match: { category: `c${Math.floor(Math.random() * CATEGORIES)}` } },
            { $group: { _id: '$status', orders: { $sum: 1 }, total: { $sum: '$amount' } } },
          ])
          .toArray();
    },
  },
  /** YCSB workload B: 95% findOne by _id, 5% updateOne by _id ($set of one 100-byte field); zipfian keys. */
  ycsb_b: {
    collection: 'bench_ycsb',
    description: 'YCSB B: 95% findOne / 5% updateOne $set by _id, scrambled zipfian (0.99) over 1,000 records of 10 × 100 bytes',
    async prepare(coll, options) {
      await seed(coll, options.ycsbRecords ?? 1000, ycsbRecord);
    },
    op(coll, options) {
      const n = options.ycsbRecords ?? 1000;
      const next = zipfian(n);
      const step = scrambleStep(n);
      const pick = () => key((next() * step) % n);
      return () =>
        Math.random() < 0.95
          ? coll.findOne({ _id: pick() })
          : coll.updateOne({ _id: pick() }, { $set: { [`field${Math.floor(Math.random() * 10)}`]: fieldValue() } });
    },
  },
};

// Exported for the tests of the distribution.
export { zipfian, scrambleStep };
