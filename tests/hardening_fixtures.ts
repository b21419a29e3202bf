// Builders for the hardening tests: hostile checkpoints, zips, pickles and safetensors files are
// made at run time from a few lines each (nothing big in git), and every test runs with a private
// HOME and no Hugging Face settings from the machine.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { constants, deflateRawSync } from "node:zlib";
import { machineEnv } from "./helpers.ts";

export const FIXTURE = new URL("./fixtures/mamba2-tiny", import.meta.url).pathname;
export const REPO_ROOT = new URL("..", import.meta.url).pathname;

const ENV_KEYS = ["HOME", "HF_HUB_CACHE", "HF_HOME", "XDG_CACHE_HOME", "HF_HUB_OFFLINE", "HF_ENDPOINT", "HF_TOKEN"];

/** A test with a private HOME (the identity cache lives there) and no HF_* settings; restored after. */
export function isolatedTest(name: string, fn: (home: string) => Promise<void> | void) {
  Deno.test(name, async () => {
    machineEnv(); // recorded before HOME changes, for the children of tests running in parallel
    // HOME is process-wide and test files run in parallel: one isolated test at a time (a file lock
    // works across the test runner's workers), so that none sees another's HOME mid-test
    const serial = await Deno.open(`${Deno.env.get("TMPDIR") ?? "/tmp"}/mamba-explain-isolated-tests.lock`, { create: true, write: true });
    await serial.lock(true);
    const saved = new Map(ENV_KEYS.map((k) => [k, Deno.env.get(k)]));
    const home = await Deno.makeTempDir({ prefix: "hardening-home-" });
    for (const k of ENV_KEYS) Deno.env.delete(k);
    Deno.env.set("HOME", home);
    try {
      await fn(home);
    } finally {
      for (const [k, v] of saved) v === undefined ? Deno.env.delete(k) : Deno.env.set(k, v);
      await Deno.remove(home, { recursive: true });
      await serial.unlock();
      serial.close();
    }
  });
}

export async function withTempDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "hardening-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** The error has this class name, is one line, names `mention`, and is no stack overflow. */
export function expectOneLine(e: unknown, className: string, mention: RegExp): string {
  assert.ok(e instanceof Error, `expected an Error, got ${e}`);
  assert.equal(e.name, className, `expected ${className}, got ${e.name}: ${e.message}`);
  assert.ok(!e.message.includes("\n"), `error is not one line: ${e.message}`);
  assert.ok(!/Maximum call stack/.test(e.message), e.message);
  assert.match(e.message, mention);
  return e.message;
}

export async function rejects(promise: Promise<unknown>, className: string, mention: RegExp): Promise<string> {
  try {
    await promise;
  } catch (e) {
    return expectOneLine(e, className, mention);
  }
  throw new assert.AssertionError({ message: `expected a ${className} matching ${mention}` });
}

/** A folder with the fixture's config.json (copied, or `config` written) and `files` written. */
export async function modelDir(
  dir: string,
  files: Record<string, Uint8Array>,
  config?: Record<string, unknown>,
): Promise<string> {
  if (config) await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  else await Deno.copyFile(`${FIXTURE}/config.json`, `${dir}/config.json`);
  for (const [name, bytes] of Object.entries(files)) await Deno.writeFile(`${dir}/${name}`, bytes);
  return dir;
}

