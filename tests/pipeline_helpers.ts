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

/**
 * One case of a fixture's golden flows (golden-flows.json, golden-experiments.json): a flow cut in
 * one window of layers, for one head (unit) selector and conv setting. A case that blocks nothing
 * (edges 0) has no true_prob or hit.
 */
export interface GoldenFlowCase {
  flow: string;
  heads: string;
  conv: boolean;
  window_start: number;
  edges: number;
  true_prob?: number;
  hit?: boolean;
  relative_change_pct?: number;
}
export interface GoldenFlowPrompt<C extends GoldenFlowCase = GoldenFlowCase> {
  row: number;
  ids: number[];
  true_id: number;
  subject_tokens: number[];
  base: { true_prob: number; hit: boolean };
  cases: C[];
}
export interface GoldenFlows<C extends GoldenFlowCase = GoldenFlowCase> {
  window_size: number;
  windows: number[][];
  flows: string[];
  selectors: string[];
  /** (the SSM fixtures only) */
  decay_per_layer?: number[][];
  prompts: GoldenFlowPrompt<C>[];
}

/**
 * Every golden flow case against 03_info_flow's rows (info_flow.parquet): a case that blocks nothing
 * has no row; any other has a row (same row, flow, selector, conv and window start), and every such
 * row has the golden's number of blocked edges, p(true) within 2e-4 relative and the same hit.
 * `unit` names the selectors in messages ("heads", or "channels" for Mamba-1). Returns the cases
 * checked, the cases without edges (and rows), and the worst relative error of p(true).
 */
export function assertGoldenFlowCases(
  prompts: GoldenFlowPrompt[],
  rows: Record<string, unknown>[],
  unit = "heads",
): { checked: number; absent: number; worst: number } {
  const key = (row: unknown, flow: unknown, heads: unknown, conv: unknown, start: unknown) => `${row}|${flow}|${heads}|${conv}|${start}`;
  const byKey = new Map<string, Record<string, unknown>[]>();
  for (const x of rows) {
    const k = key(x.row, x.flow, x.heads, x.conv, x.window_start);
    const same = byKey.get(k);
    if (same) same.push(x);
    else byKey.set(k, [x]);
  }
  let checked = 0, absent = 0, worst = 0;
  for (const p of prompts) {
    for (const c of p.cases) {
      const where = `row ${p.row} ${c.flow} ${unit} ${c.heads} conv ${c.conv} window ${c.window_start}`;
      const found = byKey.get(key(p.row, c.flow, c.heads, c.conv, c.window_start)) ?? [];
      if (c.edges === 0) {
        assertEquals(found[0], undefined, `${where}: blocks nothing, so no row`);
        absent++;
        continue;
      }
      assert(found.length > 0, `${where}: no row`);
      for (const x of found) {
        assertEquals(x.edges, c.edges, `edges at ${where}`);
        const rel = Math.abs((x.true_prob as number) - c.true_prob!) / c.true_prob!;
        worst = Math.max(worst, rel);
        assert(rel <= 2e-4, `p(true) at ${where}: ${x.true_prob} vs ${c.true_prob}`);
        assertEquals(x.hit, c.hit, `hit at ${where}`);
      }
      checked++;
    }
  }
  return { checked, absent, worst };
}
