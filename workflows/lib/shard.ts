// Sharded runs (`--shard i/n`, `--merge`). A shardable stage (01, 03, 04) cuts its work into fixed
// groups of prompts (lib/groups.ts: a batch of 01, a fast-path call of 03/04); shard i of n computes
// the groups g with g mod n = i, each exactly as a one-process run computes it (same prompts in the
// same batch, hence the same numbers), and saves them with the stage's own resumable logs in
//   <stage>/shards/<cache key>/<i>-of-<n>/{*.jsonl, shard.json}
// (shard.json, written last, marks the shard complete and holds each log's hash). A merge fills the
// stage's work folder (.work/*.jsonl) from a complete set and runs the stage: it finds every group
// done and writes, from the same records, the bytes a one-process run writes. The cache key in the
// folder keeps shards of other parameters or inputs apart; each shard has its own lock.

import { join } from "node:path";
import { writeFileAtomic } from "./atomic.ts";
import { UserError } from "./errors.ts";
import { sha256 } from "./hash.ts";
import { lockHolder } from "./lock.ts";
import type { Plan } from "./plan.ts";

export interface ShardSpec {
  index: number;
  count: number;
}

/** More shards than this is a typo, not a cluster. */
export const MAX_SHARDS = 100_000;

/** `i/n` with 0 <= i < n. */
export function parseShard(text: string): ShardSpec {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  if (!m) throw new UserError(`--shard ${JSON.stringify(text)}: write it as I/N with 0 <= I < N, e.g. --shard 0/4`);
  const index = Number(m[1]), count = Number(m[2]);
  if (count < 1 || count > MAX_SHARDS) throw new UserError(`--shard ${text}: the number of shards must be in 1..${MAX_SHARDS}`);
  if (index >= count) throw new UserError(`--shard ${text}: the shard index must be below ${count} (shards are numbered 0..${count - 1})`);
  return { index, count };
}

export const shardLabel = (s: ShardSpec): string => `${s.index}/${s.count}`;

/** `<stage>/shards/<key>`: every shard of one cache key (16 hex digits name it; shard.json holds the whole key). */
export function shardsRoot(stageDir: string, key: string): string {
  return join(stageDir, "shards", key.slice(0, 16));
}

export function shardDir(stageDir: string, key: string, s: ShardSpec): string {
  return join(shardsRoot(stageDir, key), `${s.index}-of-${s.count}`);
}

/** The groups shard `s` computes: g mod n = i (groups come sorted by length, so the shards' loads are alike). All without a shard. */
export function shareOf<T>(groups: readonly T[], s?: ShardSpec): T[] {
  return s ? groups.filter((_, g) => g % s.count === s.index) : [...groups];
}

/** What a complete shard says about itself (shard.json). */
export interface ShardMarker {
  stage: string;
  cacheKey: string;
  shard: string;
  index: number;
  count: number;
  /** the stage's work logs in the shard's folder, each with its records, size and hash */
  logs: Record<string, { records: number; bytes: number; sha256: string }>;
  host: string;
  adapter: string;
  /** the variables that choose the GPU or describe the job, as the shard saw them */
  env: Record<string, string>;
  engineSha256: string;
  finishedAt: string;
  wallTimeS: number;
}

/** Variables recorded with each shard: which GPU it could see, and which job it was. */
export const RECORDED_ENV = [
  "DENO_WEBGPU_BACKEND",
  "MESA_VK_DEVICE_SELECT",
  "MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE",
  "DRI_PRIME",
  "VK_DRIVER_FILES",
  "VK_ICD_FILENAMES",
  "CUDA_VISIBLE_DEVICES",
  "SLURM_JOB_ID",
  "SLURM_ARRAY_JOB_ID",
  "SLURM_ARRAY_TASK_ID",
  "JOB_COMPLETION_INDEX",
];

export const MARKER = "shard.json";

/** The prompts a shard computed: the records of its largest log (01 keeps one log per mode). */
export function shardRecords(m: ShardMarker): number {
  return Math.max(0, ...Object.values(m.logs).map((l) => l.records));
}

/** shard.json of a complete shard, or null (none, unreadable, another key, or a log that changed since). */
export async function readMarker(dir: string, key: string, s: ShardSpec): Promise<ShardMarker | null> {
  let m: ShardMarker;
  try {
    m = JSON.parse(await Deno.readTextFile(join(dir, MARKER)));
  } catch {
    return null;
  }
  if (m?.cacheKey !== key || m.index !== s.index || m.count !== s.count || typeof m.logs !== "object" || m.logs === null) return null;
  for (const [name, rec] of Object.entries(m.logs)) {
    const bytes = await Deno.readFile(join(dir, name)).catch(() => null);
    if (!bytes || bytes.length !== rec.bytes || sha256(bytes) !== rec.sha256) return null;
  }
  return m;
}

