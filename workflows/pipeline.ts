// deno task pipeline [--config FILE] [--model M] [--only STAGE]... [--from STAGE] [--force] [--dry-run] [--out DIR] ...
// Runs the study's numbered workflows with cached outputs: see README.md, "The study pipeline".
import { cli } from "./lib/cli.ts";
import { runMain } from "./lib/errors.ts";
import { loadStages } from "./registry.ts";

if (import.meta.main) await runMain(async () => cli(Deno.args, await loadStages(), "pipeline"));
