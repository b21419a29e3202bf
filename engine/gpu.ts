// GPU plumbing: device creation with the adapter's own limits, buffers, compute pipelines,
// dispatch and read-back. Nothing here knows about Mamba-2.
import { profile } from "./profile.ts";

export class GpuError extends Error {
  override name = "GpuError";
}

export interface Gpu {
  device: GPUDevice;
  adapterInfo: string;
  limits: GPUSupportedLimits;
  hasF16: boolean;
  /** Largest storage binding, a multiple of 16 bytes. */
  maxBinding: number;
  /** A CPU driver (lavapipe/llvmpipe, SwiftShader, any fallback adapter): the matmul plans are not tuned there (engine/matmul_tune.ts). */
  cpu: boolean;
  /** What is tuned per adapter is kept under this: vendor, architecture, device, description (Mesa's names its LLVM), Deno's version (its wgpu). */
  adapterKey: string;
}

const NO_ADAPTER_HELP = "no WebGPU adapter found: install a Vulkan driver (Debian/Ubuntu: apt-get install mesa-vulkan-drivers " +
  "gives the CPU driver lavapipe) or run on a machine with a Vulkan/Metal GPU";

export async function createGpu(): Promise<Gpu> {
  if (!Deno.env.get("XDG_RUNTIME_DIR")) Deno.env.set("XDG_RUNTIME_DIR", "/tmp");
  if (!("gpu" in navigator)) throw new GpuError(NO_ADAPTER_HELP);
  const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new GpuError(NO_ADAPTER_HELP);
  // Ask for everything the adapter offers: real GPUs bind far more than the WebGPU defaults.
  const wanted: (keyof GPUSupportedLimits)[] = [
    "maxStorageBufferBindingSize",
    "maxBufferSize",
    "maxComputeWorkgroupStorageSize",
    "maxStorageBuffersPerShaderStage",
    "maxComputeInvocationsPerWorkgroup",
    "maxComputeWorkgroupSizeX",
    "maxComputeWorkgroupSizeY",
    "maxComputeWorkgroupsPerDimension",
  ];
  const requiredLimits: Record<string, number> = {};
  for (const k of wanted) requiredLimits[k] = adapter.limits[k] as number;
  const hasF16 = adapter.features.has("shader-f16");
  const device = await adapter.requestDevice({
    requiredLimits,
    requiredFeatures: hasF16 ? ["shader-f16"] : [],
  });
  const info = adapter.info;
  // vendor/architecture are often bare ids ("65541", "0"): keep only the words
  const words = [info.description, info.device, info.vendor, info.architecture].filter((s) => s && !/^\d+$/.test(s));
  const adapterInfo = [...new Set(words)].join(" / ") || "unknown adapter";
  const maxBinding = Math.floor(Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize) / 16) * 16;
  const cpu = (info as GPUAdapterInfo & { isFallbackAdapter?: boolean }).isFallbackAdapter === true || /llvmpipe|lavapipe|swiftshader/i.test(info.description);
  const adapterKey = [info.vendor, info.architecture, info.device, info.description, Deno.version.deno].join("|");
  return { device, adapterInfo, limits: device.limits, hasF16, maxBinding, cpu, adapterKey };
}

const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;

/** A storage buffer of at least 16 bytes (zero-sized bindings are invalid). */
export function storageBuffer(gpu: Gpu, bytes: number, label?: string): GPUBuffer {
  const size = Math.max(16, Math.ceil(bytes / 4) * 4);
  if (size > gpu.maxBinding) {
    throw new GpuError(`buffer ${label ?? ""} of ${size} bytes exceeds the adapter's largest binding (${gpu.maxBinding})`);
  }
  return gpu.device.createBuffer({ size, usage: STORAGE, label });
}

export function uploadBuffer(gpu: Gpu, data: ArrayBufferView, label?: string): GPUBuffer {
  const buf = storageBuffer(gpu, data.byteLength, label);
  writeBuffer(gpu, buf, data);
  return buf;
}

export function writeBuffer(gpu: Gpu, buf: GPUBuffer, data: ArrayBufferView, offset = 0): void {
  // writeBuffer wants a multiple of 4 bytes
  const bytes = new Uint8Array(data.buffer as ArrayBuffer, data.byteOffset, data.byteLength);
  if (bytes.byteLength % 4 === 0) {
    gpu.device.queue.writeBuffer(buf, offset, bytes);
  } else {
    const padded = new Uint8Array(Math.ceil(bytes.byteLength / 4) * 4);
    padded.set(bytes);
    gpu.device.queue.writeBuffer(buf, offset, padded);
  }
}

