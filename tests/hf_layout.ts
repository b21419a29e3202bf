// The Hugging Face layout fixtures (mamba1-tiny-hf, mamba2-tiny-hf) hold the same weights as their
// state-spaces twins, so the repo keeps only their config.json: the model.safetensors is built at
// test time from the twin's file, the way the HF conversion writes it (the embedding renamed
// backbone.embeddings.weight, the header in Python's json.dumps spelling, padded with spaces to a
// multiple of 8, the data bytes unchanged), and its sha256 must be that of the published HF fixture
// file (recorded below), so the test still proves that the real layout loads.
import { createHash } from "node:crypto";
import { assertEquals } from "./assert.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;

/** sha256 of ../shared/fixtures/<name>/model.safetensors, the files these builds reproduce. */
export const HF_FIXTURE_SHA256: Record<string, string> = {
  "mamba1-tiny-hf": "21b278322faa8789383bea06494b75485221598fd41c33f80dfc897a0b55f70b",
  "mamba2-tiny-hf": "04759ab6b129ed111a9f5057d3ad68c808b930d9b09445a4339ecbbdf8b9ae24",
};

/** A state-spaces safetensors file with its embedding renamed as the Hugging Face layout names it. */
export function toHfLayout(stateSpaces: Uint8Array): Uint8Array {
  const view = new DataView(stateSpaces.buffer, stateSpaces.byteOffset, stateSpaces.byteLength);
  const headerLen = Number(view.getBigUint64(0, true));
  const header = new TextDecoder().decode(stateSpaces.subarray(8, 8 + headerLen)).trimEnd();
  const renamed = header.replace('"backbone.embedding.weight":', '"backbone.embeddings.weight":');
  if (renamed === header) throw new Error("toHfLayout: no backbone.embedding.weight in the header");
  const text = new TextEncoder().encode(renamed);
  const padded = Math.ceil(text.length / 8) * 8;
  const out = new Uint8Array(8 + padded + stateSpaces.length - 8 - headerLen);
  new DataView(out.buffer).setBigUint64(0, BigInt(padded), true);
  out.fill(0x20, 8, 8 + padded);
  out.set(text, 8);
  out.set(stateSpaces.subarray(8 + headerLen), 8 + padded);
  return out;
}

export function sha256(bytes: Uint8Array): string {
  return createHash("sha256").update(bytes).digest("hex");
}

const built = new Map<string, Promise<string>>();
/**
 * A folder holding tests/fixtures/<name>/config.json and the model.safetensors built from the
 * state-spaces twin (<name> without -hf), checked against the published file's sha256; made once
 * per test process, removed when it exits.
 */
export function hfFixture(name: "mamba1-tiny-hf" | "mamba2-tiny-hf"): Promise<string> {
  let p = built.get(name);
  if (!p) {
    built.set(name, p = (async () => {
      const dir = await Deno.makeTempDir({ prefix: `${name}_` });
      globalThis.addEventListener("unload", () => Deno.removeSync(dir, { recursive: true }));
      const bytes = toHfLayout(await Deno.readFile(`${FIXTURES}${name.replace(/-hf$/, "")}/model.safetensors`));
      assertEquals(sha256(bytes), HF_FIXTURE_SHA256[name], `${name}: the built model.safetensors is the published one`);
      await Deno.writeFile(`${dir}/model.safetensors`, bytes);
      await Deno.copyFile(`${FIXTURES}${name}/config.json`, `${dir}/config.json`);
      return dir;
    })());
  }
  return p;
}
