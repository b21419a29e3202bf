// SwiGLU (Llama, Qwen2, Mistral MLPs): out[r, j] = silu(gate[r, j]) * up[r, j], silu(v) = v / (1 + e^−v),
// where gate and up are the two halves of one fused projection: gu[r, :] = [gate (dff) | up (dff)].
// One invocation per output element.

struct Params {
  rows: u32,
  dff: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// gu: (rows, 2 * dff) f32
@group(0) @binding(1) var<storage, read> gu: array<f32>;
// out: (rows, dff) f32
@group(0) @binding(2) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  if (i >= p.rows * p.dff) { return; }
  let r = i / p.dff;
  let j = i % p.dff;
  let g = gu[r * 2u * p.dff + j];
  out[i] = g / (1.0 + exp(-g)) * gu[r * 2u * p.dff + p.dff + j];
}