/** Uniform parameters: a flat list of u32/i32/f32 words, described by the kernel's Params struct. */
export type ParamWord = { u: number } | { i: number } | { f: number };
export function packParams(words: ParamWord[]): Uint32Array<ArrayBuffer> {
  const n = Math.max(4, Math.ceil(words.length / 4) * 4); // uniform structs are 16-byte aligned
  const out = new ArrayBuffer(n * 4);
  const u = new Uint32Array(out), i = new Int32Array(out), f = new Float32Array(out);
  words.forEach((w, k) => {
    if ("u" in w) u[k] = w.u;
    else if ("i" in w) i[k] = w.i;
    else f[k] = w.f;
  });
  return u;
}

const kernelCache = new WeakMap<GPUDevice, Map<string, GPUComputePipeline>>();

/** Compute pipeline for kernels/<name>.wgsl (entry point `main`), compiled once per device. */
export async function kernel(gpu: Gpu, name: string): Promise<GPUComputePipeline> {
  let cache = kernelCache.get(gpu.device);
  if (!cache) kernelCache.set(gpu.device, cache = new Map());
  const hit = cache.get(name);
  if (hit) return hit;
  const code = await Deno.readTextFile(new URL(`../kernels/${name}.wgsl`, import.meta.url));
  const module = gpu.device.createShaderModule({ code, label: name });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === "error");
  if (errors.length) {
    throw new GpuError(`kernels/${name}.wgsl: ${errors.map((m) => `${m.lineNum}:${m.linePos} ${m.message}`).join("; ")}`);
  }
  const pipeline = await gpu.device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" }, label: name });
  cache.set(name, pipeline);
  return pipeline;
}

/**
 * Records compute passes into one command encoder; buffers made for its uniforms are freed
 * after submission. One Recorder = one submit.
 */
export class Recorder {
  readonly encoder: GPUCommandEncoder;
  private readonly transient: GPUBuffer[] = [];
  constructor(readonly gpu: Gpu) {
    this.encoder = gpu.device.createCommandEncoder();
  }

  /** Own a temporary buffer until submit. */
  temp(buf: GPUBuffer): GPUBuffer {
    this.transient.push(buf);
    return buf;
  }

  /**
   * Dispatch `pipeline` over `invocations` linear work items in workgroups of `workgroupSize`;
   * counts beyond the per-dimension limit spill into y (kernels compute the linear id from
   * num_workgroups). Binding 0 is the uniform params, then the storage buffers in order.
   */
  dispatch(pipeline: GPUComputePipeline, params: ParamWord[], buffers: GPUBuffer[], workgroups: number | [number, number, number]): void {
    const device = this.gpu.device;
    const packed = packParams(params);
    const ubuf = this.temp(device.createBuffer({ size: packed.byteLength, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST }));
    device.queue.writeBuffer(ubuf, 0, packed);
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: ubuf } }];
    buffers.forEach((b, k) => entries.push({ binding: k + 1, resource: { buffer: b } }));
    const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const pass = this.encoder.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    const [x, y, z] = typeof workgroups === "number" ? splitWorkgroups(this.gpu, workgroups) : workgroups;
    if (x > 0 && y > 0 && z > 0) pass.dispatchWorkgroups(x, y, z);
    pass.end();
  }

  copy(src: GPUBuffer, srcOffset: number, dst: GPUBuffer, dstOffset: number, bytes: number): void {
    this.encoder.copyBufferToBuffer(src, srcOffset, dst, dstOffset, bytes);
  }

  submit(): void {
    const commands = this.encoder.finish();
    // Deno's onSubmittedWorkDone() waits for the device before it returns its promise: the device's
    // time is spent in these two calls (on lavapipe, the kernels' whole run)
    const done = profile.timeSync("gpu", () => {
      this.gpu.device.queue.submit([commands]);
      return this.gpu.device.queue.onSubmittedWorkDone();
    });
    const bufs = this.transient.splice(0);
    done.then(() => bufs.forEach((b) => b.destroy()));
  }
}

/** Split a 1-D workgroup count into (x, y, 1) within maxComputeWorkgroupsPerDimension. */
export function splitWorkgroups(gpu: Gpu, count: number): [number, number, number] {
  const max = gpu.limits.maxComputeWorkgroupsPerDimension;
  if (count <= max) return [count, 1, 1];
  const y = Math.ceil(count / max);
  return [Math.ceil(count / y), y, 1];
}

/** Copy `bytes` from a storage buffer back to the host. */
export async function readBuffer(gpu: Gpu, src: GPUBuffer, bytes: number, srcOffset = 0): Promise<ArrayBuffer> {
  const size = Math.ceil(bytes / 4) * 4;
  const staging = gpu.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const enc = gpu.device.createCommandEncoder();
  enc.copyBufferToBuffer(src, srcOffset, staging, 0, size);
  gpu.device.queue.submit([enc.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = staging.getMappedRange().slice(0, bytes);
  staging.unmap();
  staging.destroy();
  return out;
}
