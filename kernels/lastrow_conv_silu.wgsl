// Knockout fast path: conv1d + SiLU at one prompt's last position only. The earlier taps read
// the unblocked base run (knockouts of the last row never change earlier positions), the
// last tap reads the recomputed row.

struct Params {
  n: u32, // recomputed rows (knockout configurations)
  conv_dim: u32,
  d_conv: u32,
  in_stride: u32, // row stride of zxbcdt rows (d_in_proj)
  in_offset: u32, // first xBC channel in a zxbcdt row (d_inner)
  _pad0: u32,
  _pad1: u32,
  _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// cfg_meta: (n, 4) u32 per configuration: (base row of its prompt's last position, prompt length, first blocked layer, end layer)
@group(0) @binding(1) var<storage, read> cfg_meta: array<u32>;
// zxbcdt: (n, in_stride) f32, the recomputed last rows
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
  let cfg = i / p.conv_dim;
  let ch = i % p.conv_dim;
  let last_row = cfg_meta[cfg * 4u];
  let t = cfg_meta[cfg * 4u + 1u] - 1u;
  var acc = bias[ch] + weight[ch * p.d_conv + p.d_conv - 1u] * zxbcdt[cfg * p.in_stride + p.in_offset + ch];
  for (var j = 0u; j + 1u < p.d_conv; j++) {
    let back = p.d_conv - 1u - j;
    if (back <= t) {
      acc = fma(weight[ch * p.d_conv + j], base_zxbcdt[(last_row - back) * p.in_stride + p.in_offset + ch], acc);
    }
  }
  out[i] = acc / (1.0 + exp(-acc));
}