export function concat(parts: Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// safetensors

export interface SafetensorsEntry {
  name: string;
  dtype: string;
  shape: number[];
  offsets: [number, number];
}

/** A tensor's bytes (already in its dtype) for safetensorsBytes to pack. */
export interface SafetensorsTensor {
  name: string;
  dtype: string;
  shape: number[];
  bytes: Uint8Array;
}

/** safetensorsBytes' options for a file as the safetensors library writes it: no __metadata__, the header padded to 8 bytes. */
export const LIBRARY_SAFETENSORS = { metadata: false, pad: true } as const;

/**
 * A safetensors file (u64 header length, JSON header, data). Given tensors, they are packed one after
 * another and their offsets computed; given {entries, data}, the header is exactly as given (offsets
 * unchecked) and `data` follows it. The header starts with __metadata__ {format: "pt"} unless
 * `metadata` is false; with `pad` its JSON is padded with spaces to a multiple of 8 bytes (as the
 * safetensors library writes it).
 */
export function safetensorsBytes(
  content: SafetensorsTensor[] | { entries: SafetensorsEntry[]; data: Uint8Array },
  opts: { metadata?: boolean; pad?: boolean } = {},
): Uint8Array<ArrayBuffer> {
  let entries: SafetensorsEntry[], data: Uint8Array;
  if (Array.isArray(content)) {
    let at = 0;
    entries = content.map((t) => {
      const begin = at;
      at += t.bytes.length;
      return { name: t.name, dtype: t.dtype, shape: t.shape, offsets: [begin, at] };
    });
    data = concat(content.map((t) => t.bytes));
  } else {
    ({ entries, data } = content);
  }
  const header: Record<string, unknown> = opts.metadata === false ? {} : { __metadata__: { format: "pt" } };
  for (const e of entries) header[e.name] = { dtype: e.dtype, shape: e.shape, data_offsets: e.offsets };
  let json = new TextEncoder().encode(JSON.stringify(header));
  if (opts.pad) json = concat([json, new Uint8Array((8 - (json.length % 8)) % 8).fill(0x20)]);
  const length = new Uint8Array(8);
  new DataView(length.buffer).setBigUint64(0, BigInt(json.length), true);
  return concat([length, json, data]);
}

export const f32Bytes = (xs: number[]) => new Uint8Array(new Float32Array(xs).buffer);
export const u16Bytes = (xs: number[]) => new Uint8Array(new Uint16Array(xs).buffer);

// ---------------------------------------------------------------------------------------------
// a stand-in for the Hugging Face Hub

export interface ServedFile {
  bytes: Uint8Array<ArrayBuffer>;
  /** An LFS file: resolve redirects to the CDN URL with x-linked-etag (sha256) and x-linked-size. */
  lfs: boolean;
  /** What the CDN sends instead of `bytes` (which the headers still describe). */
  servedBytes?: Uint8Array<ArrayBuffer>;
}

/** Answers made hostile: another X-Repo-Commit, or an ETag / X-Linked-Etag per file name. */
export interface HubTamper {
  commit?: string;
  etag?: (name: string) => string | undefined;
}

/**
 * A local server answering like the Hub: HEAD/GET on resolve URLs with x-repo-commit (`commit`
 * unless tampered), LFS files redirected to a CDN URL with x-linked-etag/x-linked-size, Range
 * requests answered with 206. Every request is logged in `requested` ("METHOD /decoded/path"),
 * every Range header in `ranges`.
 */
export function standInHub(files: Record<string, ServedFile>, opts: { tamper?: HubTamper } = {}) {
  const commit = "e".repeat(40);
  const tamper = opts.tamper ?? {};
  const requested: string[] = [];
  const ranges: string[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
    const url = new URL(req.url);
    requested.push(`${req.method} ${decodeURIComponent(url.pathname)}`);
    const repoCommit = tamper.commit ?? commit;
    const resolved = /^\/([^/]+\/[^/]+)\/resolve\/([^/]+)\/(.+)$/.exec(url.pathname);
    if (resolved) {
      const file = files[decodeURIComponent(resolved[3])];
      if (!file) return new Response("Entry not found", { status: 404, headers: { "x-repo-commit": repoCommit } });
      const hostileEtag = tamper.etag?.(resolved[3]);
      if (file.lfs) {
        return new Response(null, {
          status: 302,
          headers: {
            location: `/cdn/${resolved[3]}`,
            "x-repo-commit": repoCommit,
            "x-linked-etag": `"${hostileEtag ?? createHash("sha256").update(file.bytes).digest("hex")}"`,
            "x-linked-size": String(file.bytes.length),
          },
        });
      }
      return new Response(req.method === "HEAD" ? null : file.bytes, {
        headers: {
          "x-repo-commit": repoCommit,
          etag: `"${hostileEtag ?? createHash("sha1").update(file.bytes).digest("hex")}"`,
          "content-length": String(file.bytes.length),
        },
      });
    }
    const cdn = /^\/cdn\/(.+)$/.exec(url.pathname);
    const file = cdn ? files[decodeURIComponent(cdn[1])] : undefined;
    if (!file) return new Response("no", { status: 404 });
    const body = file.servedBytes ?? file.bytes;
    const range = req.headers.get("range");
    if (range) {
      ranges.push(range);
      const start = Number(/bytes=(\d+)-/.exec(range)![1]);
      return new Response(body.slice(start), {
        status: 206,
        headers: { "content-range": `bytes ${start}-${body.length - 1}/${body.length}` },
      });
    }
    return new Response(body);
  });
  return { server, commit, requested, ranges, endpoint: `http://127.0.0.1:${server.addr.port}` };
}

// ---------------------------------------------------------------------------------------------
// zip (the subset torch.save writes: local headers, a central directory, no zip64)

export interface ZipFileEntry {
  name: string;
  /** The bytes stored in the archive (already deflated when method is 8). */
  data: Uint8Array;
  method: 0 | 8;
  /** The uncompressed size the directory declares (default: data.length, right for stored). */
  size?: number;
}

