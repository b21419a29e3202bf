// Weight access for the generic matmul kernel (matmul.wgsl), f32 storage of any row length.
// See matmul_weights_f32.wgsl for the contract; only w1 is defined here.

// w: (n, cols) f32
@group(0) @binding(2) var<storage, read> w: array<f32>;

fn w1(i: u32) -> f32 {
  return w[i];
}
