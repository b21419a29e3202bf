// Weight access for the matmul kernels, IEEE half storage read as f16 (needs shader-f16; the
// module gets `enable f16;` in front). See matmul_weights_f32.wgsl for the contract.

// w: (n, stride) f16, stride = cols rounded up to a multiple of 8 (zero padding)
@group(0) @binding(2) var<storage, read> w: array<vec4<f16>>;

struct W8 {
  lo: vec4<f32>,
  hi: vec4<f32>,
}

fn w8(row_base: u32, b: u32) -> W8 {
  let i = 2u * (row_base + b);
  return W8(vec4<f32>(w[i]), vec4<f32>(w[i + 1u]));
}

fn w1(i: u32) -> f32 {
  return f32(w[i >> 2u][i & 3u]);
}
