// dt = softplus(dt_raw + bias), clamped to [lo, hi], per position and channel (Mamba-2: one per
// head; Mamba-1: one per channel of d_inner).
//   dt[row, h] = clamp(softplus(src[row, in_offset + h] + bias[h]), lo, hi),  h < width
// (Mamba-2's dt_limit / time_step_limit; [0, FLT_MAX] when the config has none, which changes nothing)

struct Params {
  rows: u32,
  width: u32, // dt channels (Mamba-2: nheads)
  in_stride: u32, // row stride of src (Mamba-2: d_in_proj)
  in_offset: u32, // first dt channel in a src row (Mamba-2: 2 * d_inner + 2 * ngroups * d_state)
  lo: f32, // clamp below (>= 0)
  hi: f32, // clamp above (FLT_MAX: none)
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// src: (rows, in_stride) f32, dt_raw at [in_offset, in_offset + width)
@group(0) @binding(1) var<storage, read> src: array<f32>;
// bias: (width) f32
@group(0) @binding(2) var<storage, read> bias: array<f32>;
// dt: (rows, width) f32
@group(0) @binding(3) var<storage, read_write> dt: array<f32>;

// log(1 + u) accurate for small u (WGSL has no log1p): the rounding of 1 + u is undone by
// scaling with u / ((1 + u) - 1).
fn log1p(u: f32) -> f32 {
  let w = 1.0 + u;
  if (w == 1.0) { return u; }
  return log(w) * u / (w - 1.0);
}

// softplus(v) = max(v, 0) + log1p(exp(-|v|)); PyTorch returns v itself above 20.
fn softplus(v: f32) -> f32 {
  if (v > 20.0) { return v; }
  return max(v, 0.0) + log1p(exp(-abs(v)));
}

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.rows * p.width) { return; }
  let row = i / p.width;
  let h = i % p.width;
  dt[i] = clamp(softplus(src[row * p.in_stride + p.in_offset + h] + bias[h]), p.lo, p.hi);
}
