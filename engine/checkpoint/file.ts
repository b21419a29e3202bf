// Random access to a large file without loading it: reads at an offset, one at a time per handle
// (seek + read share the handle's position, so concurrent readers must not interleave).

import { CheckpointError } from "./types.ts";

export class RandomAccessFile {
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(readonly path: string, readonly size: number, private readonly file: Deno.FsFile) {}

  static async open(path: string): Promise<RandomAccessFile> {
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      throw new CheckpointError(`${path}: cannot open (${(e as Error).message})`);
    }
    const stat = await file.stat();
    return new RandomAccessFile(path, stat.size, file);
  }

  /** Exactly `length` bytes from `offset` in a fresh buffer; CheckpointError when the file ends first. */
  readAt(offset: number, length: number): Promise<Uint8Array> {
    const run = this.queue.then(() => this.readNow(offset, length));
    this.queue = run.catch(() => {});
    return run;
  }

  private async readNow(offset: number, length: number): Promise<Uint8Array> {
    if (this.closed) throw new CheckpointError(`${this.path}: read after the checkpoint was closed`);
    if (offset < 0 || offset + length > this.size) {
      throw new CheckpointError(
        `${this.path}: truncated (needs bytes ${offset}..${
          offset + length
        } but the file has ${this.size}); download it again`,
      );
    }
    const out = new Uint8Array(length);
    await this.file.seek(offset, Deno.SeekMode.Start);
    let done = 0;
    // Large reads come back in pieces; cap each request so one call never asks the OS for gigabytes.
    const maxChunk = 1 << 28;
    while (done < length) {
      const n = await this.file.read(out.subarray(done, Math.min(length, done + maxChunk)));
      if (n === null || n === 0) {
        throw new CheckpointError(`${this.path}: file ended at byte ${offset + done} while reading; download it again`);
      }
      done += n;
    }
    return out;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.file.close();
  }
}
