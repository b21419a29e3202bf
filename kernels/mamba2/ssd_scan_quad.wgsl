// Scan mode SSD, as kernels/mamba2/ssd_scan.wgsl (the same recurrence, run sequentially over time):
//   h_t = exp(dt_t * A) * h_{t-1} + dt_t * x_t * B_t^T
//   y_t = h_t C_t + D * x_t
// but one invocation owns 4 adjacent channels of a head (headdim a multiple of 4), so that each
// B_t and C_t it loads serves 4 channels, loads go 4 floats at a time, and the state of its
// channels — one vec4 over the 4 channels per state index — lives in registers (spilled by the
// compiler with whole-vector moves if need be) instead of an indexed array, which a CPU driver
// reads and writes lane by lane. On lavapipe this is several times faster than ssd_scan.wgsl.
//
// Template, expanded by engine/mamba2/ops.ts for the model's d_state (a multiple of 4): {Q} is
// d_state / 4; a line mentioning {q} is repeated for q = 0..Q-1.

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

@group(0) @binding(0) var<uniform> p: Params;
// xbc: (batch * seq, conv_dim) f32 as vec4: x at [0, d_inner), B at [d_inner, +ngroups*d_state), C after B
@group(0) @binding(1) var<storage, read> xbc: array<vec4<f32>>;
// dt: (batch * seq, nheads) f32
@group(0) @binding(2) var<storage, read> dt: array<f32>;
// a: (nheads) f32, A = -exp(A_log)
@group(0) @binding(3) var<storage, read> a: array<f32>;
// d: (nheads) f32, the skip connection D
@group(0) @binding(4) var<storage, read> d: array<f32>;
// lengths: (batch) u32, each prompt's real length
@group(0) @binding(5) var<storage, read> lengths: array<u32>;
// y: (batch * seq, d_inner) f32 as vec4
@group(0) @binding(6) var<storage, read_write> y: array<vec4<f32>>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  let quads = p.d_inner / 4u;
  if (i >= p.batch * quads) { return; }
  let b = i / quads;
  let c4 = i % quads; // channels 4*c4 .. 4*c4 + 3, all in head h
  let h = (4u * c4) / p.headdim;
  let g = h / (p.nheads / p.ngroups);
  let a_h = a[h];
  let d_h = d[h];
  let row4 = p.conv_dim / 4u;
  let b_at = (p.d_inner + g * p.d_state) / 4u; // B_t of group g, in vec4
  let c_at = (p.d_inner + p.ngroups * p.d_state + g * p.d_state) / 4u; // C_t

  // s{q}_j: state index 4q + j, one component per channel
  var s{q}_0 = vec4<f32>(0.0);
  var s{q}_1 = vec4<f32>(0.0);
  var s{q}_2 = vec4<f32>(0.0);
  var s{q}_3 = vec4<f32>(0.0);

  for (var t = 0u; t < lengths[b]; t++) {
    let row = b * p.seq + t;
    let dt_t = dt[row * p.nheads + h];
    let decay = exp(dt_t * a_h);
    let base = row * row4;
    let x = xbc[base + c4];
    let dx = dt_t * x;
    var acc = vec4<f32>(0.0);
    let bv{q} = xbc[base + b_at + {q}u];
    let cv{q} = xbc[base + c_at + {q}u];
    s{q}_0 = s{q}_0 * decay + dx * bv{q}.x;
    s{q}_1 = s{q}_1 * decay + dx * bv{q}.y;
    s{q}_2 = s{q}_2 * decay + dx * bv{q}.z;
    s{q}_3 = s{q}_3 * decay + dx * bv{q}.w;
    acc += s{q}_0 * cv{q}.x + s{q}_1 * cv{q}.y + s{q}_2 * cv{q}.z + s{q}_3 * cv{q}.w;
    y[row * quads + c4] = acc + d_h * x;
  }
}
