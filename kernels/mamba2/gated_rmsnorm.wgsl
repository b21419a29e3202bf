// Gated RMSNorm (norm after gate): g = y * silu(z); out = g / sqrt(mean_group(g^2) + eps) * weight.
// One workgroup per (row, group); groups are d_inner / ngroups channels wide.

struct Params {
  rows: u32,
  d_inner: u32,
  ngroups: u32,
  z_stride: u32, // row stride of zxbcdt (d_in_proj); z is at [0, d_inner)
  eps: f32,
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// y: (rows, d_inner) f32, the SSD output
@group(0) @binding(1) var<storage, read> y: array<f32>;
// zxbcdt: (rows, z_stride) f32
@group(0) @binding(2) var<storage, read> zxbcdt: array<f32>;
// weight: (d_inner) f32
@group(0) @binding(3) var<storage, read> weight: array<f32>;
// out: (rows, d_inner) f32
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 64>;

fn gated(row: u32, c: u32) -> f32 {
  let z = zxbcdt[row * p.z_stride + c];
  return y[row * p.d_inner + c] * (z / (1.0 + exp(-z)));
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let item = wid.x + wid.y * nwg.x;
  if (item >= p.rows * p.ngroups) { return; }
  let row = item / p.ngroups;
  let group_size = p.d_inner / p.ngroups;
  let c0 = (item % p.ngroups) * group_size;
  var s = 0.0;
  for (var c = lid.x; c < group_size; c += 64u) {
    let v = gated(row, c0 + c);
    s += v * v;
  }
  partial[lid.x] = s;
  workgroupBarrier();
  for (var stride = 32u; stride > 0u; stride >>= 1u) {
    if (lid.x < stride) { partial[lid.x] += partial[lid.x + stride]; }
    workgroupBarrier();
  }
  let scale = 1.0 / sqrt(partial[0] / f32(group_size) + p.eps);
  for (var c = lid.x; c < group_size; c += 64u) {
    out[row * p.d_inner + c0 + c] = gated(row, c0 + c) * scale * weight[c0 + c];
  }
}
