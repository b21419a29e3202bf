// Depthwise causal conv1d over time (width d_conv, with bias) followed by SiLU, on the xBC
// channels of in_proj's output. Each prompt starts at t = 0: earlier taps read zeros.
//   out[t, c] = silu(bias[c] + sum_{j < d_conv} weight[c, j] * in[t - (d_conv - 1 - j), c])
// Conv knockouts: with has_tap_mask, a tap reading back = t - s positions (1 <= back < d_conv) is
// left out of the sum when bit `back` of tap_mask[row] is set (every channel of that row).

struct Params {
  rows: u32, // batch * seq
  seq: u32, // padded sequence length
  conv_dim: u32, // channels: d_inner + 2 * ngroups * d_state
  d_conv: u32,
  in_stride: u32, // row stride of zxbcdt (d_in_proj)
  in_offset: u32, // first xBC channel in a zxbcdt row (d_inner)
  has_tap_mask: u32, // 0: no conv knockout, tap_mask is a placeholder
  _pad0: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// zxbcdt: (rows, in_stride) f32, xBC at [in_offset, in_offset + conv_dim)
@group(0) @binding(1) var<storage, read> zxbcdt: array<f32>;
// weight: (conv_dim, d_conv) f32
@group(0) @binding(2) var<storage, read> weight: array<f32>;
// bias: (conv_dim) f32
@group(0) @binding(3) var<storage, read> bias: array<f32>;
// tap_mask: (rows) u32, bit back set = the tap from position t - back into row t is removed
@group(0) @binding(4) var<storage, read> tap_mask: array<u32>;
// out: (rows, conv_dim) f32
@group(0) @binding(5) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.rows * p.conv_dim) { return; }
  let row = i / p.conv_dim;
  let c = i % p.conv_dim;
  let t = row % p.seq;
  var taps_off = 0u;
  if (p.has_tap_mask != 0u) { taps_off = tap_mask[row]; }
  var acc = bias[c];
  for (var j = 0u; j < p.d_conv; j++) {
    // tap j sees time t + j - (d_conv - 1)
    let back = p.d_conv - 1u - j;
    if (back <= t && (taps_off & (1u << back)) == 0u) {
      acc = fma(weight[c * p.d_conv + j], zxbcdt[(row - back) * p.in_stride + p.in_offset + c], acc);
    }
  }
  out[i] = acc / (1.0 + exp(-acc));
}
