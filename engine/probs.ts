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
  return Array.from({ length: rows }, (_, i) => {
    const [max, lse, arg, target] = out.subarray(i * 4, i * 4 + 4);
    return { trueProb: Math.exp(target - lse), maxProb: Math.exp(max - lse), predId: arg };
  });
}
