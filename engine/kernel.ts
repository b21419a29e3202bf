// WGSL kernels as the engine calls them: loaded from kernels/<name>.wgsl, compiled once per device,
// and dispatched with their parameters and buffers BY NAME. The names are checked against the
// kernel's own source: the fields of its `struct Params` (the uniform at binding 0; fields whose
// name starts with `_` are padding, always 0) and the names of its storage bindings. A missing,
// extra or misordered parameter, a missing or extra buffer, or a buffer smaller than what the
// dispatch reads or writes through it is an error before anything is recorded.
import { type Gpu, GpuError, type ParamWord, type Recorder } from "./gpu.ts";

export type ParamType = "u32" | "i32" | "f32";
export interface ParamField {
  name: string;
  type: ParamType;
}
export interface StorageBinding {
  binding: number;
  name: string;
  access: "read" | "read_write";
}

/** A buffer bound for one dispatch, and how many bytes (from its start) the dispatch reads or writes. */
export type Bound = readonly [buffer: GPUBuffer, bytes: number];

export class KernelError extends Error {
  override name = "KernelError";
}

/** The fields of `struct Params` in a WGSL source, in order. */
export function parseParams(code: string, what: string): ParamField[] {
  const m = /struct\s+Params\s*\{([^}]*)\}/.exec(code);
  if (!m) throw new KernelError(`${what}: no struct Params`);
  const body = m[1].split("\n").map((l) => l.replace(/\/\/.*$/, "")).join(" ");
  return body.split(",").map((f) => f.trim()).filter((f) => f !== "").map((f) => {
    const fm = /^(\w+)\s*:\s*(\w+)$/.exec(f);
    if (!fm || !["u32", "i32", "f32"].includes(fm[2])) throw new KernelError(`${what}: Params field "${f}" is not a u32, i32 or f32`);
    return { name: fm[1], type: fm[2] as ParamType };
  });
}

/** The storage bindings of group 0 (binding 0 is the Params uniform), ordered by binding. */
export function parseBindings(code: string, what: string): StorageBinding[] {
  const out: StorageBinding[] = [];
  let uniform = false;
  for (const m of code.matchAll(/@group\(0\)\s*@binding\((\d+)\)\s*var<([^>]*)>\s*(\w+)\s*:/g)) {
    const binding = Number(m[1]), space = m[2].split(",").map((s) => s.trim());
    if (space[0] === "uniform") {
      if (binding !== 0) throw new KernelError(`${what}: the uniform must be binding 0`);
      uniform = true;
    } else if (space[0] === "storage") {
      out.push({ binding, name: m[3], access: space[1] === "read_write" ? "read_write" : "read" });
    }
  }
  if (!uniform) throw new KernelError(`${what}: no uniform Params at binding 0`);
  out.sort((a, b) => a.binding - b.binding);
  out.forEach((b, i) => {
    if (b.binding !== i + 1) throw new KernelError(`${what}: storage bindings must be 1..n without gaps (found ${b.binding} for ${b.name})`);
  });
  return out;
}

/** One compiled kernel and the names its dispatches must use. */
export class Kernel {
  readonly params: ParamField[];
  readonly bindings: StorageBinding[];
  constructor(readonly name: string, readonly pipeline: GPUComputePipeline, code: string) {
    this.params = parseParams(code, `kernel ${name}`);
    this.bindings = parseBindings(code, `kernel ${name}`);
  }

  /** The uniform words of a dispatch: every non-padding field by name, in the struct's order. */
  pack(params: Record<string, number>): ParamWord[] {
    const given = Object.keys(params);
    const wanted = this.params.filter((f) => !f.name.startsWith("_")).map((f) => f.name);
    if (given.join(",") !== wanted.join(",")) {
      throw new KernelError(`kernel ${this.name}: parameters (${given.join(", ")}) do not match its Params (${wanted.join(", ")})`);
    }
    return this.params.map((f): ParamWord => {
      if (f.name.startsWith("_")) return { u: 0 };
      const v = params[f.name];
      const ok = f.type === "f32"
        ? Number.isFinite(v)
        : Number.isInteger(v) && (f.type === "u32" ? v >= 0 && v < 2 ** 32 : v >= -(2 ** 31) && v < 2 ** 31);
      if (!ok) throw new KernelError(`kernel ${this.name}: parameter ${f.name} = ${v} is not a valid ${f.type}`);
      return f.type === "u32" ? { u: v } : f.type === "i32" ? { i: v } : { f: v };
    });
  }

