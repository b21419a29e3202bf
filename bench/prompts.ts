// The CounterFact prompts the benches run: the first rows whose subject is found in the prompt (the
// study's prompt lengths), tokenized as the stages do. The tokenizer and the parquet reader are
// imported when called only, so that a bench given its prompts as JSON needs neither (a GPU machine
// without the npm packages: bench/counterfact_prompts.json holds the first 16).
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const REPO = join(dirname(fileURLToPath(import.meta.url)), "..");

/** A prompt: its dataset row, token ids, the subject's positions, the true token (first token of target_true). */
export interface BenchPrompt {
  row: number;
  ids: number[];
  subject: number[];
  trueId: number;
}

/** The first n CounterFact rows whose subject is found in the prompt (the study's prompt lengths). */
export async function counterfactPrompts(n: number): Promise<BenchPrompt[]> {
  const { readParquet } = await import("../workflows/lib/parquet.ts");
  const { loadTokenizer } = await import("../engine/tokenizer.ts");
  const { subjectTokens } = await import("../workflows/lib/subject.ts");
  const t = await readParquet(join(REPO, "data/counterfact-tracing.parquet"), { rowEnd: 4 * n + 8, columns: ["prompt", "subject", "target_true"] });
  const tok = await loadTokenizer();
  const out: BenchPrompt[] = [];
  for (const [row, r] of t.rows.entries()) {
    const ids = tok.encode(String(r.prompt));
    const subject = subjectTokens(tok.decodeEach(ids), String(r.subject));
    if (subject) out.push({ row, ids, subject, trueId: tok.encode(String(r.target_true))[0] });
    if (out.length === n) break;
  }
  return out;
}

