// The run folder: what may be one (checked before anything is written), and lock files: one pipeline
// at a time per run folder (lockRunDir), one process per shard of a stage (lib/shard.ts). A lock file
// holds the writer's process id and host name and is created atomically with that content; on a shared
// filesystem a lock of another host cannot be checked, so it is never taken over silently.

import { join } from "node:path";
import { relOrAbs } from "./config.ts";
import { UsageError, UserError } from "./errors.ts";

/** The effective configuration of the last run in a run folder (never `config.json`: that is a model's file). */
export const RUN_CONFIG = "run.config.json";
const LOCK = ".lock";

/** Files that make a folder a model checkpoint (or a model's tokenizer): a run folder never holds them. */
const MODEL_FILE = /^(config\.json|pytorch_model\.bin|.*\.safetensors|model\.safetensors\.index\.json|tokenizer\.json|tokenizer_config\.json)$/;

/**
 * What a run folder holds: stage folders (NN_name), its configuration, its lock (and the lock's
 * temporaries); a study's folder also the folders named in `also` (its study stages' own, such as
 * report/, and the models' run folders it holds).
 */
function belongsToRun(e: Deno.DirEntry, also: readonly string[]): boolean {
  if (e.isDirectory) return /^\d\d_[a-z0-9_]+$/.test(e.name) || also.includes(e.name);
  return e.name === RUN_CONFIG || e.name === LOCK || e.name.startsWith(`${LOCK}.`);
}

/**
 * Refuse a run folder that is not one, before anything is written to it: a file, a folder that
 * holds a model (its config.json would be overwritten, its weights mixed with outputs), or a
 * folder with anything else in it. A new or empty folder, or an earlier run's folder, is fine
 * (a study's folder: with the folders named in `also`).
 * A UsageError (exit 2): the fix is another --out.
 */
export async function checkRunFolder(runDir: string, also: readonly string[] = []): Promise<void> {
  const shown = relOrAbs(runDir);
  let st: Deno.FileInfo;
  try {
    st = await Deno.stat(runDir);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return;
    throw new UserError(`cannot read the run folder ${shown}: ${(e as Error).message}`);
  }
  if (!st.isDirectory) throw new UsageError(`run folder ${shown} is a file, not a folder; pass --out with a new or empty folder`);
  const entries = (await Array.fromAsync(Deno.readDir(runDir))).filter((e) => !(e.name === "config.json" && legacyRunConfig(runDir)));
  const model = entries.filter((e) => !e.isDirectory && MODEL_FILE.test(e.name)).map((e) => e.name).sort();
  if (model.length) {
    throw new UsageError(
      `run folder ${shown} holds a model (${model.join(", ")}); a run would write among its files: pass --out with a new or empty folder`,
    );
  }
  const other = entries.filter((e) => !belongsToRun(e, also)).map((e) => e.name).sort();
  if (other.length) {
    const some = other.slice(0, 5).join(", ") + (other.length > 5 ? `, and ${other.length - 5} more` : "");
    throw new UsageError(
      `run folder ${shown} is not a run folder (it holds ${some}); pass --out with a new or empty folder, or an earlier run's folder`,
    );
  }
}

/** The `config.json` that runs before run.config.json wrote (the effective configuration, not a model's). */
function legacyRunConfig(runDir: string): boolean {
  try {
    const path = join(runDir, "config.json");
    const st = Deno.statSync(path);
    if (!st.isFile || st.size > 1 << 20) return false;
    const c = JSON.parse(Deno.readTextFileSync(path));
    return typeof c?.$comment === "string" && c.$comment.startsWith("effective configuration of the last pipeline run");
  } catch {
    return false;
  }
}

