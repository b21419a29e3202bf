// Scan mode SSD: the selective-state-space recurrence, run sequentially over time.
// One invocation owns one row p of one head's state h (headdim x d_state):
//   h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t * B_t^T
//   y_t = h_t C_t + D * x_t
// Memory is O(T); no T x T matrix is formed.

struct Params {
  batch: u32,
  seq: u32, // padded length (row stride between prompts)
  nheads: u32,
  headdim: u32,
  d_state: u32,
  ngroups: u32,
  conv_dim: u32, // row stride of xbc
  d_inner: u32,
}

const MAX_STATE: u32 = 256u;

@group(0) @binding(0) var<uniform> p: Params;
// xbc: (batch * seq, conv_dim) f32: x at [0, d_inner), B at [d_inner, +ngroups*d_state), C after B
@group(0) @binding(1) var<storage, read> xbc: array<f32>;
// dt: (batch * seq, nheads) f32
@group(0) @binding(2) var<storage, read> dt: array<f32>;
// a: (nheads) f32, A = -exp(A_log)
@group(0) @binding(3) var<storage, read> a: array<f32>;
// d: (nheads) f32, the skip connection D
@group(0) @binding(4) var<storage, read> d: array<f32>;
// lengths: (batch) u32, each prompt's real length
@group(0) @binding(5) var<storage, read> lengths: array<u32>;
// y: (batch * seq, d_inner) f32
@group(0) @binding(6) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.batch * p.nheads * p.headdim) { return; }
  let b = i / (p.nheads * p.headdim);
  let c = i % (p.nheads * p.headdim); // channel h * headdim + pp in d_inner
  let h = c / p.headdim;
  let g = h / (p.nheads / p.ngroups);
  let a_h = a[h];
  let d_h = d[h];
  let b_off = p.d_inner + g * p.d_state;
  let c_off = p.d_inner + p.ngroups * p.d_state + g * p.d_state;

  var state: array<f32, MAX_STATE>;
  for (var n = 0u; n < p.d_state; n++) { state[n] = 0.0; }

  for (var t = 0u; t < lengths[b]; t++) {
    let row = b * p.seq + t;
    let dt_t = dt[row * p.nheads + h];
    let decay = exp(dt_t * a_h);
    let x_t = xbc[row * p.conv_dim + c];
    let dx = dt_t * x_t;
    let base = row * p.conv_dim;
    var acc = 0.0;
    for (var n = 0u; n < p.d_state; n++) {
      let s = fma(state[n], decay, dx * xbc[base + b_off + n]);
      state[n] = s;
      acc = fma(s, xbc[base + c_off + n], acc);
    }
    y[row * p.d_inner + c] = fma(d_h, x_t, acc);
  }
}
