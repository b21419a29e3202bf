// Exact conversions between float32, IEEE half (F16) and bfloat16 (BF16), all on raw bits.
// F16 -> F32 and BF16 -> F32 are exact; F32 -> F16 rounds to nearest, ties to even, like numpy/torch.

import type { DType } from "./types.ts";

let halfToFloatTable: Float32Array | undefined;

/** All 65536 half values as float32 (256 KB, built once): a lookup beats bit twiddling per element. */
function halfTable(): Float32Array {
  if (halfToFloatTable) return halfToFloatTable;
  const bits = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) bits[h] = halfBitsToFloatBits(h);
  halfToFloatTable = new Float32Array(bits.buffer);
  return halfToFloatTable;
}

/** float32 bit pattern of a half bit pattern (exact; NaN payloads kept). */
export function halfBitsToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (sign | 0x7f800000 | (mant << 13)) >>> 0;
  if (exp !== 0) return (sign | ((exp - 15 + 127) << 23) | (mant << 13)) >>> 0;
  if (mant === 0) return sign >>> 0;
  // Subnormal half: normalise the mantissa into a float32 normal.
  let e = -14;
  let m = mant;
  while ((m & 0x400) === 0) {
    m <<= 1;
    e--;
  }
  return (sign | ((e + 127) << 23) | ((m & 0x3ff) << 13)) >>> 0;
}

/** Half bit pattern nearest to a float32 bit pattern (ties to even; overflow to inf; NaN stays NaN). */
export function floatBitsToHalfBits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant !== 0 ? 0x200 | (mant >>> 13) : 0);
  const e = exp - 127 + 15; // biased half exponent
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    // Result is a half subnormal (or zero): value = mant24 * 2^(e-25), half unit is 2^-24.
    if (e < -10) return sign; // below half the smallest subnormal: rounds to zero
    mant |= 0x800000;
    const shift = 14 - e;
    const dropped = mant & ((1 << shift) - 1);
    const halfway = 1 << (shift - 1);
    let r = mant >>> shift;
    if (dropped > halfway || (dropped === halfway && (r & 1) === 1)) r++;
    return sign | r; // a carry into 0x400 is exactly the smallest normal
  }
  let r = (e << 10) | (mant >>> 13);
  const dropped = mant & 0x1fff;
  if (dropped > 0x1000 || (dropped === 0x1000 && (r & 1) === 1)) r++; // a carry may reach inf: correct
  return sign | r;
}

export function halfToFloat32(src: Uint16Array): Float32Array {
  const table = halfTable();
  const out = new Float32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return out;
}

export function bfloat16ToFloat32(src: Uint16Array): Float32Array {
  const out = new Uint32Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = src[i] << 16;
  return new Float32Array(out.buffer);
}

export function float32ToHalf(src: Float32Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < bits.length; i++) out[i] = floatBitsToHalfBits(bits[i]);
  return out;
}

/** bfloat16 widened to float32 bits is exact, so one rounding to half is the only rounding. */
export function bfloat16ToHalf(src: Uint16Array): Uint16Array {
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) out[i] = floatBitsToHalfBits(src[i] << 16);
  return out;
}

/** Raw little-endian bytes of `dtype` (fresh buffer, byteOffset 0) as float32. */
export function bytesToFloat32(bytes: Uint8Array, dtype: DType): Float32Array {
  if (dtype === "F32") return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
  const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return dtype === "F16" ? halfToFloat32(halves) : bfloat16ToFloat32(halves);
}

/** Raw little-endian bytes of `dtype` (fresh buffer, byteOffset 0) as half bits. */
export function bytesToHalf(bytes: Uint8Array, dtype: DType): Uint16Array {
  if (dtype === "F32") return float32ToHalf(new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4));
  const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 2);
  return dtype === "F16" ? halves : bfloat16ToHalf(halves);
}

/**
 * Raw little-endian bytes of `dtype` as float32, written into `out` (at least as long as the values;
 * what is written comes back as a subarray): the streamed loader's pieces reuse one buffer.
 */
export function bytesToFloat32Into(bytes: Uint8Array, dtype: DType, out: Float32Array): Float32Array {
  const n = bytes.byteLength / (dtype === "F32" ? 4 : 2);
  const dst = out.subarray(0, n);
  if (dtype === "F32") {
    new Uint8Array(dst.buffer, dst.byteOffset, n * 4).set(bytes);
    return dst;
  }
  const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
  if (dtype === "F16") {
    const table = halfTable();
    for (let i = 0; i < n; i++) dst[i] = table[halves[i]];
  } else {
    const bits = new Uint32Array(dst.buffer, dst.byteOffset, n);
    for (let i = 0; i < n; i++) bits[i] = halves[i] << 16;
  }
  return dst;
}

/** Raw little-endian bytes of `dtype` as half bits (rounded to nearest even), written into `out` as bytesToFloat32Into. */
export function bytesToHalfInto(bytes: Uint8Array, dtype: DType, out: Uint16Array): Uint16Array {
  const n = bytes.byteLength / (dtype === "F32" ? 4 : 2);
  const dst = out.subarray(0, n);
  if (dtype === "F32") {
    const bits = new Uint32Array(bytes.buffer, bytes.byteOffset, n);
    for (let i = 0; i < n; i++) dst[i] = floatBitsToHalfBits(bits[i]);
  } else {
    const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, n);
    if (dtype === "F16") dst.set(halves);
    else for (let i = 0; i < n; i++) dst[i] = floatBitsToHalfBits(halves[i] << 16);
  }
  return dst;
}

/** float32 values as half bits (rounded to nearest even), written into `out`; returns the written subarray. */
export function float32ToHalfInto(src: Float32Array, out: Uint16Array): Uint16Array {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  const dst = out.subarray(0, src.length);
  for (let i = 0; i < bits.length; i++) dst[i] = floatBitsToHalfBits(bits[i]);
  return dst;
}

/** Non-finite values (NaN, ±Inf) in raw little-endian bytes of `dtype`: how many, and the first's index. */
export function countNonFinite(bytes: Uint8Array, dtype: DType): { count: number; first: number } {
  let count = 0;
  let first = -1;
  // All exponent bits set means Inf or NaN, in each of the three formats.
  if (dtype === "F32") {
    const bits = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
    for (let i = 0; i < bits.length; i++) {
      if ((bits[i] & 0x7f800000) === 0x7f800000) {
        if (count++ === 0) first = i;
      }
    }
  } else {
    const mask = dtype === "F16" ? 0x7c00 : 0x7f80;
    const halves = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 1);
    for (let i = 0; i < halves.length; i++) {
      if ((halves[i] & mask) === mask) {
        if (count++ === 0) first = i;
      }
    }
  }
  return { count, first };
}
