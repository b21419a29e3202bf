// Peak resident memory while a model loads, against the size of its weights. Each load runs in a
// fresh process (so that its peak is its own): the process creates the device, notes its resident
// memory (the baseline: Deno, the driver), loads a synthetic model (engine/synthetic.ts: random
// weights made piece by piece, nothing downloaded) of the given shape and dtype, waits for the queue,
// and reports the weights' bytes on the GPU and its peak resident set (VmHWM, Linux); then it runs
// one short prompt in scan and attention mode and checks that the logits are finite and that the two
// modes agree (so a large model's split tensors are seen to work, not only to load). On lavapipe
// GPU memory is host memory, so the peak holds the weights themselves plus whatever loading kept
// besides: peak / weights is the number to watch (issue 14: at most 1.3).
//   deno run -A bench/load_bench.ts [--shape mamba2-1.3b]... [--dtype f32|f16]...
// `benchLoad()` gives the rows to `deno task bench --only load`.
import { parseArgs } from "node:util";
import { runMain } from "../engine/cli.ts";
import { createGpu } from "../engine/gpu.ts";
import { loadModel } from "../engine/families.ts";
import { syntheticCheckpoint, syntheticConfig } from "../engine/synthetic.ts";
import { Backbone } from "../engine/backbone.ts";
import type { BenchRow } from "./table.ts";

/** A /proc/self/status field in bytes (Linux); NaN elsewhere. */
function procStatus(field: "VmHWM" | "VmRSS"): number {
  try {
    const m = new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(Deno.readTextFileSync("/proc/self/status"));
    return m ? Number(m[1]) * 1024 : NaN;
  } catch {
    return NaN;
  }
}

interface LoadMeasure {
  shape: string;
  dtype: "f32" | "f16";
  weightBytes: number;
  baselineBytes: number; // resident after the device was made, before loading
  peakBytes: number; // the process's peak resident set at the end of the load
  seconds: number;
  /** max |scan − attention| / max |logit| of one 8-token prompt; NaN when a logit is not finite */
  modesDiff: number;
}

/** One load in this process (the child's side). */
async function measureHere(shape: string, dtype: "f32" | "f16"): Promise<LoadMeasure> {
  const gpu = await createGpu();
  const baselineBytes = procStatus("VmRSS");
  const t0 = performance.now();
  const model = await loadModel(gpu, syntheticCheckpoint(syntheticConfig(shape), 0), { dtype });
  await gpu.device.queue.onSubmittedWorkDone();
  const seconds = (performance.now() - t0) / 1000;
  const peakBytes = procStatus("VmHWM");
  const weightBytes = model instanceof Backbone ? model.weightBytes : NaN;
  const ids = [[510, 3101, 14018, 273, 10213, 282, 11128, 6595]];
  const [[scan], [attention]] = [await model.forward(ids, { mode: "scan" }), await model.forward(ids, { mode: "attention" })];
  let diff = 0, max = 0;
  for (let i = 0; i < scan.length; i++) {
    if (!Number.isFinite(scan[i]) || !Number.isFinite(attention[i])) diff = NaN;
    diff = Math.max(diff, Math.abs(scan[i] - attention[i]));
    max = Math.max(max, Math.abs(scan[i]));
  }
  model.destroy();
  return { shape, dtype, weightBytes, baselineBytes, peakBytes, seconds, modesDiff: diff / max };
}

/** One load in a fresh process. */
async function measureInChild(shape: string, dtype: "f32" | "f16"): Promise<LoadMeasure> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL(import.meta.url).pathname, "--child", "--shape", shape, "--dtype", dtype],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  if (out.code !== 0) throw new Error(`load bench of ${shape} ${dtype}: the child exited with ${out.code}`);
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
}

const GB = 1024 ** 3;

export async function benchLoad(opts: { quick?: boolean; shapes?: string[]; dtypes?: ("f32" | "f16")[] } = {}): Promise<BenchRow[]> {
  const shapes = opts.shapes ?? (opts.quick ? ["mamba2-130m"] : ["mamba2-1.3b"]);
  const dtypes = opts.dtypes ?? (opts.quick ? ["f32"] : ["f32", "f16"]);
  const rows: BenchRow[] = [];
  for (const shape of shapes) {
    for (const dtype of dtypes) {
      const m = await measureInChild(shape, dtype);
      const name = `load ${shape} ${dtype}`;
      rows.push({ name: `${name}: peak resident / weights`, value: m.peakBytes / m.weightBytes, unit: "×", note: `peak ${(m.peakBytes / GB).toFixed(2)} GiB, weights ${(m.weightBytes / GB).toFixed(2)} GiB` });
      rows.push({ name: `${name}: (peak − baseline) / weights`, value: (m.peakBytes - m.baselineBytes) / m.weightBytes, unit: "×", note: `baseline ${(m.baselineBytes / GB).toFixed(2)} GiB (Deno + driver)` });
      rows.push({ name: `${name}: time`, value: m.seconds, unit: "s", note: "synthetic weights made on the fly" });
      if (!(m.modesDiff <= 1e-3)) throw new Error(`${name}: scan and attention mode disagree (${m.modesDiff} of max |logit|) or a logit is not finite`);
    }
  }
  return rows;
}

async function main() {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      child: { type: "boolean", default: false },
      shape: { type: "string", multiple: true, default: [] },
      dtype: { type: "string", multiple: true, default: [] },
    },
    strict: true,
  });
  const dtypes = values.dtype!.map((d) => {
    if (d !== "f32" && d !== "f16") throw new Error(`--dtype ${d}: use f32 or f16`);
    return d;
  });
  if (values.child) {
    console.log(JSON.stringify(await measureHere(values.shape![0] ?? "mamba2-1.3b", dtypes[0] ?? "f32")));
    return;
  }
  const rows = await benchLoad({ shapes: values.shape!.length ? values.shape : undefined, dtypes: dtypes.length ? dtypes : undefined });
  for (const r of rows) console.log(`${r.name}: ${r.value.toFixed(r.unit === "s" ? 1 : 3)} ${r.unit}${r.note ? ` (${r.note})` : ""}`);
}

if (import.meta.main) await runMain(main);
