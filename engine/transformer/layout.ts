// Host-side re-arrangements of checkpoint matrices into the engine's layout, on raw elements
// (f32 values or f16 bits alike, so f16 weights are never widened on the host):
// - a fused attention projection whose rows are [q heads | k heads | v heads], head_dim rows each;
// - (out, in) row-major matrices, as nn.Linear stores them (GPT-2's Conv1D stores (in, out)).

export type Elements = Float32Array | Uint16Array;

/** Rows of several (rows_i, cols) matrices stacked in order. */
export function concatRows<T extends Elements>(parts: T[]): T {
  const n = parts.reduce((s, p) => s + p.length, 0);
  const out = new (parts[0].constructor as { new (n: number): T })(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * GPT-NeoX's fused query_key_value has rows ordered per head, [q | k | v] of head_dim each
 * (row h·3·hd + j·hd + d, j = 0 q, 1 k, 2 v); reorder them to [all q heads | all k | all v]
 * (row j·H·hd + h·hd + d). `cols` = 1 reorders a bias.
 */
export function neoxQkvToBlocks<T extends Elements>(w: T, nHead: number, headDim: number, cols: number): T {
  const out = new (w.constructor as { new (n: number): T })(w.length);
  for (let h = 0; h < nHead; h++) {
    for (let j = 0; j < 3; j++) {
      for (let d = 0; d < headDim; d++) {
        const src = (h * 3 * headDim + j * headDim + d) * cols;
        const dst = (j * nHead * headDim + h * headDim + d) * cols;
        out.set(w.subarray(src, src + cols), dst);
      }
    }
  }
  return out;
}

/** The (cols, rows) transpose of a row-major (rows, cols) matrix. */
export function transpose<T extends Elements>(w: T, rows: number, cols: number): T {
  const out = new (w.constructor as { new (n: number): T })(w.length);
  for (let r = 0; r < rows; r++) {
    for (let c = 0; c < cols; c++) out[c * rows + r] = w[r * cols + c];
  }
  return out;
}
