// The one place where stages are registered: every `workflows/NN_name.ts` file is a stage, its
// default export a `defineStage({...})`. Adding a stage means adding such a file, nothing else.

import { fileURLToPath } from "node:url";
import type { StageDef } from "./lib/stage.ts";

export const STAGE_FILE = /^(\d\d_[a-z0-9_]+)\.ts$/;

export async function loadStages(dir: URL = new URL("./", import.meta.url)): Promise<StageDef[]> {
  const files: string[] = [];
  for await (const e of Deno.readDir(fileURLToPath(dir))) {
    if (e.isFile && STAGE_FILE.test(e.name)) files.push(e.name);
  }
  files.sort();
  const stages: StageDef[] = [];
  for (const f of files) {
    const mod = await import(new URL(f, dir).href);
    const def = mod.default as StageDef | undefined;
    const name = STAGE_FILE.exec(f)![1];
    if (!def || typeof def.run !== "function") throw new Error(`workflows/${f} has no default export made with defineStage()`);
    if (def.name !== name) throw new Error(`workflows/${f} declares the stage name ${def.name}; it must be ${name}`);
    stages.push(def);
  }
  return stages;
}
