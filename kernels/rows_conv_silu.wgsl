// Knockout fast path: conv1d + SiLU (kernels/conv1d_silu.wgsl) on recomputed rows only.
// Each configuration recomputes the positions t0..len-1 of its prompt, as consecutive rows; a tap
// that reads a position s = t - back >= t0 reads the recomputed row i - back, one that reads s < t0
// the unblocked base run (positions before t0 are never changed by edges into rows >= t0):
//   out[i, c] = silu(bias[c] + sum_{j < d_conv} weight[c, j] * in(t - (d_conv - 1 - j), c))
// Conv knockouts: inside the configuration's window [start, end), a tap with bit `back` set in its
// row's tap mask is left out (every channel).

struct Params {
  n: u32, // recomputed rows
  conv_dim: u32,
  d_conv: u32,
  in_stride: u32, // row stride of zxbcdt rows (d_in_proj)
  in_offset: u32, // first xBC channel in a zxbcdt row (d_inner)
  layer: u32, // the layer being recomputed
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// rows_meta: (n, 8) u32 per row: (t, t0, base row of the prompt's position 0, window start, window end,
//   selector, tap mask, unused)
@group(0) @binding(1) var<storage, read> rows_meta: array<u32>;
// zxbcdt: (n, in_stride) f32, the recomputed rows
@group(0) @binding(2) var<storage, read> zxbcdt: array<f32>;
// base_zxbcdt: (base rows, in_stride) f32, this layer's in_proj output in the base run
@group(0) @binding(3) var<storage, read> base_zxbcdt: array<f32>;
// weight: (conv_dim, d_conv) f32
@group(0) @binding(4) var<storage, read> weight: array<f32>;
// bias: (conv_dim) f32
@group(0) @binding(5) var<storage, read> bias: array<f32>;
// out: (n, conv_dim) f32
@group(0) @binding(6) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.n * p.conv_dim) { return; }
  let row = i / p.conv_dim;
  let ch = i % p.conv_dim;
  let rm = row * 8u;
  let t = rows_meta[rm];
  let t0 = rows_meta[rm + 1u];
  let base0 = rows_meta[rm + 2u];
  let in_window = p.layer >= rows_meta[rm + 3u] && p.layer < rows_meta[rm + 4u];
  var taps_off = 0u;
  if (in_window) { taps_off = rows_meta[rm + 6u]; }
  var acc = bias[ch];
  for (var j = 0u; j < p.d_conv; j++) {
    let back = p.d_conv - 1u - j;
    if (back > t || (taps_off & (1u << back)) != 0u) { continue; }
    var v: f32;
    if (t - back >= t0) {
      v = zxbcdt[(row - back) * p.in_stride + p.in_offset + ch];
    } else {
      v = base_zxbcdt[(base0 + t - back) * p.in_stride + p.in_offset + ch];
    }
    acc = fma(weight[ch * p.d_conv + j], v, acc);
  }
  out[i] = acc / (1.0 + exp(-acc));
}
