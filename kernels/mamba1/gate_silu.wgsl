// Mamba-1's output gate: out = y * silu(z), per row and channel, z read from the in_proj output
//   out[r, c] = y[r, c] * z / (1 + exp(-z)),   z = xz[r, z_offset + c]

struct Params {
  rows: u32,
  d_inner: u32,
  z_stride: u32, // row stride of xz (2 * d_inner)
  z_offset: u32, // first z channel in an xz row (d_inner)
}

@group(0) @binding(0) var<uniform> p: Params;
// y: (rows, d_inner) f32
@group(0) @binding(1) var<storage, read> y: array<f32>;
// xz: (rows, z_stride) f32, z at [z_offset, z_offset + d_inner)
@group(0) @binding(2) var<storage, read> xz: array<f32>;
// out: (rows, d_inner) f32
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.rows * p.d_inner) { return; }
  let z = xz[(i / p.d_inner) * p.z_stride + p.z_offset + i % p.d_inner];
  out[i] = y[i] * (z / (1.0 + exp(-z)));
}
