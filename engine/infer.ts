// deno task infer --model M (--prompt "text" | --ids 1,2,3) [--mode scan|attention] [--block SPEC]... [--heads SEL] [--conv] [--target TOKEN] [--top K] [--json] [--dtype f32|f16]
// Runs one prompt through a checkpoint of any supported family and prints the next-token distribution.
import { parseArgs } from "node:util";
import { openCheckpoint } from "./checkpoint/mod.ts";
import { createGpu } from "./gpu.ts";
import { loadModel, realVocabSize } from "./families.ts";
import { InputError, type Mode, parseUnitSelector } from "./arch.ts";
import { loadTokenizer, tokenizerPathFor } from "./tokenizer.ts";
import { checkFiniteLogits, logSumExp, topK } from "./probs.ts";
import { type BlockSpec, parseBlockSpec, resolveBlockSpecs } from "./blockspec.ts";
import { runMain, UsageError } from "./cli.ts";

const HELP = `usage: deno task infer --model M (--prompt "text" | --ids 1,2,3) [--mode scan|attention] [--block L:R>C]... [--heads SEL] [--conv] [--target TOKEN] [--top K] [--json] [--dtype f32|f16]
  --model   a local checkpoint directory (config.json + model.safetensors or pytorch_model.bin) or a Hugging Face id
  --mode    scan or attention (default: the model's first: scan for Mamba, attention for a Transformer)
  --dtype   weights on the GPU: f32 (default) or f16 (half the memory and traffic; activations stay f32)
  --block   attention mode knockout: layers L (3, 3-5, 1,4,7), row R (index or last), columns C (same syntax, last allowed)
  --heads   with --block: the heads (channels for Mamba-1) the knockouts act on, per layer: all (default),
            fast:a/b, slow:a/b, not-fast:a/b, not-slow:a/b (ranked by decay), only:0-3+7
  --conv    with --block: also remove the conv1d taps s -> t of the blocked edges (0 < t - s < d_conv)
  --target  also report p of this token: a text (its first token, as the study takes target_true, e.g. " Paris")
            or #ID for a token id (e.g. #5112)
  --json    one JSON object: model, mode, dtype, blocks, heads, conv, ids, tokens, last_logits, top, target
exit codes: 0 done, 2 a malformed command line (flags, --block, --ids, --target), 1 any other error`;

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      model: { type: "string" },
      prompt: { type: "string" },
      ids: { type: "string" },
      mode: { type: "string" }, // default: the model's first mode (scan for Mamba, attention for a Transformer)
      dtype: { type: "string", default: "f32" },
      block: { type: "string", multiple: true, default: [] },
      heads: { type: "string" },
      conv: { type: "boolean", default: false },
      top: { type: "string", default: "10" },
      target: { type: "string" },
      json: { type: "boolean", default: false },
      offline: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(HELP);
    return;
  }
  if (!values.model) throw new UsageError("--model is required (a checkpoint directory or a Hugging Face id)");
  if ((values.prompt === undefined) === (values.ids === undefined)) throw new UsageError("give exactly one of --prompt or --ids");
  const dtype = values.dtype;
  if (dtype !== "f32" && dtype !== "f16") throw new UsageError(`--dtype ${dtype}: use f32 or f16`);
  if (values.mode !== undefined && values.mode !== "scan" && values.mode !== "attention") throw new UsageError(`--mode ${values.mode}: use scan or attention`);
  const chosenMode = values.mode as Mode | undefined;
  const k = Number(values.top);
  if (!Number.isInteger(k) || k < 1) throw new UsageError(`--top ${values.top}: give a positive integer`);
  const specs: BlockSpec[] = values.block!.map(parseBlockSpec); // BlockSpecError: a usage error (engine/cli.ts)
  if (specs.length && chosenMode !== "attention") throw new UsageError("--block needs --mode attention (scan mode has no attention matrix to edit)");
  if ((values.heads !== undefined || values.conv) && !specs.length) throw new UsageError("--heads and --conv act on the edges of --block: give at least one --block");
  let units;
  try {
    units = values.heads === undefined ? undefined : parseUnitSelector(values.heads);
  } catch (e) {
    if (e instanceof InputError) throw new UsageError(`--heads: ${e.message}`);
    throw e;
  }

  const ckpt = await openCheckpoint(values.model, { offline: values.offline });
  // the model's own tokenizer.json when its folder has one, else GPT-NeoX-20B's (engine/tokenizer.ts)
  const tokenizer = await loadTokenizer((await tokenizerPathFor(ckpt.dir)).path);
  let ids: number[];
  if (values.ids !== undefined) {
    ids = values.ids.split(",").map((s) => {
      if (!/^\s*\d+\s*$/.test(s)) throw new UsageError(`--ids: "${s}" is not a token id; give comma-separated integers`);
      return Number(s);
    });
  } else {
    ids = tokenizer.encode(values.prompt!);
    if (ids.length === 0) throw new UsageError("--prompt is empty: give some text");
  }
  let target: number | undefined;
  if (values.target !== undefined) {
    const m = /^#(\d+)$/.exec(values.target);
    target = m ? Number(m[1]) : tokenizer.encode(values.target)[0];
    if (target === undefined) throw new UsageError(`--target ${JSON.stringify(values.target)} encodes to no token; give a text such as " Paris" or #ID`);
  }

  // ids the user gave are a usage error before anything is loaded, not a failure of the model
  const vocab = realVocabSize(ckpt.config, tokenizer.vocabSize); // the rule loadModel applies
  for (const [what, id] of [...ids.map((id) => ["--ids", id] as const), ...(target === undefined ? [] : [["--target", target] as const])]) {
    if (id >= vocab) throw new UsageError(`${what}: token id ${id} is out of range (ids are integers in 0..${vocab - 1})`);
  }
  const knockout = specs.length ? resolveBlockSpecs(specs, ids.length, ckpt.config.nLayer, { units, conv: values.conv }) : undefined;
  const gpu = await createGpu();
  const model = await loadModel(gpu, ckpt, { dtype, vocabSize: tokenizer.vocabSize });
  ckpt.close();
  const info = model.info;
  const mode: Mode = chosenMode ?? info.modes[0];
  const opts = { mode, knockouts: knockout ? [knockout] : undefined } as const;
  try {
    model.checkInput([ids], opts); // what the command line asked for (e.g. --heads only:9 on 8 heads)
  } catch (e) {
    if (e instanceof InputError) throw new UsageError(e.message);
    throw e;
  }
  const [logits] = await model.forward([ids], opts);
  // NaN or Inf logits (overflowing activations) would print as NaN%: stop with one line instead
  checkFiniteLogits(logits, info.vocabSize, 0, "the last position's logits");
  const top = topK(logits, info.vocabSize, k).map((t) => ({ ...t, token: tokenizer.decode([t.id]) }));
  const tokens = tokenizer.decodeEach(ids);
  const tgt = target === undefined ? undefined : targetStats(logits, info.vocabSize, target, tokenizer.decode([target]));

  if (values.json) {
    console.log(JSON.stringify({
      model: values.model,
      family: info.family,
      mode,
      dtype,
      blocks: specs.map((s) => s.text),
      heads: values.heads ?? (specs.length ? "all" : null),
      conv: values.conv,
      ids,
      tokens,
      last_logits: Array.from(logits),
      top: top.map((t) => ({ id: t.id, token: t.token, prob: t.prob })),
      ...(tgt ? { target: { text: values.target, ...tgt } } : {}),
    }));
  } else {
    const how = [values.heads === undefined ? "" : `${info.unitName}s ${values.heads}`, values.conv ? "with the conv taps" : ""].filter((x) => x);
    console.log(`model ${values.model} (${info.family}, ${info.nLayer} layers, d_model ${info.dModel}, ${dtype} weights) on ${gpu.adapterInfo}, ${mode} mode` +
      (knockout ? `, blocked: ${specs.map((s) => s.text).join(" ")}${how.length ? ` (${how.join(", ")})` : ""}` : ""));
    console.log(`tokens (${ids.length}): ${tokens.map((t, i) => `${i}:${JSON.stringify(t)}`).join(" ")}`);
    console.log(`top ${k} next tokens:`);
    for (const t of top) console.log(`  ${(t.prob * 100).toFixed(2).padStart(6)}%  ${String(t.id).padStart(6)}  ${JSON.stringify(t.token)}`);
    if (tgt) {
      console.log(`target ${JSON.stringify(values.target)}: token ${tgt.id} ${JSON.stringify(tgt.token)}, p = ${fmtProb(tgt.prob)}, rank ${tgt.rank} of ${info.vocabSize}`);
    }
  }
  model.destroy();
}

/** p of one token (softmax over the real vocabulary) and its rank (1 = the top token; ties share the best rank). */
export function targetStats(logits: Float32Array, vocabSize: number, id: number, token: string) {
  const lse = logSumExp(logits, vocabSize);
  let above = 0;
  for (let i = 0; i < vocabSize; i++) if (logits[i] > logits[id]) above++;
  return { id, token, prob: Math.exp(logits[id] - lse), rank: above + 1 };
}

function fmtProb(p: number): string {
  return p >= 1e-4 ? `${(p * 100).toFixed(2)}%` : p.toExponential(3);
}

if (import.meta.main) await runMain(main);
