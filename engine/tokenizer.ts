// The GPT-NeoX-20B byte-level BPE tokenizer used by every state-spaces Mamba-2 checkpoint.
// No BOS is added: the study feeds the prompt's own tokens only.
import { Tokenizer } from "@huggingface/tokenizers";

export const DEFAULT_TOKENIZER_PATH = new URL("../data/gpt-neox-20b-tokenizer.json", import.meta.url);

export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: number[]): string;
  /** Each token decoded on its own (the subject-span rule of Geva et al. works on these). */
  decodeEach(ids: number[]): string[];
}

export async function loadTokenizer(path: string | URL = DEFAULT_TOKENIZER_PATH): Promise<TextTokenizer> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    throw new Error(`cannot read the tokenizer ${path}: ${(e as Error).message}`);
  }
  const tok = new Tokenizer(JSON.parse(text), {});
  return {
    encode: (s) => tok.encode(s, { add_special_tokens: false }).ids,
    decode: (ids) => tok.decode(ids, { skip_special_tokens: false }),
    decodeEach: (ids) => ids.map((id) => tok.decode([id], { skip_special_tokens: false })),
  };
}
