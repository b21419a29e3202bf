// Content identity of a checkpoint: a sha256 over what identifies each file's content.
// Files in a Hugging Face cache snapshot are symlinks to blobs named by their content hash, so the
// name is enough. Other files are hashed (streaming) once; the hash is remembered in
// ~/.cache/mamba-explain/identity.json under path + size + mtime, so multi-GB files are hashed once.
//
// That fast check trusts path + size + mtime: a file rewritten in place with its mtime put back
// (or a cache blob edited after download) keeps its old identity. `verify` hashes every file in full
// instead: local files get their true hash (and the remembered one is replaced), and cache blobs
// named by a sha256 (the LFS weights) must match their name.

import { createHash } from "node:crypto";
import { basename, dirname, resolve } from "node:path";
import { Progress } from "../progress.ts";
import { readBoundedJson } from "./file.ts";
import { CheckpointError } from "./types.ts";

const CACHE_VERSION = 1;

function homeDir(): string | undefined {
  return Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE");
}

export function identityCachePath(): string | undefined {
  const home = homeDir();
  return home ? `${home}/.cache/mamba-explain/identity.json` : undefined;
}

const SHOW_HASH_PROGRESS_BYTES = 1 << 30; // hashing a GB takes seconds: say what is happening
const MAX_CACHE_BYTES = 16 << 20; // ~100k remembered files

export async function sha256File(path: string, why = "once, for its identity"): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  const size = (await file.stat()).size;
  const progress = size >= SHOW_HASH_PROGRESS_BYTES
    ? new Progress(`hashing ${basename(path)} (${why})`, size, 0, { bytes: true })
    : undefined;
  const chunk = new Uint8Array(16 << 20);
  while (true) {
    const n = await file.read(chunk);
    if (n === null) break;
    hash.update(chunk.subarray(0, n));
    progress?.tick(n);
  }
  progress?.finish();
  return hash.digest("hex");
}

/** The blob name when `path` is a Hugging Face cache snapshot entry (a link into .../blobs/). */
async function hubBlob(path: string): Promise<{ name: string; path: string } | undefined> {
  try {
    if (!(await Deno.lstat(path)).isSymlink) return undefined;
    const target = await Deno.realPath(path);
    return basename(dirname(target)) === "blobs" ? { name: basename(target), path: target } : undefined;
  } catch {
    return undefined;
  }
}

interface IdentityCache {
  version: number;
  files: Record<string, string>; // "<absolute path>\t<size>\t<mtime ms>" -> sha256
}

async function loadCache(path: string): Promise<IdentityCache> {
  try {
    // deno-lint-ignore no-explicit-any
    const parsed = (await readBoundedJson(path, MAX_CACHE_BYTES, "identity cache")) as any;
    if (parsed?.version === CACHE_VERSION && typeof parsed.files === "object" && parsed.files !== null) return parsed;
  } catch {
    // missing or unreadable: start afresh
  }
  return { version: CACHE_VERSION, files: {} };
}

async function saveCache(path: string, cache: IdentityCache): Promise<void> {
  try {
    await Deno.mkdir(dirname(path), { recursive: true });
    const temp = `${path}.${Deno.pid}.tmp`;
    await Deno.writeTextFile(temp, JSON.stringify(cache, null, 1));
    await Deno.rename(temp, path); // atomic: a concurrent reader sees the old or the new file
  } catch {
    // a read-only home only costs re-hashing next time
  }
}

/** sha256 of a file, remembered by absolute path, size and mtime (with `verify`, always computed). */
async function cachedFileHash(
  path: string,
  cache: IdentityCache,
  verify: boolean,
): Promise<{ hash: string; fresh: boolean }> {
  const absolute = resolve(path);
  const stat = await Deno.stat(absolute);
  const key = `${absolute}\t${stat.size}\t${stat.mtime?.getTime() ?? 0}`;
  const known = cache.files[key];
  if (known && !verify) return { hash: known, fresh: false };
  const hash = await sha256File(absolute, verify ? "--verify" : undefined);
  if (hash === known) return { hash, fresh: false };
  for (const old of Object.keys(cache.files)) {
    if (old.startsWith(`${absolute}\t`)) delete cache.files[old]; // the file changed: forget its old hash
  }
  cache.files[key] = hash;
  return { hash, fresh: true };
}

/**
 * Identity of config.json plus the weight files (in order), as 64 hex digits. With `verify`, every
 * file is hashed in full (see the top of this file); a cache blob that does not match its sha256
 * name is a CheckpointError.
 */
export async function checkpointIdentity(
  configPath: string,
  weightPaths: string[],
  opts: { verify?: boolean } = {},
): Promise<string> {
  const verify = opts.verify ?? false;
  const cachePath = identityCachePath();
  let cache: IdentityCache | undefined;
  let changed = false;
  const lines: string[] = [];
  for (const path of [configPath, ...weightPaths]) {
    const blob = await hubBlob(path);
    if (blob) {
      // Blobs named by a sha256 can be checked; git-hashed ones (small text files) are left as named.
      if (verify && /^[0-9a-f]{64}$/.test(blob.name)) {
        const hash = await sha256File(blob.path, "--verify");
        if (hash !== blob.name) {
          throw new CheckpointError(
            `${blob.path}: the Hugging Face cache blob has sha256 ${hash}, not the ${blob.name} it is named by; it was changed after download: delete it and run again to download it anew`,
          );
        }
      }
      lines.push(`${basename(path)}\thub-blob\t${blob.name}`);
      continue;
    }
    cache ??= cachePath ? await loadCache(cachePath) : { version: CACHE_VERSION, files: {} };
    const { hash, fresh } = await cachedFileHash(path, cache, verify);
    changed ||= fresh;
    lines.push(`${basename(path)}\tsha256\t${hash}`);
  }
  if (cache && changed && cachePath) await saveCache(cachePath, cache);
  return createHash("sha256").update(lines.join("\n")).digest("hex");
}