export function zipArchive(entries: ZipFileEntry[]): Uint8Array<ArrayBuffer> {
  const enc = new TextEncoder();
  const locals: Uint8Array[] = [];
  const centrals: Uint8Array[] = [];
  let offset = 0;
  for (const e of entries) {
    const name = enc.encode(e.name);
    const size = e.size ?? e.data.length;
    const local = new Uint8Array(30 + name.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true);
    lv.setUint16(8, e.method, true);
    lv.setUint32(18, e.data.length, true);
    lv.setUint32(22, size, true);
    lv.setUint16(26, name.length, true);
    local.set(name, 30);
    const central = new Uint8Array(46 + name.length);
    const cv = new DataView(central.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(10, e.method, true);
    cv.setUint32(20, e.data.length, true);
    cv.setUint32(24, size, true);
    cv.setUint16(28, name.length, true);
    cv.setUint32(42, offset, true);
    central.set(name, 46);
    locals.push(local, e.data);
    centrals.push(central);
    offset += local.length + e.data.length;
  }
  const directory = concat(centrals);
  const end = new Uint8Array(22);
  const ev = new DataView(end.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, directory.length, true);
  ev.setUint32(16, offset, true);
  return concat([...locals, directory, end]);
}

/** Raw deflate of `mib` MiB of zeros from ~1 KB per MiB: one sync-flushed block repeated, then a final empty block. */
export function zeroBomb(mib: number): Uint8Array<ArrayBuffer> {
  const block = deflateRawSync(new Uint8Array(1 << 20), { level: 9, finishFlush: constants.Z_SYNC_FLUSH });
  const out = new Uint8Array(block.length * mib + 2);
  for (let i = 0; i < mib; i++) out.set(block, i * block.length);
  out.set([0x03, 0x00], block.length * mib); // a final, empty, fixed-Huffman block
  return out;
}

export function deflate(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  return new Uint8Array(deflateRawSync(bytes));
}

// ---------------------------------------------------------------------------------------------
// pickle (protocol 2 opcodes, as torch.save emits them)

export class PickleWriter {
  private parts: number[] = [];
  private readonly enc = new TextEncoder();
  constructor() {
    this.op(0x80, 2); // PROTO 2
  }
  op(...bytes: number[]): this {
    for (const b of bytes) this.parts.push(b);
    return this;
  }
  private u32(n: number): this {
    return this.op(n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff);
  }
  str(s: string): this {
    const b = this.enc.encode(s);
    this.op(0x58).u32(b.length); // BINUNICODE
    for (const x of b) this.parts.push(x);
    return this;
  }
  int(n: number): this {
    return this.op(0x4a).u32(n); // BININT
  }
  global(module: string, name: string): this {
    this.op(0x63); // GLOBAL "module\nname\n"
    for (const x of this.enc.encode(`${module}\n${name}\n`)) this.parts.push(x);
    return this;
  }
  put(key: number): this {
    return this.op(0x72).u32(key); // LONG_BINPUT
  }
  get(key: number): this {
    return this.op(0x6a).u32(key); // LONG_BINGET
  }
  mark = () => this.op(0x28);
  tuple = () => this.op(0x74);
  tuple3 = () => this.op(0x87);
  emptyDict = () => this.op(0x7d);
  emptyList = () => this.op(0x5d);
  emptyTuple = () => this.op(0x29);
  setItem = () => this.op(0x73);
  reduce = () => this.op(0x52);
  pop = () => this.op(0x30);
  persid = () => this.op(0x51);
  /** A float32 tensor of `numel` elements on storage `key` (the _rebuild_tensor_v2 arguments, as a tuple). */
  tensorArgs(key: string, numel: number): this {
    this.mark(); // the arguments' tuple
    this.mark().str("storage").global("torch", "FloatStorage").str(key).str("cpu").int(numel).tuple().persid();
    this.int(0); // storage offset
    this.mark().int(numel).tuple(); // size
    this.mark().int(1).tuple(); // stride
    return this.op(0x89).global("collections", "OrderedDict").emptyTuple().reduce().tuple(); // requires_grad, hooks
  }
  stop(): Uint8Array<ArrayBuffer> {
    this.op(0x2e);
    return new Uint8Array(this.parts);
  }
}

/** A state dict pickle {name: F32 tensor [numel] on storage "0"}. */
export function stateDictPickle(name: string, numel: number): Uint8Array<ArrayBuffer> {
  const p = new PickleWriter();
  p.emptyDict().str(name).global("torch._utils", "_rebuild_tensor_v2").tensorArgs("0", numel).reduce().setItem();
  return p.stop();
}

/** A torch.save-shaped zip: archive/data.pkl (stored unless given) and archive/data/<key> entries. */
export function torchZip(pickle: ZipFileEntry["data"] | ZipFileEntry, storages: ZipFileEntry[] = []): Uint8Array {
  const pkl: ZipFileEntry = pickle instanceof Uint8Array
    ? { name: "archive/data.pkl", data: pickle, method: 0 }
    : { ...pickle, name: "archive/data.pkl" };
  return zipArchive([pkl, ...storages.map((s) => ({ ...s, name: `archive/data/${s.name}` }))]);
}
