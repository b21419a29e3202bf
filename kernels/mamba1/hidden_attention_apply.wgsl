// Mamba-1 attention mode, step 2: apply each channel's hidden attention to its inputs
//   y[t, c] = sum_{s <= t} alpha[t, c, s] * x_s[c] + D[c] * x_t[c]
// (the D skip is not an edge: knockouts leave it alone).

struct Params {
  batch: u32,
  seq: u32,
  d_inner: u32,
  _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// alpha: (batch, d_inner, seq, seq) f32
@group(0) @binding(1) var<storage, read> alpha: array<f32>;
// x: (batch * seq, d_inner) f32
@group(0) @binding(2) var<storage, read> x: array<f32>;
// d: (d_inner) f32
@group(0) @binding(3) var<storage, read> d: array<f32>;
// y: (batch * seq, d_inner) f32
@group(0) @binding(4) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.batch * p.seq * p.d_inner) { return; }
  let row = i / p.d_inner;
  let c = i % p.d_inner;
  let b = row / p.seq;
  let t = row % p.seq;
  let m = ((b * p.d_inner + c) * p.seq + t) * p.seq;
  var acc = 0.0;
  for (var s = 0u; s <= t; s++) {
    acc = fma(alpha[m + s], x[(b * p.seq + s) * p.d_inner + c], acc);
  }
  y[i] = fma(d[c], x[i], acc);
}
