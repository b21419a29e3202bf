// pytorch_model.bin as torch.save (>= 1.6) writes it: a zip holding <top>/data.pkl (the pickled state
// dict, whose tensors refer to storages by persistent id) and <top>/data/<key> (each storage's raw
// little-endian bytes). The pickle is read by the restricted reader with an allow-list of the
// globals a state dict needs; anything else is refused before it could mean anything.

import { formatBytes, RandomAccessFile } from "./file.ts";
import { PyDict, PyGlobal, type PyOpaque, PyTuple, type PyValue, unpickle } from "./pickle.ts";
import {
  bytesPerElement,
  CheckpointError,
  type DType,
  fmtShape,
  numelOf,
  type TensorInfo,
  type TensorSource,
} from "./types.ts";
import { ZipArchive, type ZipEntry } from "./zip.ts";

// Element type of each storage class torch pickles (typed storages name their dtype; untyped ones are bytes).
const STORAGE_TYPES: Record<string, string> = {
  "torch.FloatStorage": "F32",
  "torch.HalfStorage": "F16",
  "torch.BFloat16Storage": "BF16",
  "torch.DoubleStorage": "F64",
  "torch.LongStorage": "I64",
  "torch.IntStorage": "I32",
  "torch.ShortStorage": "I16",
  "torch.CharStorage": "I8",
  "torch.ByteStorage": "U8",
  "torch.BoolStorage": "BOOL",
  "torch.storage.UntypedStorage": "U8",
  "torch.UntypedStorage": "U8",
};

// torch dtypes pickle as globals named after the dtype (torch._utils._rebuild_tensor_v3 passes one).
const TORCH_DTYPES: Record<string, string> = {
  "torch.float32": "F32",
  "torch.float16": "F16",
  "torch.bfloat16": "BF16",
  "torch.float64": "F64",
  "torch.int64": "I64",
  "torch.int32": "I32",
  "torch.int16": "I16",
  "torch.int8": "I8",
  "torch.uint8": "U8",
  "torch.bool": "BOOL",
};

