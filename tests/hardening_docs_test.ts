// Issue 11's friction in the docs: the files the configuration and data/README.md point at exist,
// every `deno task X` in the README is a task, and the README says how `deno` becomes a command.
import { assert } from "./assert.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const exists = (p: string) => Deno.stat(ROOT + p).then(() => true, () => false);

Deno.test("study.config.json and data/README.md point only at files that exist, and ask for nothing already done", async () => {
  const cfg = JSON.parse(await Deno.readTextFile(ROOT + "study.config.json"));
  for (const f of String(cfg.$comment).match(/[\w./-]+\.(md|ts|json)\b/g) ?? []) assert(await exists(f), `study.config.json's comment names ${f}, which does not exist`);
  for (const k of ["dataset", "tokenizer"]) assert(await exists(cfg[k]), `study.config.json: ${k} ${cfg[k]} does not exist`);
  const data = await Deno.readTextFile(ROOT + "data/README.md");
  const files = [...data.matchAll(/^\| `([^`]+)` \|/gm)].map((m) => m[1]);
  assert(files.length >= 2, "data/README.md lists its files");
  for (const f of files) assert(await exists(`data/${f}`), `data/README.md lists ${f}, which is not in data/`);
  assert(!/\bcopy (both|them|the files)\b/i.test(data), "data/README.md asks to copy files that are already there");
});

Deno.test("README: every deno task is a task of deno.json, and it says how to get a deno command", async () => {
  const readme = await Deno.readTextFile(ROOT + "README.md");
  const tasks = Object.keys(JSON.parse(await Deno.readTextFile(ROOT + "deno.json")).tasks);
  for (const m of readme.matchAll(/deno task ([a-z]+)/g)) assert(tasks.includes(m[1]), `README runs deno task ${m[1]}, which deno.json does not have`);
  assert(readme.includes("alias deno='npx -y deno@2.9.6'"), "the README says how `deno` becomes a command");
  // the effective configuration is never written as config.json (a model folder's file)
  assert(readme.includes("run.config.json") && !/outputs\/<run>\/config\.json/.test(readme));
});
