// Shared types of the checkpoint readers. mod.ts re-exports the public ones.

export type DType = "F32" | "F16" | "BF16";

export interface TensorInfo {
  name: string;
  dtype: DType;
  shape: number[];
}

/** One line naming the problem and what to do about it. */
export class CheckpointError extends Error {
  override name = "CheckpointError";
}

/** A weight file format as the Checkpoint sees it: names, shapes and raw contiguous bytes. */
export interface TensorSource {
  readonly format: "safetensors" | "pytorch";
  /** Absolute paths of the weight files actually read (they make up the identity). */
  readonly files: string[];
  /** Readable tensors in file order. */
  readonly tensors: Map<string, TensorInfo>;
  /** Tensors present in the file with a dtype this engine cannot read, name -> dtype as the file spells it. */
  readonly unsupported: Map<string, string>;
  /**
   * The tensor's elements, contiguous row-major, little-endian, in its own dtype, in a fresh buffer
   * (byteOffset 0, so typed-array views of it are aligned).
   */
  readBytes(name: string): Promise<Uint8Array>;
  /**
   * `length` bytes of the tensor's contiguous data from byte `offset` (in the start of `into` when
   * given and long enough, else a fresh buffer), read from the file without the rest; formats that
   * cannot read part of a tensor leave it out.
   */
  readBytesRange?(name: string, offset: number, length: number, into?: Uint8Array<ArrayBuffer>): Promise<Uint8Array>;
  close(): void;
}

export function bytesPerElement(dtype: DType): number {
  return dtype === "F32" ? 4 : 2;
}

export function numelOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function fmtShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}
