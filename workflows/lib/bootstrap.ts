// Deterministic sampling and bootstrap confidence intervals for the knockout stages.

/** mulberry32: a small deterministic PRNG, uniform in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * A deterministic sample of `n` of `items` (all of them when there are fewer), returned in
 * ascending order: a seeded Fisher–Yates shuffle, cut after n. The same (items, n, seed) always
 * gives the same sample, and a larger n gives a superset.
 */
export function deterministicSample(items: number[], n: number, seed: number): number[] {
  const a = [...items].sort((x, y) => x - y);
  if (n >= a.length) return a;
  const r = mulberry32(seed);
  for (let i = 0; i < n; i++) {
    const j = i + Math.floor(r() * (a.length - i));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, n).sort((x, y) => x - y);
}

/** Quantile with linear interpolation between order statistics (numpy's default). */
export function quantileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const pos = (n - 1) * q;
  const lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function mean(xs: ArrayLike<number>): number {
  if (xs.length === 0) return NaN;
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i];
  return s / xs.length;
}

/**
 * Percentile bootstrap of the mean for samples of a fixed size n. The resampling indices are
 * drawn once (from the seed) and reused for every statistic, so that all the intervals of one
 * group of prompts come from the same resamples and are reproducible.
 */
export class MeanBootstrap {
  private readonly idx: Uint32Array;

  constructor(readonly n: number, readonly resamples: number, seed: number) {
    this.idx = new Uint32Array(n > 0 ? n * resamples : 0);
    const r = mulberry32(seed);
    for (let i = 0; i < this.idx.length; i++) this.idx[i] = Math.floor(r() * n);
  }

  /** The (1 − alpha) interval of the mean of `values` (length n); NaN for an empty sample. */
  ci(values: ArrayLike<number>, alpha = 0.05): [number, number] {
    if (values.length !== this.n) throw new Error(`bootstrap: ${values.length} values for a sample of ${this.n}`);
    const n = this.n;
    if (n === 0) return [NaN, NaN];
    const means = new Float64Array(this.resamples);
    for (let b = 0; b < this.resamples; b++) {
      let s = 0;
      const off = b * n;
      for (let i = 0; i < n; i++) s += values[this.idx[off + i]];
      means[b] = s / n;
    }
    means.sort();
    return [quantileSorted(means, alpha / 2), quantileSorted(means, 1 - alpha / 2)];
  }
}