const ELEMENT_BYTES: Record<string, number> = {
  F32: 4,
  F16: 2,
  BF16: 2,
  F64: 8,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/**
 * The largest data.pkl read: a state dict's pickle holds names, shapes and storage keys (a few hundred
 * bytes per tensor), so 64 MiB is room for ~200k tensors; anything larger is refused before it is read.
 */
export const MAX_PICKLE_BYTES = 64 << 20;
/** `byteorder` holds "little" or "big". */
const MAX_BYTEORDER_BYTES = 64;
/** How deep `_rebuild_from_type_v2` may wrap a tensor, and wrappers ({"state_dict": ...}) a state dict. */
const MAX_NESTING = 16;

// Callables a state dict pickle uses; each is interpreted below, none is ever run.
const CALLABLES = new Set([
  "collections.OrderedDict",
  "torch._utils._rebuild_tensor_v2",
  "torch._utils._rebuild_tensor_v3",
  "torch._utils._rebuild_parameter",
  "torch._utils._rebuild_parameter_with_state",
  "torch._tensor._rebuild_from_type_v2",
]);
// Classes that only appear as the `new_type` argument of _rebuild_from_type_v2.
const TENSOR_CLASSES = new Set(["torch.nn.parameter.Parameter", "torch._tensor.Tensor", "torch.Tensor"]);

class StorageRef implements PyOpaque {
  readonly opaque = true;
  constructor(readonly key: string, readonly elementType: string, readonly numel: number) {}
  get byteLength(): number {
    return this.numel * ELEMENT_BYTES[this.elementType];
  }
}

class TensorRef implements PyOpaque {
  readonly opaque = true;
  constructor(
    readonly storage: StorageRef,
    readonly offset: number, // in elements of `dtype`
    readonly size: number[],
    readonly stride: number[],
    readonly dtype: string,
  ) {}
}

function isContiguous(size: readonly number[], stride: readonly number[]): boolean {
  let expected = 1;
  for (let d = size.length - 1; d >= 0; d--) {
    if (size[d] !== 1 && stride[d] !== expected) return false;
    expected *= size[d];
  }
  return true;
}

/** Index (in elements) of the tensor's last element in its storage. */
function lastIndex(t: TensorRef): number {
  let last = t.offset;
  for (let d = 0; d < t.size.length; d++) last += (t.size[d] - 1) * t.stride[d];
  return last;
}

function makeHooks(path: string) {
  const storages = new Map<string, StorageRef>();
  const fail = (what: string): never => {
    throw new CheckpointError(`${path}: ${what}; the checkpoint is corrupt or not a torch.save state dict`);
  };
  const intList = (v: PyValue, what: string): number[] => {
    const items = v instanceof PyTuple ? v.items : Array.isArray(v) ? v : fail(`${what} is not a tuple`);
    return items.map((x) => (typeof x === "number" && Number.isInteger(x) ? x : fail(`${what} holds a non-integer`)));
  };
  const rebuildTensor = (args: PyValue[], dtypeArg?: PyValue): TensorRef => {
    const [storage, offset, size, stride] = args;
    if (!(storage instanceof StorageRef)) return fail("a tensor is rebuilt from something that is not a storage");
    if (typeof offset !== "number" || !Number.isInteger(offset) || offset < 0) {
      return fail("a tensor has a bad storage offset");
    }
    const sizes = intList(size, "a tensor size");
    const strides = intList(stride, "a tensor stride");
    if (sizes.length !== strides.length || sizes.some((s) => s < 0) || strides.some((s) => s < 0)) {
      fail("a tensor has mismatched or negative sizes/strides");
    }
    let dtype = storage.elementType;
    if (dtypeArg !== undefined) {
      const named = dtypeArg instanceof PyGlobal && Object.hasOwn(TORCH_DTYPES, dtypeArg.qualified)
        ? TORCH_DTYPES[dtypeArg.qualified]
        : undefined;
      dtype = named ?? fail("a tensor's dtype is not a torch dtype");
    }
    return new TensorRef(storage, offset, sizes, strides, dtype);
  };
  const call = (callable: PyValue, args: PyValue[], depth = 0): PyValue => {
    if (!(callable instanceof PyGlobal)) return fail("the pickle calls something that is not a named global");
    if (depth > MAX_NESTING) fail(`tensors are rebuilt through more than ${MAX_NESTING} nested calls`);
    switch (callable.qualified) {
      case "collections.OrderedDict": {
        const dict = new PyDict();
        if (args.length === 0) return dict;
        const pairs = Array.isArray(args[0]) ? args[0] : fail("OrderedDict is built from something that is not a list");
        for (const pair of pairs) {
          if (!(pair instanceof PyTuple) || pair.items.length !== 2) {
            fail("OrderedDict is built from something that is not pairs");
          }
          dict.map.set((pair as PyTuple).items[0], (pair as PyTuple).items[1]);
        }
        return dict;
      }
      case "torch._utils._rebuild_tensor_v2":
        return rebuildTensor(args);
      case "torch._utils._rebuild_tensor_v3":
        return rebuildTensor(args, args[6]);
      case "torch._utils._rebuild_parameter":
      case "torch._utils._rebuild_parameter_with_state":
        return args[0] instanceof TensorRef ? args[0] : fail("a parameter wraps something that is not a tensor");
      case "torch._tensor._rebuild_from_type_v2": {
        const [func, newType, funcArgs] = args;
        if (!(newType instanceof PyGlobal) || !TENSOR_CLASSES.has(newType.qualified)) {
          fail("a tensor is rebuilt as a type that is not a tensor class");
        }
        const inner = funcArgs instanceof PyTuple
          ? funcArgs.items
          : fail("_rebuild_from_type_v2 arguments are not a tuple");
        return call(func, inner, depth + 1);
      }
      default:
        return fail(`the pickle calls '${callable.qualified}', which torch.save never does`);
    }
  };
  return {
    hooks: {
      global(module: string, name: string): PyValue {
        const qualified = `${module}.${name}`;
        if (
          Object.hasOwn(STORAGE_TYPES, qualified) || Object.hasOwn(TORCH_DTYPES, qualified) ||
          CALLABLES.has(qualified) ||
          TENSOR_CLASSES.has(qualified)
        ) {
          return new PyGlobal(module, name);
        }
        throw new CheckpointError(
          `${path}: refusing to load: the pickle names the global '${qualified}', which is not a tensor type (a checkpoint must never run code)`,
        );
      },
      call,
      persistent(pid: PyValue): PyValue {
        // ('storage', StorageType, key, location, numel)
        const items = pid instanceof PyTuple ? pid.items : [];
        const [kind, type, key, _location, numel] = items;
        if (
          items.length !== 5 || kind !== "storage" || !(type instanceof PyGlobal) ||
          !Object.hasOwn(STORAGE_TYPES, type.qualified) ||
          typeof key !== "string" || typeof numel !== "number" || !Number.isInteger(numel) || numel < 0
        ) {
          return fail("a persistent id is not ('storage', type, key, location, numel)");
        }
        const elementType = STORAGE_TYPES[(type as PyGlobal).qualified];
        const known = storages.get(key as string);
        if (known) {
          if (known.elementType !== elementType || known.numel !== numel) {
            fail(`storage ${key} is declared twice differently`);
          }
          return known;
        }
        const ref = new StorageRef(key as string, elementType, numel as number);
        storages.set(key as string, ref);
        return ref;
      },
    },
  };
}

/**
 * The name -> tensor dict: the top object, or the usual wrappers around it ({"state_dict": ...},
 * {"model": ...}). A loop (a dict that holds itself) or a deep chain of wrappers is refused.
 */
function stateDictOf(root: PyValue, path: string): PyDict {
  if (!(root instanceof PyDict)) {
    throw new CheckpointError(`${path}: the pickle holds no state dict (name -> tensor); not a model checkpoint`);
  }
  const seen = new Set<PyDict>();
  let dict = root;
  while (true) {
    const hasTensors = [...dict.map.values()].some((v) => v instanceof TensorRef);
    if (hasTensors) return dict;
    seen.add(dict);
    const inner = ["state_dict", "model"].map((key) => dict.map.get(key)).find((v) => v instanceof PyDict) as
      | PyDict
      | undefined;
    if (!inner) return dict;
    if (seen.has(inner)) {
      throw new CheckpointError(
        `${path}: the pickle's state dict contains itself (a self-referencing pickle); not a torch.save checkpoint`,
      );
    }
    if (seen.size >= MAX_NESTING) {
      throw new CheckpointError(
        `${path}: the state dict is wrapped in more than ${MAX_NESTING} dicts; not a torch.save checkpoint`,
      );
    }
    dict = inner;
  }
}

class PytorchSource implements TensorSource {
  readonly format = "pytorch";
  readonly files: string[];
  private readonly storageUsers = new Map<string, number>();
  private readonly pendingReaders = new Map<string, Set<string>>();
  private readonly storageCache = new Map<string, Promise<Uint8Array>>();

  constructor(
    private readonly file: RandomAccessFile,
    private readonly zip: ZipArchive,
    private readonly refs: Map<string, TensorRef>,
    private readonly entries: Map<string, ZipEntry>, // storage key -> zip entry
    readonly tensors: Map<string, TensorInfo>,
    readonly unsupported: Map<string, string>,
  ) {
    this.files = [file.path];
    for (const [name, ref] of refs) {
      const key = ref.storage.key;
      this.storageUsers.set(key, (this.storageUsers.get(key) ?? 0) + 1);
      if (!this.pendingReaders.has(key)) this.pendingReaders.set(key, new Set());
      this.pendingReaders.get(key)!.add(name);
    }
  }

  /**
   * A storage that several tensors share (a tied lm_head) is read once and kept while any tensor
   * using it has not been read yet; close() drops what is left.
   */
  private sharedStorage(name: string, key: string, entry: ZipEntry, storageBytes: number): Promise<Uint8Array> {
    let bytes = this.storageCache.get(key);
    if (!bytes) {
      bytes = this.zip.read(entry, storageBytes); // what the pickle says the storage holds, no more
      this.storageCache.set(key, bytes);
    }
    const pending = this.pendingReaders.get(key)!;
    pending.delete(name);
    if (pending.size === 0) this.storageCache.delete(key);
    return bytes;
  }

  async readBytes(name: string): Promise<Uint8Array> {
    const ref = this.refs.get(name);
    const info = this.tensors.get(name);
    if (!ref || !info) throw new CheckpointError(`${this.file.path}: no tensor '${name}'`);
    const elementBytes = bytesPerElement(info.dtype);
    const numel = numelOf(ref.size);
    if (numel === 0) return new Uint8Array(0);
    const key = ref.storage.key;
    const entry = this.entries.get(key)!;
    const contiguous = isContiguous(ref.size, ref.stride);
    let base: Uint8Array; // storage bytes from element `baseIndex` on
    let baseIndex: number;
    if (this.storageUsers.get(key)! > 1 || !this.zip.isStored(entry)) {
      base = await this.sharedStorage(name, key, entry, ref.storage.byteLength);
      baseIndex = 0;
    } else {
      // Only this tensor uses the storage: read just the span it covers.
      const spanElements = lastIndex(ref) - ref.offset + 1;
      const read = await this.zip.readRange(entry, ref.offset * elementBytes, spanElements * elementBytes);
      if (contiguous) return read;
      base = read;
      baseIndex = ref.offset;
    }
    const start = ref.offset - baseIndex;
    if (contiguous) return base.slice(start * elementBytes, (start + numel) * elementBytes);
    return gather(base, start, ref.size, ref.stride, elementBytes);
  }

  close(): void {
    this.storageCache.clear();
    this.file.close();
  }
}

/** Copy a strided view into a contiguous row-major buffer. */
function gather(base: Uint8Array, start: number, size: number[], stride: number[], elementBytes: number): Uint8Array {
  const numel = numelOf(size);
  const out = new Uint8Array(numel * elementBytes);
  const src = elementBytes === 4
    ? new Uint32Array(base.buffer, base.byteOffset, base.byteLength >>> 2)
    : new Uint16Array(base.buffer, base.byteOffset, base.byteLength >>> 1);
  const dst = elementBytes === 4 ? new Uint32Array(out.buffer) : new Uint16Array(out.buffer);
  const rank = size.length;
  const index = new Array<number>(rank).fill(0);
  let at = start;
  for (let i = 0; i < numel; i++) {
    dst[i] = src[at];
    for (let d = rank - 1; d >= 0; d--) {
      index[d]++;
      at += stride[d];
      if (index[d] < size[d]) break;
      at -= stride[d] * size[d];
      index[d] = 0;
    }
  }
  return out;
}

export async function openPytorch(path: string): Promise<TensorSource> {
  const file = await RandomAccessFile.open(path);
  try {
    const head = await file.readAt(0, Math.min(4, file.size));
    if (head.length >= 2 && head[0] === 0x80 && head[1] <= 5) {
      throw new CheckpointError(
        `${path}: written by torch.save before torch 1.6 (legacy format), which is not supported; re-save it with a newer torch or convert it to safetensors`,
      );
    }
    if (head.length < 4 || head[0] !== 0x50 || head[1] !== 0x4b) {
      throw new CheckpointError(
        `${path}: not a torch.save zip archive; the file is corrupt or not a PyTorch checkpoint`,
      );
    }
    const zip = await ZipArchive.open(file);
    // The top folder is named after whatever the file was called when saved: find it, never assume it.
    const pickles = [...zip.entries.keys()].filter((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (pickles.length !== 1) {
      throw new CheckpointError(
        `${path}: ${
          pickles.length === 0 ? "no" : "more than one"
        } <folder>/data.pkl in the zip; not a torch.save checkpoint`,
      );
    }
    const top = pickles[0].slice(0, -"/data.pkl".length);
    const byteorder = zip.entries.get(`${top}/byteorder`);
    if (byteorder) {
      if (byteorder.size > MAX_BYTEORDER_BYTES) {
        throw new CheckpointError(`${path}: ${top}/byteorder declares ${byteorder.size} bytes; the file is corrupt`);
      }
      const order = new TextDecoder().decode(await zip.read(byteorder)).trim();
      if (order !== "little") {
        throw new CheckpointError(`${path}: saved with ${order}-endian storages, which are not supported`);
      }
    }
    const pickleEntry = zip.entries.get(pickles[0])!;
    if (pickleEntry.size > MAX_PICKLE_BYTES) {
      throw new CheckpointError(
        `${path}: ${pickles[0]} declares ${formatBytes(pickleEntry.size)}, more than the ${
          formatBytes(MAX_PICKLE_BYTES)
        } a state dict's pickle can need; refused (corrupt, or a zip bomb)`,
      );
    }
    const { hooks } = makeHooks(path);
    let stateDict: PyDict;
    try {
      stateDict = stateDictOf(unpickle(await zip.read(pickleEntry), hooks, path), path);
    } catch (e) {
      // A hostile structure must end in one line naming the file, whatever it exhausts.
      if (e instanceof RangeError) {
        throw new CheckpointError(
          `${path}: the pickle is too deeply nested or refers to itself (${e.message}); not a torch.save checkpoint`,
        );
      }
      throw e;
    }

    const refs = new Map<string, TensorRef>();
    const tensors = new Map<string, TensorInfo>();
    const unsupported = new Map<string, string>();
    const entries = new Map<string, ZipEntry>();
    for (const [name, value] of stateDict.map) {
      if (typeof name !== "string" || !(value instanceof TensorRef)) continue;
      const storageName = `${top}/data/${value.storage.key}`;
      const entry = zip.entries.get(storageName);
      if (!entry) {
        throw new CheckpointError(
          `${path}: tensor '${name}' needs ${storageName}, which the zip lacks; the file is corrupt`,
        );
      }
      if (entry.size < value.storage.byteLength) {
        throw new CheckpointError(
          `${path}: ${storageName} has ${entry.size} bytes but its storage needs ${value.storage.byteLength}; the file is corrupt`,
        );
      }
      const elementBytes = ELEMENT_BYTES[value.dtype];
      if (numelOf(value.size) > 0 && (lastIndex(value) + 1) * elementBytes > value.storage.byteLength) {
        throw new CheckpointError(
          `${path}: tensor '${name}' (${
            fmtShape(value.size)
          } at offset ${value.offset}) reaches past its storage; the file is corrupt`,
        );
      }
      if (value.dtype === "F32" || value.dtype === "F16" || value.dtype === "BF16") {
        refs.set(name, value);
        tensors.set(name, { name, dtype: value.dtype as DType, shape: value.size });
        entries.set(value.storage.key, entry);
      } else {
        unsupported.set(name, value.dtype);
      }
    }
    return new PytorchSource(file, zip, refs, entries, tensors, unsupported);
  } catch (e) {
    file.close();
    throw e;
  }
}
