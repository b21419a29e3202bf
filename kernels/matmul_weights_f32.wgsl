// Weight access for the matmul kernels, f32 storage. Prepended to matmul.wgsl / matmul_tiled.wgsl
// by engine/matmul.ts; the other dtypes (matmul_weights_f16*.wgsl) define the same two functions.
//   w8(row_base, b): weights 8*b .. 8*b+7 of the row that starts at 8-block row_base
//   w1(i): the single weight at element index i (the generic kernel, any row length; for f32
//          that is matmul_weights_f32_scalar.wgsl, as f32 rows need not fill whole vec4)

// w: (n, stride) f32, stride = cols
@group(0) @binding(2) var<storage, read> w: array<vec4<f32>>;

struct W8 {
  lo: vec4<f32>,
  hi: vec4<f32>,
}

fn w8(row_base: u32, b: u32) -> W8 {
  let i = 2u * (row_base + b);
  return W8(w[i], w[i + 1u]);
}
