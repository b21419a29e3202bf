// Shared machinery of the kernel tests (tests/kernels_test.ts, tests/mamba2_kernels_test.ts):
// seeded inputs, buffers, one device, and the comparison against the float64 reference.
//
// Tolerances are on max |gpu - ref| / max |ref| over the compared elements (ref computed in
// float64 from the same f32 inputs). f32 has a unit roundoff of 6e-8; the kernels' sums run
// over at most a few hundred terms and exp/log on the GPU are a few ulp, so a correct kernel
// lands around 1e-7..1e-6. 1e-5 (TOL_F32) leaves a 10x margin and still catches any indexing,
// masking or formula slip, which shows up as an O(1) relative error. Copies are checked exactly.
// Outputs are pre-filled with NaN (or random values where the kernel accumulates) so that an
// element the kernel forgets to write fails the comparison.
// KERNELS_TEST_VERBOSE=1 prints the measured error of every comparison.

import { createGpu, type Gpu, readBuffer, Recorder, storageBuffer, uploadBuffer, writeBuffer } from "../engine/gpu.ts";
import { Ops } from "../engine/ops.ts";
import { Mamba2Ops } from "../engine/mamba2/ops.ts";

export const TOL_F32 = 1e-5;

// ---------- helpers ----------

/** mulberry32: a small seeded PRNG, so that every run sees the same inputs. */
export class Rng {
  constructor(private s: number) {}
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
  int(lo: number, hiExcl: number): number {
    return lo + Math.floor(this.next() * (hiExcl - lo));
  }
  f32(n: number, lo = -1, hi = 1): Float32Array {
    return Float32Array.from({ length: n }, () => this.uniform(lo, hi));
  }
}

let opsPromise: Promise<Ops> | undefined;
/** One device and compiled kernels for the whole file, made on first use. */
export function getOps(): Promise<Ops> {
  return opsPromise ??= createGpu().then((gpu) => Ops.create(gpu));
}

/** Buffers of one test, destroyed together. */
export class Bufs {
  private list: GPUBuffer[] = [];
  constructor(readonly gpu: Gpu) {}
  f32(data: Float32Array, label = "f32"): GPUBuffer {
    return this.keep(uploadBuffer(this.gpu, data, label));
  }
  u32(data: ArrayLike<number>, label = "u32"): GPUBuffer {
    return this.keep(uploadBuffer(this.gpu, Uint32Array.from(data), label));
  }
  /** An output of n f32, pre-filled with `fill` (NaN: any element left unwritten fails). */
  out(n: number, fill = NaN, label = "out"): GPUBuffer {
    const b = this.keep(storageBuffer(this.gpu, n * 4, label));
    writeBuffer(this.gpu, b, new Float32Array(n).fill(fill));
    return b;
  }
  keep(b: GPUBuffer): GPUBuffer {
    this.list.push(b);
    return b;
  }
  destroy() {
    for (const b of this.list) b.destroy();
  }
}

/** Record with `fn`, submit, wait. */
export async function run(ops: Ops, fn: (rec: Recorder) => void): Promise<void> {
  const rec = new Recorder(ops.gpu);
  fn(rec);
  rec.submit();
  await ops.gpu.device.queue.onSubmittedWorkDone();
}

export async function read(gpu: Gpu, buf: GPUBuffer, n: number): Promise<Float32Array> {
  return new Float32Array(await readBuffer(gpu, buf, n * 4));
}

/**
 * max |got - want| <= tol * max |want| over the indices `keep` accepts (all by default);
 * NaN or a length mismatch fails. tol = 0 asks for equality.
 */
export function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string, keep?: (i: number) => boolean) {
  if (got.length !== want.length) throw new Error(`${what}: length ${got.length}, want ${want.length}`);
  let scale = 0, err = 0, worst = -1, n = 0;
  for (let i = 0; i < want.length; i++) {
    if (keep && !keep(i)) continue;
    n++;
    scale = Math.max(scale, Math.abs(want[i]));
    const e = Math.abs(got[i] - want[i]);
    if (!(e <= err)) { // also takes NaN
      err = Number.isNaN(e) ? Infinity : e;
      worst = i;
    }
  }
  if (n === 0) throw new Error(`${what}: nothing compared`);
  if (!(err <= tol * scale)) {
    throw new Error(
      `${what}: max |gpu - ref| = ${err.toExponential(3)} at [${worst}] (gpu ${got[worst]}, ref ${want[worst]}), ` +
        `${(err / scale).toExponential(3)} of max |ref| ${scale.toExponential(3)}; tolerance ${tol}`,
    );
  }
  if (Deno.env.get("KERNELS_TEST_VERBOSE")) console.log(`  ${what}: ${(err / (scale || 1)).toExponential(2)} of max |ref|`);
  return err / (scale || 1);
}

export function assert(cond: boolean, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

export const desc = (o: object) => Object.entries(o).map(([k, v]) => `${k}=${Array.isArray(v) ? `[${v}]` : v}`).join(" ");

let m2Promise: Promise<Mamba2Ops> | undefined;
/** The Mamba-2 kernels on the same device. */
export function getMamba2Ops(): Promise<Mamba2Ops> {
  return m2Promise ??= getOps().then((ops) => Mamba2Ops.create(ops));
}

/**
 * Random recomputed rows over a padded base batch: configurations on prompts of different lengths,
 * each with its first recomputed position t0, a window among nLayer layers, a selector, conv taps
 * and blocked columns (random, on and off the diagonal).
 */
export function rowsScenario(rng: Rng, lengths: number[], nConfigs: number, nLayer: number, nSel: number, dConv: number) {
  const T = Math.max(...lengths);
  const meta: number[] = [], colmask: number[] = [];
  for (let k = 0; k < nConfigs; k++) {
    const b = rng.int(0, lengths.length), len = lengths[b];
    const t0 = rng.int(0, len), start = rng.int(0, nLayer), end = rng.int(start + 1, nLayer + 1), sel = rng.int(0, nSel);
    for (let t = t0; t < len; t++) {
      meta.push(t, t0, b * T, start, end, sel, rng.int(0, 2 ** dConv), 0);
      for (let s = 0; s < T; s++) colmask.push(s <= t && rng.next() < 0.4 ? 1 : 0);
    }
  }
  return { T, n: meta.length / 8, rowsMeta: meta, colmask };
}