/** The shards of one count n found for a key: those complete and those started but not finished. */
export interface ShardSet {
  count: number;
  complete: Map<number, ShardMarker>;
  /** started, not complete: index → who holds its lock ("" when nobody: stopped, resumable) */
  unfinished: Map<number, string>;
}

export function missingShards(set: ShardSet): number[] {
  const out: number[] = [];
  for (let i = 0; i < set.count; i++) if (!set.complete.has(i)) out.push(i);
  return out;
}

/** Every shard set of a stage's cache key, by ascending count. */
export async function findShardSets(stageDir: string, key: string): Promise<ShardSet[]> {
  const root = shardsRoot(stageDir, key);
  const sets = new Map<number, ShardSet>();
  const entries: Deno.DirEntry[] = [];
  try {
    for await (const e of Deno.readDir(root)) entries.push(e);
  } catch {
    return [];
  }
  for (const e of entries) {
    const m = /^(\d+)-of-(\d+)$/.exec(e.name);
    if (!e.isDirectory || !m) continue;
    const s = { index: Number(m[1]), count: Number(m[2]) };
    if (s.index >= s.count) continue;
    let set = sets.get(s.count);
    if (!set) sets.set(s.count, set = { count: s.count, complete: new Map(), unfinished: new Map() });
    const dir = join(root, e.name);
    const marker = await readMarker(dir, key, s);
    if (marker) set.complete.set(s.index, marker);
    else set.unfinished.set(s.index, await lockHolder(join(dir, ".lock")));
  }
  return [...sets.values()].sort((a, b) => a.count - b.count);
}

/** The set a merge uses: the smallest complete one (every complete set holds the same records). */
export function completeSet(sets: ShardSet[]): ShardSet | undefined {
  return sets.find((s) => s.complete.size === s.count);
}

/** One line per shard that is not complete, for messages. */
export function describeMissing(set: ShardSet): string[] {
  return missingShards(set).map((i) => {
    const holder = set.unfinished.get(i);
    const state = holder === undefined ? "not started" : holder ? `running (${holder})` : "stopped before the end (the same command resumes it)";
    return `shard ${i}/${set.count}: ${state}`;
  });
}

/** What a merged stage's manifest says about the shards it was made from (`info.shards`). */
export interface MergedShards {
  count: number;
  shards: {
    shard: string;
    host: string;
    adapter: string;
    engineSha256: string;
    records: number;
    wallTimeS: number;
    finishedAt: string;
    env: Record<string, string>;
  }[];
}

/**
 * Fill the stage's work folder from a complete shard set: per log name, the records of every
 * shard under one header line (the key), as if one process had saved them all. The logs are
 * checked against their shard.json again, and a row found in two shards is refused.
 */
export async function fillFromShards(plan: Plan, set: ShardSet, workDir: string): Promise<MergedShards> {
  const names = new Set<string>();
  for (const m of set.complete.values()) for (const n of Object.keys(m.logs)) names.add(n);
  const info: MergedShards = { count: set.count, shards: [] };
  for (const name of [...names].sort()) {
    const out: string[] = [JSON.stringify({ key: plan.key })];
    const owner = new Map<number, number>();
    for (let i = 0; i < set.count; i++) {
      const m = set.complete.get(i)!;
      const dir = shardDir(plan.dir, plan.key, m);
      const rec = m.logs[name];
      const bytes = rec ? await Deno.readFile(join(dir, name)).catch(() => null) : null;
      if (!rec || !bytes || sha256(bytes) !== rec.sha256) {
        throw new UserError(`${plan.def.name}: shard ${m.shard} lacks ${name} or it changed after the shard finished; run that shard again (deno task pipeline … --shard ${m.shard} --force)`);
      }
      const lines = new TextDecoder().decode(bytes).split("\n").filter((l) => l !== "");
      for (const line of lines.slice(1)) {
        const row = (JSON.parse(line) as { row: number }).row;
        const other = owner.get(row);
        if (other !== undefined) throw new UserError(`${plan.def.name}: row ${row} is in shard ${other}/${set.count} and in shard ${m.shard}; the shards do not belong together`);
        owner.set(row, i);
        out.push(line);
      }
    }
    await writeFileAtomic(join(workDir, name), out.join("\n") + "\n");
  }
  for (let i = 0; i < set.count; i++) {
    const m = set.complete.get(i)!;
    info.shards.push({ shard: m.shard, host: m.host, adapter: m.adapter, engineSha256: m.engineSha256, records: shardRecords(m), wallTimeS: m.wallTimeS, finishedAt: m.finishedAt, env: m.env });
  }
  return info;
}
