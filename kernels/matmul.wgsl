// y[m, y_col + n] (+)= sum_k x[m, k] * w[n, k]   — x @ w^T with w in PyTorch's (out, in) layout.
// The generic path for any k (engine/matmul.ts sends k a multiple of 8 to matmul_tiled.wgsl, which
// is far faster): one output per invocation. w may be one row chunk of a larger weight (the
// tied lm_head is split across bindings); y_col places the chunk's outputs in the full row.
// accumulate = 1 adds into y (residual add). With has_rows = 1 the m rows computed are rows[0..m)
// of x and y (the real positions of a padded batch), otherwise rows 0..m-1. The weights come through w1() of
// matmul_weights_<dtype>.wgsl, prepended by engine/matmul.ts.

struct Params {
  m: u32, // rows of x
  n: u32, // rows of w (outputs of this chunk)
  k: u32, // inner dimension
  w_stride: u32, // row stride of w in weights
  y_stride: u32, // row stride of y
  y_col: u32, // column of y where this chunk's outputs start
  accumulate: u32,
  has_rows: u32, // 1: computed row i is row rows[i] of x and y
}

@group(0) @binding(0) var<uniform> p: Params;
// x: (m, k) f32
@group(0) @binding(1) var<storage, read> x: array<f32>;
// w: binding 2, declared by the weights include
// y: (m, y_stride) f32
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// rows: (m) u32, the rows of x and y computed (read when has_rows = 1)
@group(0) @binding(4) var<storage, read> rows: array<u32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.m * p.n) { return; }
  var row = i / p.n;
  if (p.has_rows != 0u) { row = rows[row]; }
  let col = i % p.n;
  var acc = 0.0;
  for (var k = 0u; k < p.k; k++) {
    acc += x[row * p.k + k] * w1(col * p.w_stride + k);
  }
  let idx = row * p.y_stride + p.y_col + col;
  if (p.accumulate != 0u) {
    y[idx] = y[idx] + acc;
  } else {
    y[idx] = acc;
  }
}
