// The real vocabulary of a checkpoint: the ids its tokenizer can produce, which may be fewer than the
// rows of its LM head (Pythia: 50277 ids, 50304 rows, padded for speed). Ids and the softmax range
// over the real ids only; the padding rows are not tokens.
//
// For now a load option decides (engine/families.ts LoadOptions.vocabSize; the pipeline and `infer`
// set it from their tokenizer) and the Transformer families read it (engine/transformer/model.ts);
// without it, a tokenizer.json beside the weights, else every head row. Nothing here needs the
// tokenizer library: the engine's checkpoint code imports this file.
import { InputError } from "./arch.ts";
import { readBoundedJson } from "./checkpoint/file.ts";
import { isFile } from "./checkpoint/layout.ts";

export const TOKENIZER_FILE = "tokenizer.json";
/** The largest tokenizer.json read (engine/tokenizer.ts has the same bound). */
const MAX_TOKENIZER_BYTES = 64 << 20;

/** A tokenizer file without a vocabulary: one line naming the file. */
export class VocabularyError extends Error {
  override name = "VocabularyError";
}

/**
 * Ids a tokenizer.json can produce: 1 + the largest id of its model vocabulary (BPE/WordPiece/
 * WordLevel: a name → id map; Unigram: a list) and of its added tokens.
 */
export async function tokenizerVocabSize(path: string): Promise<number> {
  const t = await readBoundedJson(path, MAX_TOKENIZER_BYTES, "tokenizer.json", (m) => new VocabularyError(`tokenizer ${m}`)) as {
    model?: { vocab?: unknown };
    added_tokens?: unknown;
  } | null;
  const vocab = t?.model?.vocab;
  let maxId = -1;
  if (Array.isArray(vocab)) maxId = vocab.length - 1;
  else if (vocab && typeof vocab === "object") for (const id of Object.values(vocab)) if (typeof id === "number") maxId = Math.max(maxId, id);
  for (const a of Array.isArray(t?.added_tokens) ? t.added_tokens : []) if (typeof a?.id === "number") maxId = Math.max(maxId, a.id);
  if (maxId < 0) throw new VocabularyError(`tokenizer ${path} has no vocabulary (model.vocab); pass the model's tokenizer.json`);
  return maxId + 1;
}

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
