// Embedding lookup from an f16 table (engine/matmul.ts Weight with dtype f16): as embedding.wgsl,
// with the halves read as packed u32 pairs (any adapter) and widened to f32.

struct Params {
  n_tokens: u32,
  d_model: u32,
  row_start: u32, // first vocabulary row held by this chunk
  row_count: u32, // rows in this chunk
  stride: u32, // stored row length in halves (d_model rounded up to a multiple of 8)
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// ids: (n_tokens) u32
@group(0) @binding(1) var<storage, read> ids: array<u32>;
// table: (row_count, stride) halves, two per u32, rows [row_start, row_start + row_count)
@group(0) @binding(2) var<storage, read> table: array<u32>;
// out: (n_tokens, d_model) f32
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n_tokens * p.d_model) { return; }
  let t = i / p.d_model;
  let c = i % p.d_model;
  let id = ids[t];
  if (id < p.row_start || id >= p.row_start + p.row_count) { return; }
  let h = (id - p.row_start) * p.stride + c;
  out[i] = unpack2x16float(table[h >> 1u])[h & 1u];
}
