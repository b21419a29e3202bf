// Mamba-1 scan mode: the selective scan, run sequentially over time. One invocation owns one channel
// c of d_inner and its diagonal state h (d_state), for one prompt:
//   h_t[n] = exp(dt_t[c] * A[c, n]) * h_{t-1}[n] + dt_t[c] * x_t[c] * B_t[n]
//   y_t[c] = sum_n h_t[n] * C_t[n] + D[c] * x_t[c]
// over the prompt's `lengths` rows (padding rows are left unwritten). Memory O(T).

struct Params {
  batch: u32,
  seq: u32, // padded length (row stride between prompts)
  d_inner: u32,
  d_state: u32,
}

const MAX_STATE: u32 = 64u;

@group(0) @binding(0) var<uniform> p: Params;
// x: (batch * seq, d_inner) f32, after conv1d + SiLU
@group(0) @binding(1) var<storage, read> x: array<f32>;
// dt: (batch * seq, d_inner) f32, after softplus
@group(0) @binding(2) var<storage, read> dt: array<f32>;
// a: (d_inner, d_state) f32, A = -exp(A_log)
@group(0) @binding(3) var<storage, read> a: array<f32>;
// bc: (batch * seq, 2 * d_state) f32: B at [0, d_state), C at [d_state, 2 d_state)
@group(0) @binding(4) var<storage, read> bc: array<f32>;
// d: (d_inner) f32, the skip D
@group(0) @binding(5) var<storage, read> d: array<f32>;
// lengths: (batch) u32, each prompt's real length
@group(0) @binding(6) var<storage, read> lengths: array<u32>;
// y: (batch * seq, d_inner) f32
@group(0) @binding(7) var<storage, read_write> y: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.batch * p.d_inner) { return; }
  let b = i / p.d_inner;
  let c = i % p.d_inner;
  let d_c = d[c];
  var state: array<f32, MAX_STATE>;
  var a_c: array<f32, MAX_STATE>;
  for (var n = 0u; n < p.d_state; n++) {
    state[n] = 0.0;
    a_c[n] = a[c * p.d_state + n];
  }
  for (var t = 0u; t < lengths[b]; t++) {
    let row = b * p.seq + t;
    let dt_t = dt[row * p.d_inner + c];
    let x_t = x[row * p.d_inner + c];
    let dx = dt_t * x_t;
    let base = row * 2u * p.d_state;
    var acc = 0.0;
    for (var n = 0u; n < p.d_state; n++) {
      let s = fma(state[n], exp(dt_t * a_c[n]), dx * bc[base + n]);
      state[n] = s;
      acc = fma(s, bc[base + p.d_state + n], acc);
    }
    y[row * p.d_inner + c] = fma(d_c, x_t, acc);
  }
}
