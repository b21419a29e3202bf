// Rotary position embedding, rotate-half convention (GPT-NeoX, Llama, Qwen2, Mistral), in place on
// the q and k heads of each row of a fused qkv matrix, on the first rot_dims of every head:
//   for j < rot_dims/2, with x1 = v[j], x2 = v[j + rot_dims/2], angle = t_i * inv_freq[j]:
//     v[j]              := x1 cos(angle) − x2 sin(angle)
//     v[j + rot_dims/2] := x2 cos(angle) + x1 sin(angle)
// A row of qkv is [q heads (n_head) | k heads (n_kv_head) | v heads (n_kv_head)], head_dim each;
// the v heads and dims >= rot_dims are left alone. t_i is row i's position (row_meta[i * 8]).
// cos and sin come from tables the host fills in float64 per position (f32 cos/sin of large
// angles on a GPU lose digits). One invocation per (row, head of q or k, j).

struct Params {
  rows: u32,
  n_rot_heads: u32, // n_head + n_kv_head: the heads that rotate
  head_dim: u32,
  rot_dims: u32, // even, <= head_dim
  stride: u32, // row stride of qkv
  _pad2: u32,
  _pad0: u32,
  _pad1: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// row_meta: (rows, 8) u32; word 0 = the row's position
@group(0) @binding(1) var<storage, read> row_meta: array<u32>;
// cos_t: (positions, rot_dims / 2) f32, every row's position covered, cos(t * inv_freq[j])
@group(0) @binding(2) var<storage, read> cos_t: array<f32>;
// sin_t: (positions, rot_dims / 2) f32
@group(0) @binding(3) var<storage, read> sin_t: array<f32>;
// qkv: (rows, stride) f32, updated in place
@group(0) @binding(4) var<storage, read_write> qkv: array<f32>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u, @builtin(num_workgroups) nwg: vec3u) {
  let i = gid.x + gid.y * nwg.x * 64u;
  let half = p.rot_dims / 2u;
  if (i >= p.rows * p.n_rot_heads * half) { return; }
  let j = i % half;
  let h = (i / half) % p.n_rot_heads;
  let row = i / (half * p.n_rot_heads);
  let t = row_meta[row * 8u];
  let c = cos_t[t * half + j];
  let s = sin_t[t * half + j];
  let at = row * p.stride + h * p.head_dim + j;
  let x1 = qkv[at];
  let x2 = qkv[at + half];
  qkv[at] = x1 * c - x2 * s;
  qkv[at + half] = x2 * c + x1 * s;
}
