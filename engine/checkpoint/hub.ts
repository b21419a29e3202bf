// Hugging Face Hub models by id ("state-spaces/mamba2-1.3b"): reuse what the Hugging Face cache
// already holds, otherwise download into it in the layout huggingface_hub uses, so both tools share
// the files: models--org--name/{blobs/<etag>, snapshots/<commit>/<file> -> ../../blobs/<etag>, refs/main}.
//
// Every name the server sends that becomes part of a path is checked before any file is touched:
// the commit (X-Repo-Commit) must be 40 hex digits, an etag (ETag / X-Linked-Etag) 40 or 64 hex
// digits (git sha1, or the sha256 of an LFS file), and a shard named by the index a plain
// *.safetensors file name. Anything else is refused, so a hostile endpoint cannot write outside
// models--org--name/ or point refs/main elsewhere.
//
// Why not the official client, npm @huggingface/hub (downloadFileToCacheDir / snapshotDownload)?
// Tried (version 2.17.5, under Deno 2.9.6): it runs and lays out the cache the standard way, but it
//  - joins the etag and commit from the server's answers into paths unchecked (a hostile etag
//    "../../x" wrote a file outside the cache in the trial: the very hole this file closes);
//  - does not resume: an existing blobs/<etag>.incomplete is truncated and fetched from byte 0;
//  - does not verify the bytes (a corrupted LFS body was kept as the blob);
//  - has no progress callback, and snapshotDownload fetches every file of the repo (both weight
//    formats where a repo has both) with no way to pick files.
// Resuming, sha256 verification, the progress bar and the checks above are what this project needs,
// so the downloader stays ours; it speaks the same HTTP (HEAD on /resolve/, Range GETs) as huggingface_hub.

import { createHash, type Hash } from "node:crypto";
import { Progress } from "../progress.ts";
import { readBoundedText } from "./file.ts";
import {
  CONFIG_FILE,
  isCompleteCheckpoint,
  isFile,
  PYTORCH_FILE,
  readShardIndex,
  SAFETENSORS_FILE,
  SAFETENSORS_INDEX_FILE,
  TOKENIZER_FILE,
} from "./layout.ts";
import { CheckpointError } from "./types.ts";

/** A commit id as the Hub sends it and as the cache names snapshots: 40 lowercase hex digits. */
export function isCommitHash(s: string): boolean {
  return /^[0-9a-f]{40}$/.test(s);
}

/** A blob name: a git sha1 (40 hex digits) or the sha256 of an LFS file (64). */
export function isBlobName(s: string): boolean {
  return /^[0-9a-f]{40}$/.test(s) || /^[0-9a-f]{64}$/.test(s);
}

export function hfCacheDir(): string {
  const hubCache = Deno.env.get("HF_HUB_CACHE");
  if (hubCache) return hubCache;
  const hfHome = Deno.env.get("HF_HOME");
  if (hfHome) return `${hfHome}/hub`;
  // huggingface_hub puts HF_HOME under XDG_CACHE_HOME when that is set.
  const xdg = Deno.env.get("XDG_CACHE_HOME");
  if (xdg) return `${xdg}/huggingface/hub`;
  const home = Deno.env.get("HOME") ?? Deno.env.get("USERPROFILE") ?? ".";
  return `${home}/.cache/huggingface/hub`;
}

/** "org/name" with the characters Hub repo ids allow. */
export function looksLikeHubId(s: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]*\/[A-Za-z0-9][A-Za-z0-9._-]*$/.test(s) && !s.includes("..");
}

export function hubRepoCacheDir(id: string): string {
  return `${hfCacheDir()}/models--${id.replace("/", "--")}`;
}

function envTrue(name: string): boolean {
  return ["1", "true", "yes", "on"].includes((Deno.env.get(name) ?? "").toLowerCase());
}

/** A complete snapshot already in the cache: the one refs/main names, else the newest complete one. */
export async function findCachedSnapshot(repoDir: string): Promise<string | undefined> {
  try {
    const commit = (await readBoundedText(`${repoDir}/refs/main`, 1024, "refs/main")).trim();
    const snapshot = `${repoDir}/snapshots/${commit}`;
    // A ref that is not a commit id is ignored: it must never lead outside snapshots/.
    if (isCommitHash(commit) && await isCompleteCheckpoint(snapshot)) return snapshot;
  } catch {
    // no (readable) refs/main: fall back to the snapshots present
  }
  const candidates: { dir: string; mtime: number }[] = [];
  try {
    for await (const entry of Deno.readDir(`${repoDir}/snapshots`)) {
      const dir = `${repoDir}/snapshots/${entry.name}`;
      if (!(await isCompleteCheckpoint(dir))) continue;
      candidates.push({ dir, mtime: (await Deno.stat(dir)).mtime?.getTime() ?? 0 });
    }
  } catch {
    return undefined;
  }
  candidates.sort((a, b) => b.mtime - a.mtime);
  return candidates[0]?.dir;
}

