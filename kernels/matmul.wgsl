// y[m, y_col + n] (+)= sum_k x[m, k] * w[n, k]   — x @ w^T with w in PyTorch's (out, in) layout.
// w may be one row chunk of a larger weight (the tied lm_head is split across bindings);
// y_col places the chunk's outputs in the full row. accumulate = 1 adds into y (residual add).
// Tiles of 64x64 outputs per workgroup, 4x4 per invocation, k in steps of 16 through workgroup memory.

struct Params {
  m: u32, // rows of x
  n: u32, // rows of w (outputs of this chunk)
  k: u32, // inner dimension
  y_stride: u32, // row stride of y
  y_col: u32, // column of y where this chunk's outputs start
  accumulate: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// x: (m, k) f32
@group(0) @binding(1) var<storage, read> x: array<f32>;
// w: (n, k) f32
@group(0) @binding(2) var<storage, read> w: array<f32>;
// y: (m, y_stride) f32
@group(0) @binding(3) var<storage, read_write> y: array<f32>;

const TILE: u32 = 64u;
const TK: u32 = 16u;

// k-major so the inner loop reads 4 consecutive rows of each tile
var<workgroup> xs: array<f32, 1024>; // [TK][TILE]
var<workgroup> ws: array<f32, 1024>; // [TK][TILE]

@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let m0 = wid.y * TILE;
  let n0 = wid.x * TILE;
  let tid = lid.y * 16u + lid.x;
  var acc: array<f32, 16>;
  for (var i = 0u; i < 16u; i++) { acc[i] = 0.0; }

  for (var k0 = 0u; k0 < p.k; k0 += TK) {
    for (var i = 0u; i < 4u; i++) {
      let e = tid + i * 256u;
      let r = e / TK;
      let kk = e % TK;
      let gk = k0 + kk;
      var xv = 0.0;
      if (m0 + r < p.m && gk < p.k) { xv = x[(m0 + r) * p.k + gk]; }
      xs[kk * TILE + r] = xv;
      var wv = 0.0;
      if (n0 + r < p.n && gk < p.k) { wv = w[(n0 + r) * p.k + gk]; }
      ws[kk * TILE + r] = wv;
    }
    workgroupBarrier();
    for (var kk = 0u; kk < TK; kk++) {
      var a: array<f32, 4>;
      var b: array<f32, 4>;
      for (var i = 0u; i < 4u; i++) {
        a[i] = xs[kk * TILE + lid.y * 4u + i];
        b[i] = ws[kk * TILE + lid.x * 4u + i];
      }
      for (var i = 0u; i < 4u; i++) {
        for (var j = 0u; j < 4u; j++) {
          acc[i * 4u + j] = fma(a[i], b[j], acc[i * 4u + j]);
        }
      }
    }
    workgroupBarrier();
  }

  for (var i = 0u; i < 4u; i++) {
    let m = m0 + lid.y * 4u + i;
    if (m >= p.m) { continue; }
    for (var j = 0u; j < 4u; j++) {
      let n = n0 + lid.x * 4u + j;
      if (n >= p.n) { continue; }
      let idx = m * p.y_stride + p.y_col + n;
      if (p.accumulate != 0u) {
        y[idx] = y[idx] + acc[i * 4u + j];
      } else {
        y[idx] = acc[i * 4u + j];
      }
    }
  }
}
