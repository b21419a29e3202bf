// Reading entries of a zip archive in place: the central directory at the end of the file lists
// every entry; each entry's bytes are read only when asked for. Supports zip64 (archives and
// entries over 4 GB, as torch writes for large models), stored entries (torch's default) and deflate.
//
// Sizes in the directory are never trusted with memory: a deflated entry is inflated as a stream
// into a buffer of the size the caller needs, and refused the moment it produces more bytes than
// the directory declared (a zip bomb declares little and inflates to gigabytes); a declared size
// that deflate cannot reach from the compressed bytes is refused when the directory is read.

import { formatBytes, type RandomAccessFile } from "./file.ts";
import { CheckpointError } from "./types.ts";

const EOCD_SIGNATURE = 0x06054b50;
const ZIP64_LOCATOR_SIGNATURE = 0x07064b50;
const ZIP64_EOCD_SIGNATURE = 0x06064b50;
const CENTRAL_SIGNATURE = 0x02014b50;
const LOCAL_SIGNATURE = 0x04034b50;
const U32_MAX = 0xffffffff;
const U16_MAX = 0xffff;
/** Deflate expands at most 1032:1 (zlib's documented limit); the slack covers tiny entries. */
const MAX_DEFLATE_RATIO = 1032;
const DEFLATE_SLACK_BYTES = 1024;
/** Compressed bytes read from the file at a time. */
const INFLATE_READ = 4 << 20;
/**
 * Compressed bytes handed to the inflater at a time: it expands a whole slice before backpressure can
 * act, so a slice bounds the transient output (16 KiB -> at most ~16 MiB, at deflate's 1032:1).
 */
const INFLATE_SLICE = 16 << 10;

export interface ZipEntry {
  name: string;
  method: number; // 0 stored, 8 deflate
  compressedSize: number;
  size: number;
  localHeaderOffset: number;
}

function u64(view: DataView, at: number): number {
  const v = view.getBigUint64(at, true);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError("zip64 value beyond 2^53");
  return Number(v);
}

export class ZipArchive {
  private dataStarts = new Map<string, number>();

  private constructor(private readonly file: RandomAccessFile, readonly entries: Map<string, ZipEntry>) {}

  static async open(file: RandomAccessFile): Promise<ZipArchive> {
    const path = file.path;
    const notZip = () =>
      new CheckpointError(
        `${path}: not a complete zip archive (no end-of-central-directory record); the file is truncated or corrupt, download it again`,
      );
    // The end record is 22 bytes plus a comment of up to 65535 bytes.
    const tailLength = Math.min(file.size, 22 + 65535);
    if (tailLength < 22) throw notZip();
    const tailStart = file.size - tailLength;
    const tail = await file.readAt(tailStart, tailLength);
    const tailView = new DataView(tail.buffer);
    let eocd = -1;
    for (let i = tailLength - 22; i >= 0; i--) {
      if (tailView.getUint32(i, true) === EOCD_SIGNATURE && i + 22 + tailView.getUint16(i + 20, true) === tailLength) {
        eocd = i;
        break;
      }
    }
    if (eocd < 0) throw notZip();
    let entryCount = tailView.getUint16(eocd + 10, true);
    let directorySize = tailView.getUint32(eocd + 12, true);
    let directoryOffset = tailView.getUint32(eocd + 16, true);
    if (entryCount === U16_MAX || directorySize === U32_MAX || directoryOffset === U32_MAX) {
      // zip64: a locator just before the end record points at the zip64 end record.
      const locatorAt = eocd - 20;
      if (locatorAt < 0 || tailView.getUint32(locatorAt, true) !== ZIP64_LOCATOR_SIGNATURE) throw notZip();
      const recordOffset = u64(tailView, locatorAt + 8);
      if (recordOffset + 56 > file.size) throw notZip();
      const record = new DataView((await file.readAt(recordOffset, 56)).buffer);
      if (record.getUint32(0, true) !== ZIP64_EOCD_SIGNATURE) throw notZip();
      entryCount = u64(record, 32);
      directorySize = u64(record, 40);
      directoryOffset = u64(record, 48);
    }
    if (directoryOffset + directorySize > file.size) {
      throw new CheckpointError(
        `${path}: the zip directory lies beyond the end of the file; the file is truncated or corrupt`,
      );
    }
    const directory = await file.readAt(directoryOffset, directorySize);
    const view = new DataView(directory.buffer);
    const decoder = new TextDecoder();
    const entries = new Map<string, ZipEntry>();
    let at = 0;
    for (let i = 0; i < entryCount; i++) {
      if (at + 46 > directorySize || view.getUint32(at, true) !== CENTRAL_SIGNATURE) {
        throw new CheckpointError(`${path}: zip directory entry ${i} is malformed; the file is corrupt`);
      }
      const method = view.getUint16(at + 10, true);
      let compressedSize = view.getUint32(at + 20, true);
      let size = view.getUint32(at + 24, true);
      const nameLength = view.getUint16(at + 28, true);
      const extraLength = view.getUint16(at + 30, true);
      const commentLength = view.getUint16(at + 32, true);
      let localHeaderOffset = view.getUint32(at + 42, true);
      if (at + 46 + nameLength + extraLength + commentLength > directorySize) {
        throw new CheckpointError(`${path}: zip directory entry ${i} is malformed; the file is corrupt`);
      }
      const name = decoder.decode(directory.subarray(at + 46, at + 46 + nameLength));
      // The zip64 extra field holds, in this order, only the values whose 32-bit slot is saturated.
      let extraAt = at + 46 + nameLength;
      const extraEnd = extraAt + extraLength;
      while (extraAt + 4 <= extraEnd) {
        const id = view.getUint16(extraAt, true);
        const length = view.getUint16(extraAt + 2, true);
        if (id === 0x0001) {
          let p = extraAt + 4;
          const take = () => {
            if (p + 8 > extraAt + 4 + length) {
              throw new CheckpointError(`${path}: zip64 field of '${name}' is too short; the file is corrupt`);
            }
            const v = u64(view, p);
            p += 8;
            return v;
          };
          if (size === U32_MAX) size = take();
          if (compressedSize === U32_MAX) compressedSize = take();
          if (localHeaderOffset === U32_MAX) localHeaderOffset = take();
        }
        extraAt += 4 + length;
      }
      if (method === 0 && compressedSize !== size) {
        throw new CheckpointError(
          `${path}: zip entry '${name}' is stored uncompressed but declares ${size} bytes in ${compressedSize}; the file is corrupt`,
        );
      }
      if (method === 8 && size > compressedSize * MAX_DEFLATE_RATIO + DEFLATE_SLACK_BYTES) {
        throw new CheckpointError(
          `${path}: zip entry '${name}' declares ${formatBytes(size)} from ${
            formatBytes(compressedSize)
          } of deflate data, more than deflate can expand to; the file is corrupt or a zip bomb`,
        );
      }
      entries.set(name, { name, method, compressedSize, size, localHeaderOffset });
      at += 46 + nameLength + extraLength + commentLength;
    }
    return new ZipArchive(file, entries);
  }

