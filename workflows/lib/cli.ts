// Command line of `deno task pipeline` and `deno task stage`.

import { parseArgs } from "node:util";
import { UsageError } from "./errors.ts";
import { type PipelineFlags, runPipeline } from "./pipeline.ts";
import type { ParamSpec, StageDef } from "./stage.ts";

const COMMON = `  --config FILE        study configuration (default: study.config.json)
  --model M            checkpoint folder or Hugging Face id (default from the config)
  --models A,B         a study of several models (comma-separated; default the config's "models")
  --dtype f32|f16      weights on the GPU (default from the config, else f32)
  --dataset FILE       CounterFact parquet (default from the config)
  --tokenizer FILE     tokenizer.json (default from the config, else each model's own, else GPT-NeoX-20B's)
  --rows SPEC          dataset rows, e.g. 0-99,4342
  --limit N            the first N of the selected rows
  --set STAGE.P=V      override one stage parameter (repeatable), e.g. --set 01_construct.batchSize=8
  --heatmap-prompts P  04_heatmap's prompts: study (default), all, rows like 4342,19230, or texts separated by |
                       (the same as --set 04_heatmap.prompts=P)
  --force              rerun the selected stages even when up to date
  --verify             hash the model files in full for the cache key (slow) instead of trusting their
                       path, size and modification time
  --dry-run            say what would run and why, run nothing
  --out DIR            run folder (default: outputs/<model>[_rows-SPEC]); with several models the study
                       folder, the models' run folders inside it
  --shard I/N          compute shard I of N (0 <= I < N) of the stages 01, 03, 04 whose inputs are ready,
                       of every model, into <stage>/shards/; no outputs (one process, one GPU per shard)
  --merge              merge complete shard sets into the stages' outputs (the same bytes as one process),
                       run the stages that are not sharded (02, the study's 05 and 06), list missing
                       shards with their commands
  --list               list the stages with their inputs and parameters`;

export const PIPELINE_HELP = `usage: deno task pipeline [options]
Runs the study's stages (workflows/NN_name.ts) in order; a stage whose inputs, parameters and code
are unchanged since its last run is skipped.
  --only STAGE         run only this stage (repeatable); its inputs must be up to date
  --from STAGE         rerun STAGE and every later stage; earlier ones must be up to date
${COMMON}`;

export const STAGE_HELP = `usage: deno task stage NN_name [options]
Runs one stage (like deno task pipeline --only NN_name); the stages it reads must be up to date.
${COMMON}`;

function describeParam(name: string, s: ParamSpec): string {
  return `    ${name} = ${JSON.stringify(s.default)}  (${s.type}${s.choices ? `: ${s.choices.join("|")}` : ""}) ${s.doc}`;
}

export function listStages(stages: StageDef[]): string {
  const out: string[] = [];
  for (const s of stages) {
    const ins = [
      s.inputs.dataset ? "dataset" : "",
      s.inputs.tokenizer ? "tokenizer" : "",
      s.inputs.model ? "model" : "",
      ...(s.inputs.stages ?? []),
    ].filter((x) => x).join(", ");
    const outs = typeof s.outputs === "function" ? "(depends on parameters)" : s.outputs.join(", ");
    out.push(`${s.name}  ${s.title}`);
    out.push(`  reads: ${ins || "nothing"}`);
    out.push(`  writes: ${outs}`);
    const ps = Object.entries(s.params as Record<string, ParamSpec>);
    if (ps.length) out.push("  parameters:", ...ps.map(([k, v]) => describeParam(k, v)));
  }
  return out.join("\n");
}

export async function cli(args: string[], stages: StageDef[], mode: "pipeline" | "stage"): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: mode === "stage",
      strict: true,
      options: {
        config: { type: "string" },
        model: { type: "string" },
        models: { type: "string" },
        dtype: { type: "string" },
        dataset: { type: "string" },
        tokenizer: { type: "string" },
        rows: { type: "string" },
        limit: { type: "string" },
        set: { type: "string", multiple: true },
        "heatmap-prompts": { type: "string" },
        only: { type: "string", multiple: true },
        from: { type: "string" },
        force: { type: "boolean" },
        verify: { type: "boolean" },
        "dry-run": { type: "boolean" },
        out: { type: "string" },
        shard: { type: "string" },
        merge: { type: "boolean" },
        list: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new UsageError(`${(e as Error).message.split("\n")[0]}; see --help`);
  }
  const v = parsed.values;
  if (v.help) {
    console.log(mode === "pipeline" ? PIPELINE_HELP : STAGE_HELP);
    return 0;
  }
  if (v.list) {
    console.log(listStages(stages));
    return 0;
  }
  let only = v.only;
  if (mode === "stage") {
    if (v.only || v.from) throw new UsageError("deno task stage takes the stage name itself, not --only/--from");
    if (parsed.positionals.length !== 1) {
      throw new UsageError(`give exactly one stage name, e.g. deno task stage ${stages[0]?.name ?? "01_construct"}; stages are ${stages.map((s) => s.name).join(", ")}`);
    }
    only = [parsed.positionals[0]];
  }
  const flags: PipelineFlags = {
    config: v.config,
    model: v.model,
    models: v.models,
    dtype: v.dtype,
    dataset: v.dataset,
    tokenizer: v.tokenizer,
    rows: v.rows,
    limit: v.limit,
    set: v["heatmap-prompts"] === undefined ? v.set : [...(v.set ?? []), `04_heatmap.prompts=${v["heatmap-prompts"]}`],
    only,
    from: v.from,
    force: v.force,
    verify: v.verify,
    dryRun: v["dry-run"],
    out: v.out,
    shard: v.shard,
    merge: v.merge,
    command: { name: mode === "pipeline" ? "deno task pipeline" : "deno task stage", args },
  };
  return await runPipeline(stages, flags);
}
