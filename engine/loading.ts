// Loading a checkpoint's tensors onto the GPU, for every family: matrices as Weights (f32 or f16,
// split in row chunks that fit a binding) and vectors as f32 buffers. Tensors are streamed from the
// checkpoint in pieces of at most PIECE_BYTES, each written into its GPU buffer and the queue's
// copies flushed before the next piece is read, so that loading holds the weights on the GPU plus a
// few pieces in flight, never a second copy of the checkpoint (on lavapipe, where GPU memory is host
// memory, a load peaked near twice the weights' size while every queued write kept its staging copy
// until the first submission).
import type { Checkpoint } from "./checkpoint/mod.ts";
import { float32ToHalf, halfToFloat32 } from "./checkpoint/dtype.ts";
import { type Gpu, storageBuffer, writeBuffer } from "./gpu.ts";
import type { Weight, WeightDtype } from "./matmul.ts";
import { numel } from "./tensors.ts";

/** The most bytes of one tensor read from the checkpoint at a time. */
export const PIECE_BYTES = 32 << 20;

export class WeightLoader {
  /** bytes written to the queue since the last flush */
  private pending = 0;

  constructor(readonly gpu: Gpu, readonly ckpt: Checkpoint, readonly dtype: WeightDtype) {}

  /** Submit the queue's pending writes and wait until they are applied (their staging copies freed). */
  async flush(): Promise<void> {
    this.gpu.device.queue.submit([]);
    await this.gpu.device.queue.onSubmittedWorkDone();
    this.pending = 0;
  }

  private async wrote(bytes: number): Promise<void> {
    this.pending += bytes;
    if (this.pending >= PIECE_BYTES) await this.flush();
  }

  /** A tensor's values in f32 on the host (small tensors: vectors, A_log). */
  f32(name: string): Promise<Float32Array> {
    return this.ckpt.readF32(name);
  }

  /** A tensor as an f32 storage buffer (small tensors). */
  async vector(name: string, values?: Float32Array): Promise<GPUBuffer> {
    const data = values ?? await this.ckpt.readF32(name);
    const buf = storageBuffer(this.gpu, data.byteLength, name);
    writeBuffer(this.gpu, buf, data);
    await this.wrote(data.byteLength);
    return buf;
  }

  /**
   * A (rows, cols) matrix as a Weight in the loader's dtype (`rowsFrom` of the tensor's rows, default
   * all: the rows [rowsFrom, rowsFrom + rows)), read and written piece by piece.
   */
  async matrix(name: string, rows: number, cols: number, rowsFrom = 0): Promise<Weight> {
    const dtype = this.dtype;
    const info = this.ckpt.info(name);
    const tensorRows = info.shape[0] ?? 1;
    if (numel(info.shape) !== tensorRows * cols || rowsFrom + rows > tensorRows) {
      throw new Error(`${name}: [${info.shape}] has no rows ${rowsFrom}..${rowsFrom + rows} of ${cols} values`);
    }
    const stride = dtype === "f16" ? Math.ceil(cols / 8) * 8 : cols;
    const bytesPerRow = stride * (dtype === "f16" ? 2 : 4);
    const rowsPerChunk = Math.max(1, Math.floor(this.gpu.maxBinding / bytesPerRow));
    const rowsPerPiece = Math.max(1, Math.floor(PIECE_BYTES / (cols * 4)));
    const chunks: Weight["chunks"] = [];
    for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
      const n = Math.min(rowsPerChunk, rows - r0);
      const buffer = storageBuffer(this.gpu, n * bytesPerRow, `${name}[${r0}:${r0 + n}]`);
      chunks.push({ buffer, rowStart: r0, rows: n });
      for (let p0 = 0; p0 < n; p0 += rowsPerPiece) {
        const m = Math.min(rowsPerPiece, n - p0);
        const first = rowsFrom + r0 + p0;
        let piece: Float32Array | Uint16Array = dtype === "f16" ? await this.ckpt.readF16Rows(name, first, m) : await this.ckpt.readF32Rows(name, first, m);
        if (dtype === "f32" && piece instanceof Uint16Array) piece = halfToFloat32(piece);
        if (dtype === "f16" && piece instanceof Float32Array) piece = float32ToHalf(piece);
        if (stride !== cols) {
          const padded = new Uint16Array(m * stride);
          for (let r = 0; r < m; r++) padded.set((piece as Uint16Array).subarray(r * cols, (r + 1) * cols), r * stride);
          piece = padded;
        }
        writeBuffer(this.gpu, buffer, piece, p0 * bytesPerRow);
        await this.wrote(piece.byteLength);
      }
    }
    return { rows, cols, dtype, stride, chunks };
  }
}
