// 01_construct's forward passes, apart from the stage (which reads and writes tables): what one
// batch of prompts gives in each mode. The benches time exactly this, and import it without the
// stage's table libraries (a GPU machine without the npm packages runs them).
import type { LanguageModel } from "../../engine/arch.ts";

export const MODES = ["scan", "attention"] as const;
export type Mode = typeof MODES[number];

/** One prompt to run: its dataset row, token ids and the true token. */
export interface PromptItem {
  row: number;
  ids: number[];
  trueId: number;
}

/** What a forward pass gives for one prompt (what the resume log keeps). */
export interface RowResult {
  row: number;
  true_prob: number;
  max_prob: number;
  pred_id: number;
}

/** One batch through the model: the statistics of each prompt's last position. */
export async function runBatch(model: LanguageModel, batch: PromptItem[], mode: Mode): Promise<RowResult[]> {
  // the softmax statistics are computed on the GPU: 4 numbers per prompt come back, not the vocabulary
  const stats = await model.forwardStats(batch.map((b) => b.ids), batch.map((b) => b.trueId), { mode });
  return batch.map((b, k) => ({ row: b.row, true_prob: stats[k].trueProb, max_prob: stats[k].maxProb, pred_id: stats[k].predId }));
}
