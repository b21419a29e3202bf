// Content hashes for cache keys and manifests.

import { createHash } from "node:crypto";

/** JSON with object keys sorted at every level: equal values give equal strings. */
export function stableStringify(v: unknown): string {
  if (v === null || typeof v !== "object") return JSON.stringify(v) ?? "null";
  if (Array.isArray(v)) return `[${v.map(stableStringify).join(",")}]`;
  const o = v as Record<string, unknown>;
  const keys = Object.keys(o).filter((k) => o[k] !== undefined).sort();
  return `{${keys.map((k) => `${JSON.stringify(k)}:${stableStringify(o[k])}`).join(",")}}`;
}

export function sha256(data: string | Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}

export function hashValue(v: unknown): string {
  return sha256(stableStringify(v));
}

/** sha256 of a file's bytes, read in chunks. */
export async function hashFile(path: string): Promise<string> {
  const h = createHash("sha256");
  const f = await Deno.open(path, { read: true });
  try {
    const buf = new Uint8Array(1 << 20);
    while (true) {
      const n = await f.read(buf);
      if (n === null) break;
      h.update(buf.subarray(0, n));
    }
  } finally {
    f.close();
  }
  return h.digest("hex");
}

/**
 * sha256 over a module and every local module it imports, transitively, as far as they lie under
 * `root` (a stage and the workflows/lib files it uses): a change to any of them changes the hash.
 * Engine code is outside: it is recorded in the manifest, not in the key.
 */
export async function hashModuleTree(entry: string, root: string): Promise<string> {
  const { dirname, resolve } = await import("node:path");
  const seen = new Map<string, string>();
  const visit = async (path: string) => {
    if (seen.has(path) || !path.startsWith(root)) return;
    const text = await Deno.readTextFile(path);
    seen.set(path, sha256(text));
    for (const m of text.matchAll(/(?:import|export)\s[^;]*?from\s+["'](\.{1,2}\/[^"']+)["']|import\(\s*["'](\.{1,2}\/[^"']+)["']\s*\)/g)) {
      await visit(resolve(dirname(path), m[1] ?? m[2]));
    }
  };
  await visit(entry);
  return hashValue([...seen].map(([p, h]) => [p.slice(root.length), h]).sort());
}