  /** Offset of the entry's bytes: after its local header, whose name/extra lengths may differ from the directory's. */
  private async dataStart(entry: ZipEntry): Promise<number> {
    const known = this.dataStarts.get(entry.name);
    if (known !== undefined) return known;
    const header = new DataView((await this.file.readAt(entry.localHeaderOffset, 30)).buffer);
    if (header.getUint32(0, true) !== LOCAL_SIGNATURE) {
      throw new CheckpointError(
        `${this.file.path}: zip entry '${entry.name}' has no local header; the file is corrupt`,
      );
    }
    const start = entry.localHeaderOffset + 30 + header.getUint16(26, true) + header.getUint16(28, true);
    if (start + entry.compressedSize > this.file.size) {
      throw new CheckpointError(
        `${this.file.path}: truncated (entry '${entry.name}' ends at byte ${
          start + entry.compressedSize
        } but the file has ${this.file.size}); download it again`,
      );
    }
    this.dataStarts.set(entry.name, start);
    return start;
  }

  isStored(entry: ZipEntry): boolean {
    return entry.method === 0;
  }

  /**
   * The entry's first `keep` bytes (default: all of it, as the directory declares it), decompressed,
   * in a fresh buffer. A deflated entry is still inflated to its end, to check that it holds exactly
   * its declared size, but nothing past `keep` is kept and nothing past the declared size is made.
   */
  async read(entry: ZipEntry, keep = entry.size): Promise<Uint8Array> {
    if (keep > entry.size) throw new Error("ZipArchive.read: keep exceeds the entry's size");
    const start = await this.dataStart(entry);
    if (entry.method === 0) return this.file.readAt(start, keep);
    if (entry.method !== 8) {
      throw new CheckpointError(
        `${this.file.path}: zip entry '${entry.name}' uses compression method ${entry.method}; only stored and deflate are supported`,
      );
    }
    return this.inflate(entry, start, keep);
  }

  private async inflate(entry: ZipEntry, start: number, keep: number): Promise<Uint8Array> {
    const where = `${this.file.path}: zip entry '${entry.name}'`;
    const out = new Uint8Array(keep);
    let produced = 0;
    const stream = new DecompressionStream("deflate-raw");
    const writer = stream.writable.getWriter();
    const reader = stream.readable.getReader();
    // Feed the compressed bytes in slices while the loop below drains the output (backpressure
    // keeps about one slice's output in memory).
    const feeding = (async () => {
      for (let at = 0; at < entry.compressedSize; at += INFLATE_READ) {
        const piece = await this.file.readAt(start + at, Math.min(INFLATE_READ, entry.compressedSize - at));
        for (let s = 0; s < piece.length; s += INFLATE_SLICE) await writer.write(piece.subarray(s, s + INFLATE_SLICE));
      }
      await writer.close();
    })().catch(async (e) => {
      await writer.abort(e).catch(() => {}); // fails the reader below with the same error
      throw e;
    });
    feeding.catch(() => {}); // reported through the reader
    try {
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        if (produced + value.length > entry.size) {
          throw new CheckpointError(
            `${where} inflates past its declared ${formatBytes(entry.size)}; the file is corrupt or a zip bomb, refused`,
          );
        }
        if (produced < keep) out.set(value.subarray(0, Math.min(value.length, keep - produced)), produced);
        produced += value.length;
      }
      await feeding;
    } catch (e) {
      await reader.cancel().catch(() => {});
      await writer.abort().catch(() => {});
      if (e instanceof CheckpointError) throw e;
      throw new CheckpointError(`${where} does not inflate (${(e as Error).message}); the file is corrupt`);
    }
    if (produced !== entry.size) {
      throw new CheckpointError(
        `${where} inflates to ${produced} bytes, not the ${entry.size} it declares; the file is corrupt`,
      );
    }
    return out;
  }

  /** `length` bytes from `offset` inside a stored (uncompressed) entry, without reading the rest. */
  async readRange(entry: ZipEntry, offset: number, length: number): Promise<Uint8Array> {
    if (entry.method !== 0) throw new Error("readRange needs a stored entry");
    if (offset + length > entry.size) {
      throw new CheckpointError(
        `${this.file.path}: zip entry '${entry.name}' is shorter than the tensors stored in it; the file is corrupt`,
      );
    }
    return this.file.readAt((await this.dataStart(entry)) + offset, length);
  }
}
