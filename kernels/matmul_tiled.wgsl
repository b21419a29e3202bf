// y[m, y_col + n] (+)= sum_k x[m, k] * w[n, k]   — x @ w^T, w in PyTorch's (out, in) layout,
// for k a multiple of 8. The fast path of every matmul: the GEMV shape (a few rows, as in the
// knockout recomputes and the lm_head of a batch's last positions) and the batched shape
// (prefill) are the same kernel with a different register block, chosen by engine/matmul.ts.
//
// Each invocation keeps a block of {R} rows of x times {C} = 4*{NC} rows of w in registers and
// walks k in steps of 8: per step it loads 2 vec4 of each of its x rows and 8 weights of each of
// its w rows, and does {R}*{C}*8 multiply-adds with them. On a CPU adapter every load costs
// far more than arithmetic (each lane's load is a scalar loop in the driver), so the block
// is sized to reuse each loaded value {C} (x) or {R} (w) times; workgroup memory would only add
// a second load. The weights come through w8() of matmul_weights_<dtype>.wgsl (f32, or halves
// converted to f32 on load); accumulation is f32.
//
// With has_rows = 1 the m rows computed are rows[0..m) of x and of y (the real positions of a
// padded batch: the padding is never computed); otherwise rows 0..m-1.
//
// Template, expanded by engine/matmul.ts before compiling: {R} {NC} {C} {WG} are replaced by
// numbers; a line mentioning {r} is repeated for r = 0..R-1, one mentioning {j} for
// j = 0..NC-1, one mentioning both for every (r, j) pair, r outer.

struct Params {
  m: u32, // rows of x
  n: u32, // rows of w (outputs of this chunk)
  kb: u32, // k / 8
  w_stride: u32, // row stride of w in blocks of 8 weights
  y_stride: u32, // row stride of y
  y_col: u32, // column of y where this chunk's outputs start
  accumulate: u32, // 1: y += x @ w^T (residual add)
  has_rows: u32, // 1: computed row i is row rows[i] of x and y
}

@group(0) @binding(0) var<uniform> p: Params;
// x: (m, k) f32, as vec4
@group(0) @binding(1) var<storage, read> x: array<vec4<f32>>;
// w: binding 2, declared by the weights include
// y: (m, y_stride) f32
@group(0) @binding(3) var<storage, read_write> y: array<f32>;
// rows: (m) u32, the rows of x and y computed (read when has_rows = 1)
@group(0) @binding(4) var<storage, read> rows: array<u32>;

fn row_of(i: u32) -> u32 {
  if (p.has_rows != 0u) { return rows[i]; }
  return i;
}

fn store4(row: u32, col: u32, v: vec4<f32>) {
  for (var i = 0u; i < 4u; i++) {
    if (col + i < p.n) {
      let idx = row * p.y_stride + p.y_col + col + i;
      if (p.accumulate != 0u) {
        y[idx] = y[idx] + v[i];
      } else {
        y[idx] = v[i];
      }
    }
  }
}

@compute @workgroup_size({WG})
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let col0 = gid.x * {C}u;
  let row0 = gid.y * {R}u;
  let k4 = 2u * p.kb;
  // Rows past the end are clamped to the last one (loads stay in bounds); their results are dropped.
  let xr{r} = row_of(min(row0 + {r}u, p.m - 1u)) * k4;
  let wr{j}_0 = min(col0 + 4u * {j}u, p.n - 1u) * p.w_stride;
  let wr{j}_1 = min(col0 + 4u * {j}u + 1u, p.n - 1u) * p.w_stride;
  let wr{j}_2 = min(col0 + 4u * {j}u + 2u, p.n - 1u) * p.w_stride;
  let wr{j}_3 = min(col0 + 4u * {j}u + 3u, p.n - 1u) * p.w_stride;
  var acc{r}_{j} = vec4<f32>(0.0);

  for (var b = 0u; b < p.kb; b++) {
    // columns of lo{j} / hi{j}: 8 consecutive weights of 4 w rows
    let w{j}_0 = w8(wr{j}_0, b);
    let w{j}_1 = w8(wr{j}_1, b);
    let w{j}_2 = w8(wr{j}_2, b);
    let w{j}_3 = w8(wr{j}_3, b);
    let lo{j} = mat4x4<f32>(w{j}_0.lo, w{j}_1.lo, w{j}_2.lo, w{j}_3.lo);
    let hi{j} = mat4x4<f32>(w{j}_0.hi, w{j}_1.hi, w{j}_2.hi, w{j}_3.hi);
    let xl{r} = x[xr{r} + 2u * b];
    let xh{r} = x[xr{r} + 2u * b + 1u];
    // (vec4 * mat4x4)[q] = dot(vec4, column q)
    acc{r}_{j} += xl{r} * lo{j} + xh{r} * hi{j};
  }

  if (row0 + {r}u < p.m) { store4(row_of(row0 + {r}u), col0 + 4u * {j}u, acc{r}_{j}); }
}