function processAlive(pid: number): boolean {
  if (Deno.build.os !== "linux") return true; // no cheap check elsewhere: the message says how to clear the lock
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** A lock without a process id younger than this may be one being written by an older version: not stale yet. */
const UNREADABLE_LOCK_GRACE_MS = 10_000;

/** The holder a lock file names: `pid` (this host, older runs) or `pid host`. */
function readHolder(text: string): { pid: number; host: string } | null {
  if (!/^\d+( \S+)?\n?$/.test(text)) return null;
  const [p, host] = text.trim().split(" ");
  const pid = Number(p);
  return Number.isSafeInteger(pid) && pid > 0 ? { pid, host: host ?? Deno.hostname() } : null;
}

/** Who holds the lock file `path` ("pid N", or "pid N on host H" for another host), or "" when nobody does (none, or its process is gone). */
export async function lockHolder(path: string): Promise<string> {
  const h = readHolder(await Deno.readTextFile(path).catch(() => ""));
  if (!h) return "";
  if (h.host !== Deno.hostname()) return `pid ${h.pid} on host ${h.host}`;
  return processAlive(h.pid) ? `pid ${h.pid}` : "";
}

/**
 * Take the lock file `path`, or throw a UserError made by `busy(holder)` when a live process (or
 * one on another host, which cannot be checked) holds it. The lock is created atomically with its
 * content (written to a private file first, then hard-linked to `path`, which fails if `path`
 * exists), so a lock is never seen without its holder. A lock whose process is gone (a killed run)
 * is taken over; taking it over renames it away first, so that two processes cannot both take it.
 */
export async function lockPath(path: string, busy: (holder: string) => string): Promise<() => void> {
  const host = Deno.hostname();
  const mine = `${path}.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}`;
  await Deno.writeTextFile(mine, `${Deno.pid} ${host}\n`);
  try {
    for (let attempt = 0; attempt < 5; attempt++) {
      try {
        await Deno.link(mine, path);
        return () => {
          try {
            Deno.removeSync(path);
          } catch {
            // already gone
          }
        };
      } catch (e) {
        if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      }
      const seen = await readLock(path);
      if (seen === "gone") continue;
      const h = readHolder(seen.text);
      if (h && h.host !== host) throw new UserError(busy(`pid ${h.pid} on host ${h.host}`));
      if (h && h.pid !== Deno.pid && processAlive(h.pid)) throw new UserError(busy(`pid ${h.pid}`));
      if (!h && Date.now() - seen.mtime < UNREADABLE_LOCK_GRACE_MS) {
        throw new UserError(busy("a process whose lock holds no process id yet"));
      }
      await takeOver(path, seen.text);
    }
    throw new UserError(`cannot lock ${relOrAbs(path)}; remove it if no other process is using it`);
  } finally {
    await Deno.remove(mine).catch(() => {});
  }
}

/** One pipeline at a time per run folder; a lock left by a process that is gone is taken over. */
export function lockRunDir(runDir: string): Promise<() => void> {
  const path = join(runDir, LOCK);
  return lockPath(
    path,
    (holder) =>
      `another pipeline run (${holder}) is writing to ${relOrAbs(runDir)}; wait for it, or pass --out DIR for a separate run folder (remove ${
        relOrAbs(path)
      } if no run is going on)`,
  );
}

async function readLock(path: string): Promise<{ text: string; mtime: number } | "gone"> {
  try {
    const [text, st] = await Promise.all([Deno.readTextFile(path), Deno.stat(path)]);
    return { text, mtime: st.mtime?.getTime() ?? 0 };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return "gone";
    throw e;
  }
}

/**
 * Remove a stale lock whose content was `text`: renamed to a private name first (atomic), then
 * checked; if another process replaced the stale lock meanwhile, its lock is put back.
 */
async function takeOver(path: string, text: string): Promise<void> {
  const aside = `${path}.stale.${Deno.pid}.${crypto.randomUUID().slice(0, 8)}`;
  try {
    await Deno.rename(path, aside);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return; // someone else took it over first
    throw e;
  }
  const moved = await Deno.readTextFile(aside).catch(() => text);
  if (moved !== text) await Deno.link(aside, path).catch(() => {}); // a live process's fresh lock: put back
  await Deno.remove(aside).catch(() => {});
}
