// Random access to a large file without loading it: reads at an offset, one at a time per handle
// (seek + read share the handle's position, so concurrent readers must not interleave).
// Also the one way small metadata files (config.json, shard indexes, tokenizer.json, ...) are read:
// regular files only (a FIFO would block, /dev/zero never ends) and never more than a stated bound.

import { CheckpointError } from "./types.ts";

type Fail = (message: string) => Error;
const checkpointFail: Fail = (message) => new CheckpointError(message);

/** What kind of non-regular file `info` is, for messages. */
function kindOf(info: Deno.FileInfo): string {
  if (info.isDirectory) return "a directory";
  if (info.isFifo) return "a FIFO (named pipe)";
  if (info.isCharDevice) return "a character device";
  if (info.isBlockDevice) return "a block device";
  if (info.isSocket) return "a socket";
  return "not a regular file";
}

/**
 * Stat `path` (following links) and refuse anything but a regular file, before anything opens it:
 * opening a FIFO for reading blocks until a writer comes.
 */
export async function statRegularFile(path: string, fail: Fail = checkpointFail): Promise<Deno.FileInfo> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.stat(path);
  } catch (e) {
    throw fail(`${path}: cannot open (${(e as Error).message})`);
  }
  if (!info.isFile) throw fail(`${path} is ${kindOf(info)}, not a regular file; point it at the real file`);
  return info;
}

export function formatBytes(n: number): string {
  if (n >= 1 << 30) return `${(n / (1 << 30)).toFixed(1)} GiB`;
  if (n >= 1 << 20) return `${(n / (1 << 20)).toFixed(1)} MiB`;
  if (n >= 1 << 10) return `${(n / (1 << 10)).toFixed(1)} KiB`;
  return `${n} bytes`;
}

/**
 * The whole of a small regular file, at most `maxBytes` (checked on the size and again while
 * reading, so a file that grows meanwhile is refused too). `what` names the file's role in errors.
 */
export async function readBoundedFile(
  path: string,
  maxBytes: number,
  what: string,
  fail: Fail = checkpointFail,
): Promise<Uint8Array> {
  const info = await statRegularFile(path, fail);
  const tooBig = () =>
    fail(`${path} is larger than ${formatBytes(maxBytes)}, more than any ${what} needs; it is not a ${what}`);
  if (info.size > maxBytes) throw tooBig();
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    throw fail(`${path}: cannot open (${(e as Error).message})`);
  }
  // Sized by the stat, grown if the file is longer than it said, never past maxBytes + 1.
  let out = new Uint8Array(Math.min(maxBytes, info.size) + 1);
  let done = 0;
  try {
    // The path may have been replaced between stat and open: check the opened file itself.
    if (!(await file.stat()).isFile) throw fail(`${path} is not a regular file; point it at the real file`);
    while (true) {
      if (done === out.length) {
        if (done > maxBytes) break;
        const grown = new Uint8Array(Math.min(maxBytes + 1, out.length * 2));
        grown.set(out);
        out = grown;
      }
      let n: number | null;
      try {
        n = await file.read(out.subarray(done));
      } catch (e) {
        throw fail(`${path}: cannot read (${(e as Error).message})`);
      }
      if (n === null) break;
      done += n;
    }
  } finally {
    file.close();
  }
  if (done > maxBytes) throw tooBig();
  return out.slice(0, done);
}

/** A small UTF-8 text file, bounded like readBoundedFile. */
export async function readBoundedText(
  path: string,
  maxBytes: number,
  what: string,
  fail: Fail = checkpointFail,
): Promise<string> {
  const bytes = await readBoundedFile(path, maxBytes, what, fail);
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw fail(`${path} is not UTF-8 text; it is not a ${what}`);
  }
}

/** A small JSON file, bounded like readBoundedFile; a parse error names the file. */
export async function readBoundedJson(
  path: string,
  maxBytes: number,
  what: string,
  fail: Fail = checkpointFail,
): Promise<unknown> {
  const text = await readBoundedText(path, maxBytes, what, fail);
  try {
    return JSON.parse(text);
  } catch (e) {
    throw fail(`${path} is not valid JSON (${(e as Error).message}); it is not a ${what}`);
  }
}

export class RandomAccessFile {
  private queue: Promise<unknown> = Promise.resolve();
  private closed = false;

  private constructor(readonly path: string, readonly size: number, private readonly file: Deno.FsFile) {}

  static async open(path: string): Promise<RandomAccessFile> {
    await statRegularFile(path);
    let file: Deno.FsFile;
    try {
      file = await Deno.open(path, { read: true });
    } catch (e) {
      throw new CheckpointError(`${path}: cannot open (${(e as Error).message})`);
    }
    const stat = await file.stat();
    if (!stat.isFile) {
      file.close();
      throw new CheckpointError(`${path} is not a regular file; point it at the real file`);
    }
    return new RandomAccessFile(path, stat.size, file);
  }

  /**
   * Exactly `length` bytes from `offset` in a fresh buffer (or in the start of `into`, when given and
   * long enough); CheckpointError when the file ends first.
   */
  readAt(offset: number, length: number, into?: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
    const run = this.queue.then(() => this.readNow(offset, length, into));
    this.queue = run.catch(() => {});
    return run;
  }

  private async readNow(offset: number, length: number, into?: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
    if (this.closed) throw new CheckpointError(`${this.path}: read after the checkpoint was closed`);
    if (offset < 0 || offset + length > this.size) {
      throw new CheckpointError(
        `${this.path}: truncated (needs bytes ${offset}..${
          offset + length
        } but the file has ${this.size}); download it again`,
      );
    }
    const out = into && into.length >= length ? into.subarray(0, length) : new Uint8Array(length);
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
