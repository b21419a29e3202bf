// Weight access for the matmul kernels, IEEE half storage read as packed u32 pairs with
// unpack2x16float: needs no shader-f16, and on CPU adapters it is the fastest way to read
// halves (one 32-bit load brings two). See matmul_weights_f32.wgsl for the contract.

// w: (n, stride) halves, stride = cols rounded up to a multiple of 8 (zero padding); 8 halves per element
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;

struct W8 {
  lo: vec4<f32>,
  hi: vec4<f32>,
}

fn w8(row_base: u32, b: u32) -> W8 {
  let u = w[row_base + b];
  return W8(vec4<f32>(unpack2x16float(u.x), unpack2x16float(u.y)), vec4<f32>(unpack2x16float(u.z), unpack2x16float(u.w)));
}

fn w1(i: u32) -> f32 {
  return unpack2x16float(w[i >> 3u][(i >> 1u) & 3u])[i & 1u];
}