/** The Hub could not be reached at all (as opposed to answering with an error). */
class HubUnreachable extends Error {}

interface RemoteFile {
  name: string; // file name in the repo
  url: string; // where its bytes are (the CDN for LFS files)
  etag: string; // blob name: sha256 for LFS files, git blob sha1 otherwise
  size?: number;
  commit?: string;
}

function authHeaders(): Record<string, string> {
  const token = Deno.env.get("HF_TOKEN") ?? Deno.env.get("HUGGING_FACE_HUB_TOKEN");
  // identity: a compressed body would not match the sizes the Hub reports
  const headers: Record<string, string> = { "Accept-Encoding": "identity" };
  if (token) headers.Authorization = `Bearer ${token}`;
  return headers;
}

async function hubFetch(url: string, init: RequestInit): Promise<Response> {
  try {
    return await fetch(url, init);
  } catch (e) {
    throw new HubUnreachable((e as Error).message);
  }
}

function cleanEtag(etag: string | null): string | undefined {
  return etag?.replace(/^W\//, "").replace(/"/g, "") || undefined;
}

function checkedEtag(url: string, header: string, etag: string | undefined): string | undefined {
  if (etag === undefined || isBlobName(etag)) return etag;
  throw new CheckpointError(
    `${url}: the server's ${header} ${
      JSON.stringify(etag.slice(0, 80))
    } is not a git or sha256 hash (40 or 64 hex digits); refusing to use it as a cache file name`,
  );
}

function checkedCommit(url: string, commit: string | undefined): string | undefined {
  if (commit === undefined || isCommitHash(commit)) return commit;
  throw new CheckpointError(
    `${url}: the server's X-Repo-Commit ${
      JSON.stringify(commit.slice(0, 80))
    } is not a commit id (40 hex digits); refusing to use it as a cache folder name`,
  );
}

/** Metadata of one file (HEAD without following redirects, as the LFS headers sit on the redirect). */
async function remoteFile(
  endpoint: string,
  id: string,
  revision: string,
  name: string,
): Promise<RemoteFile | undefined> {
  let url = `${endpoint}/${id}/resolve/${revision}/${name}`;
  for (let hop = 0; hop < 5; hop++) {
    const res = await hubFetch(url, { method: "HEAD", redirect: "manual", headers: authHeaders() });
    await res.body?.cancel();
    if (res.status === 404) return undefined;
    if (res.status === 401 || res.status === 403) {
      // The Hub answers 401 both for gated/private repos and, to anonymous users, for ids that do not exist.
      const code = res.headers.get("x-error-code");
      throw new CheckpointError(
        code === "RepoNotFound"
          ? `model ${id} was not found on the Hugging Face Hub (HTTP ${res.status}); check the id, or set HF_TOKEN if it is private`
          : `model ${id} needs authorisation on the Hugging Face Hub (HTTP ${res.status}): accept its terms on the website and set HF_TOKEN`,
      );
    }
    const linkedEtag = checkedEtag(url, "X-Linked-Etag", cleanEtag(res.headers.get("x-linked-etag")));
    const commit = checkedCommit(url, res.headers.get("x-repo-commit") ?? undefined);
    const location = res.headers.get("location");
    if (res.status >= 300 && res.status < 400 && location) {
      const target = new URL(location, url).href;
      if (linkedEtag) {
        // An LFS file: the redirect carries its hash and size; the bytes come from the target.
        const size = Number(res.headers.get("x-linked-size") ?? NaN);
        return { name, url: target, etag: linkedEtag, size: Number.isFinite(size) ? size : undefined, commit };
      }
      url = target; // a renamed repo or a revision alias: follow it
      continue;
    }
    if (!res.ok) throw new CheckpointError(`${url}: the Hugging Face Hub answered HTTP ${res.status}; try again later`);
    const etag = linkedEtag ?? checkedEtag(url, "ETag", cleanEtag(res.headers.get("etag")));
    if (!etag) throw new CheckpointError(`${url}: the Hub's answer has no etag; download the files by hand`);
    const size = Number(res.headers.get("x-linked-size") ?? res.headers.get("content-length") ?? NaN);
    return { name, url, etag, size: Number.isFinite(size) ? size : undefined, commit };
  }
  throw new CheckpointError(`${url}: too many redirects from the Hugging Face Hub`);
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let done = 0;
  while (done < bytes.length) done += await file.write(bytes.subarray(done));
}

async function hashPrefix(path: string, hash: Hash): Promise<void> {
  using file = await Deno.open(path, { read: true });
  const chunk = new Uint8Array(16 << 20);
  while (true) {
    const n = await file.read(chunk);
    if (n === null) break;
    hash.update(chunk.subarray(0, n));
  }
}

/** Download into blobs/<etag>, resuming a previous <blob>.incomplete, verified by size and sha256. */
async function downloadBlob(id: string, repoDir: string, remote: RemoteFile, showProgress: boolean): Promise<string> {
  if (!isBlobName(remote.etag)) throw new Error(`unchecked etag ${remote.etag}`); // remoteFile checked it
  const blob = `${repoDir}/blobs/${remote.etag}`;
  if (await isFile(blob)) {
    if (remote.size === undefined || (await Deno.stat(blob)).size === remote.size) return blob;
  }
  await Deno.mkdir(`${repoDir}/blobs`, { recursive: true });
  const partial = `${blob}.incomplete`;
  let have = (await isFile(partial)) ? (await Deno.stat(partial)).size : 0;
  if (remote.size !== undefined && have > remote.size) have = 0;
  const verifySha = /^[0-9a-f]{64}$/.test(remote.etag);
  let hash = createHash("sha256");
  if (have > 0 && verifySha) await hashPrefix(partial, hash);

  const headers = authHeaders();
  if (have > 0) headers.Range = `bytes=${have}-`;
  const res = await hubFetch(remote.url, { headers });
  let append = false;
  if (res.status === 206) {
    const start = Number(/bytes (\d+)-/.exec(res.headers.get("content-range") ?? "")?.[1] ?? NaN);
    if (start !== have) {
      await res.body?.cancel();
      throw new CheckpointError(
        `${remote.url}: the server resumed at the wrong byte (${start}, not ${have}); delete ${partial} and run again`,
      );
    }
    append = true;
  } else if (res.status === 416 && have > 0 && have === remote.size) {
    await res.body?.cancel();
    append = true; // already complete
  } else if (res.ok) {
    have = 0; // the server ignored the Range header: start over
    hash = createHash("sha256");
  } else {
    await res.body?.cancel();
    throw new CheckpointError(`${remote.url}: download failed with HTTP ${res.status}; run again to retry`);
  }
  const encoded = (res.headers.get("content-encoding") ?? "identity") !== "identity";
  const total = remote.size ??
    (res.status === 200 && !encoded ? Number(res.headers.get("content-length") ?? NaN) : undefined);

  const file = await Deno.open(partial, { write: true, create: true, append, truncate: !append });
  const progress = showProgress
    ? new Progress(`downloading ${id} ${remote.name}`, total ?? 0, have, { bytes: true })
    : undefined;
  let got = have;
  try {
    if (res.status !== 416 && res.body) {
      for await (const chunk of res.body) {
        await writeAll(file, chunk);
        if (verifySha) hash.update(chunk);
        got += chunk.length;
        progress?.tick(chunk.length);
      }
    }
  } catch (e) {
    throw new CheckpointError(
      `downloading ${id} ${remote.name} was interrupted after ${got} bytes (${
        (e as Error).message
      }); run again to resume`,
    );
  } finally {
    file.close();
    progress?.finish();
  }
  if (total !== undefined && Number.isFinite(total) && got !== total) {
    if (got > total) await Deno.remove(partial);
    throw new CheckpointError(
      `downloading ${id} ${remote.name} stopped at ${got} of ${total} bytes; run again to ${
        got > total ? "restart" : "resume"
      }`,
    );
  }
  if (verifySha) {
    // A 416 answer sent no bytes, so the hash of the prefix is the hash of the file.
    const digest = hash.digest("hex");
    if (digest !== remote.etag) {
      await Deno.remove(partial);
      throw new CheckpointError(
        `downloading ${id} ${remote.name} gave sha256 ${digest}, not ${remote.etag}; the partial file was deleted, run again`,
      );
    }
  }
  await Deno.rename(partial, blob);
  return blob;
}

async function linkIntoSnapshot(snapshot: string, name: string, blob: string): Promise<void> {
  const link = `${snapshot}/${name}`;
  await Deno.mkdir(snapshot, { recursive: true });
  try {
    await Deno.remove(link);
  } catch {
    // not there yet
  }
  try {
    await Deno.symlink(`../../blobs/${blob.slice(blob.lastIndexOf("/") + 1)}`, link);
  } catch {
    await Deno.copyFile(blob, link); // file systems without symlinks get a copy, as huggingface_hub does
  }
}

async function downloadModel(id: string, repoDir: string): Promise<string> {
  const endpoint = (Deno.env.get("HF_ENDPOINT") ?? "https://huggingface.co").replace(/\/+$/, "");
  const config = await remoteFile(endpoint, id, "main", CONFIG_FILE);
  if (!config) {
    throw new CheckpointError(`model ${id} was not found on the Hugging Face Hub (no ${CONFIG_FILE}); check the id`);
  }
  if (!config.commit) {
    throw new CheckpointError(`model ${id}: the Hub did not say which commit it serves; download the files by hand`);
  }
  const commit = config.commit;
  if (!isCommitHash(commit)) throw new Error(`unchecked commit ${commit}`); // remoteFile checked it
  // Fetch every file at that commit, so a push in between cannot mix two revisions.
  if (config.url.includes("/resolve/main/")) config.url = config.url.replace("/resolve/main/", `/resolve/${commit}/`);
  const files: RemoteFile[] = [config];
  const safetensors = await remoteFile(endpoint, id, commit, SAFETENSORS_FILE);
  const index = safetensors ? undefined : await remoteFile(endpoint, id, commit, SAFETENSORS_INDEX_FILE);
  if (safetensors) files.push(safetensors);
  else if (index) files.push(index);
  else {
    const bin = await remoteFile(endpoint, id, commit, PYTORCH_FILE);
    if (!bin) {
      throw new CheckpointError(
        `model ${id} on the Hugging Face Hub has neither ${SAFETENSORS_FILE} nor ${PYTORCH_FILE}`,
      );
    }
    files.push(bin);
  }
  // the model's own tokenizer, when it has one (engine/tokenizer.ts prefers it to GPT-NeoX-20B's)
  const tokenizer = await remoteFile(endpoint, id, commit, TOKENIZER_FILE);
  if (tokenizer) files.push(tokenizer);
  const snapshot = `${repoDir}/snapshots/${commit}`;
  const fetchAndLink = async (remote: RemoteFile, big: boolean) => {
    await linkIntoSnapshot(snapshot, remote.name, await downloadBlob(id, repoDir, remote, big));
  };
  for (const remote of files) await fetchAndLink(remote, remote.name !== CONFIG_FILE && remote !== index && remote !== tokenizer);
  if (index) {
    // Throws on a shard name that is not a plain *.safetensors file name, before any is fetched.
    const shards = [...(await readShardIndex(`${snapshot}/${SAFETENSORS_INDEX_FILE}`)).keys()];
    for (const shard of shards) {
      const remote = await remoteFile(endpoint, id, commit, shard);
      if (!remote) throw new CheckpointError(`model ${id}: shard ${shard} listed in the index is missing on the Hub`);
      await fetchAndLink(remote, true);
    }
  }
  await Deno.mkdir(`${repoDir}/refs`, { recursive: true });
  await Deno.writeTextFile(`${repoDir}/refs/main`, commit);
  return snapshot;
}

function notAvailableOffline(id: string, repoDir: string): CheckpointError {
  return new CheckpointError(
    `model ${id} is not in the Hugging Face cache and cannot be downloaded (offline): put ${CONFIG_FILE} and ${PYTORCH_FILE} in ${repoDir}/snapshots/main/`,
  );
}

/** Local snapshot directory of a Hub model, downloading it when it is not cached and we may. */
export async function resolveHubModel(id: string, opts: { offline?: boolean }): Promise<string> {
  const repoDir = hubRepoCacheDir(id);
  const cached = await findCachedSnapshot(repoDir);
  if (cached) return cached;
  if (opts.offline || envTrue("HF_HUB_OFFLINE")) throw notAvailableOffline(id, repoDir);
  try {
    return await downloadModel(id, repoDir);
  } catch (e) {
    if (e instanceof HubUnreachable) throw notAvailableOffline(id, repoDir);
    throw e;
  }
}
