// Loading a checkpoint's tensors onto the GPU, for every family: matrices as Weights (f32 or f16,
// split in row chunks that fit a binding) and vectors as f32 buffers. Tensors are streamed from the
// checkpoint in pieces of at most PIECE_BYTES, each copied into one staging buffer that is reused
// for the whole load and copied from there into the weights' buffers, so that loading holds the
// weights on the GPU plus one piece and one staging buffer, never a second copy of the checkpoint.
// A matrix re-arranged on the host first (a Transformer's fused qkv, GPT-2's transposes) goes
// through the same staging buffer (matrixFrom).
// (On lavapipe, where GPU memory is host memory, a load used to peak near twice the weights' size:
// queue.writeBuffer keeps a staging copy of each write until the queue is next submitted, and
// loading submitted nothing until the end. Submitting after each write frees them, but copies of
// under 32 MiB come from the allocator's heaps, which the driver's threads leave fragmented: 10-20 %
// above the weights. One reused staging buffer allocates nothing per write. bench/load_bench.ts.)
import type { Checkpoint } from "./checkpoint/mod.ts";
import { type Gpu, storageBuffer } from "./gpu.ts";
import type { Weight, WeightDtype } from "./matmul.ts";
import { numel } from "./tensors.ts";

/** The most bytes of one tensor read from the checkpoint and written to the GPU at a time; also the staging buffer's size. */
export const PIECE_BYTES = 32 << 20;

export class WeightLoader {
  /** the host buffer of the pieces, reused from one to the next */
  private piece?: Float32Array | Uint16Array;
  private padded = new Uint16Array(0);
  /** MAP_WRITE staging, mapped while it is filled; the copies out of it wait for the next flush */
  private staging?: { buffer: GPUBuffer; bytes: Uint8Array; at: number; copies: { dst: GPUBuffer; dstOffset: number; from: number; size: number }[] };

  /** bytes of every buffer this loader made (the weights on the GPU) */
  bytes = 0;

  constructor(readonly gpu: Gpu, readonly ckpt: Checkpoint, readonly dtype: WeightDtype) {}

  private buffer(bytes: number, label: string): GPUBuffer {
    const b = storageBuffer(this.gpu, bytes, label);
    this.bytes += b.size;
    return b;
  }

  /**
   * The embedding (vocabPadded, dModel) and the LM head: the embedding itself when tied (or when an
   * optional head is absent), else its own matrix.
   */
  async head(embedding: string, lmHead: string, c: { vocabPadded: number; dModel: number; tieEmbeddings: boolean }): Promise<{ embedding: Weight; lmHead: Weight }> {
    const emb = await this.matrix(embedding, c.vocabPadded, c.dModel);
    const head = c.tieEmbeddings || !this.ckpt.has(lmHead) ? emb : await this.matrix(lmHead, c.vocabPadded, c.dModel);
    return { embedding: emb, lmHead: head };
  }

  /** Copy what the staging buffer holds into the weights' buffers and wait until it is free again. */
  async flush(): Promise<void> {
    const st = this.staging;
    if (!st || st.copies.length === 0) return;
    st.buffer.unmap();
    const enc = this.gpu.device.createCommandEncoder();
    for (const c of st.copies) enc.copyBufferToBuffer(st.buffer, c.from, c.dst, c.dstOffset, c.size);
    this.gpu.device.queue.submit([enc.finish()]);
    await st.buffer.mapAsync(GPUMapMode.WRITE);
    st.bytes = new Uint8Array(st.buffer.getMappedRange());
    st.at = 0;
    st.copies = [];
  }

  /** Flush and free the staging buffer (the end of a load). */
  async finish(): Promise<void> {
    await this.flush();
    this.staging?.buffer.destroy();
    this.staging = undefined;
    await this.gpu.device.queue.onSubmittedWorkDone();
  }

