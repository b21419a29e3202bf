// Next-token statistics from one position's logits. Probabilities are a softmax over the
// real vocabulary only (ids < vocabSize): the padding rows of the embedding are not tokens.

export interface TokenStats {
  trueProb: number; // p(trueId)
  maxProb: number; // p(argmax)
  predId: number; // argmax over the real vocabulary
}

export function logSumExp(logits: ArrayLike<number>, vocabSize: number, offset = 0): number {
  let max = -Infinity;
  for (let i = 0; i < vocabSize; i++) max = Math.max(max, logits[offset + i]);
  let sum = 0;
  for (let i = 0; i < vocabSize; i++) sum += Math.exp(logits[offset + i] - max);
  return max + Math.log(sum);
}

export function argmax(logits: ArrayLike<number>, vocabSize: number, offset = 0): number {
  let best = 0;
  for (let i = 1; i < vocabSize; i++) if (logits[offset + i] > logits[offset + best]) best = i;
  return best;
}

export function tokenStats(logits: ArrayLike<number>, vocabSize: number, trueId: number, offset = 0): TokenStats {
  const lse = logSumExp(logits, vocabSize, offset);
  const predId = argmax(logits, vocabSize, offset);
  return {
    trueProb: Math.exp(logits[offset + trueId] - lse),
    maxProb: Math.exp(logits[offset + predId] - lse),
    predId,
  };
}

/** Top-k (id, probability) pairs, most probable first. */
export function topK(logits: ArrayLike<number>, vocabSize: number, k: number, offset = 0): { id: number; prob: number }[] {
  const lse = logSumExp(logits, vocabSize, offset);
  const ids = Array.from({ length: vocabSize }, (_, i) => i);
  ids.sort((a, b) => logits[offset + b] - logits[offset + a]);
  return ids.slice(0, k).map((id) => ({ id, prob: Math.exp(logits[offset + id] - lse) }));
}

/** Decode row_stats output (kernels/row_stats.wgsl): (rows, 4) = (max logit, logsumexp, argmax, target logit). */
export function statsFromRows(out: Float32Array, rows: number): TokenStats[] {
  checkFiniteStats(out, rows);
  return Array.from({ length: rows }, (_, i) => {
    const [max, lse, arg, target] = out.subarray(i * 4, i * 4 + 4);
    return { trueProb: Math.exp(target - lse), maxProb: Math.exp(max - lse), predId: arg };
  });
}

/**
 * Logits that are NaN or infinite: the weights, or the activations they produce, overflowed
 * (float32 ends at 3.4e38). Probabilities made from them would be NaN or 0, and would be saved.
 */
export class NumericError extends Error {
  override name = "NumericError";
}

const NON_FINITE_HINT = "the model's activations overflowed float32 (weights too large, or damaged); " +
  "check the checkpoint (--verify, or download it again), and if it runs in f16 (--dtype f16) try f32";

/** NumericError (one line) when a row of row_stats output has a non-finite max logit, logsumexp or target logit. */
export function checkFiniteStats(out: Float32Array, rows: number): void {
  for (let i = 0; i < rows; i++) {
    const [max, lse, , target] = out.subarray(i * 4, i * 4 + 4);
    if (!Number.isFinite(max) || !Number.isFinite(lse) || !Number.isFinite(target)) {
      throw new NumericError(
        `the model's logits are not finite (max logit ${max}, logsumexp ${lse}): ${NON_FINITE_HINT}`,
      );
    }
  }
}

/** NumericError (one line) when logits over the real vocabulary hold NaN or ±Inf. */
export function checkFiniteLogits(logits: ArrayLike<number>, vocabSize: number, offset = 0, what = "the logits"): void {
  let bad = 0, first = -1;
  for (let i = 0; i < vocabSize; i++) {
    if (!Number.isFinite(logits[offset + i])) {
      if (first < 0) first = i;
      bad++;
    }
  }
  if (bad) throw new NumericError(`${what} hold ${bad} non-finite values (NaN or Inf; the first at token ${first}): ${NON_FINITE_HINT}`);
}
