// Where the engine keeps what it measured once per machine (the matmul plans tuned per adapter,
// the bench's synthetic checkpoints): MAMBA_EXPLAIN_CACHE, else $XDG_CACHE_HOME/mamba-explain,
// else ~/.cache/mamba-explain (%LOCALAPPDATA%\mamba-explain on Windows). Nothing there is needed:
// a missing or unreadable entry is measured or made again.
import { join } from "node:path";

export function cacheDir(): string {
  const env = (k: string) => Deno.env.get(k) || undefined;
  const own = env("MAMBA_EXPLAIN_CACHE");
  if (own) return own;
  const xdg = env("XDG_CACHE_HOME");
  if (xdg) return join(xdg, "mamba-explain");
  if (Deno.build.os === "windows" && env("LOCALAPPDATA")) return join(env("LOCALAPPDATA")!, "mamba-explain");
  return join(env("HOME") ?? env("USERPROFILE") ?? ".", ".cache", "mamba-explain");
}
