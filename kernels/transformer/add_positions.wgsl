// Learned absolute positions (GPT-2): x[i, c] += wpe[t_i, c], t_i the position of row i
// (row_meta[i * 8], the same row meta as attention_probs.wgsl). One invocation per element.

struct Params {
  rows: u32,
  dim: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// row_meta: (rows, 8) u32; word 0 = the row's position
@group(0) @binding(1) var<storage, read> row_meta: array<u32>;
// wpe: (n_positions, dim) f32
@group(0) @binding(2) var<storage, read> wpe: array<f32>;
// x: (rows, dim) f32, updated in place
@group(0) @binding(3) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.rows * p.dim) { return; }
  let r = i / p.dim;
  x[i] = x[i] + wpe[row_meta[r * 8u] * p.dim + i % p.dim];
}
