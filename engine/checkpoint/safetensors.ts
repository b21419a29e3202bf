// safetensors: an 8-byte little-endian header length, a JSON header
// {name: {dtype, shape, data_offsets: [begin, end]}} and the raw little-endian data after it.
// Only the header is read at open; tensor bytes are read from the file when asked for.
// The header is validated as the reference implementation (huggingface/safetensors) does: the
// tensors, sorted by offsets, tile the data exactly, with no overlap (aliased weights), no gap and
// nothing after the last one.

import { RandomAccessFile } from "./file.ts";
import { readShardIndex } from "./layout.ts";
import { CheckpointError, type DType, fmtShape, numelOf, type TensorInfo, type TensorSource } from "./types.ts";

const ELEMENT_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U64: 8,
  U32: 4,
  U16: 2,
  U8: 1,
  BOOL: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
};
const READABLE = new Set<string>(["F32", "F16", "BF16"]);
const MAX_HEADER_BYTES = 100_000_000; // the reference implementation's own limit

interface Located {
  file: RandomAccessFile;
  begin: number; // absolute byte offset in the file
  length: number;
}

function isShape(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((d) => typeof d === "number" && Number.isInteger(d) && d >= 0);
}

/** Parse one safetensors file's header into `tensors`/`unsupported`/`where`. */
async function readHeader(
  path: string,
  tensors: Map<string, TensorInfo>,
  unsupported: Map<string, string>,
  where: Map<string, Located>,
  only?: Set<string>,
): Promise<RandomAccessFile> {
  const file = await RandomAccessFile.open(path);
  try {
    if (file.size < 8) {
      throw new CheckpointError(`${path}: truncated (${file.size} bytes, not even a header); download it again`);
    }
    const lengthBytes = await file.readAt(0, 8);
    const headerLength = Number(new DataView(lengthBytes.buffer).getBigUint64(0, true));
    if (headerLength > MAX_HEADER_BYTES) {
      throw new CheckpointError(
        `${path}: header length ${headerLength} is implausible; not a safetensors file or corrupt`,
      );
    }
    if (8 + headerLength > file.size) {
      throw new CheckpointError(
        `${path}: truncated (the header needs ${
          8 + headerLength
        } bytes but the file has ${file.size}); download it again`,
      );
    }
    let headerText: string;
    try {
      headerText = new TextDecoder("utf-8", { fatal: true }).decode(await file.readAt(8, headerLength));
    } catch (e) {
      if (e instanceof CheckpointError) throw e;
      throw new CheckpointError(`${path}: header is not UTF-8; not a safetensors file or corrupt`);
    }
    let header: unknown;
    try {
      header = JSON.parse(headerText);
    } catch (e) {
      throw new CheckpointError(`${path}: header is not valid JSON (${(e as Error).message}); the file is corrupt`);
    }
    if (typeof header !== "object" || header === null || Array.isArray(header)) {
      throw new CheckpointError(`${path}: header is not a JSON object; the file is corrupt`);
    }
    const dataStart = 8 + headerLength;
    const dataBytes = file.size - dataStart;
    const spans: { name: string; begin: number; end: number }[] = [];
    for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
      if (name === "__metadata__") continue;
      const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      const offsets = e?.data_offsets;
      if (
        typeof e !== "object" || e === null || typeof e.dtype !== "string" || !isShape(e.shape) ||
        !Array.isArray(offsets) || offsets.length !== 2 ||
        !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)
      ) {
        throw new CheckpointError(`${path}: header entry for '${name}' is malformed; the file is corrupt`);
      }
      const [begin, end] = offsets as [number, number];
      const elementBytes = ELEMENT_BYTES[e.dtype];
      if (elementBytes === undefined) {
        throw new CheckpointError(`${path}: tensor '${name}' has unknown dtype ${e.dtype}; the file is corrupt`);
      }
      const expected = numelOf(e.shape) * elementBytes;
      if (!Number.isSafeInteger(expected)) {
        throw new CheckpointError(
          `${path}: tensor '${name}' (${e.dtype} ${fmtShape(e.shape)}) is impossibly large; the file is corrupt`,
        );
      }
      if (end < begin || end - begin !== expected) {
        throw new CheckpointError(
          `${path}: tensor '${name}' (${e.dtype} ${fmtShape(e.shape)}) spans ${
            end - begin
          } bytes, not ${expected}; the file is corrupt`,
        );
      }
      if (end > dataBytes) {
        throw new CheckpointError(
          `${path}: truncated (tensor '${name}' ends at byte ${
            dataStart + end
          } but the file has ${file.size}); download it again`,
        );
      }
      spans.push({ name, begin, end });
      if (only && !only.has(name)) continue;
      if (tensors.has(name) || unsupported.has(name)) {
        throw new CheckpointError(
          `${path}: tensor '${name}' appears in more than one shard; the checkpoint is inconsistent`,
        );
      }
      if (READABLE.has(e.dtype)) {
        tensors.set(name, { name, dtype: e.dtype as DType, shape: e.shape });
        where.set(name, { file, begin: dataStart + begin, length: expected });
      } else {
        unsupported.set(name, e.dtype);
      }
    }
    checkTiling(path, spans, dataBytes);
    return file;
  } catch (e) {
    file.close();
    throw e;
  }
}

