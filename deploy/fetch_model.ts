// deno run -A deploy/fetch_model.ts [PIPELINE-ARGS...]: make sure the run's models are in the Hugging
// Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), downloading it if
// not, before the jobs of a sharded run start: they all read the same shared cache, and parallel
// downloads of one file would step on each other. It reads --config, --model and --models (a study
// of several models: every one is fetched) as the pipeline does (study.config.json by default) and
// ignores the other pipeline arguments.

import { parseArgs } from "node:util";
import { loadConfig } from "../workflows/lib/config.ts";
import { openModel } from "../workflows/lib/engine.ts";
import { runMain } from "../workflows/lib/errors.ts";
import { loadStages } from "../workflows/registry.ts";

if (import.meta.main) {
  await runMain(async () => {
    const opts = { config: { type: "string" }, model: { type: "string" }, models: { type: "string" } } as const;
    const { values } = parseArgs({ args: Deno.args, strict: false, options: opts });
    const str = (v: unknown) => (typeof v === "string" ? v : undefined);
    const cfg = await loadConfig(await loadStages(), str(values.config), { model: str(values.model), models: str(values.models) });
    for (const model of cfg.models) {
      const ckpt = await openModel(model, { offline: false });
      console.log(`model ${model}: ready (${ckpt.identity})`);
      ckpt.close();
    }
  });
}
