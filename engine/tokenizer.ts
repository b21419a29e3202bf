// Tokenizers: each model's own tokenizer.json when its folder (or Hugging Face snapshot) has one,
// else the GPT-NeoX-20B byte-level BPE tokenizer in data/ that every state-spaces Mamba checkpoint
// uses. No special tokens (BOS) are added: the study feeds the prompt's own tokens only.
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";
import { readBoundedJson } from "./checkpoint/file.ts";

export const DEFAULT_TOKENIZER_PATH = new URL("../data/gpt-neox-20b-tokenizer.json", import.meta.url);
import { TOKENIZER_FILE } from "./checkpoint/layout.ts";
export { TOKENIZER_FILE };

/** The largest tokenizer.json read (GPT-NeoX's is 2 MB; large-vocabulary ones reach ~20 MB). */
const MAX_TOKENIZER_BYTES = 64 << 20;

/** A tokenizer file that cannot be used: one line naming the file and the cause. */
export class TokenizerError extends Error {
  override name = "TokenizerError";
}

export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: number[]): string;
  /** Each token decoded on its own (the subject-span rule of Geva et al. works on these). */
  decodeEach(ids: number[]): string[];
  /** How many ids the tokenizer has (its largest id + 1, added tokens included): the model's real vocabulary */
  readonly vocabSize: number;
}

/**
 * The tokenizer a model is run with: `explicit` when given (--tokenizer, the config's `tokenizer`),
 * else the tokenizer.json beside the model's config.json (its folder, its Hugging Face snapshot),
 * else the GPT-NeoX-20B file in data/. `source` says which, for logs and manifests.
 */
export async function tokenizerPathFor(modelDir: string | undefined, explicit?: string): Promise<{ path: string; source: "given" | "model" | "default" }> {
  if (explicit !== undefined) return { path: explicit, source: "given" };
  if (modelDir !== undefined) {
    const own = `${modelDir}/${TOKENIZER_FILE}`;
    try {
      if ((await Deno.stat(own)).isFile) return { path: own, source: "model" };
    } catch {
      // none beside the model
    }
  }
  return { path: fileURLToPath(DEFAULT_TOKENIZER_PATH), source: "default" };
}

export async function loadTokenizer(path: string | URL = DEFAULT_TOKENIZER_PATH): Promise<TextTokenizer> {
  const file = path instanceof URL ? fileURLToPath(path) : path;
  const fail = (message: string) => new TokenizerError(`tokenizer ${message}`);
  const json = await readBoundedJson(file, MAX_TOKENIZER_BYTES, "tokenizer.json", fail);
  let tok: Tokenizer;
  try {
    // deno-lint-ignore no-explicit-any
    tok = new Tokenizer(json as any, {});
    tok.encode("a", { add_special_tokens: false }); // a structurally wrong file fails here, not mid-run
  } catch (e) {
    const cause = (e as Error)?.message?.split("\n")[0] ?? String(e);
    throw new TokenizerError(`tokenizer ${file} is not a usable tokenizer.json (${cause}); pass the model's tokenizer.json`);
  }
  let maxId = -1;
  for (const id of tok.get_vocab(true).values()) maxId = Math.max(maxId, id);
  return {
    vocabSize: maxId + 1,
    encode: (s) => tok.encode(s, { add_special_tokens: false }).ids,
    decode: (ids) => tok.decode(ids, { skip_special_tokens: false }),
    decodeEach: (ids) => ids.map((id) => tok.decode([id], { skip_special_tokens: false })),
  };
}
