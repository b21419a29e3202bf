// Attention mode, step 1: the (causal) Gram matrix of the SSD, G[t, s] = C_t . B_s for s <= t,
// per prompt and group. Heads of a group share it, so it is formed once per group.

struct Params {
  batch: u32,
  seq: u32,
  ngroups: u32,
  d_state: u32,
  conv_dim: u32, // row stride of xbc
  d_inner: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// xbc: (batch * seq, conv_dim) f32: x, then B (ngroups * d_state), then C (ngroups * d_state)
@group(0) @binding(1) var<storage, read> xbc: array<f32>;
// gram: (batch, ngroups, seq, seq) f32, zero above the diagonal
@group(0) @binding(2) var<storage, read_write> gram: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.batch * p.ngroups * p.seq * p.seq) { return; }
  let s = i % p.seq;
  let t = (i / p.seq) % p.seq;
  let g = (i / (p.seq * p.seq)) % p.ngroups;
  let b = i / (p.seq * p.seq * p.ngroups);
  if (s > t) {
    gram[i] = 0.0;
    return;
  }
  let c_base = (b * p.seq + t) * p.conv_dim + p.d_inner + p.ngroups * p.d_state + g * p.d_state;
  let b_base = (b * p.seq + s) * p.conv_dim + p.d_inner + g * p.d_state;
  var acc = 0.0;
  for (var n = 0u; n < p.d_state; n++) {
    acc = fma(xbc[c_base + n], xbc[b_base + n], acc);
  }
  gram[i] = acc;
}