/**
 * The reference implementation's rule: sorted by offsets, each tensor starts where the previous one
 * ended (the first at 0) and the last ends at the end of the file. Overlaps (two names sharing
 * bytes), gaps and trailing bytes are refused, naming the tensors involved.
 */
function checkTiling(path: string, spans: { name: string; begin: number; end: number }[], dataBytes: number): void {
  spans.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let at = 0;
  let previous: string | undefined;
  const refused = "; the file is corrupt (the safetensors library refuses it too)";
  for (const s of spans) {
    if (s.begin < at) {
      throw new CheckpointError(
        `${path}: tensors '${previous}' and '${s.name}' overlap (data bytes ${s.begin}..${at} belong to both): aliased weights${refused}`,
      );
    }
    if (s.begin > at) {
      throw new CheckpointError(
        `${path}: data bytes ${at}..${s.begin} ${
          previous === undefined ? "before the first tensor" : `between tensors '${previous}' and '${s.name}'`
        } belong to no tensor${refused}`,
      );
    }
    at = s.end;
    previous = s.name;
  }
  if (at !== dataBytes) {
    throw new CheckpointError(
      `${path}: ${dataBytes - at} bytes after the last tensor belong to no tensor${refused}`,
    );
  }
}

class SafetensorsSource implements TensorSource {
  readonly format = "safetensors";
  constructor(
    readonly files: string[],
    readonly tensors: Map<string, TensorInfo>,
    readonly unsupported: Map<string, string>,
    private readonly where: Map<string, Located>,
    private readonly handles: RandomAccessFile[],
  ) {}

  readBytes(name: string): Promise<Uint8Array> {
    const at = this.where.get(name);
    if (!at) throw new CheckpointError(`${this.files.join(", ")}: no tensor '${name}'`);
    return at.file.readAt(at.begin, at.length);
  }

  readBytesRange(name: string, offset: number, length: number, into?: Uint8Array<ArrayBuffer>): Promise<Uint8Array> {
    const at = this.where.get(name);
    if (!at) throw new CheckpointError(`${this.files.join(", ")}: no tensor '${name}'`);
    if (offset < 0 || length < 0 || offset + length > at.length) throw new CheckpointError(`${at.file.path}: bytes ${offset}..${offset + length} are outside tensor '${name}'`);
    return at.file.readAt(at.begin + offset, length, into);
  }

  close(): void {
    for (const h of this.handles) h.close();
  }
}

export async function openSafetensors(path: string): Promise<TensorSource> {
  const tensors = new Map<string, TensorInfo>();
  const unsupported = new Map<string, string>();
  const where = new Map<string, Located>();
  const file = await readHeader(path, tensors, unsupported, where);
  return new SafetensorsSource([path], tensors, unsupported, where, [file]);
}

/** Sharded checkpoint: model.safetensors.index.json maps each tensor name to its shard file. */
export async function openShardedSafetensors(indexPath: string): Promise<TensorSource> {
  const namesByShard = await readShardIndex(indexPath);
  const dir = indexPath.slice(0, indexPath.lastIndexOf("/"));
  const tensors = new Map<string, TensorInfo>();
  const unsupported = new Map<string, string>();
  const where = new Map<string, Located>();
  const handles: RandomAccessFile[] = [];
  const files: string[] = [];
  try {
    for (const [shard, names] of namesByShard) {
      const shardPath = `${dir}/${shard}`;
      handles.push(await readHeader(shardPath, tensors, unsupported, where, names));
      files.push(shardPath);
      for (const name of names) {
        if (!tensors.has(name) && !unsupported.has(name)) {
          throw new CheckpointError(
            `${shardPath}: the index lists tensor '${name}' here but the shard does not have it`,
          );
        }
      }
    }
  } catch (e) {
    for (const h of handles) h.close();
    throw e;
  }
  return new SafetensorsSource(files, tensors, unsupported, where, handles);
}
