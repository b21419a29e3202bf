// The real vocabulary of a Transformer checkpoint: the ids its tokenizer can produce, which may be
// fewer than the rows of its LM head (Pythia: 50277 ids, 50304 rows, padded for speed). Ids and the
// softmax range over the real ids only; the padding rows are not tokens.
//
// For now a load option (engine/families.ts LoadOptions.vocabSize, which the pipeline sets from its
// tokenizer) decides; without it, a tokenizer.json beside the weights, else every head row.
import { InputError } from "../arch.ts";
import { isFile } from "../checkpoint/layout.ts";
import { tokenizerVocabSize } from "../tokenizer.ts";

export const TOKENIZER_FILE = "tokenizer.json";

/** The real vocabulary: `given`, else the tokenizer.json beside the checkpoint, else the head's rows. */
export async function realVocabulary(dir: string, headRows: number, given?: number): Promise<number> {
  let v = given, from = "the tokenizer (LoadOptions.vocabSize)";
  if (v === undefined) {
    const tok = `${dir}/${TOKENIZER_FILE}`;
    if (await isFile(tok)) {
      v = await tokenizerVocabSize(tok);
      from = tok;
    }
  }
  v ??= headRows;
  if (!Number.isInteger(v) || v < 1 || v > headRows) {
    throw new InputError(`${from} has ${v} token ids but the model's LM head has ${headRows} rows; use the model's own tokenizer`);
  }
  return v;
}
