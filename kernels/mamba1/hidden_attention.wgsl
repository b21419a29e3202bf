// Mamba-1 attention mode, step 1: materialise each channel's hidden attention
//   alpha[t, c, s] = sum_n C_t[n] * exp(A[c, n] * sum_{r = s+1..t} dt_r[c]) * dt_s[c] * B_s[n]   for s <= t,
// 0 for s > t, and apply the knockout: a blocked (t, s) entry is 0 in the channels of its unit set
// (mask[b, t, s] = k > 0 names row k - 1 of unit_sets, whose nonzero entries are the channels).
// One invocation per (prompt, channel, row t); the exponent's sum is accumulated from the diagonal
// outwards, as a direct sum.

struct Params {
  batch: u32,
  seq: u32, // padded length
  d_inner: u32,
  d_state: u32,
  has_mask: u32, // 0: no knockout in this layer, mask and unit_sets are placeholders
  n_sets: u32, // rows of unit_sets
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// dt: (batch * seq, d_inner) f32
@group(0) @binding(1) var<storage, read> dt: array<f32>;
// a: (d_inner, d_state) f32, A = -exp(A_log)
@group(0) @binding(2) var<storage, read> a: array<f32>;
// bc: (batch * seq, 2 * d_state) f32: B | C
@group(0) @binding(3) var<storage, read> bc: array<f32>;
// mask: (batch, seq, seq) u32, 0 = edge (t, s) kept, k > 0 = knocked out in the channels of unit set k - 1
@group(0) @binding(4) var<storage, read> mask: array<u32>;
// unit_sets: (n_sets, d_inner) u32, 1 = the channel is knocked out
@group(0) @binding(5) var<storage, read> unit_sets: array<u32>;
// alpha: (batch, d_inner, seq, seq) f32
@group(0) @binding(6) var<storage, read_write> alpha: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.batch * p.d_inner * p.seq) { return; }
  let t = i % p.seq;
  let c = (i / p.seq) % p.d_inner;
  let b = i / (p.seq * p.d_inner);
  let out_row = i * p.seq;
  let mask_row = (b * p.seq + t) * p.seq;
  let c_t = (b * p.seq + t) * 2u * p.d_state + p.d_state;
  for (var s = t + 1u; s < p.seq; s++) { alpha[out_row + s] = 0.0; }
  var segsum = 0.0; // sum_{r = s+1..t} dt_r
  for (var s = i32(t); s >= 0; s--) {
    let su = u32(s);
    let row = b * p.seq + su;
    let dt_s = dt[row * p.d_inner + c];
    let b_s = row * 2u * p.d_state;
    var acc = 0.0;
    for (var n = 0u; n < p.d_state; n++) {
      acc = fma(bc[c_t + n] * exp(a[c * p.d_state + n] * segsum), bc[b_s + n], acc);
    }
    var v = acc * dt_s;
    if (p.has_mask != 0u) {
      let k = mask[mask_row + su];
      if (k != 0u && k <= p.n_sets && unit_sets[(k - 1u) * p.d_inner + c] != 0u) { v = 0.0; }
    }
    alpha[out_row + su] = v;
    segsum += dt_s;
  }
}
