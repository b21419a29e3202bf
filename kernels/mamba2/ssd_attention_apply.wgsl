// Attention mode, step 3: y_t = sum_{s <= t} M[t, s] * dt_s * x_s + D * x_t, per head channel.

struct Params {
  batch: u32,
  seq: u32,
  nheads: u32,
  headdim: u32,
  conv_dim: u32, // row stride of xbc
  d_inner: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// m: (batch, nheads, seq, seq) f32
@group(0) @binding(1) var<storage, read> m: array<f32>;
// xbc: (batch * seq, conv_dim) f32, x at [0, d_inner)
@group(0) @binding(2) var<storage, read> xbc: array<f32>;
// dt: (batch * seq, nheads) f32
@group(0) @binding(3) var<storage, read> dt: array<f32>;
// d: (nheads) f32
@group(0) @binding(4) var<storage, read> d: array<f32>;
// y: (batch * seq, d_inner) f32
@group(0) @binding(5) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.batch * p.seq * p.d_inner) { return; }
  let row = i / p.d_inner; // b * seq + t
  let c = i % p.d_inner;
  let h = c / p.headdim;
  let t = row % p.seq;
  let b = row / p.seq;
  let m_row = ((b * p.nheads + h) * p.seq + t) * p.seq;
  var acc = 0.0;
  for (var s = 0u; s <= t; s++) {
    let src = b * p.seq + s;
    acc = fma(m[m_row + s] * dt[src * p.nheads + h], xbc[src * p.conv_dim + c], acc);
  }
  y[i] = fma(d[h], xbc[row * p.conv_dim + c], acc);
}
