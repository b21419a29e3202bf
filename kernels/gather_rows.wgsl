// out[i, :] = x[rows[i], :] — e.g. each prompt's last position out of the padded batch.

struct Params {
  n_out: u32,
  dim: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// rows: (n_out) u32
@group(0) @binding(1) var<storage, read> rows: array<u32>;
// x: (any, dim) f32
@group(0) @binding(2) var<storage, read> x: array<f32>;
// out: (n_out, dim) f32
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n_out * p.dim) { return; }
  out[i] = x[rows[i / p.dim] * p.dim + i % p.dim];
}