  /** The buffers of a dispatch in binding order, each checked to hold what the dispatch touches. */
  order(buffers: Record<string, Bound>): GPUBuffer[] {
    const given = Object.keys(buffers).sort(), wanted = this.bindings.map((b) => b.name).sort();
    if (given.join(",") !== wanted.join(",")) {
      throw new KernelError(`kernel ${this.name}: buffers (${given.join(", ")}) do not match its bindings (${wanted.join(", ")})`);
    }
    return this.bindings.map((b) => {
      const [buf, bytes] = buffers[b.name];
      if (!Number.isInteger(bytes) || bytes < 0) throw new KernelError(`kernel ${this.name}: ${b.name}: ${bytes} is not a byte count`);
      if (buf.size < bytes) {
        throw new KernelError(`kernel ${this.name}: buffer ${b.name} (${buf.label || "unnamed"}) holds ${buf.size} bytes, the dispatch needs ${bytes}`);
      }
      return buf;
    });
  }

  /**
   * Record one dispatch: `params` by the Params field names (in order), `buffers` by binding name,
   * each with the bytes the dispatch reads or writes; `workgroups` as in Recorder.dispatch.
   */
  dispatch(rec: Recorder, params: Record<string, number>, buffers: Record<string, Bound>, workgroups: number | [number, number, number]): void {
    rec.dispatch(this.pipeline, this.pack(params), this.order(buffers), workgroups);
  }
}

const sources = new Map<string, Promise<string>>();
/** The text of kernels/<name>.wgsl (`name` may be a path such as mamba2/ssd_scan), read once. */
export function kernelSource(name: string): Promise<string> {
  let s = sources.get(name);
  if (!s) sources.set(name, s = Deno.readTextFile(new URL(`../kernels/${name}.wgsl`, import.meta.url)));
  return s;
}

const compiled = new WeakMap<GPUDevice, Map<string, Promise<Kernel>>>();
const variants = new WeakMap<GPUDevice, Map<string, Kernel>>();

function deviceMap<T>(m: WeakMap<GPUDevice, Map<string, T>>, device: GPUDevice): Map<string, T> {
  let x = m.get(device);
  if (!x) m.set(device, x = new Map());
  return x;
}

/** kernels/<name>.wgsl (entry point `main`) compiled for this device, once; compilation errors are a GpuError. */
export function loadKernel(gpu: Gpu, name: string): Promise<Kernel> {
  const cache = deviceMap(compiled, gpu.device);
  let k = cache.get(name);
  if (!k) {
    k = (async () => {
      const code = await kernelSource(name);
      const module = gpu.device.createShaderModule({ code, label: name });
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((m) => m.type === "error");
      if (errors.length) throw new GpuError(`kernels/${name}.wgsl: ${errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("; ")}`);
      const pipeline = await gpu.device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" }, label: name });
      return new Kernel(name, pipeline, code);
    })();
    cache.set(name, k);
    k.catch(() => cache.delete(name));
  }
  return k;
}

/** Load several kernels at once, by name. */
export async function loadKernels<N extends string>(gpu: Gpu, names: readonly N[]): Promise<Record<N, Kernel>> {
  const ks = await Promise.all(names.map((n) => loadKernel(gpu, n)));
  return Object.fromEntries(names.map((n, i) => [n, ks[i]])) as Record<N, Kernel>;
}

/**
 * A kernel built from template sources (matmul blocks, the scan for one d_state): compiled on
 * first use under `key`, then cached per device. Compilation errors surface in the device's error
 * scopes (see the warm-ups that run each variant once).
 */
export function kernelVariant(gpu: Gpu, key: string, code: () => string): Kernel {
  const cache = deviceMap(variants, gpu.device);
  let k = cache.get(key);
  if (!k) {
    const src = code();
    const module = gpu.device.createShaderModule({ code: src, label: key });
    const pipeline = gpu.device.createComputePipeline({ layout: "auto", compute: { module, entryPoint: "main" }, label: key });
    cache.set(key, k = new Kernel(key, pipeline, src));
  }
  return k;
}

/** Check that a source compiles (templates, before their variants are built on demand). */
export async function checkCompiles(gpu: Gpu, code: string, what: string): Promise<void> {
  const info = await gpu.device.createShaderModule({ code }).getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === "error");
  if (errors.length) throw new GpuError(`${what}: ${errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("; ")}`);
}

/**
 * Unroll a kernel template: a line mentioning {v} for a loop variable v of `counts` is repeated
 * for v = 0..counts[v]-1 (a line with several: every combination, first variable outermost).
 */
export function expandLoops(src: string, counts: Record<string, number>): string {
  const out: string[] = [];
  for (const line of src.split("\n")) {
    let lines = [line];
    for (const [v, n] of Object.entries(counts)) {
      const tok = `{${v}}`;
      if (!line.includes(tok)) continue;
      lines = lines.flatMap((l) => Array.from({ length: n }, (_, i) => l.replaceAll(tok, String(i))));
    }
    out.push(...lines);
  }
  return out.join("\n");
}

/** Workgroups of the element-wise kernels (64 lanes). */
export const WG = 64;
export const groups = (n: number) => Math.ceil(n / WG);
/** Bytes of n f32 / u32 values. */
export const f32s = (n: number) => 4 * n;
