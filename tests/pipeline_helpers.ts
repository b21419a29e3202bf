// Shared by the pipeline tests: run `workflows/pipeline.ts` as a child process on the fixture model.
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { childEnv, runDeno } from "./helpers.ts";
import { hashFile } from "../workflows/lib/hash.ts";

export const FIXTURE = "tests/fixtures/mamba2-tiny";
/** The stages these tests cover (later stages have tests of their own). */
export const ONLY_01_02 = ["--only", "01_construct", "--only", "02_compare"];

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export async function pipeline(args: string[]): Promise<RunResult> {
  const r = await runDeno(["run", "-A", "workflows/pipeline.ts", ...args]);
  if (Deno.env.get("PIPELINE_TEST_VERBOSE")) console.log(r.stdout, r.stderr);
  return r;
}

export async function stage(args: string[]): Promise<RunResult> {
  return await runDeno(["run", "-A", "workflows/stage.ts", ...args]);
}

/** Every file under dir (relative path → sha256 and mtime), to show that nothing changed. */
export async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const walk = async (d: string, rel: string) => {
    const entries: Deno.DirEntry[] = [];
    for await (const e of Deno.readDir(d)) entries.push(e);
    entries.sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      const p = join(d, e.name), r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory) await walk(p, r);
      else out[r] = `${await hashFile(p)} ${(await Deno.stat(p)).mtime?.getTime()}`;
    }
  };
  await walk(dir, "");
  return out;
}

export function describe(r: RunResult): string {
  return `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
}

/**
 * The run failed with exactly one `error:` line on stderr that matches `mention`, and no stack trace.
 * With ignoreProgress, plain progress lines of stages that ran before the failing one are not counted.
 */
export function expectOneLineError(r: RunResult, mention: RegExp, opts: { ignoreProgress?: boolean } = {}) {
  assert(r.code !== 0, `expected a failure\n${describe(r)}`);
  let lines = r.stderr.trim().split("\n");
  if (opts.ignoreProgress) lines = lines.filter((l) => l.trim() !== "" && !/\(\d+\.\d%\) .* ETA /.test(l));
  assertEquals(lines.length, 1, `stderr should be one line\n${describe(r)}`);
  assert(lines[0].startsWith("error: "), describe(r));
  assert(mention.test(lines[0]), `expected ${mention}\n${describe(r)}`);
  assert(!/\bat .*\.ts:\d+/.test(r.stderr), `stack trace in\n${describe(r)}`);
}

/**
 * Start `deno task pipeline` with `args` and send `signal` once the resume log `log` (a stage's
 * `.work/*.jsonl`) holds `minRecords` saved records; returns the exit code, stderr and the records saved.
 */
export async function interruptedRun(
  args: string[],
  log: string,
  minRecords: number,
  signal: Deno.Signal = "SIGKILL",
): Promise<{ code: number; stderr: string; saved: number }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "workflows/pipeline.ts", ...args],
    cwd: new URL("..", import.meta.url).pathname,
    env: childEnv(),
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const saved = async () => (await Deno.readTextFile(log).catch(() => "")).split("\n").length - 2; // header, trailing newline
  const deadline = Date.now() + 120_000;
  while (Date.now() < deadline && (await saved()) < minRecords) await new Promise((r) => setTimeout(r, 5));
  child.kill(signal);
  const status = await child.status;
  const stderr = new TextDecoder().decode(await new Response(child.stderr).arrayBuffer());
  return { code: status.code, stderr, saved: await saved() };
}