  /** Queue `data` (a multiple of 4 bytes, at most PIECE_BYTES) for `dst` at `dstOffset`. */
  private async write(dst: GPUBuffer, dstOffset: number, data: ArrayBufferView): Promise<void> {
    const size = Math.ceil(data.byteLength / 4) * 4;
    if (size > PIECE_BYTES) throw new Error(`a write of ${size} bytes exceeds the staging buffer's ${PIECE_BYTES}`);
    if (!this.staging) {
      const buffer = this.gpu.device.createBuffer({ size: PIECE_BYTES, usage: GPUBufferUsage.MAP_WRITE | GPUBufferUsage.COPY_SRC, mappedAtCreation: true, label: "load_staging" });
      this.staging = { buffer, bytes: new Uint8Array(buffer.getMappedRange()), at: 0, copies: [] };
    }
    if (this.staging.at + size > PIECE_BYTES) await this.flush();
    const st = this.staging;
    st.bytes.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), st.at);
    st.bytes.fill(0, st.at + data.byteLength, st.at + size);
    st.copies.push({ dst, dstOffset, from: st.at, size });
    st.at += size;
  }

  /** A tensor's values in f32 on the host (small tensors: vectors, A_log). */
  f32(name: string): Promise<Float32Array> {
    return this.ckpt.readF32(name);
  }

  /** A tensor (or `values`, labelled `name`) as an f32 storage buffer, written in pieces of at most PIECE_BYTES. */
  async vector(name: string, values?: Float32Array): Promise<GPUBuffer> {
    const data = values ?? await this.ckpt.readF32(name);
    const buf = this.buffer(data.byteLength, name);
    const per = PIECE_BYTES / 4;
    for (let i = 0; i < data.length; i += per) await this.write(buf, i * 4, data.subarray(i, i + per));
    return buf;
  }

  /**
   * A (rows, cols) matrix as a Weight in the loader's dtype (`rowsFrom` of the tensor's rows, default
   * all: the rows [rowsFrom, rowsFrom + rows)), read and written piece by piece.
   */
  matrix(name: string, rows: number, cols: number, rowsFrom = 0): Promise<Weight> {
    const info = this.ckpt.info(name);
    const tensorRows = info.shape[0] ?? 1;
    if (numel(info.shape) !== tensorRows * cols || rowsFrom + rows > tensorRows) {
      throw new Error(`${name}: [${info.shape}] has no rows ${rowsFrom}..${rowsFrom + rows} of ${cols} values`);
    }
    this.piece ??= this.dtype === "f16" ? new Uint16Array(PIECE_BYTES / 2) : new Float32Array(PIECE_BYTES / 4);
    return this.rows(name, rows, cols, (first, m) =>
      this.dtype === "f16"
        ? this.ckpt.readF16Rows(name, rowsFrom + first, m, this.piece as Uint16Array)
        : this.ckpt.readF32Rows(name, rowsFrom + first, m, this.piece as Float32Array));
  }

  /**
   * A row-major (rows, cols) matrix made on the host (a tensor re-arranged into the engine's layout)
   * as a Weight, written through the staging buffer like `matrix`: f16 bits when the loader's dtype
   * is f16, else f32 values.
   */
  matrixFrom(label: string, data: Float32Array | Uint16Array, rows: number, cols: number): Promise<Weight> {
    if (data.length !== rows * cols) throw new Error(`${label}: expected ${rows}x${cols} values, got ${data.length}`);
    if ((data instanceof Uint16Array) !== (this.dtype === "f16")) throw new Error(`${label}: ${data.constructor.name} values for ${this.dtype} weights`);
    return this.rows(label, rows, cols, (first, m) => Promise.resolve(data.subarray(first * cols, (first + m) * cols)));
  }

  /** A Weight of (rows, cols) in row chunks, its rows [first, first + m) given piece by piece by `piece`. */
  private async rows(label: string, rows: number, cols: number, piece: (first: number, m: number) => Promise<Float32Array | Uint16Array>): Promise<Weight> {
    const dtype = this.dtype;
    const stride = dtype === "f16" ? Math.ceil(cols / 8) * 8 : cols;
    const bytesPerRow = stride * (dtype === "f16" ? 2 : 4);
    const rowsPerChunk = Math.max(1, Math.floor(this.gpu.maxBinding / bytesPerRow));
    const rowsPerPiece = Math.max(1, Math.floor(PIECE_BYTES / bytesPerRow));
    const chunks: Weight["chunks"] = [];
    for (let r0 = 0; r0 < rows; r0 += rowsPerChunk) {
      const n = Math.min(rowsPerChunk, rows - r0);
      const buffer = this.buffer(n * bytesPerRow, `${label}[${r0}:${r0 + n}]`);
      chunks.push({ buffer, rowStart: r0, rows: n });
      for (let p0 = 0; p0 < n; p0 += rowsPerPiece) {
        const m = Math.min(rowsPerPiece, n - p0);
        let data = await piece(r0 + p0, m);
        if (stride !== cols) {
          if (this.padded.length < m * stride) this.padded = new Uint16Array(m * stride);
          const padded = this.padded.subarray(0, m * stride).fill(0);
          for (let r = 0; r < m; r++) padded.set((data as Uint16Array).subarray(r * cols, (r + 1) * cols), r * stride);
          data = padded;
        }
        await this.write(buffer, p0 * bytesPerRow, data);
      }
    }
    return { rows, cols, dtype, stride, chunks };
  }
}
