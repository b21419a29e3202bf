// RMSNorm over the last dimension: out = x / sqrt(mean(x^2) + eps) * weight.
// One workgroup per row; the sum of squares is reduced through workgroup memory.

struct Params {
  rows: u32,
  dim: u32,
  eps: f32,
  _pad: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x: (rows, dim) f32
@group(0) @binding(1) var<storage, read> x: array<f32>;
// weight: (dim) f32
@group(0) @binding(2) var<storage, read> weight: array<f32>;
// out: (rows, dim) f32
@group(0) @binding(3) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 64>;

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.dim;
  var s = 0.0;
  for (var c = lid.x; c < p.dim; c += 64u) {
    let v = x[base + c];
    s += v * v;
  }
  partial[lid.x] = s;
  workgroupBarrier();
  for (var stride = 32u; stride > 0u; stride >>= 1u) {
    if (lid.x < stride) { partial[lid.x] += partial[lid.x + stride]; }
    workgroupBarrier();
  }
  let scale = 1.0 / sqrt(partial[0] / f32(p.dim) + p.eps);
  for (var c = lid.x; c < p.dim; c += 64u) {
    out[base + c] = x[base + c] * scale * weight[c];
  }
}
