// deno task stage NN_name [options]: run one stage of the pipeline (see workflows/pipeline.ts).
import { cli } from "./lib/cli.ts";
import { runMain } from "./lib/errors.ts";
import { loadStages } from "./registry.ts";

if (import.meta.main) await runMain(async () => cli(Deno.args, await loadStages(), "stage"));
