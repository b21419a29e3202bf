// A stage folder's manifest.json: what the outputs were made from (the key material and the cache
// key), the engine, counts and facts, and each output's size and hash, so that an output edited or
// deleted by hand is noticed. It is written last: it is what marks the outputs as finished.

import { join, relative } from "node:path";
import { exists } from "./atomic.ts";
import { REPO_ROOT } from "./config.ts";
import { hashFile, sha256 } from "./hash.ts";
import type { Manifest, OutputRecord } from "./stage.ts";

/** The manifest in `dir`, null when there is none, "unreadable" when it cannot be trusted. */
export async function readManifest(dir: string): Promise<Manifest | null | "unreadable"> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(dir, "manifest.json"));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    return "unreadable";
  }
  try {
    const m = JSON.parse(text) as Manifest;
    return typeof m?.cacheKey === "string" && typeof m.outputs === "object" ? m : "unreadable";
  } catch {
    return "unreadable";
  }
}

/** Size and hash of an output file. */
export async function outputRecord(path: string): Promise<OutputRecord> {
  const st = await Deno.stat(path);
  return { bytes: st.size, sha256: await hashFile(path) };
}

/** Problems with the outputs a manifest lists (missing, changed since). */
export async function outputProblems(dir: string, m: Manifest, expected: string[]): Promise<string[]> {
  const r: string[] = [];
  for (const f of expected) {
    const rec = m.outputs[f];
    const p = join(dir, f);
    if (!rec) {
      r.push(`output ${f} is not in the manifest`);
      continue;
    }
    if (!(await exists(p))) {
      r.push(`output ${f} is missing`);
      continue;
    }
    const st = await Deno.stat(p);
    if (st.size !== rec.bytes || (await hashFile(p)) !== rec.sha256) r.push(`output ${f} was modified`);
  }
  return r;
}

let engineHashCache: string | undefined;
/** Hash of the engine's code (engine/ and kernels/): recorded in manifests, not part of the cache key. */
export async function engineSha256(): Promise<string> {
  if (engineHashCache) return engineHashCache;
  const parts: string[] = [];
  for (const sub of ["engine", "kernels"]) {
    const walk = async (dir: string) => {
      const entries: Deno.DirEntry[] = [];
      try {
        for await (const e of Deno.readDir(dir)) entries.push(e);
      } catch {
        return;
      }
      entries.sort((a, b) => a.name < b.name ? -1 : 1);
      for (const e of entries) {
        const p = join(dir, e.name);
        if (e.isDirectory) await walk(p);
        else if (/\.(ts|wgsl)$/.test(e.name)) parts.push(`${relative(REPO_ROOT, p)}:${await hashFile(p)}`);
      }
    };
    await walk(join(REPO_ROOT, sub));
  }
  engineHashCache = sha256(parts.join("\n"));
  return engineHashCache;
}

