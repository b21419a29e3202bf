// Attention mode, step 2: materialise each head's implicit attention matrix
//   M[t, s] = G[t, s] * exp(sum_{r = s+1..t} dt_r * A)   for s <= t, else 0,
// and apply the knockout: a blocked (t, s) entry is set to 0 in the heads of its head set
// (mask[b, t, s] = k > 0 names row k - 1 of head_sets, whose nonzero entries are the heads).
// One invocation per row t; the decay exponent is accumulated from the diagonal outwards,
// as a direct sum (no cumulative-sum differences, which lose precision on long prompts).

struct Params {
  batch: u32,
  seq: u32,
  nheads: u32,
  ngroups: u32,
  has_mask: u32, // 0: no knockout in this layer, mask and head_sets are placeholders
  n_sets: u32, // rows of head_sets
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// gram: (batch, ngroups, seq, seq) f32
@group(0) @binding(1) var<storage, read> gram: array<f32>;
// dt: (batch * seq, nheads) f32
@group(0) @binding(2) var<storage, read> dt: array<f32>;
// a: (nheads) f32, A = -exp(A_log)
@group(0) @binding(3) var<storage, read> a: array<f32>;
// mask: (batch, seq, seq) u32, 0 = edge (t, s) kept, k > 0 = knocked out in the heads of head set k - 1
@group(0) @binding(4) var<storage, read> mask: array<u32>;
// head_sets: (n_sets, nheads) u32, 1 = the head is knocked out
@group(0) @binding(5) var<storage, read> head_sets: array<u32>;
// m: (batch, nheads, seq, seq) f32
@group(0) @binding(6) var<storage, read_write> m: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.batch * p.nheads * p.seq) { return; }
  let t = i % p.seq;
  let h = (i / p.seq) % p.nheads;
  let b = i / (p.seq * p.nheads);
  let g = h / (p.nheads / p.ngroups);
  let a_h = a[h];
  let out_row = i * p.seq;
  let gram_row = ((b * p.ngroups + g) * p.seq + t) * p.seq;
  let mask_row = (b * p.seq + t) * p.seq;
  for (var s = t + 1u; s < p.seq; s++) { m[out_row + s] = 0.0; }
  var segsum = 0.0;
  for (var s = i32(t); s >= 0; s--) {
    let su = u32(s);
    var v = gram[gram_row + su] * exp(segsum);
    if (p.has_mask != 0u) {
      let k = mask[mask_row + su];
      if (k != 0u && k <= p.n_sets && head_sets[(k - 1u) * p.nheads + h] != 0u) { v = 0.0; }
    }
    m[out_row + su] = v;
    segsum += dt[(b * p.seq + su) * p.nheads + h] * a_h;
  }
}
