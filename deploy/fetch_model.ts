// deno run -A deploy/fetch_model.ts [PIPELINE-ARGS...]: make sure the run's model is in the Hugging
// Face cache (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub), downloading it if
// not, before the jobs of a sharded run start: they all read the same shared cache, and parallel
// downloads of one file would step on each other. It reads --config and --model as the pipeline
// does (study.config.json by default) and ignores the other pipeline arguments.

import { parseArgs } from "node:util";
import { loadConfig } from "../workflows/lib/config.ts";
import { openModel } from "../workflows/lib/engine.ts";
import { runMain } from "../workflows/lib/errors.ts";
import { loadStages } from "../workflows/registry.ts";

if (import.meta.main) {
  await runMain(async () => {
    const { values } = parseArgs({ args: Deno.args, strict: false, options: { config: { type: "string" }, model: { type: "string" } } });
    const model = typeof values.model === "string" ? values.model : undefined;
    const config = typeof values.config === "string" ? values.config : undefined;
    const cfg = await loadConfig(await loadStages(), config, { model });
    const ckpt = await openModel(cfg.model, { offline: false });
    console.log(`model ${cfg.model}: ready (${ckpt.identity})`);
    ckpt.close();
  });
}
