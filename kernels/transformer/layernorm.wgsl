// LayerNorm over the last dimension (GPT-NeoX, GPT-2):
//   out[r, c] = (x[r, c] − mean_r) / sqrt(var_r + eps) * weight[c] + bias[c]
// with mean_r and var_r (the biased variance, as torch.nn.LayerNorm) over the dim entries of row r.
// Two passes over the row (the mean first, then the squared deviations), so a large common
// offset does not cancel the variance away. One workgroup of 64 lanes per row; partial sums are
// reduced through workgroup memory.

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
// bias: (dim) f32
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// out: (rows, dim) f32 (may not alias x)
@group(0) @binding(4) var<storage, read_write> out: array<f32>;

var<workgroup> partial: array<f32, 64>;

fn reduce(lane: u32, v: f32) -> f32 {
  partial[lane] = v;
  workgroupBarrier();
  for (var stride = 32u; stride > 0u; stride >>= 1u) {
    if (lane < stride) { partial[lane] += partial[lane + stride]; }
    workgroupBarrier();
  }
  let total = partial[0];
  workgroupBarrier(); // every lane has read the total before partial is reused
  return total;
}

@compute @workgroup_size(64)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let row = wid.x + wid.y * nwg.x;
  if (row >= p.rows) { return; }
  let base = row * p.dim;
  var s = 0.0;
  for (var c = lid.x; c < p.dim; c += 64u) { s += x[base + c]; }
  let mean = reduce(lid.x, s) / f32(p.dim);
  var q = 0.0;
  for (var c = lid.x; c < p.dim; c += 64u) {
    let d = x[base + c] - mean;
    q += d * d;
  }
  let scale = 1.0 / sqrt(reduce(lid.x, q) / f32(p.dim) + p.eps);
  for (var c = lid.x; c < p.dim; c += 64u) {
    out[base + c] = (x[base + c] - mean) * scale * weight[c] + bias[c];
  }
}
