// y[m, y_col + n] (+)= sum_k x[m, k] * w[n, k]   — x @ w^T, w in PyTorch's (out, in) layout,
// for k a multiple of 8: the same product as matmul_tiled.wgsl with k split across the lanes of a
// workgroup, for GPUs. matmul_tiled.wgsl gives each output block to one invocation, which walks
// all of k alone: a small matrix at a few rows (out_proj, 130m's in_proj, the knockout recomputes)
// then makes only n / 4 invocations and leaves most of a GPU idle. Here a workgroup of {WG}
// invocations owns {R} rows of x times {C} = 4*{NC} rows of w; invocation i takes the steps of 8
// along k numbered i, i + {WG}, i + 2*{WG}, ..., and the {WG} partial sums of each output are then
// added in workgroup memory (a tree: the order of the additions differs from matmul_tiled.wgsl's,
// so results agree with it to rounding, not bit for bit). Accumulation is f32; the weights come
// through w8() of matmul_weights_<dtype>.wgsl. With has_rows = 1 the m rows computed are
// rows[0..m) of x and y, otherwise rows 0..m-1.
//
// Template, expanded by engine/matmul.ts before compiling: {R} {NC} {C} {WG} are replaced by
// numbers ({WG} a power of two); a line mentioning {r} is repeated for r = 0..R-1, one mentioning
// {j} for j = 0..NC-1, one mentioning both for every (r, j) pair, r outer.

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

// the partial sums of one (row, 4 columns) output block, one per invocation
var<workgroup> part: array<vec4<f32>, {WG}>;

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

// the sum over the workgroup of each invocation's v; every invocation must call it
fn reduce(lane: u32, v: vec4<f32>) -> vec4<f32> {
  part[lane] = v;
  workgroupBarrier();
  for (var s = {WG}u / 2u; s > 0u; s >>= 1u) {
    if (lane < s) { part[lane] += part[lane + s]; }
    workgroupBarrier();
  }
  let total = part[0];
  workgroupBarrier();
  return total;
}

@compute @workgroup_size({WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let lane = lid.x;
  let col0 = wid.x * {C}u;
  let row0 = wid.y * {R}u;
  let k4 = 2u * p.kb;
  // Rows past the end are clamped to the last one (loads stay in bounds); their results are dropped.
  let xr{r} = row_of(min(row0 + {r}u, p.m - 1u)) * k4;
  let wr{j}_0 = min(col0 + 4u * {j}u, p.n - 1u) * p.w_stride;
  let wr{j}_1 = min(col0 + 4u * {j}u + 1u, p.n - 1u) * p.w_stride;
  let wr{j}_2 = min(col0 + 4u * {j}u + 2u, p.n - 1u) * p.w_stride;
  let wr{j}_3 = min(col0 + 4u * {j}u + 3u, p.n - 1u) * p.w_stride;
  var acc{r}_{j} = vec4<f32>(0.0);

  for (var b = lane; b < p.kb; b += {WG}u) {
    let w{j}_0 = w8(wr{j}_0, b);
    let w{j}_1 = w8(wr{j}_1, b);
    let w{j}_2 = w8(wr{j}_2, b);
    let w{j}_3 = w8(wr{j}_3, b);
    let lo{j} = mat4x4<f32>(w{j}_0.lo, w{j}_1.lo, w{j}_2.lo, w{j}_3.lo);
    let hi{j} = mat4x4<f32>(w{j}_0.hi, w{j}_1.hi, w{j}_2.hi, w{j}_3.hi);
    let xl{r} = x[xr{r} + 2u * b];
    let xh{r} = x[xr{r} + 2u * b + 1u];
    acc{r}_{j} += xl{r} * lo{j} + xh{r} * hi{j};
  }

  let sum{r}_{j} = reduce(lane, acc{r}_{j});
  if (lane == 0u && row0 + {r}u < p.m) { store4(row_of(row0 + {r}u), col0 + 4u * {j}u, sum{r}_{j}); }
}
