// Latency histogram (log buckets, 1% relative precision, mergeable across worker processes) and the
// small statistics the reports need.

const GROWTH = 1.01;
const LOG_GROWTH = Math.log(GROWTH);
/** Buckets cover 1 µs .. ~10^8 µs (100 s); bucket 0 holds everything under 1 µs. */
const BUCKETS = Math.ceil(Math.log(1e8) / LOG_GROWTH) + 2;

export class LatencyHistogram {
  constructor(counts) {
    this.counts = counts ? Float64Array.from(counts) : new Float64Array(BUCKETS);
    this.n = this.counts.reduce((a, b) => a + b, 0);
    this.sum = 0;
    this.max = 0;
  }

  /** Records one latency in microseconds. */
  record(us) {
    const b = us < 1 ? 0 : Math.min(BUCKETS - 1, 1 + Math.floor(Math.log(us) / LOG_GROWTH));
    this.counts[b]++;
    this.n++;
    this.sum += us;
    if (us > this.max) this.max = us;
  }

  merge(other) {
    for (let i = 0; i < BUCKETS; i++) this.counts[i] += other.counts[i];
    this.n += other.n;
    this.sum += other.sum;
    this.max = Math.max(this.max, other.max);
    return this;
  }

  /** The latency (µs) at quantile q (0..1): the geometric middle of the bucket it falls in. */
  quantile(q) {
    if (this.n === 0) return 0;
    const rank = Math.max(1, Math.ceil(q * this.n));
    let seen = 0;
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i];
      if (seen >= rank) return i === 0 ? 0.5 : Math.pow(GROWTH, i - 0.5);
    }
    return this.max;
  }

  /** For IPC: a sparse form. */
  toJSON() {
    const sparse = [];
    for (let i = 0; i < BUCKETS; i++) if (this.counts[i]) sparse.push([i, this.counts[i]]);
    return { sparse, n: this.n, sum: this.sum, max: this.max };
  }

  static fromJSON(json) {
    const h = new LatencyHistogram();
    for (const [i, c] of json.sparse) h.counts[i] = c;
    h.n = json.n;
    h.sum = json.sum;
    h.max = json.max;
    return h;
  }

  summary() {
    return {
      p50_us: round(this.quantile(0.5)),
      p99_us: round(this.quantile(0.99)),
      p999_us: round(this.quantile(0.999)),
      mean_us: round(this.n ? this.sum / this.n : 0),
      max_us: round(this.max),
    };
  }
}

export function median(values) {
  const v = values.filter((x) => typeof x === 'number' && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return NaN;
  const m = v.length >> 1;
  return v.length % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

export function round(x, digits = 1) {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}
